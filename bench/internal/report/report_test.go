package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	cases := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{100, 1, 2}, 2}, // one stalled rep does not move it
	}
	for _, c := range cases {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median(nil) should be NaN")
	}
}

func TestPercentileNearestRank(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	if got := Percentile(ds, 50); got != 50*time.Millisecond {
		t.Errorf("p50 = %v", got)
	}
	if got := Percentile(ds, 99); got != 99*time.Millisecond {
		t.Errorf("p99 = %v", got)
	}
	if got := Percentile(ds[:1], 99); got != 100*time.Millisecond {
		t.Errorf("p99 of one = %v", got)
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("p50 of none = %v", got)
	}
}

func TestRowsRatioAndMissing(t *testing.T) {
	push := Metric{ID: "push", Title: "push | big", Unit: "MB/s", Better: Higher}
	rss := Metric{ID: "rss", Title: "peak RSS", Unit: "MiB", Better: Lower}
	r := NewResults()
	for _, v := range []float64{90, 110, 100} {
		r.Add("push", "berth", v)
	}
	for _, v := range []float64{50, 50, 60} {
		r.Add("push", "upstream", v)
	}
	r.NA("push", "debian", "not installed")
	r.Add("rss", "berth", 10)
	r.Add("rss", "upstream", 20)
	r.Fail("rss", "upstream", errors.New("boom"))
	r.Note("a note")

	rows := r.Rows([]RowSpec{
		{push, Pair{"berth", "upstream"}},
		{push, Pair{"berth", "debian"}},
		{rss, Pair{"berth", "upstream"}},
	})
	if len(rows) != 3 {
		t.Fatalf("got %d rows", len(rows))
	}
	if rows[0].Ratio == nil || *rows[0].Ratio != 2 {
		t.Errorf("ratio = %v, want 2 (100/50)", rows[0].Ratio)
	}
	if rows[1].Ratio != nil || rows[1].Peer.NA != "not installed" || rows[1].Peer.Failed {
		t.Errorf("n/a peer row = %+v", rows[1])
	}
	if !rows[2].Peer.Failed || rows[2].Peer.Value != nil || rows[2].Ratio != nil {
		t.Errorf("failed peer must not report a number: %+v", rows[2])
	}

	d := &Doc{Machine: Machine{Cores: 2, CPU: "cpu", Go: "go1", OS: "linux", Arch: "amd64"}, Reps: 3, Rows: rows, Notes: r.Notes()}
	if f := d.Failed(); len(f) != 1 || f[0].ID != RowID("rss", Pair{"berth", "upstream"}) {
		t.Errorf("Failed() = %+v", f)
	}
	var md bytes.Buffer
	if err := d.Markdown(&md); err != nil {
		t.Fatal(err)
	}
	out := md.String()
	for _, want := range []string{"machine: 2 cores", `push \| big`, "| 2.00× |", "n/a (not installed)", "n/a (error: boom)", "- a note"} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n| "); n != 4 {
		t.Errorf("markdown has %d table lines, want a header and 3 rows:\n%s", n, out)
	}

	var js bytes.Buffer
	if err := d.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Doc
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Rows) != 3 || *back.Rows[0].Subject.Value != 100 || len(back.Rows[0].Subject.Samples) != 3 {
		t.Errorf("JSON round trip lost data: %s", js.String())
	}
}

func TestFormatValue(t *testing.T) {
	for in, want := range map[float64]string{1234.5: "1234", 12.34: "12.3", 1.234: "1.23", 0.01234: "0.0123", 0: "0"} {
		if got := FormatValue(in); got != want {
			t.Errorf("FormatValue(%v) = %q, want %q", in, got, want)
		}
	}
}
