package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/berth-registry/berth/internal/progress"
	"github.com/berth-registry/berth/internal/registryclient"
)

// DefaultConcurrency bounds requests in flight.
const DefaultConcurrency = 8

// RunOptions configure one prune run, from the CLI or from `berth serve`'s
// schedule.
type RunOptions struct {
	// Registry is the base URL, http(s)://host[:port].
	Registry string
	// Policy, or PolicyFile to load it from.
	Policy     *Policy
	PolicyFile string
	DryRun     bool
	// Force overrides safety stops.
	Force       bool
	Concurrency int
	// PageSize is n for catalog and tag listing; 0 means 1000.
	PageSize int
	// Auth defaults to anonymous.
	Auth      authn.Authenticator
	CAFile    string
	Transport http.RoundTripper
	Retry     registryclient.RetryPolicy
	Logger    *slog.Logger
	// Progress defaults to none.
	Progress progress.Factory
	// Now is the clock ages are measured against; defaults to time.Now.
	Now func() time.Time
}

// Outcome summarises a run for exit codes and metrics.
type Outcome string

const (
	OutcomeOK          Outcome = "ok"
	OutcomeDryRun      Outcome = "dry-run"
	OutcomeSafetyStop  Outcome = "safety-stop"
	OutcomeFailed      Outcome = "failed"
	OutcomeInterrupted Outcome = "interrupted"
)

// Report is what a run did. Plan is nil when listing failed.
type Report struct {
	Registry string
	DryRun   bool
	Outcome  Outcome
	// Message explains a non-OK outcome in one sentence.
	Message string
	Plan    *Plan
	// Results parallels Plan.Repositories[i].Tags[j].
	Results [][]Result

	Kept, Deleted, Failed, Skipped, NotAttempted int
	Retries                                      int64

	Started        time.Time
	ListDuration   time.Duration
	DeleteDuration time.Duration
	Duration       time.Duration
}

// Run lists, plans and (unless DryRun) deletes. The error carries an exit
// status (ExitCode()); the report is non-nil once the options are valid, so
// callers can print or record it even when the run failed.
func Run(ctx context.Context, opts RunOptions) (*Report, error) {
	started := time.Now()
	pol := opts.Policy
	if pol == nil {
		if opts.PolicyFile == "" {
			return nil, usageErr(errors.New("no policy: set --policy"))
		}
		var err error
		if pol, err = LoadPolicy(opts.PolicyFile); err != nil {
			return nil, err
		}
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.Concurrency < 1 || opts.Concurrency > 256 {
		return nil, usageErr(fmt.Errorf("concurrency %d: want 1..256", opts.Concurrency))
	}
	if opts.PageSize < 0 {
		return nil, usageErr(fmt.Errorf("page size %d: want ≥ 1", opts.PageSize))
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	bars := opts.Progress
	if bars == nil {
		bars = progress.Nop()
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	client, err := registryclient.New(registryclient.Options{
		URL: opts.Registry, Auth: opts.Auth, CAFile: opts.CAFile, ReadOnly: opts.DryRun,
		MaxConnsPerHost: opts.Concurrency, Retry: opts.Retry, Logger: log, Transport: opts.Transport,
		UserAgent: "berth-prune",
	})
	if err != nil {
		return nil, usageErr(err)
	}

	rep := &Report{Registry: client.URL(), DryRun: opts.DryRun, Started: started}
	finish := func(err error) (*Report, error) {
		rep.Retries = client.Retries()
		rep.Duration = time.Since(started)
		return rep, err
	}

	log.Info("prune: listing", "registry", client.URL(), "policy", pol.File, "dry_run", opts.DryRun)
	repos, untouched, err := inventory(ctx, client, pol, opts.PageSize, opts.Concurrency, bars)
	rep.ListDuration = time.Since(started)
	if err != nil {
		if ctx.Err() != nil {
			rep.Outcome, rep.Message = OutcomeInterrupted, "interrupted while listing; nothing was deleted"
			return finish(&ExitError{Code: ExitInterrupted, Err: fmt.Errorf("prune interrupted while listing: %w", err)})
		}
		rep.Outcome, rep.Message = OutcomeFailed, "listing failed; nothing was deleted: "+err.Error()
		return finish(&ExitError{Code: ExitFailed, Err: fmt.Errorf("prune: %w", err)})
	}

	plan := BuildPlan(pol, repos, untouched, now(), opts.Force)
	rep.Plan = plan
	rep.Kept = plan.Totals.Keep

	switch {
	case plan.Blocked():
		rep.Results = newResults(plan, StatusNotAttempted, "safety stop")
		rep.NotAttempted = plan.Totals.Delete
		rep.Outcome = OutcomeSafetyStop
		rep.Message = "safety stop: nothing was deleted"
		if opts.DryRun {
			rep.Message = "safety stop: a real run would delete nothing"
		}
		return finish(&ExitError{Code: ExitSafetyStop, Err: fmt.Errorf("prune: %s", joinStops(plan.SafetyStops))})
	case opts.DryRun:
		rep.Results = newResults(plan, StatusDryRun, "")
		rep.Outcome, rep.Message = OutcomeDryRun, "dry run: nothing was deleted"
		return finish(nil)
	}

	log.Info("prune: deleting", "tags", plan.Totals.Delete, "concurrency", opts.Concurrency)
	delStart := time.Now()
	bar := bars.New("deleting", plan.Totals.Delete)
	ex := execute(ctx, plan, client, opts.Concurrency, bar, log)
	bar.Finish()
	rep.DeleteDuration = time.Since(delStart)
	rep.Results = ex.results
	for _, rs := range ex.results {
		for _, r := range rs {
			switch r.Status {
			case StatusDeleted:
				rep.Deleted++
			case StatusFailed:
				rep.Failed++
			case StatusSkipped:
				rep.Skipped++
			case StatusNotAttempted:
				rep.NotAttempted++
			}
		}
	}
	log.Info("prune: done", "deleted", rep.Deleted, "failed", rep.Failed, "skipped", rep.Skipped,
		"not_attempted", rep.NotAttempted, "retries", client.Retries())

	switch {
	case ex.interrupted:
		rep.Outcome = OutcomeInterrupted
		rep.Message = fmt.Sprintf("interrupted: deletes in flight finished, %d not attempted", rep.NotAttempted)
		return finish(&ExitError{Code: ExitInterrupted, Err: errors.New("prune interrupted: " + rep.Message)})
	case ex.abort != nil:
		rep.Outcome = OutcomeFailed
		rep.Message = "deletes stopped: " + ex.abort.Error()
		return finish(&ExitError{Code: ExitFailed, Err: fmt.Errorf("prune: %w", ex.abort)})
	case rep.Failed > 0:
		rep.Outcome = OutcomeFailed
		rep.Message = fmt.Sprintf("%d of %d deletes failed", rep.Failed, plan.Totals.Delete)
		return finish(&ExitError{Code: ExitFailed, Err: errors.New("prune: " + rep.Message)})
	}
	rep.Outcome, rep.Message = OutcomeOK, ""
	return finish(nil)
}

func joinStops(stops []string) string {
	if len(stops) == 1 {
		return "safety stop: " + stops[0]
	}
	s := fmt.Sprintf("%d safety stops:", len(stops))
	for _, st := range stops {
		s += "\n  " + st
	}
	return s
}

// Summary is a report's headline numbers, for metrics and `berth serve`'s
// last-run status.
type Summary struct {
	Outcome         Outcome   `json:"outcome"`
	Message         string    `json:"message,omitempty"`
	DryRun          bool      `json:"dry_run"`
	Started         time.Time `json:"started"`
	DurationSeconds float64   `json:"duration_seconds"`
	Repositories    int       `json:"repositories"`
	Tags            int       `json:"tags"`
	Kept            int       `json:"kept"`
	Deleted         int       `json:"deleted"`
	Failed          int       `json:"failed"`
	Skipped         int       `json:"skipped"`
	NotAttempted    int       `json:"not_attempted"`
	Retries         int64     `json:"retries"`
}

// Summary returns the report's headline numbers.
func (r *Report) Summary() Summary {
	s := Summary{
		Outcome: r.Outcome, Message: r.Message, DryRun: r.DryRun, Started: r.Started,
		DurationSeconds: r.Duration.Seconds(), Kept: r.Kept, Deleted: r.Deleted, Failed: r.Failed,
		Skipped: r.Skipped, NotAttempted: r.NotAttempted, Retries: r.Retries,
	}
	if r.Plan != nil {
		s.Repositories, s.Tags = r.Plan.Totals.Repositories, r.Plan.Totals.Tags
	}
	return s
}
