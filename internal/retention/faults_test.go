package retention

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/internal/registryclient"
)

// fastRetry keeps backoff short; Retry-After is still honoured as sent.
var fastRetry = registryclient.RetryPolicy{MaxAttempts: 3, BaseDelay: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond}

// seedAged pushes tags t0..t(n-1) with one image, t0 the newest.
func seedAged(t *testing.T, reg *registry, repo string, n int) {
	t.Helper()
	img := dockerImage(t)
	reg.push(repo, "t0", img)
	var more []string
	for i := 1; i < n; i++ {
		more = append(more, fmt.Sprintf("t%d", i))
	}
	reg.tag(repo, img, more...)
	now := time.Now()
	for i := range n {
		reg.setPushed(repo, fmt.Sprintf("t%d", i), now.Add(-time.Duration(i)*time.Minute))
	}
}

func isDeleteOf(r *http.Request, repo, tag string) bool {
	return r.Method == http.MethodDelete && r.URL.Path == "/v2/"+repo+"/manifests/"+tag
}

// More than one page of tags (berth's endpoint pages at 1000 like
// Distribution): every tag is seen, so keep-latest keeps the true newest.
func TestPrunePaginatesOverThousandTags(t *testing.T) {
	reg := startBerth(t)
	const n = 1100
	img := dockerImage(t)
	reg.push("big", "t0000", img)
	var tags []string
	for i := 1; i < n; i++ {
		tags = append(tags, fmt.Sprintf("t%04d", i))
	}
	reg.tag("big", img, tags...)
	// Newest last in lexical order, so the kept tags sit on the second page.
	base := time.Now().Add(-48 * time.Hour)
	for i := range n {
		reg.setPushed("big", fmt.Sprintf("t%04d", i), base.Add(time.Duration(i)*time.Second))
	}
	pol := mustPolicy(t, "rules:\n- repositories: [big]\n  keep: {latest: 10}\n")
	rep, err := Run(context.Background(), RunOptions{Registry: reg.URL, Policy: pol, Force: true})
	if err != nil {
		t.Fatalf("prune: %v", err)
	}
	if rep.Plan.Totals.Tags != n || rep.Deleted != n-10 {
		t.Fatalf("saw %d tags, deleted %d; want %d and %d", rep.Plan.Totals.Tags, rep.Deleted, n, n-10)
	}
	var want []string
	for i := n - 10; i < n; i++ {
		want = append(want, fmt.Sprintf("t%04d", i))
	}
	if got := reg.tags("big"); !slices.Equal(got, want) {
		t.Fatalf("kept %v, want %v", got, want)
	}
}

// Small pages force catalog and tag-list pagination (Link headers from
// Distribution) on a registry without berth's endpoint.
func TestPrunePaginatesCatalogAndTagsOnForeignRegistry(t *testing.T) {
	reg := startForeign(t)
	now := time.Now()
	for r := range 5 {
		repo := fmt.Sprintf("repo%d", r)
		for i := range 5 {
			reg.push(repo, fmt.Sprintf("t%d", i), withCreated(t, dockerImage(t), now.Add(-time.Duration(i+1)*time.Hour)))
		}
	}
	p := startProxy(t, reg.URL, nil)
	pol := mustPolicy(t, "rules:\n- repositories: [\"**\"]\n  keep: {latest: 2}\nsettings: {maxDeleteShare: 1}\n")
	rep, err := Run(context.Background(), RunOptions{Registry: p.URL, Policy: pol, PageSize: 2})
	if err != nil {
		t.Fatalf("prune: %v", err)
	}
	if rep.Plan.Totals.Repositories != 5 || rep.Deleted != 15 {
		t.Fatalf("repositories %d deleted %d, want 5 and 15", rep.Plan.Totals.Repositories, rep.Deleted)
	}
	for r := range 5 {
		if got := reg.tags(fmt.Sprintf("repo%d", r)); !slices.Equal(got, []string{"t0", "t1"}) {
			t.Errorf("repo%d kept %v", r, got)
		}
	}
	catalogPages := 0
	for _, req := range p.requests() {
		if req == "GET /v2/_catalog" {
			catalogPages++
		}
	}
	if catalogPages < 3 {
		t.Errorf("catalog read in %d pages, want ≥ 3 with page size 2", catalogPages)
	}
}

// A proxy fails some deletes: transient failures (503 with Retry-After, a
// 500) are retried and succeed; a persistent 500 is reported, exit 1, and
// nothing else is affected.
func TestPruneRetriesAndReportsFailedDeletes(t *testing.T) {
	reg := startBerth(t)
	seedAged(t, reg, "app", 5) // keep t0; delete t1..t4
	var mu sync.Mutex
	calls := map[string]int{}
	p := startProxy(t, reg.URL, func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		calls[r.Method+" "+r.URL.Path]++
		n := calls[r.Method+" "+r.URL.Path]
		mu.Unlock()
		switch {
		case isDeleteOf(r, "app", "t1") && n == 1:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		case isDeleteOf(r, "app", "t2") && n == 1:
			w.WriteHeader(http.StatusInternalServerError)
			return true
		case isDeleteOf(r, "app", "t3"):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `{"errors":[{"code":"UNKNOWN","message":"injected storage failure"}]}`)
			return true
		}
		return false
	})
	pol := mustPolicy(t, "rules:\n- repositories: [app]\n  keep: {latest: 1}\nsettings: {maxDeleteShare: 1}\n")
	rep, err := Run(context.Background(), RunOptions{Registry: p.URL, Policy: pol, Retry: fastRetry})
	var ee *ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != ExitFailed {
		t.Fatalf("want exit 1 for a failed delete, got %v", err)
	}
	if rep.Deleted != 3 || rep.Failed != 1 || rep.Outcome != OutcomeFailed {
		t.Fatalf("deleted %d failed %d outcome %s", rep.Deleted, rep.Failed, rep.Outcome)
	}
	if s := rep.Summary(); s.Deleted != 3 || s.Failed != 1 || s.Kept != 1 || s.Tags != 5 || s.Outcome != OutcomeFailed {
		t.Errorf("summary for metrics: %+v", s)
	}
	if got := reg.tags("app"); !slices.Equal(got, []string{"t0", "t3"}) {
		t.Fatalf("tags after prune %v, want t0 and the failed t3", got)
	}
	mu.Lock()
	if c := calls["DELETE /v2/app/manifests/t1"]; c != 2 {
		t.Errorf("503 + Retry-After: %d attempts, want 2", c)
	}
	if c := calls["DELETE /v2/app/manifests/t3"]; c != fastRetry.MaxAttempts {
		t.Errorf("persistent 500: %d attempts, want %d", c, fastRetry.MaxAttempts)
	}
	mu.Unlock()
	if rep.Retries < 4 {
		t.Errorf("report counts %d retries, want ≥ 4", rep.Retries)
	}
	for ri, rp := range rep.Plan.Repositories {
		for ti, tp := range rp.Tags {
			res := rep.Results[ri][ti]
			if tp.Tag == "t3" && (res.Status != StatusFailed || !strings.Contains(res.Error, "injected storage failure")) {
				t.Errorf("t3 result %+v, want failed with the registry's message", res)
			}
		}
	}
}

// SIGINT (context cancellation) mid-run: the delete in flight finishes and
// is reported; nothing new starts; the exit status is non-zero.
func TestPruneInterruptFinishesInFlightDeletes(t *testing.T) {
	reg := startBerth(t)
	seedAged(t, reg, "app", 5)
	started := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	p := startProxy(t, reg.URL, func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodDelete {
			once.Do(func() { close(started) })
			<-release
		}
		return false
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		rep *Report
		err error
	}
	done := make(chan result, 1)
	pol := mustPolicy(t, "rules:\n- repositories: [app]\n  keep: {latest: 1}\nsettings: {maxDeleteShare: 1}\n")
	go func() {
		rep, err := Run(ctx, RunOptions{Registry: p.URL, Policy: pol, Concurrency: 1})
		done <- result{rep, err}
	}()
	<-started
	cancel()
	close(release)
	res := <-done
	var ee *ExitError
	if !errors.As(res.err, &ee) || ee.ExitCode() != ExitInterrupted {
		t.Fatalf("want exit %d, got %v", ExitInterrupted, res.err)
	}
	if res.rep.Deleted != 1 || res.rep.NotAttempted != 3 || res.rep.Outcome != OutcomeInterrupted {
		t.Fatalf("deleted %d not attempted %d outcome %s", res.rep.Deleted, res.rep.NotAttempted, res.rep.Outcome)
	}
	if got := reg.tags("app"); len(got) != 4 {
		t.Fatalf("after interrupt %v, want 4 tags left", got)
	}
}

// Distribution 2.x answers a tag delete with 400 DIGEST_INVALID. Prune must
// stop and never fall back to deleting by digest (which would remove every
// tag sharing it).
func TestPruneRefusesRegistryThatCannotDeleteTags(t *testing.T) {
	reg := startBerth(t)
	seedAged(t, reg, "app", 4) // all four tags share one digest
	p := startProxy(t, reg.URL, func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodDelete {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"}]}`)
			return true
		}
		return false
	})
	pol := mustPolicy(t, "rules:\n- repositories: [app]\n  keep: {latest: 1}\nsettings: {maxDeleteShare: 1}\n")
	rep, err := Run(context.Background(), RunOptions{Registry: p.URL, Policy: pol, Concurrency: 1})
	if !errors.Is(err, registryclient.ErrTagDeleteUnsupported) {
		t.Fatalf("want ErrTagDeleteUnsupported, got %v", err)
	}
	var ee *ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != ExitFailed {
		t.Fatalf("want exit 1, got %v", err)
	}
	if rep.Failed != 1 || rep.NotAttempted != 2 {
		t.Fatalf("failed %d not attempted %d; want the first delete to stop the run", rep.Failed, rep.NotAttempted)
	}
	for _, req := range p.requests() {
		if strings.HasPrefix(req, "DELETE") && strings.Contains(req, "sha256:") {
			t.Fatalf("prune deleted by digest: %s", req)
		}
	}
	if got := reg.tags("app"); len(got) != 4 {
		t.Fatalf("tags changed: %v", got)
	}
}

// A tag pushed again between planning and deleting is new content the plan
// never judged: it is left alone.
func TestPruneLeavesTagPushedAgainSincePlan(t *testing.T) {
	reg := startBerth(t)
	seedAged(t, reg, "app", 3) // keep t0; delete t1, t2
	fresh := dockerImage(t)
	var once sync.Once
	p := startProxy(t, reg.URL, func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodHead && r.URL.Path == "/v2/app/manifests/t2" {
			once.Do(func() { reg.push("app", "t2", fresh) })
		}
		return false
	})
	pol := mustPolicy(t, "rules:\n- repositories: [app]\n  keep: {latest: 1}\nsettings: {maxDeleteShare: 1}\n")
	rep, err := Run(context.Background(), RunOptions{Registry: p.URL, Policy: pol})
	if err != nil {
		t.Fatalf("prune: %v", err)
	}
	if rep.Deleted != 1 || rep.Skipped != 1 {
		t.Fatalf("deleted %d skipped %d, want 1 and 1", rep.Deleted, rep.Skipped)
	}
	d, err := reg.client().HeadManifest(context.Background(), "app", "t2")
	if err != nil || d.Digest != digestOf(t, fresh) {
		t.Fatalf("re-pushed t2: %v %v", d.Digest, err)
	}
}
