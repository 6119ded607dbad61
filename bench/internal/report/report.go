package report

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"time"
)

// Better says which direction of a metric is an improvement.
type Better string

const (
	Higher Better = "higher"
	Lower  Better = "lower"
)

// Metric is one measured quantity.
type Metric struct {
	ID     string `json:"id"`
	Title  string `json:"title"`
	Unit   string `json:"unit"`
	Better Better `json:"better"`
}

// Pair is a berth-side subject compared with a peer in one row.
type Pair struct{ Subject, Peer string }

// RowSpec asks for one row: a metric for a pair of subjects.
type RowSpec struct {
	Metric Metric
	Pair   Pair
}

type key struct{ metric, subject string }

// Results collects samples from workloads. It is safe for concurrent use.
type Results struct {
	mu      sync.Mutex
	samples map[key][]float64
	missing map[key]string
	failed  map[key]bool
	notes   []string
}

// NewResults returns an empty collection.
func NewResults() *Results {
	return &Results{samples: map[key][]float64{}, missing: map[key]string{}, failed: map[key]bool{}}
}

// Add records one repetition's value.
func (r *Results) Add(metric, subject string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := key{metric, subject}
	r.samples[k] = append(r.samples[k], v)
}

// NA marks a value as not available for a reason that is not a failure of
// the harness (a peer not installed, a berth command not there yet). The
// first reason given is kept.
func (r *Results) NA(metric, subject, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := key{metric, subject}
	if _, ok := r.missing[k]; !ok {
		r.missing[k] = reason
	}
}

// Fail marks a value as failed: the workload errored or its result was
// wrong. A failed value is never reported as a number, even if some reps
// succeeded, because a benchmark of a wrong result is meaningless.
func (r *Results) Fail(metric, subject string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := key{metric, subject}
	if !r.failed[k] {
		r.failed[k] = true
		r.missing[k] = "error: " + err.Error()
	}
}

// Note adds a free-text remark printed under the table.
func (r *Results) Note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// Cell is one side of a row.
type Cell struct {
	Name string `json:"name"`
	// Value is the median of Samples; absent when NA is set.
	Value   *float64  `json:"value,omitempty"`
	Samples []float64 `json:"samples,omitempty"`
	NA      string    `json:"na,omitempty"`
	Failed  bool      `json:"failed,omitempty"`
}

// Row is one line of the table.
type Row struct {
	ID      string   `json:"id"`
	Metric  Metric   `json:"metric"`
	Subject Cell     `json:"subject"`
	Peer    Cell     `json:"peer"`
	Ratio   *float64 `json:"ratio,omitempty"`
}

// RowID names a row stably for tools and tests.
func RowID(metric string, p Pair) string { return metric + ": " + p.Subject + " vs " + p.Peer }

func (r *Results) cell(metric, subject string) Cell {
	k := key{metric, subject}
	c := Cell{Name: subject}
	if reason, ok := r.missing[k]; ok {
		c.NA, c.Failed = reason, r.failed[k]
		return c
	}
	s := r.samples[k]
	if len(s) == 0 {
		c.NA = "no samples"
		return c
	}
	m := Median(s)
	c.Value, c.Samples = &m, append([]float64(nil), s...)
	return c
}

// Rows builds the rows asked for, in order.
func (r *Results) Rows(specs []RowSpec) []Row {
	r.mu.Lock()
	defer r.mu.Unlock()
	rows := make([]Row, 0, len(specs))
	for _, sp := range specs {
		row := Row{
			ID:      RowID(sp.Metric.ID, sp.Pair),
			Metric:  sp.Metric,
			Subject: r.cell(sp.Metric.ID, sp.Pair.Subject),
			Peer:    r.cell(sp.Metric.ID, sp.Pair.Peer),
		}
		if row.Subject.Value != nil && row.Peer.Value != nil && *row.Peer.Value != 0 {
			q := *row.Subject.Value / *row.Peer.Value
			row.Ratio = &q
		}
		rows = append(rows, row)
	}
	return rows
}

// Notes returns the remarks added so far.
func (r *Results) Notes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.notes...)
}

// Machine describes where the numbers were taken.
type Machine struct {
	Cores  int    `json:"cores"`
	CPU    string `json:"cpu"`
	Go     string `json:"go"`
	OS     string `json:"os"`
	Arch   string `json:"arch"`
	Kernel string `json:"kernel,omitempty"`
	MemMiB int64  `json:"mem_mib,omitempty"`
}

func (m Machine) String() string {
	s := fmt.Sprintf("%d cores · %s · %s %s/%s", m.Cores, m.CPU, m.Go, m.OS, m.Arch)
	if m.Kernel != "" {
		s += " · kernel " + m.Kernel
	}
	if m.MemMiB > 0 {
		s += fmt.Sprintf(" · %d MiB RAM", m.MemMiB)
	}
	return s
}

// Subject is a server or tool that took part, with its version.
type Subject struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	Binary  string `json:"binary,omitempty"`
	NA      string `json:"na,omitempty"`
}

// Doc is a whole run's output.
type Doc struct {
	Machine Machine `json:"machine"`
	// Storage is the filesystem the registries stored into.
	Storage  string        `json:"storage,omitempty"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	Short    bool          `json:"short"`
	Reps     int           `json:"reps"`
	Subjects []Subject     `json:"subjects"`
	Rows     []Row         `json:"rows"`
	Notes    []string      `json:"notes,omitempty"`
}

// Failed returns the rows with a failed cell.
func (d *Doc) Failed() []Row {
	var out []Row
	for _, r := range d.Rows {
		if r.Subject.Failed || r.Peer.Failed {
			out = append(out, r)
		}
	}
	return out
}

// WriteJSON writes the document as indented JSON.
func (d *Doc) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(d)
}

// Markdown writes the machine line, the table and the notes.
func (d *Doc) Markdown(w io.Writer) error {
	var b strings.Builder
	size := "full size"
	if d.Short {
		size = "short (tiny sizes, figures meaningless)"
	}
	fmt.Fprintf(&b, "machine: %s · median of %d reps · %s\n", d.Machine, d.Reps, size)
	if d.Storage != "" {
		fmt.Fprintf(&b, "storage: %s\n", d.Storage)
	}
	b.WriteString("\n")
	b.WriteString("| workload | unit | berth side | value | peer | value | berth/peer |\n")
	b.WriteString("|---|---|---|---:|---|---:|---:|\n")
	for _, r := range d.Rows {
		arrow := "↑"
		if r.Metric.Better == Lower {
			arrow = "↓"
		}
		ratio := "n/a"
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.2f×", *r.Ratio)
		}
		fmt.Fprintf(&b, "| %s | %s %s | %s | %s | %s | %s | %s |\n",
			cellText(r.Metric.Title), r.Metric.Unit, arrow,
			cellText(r.Subject.Name), valueText(r.Subject), cellText(r.Peer.Name), valueText(r.Peer), ratio)
	}
	if len(d.Notes) > 0 {
		b.WriteString("\n")
		for _, n := range d.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func valueText(c Cell) string {
	if c.Value == nil {
		return cellText("n/a (" + c.NA + ")")
	}
	return FormatValue(*c.Value)
}

// FormatValue prints about three significant digits without exponents.
func FormatValue(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	case a == 0:
		return "0"
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// cellText keeps a value inside its table cell.
func cellText(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}
