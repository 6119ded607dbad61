package gc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/internal/maintenance"
	"github.com/berth-registry/berth/internal/referrers"
)

func toDigest(h v1.Hash) digest.Digest { return digest.Digest(h.String()) }

func blobStored(t *testing.T, d storagedriver.StorageDriver, h v1.Hash) bool {
	t.Helper()
	_, err := d.Stat(context.Background(), blobDataPath(toDigest(h)))
	if err != nil && !isNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

func layerDigests(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Hash
	for _, l := range ls {
		out = append(out, digestOf(t, l))
	}
	return out
}

func TestRunDeletesUntaggedAndKeepsEveryTaggedImagePullable(t *testing.T) {
	deletesUntaggedAndKeepsTagged(t, newTestRegistry(t))
}

// On S3 the scanner walks with the driver's flat listing and every
// deletion is a list plus a batch delete: the same decisions must come out.
func TestRunOnS3DeletesUntaggedAndKeepsEveryTaggedImagePullable(t *testing.T) {
	deletesUntaggedAndKeepsTagged(t, newS3TestRegistry(t))
}

func deletesUntaggedAndKeepsTagged(t *testing.T, reg *testRegistry) {
	ctx := context.Background()

	oldV1 := ociImage(t)
	oldV1Digest := reg.push(t, "app:v1", oldV1)
	sigOfOld := reg.pushByDigest(t, "app", referrerOf(t, descriptorOf(t, oldV1)))
	v2 := ociImage(t)
	reg.push(t, "app:v2", v2)
	sigOfV2 := reg.pushByDigest(t, "app", referrerOf(t, descriptorOf(t, v2)))
	reg.push(t, "app:v1", ociImage(t)) // v1 moves on: the old v1 is untagged now
	reg.push(t, "other:v2", v2)        // the same image in a second repository

	tagged, err := random.Index(256, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(reg.ref(t, "multi:latest"), tagged); err != nil {
		t.Fatal(err)
	}
	untagged, err := random.Index(256, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	untaggedDigest := digestOf(t, untagged)
	if err := remote.WriteIndex(reg.digestRef(t, "multi", untaggedDigest), untagged); err != nil {
		t.Fatal(err)
	}

	// berth's referrers index (the registry here is plain Distribution, so
	// the entries are written as berth's server would).
	for _, e := range []struct {
		subject v1.Hash
		ref     v1.Hash
	}{{oldV1Digest, sigOfOld}, {digestOf(t, v2), sigOfV2}} {
		if err := referrers.Record(ctx, reg.driver, "app", toDigest(e.subject), ocispec.Descriptor{Digest: toDigest(e.ref)}); err != nil {
			t.Fatal(err)
		}
	}
	indexed := func(subject, ref v1.Hash) bool {
		_, err := reg.driver.Stat(ctx, referrers.EntryPath("app", toDigest(subject), toDigest(ref)))
		return err == nil
	}

	opts := Options{Driver: reg.driver, Files: reg.files, DeleteUntagged: true, BlobGrace: 0, DryRun: true, Concurrency: 4}
	dry, err := Run(ctx, opts)
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if !reg.exists(t, reg.digestRef(t, "app", oldV1Digest)) {
		t.Fatal("the dry run deleted a manifest")
	}
	// Old v1, its signature and the referrers fallback index go-containerregistry
	// tagged for it, the untagged index and its two children.
	if dry.ManifestsRemoved != 6 || dry.BlobsRemoved == 0 || dry.BytesFreed == 0 {
		t.Fatalf("dry run report: %+v", dry)
	}

	opts.DryRun = false
	rep, err := Run(ctx, opts)
	if err != nil {
		t.Fatalf("gc: %v", err)
	}
	if rep.ManifestsRemoved != dry.ManifestsRemoved || rep.BlobsRemoved != dry.BlobsRemoved ||
		rep.BytesFreed != dry.BytesFreed || rep.LayerLinksRemoved != dry.LayerLinksRemoved ||
		rep.ManifestsKept != dry.ManifestsKept || rep.BlobsKept != dry.BlobsKept {
		t.Fatalf("real run differs from the dry run:\n dry %+v\nreal %+v", dry, rep)
	}
	if rep.Coordination != "none" || rep.ReadOnly != 0 || len(rep.Errors) != 0 {
		t.Fatalf("offline run report: %+v", rep)
	}

	for _, ref := range []string{"app:v1", "app:v2", "other:v2", "multi:latest"} {
		if err := reg.pullsCompletely(t, reg.ref(t, ref)); err != nil {
			t.Errorf("tagged %s after gc: %v", ref, err)
		}
	}
	if err := reg.pullsCompletely(t, reg.digestRef(t, "app", sigOfV2)); err != nil {
		t.Errorf("the signature of a kept image was collected: %v", err)
	}
	tags, err := remote.List(reg.ref(t, "app:x").Context())
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(tags, "sha256-"+oldV1Digest.Hex) || !slices.Contains(tags, "sha256-"+digestOf(t, v2).Hex) {
		t.Errorf("referrer fallback tags after gc: %v; want the old image's gone and v2's kept", tags)
	}
	for _, gone := range []struct {
		repo string
		d    v1.Hash
	}{{"app", oldV1Digest}, {"app", sigOfOld}, {"multi", untaggedDigest}} {
		if reg.exists(t, reg.digestRef(t, gone.repo, gone.d)) {
			t.Errorf("%s@%s survived gc", gone.repo, gone.d)
		}
	}
	if indexed(oldV1Digest, sigOfOld) || !indexed(digestOf(t, v2), sigOfV2) {
		t.Errorf("referrers index after gc: collected signature still listed, or kept one dropped")
	}
	for _, l := range layerDigests(t, oldV1) {
		if blobStored(t, reg.driver, l) {
			t.Errorf("layer %s of the collected image is still stored", l)
		}
	}

	// Pushing the collected image again uploads it again, and it pulls.
	reg.push(t, "app:old", oldV1)
	if err := reg.pullsCompletely(t, reg.ref(t, "app:old")); err != nil {
		t.Fatalf("re-pushed image: %v", err)
	}

	again, err := Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if again.ManifestsRemoved != 0 || again.BlobsRemoved != 0 {
		t.Fatalf("a second run found more garbage: %+v", again)
	}
}

func TestRunOnS3BatchDeletesExactKeys(t *testing.T) {
	// Under a root directory, where a key differs most from its path.
	reg := newS3TestRegistryWith(t, map[string]any{"rootdirectory": "/some/root"})
	if reg.files == nil {
		t.Fatal("no batch deleter for the s3 storage")
	}
	img := ociImage(t)
	old := reg.push(t, "app:v1", img)
	reg.push(t, "app:v1", ociImage(t))
	rep, err := Run(context.Background(), Options{Driver: reg.driver, Files: reg.files, DeleteUntagged: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ManifestsRemoved != 1 || rep.BlobsRemoved != 4 || rep.LayerLinksRemoved != 3 {
		t.Fatalf("report: %+v", rep)
	}
	// Nothing of the collected image is left under any name: a removed
	// revision, layer link or blob leaves no object behind.
	var left []string
	err = reg.driver.Walk(context.Background(), "/", func(fi storagedriver.FileInfo) error {
		for _, h := range append(layerDigests(t, img), old) {
			if strings.Contains(fi.Path(), h.Hex) {
				left = append(left, fi.Path())
			}
		}
		return nil
	})
	if err != nil || len(left) > 0 {
		t.Fatalf("left behind (%v): %v", err, left)
	}
	if err := reg.pullsCompletely(t, reg.ref(t, "app:v1")); err != nil {
		t.Fatal(err)
	}
}

// driverFiles deletes "in batches" through the driver, failing one path,
// so that the batch bookkeeping is tested on any storage.
type driverFiles struct {
	d    storagedriver.StorageDriver
	fail string
	sent atomic.Int64
}

func (f *driverFiles) DeleteFiles(ctx context.Context, paths []string) (map[string]error, error) {
	f.sent.Add(1)
	failed := map[string]error{}
	for _, p := range paths {
		if p == f.fail {
			failed[p] = errors.New("injected delete failure")
			continue
		}
		if err := f.d.Delete(ctx, p); err != nil && !isNotFound(err) {
			failed[p] = err
		}
	}
	return failed, nil
}

func TestBatchedRunKeepsBlobsOfAManifestItFailedToDelete(t *testing.T) {
	reg := newTestRegistry(t)
	img := ociImage(t)
	d := reg.pushByDigest(t, "app", img)
	dd := toDigest(d)
	gone := reg.pushByDigest(t, "app", ociImage(t))
	files := &driverFiles{d: reg.driver, fail: repoPath("app", "_manifests", "revisions", dd.Algorithm().String(), dd.Encoded(), "link")}

	rep, err := Run(context.Background(), Options{Driver: reg.driver, Files: files, DeleteUntagged: true})
	if !errors.Is(err, ErrPartial) {
		t.Fatalf("err %v; want ErrPartial", err)
	}
	if len(rep.Errors) != 1 || !strings.Contains(rep.Errors[0], "injected") || rep.ManifestsRemoved != 1 || rep.BlobsRemoved != 4 {
		t.Fatalf("report: %+v", rep)
	}
	if files.sent.Load() == 0 {
		t.Fatal("nothing went through the batch deleter")
	}
	if err := reg.pullsCompletely(t, reg.digestRef(t, "app", d)); err != nil {
		t.Fatalf("the manifest gc failed to delete lost its blobs: %v", err)
	}
	if reg.exists(t, reg.digestRef(t, "app", gone)) {
		t.Fatal("the other untagged manifest survived")
	}
}

func TestRunWithoutDeleteUntaggedKeepsUntagged(t *testing.T) {
	reg := newTestRegistry(t)
	img := ociImage(t)
	d := reg.push(t, "app:v1", img)
	reg.push(t, "app:v1", ociImage(t))
	rep, err := Run(context.Background(), Options{Driver: reg.driver})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ManifestsRemoved != 0 || rep.BlobsRemoved != 0 {
		t.Fatalf("removed something without --delete-untagged: %+v", rep)
	}
	if err := reg.pullsCompletely(t, reg.digestRef(t, "app", d)); err != nil {
		t.Fatal(err)
	}
}

func TestRunGraceProtectsRecentPushes(t *testing.T) {
	ctx := context.Background()
	reg := newTestRegistry(t)
	d := reg.pushByDigest(t, "app", ociImage(t)) // pushed by digest, tag to follow

	rep, err := Run(ctx, Options{Driver: reg.driver, DeleteUntagged: true, BlobGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ManifestsRemoved != 0 || rep.BlobsRemoved != 0 {
		t.Fatalf("collected a push younger than the grace period: %+v", rep)
	}
	if err := reg.pullsCompletely(t, reg.digestRef(t, "app", d)); err != nil {
		t.Fatal(err)
	}

	if _, err := Run(ctx, Options{Driver: reg.driver, DeleteUntagged: true}); err != nil {
		t.Fatal(err)
	}
	if reg.exists(t, reg.digestRef(t, "app", d)) {
		t.Fatal("without grace the untagged manifest should go")
	}
}

func TestRunPurgesStaleUploads(t *testing.T) {
	ctx := context.Background()
	reg := newTestRegistry(t)
	resp, err := http.Post("http://"+reg.host+"/v2/app/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %s", resp.Status)
	}
	uploads := filepath.Join(reg.root, "docker/registry/v2/repositories/app/_uploads")
	count := func() int {
		es, err := os.ReadDir(uploads)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return len(es)
	}
	if count() != 1 {
		t.Fatalf("%d upload sessions; want 1", count())
	}

	rep, err := Run(ctx, Options{Driver: reg.driver, UploadMaxAge: 7 * 24 * time.Hour})
	if err != nil || rep.UploadsPurged != 0 || count() != 1 {
		t.Fatalf("a fresh upload was purged: %+v, %v", rep, err)
	}
	rep, err = Run(ctx, Options{Driver: reg.driver, UploadMaxAge: time.Nanosecond})
	if err != nil || rep.UploadsPurged != 1 || count() != 0 {
		t.Fatalf("stale upload not purged: %+v, %v (%d left)", rep, err, count())
	}
}

// failingDelete refuses to delete one path, like a storage hiccup.
type failingDelete struct {
	storagedriver.StorageDriver
	path string
}

func (f failingDelete) Delete(ctx context.Context, p string) error {
	if p == f.path {
		return errors.New("injected delete failure")
	}
	return f.StorageDriver.Delete(ctx, p)
}

func TestRunKeepsBlobsOfAManifestItFailedToDelete(t *testing.T) {
	reg := newTestRegistry(t)
	img := ociImage(t)
	d := reg.pushByDigest(t, "app", img)
	dd := toDigest(d)
	drv := failingDelete{reg.driver, repoPath("app", "_manifests", "revisions", dd.Algorithm().String(), dd.Encoded())}

	rep, err := Run(context.Background(), Options{Driver: drv, DeleteUntagged: true})
	if !errors.Is(err, ErrPartial) {
		t.Fatalf("err %v; want ErrPartial", err)
	}
	if len(rep.Errors) != 1 || !strings.Contains(rep.Errors[0], "injected") || rep.BlobsRemoved != 0 {
		t.Fatalf("report: %+v", rep)
	}
	if err := reg.pullsCompletely(t, reg.digestRef(t, "app", d)); err != nil {
		t.Fatalf("the manifest gc failed to delete lost its blobs: %v", err)
	}
}

func TestRunUnderLease(t *testing.T) { runsUnderLease(t, newTestRegistry(t)) }

func TestRunOnS3UnderLease(t *testing.T) { runsUnderLease(t, newS3TestRegistry(t)) }

func runsUnderLease(t *testing.T, reg *testRegistry) {
	ctx := context.Background()
	reg.push(t, "app:v1", ociImage(t))
	reg.push(t, "app:v1", ociImage(t))

	b := maintenance.NewLocal()
	var cacheFlushes, redisFlushes atomic.Int64
	r := maintenance.NewReplica(b, "replica", maintenance.Hooks{FlushCache: func(context.Context) error {
		cacheFlushes.Add(1)
		return nil
	}}, maintenance.ReplicaOptions{Poll: 50 * time.Millisecond, LeaseTTL: 2 * time.Second})
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go r.Run(rctx)

	c := maintenance.NewCoordinator(b, "gc-test", maintenance.CoordinatorOptions{LeaseTTL: 2 * time.Second, ReplicaPoll: 50 * time.Millisecond})
	rep, err := Run(ctx, Options{Driver: reg.driver, Files: reg.files, Coordinator: c, DeleteUntagged: true, PreScan: true,
		FlushRedis: func(context.Context) error { redisFlushes.Add(1); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Coordination != "lease" || rep.ReadOnly <= 0 || rep.ReadOnly > rep.Duration || rep.ManifestsRemoved != 1 {
		t.Fatalf("report: %+v", rep)
	}
	if redisFlushes.Load() != 1 || cacheFlushes.Load() == 0 {
		t.Fatalf("flushes: redis %d, replica caches %d", redisFlushes.Load(), cacheFlushes.Load())
	}
	if st, err := b.State(ctx); err != nil || st.Active {
		t.Fatalf("lease not released: %+v, %v", st, err)
	}
	if err := reg.pullsCompletely(t, reg.ref(t, "app:v1")); err != nil {
		t.Fatal(err)
	}
}

// countingDriver counts deletions and deletes nothing.
type countingDriver struct {
	storagedriver.StorageDriver
	deletes atomic.Int64
}

func (c *countingDriver) Delete(context.Context, string) error {
	c.deletes.Add(1)
	return nil
}

// sweepUntilLeaseLost sweeps 100 blobs (through files when given) with a
// guard that reports the lease lost after allowed checks. It returns the
// deletions made and the number the sweep reported as done.
func sweepUntilLeaseLost(t *testing.T, drv *countingDriver, files *driverFiles, allowed int64) (deleted, reported int64) {
	t.Helper()
	var checks atomic.Int64
	lost := errors.New("lease lost")
	sw := &sweeper{d: drv, conc: 4, guard: func() error {
		if checks.Add(1) > allowed {
			return lost
		}
		return nil
	}}
	if files != nil { // a nil *driverFiles would be a non-nil FileDeleter
		sw.files = files
	}
	var blobs []Blob
	for i := range 100 {
		blobs = append(blobs, Blob{Digest: digest.FromString(string(rune(i)))})
	}
	for _, o := range sw.blobs(context.Background(), blobs) {
		if o {
			reported++
		}
	}
	if !errors.Is(sw.stopErr, lost) {
		t.Fatalf("stop error %v", sw.stopErr)
	}
	return drv.deletes.Load(), reported
}

func TestSweepStopsWhenTheLeaseIsLost(t *testing.T) {
	n, done := sweepUntilLeaseLost(t, &countingDriver{}, nil, 5)
	if n > 5 || done != n {
		t.Fatalf("%d deletions (%d reported) after the guard allowed 5", n, done)
	}
}

func TestBatchedSweepStopsWhenTheLeaseIsLost(t *testing.T) {
	drv := &countingDriver{}
	files := &driverFiles{d: drv}
	n, done := sweepUntilLeaseLost(t, drv, files, 3)
	// 100 blobs over 4 workers: batches of 25, and the guard let at most one through.
	if n > 25 || done != n || files.sent.Load() > 1 {
		t.Fatalf("%d deletions (%d reported) in %d requests", n, done, files.sent.Load())
	}
}

func TestReportRendering(t *testing.T) {
	rep := &Report{DryRun: true, Repositories: 2, ManifestsRemoved: 1, BlobsRemoved: 3, BytesFreed: 3 << 20,
		Duration: 1500 * time.Millisecond, ReadOnly: 200 * time.Millisecond,
		Manifests: []ManifestRef{{Repository: "app", Digest: d("x")}}}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"dry run", "manifests removed", "3.0 MiB", "writes refused for", "200ms", "app@" + string(d("x"))} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(js.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["durationSeconds"] != 1.5 || got["readOnlySeconds"] != 0.2 || got["bytesFreed"] != float64(3<<20) {
		t.Fatalf("json report: %s", js.String())
	}
	if errs, ok := got["errors"].([]any); !ok || len(errs) != 0 {
		t.Fatalf("errors should be an empty list: %s", js.String())
	}
}

// walkOnly hides the driver's name so the scanner uses Walk, as it does for
// object stores.
type walkOnly struct{ storagedriver.StorageDriver }

func (walkOnly) Name() string { return "walk-only" }

func TestScanStrategiesAgree(t *testing.T) {
	ctx := context.Background()
	reg := newTestRegistry(t)
	img := ociImage(t)
	reg.push(t, "app:v1", img)
	reg.push(t, "app:v1", ociImage(t))
	reg.pushByDigest(t, "app", referrerOf(t, descriptorOf(t, img)))
	reg.push(t, "nested/deeper/app:v2", img)
	idx, err := random.Index(128, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(reg.ref(t, "multi:latest"), idx); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+reg.host+"/v2/uploading/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	normalize := func(l *Listing) string {
		slices.SortFunc(l.Repositories, func(a, b Repository) int { return strings.Compare(a.Name, b.Name) })
		for i := range l.Repositories {
			r := &l.Repositories[i]
			slices.SortFunc(r.Manifests, func(a, b Manifest) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
			for j := range r.Manifests {
				slices.Sort(r.Manifests[j].Tags)
				slices.Sort(r.Manifests[j].TagIndex)
			}
			slices.SortFunc(r.Layers, func(a, b Link) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
		}
		slices.SortFunc(l.Blobs, func(a, b Blob) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
		b, err := json.MarshalIndent(l, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	fast, err := (&scanner{d: reg.driver, conc: 4, cache: NewManifestCache()}).scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	walked, err := (&scanner{d: walkOnly{reg.driver}, conc: 4, cache: NewManifestCache()}).scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(fast.Repositories) != 4 {
		t.Fatalf("found %d repositories; want app, nested/deeper/app, multi and uploading", len(fast.Repositories))
	}
	if a, b := normalize(fast), normalize(walked); a != b {
		t.Fatalf("listings differ:\nfast: %s\nwalk: %s", a, b)
	}
	// A blob store too large for one flat walk is listed prefix by prefix.
	byPrefix, err := (&scanner{d: walkOnly{reg.driver}, conc: 4, cache: NewManifestCache(), flatBlobs: 1}).scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := normalize(fast), normalize(byPrefix); a != b {
		t.Fatalf("listings differ:\nfast: %s\nby prefix: %s", a, b)
	}
}
