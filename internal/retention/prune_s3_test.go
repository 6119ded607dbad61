package retention

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-registry/berth/internal/testutil"
)

// startBerthOnS3 runs berth on a fresh bucket of a real S3 server
// (versitygw). Root is the directory versitygw keeps the bucket's objects
// in: versitygw's posix backend reports a file's modification time as the
// object's LastModified, so setPushed changes exactly the timestamp berth
// reads through the S3 API (HEAD), as it does on the filesystem.
func startBerthOnS3(t *testing.T) *registry {
	t.Helper()
	s3 := testutil.StartS3(t)
	b := testutil.StartBerth(t, testutil.Options{ConfigYAML: s3.ConfigYAML()})
	return newRegistry(t, b.URL, b.Host, filepath.Join(s3.Dir, s3.Bucket), nil)
}

// Prune on S3: push times are the tag links' LastModified, which S3 gives
// in whole seconds. The policies are a subset of the filesystem matrix
// (TestPruneMatrixAgainstBerth) plus what whole seconds change.
func TestPruneOnS3(t *testing.T) {
	reg := startBerthOnS3(t)
	ctx := context.Background()

	// A plain push: its time comes from the store, truncated to the second.
	before := time.Now()
	reg.push("fresh/app", "v1", dockerImage(t))
	after := time.Now()
	dry, err := Run(ctx, RunOptions{Registry: reg.URL, DryRun: true,
		Policy: mustPolicy(t, "rules:\n- repositories: [fresh/app]\n  keep: {latest: 1}\n")})
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	tp := dry.Plan.Repositories[0].Tags[0]
	if dry.Plan.Repositories[0].PushTimes != TimeSourceBerth || tp.Pushed == nil {
		t.Fatalf("fresh/app:v1: push times from %q, pushed %v; want berth's", dry.Plan.Repositories[0].PushTimes, tp.Pushed)
	}
	if p := *tp.Pushed; p.Before(before.Truncate(time.Second)) || p.After(after) {
		t.Fatalf("fresh/app:v1 pushed %s, want between %s and %s", p, before, after)
	}

	now := time.Now()
	day := 24 * time.Hour
	aged := func(repo string, ages map[string]time.Duration) {
		for tag, age := range ages {
			reg.push(repo, tag, dockerImage(t))
			reg.setPushed(repo, tag, now.Add(-age))
		}
	}
	want := map[string][]string{}
	aged("count/app", map[string]time.Duration{"t1": day, "t2": 2 * day, "t3": 3 * day, "t4": 4 * day})
	want["count/app"] = []string{"t1", "t2"}
	aged("age/app", map[string]time.Duration{"d1": day, "d10": 10 * day, "d40": 40 * day})
	want["age/app"] = []string{"d1"}
	aged("pattern/app", map[string]time.Duration{"latest": 90 * day, "v1": 90 * day, "dev": time.Hour, "pr-7": day})
	want["pattern/app"] = []string{"latest", "v1"}

	// Two tags in the same second: which is newer is unknown, so keep.latest
	// keeps both rather than the one whose name sorts first.
	second := now.Add(-time.Hour).Truncate(time.Second)
	aged("tie/app", map[string]time.Duration{"old": 2 * time.Hour})
	reg.push("tie/app", "a-same", dockerImage(t))
	reg.push("tie/app", "z-same", dockerImage(t))
	reg.setPushed("tie/app", "a-same", second)
	reg.setPushed("tie/app", "z-same", second.Add(400*time.Millisecond))
	want["tie/app"] = []string{"a-same", "z-same"}

	shared := dockerImage(t)
	sharedDigest := reg.push("shared/app", "a", shared)
	reg.tag("shared/app", shared, "b")
	reg.setPushed("shared/app", "a", now.Add(-time.Hour))
	reg.setPushed("shared/app", "b", now.Add(-2*time.Hour))
	want["shared/app"] = []string{"a"}

	ociIdx, dockerIdx := multiArch(t, types.OCIImageIndex), multiArch(t, types.DockerManifestList)
	indexes := []string{reg.push("multiarch/app", "new", ociIdx), reg.push("multiarch/app", "old", dockerIdx)}
	children := append(childDigests(t, ociIdx), childDigests(t, dockerIdx)...)
	reg.setPushed("multiarch/app", "new", now.Add(-time.Hour))
	reg.setPushed("multiarch/app", "old", now.Add(-2*time.Hour))
	want["multiarch/app"] = []string{"new"}

	policy := mustPolicy(t, `rules:
  - repositories: ["count/app"]
    keep: {latest: 2}
  - repositories: ["age/app"]
    keep: {within: 7d}
  - repositories: ["pattern/app"]
    keep: {tags: ["latest", "v*"]}
    delete: ["*"]
  - repositories: ["tie/app", "shared/app", "multiarch/app"]
    keep: {latest: 1}
settings:
  maxDeleteShare: 1
`)
	rep, err := Run(ctx, RunOptions{Registry: reg.URL, Policy: policy})
	if err != nil {
		t.Fatalf("prune: %v", err)
	}
	if rep.Outcome != OutcomeOK || rep.Failed != 0 {
		t.Fatalf("outcome %s, %d failed: %s", rep.Outcome, rep.Failed, rep.Message)
	}
	for _, rp := range rep.Plan.Repositories {
		if rp.PushTimes != TimeSourceBerth {
			t.Errorf("%s: push times from %q, want berth", rp.Name, rp.PushTimes)
		}
	}
	for repo, w := range want {
		if got := reg.tags(repo); !slices.Equal(got, w) {
			t.Errorf("%s: tags after prune %v, want %v", repo, got, w)
		}
	}
	if got := reg.tags("fresh/app"); !slices.Equal(got, []string{"v1"}) {
		t.Errorf("fresh/app (no rule) has %v after prune", got)
	}
	if d, err := reg.client().HeadManifest(ctx, "shared/app", "a"); err != nil || d.Digest != sharedDigest {
		t.Errorf("shared/app:a = %v, %v; want %s", d.Digest, err, sharedDigest)
	}
	for _, dg := range append(indexes, children...) {
		if !reg.manifestExists("multiarch/app", dg) {
			t.Errorf("multiarch/app@%s is gone; prune must only remove tags", dg)
		}
	}
}
