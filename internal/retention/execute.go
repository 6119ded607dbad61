package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"github.com/berth-registry/berth/internal/progress"
	"github.com/berth-registry/berth/internal/registryclient"
)

// Status is what happened to a tag the plan deletes.
type Status string

const (
	StatusDeleted Status = "deleted"
	StatusFailed  Status = "failed"
	// StatusSkipped: the tag was gone or had been pushed again since the
	// plan; it is left alone.
	StatusSkipped      Status = "skipped"
	StatusNotAttempted Status = "not-attempted"
	StatusDryRun       Status = "dry-run"
)

// Result is the outcome for one tag; zero for tags the plan keeps.
type Result struct {
	Status Status `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
}

// deleteAPI is what executing a plan needs from the registry client.
type deleteAPI interface {
	HeadManifest(ctx context.Context, repo, ref string) (registryclient.Descriptor, error)
	DeleteTag(ctx context.Context, repo, tag string) error
}

// execution is the outcome of executing a plan.
type execution struct {
	results     [][]Result
	interrupted bool
	// abort is why deletes stopped early (the registry cannot delete
	// tags); nil otherwise.
	abort error
}

// newResults marks every planned delete with status; used for dry runs and
// stopped runs so the report says what did not happen.
func newResults(plan *Plan, status Status, reason string) [][]Result {
	out := make([][]Result, len(plan.Repositories))
	for ri, rp := range plan.Repositories {
		out[ri] = make([]Result, len(rp.Tags))
		for ti, tp := range rp.Tags {
			if tp.Action == ActionDelete {
				out[ri][ti] = Result{Status: status, Error: reason}
			}
		}
	}
	return out
}

// execute deletes the plan's delete decisions by tag, at most concurrency
// at a time. On cancellation of ctx (SIGINT) it starts nothing new, lets
// deletes already sent finish, and reports the rest as not attempted.
func execute(ctx context.Context, plan *Plan, api deleteAPI, concurrency int, bar progress.Bar, log *slog.Logger) execution {
	ex := execution{results: newResults(plan, StatusNotAttempted, "")}
	type job struct{ repo, tag int }
	// Round-robin over repositories, so concurrent deletes land in
	// different storage directories instead of contending for one.
	perRepo := make([][]job, len(plan.Repositories))
	for ri, rp := range plan.Repositories {
		for ti, tp := range rp.Tags {
			if tp.Action == ActionDelete {
				perRepo[ri] = append(perRepo[ri], job{ri, ti})
			}
		}
	}
	var jobs []job
	for round := 0; ; round++ {
		added := false
		for _, js := range perRepo {
			if round < len(js) {
				jobs = append(jobs, js[round])
				added = true
			}
		}
		if !added {
			break
		}
	}

	abortCh := make(chan struct{})
	var abortOnce sync.Once
	var mu sync.Mutex
	sem := make(chan struct{}, max(concurrency, 1))
	var wg sync.WaitGroup
dispatch:
	for _, j := range jobs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break dispatch
		case <-abortCh:
			break dispatch
		}
		// Both may have happened while we waited for a slot.
		select {
		case <-ctx.Done():
			<-sem
			break dispatch
		case <-abortCh:
			<-sem
			break dispatch
		default:
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			repo := plan.Repositories[j.repo].Name
			tp := plan.Repositories[j.repo].Tags[j.tag]
			res, err := deleteOne(registryclient.Detach(ctx), api, repo, tp)
			mu.Lock()
			ex.results[j.repo][j.tag] = res
			if errors.Is(err, registryclient.ErrTagDeleteUnsupported) {
				abortOnce.Do(func() {
					ex.abort = err
					close(abortCh)
				})
			}
			mu.Unlock()
			switch res.Status {
			case StatusFailed:
				log.Warn("delete failed", "repository", repo, "tag", tp.Tag, "error", res.Error)
			case StatusSkipped:
				log.Info("tag left alone", "repository", repo, "tag", tp.Tag, "reason", res.Error)
			default:
				log.Debug("tag deleted", "repository", repo, "tag", tp.Tag, "digest", tp.Digest)
			}
			bar.Add(1)
		}()
	}
	wg.Wait()
	ex.interrupted = ctx.Err() != nil
	if ex.abort != nil {
		for ri := range ex.results {
			for ti, r := range ex.results[ri] {
				if r.Status == StatusNotAttempted {
					ex.results[ri][ti].Error = "deletes stopped: the registry cannot delete tags"
				}
			}
		}
	}
	return ex
}

// deleteOne deletes one tag after checking that it still points at the
// planned digest: a tag pushed again since the plan is new content the plan
// never judged, so deleting it would remove a fresh image.
func deleteOne(ctx context.Context, api deleteAPI, repo string, tp TagPlan) (Result, error) {
	desc, err := api.HeadManifest(ctx, repo, tp.Tag)
	if err != nil {
		if registryclient.StatusCode(err) == http.StatusNotFound {
			return Result{Status: StatusSkipped, Error: "tag already gone"}, nil
		}
		return Result{Status: StatusFailed, Error: err.Error()}, err
	}
	if tp.Digest != "" && desc.Digest != tp.Digest {
		return Result{Status: StatusSkipped, Error: fmt.Sprintf("tag now points at %s (pushed again since the plan)", desc.Digest)}, nil
	}
	if err := api.DeleteTag(ctx, repo, tp.Tag); err != nil {
		if registryclient.StatusCode(err) == http.StatusNotFound && !errors.Is(err, registryclient.ErrTagDeleteUnsupported) {
			return Result{Status: StatusSkipped, Error: "tag already gone"}, nil
		}
		return Result{Status: StatusFailed, Error: err.Error()}, err
	}
	return Result{Status: StatusDeleted}, nil
}
