package progress

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestLogBarLogsEveryTenthAndTheEnd(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	f := New(&buf, log) // a buffer is not a terminal
	b := f.New("deleting", 100)
	for range 100 {
		b.Add(1)
	}
	b.Finish()
	b.Finish()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	// 10%, 20% … 90% and the final line.
	if len(lines) != 10 {
		t.Fatalf("got %d lines, want 10:\n%s", len(lines), buf.String())
	}
	if last := lines[len(lines)-1]; !strings.Contains(last, "done=100") || !strings.Contains(last, "phase=deleting") {
		t.Errorf("last line %q", last)
	}
	if strings.Contains(buf.String(), "\r") {
		t.Error("log mode must not draw a bar")
	}
}

func TestLogBarEmptyPhaseIsSilent(t *testing.T) {
	var buf bytes.Buffer
	b := New(&buf, slog.New(slog.NewTextHandler(&buf, nil))).New("deleting", 0)
	b.Finish()
	if buf.Len() != 0 {
		t.Errorf("empty phase logged %q", buf.String())
	}
}

func TestTermBarRedrawsOnlyOnChange(t *testing.T) {
	var buf bytes.Buffer
	b := termFactory{w: &buf}.New("deleting", 200)
	for range 200 {
		b.Add(1)
	}
	b.Finish()
	out := buf.String()
	// One draw at 0% and one per percent, plus the final redraw.
	if n := strings.Count(out, "\r"); n != 102 {
		t.Errorf("%d redraws, want 102", n)
	}
	if !strings.HasSuffix(out, "200/200 100%\n") {
		t.Errorf("final frame %q", out[max(0, len(out)-60):])
	}
}

func TestNopAndTerminalDetection(t *testing.T) {
	Nop().New("x", 10).Add(1)
	if IsTerminal(&bytes.Buffer{}) {
		t.Error("a buffer is not a terminal")
	}
}
