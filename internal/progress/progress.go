// Package progress shows how far a long phase has got: a redrawn bar when a
// person watches a terminal, structured log lines otherwise (a CronJob's
// log must not fill with carriage returns).
package progress

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
)

// Bar tracks one phase.
type Bar interface {
	Add(n int)
	Finish()
}

// Factory starts bars.
type Factory interface {
	New(label string, total int) Bar
}

// Nop shows nothing.
func Nop() Factory { return nopFactory{} }

type nopFactory struct{}
type nopBar struct{}

func (nopFactory) New(string, int) Bar { return nopBar{} }
func (nopBar) Add(int)                 {}
func (nopBar) Finish()                 {}

// New draws bars on w when w is a terminal and logs to log otherwise.
func New(w io.Writer, log *slog.Logger) Factory {
	if IsTerminal(w) {
		return termFactory{w: w}
	}
	return logFactory{log: log}
}

// IsTerminal reports whether w is a character device (a TTY) and TERM does
// not say the terminal cannot redraw.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

type termFactory struct{ w io.Writer }

func (f termFactory) New(label string, total int) Bar {
	b := &termBar{w: f.w, label: label, total: total, drawn: -1}
	b.draw()
	return b
}

const barWidth = 30

type termBar struct {
	mu          sync.Mutex
	w           io.Writer
	label       string
	total, done int
	drawn       int // last percentage drawn; redraw only when it changes
	finished    bool
}

func (b *termBar) Add(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done += n
	b.draw()
}

func (b *termBar) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.finished = true
	b.drawn = -1
	b.draw()
	fmt.Fprintln(b.w)
}

func (b *termBar) draw() {
	if b.finished && b.drawn >= 0 {
		return
	}
	pct := 100
	if b.total > 0 {
		pct = min(100, 100*b.done/b.total)
	}
	if pct == b.drawn {
		return
	}
	b.drawn = pct
	fill := barWidth * pct / 100
	fmt.Fprintf(b.w, "\r\033[K%-20s [%s%s] %d/%d %3d%%", b.label,
		strings.Repeat("=", fill), strings.Repeat(" ", barWidth-fill), b.done, b.total, pct)
}

type logFactory struct{ log *slog.Logger }

func (f logFactory) New(label string, total int) Bar {
	log := f.log
	if log == nil {
		log = slog.Default()
	}
	return &logBar{log: log, label: label, total: total}
}

// logBar logs at every tenth of the way, so a long run shows it is alive
// without a line per item.
type logBar struct {
	mu          sync.Mutex
	log         *slog.Logger
	label       string
	total, done int
	step        int
	finished    bool
}

func (b *logBar) Add(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done += n
	if b.total <= 0 {
		return
	}
	if step := 10 * b.done / b.total; step > b.step && b.done < b.total {
		b.step = step
		b.log.Info("progress", "phase", b.label, "done", b.done, "total", b.total)
	}
}

func (b *logBar) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished || b.total <= 0 {
		return
	}
	b.finished = true
	b.log.Info("progress", "phase", b.label, "done", b.done, "total", b.total)
}
