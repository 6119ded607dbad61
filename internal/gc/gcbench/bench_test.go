package gcbench_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"

	"github.com/berth-registry/berth/internal/gc"
	"github.com/berth-registry/berth/internal/gc/gcbench"
	"github.com/berth-registry/berth/internal/maintenance"
	"github.com/berth-registry/berth/internal/testutil"
)

// TestSeedIsCollectable is the fast check that the harness works: a small
// seeded storage, collected, keeps every tagged image and drops the rest.
func TestSeedIsCollectable(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := gcbench.Seed(ctx, root, gcbench.SeedOptions{Images: 12, Repositories: 3, LayerSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	if s.Tagged != 9 || s.Untagged != 3 {
		t.Fatalf("seeded %+v; want 9 tagged and 3 untagged", s)
	}
	d, err := factory.Create(ctx, "filesystem", map[string]any{"rootdirectory": root})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := gc.Run(ctx, gc.Options{Driver: d, DeleteUntagged: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	// Each untagged image had a config and two unique layers.
	if rep.ManifestsRemoved != 3 || rep.BlobsRemoved != 3*4 || rep.ManifestsKept != 9 {
		t.Fatalf("report %+v", rep)
	}
}

// TestBenchmarkAgainstUpstream compares berth gc with upstream's
// `registry garbage-collect` on identical storages. It is a benchmark, not a
// test: it runs only with BERTH_GC_BENCH=1 and needs the upstream binary
// (BERTH_UPSTREAM_REGISTRY, or `registry` on PATH), built with
//
//	GOBIN=$HOME/.cache/berth-bench go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2
//
// or found where `make conformance-tools` installs it. BERTH_GC_BENCH_IMAGES
// sets the image count (default 1000), BERTH_GC_BENCH_ROUNDS the rounds
// (default 3; the median is reported).
func TestBenchmarkAgainstUpstream(t *testing.T) {
	if os.Getenv("BERTH_GC_BENCH") != "1" {
		t.Skip("benchmark: set BERTH_GC_BENCH=1 to run")
	}
	bin := upstreamRegistry(t)
	images := envInt(t, "BERTH_GC_BENCH_IMAGES", 1000)
	ctx := context.Background()
	dir := t.TempDir()
	seedRoot := filepath.Join(dir, "seed")
	start := time.Now()
	seeded, err := gcbench.Seed(ctx, seedRoot, gcbench.SeedOptions{Images: images})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("seeded %d tagged + %d untagged images in %s", seeded.Tagged, seeded.Untagged, time.Since(start).Round(time.Millisecond))

	copyOf := func(name string) string {
		p := filepath.Join(dir, name)
		if err := gcbench.CopyTree(seedRoot, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	rounds := 3
	if s := os.Getenv("BERTH_GC_BENCH_ROUNDS"); s != "" {
		if rounds, err = strconv.Atoi(s); err != nil || rounds < 1 {
			t.Fatalf("BERTH_GC_BENCH_ROUNDS=%q", s)
		}
	}
	var upstream, offline, leased, window []time.Duration
	var upRoot, offRoot, leaseRoot string
	for i := range rounds {
		upRoot, offRoot, leaseRoot = copyOf("up"+strconv.Itoa(i)), copyOf("off"+strconv.Itoa(i)), copyOf("lease"+strconv.Itoa(i))
		cfg := filepath.Join(dir, "config"+strconv.Itoa(i)+".yml")
		if err := os.WriteFile(cfg, gcbench.UpstreamConfig(upRoot), 0o600); err != nil {
			t.Fatal(err)
		}
		took, err := gcbench.RunUpstream(ctx, bin, cfg, true)
		if err != nil {
			t.Fatal(err)
		}
		upstream = append(upstream, took)

		d, err := factory.Create(ctx, "filesystem", map[string]any{"rootdirectory": offRoot})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := gc.Run(ctx, gc.Options{Driver: d, DeleteUntagged: true, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		offline = append(offline, rep.Duration)
		t.Logf("round %d offline: listing %s, sweeping %s, removed %d manifests %d blobs", i,
			rep.Listing.Round(time.Millisecond), rep.Sweeping.Round(time.Millisecond), rep.ManifestsRemoved, rep.BlobsRemoved)

		// With the lease, as `berth gc` runs against a live registry: one
		// in-process replica acknowledges.
		b := maintenance.NewLocal()
		rctx, stop := context.WithCancel(ctx)
		r := maintenance.NewReplica(b, "replica", maintenance.Hooks{}, maintenance.ReplicaOptions{Logger: quiet})
		go r.Run(rctx)
		d, err = factory.Create(ctx, "filesystem", map[string]any{"rootdirectory": leaseRoot})
		if err != nil {
			t.Fatal(err)
		}
		rep, err = gc.Run(ctx, gc.Options{Driver: d, DeleteUntagged: true, PreScan: true, Logger: quiet,
			Coordinator: maintenance.NewCoordinator(b, "bench", maintenance.CoordinatorOptions{Logger: quiet})})
		stop()
		if err != nil {
			t.Fatal(err)
		}
		leased = append(leased, rep.Duration)
		t.Logf("round %d lease: listing %s, sweeping %s, read-only %s", i,
			rep.Listing.Round(time.Millisecond), rep.Sweeping.Round(time.Millisecond), rep.ReadOnly.Round(time.Millisecond))
		window = append(window, rep.ReadOnly)
	}

	want, err := gcbench.Files(upRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, root := range []string{offRoot, leaseRoot} {
		got, err := gcbench.Files(root)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("berth and upstream left different files in %s: %d vs %d", root, len(got), len(want))
		}
	}
	med := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	t.Logf("images=%d rounds=%d (median wall time)", images, rounds)
	t.Logf("upstream registry garbage-collect --delete-untagged: %s  %v", med(upstream), upstream)
	t.Logf("berth gc offline:                                   %s  %v  ratio %.2f", med(offline), offline,
		float64(med(offline))/float64(med(upstream)))
	t.Logf("berth gc with lease (pre-scan):                     %s  %v  ratio %.2f", med(leased), leased,
		float64(med(leased))/float64(med(upstream)))
	t.Logf("read-only window with lease:                        %s  %v", med(window), window)
}

// upstreamRegistry finds Distribution's registry binary: $BERTH_UPSTREAM_REGISTRY,
// the tool cache of `make conformance-tools`, then PATH.
func upstreamRegistry(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("BERTH_UPSTREAM_REGISTRY"); bin != "" {
		return bin
	}
	home, _ := os.UserHomeDir()
	if bin := filepath.Join(home, ".cache", "berth", "bin", "distribution@v3.1.2", "registry"); fileExists(bin) {
		return bin
	}
	bin, err := exec.LookPath("registry")
	if err != nil {
		t.Fatal("no upstream registry binary: run make conformance-tools or set BERTH_UPSTREAM_REGISTRY")
	}
	return bin
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// TestBenchmarkS3AgainstUpstream compares berth gc with upstream's `registry
// garbage-collect` on identical buckets of a real S3 server (versitygw, see
// testutil.StartS3), both with --delete-untagged and offline (no registry
// serving); berth runs once more on a third bucket under the read-only
// lease, as against live replicas. Like the filesystem benchmark it runs
// only with BERTH_GC_BENCH=1:
//
//	BERTH_GC_BENCH=1 go test ./internal/gc/gcbench/ -run S3 -v -timeout 30m
//
// The images (BERTH_GC_BENCH_IMAGES, default 1000; half of them untagged,
// every image of a repository sharing a base layer) are seeded into a
// filesystem root by Distribution's storage code and copied into every
// bucket object by object through the s3-aws driver.
// BERTH_GC_BENCH_CONCURRENCY sets berth's concurrency (default
// gc.DefaultConcurrency); BERTH_GC_BENCH_NO_BATCH=1 makes berth delete path
// by path through the driver, without DeleteObjects batches.
func TestBenchmarkS3AgainstUpstream(t *testing.T) {
	if os.Getenv("BERTH_GC_BENCH") != "1" {
		t.Skip("benchmark: set BERTH_GC_BENCH=1 to run")
	}
	bin := upstreamRegistry(t)
	images := envInt(t, "BERTH_GC_BENCH_IMAGES", 1000)
	conc := envInt(t, "BERTH_GC_BENCH_CONCURRENCY", gc.DefaultConcurrency)
	ctx := context.Background()
	s3 := testutil.StartS3(t)
	dir := t.TempDir()

	start := time.Now()
	seedRoot := filepath.Join(dir, "seed")
	seeded, err := gcbench.Seed(ctx, seedRoot, gcbench.SeedOptions{Images: images, UntaggedEvery: 2})
	if err != nil {
		t.Fatal(err)
	}
	want, err := gcbench.Files(seedRoot)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	upBucket, berthBucket, leaseBucket := s3.Bucket, s3.NewBucket(t), s3.NewBucket(t)
	open := func(bucket string) storagedriver.StorageDriver {
		d, err := factory.Create(ctx, "s3aws", s3.Parameters(bucket))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	upDriver, berthDriver, leaseDriver := open(upBucket), open(berthBucket), open(leaseBucket)
	for _, d := range []storagedriver.StorageDriver{upDriver, berthDriver, leaseDriver} {
		if _, err := gcbench.Upload(ctx, seedRoot, d, 16); err != nil {
			t.Fatal(err)
		}
		got, err := gcbench.Keys(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("bucket holds %d objects, the seeded root %d files", len(got), len(want))
		}
	}
	t.Logf("seeded %d tagged + %d untagged images (%d objects) into three buckets in %s",
		seeded.Tagged, seeded.Untagged, len(want), time.Since(start).Round(time.Millisecond))

	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, gcbench.UpstreamConfigStorage(s3.StorageYAML(upBucket)), 0o600); err != nil {
		t.Fatal(err)
	}
	upstream, err := gcbench.RunUpstream(ctx, bin, cfg, true)
	if err != nil {
		t.Fatal(err)
	}

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	// As `berth gc` opens it from the configuration's storage section.
	filesFor := func(bucket string) gc.FileDeleter {
		if os.Getenv("BERTH_GC_BENCH_NO_BATCH") == "1" {
			return nil
		}
		files, err := gc.FileDeleterFor("s3", s3.Parameters(bucket))
		if err != nil {
			t.Fatal(err)
		}
		return files
	}
	files := filesFor(berthBucket)
	rep, err := gc.Run(ctx, gc.Options{Driver: berthDriver, Files: files, DeleteUntagged: true, Concurrency: conc, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}

	// With the lease, as `berth gc` runs against live replicas: one
	// in-process replica acknowledges.
	b := maintenance.NewLocal()
	rctx, stop := context.WithCancel(ctx)
	go maintenance.NewReplica(b, "replica", maintenance.Hooks{}, maintenance.ReplicaOptions{Logger: quiet}).Run(rctx)
	leased, err := gc.Run(ctx, gc.Options{Driver: leaseDriver, Files: filesFor(leaseBucket), DeleteUntagged: true,
		Concurrency: conc, PreScan: true, Logger: quiet,
		Coordinator: maintenance.NewCoordinator(b, "bench", maintenance.CoordinatorOptions{Logger: quiet})})
	stop()
	if err != nil {
		t.Fatal(err)
	}

	left, err := gcbench.Keys(ctx, upDriver)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []storagedriver.StorageDriver{berthDriver, leaseDriver} {
		got, err := gcbench.Keys(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, left) {
			t.Errorf("berth and upstream left different objects: %d vs %d\n%s", len(got), len(left), diff(got, left))
		}
	}
	if len(left) == len(want) {
		t.Errorf("nothing was collected")
	}
	t.Logf("images=%d objects before=%d after=%d; berth removed %d manifests, %d blobs, %d layer links",
		images, len(want), len(left), rep.ManifestsRemoved, rep.BlobsRemoved, rep.LayerLinksRemoved)
	t.Logf("upstream registry garbage-collect --delete-untagged: %s", upstream.Round(time.Millisecond))
	t.Logf("berth gc --delete-untagged --concurrency %d (batch deletes: %t): %s (listing %s, sweeping %s)  %.1fx faster",
		conc, files != nil, rep.Duration.Round(time.Millisecond), rep.Listing.Round(time.Millisecond), rep.Sweeping.Round(time.Millisecond),
		float64(upstream)/float64(rep.Duration))
	t.Logf("berth gc with lease (pre-scan):  %s, writes refused for %s  %.1fx faster",
		leased.Duration.Round(time.Millisecond), leased.ReadOnly.Round(time.Millisecond), float64(upstream)/float64(leased.Duration))
}

// diff names a few paths that only one side holds.
func diff(a, b []string) string {
	var out []string
	for _, p := range a {
		if _, ok := slices.BinarySearch(b, p); !ok && len(out) < 10 {
			out = append(out, "only berth's: "+p)
		}
	}
	for _, p := range b {
		if _, ok := slices.BinarySearch(a, p); !ok && len(out) < 20 {
			out = append(out, "only upstream's: "+p)
		}
	}
	return strings.Join(out, "\n")
}
