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
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/factory"

	"github.com/berth-registry/berth/internal/gc"
	"github.com/berth-registry/berth/internal/gc/gcbench"
	"github.com/berth-registry/berth/internal/maintenance"
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
// BERTH_GC_BENCH_IMAGES sets the image count (default 1000), BERTH_GC_BENCH_ROUNDS
// the rounds (default 3; the median is reported).
func TestBenchmarkAgainstUpstream(t *testing.T) {
	if os.Getenv("BERTH_GC_BENCH") != "1" {
		t.Skip("benchmark: set BERTH_GC_BENCH=1 to run")
	}
	bin := os.Getenv("BERTH_UPSTREAM_REGISTRY")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("registry"); err != nil {
			t.Fatal("no upstream registry binary: set BERTH_UPSTREAM_REGISTRY")
		}
	}
	images := 1000
	if s := os.Getenv("BERTH_GC_BENCH_IMAGES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		images = n
	}
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
