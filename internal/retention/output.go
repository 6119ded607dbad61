package retention

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// reportJSON is the --output json document: the plan with each tag's
// result, and the totals. Field names are a stable interface.
type reportJSON struct {
	Registry     string             `json:"registry"`
	DryRun       bool               `json:"dry_run"`
	Outcome      Outcome            `json:"outcome"`
	Message      string             `json:"message,omitempty"`
	Policy       string             `json:"policy,omitempty"`
	PolicyFormat Format             `json:"policy_format,omitempty"`
	PlannedAt    *time.Time         `json:"planned_at,omitempty"`
	SafetyStops  []string           `json:"safety_stops,omitempty"`
	Forced       bool               `json:"forced,omitempty"`
	Repositories []repoJSON         `json:"repositories"`
	Untouched    []string           `json:"untouched"`
	Totals       totalsJSON         `json:"totals"`
	Durations    map[string]float64 `json:"duration_seconds"`
}

type repoJSON struct {
	Name      string     `json:"name"`
	Rule      string     `json:"rule"`
	PushTimes TimeSource `json:"push_times"`
	Keep      int        `json:"keep"`
	Delete    int        `json:"delete"`
	Tags      []tagJSON  `json:"tags"`
}

type tagJSON struct {
	TagPlan
	Result
}

type totalsJSON struct {
	Totals
	Deleted      int   `json:"deleted"`
	Failed       int   `json:"failed"`
	Skipped      int   `json:"skipped"`
	NotAttempted int   `json:"not_attempted"`
	Retries      int64 `json:"retries"`
}

// WriteJSON writes the report as one JSON document.
func WriteJSON(w io.Writer, r *Report) error {
	doc := reportJSON{
		Registry: r.Registry, DryRun: r.DryRun, Outcome: r.Outcome, Message: r.Message,
		Repositories: []repoJSON{}, Untouched: []string{},
		Totals: totalsJSON{Deleted: r.Deleted, Failed: r.Failed, Skipped: r.Skipped, NotAttempted: r.NotAttempted, Retries: r.Retries},
		Durations: map[string]float64{
			"list": r.ListDuration.Seconds(), "delete": r.DeleteDuration.Seconds(), "total": r.Duration.Seconds(),
		},
	}
	if p := r.Plan; p != nil {
		at := p.PlannedAt
		doc.Policy, doc.PolicyFormat, doc.PlannedAt = p.Policy, p.PolicyFormat, &at
		doc.SafetyStops, doc.Forced, doc.Untouched = p.SafetyStops, p.Forced, p.Untouched
		doc.Totals.Totals = p.Totals
		for ri, rp := range p.Repositories {
			rj := repoJSON{Name: rp.Name, Rule: rp.Rule, PushTimes: rp.PushTimes, Keep: rp.Keep, Delete: rp.Delete, Tags: []tagJSON{}}
			for ti, tp := range rp.Tags {
				rj.Tags = append(rj.Tags, tagJSON{TagPlan: tp, Result: resultAt(r, ri, ti)})
			}
			doc.Repositories = append(doc.Repositories, rj)
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("write JSON report: %w", err)
	}
	return nil
}

func resultAt(r *Report, ri, ti int) Result {
	if ri < len(r.Results) && ti < len(r.Results[ri]) {
		return r.Results[ri][ti]
	}
	return Result{}
}

// WriteText writes the report for people: per repository each tag with
// digest, push time, decision, clause and result; then totals.
func WriteText(w io.Writer, r *Report) error {
	ew := &errWriter{w: w}
	mode := "delete"
	if r.DryRun {
		mode = "dry run (nothing is deleted)"
	}
	ew.printf("registry: %s\nmode:     %s\n", r.Registry, mode)
	if p := r.Plan; p != nil {
		ew.printf("policy:   %s (%s format)\n", p.Policy, p.PolicyFormat)
		for ri, rp := range p.Repositories {
			ew.printf("\n%s — %s, push times: %s — keep %d, delete %d\n", rp.Name, rp.Rule, rp.PushTimes, rp.Keep, rp.Delete)
			if len(rp.Tags) == 0 {
				ew.printf("  (no tags)\n")
				continue
			}
			tw := tabwriter.NewWriter(ew, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "  DECISION\tTAG\tDIGEST\tPUSHED\tCLAUSE\tRESULT")
			for ti, tp := range rp.Tags {
				res := resultAt(r, ri, ti)
				result := string(res.Status)
				if res.Error != "" {
					result += ": " + res.Error
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", tp.Action, tp.Tag, shortDigest(tp.Digest), pushedText(tp.Pushed), tp.Clause, result)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		if len(p.Untouched) > 0 {
			ew.printf("\nuntouched (no rule matches): %s\n", plural(len(p.Untouched), "repository", "repositories"))
			for _, n := range p.Untouched {
				ew.printf("  %s\n", n)
			}
		}
		for _, s := range p.SafetyStops {
			if p.Forced {
				ew.printf("\nsafety stop overridden by --force: %s\n", s)
			} else {
				ew.printf("\nSAFETY STOP: %s\n", s)
			}
		}
		t := p.Totals
		ew.printf("\ntotals: %s, %s: keep %d, delete %d", plural(t.Repositories, "repository", "repositories"),
			plural(t.Tags, "tag", "tags"), t.Keep, t.Delete)
		if !r.DryRun {
			ew.printf(" → deleted %d, failed %d, skipped %d, not attempted %d", r.Deleted, r.Failed, r.Skipped, r.NotAttempted)
		}
		ew.printf("\n")
	}
	ew.printf("retries:  %d\ntime:     listing %s, deleting %s, total %s\n", r.Retries,
		r.ListDuration.Round(time.Millisecond), r.DeleteDuration.Round(time.Millisecond), r.Duration.Round(time.Millisecond))
	ew.printf("outcome:  %s", r.Outcome)
	if r.Message != "" {
		ew.printf(" — %s", r.Message)
	}
	ew.printf("\n")
	return ew.err
}

// shortDigest keeps the text table readable; JSON has the full digest.
func shortDigest(d string) string {
	if algo, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
		return algo + ":" + hex[:12]
	}
	if d == "" {
		return "-"
	}
	return d
}

func pushedText(t *time.Time) string {
	if t == nil {
		return "unknown"
	}
	return t.UTC().Format(time.RFC3339)
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	if err != nil {
		e.err = fmt.Errorf("write report: %w", err)
	}
	return n, err
}

func (e *errWriter) printf(format string, args ...any) { fmt.Fprintf(e, format, args...) }

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
