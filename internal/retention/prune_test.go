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

	"github.com/google/go-containerregistry/pkg/v1/types"
)

const matrixPolicy = `rules:
  - repositories: ["first/special"]
    keep: {latest: 100}
  - repositories: ["count/**", "first/**"]
    keep: {latest: 2}
  - repositories: ["age/app"]
    keep: {within: 7d}
  - repositories: ["pattern/app"]
    keep: {tags: ["latest", "v*", "re:^release-"]}
    delete: ["*"]
  - repositories: ["semver/app"]
    keep: {semver: 2}
    delete: ["re:^v?[0-9]"]
  - repositories: ["shared/app", "multiarch/**", "docker/app", "oci/app", "empty/app"]
    keep: {latest: 1}
settings:
  maxDeleteShare: 1
`

type matrixFixture struct {
	reg        *registry
	sharedA    string
	indexNew   string
	indexOld   string
	children   []string
	wantTags   map[string][]string
	wantDelete map[string][]string
}

// seedMatrix pushes one repository per case of the policy matrix and sets
// push times through storage mtimes; ages are in hours before now.
func seedMatrix(t *testing.T, reg *registry) *matrixFixture {
	t.Helper()
	now := time.Now()
	f := &matrixFixture{reg: reg, wantTags: map[string][]string{}, wantDelete: map[string][]string{}}
	day := 24 * time.Hour
	aged := func(repo string, ages map[string]time.Duration) {
		for tag, age := range ages {
			reg.push(repo, tag, dockerImage(t))
			reg.setPushed(repo, tag, now.Add(-age))
		}
	}
	aged("count/app", map[string]time.Duration{"t1": 1 * day, "t2": 2 * day, "t3": 3 * day, "t4": 4 * day, "t5": 5 * day})
	f.wantTags["count/app"] = []string{"t1", "t2"}
	f.wantDelete["count/app"] = []string{"t3", "t4", "t5"}

	aged("first/special", map[string]time.Duration{"a": day, "b": 2 * day, "c": 3 * day})
	f.wantTags["first/special"] = []string{"a", "b", "c"}
	aged("first/other", map[string]time.Duration{"a": day, "b": 2 * day, "c": 3 * day})
	f.wantTags["first/other"] = []string{"a", "b"}
	f.wantDelete["first/other"] = []string{"c"}

	aged("age/app", map[string]time.Duration{"d1": day, "d5": 5 * day, "d10": 10 * day, "d40": 40 * day})
	f.wantTags["age/app"] = []string{"d1", "d5"}
	f.wantDelete["age/app"] = []string{"d10", "d40"}

	aged("pattern/app", map[string]time.Duration{"latest": 90 * day, "v1": 90 * day, "v2.0": day, "release-3": 9 * day, "dev": time.Hour, "pr-7": day})
	f.wantTags["pattern/app"] = []string{"latest", "release-3", "v1", "v2.0"}
	f.wantDelete["pattern/app"] = []string{"dev", "pr-7"}

	aged("semver/app", map[string]time.Duration{"1.0.0": day, "1.2.0": 2 * day, "v1.10.0": 3 * day, "2.0.0-rc1": 4 * day, "latest": 5 * day})
	f.wantTags["semver/app"] = []string{"2.0.0-rc1", "latest", "v1.10.0"}
	f.wantDelete["semver/app"] = []string{"1.0.0", "1.2.0"}

	// Two tags on one digest: deleting one must leave the other.
	shared := dockerImage(t)
	f.sharedA = reg.push("shared/app", "a", shared)
	reg.tag("shared/app", shared, "b")
	reg.push("shared/app", "c", dockerImage(t))
	reg.setPushed("shared/app", "a", now.Add(-time.Hour))
	reg.setPushed("shared/app", "b", now.Add(-2*time.Hour))
	reg.setPushed("shared/app", "c", now.Add(-3*time.Hour))
	f.wantTags["shared/app"] = []string{"a"}
	f.wantDelete["shared/app"] = []string{"b", "c"}

	// Multi-arch: an OCI index and a Docker manifest list, one unit per tag.
	ociIdx, dockerIdx := multiArch(t, types.OCIImageIndex), multiArch(t, types.DockerManifestList)
	f.indexNew = reg.push("multiarch/app", "new", ociIdx)
	f.indexOld = reg.push("multiarch/app", "old", dockerIdx)
	f.children = append(childDigests(t, ociIdx), childDigests(t, dockerIdx)...)
	reg.setPushed("multiarch/app", "new", now.Add(-time.Hour))
	reg.setPushed("multiarch/app", "old", now.Add(-2*time.Hour))
	f.wantTags["multiarch/app"] = []string{"new"}
	f.wantDelete["multiarch/app"] = []string{"old"}

	reg.push("docker/app", "d-new", dockerImage(t))
	reg.push("docker/app", "d-old", dockerImage(t))
	reg.setPushed("docker/app", "d-new", now.Add(-time.Hour))
	reg.setPushed("docker/app", "d-old", now.Add(-2*time.Hour))
	f.wantTags["docker/app"] = []string{"d-new"}
	f.wantDelete["docker/app"] = []string{"d-old"}

	reg.push("oci/app", "o-new", ociImage(t))
	reg.push("oci/app", "o-old", ociImage(t))
	reg.setPushed("oci/app", "o-new", now.Add(-time.Hour))
	reg.setPushed("oci/app", "o-old", now.Add(-2*time.Hour))
	f.wantTags["oci/app"] = []string{"o-new"}
	f.wantDelete["oci/app"] = []string{"o-old"}

	// A repository with content but no tag (pushed by digest).
	img := dockerImage(t)
	dg := digestOf(t, img)
	if err := reg.pusher.Push(context.Background(), reg.ref("empty/app", "x").Context().Digest(dg), img); err != nil {
		t.Fatal(err)
	}
	f.wantTags["empty/app"] = []string{}

	aged("untouched/app", map[string]time.Duration{"x": 100 * day, "y": 200 * day})
	f.wantTags["untouched/app"] = []string{"x", "y"}
	return f
}

func (f *matrixFixture) check(t *testing.T) {
	t.Helper()
	for repo, want := range f.wantTags {
		if got := f.reg.tags(repo); !slices.Equal(got, want) {
			t.Errorf("%s: tags after prune %v, want %v", repo, got, want)
		}
	}
	// The surviving tag of a shared digest still resolves to it.
	if d, err := f.reg.client().HeadManifest(context.Background(), "shared/app", "a"); err != nil || d.Digest != f.sharedA {
		t.Errorf("shared/app:a = %v, %v; want %s", d.Digest, err, f.sharedA)
	}
	// Deleting an index's tag removes neither the index nor any child.
	for _, dg := range append([]string{f.indexNew, f.indexOld}, f.children...) {
		if !f.reg.manifestExists("multiarch/app", dg) {
			t.Errorf("multiarch/app@%s is gone; prune must only remove tags", dg)
		}
	}
}

func deletedByReport(rep *Report) map[string][]string {
	out := map[string][]string{}
	for ri, rp := range rep.Plan.Repositories {
		for ti, tp := range rp.Tags {
			if tp.Action == ActionDelete {
				out[rp.Name] = append(out[rp.Name], tp.Tag)
				if s := rep.Results[ri][ti].Status; s != StatusDeleted && s != StatusDryRun {
					panic(fmt.Sprintf("%s:%s: status %s", rp.Name, tp.Tag, s))
				}
			}
		}
		slices.Sort(out[rp.Name])
	}
	return out
}

func TestPruneMatrixAgainstBerth(t *testing.T) {
	reg := startBerth(t)
	f := seedMatrix(t, reg)
	policy := writePolicy(t, matrixPolicy)

	// Dry run first: the plan is complete and nothing changes.
	dry, err := Run(context.Background(), RunOptions{Registry: reg.URL, PolicyFile: policy, DryRun: true})
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if dry.Outcome != OutcomeDryRun || dry.Deleted != 0 {
		t.Fatalf("dry run outcome %s, deleted %d", dry.Outcome, dry.Deleted)
	}
	for repo := range f.wantDelete {
		if len(reg.tags(repo)) == len(f.wantTags[repo]) {
			t.Fatalf("dry run deleted tags from %s", repo)
		}
	}

	rep, err := Run(context.Background(), RunOptions{Registry: reg.URL, PolicyFile: policy})
	if err != nil {
		t.Fatalf("prune: %v", err)
	}
	if rep.Outcome != OutcomeOK {
		t.Fatalf("outcome %s: %s", rep.Outcome, rep.Message)
	}
	gotDel := deletedByReport(rep)
	for repo, want := range f.wantDelete {
		if !slices.Equal(gotDel[repo], want) {
			t.Errorf("%s: report deleted %v, want %v", repo, gotDel[repo], want)
		}
	}
	f.check(t)

	wantDeleted := 0
	for _, d := range f.wantDelete {
		wantDeleted += len(d)
	}
	if rep.Deleted != wantDeleted || rep.Failed != 0 || rep.Plan.Totals.Delete != wantDeleted {
		t.Errorf("deleted %d failed %d planned %d, want %d", rep.Deleted, rep.Failed, rep.Plan.Totals.Delete, wantDeleted)
	}
	if !slices.Equal(rep.Plan.Untouched, []string{"untouched/app"}) {
		t.Errorf("untouched %v", rep.Plan.Untouched)
	}
	for _, rp := range rep.Plan.Repositories {
		if rp.PushTimes != TimeSourceBerth {
			t.Errorf("%s: push times from %q, want berth", rp.Name, rp.PushTimes)
		}
	}
	// The dry run planned exactly what the real run then did.
	if !slices.Equal(sortedKeys(deletedByReport(dry)), sortedKeys(gotDel)) {
		t.Errorf("dry run and real run differ")
	}
	for repo, tags := range deletedByReport(dry) {
		if !slices.Equal(tags, gotDel[repo]) {
			t.Errorf("%s: dry run planned %v, real run deleted %v", repo, tags, gotDel[repo])
		}
	}

	// A second run finds nothing more to delete.
	again, err := Run(context.Background(), RunOptions{Registry: reg.URL, PolicyFile: policy})
	if err != nil || again.Plan.Totals.Delete != 0 {
		t.Fatalf("second run: %v, plans %d deletes", err, again.Plan.Totals.Delete)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Against the same registry state and clock, a dry run and a real run
// compute the identical plan value.
func TestPruneDryRunPlanIsTheExecutedPlan(t *testing.T) {
	reg := startBerth(t)
	now := time.Now()
	for i := range 6 {
		tag := fmt.Sprintf("t%d", i)
		reg.push("app", tag, dockerImage(t))
		reg.setPushed("app", tag, now.Add(-time.Duration(i)*time.Hour))
	}
	opts := RunOptions{Registry: reg.URL, Policy: mustPolicy(t, "rules:\n- repositories: [app]\n  keep: {latest: 3}\n"),
		Now: func() time.Time { return now }}
	dryOpts := opts
	dryOpts.DryRun = true
	dry, err := Run(context.Background(), dryOpts)
	if err != nil {
		t.Fatal(err)
	}
	if got := reg.tags("app"); len(got) != 6 {
		t.Fatalf("dry run changed tags: %v", got)
	}
	real, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%+v", *dry.Plan) != fmt.Sprintf("%+v", *real.Plan) || dumpPlan(dry.Plan.Repositories[0]) != dumpPlan(real.Plan.Repositories[0]) {
		t.Fatalf("plans differ:\n%+v\n%+v", dry.Plan, real.Plan)
	}
	if got := reg.tags("app"); !slices.Equal(got, []string{"t0", "t1", "t2"}) {
		t.Fatalf("tags after prune %v", got)
	}
}

// A registry without berth's endpoint: ages come from the images, and the
// report says so. Reproducible-build dates (1970) are unknown, not ancient.
func TestPruneFallbackToImageCreated(t *testing.T) {
	reg := startForeign(t)
	now := time.Now()
	day := 24 * time.Hour
	reg.push("app", "new", withCreated(t, dockerImage(t), now.Add(-day)))
	reg.push("app", "old", withCreated(t, ociImage(t), now.Add(-30*day)))
	reg.push("app", "ko", withCreated(t, dockerImage(t), time.Unix(0, 0)))
	// An index dated by its first platform image.
	idx := multiArch(t, types.OCIImageIndex)
	reg.push("app", "multi-old", idx)

	pol := mustPolicy(t, "rules:\n- repositories: [app]\n  keep: {within: 7d}\n")
	rep, err := Run(context.Background(), RunOptions{Registry: reg.URL, Policy: pol})
	if err != nil {
		t.Fatalf("prune: %v (%s)", err, rep.Message)
	}
	rp := rep.Plan.Repositories[0]
	if rp.PushTimes != TimeSourceCreated {
		t.Fatalf("push times %q, want image created", rp.PushTimes)
	}
	// random images carry no date, so the index (and the 1970 image) have
	// no known age and stay.
	if got := reg.tags("app"); !slices.Equal(got, []string{"ko", "multi-old", "new"}) {
		t.Fatalf("tags after prune %v, want ko, multi-old, new", got)
	}
	for _, tp := range rp.Tags {
		if tp.Tag == "ko" && (tp.Pushed != nil || !strings.Contains(tp.Clause, "unknown")) {
			t.Errorf("1970 image: pushed %v clause %q; want unknown and kept", tp.Pushed, tp.Clause)
		}
		if tp.Digest == "" {
			t.Errorf("%s has no digest", tp.Tag)
		}
	}
	var text strings.Builder
	if err := WriteText(&text, rep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "push times: image created (approximate)") {
		t.Errorf("text report does not say where ages came from:\n%s", text.String())
	}
}

func TestPruneSafetyStop(t *testing.T) {
	reg := startBerth(t)
	reg.push("app", "a", dockerImage(t))
	reg.push("app", "b", dockerImage(t))
	pol := mustPolicy(t, "rules:\n- repositories: [app]\n  delete: [\"*\"]\n")
	rep, err := Run(context.Background(), RunOptions{Registry: reg.URL, Policy: pol})
	var ee *ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != ExitSafetyStop {
		t.Fatalf("want a safety stop (exit 3), got %v", err)
	}
	if rep.Outcome != OutcomeSafetyStop || rep.Deleted != 0 || rep.NotAttempted != 2 || !strings.Contains(err.Error(), "would delete all 2 tags") {
		t.Fatalf("outcome %s deleted %d not-attempted %d err %v", rep.Outcome, rep.Deleted, rep.NotAttempted, err)
	}
	if got := reg.tags("app"); len(got) != 2 {
		t.Fatalf("safety stop deleted tags: %v", got)
	}
	rep, err = Run(context.Background(), RunOptions{Registry: reg.URL, Policy: pol, Force: true})
	if err != nil || rep.Deleted != 2 {
		t.Fatalf("--force: %v, deleted %d", err, rep.Deleted)
	}
	if got := reg.tags("app"); len(got) != 0 {
		t.Fatalf("--force left %v", got)
	}
}

func TestPruneBadPolicySendsNothing(t *testing.T) {
	var hits int
	var mu sync.Mutex
	p := startProxy(t, "http://127.0.0.1:1", func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		hits++
		mu.Unlock()
		w.WriteHeader(http.StatusTeapot)
		return true
	})
	file := writePolicy(t, "rules:\n  - repositories: [app]\n    keep:\n      lastest: 3\n")
	_, err := Run(context.Background(), RunOptions{Registry: p.URL, PolicyFile: file})
	var ee *ExitError
	var pe *PolicyError
	if !errors.As(err, &pe) || !errors.Is(err, ErrUsage) || errors.As(err, &ee) && ee.ExitCode() != ExitUsage {
		t.Fatalf("want a policy usage error, got %T %v", err, err)
	}
	if !strings.Contains(err.Error(), file+":4:") {
		t.Errorf("error %q lacks file:line", err)
	}
	if hits != 0 {
		t.Errorf("a bad policy sent %d requests", hits)
	}
}
