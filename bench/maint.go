package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-registry/berth/bench/internal/servers"
	"github.com/berth-registry/berth/bench/internal/workload"
)

// contender is one way of doing a maintenance job, timed end to end
// (including process start for the CLI tools).
type contender struct {
	name string
	na   string
	run  func(ctx context.Context, target, dir string) error
}

// prunePolicy keeps the newest tags everywhere. The scenario deletes 90% of
// the tags, so the policy raises the safety stop that would otherwise
// refuse a run deleting more than half.
func prunePolicy(keep int) string {
	return fmt.Sprintf("rules:\n  - repositories: [\"**\"]\n    keep: {latest: %d}\nsettings:\n  maxDeleteShare: 1\n", keep)
}

// prune compares berth prune with the seed-style sequential cleaner on
// identical copies of a registry holding PruneRepos × PruneTags tags, each
// served by a fresh berth.
func (b *bench) prune(ctx context.Context) {
	dir := filepath.Join(b.work, "prune")
	policy := filepath.Join(dir, "policy.yaml")
	berthPrune := func(extra ...string) func(ctx context.Context, url, dir string) error {
		return func(ctx context.Context, url, dir string) error {
			args := append([]string{"prune", "--registry", url, "--policy", policy}, extra...)
			return b.tool(ctx, dir, "prune.log", b.bin.berth, args...)
		}
	}
	cs := []contender{
		{name: pBerthSeq, na: b.bin.pruneNA, run: berthPrune("--concurrency", "1")},
		{name: pBerthDefault, na: b.bin.pruneNA, run: berthPrune()},
		{name: pBaseline, run: func(ctx context.Context, url, _ string) error {
			want := b.sz.PruneRepos * (b.sz.PruneTags - min(b.sz.PruneKeep, b.sz.PruneTags))
			n, err := workload.SequentialClean(ctx, url, b.sz.PruneKeep)
			if err == nil && n != want {
				err = fmt.Errorf("deleted %d tags, want %d", n, want)
			}
			return err
		}},
	}
	spec := servers.Spec{Name: sBerth, Kind: servers.Berth, Binary: b.bin.berth}
	snapshot, err := b.setupPrune(ctx, dir, spec)
	if err == nil {
		err = os.WriteFile(policy, []byte(prunePolicy(b.sz.PruneKeep)), 0o644)
	}
	var before workload.Census
	if err == nil {
		before, err = workload.TakeCensus(snapshot)
	}
	b.compare(ctx, mPrune, dir, snapshot, err, cs, workload.LinkTree, func(ctx context.Context, c contender, runDir, root string) (time.Duration, error) {
		srv, err := servers.StartOn(ctx, spec, runDir, root, nil)
		if err != nil {
			return 0, err
		}
		defer srv.Stop()
		start := time.Now()
		if err := c.run(ctx, srv.URL(), runDir); err != nil {
			return 0, err
		}
		el := time.Since(start)
		if err := workload.CheckKept(ctx, srv.URL(), b.sz.PruneRepos, b.sz.PruneTags, b.sz.PruneKeep); err != nil {
			return 0, fmt.Errorf("wrong result: %w", err)
		}
		return el, nil
	})
	if err != nil {
		return
	}
	// The runs shared the snapshot's files through hard links; had anything
	// written into one, later runs would have started from other data.
	after, err := workload.TakeCensus(snapshot)
	if err == nil && after != before {
		err = fmt.Errorf("the shared snapshot changed during the runs (%+v, was %+v): results are void", after, before)
	}
	if err != nil {
		for _, c := range cs {
			if c.na == "" {
				b.res.Fail(mPrune, c.name, err)
			}
		}
	}
}

func (b *bench) setupPrune(ctx context.Context, dir string, spec servers.Spec) (string, error) {
	srv, err := servers.Start(ctx, spec, filepath.Join(dir, "setup"), nil)
	if err != nil {
		return "", err
	}
	tr := workload.Transport()
	start := time.Now()
	err = workload.PopulateTags(ctx, tr, srv.Addr, seedPrune, b.sz.PruneRepos, b.sz.PruneTags, b.sz.PopulateWorker)
	// Idle keep-alive connections, and ones dialled but never used, would
	// hold up the server's graceful shutdown.
	tr.CloseIdleConnections()
	if stopErr := srv.Stop(); err == nil {
		err = stopErr
	}
	if err != nil {
		return "", fmt.Errorf("prune setup: %w", err)
	}
	b.log.Info("prune scenario ready", "tags", b.sz.PruneRepos*b.sz.PruneTags, "took", time.Since(start).Round(time.Millisecond))
	return srv.Root, nil
}

// gc compares berth gc with upstream's (and Debian's) garbage-collect on
// identical copies of a stopped registry's storage.
func (b *bench) gc(ctx context.Context) {
	dir := filepath.Join(b.work, "gc")
	registryGC := func(kind servers.Kind, bin string) func(ctx context.Context, root, dir string) error {
		return func(ctx context.Context, root, dir string) error {
			cfg, err := servers.RegistryConfig(kind, "127.0.0.1:0", root, "")
			if err != nil {
				return err
			}
			path := filepath.Join(dir, "config.yml")
			if err := os.WriteFile(path, cfg, 0o600); err != nil {
				return err
			}
			return b.tool(ctx, dir, "gc.log", bin, "garbage-collect", path)
		}
	}
	cs := []contender{
		{name: gBerth, na: b.bin.gcNA, run: func(ctx context.Context, root, dir string) error {
			return b.tool(ctx, dir, "gc.log", b.bin.berth, "gc", "--data-dir", root, "--registry-stopped")
		}},
		{name: gUpstream, run: registryGC(servers.Distribution, b.bin.upstream)},
		{name: gDebian, na: b.bin.debianNA, run: registryGC(servers.Debian, b.bin.debian)},
	}
	snapshot, want, err := b.setupGC(ctx, dir)
	b.compare(ctx, mGC, dir, snapshot, err, cs, workload.CopyTree, func(ctx context.Context, c contender, runDir, root string) (time.Duration, error) {
		start := time.Now()
		if err := c.run(ctx, root, runDir); err != nil {
			return 0, err
		}
		el := time.Since(start)
		n, err := workload.CountBlobs(root)
		if err != nil {
			return 0, err
		}
		if n != want {
			return 0, fmt.Errorf("wrong result: %d blobs left, want %d (the kept images' manifests, configs and layers)", n, want)
		}
		return el, nil
	})
}

func (b *bench) setupGC(ctx context.Context, dir string) (string, int, error) {
	spec := servers.Spec{Name: sBerth, Kind: servers.Berth, Binary: b.bin.berth}
	srv, err := servers.Start(ctx, spec, filepath.Join(dir, "setup"), nil)
	if err != nil {
		return "", 0, err
	}
	tr := workload.Transport()
	start := time.Now()
	sc, err := workload.PopulateGC(ctx, tr, srv.Addr, seedGC, b.sz.GCImages, b.sz.GCRepos, b.sz.GCLayer, b.sz.PopulateWorker)
	// Idle keep-alive connections, and ones dialled but never used, would
	// hold up the server's graceful shutdown.
	tr.CloseIdleConnections()
	if stopErr := srv.Stop(); err == nil {
		err = stopErr
	}
	if err == nil {
		err = workload.Backdate(srv.Root, time.Now().Add(-2*time.Hour))
	}
	if err != nil {
		return "", 0, fmt.Errorf("gc setup: %w", err)
	}
	b.log.Info("gc scenario ready", "kept", sc.Kept, "deleted", sc.Deleted, "took", time.Since(start).Round(time.Millisecond))
	return srv.Root, sc.BlobsAfter, nil
}

// compare runs every available contender once per rep, in rotated order,
// each on its own fresh copy of snapshot made by copyTree, and records the
// times.
func (b *bench) compare(ctx context.Context, metric, dir, snapshot string, setupErr error, cs []contender,
	copyTree func(ctx context.Context, src, dst string) error,
	once func(ctx context.Context, c contender, runDir, root string) (time.Duration, error)) {
	var avail []contender
	for _, c := range cs {
		switch {
		case c.na != "":
			b.res.NA(metric, c.name, c.na)
		case setupErr != nil:
			b.res.Fail(metric, c.name, setupErr)
		default:
			avail = append(avail, c)
		}
	}
	if setupErr != nil {
		b.log.Error("setup failed", "metric", metric, "err", setupErr)
	}
	for rep := 0; rep < b.o.Reps && ctx.Err() == nil; rep++ {
		for i, c := range rotate(avail, rep) {
			b.measure(metric, c.name, func() (float64, error) {
				runDir := filepath.Join(dir, fmt.Sprintf("run-%d-%d", rep, i))
				defer os.RemoveAll(runDir)
				if err := os.MkdirAll(runDir, 0o755); err != nil {
					return 0, err
				}
				root := filepath.Join(runDir, "data")
				if err := copyTree(ctx, snapshot, root); err != nil {
					return 0, err
				}
				d, err := once(ctx, c, runDir, root)
				return d.Seconds(), err
			})
		}
	}
}

// tool runs a CLI to completion with its output in dir/logName, and puts
// the output's tail into the error when it fails.
func (b *bench) tool(ctx context.Context, dir, logName, bin string, args ...string) error {
	logPath := filepath.Join(dir, logName)
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = servers.Env()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(logPath)
		s := string(out)
		if len(s) > 1500 {
			s = "…" + s[len(s)-1500:]
		}
		return fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, s)
	}
	return nil
}
