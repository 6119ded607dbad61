package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-registry/berth/bench/internal/report"
	"github.com/berth-registry/berth/bench/internal/servers"
	"github.com/berth-registry/berth/bench/internal/workload"
)

// Seeds keep each workload's blobs apart: no image of one workload shares
// a blob with another's, so no push is shortened by an earlier one.
const (
	seedBig   = 1_000_000
	seedSmall = 2_000_000
	seedPrune = 3_000_000
	seedGC    = 4_000_000
)

const (
	repoBig   = "bench/big"
	repoSmall = "bench/small"
)

var serverMetrics = []string{mPushBig, mPushSmall, mPullCold, mPullWarm, mHeadRPS, mHeadP50, mHeadP99, mRSS}

// variant is one running server of the side-by-side workloads.
type variant struct {
	name  string
	srv   *servers.Server
	redis *servers.Redis
}

// serverWorkloads runs push, pull, the HEAD storm and RSS against every
// server variant. Each rep visits all servers, in rotated order, so that
// the ratios come from the same minutes of machine noise.
func (b *bench) serverWorkloads(ctx context.Context) {
	specs := []servers.Spec{
		{Name: sBerth, Kind: servers.Berth, Binary: b.bin.berth},
		{Name: sBerthRedis, Kind: servers.Berth, Binary: b.bin.berth, Redis: true},
		{Name: sUpstream, Kind: servers.Distribution, Binary: b.bin.upstream},
		{Name: sUpstreamRedis, Kind: servers.Distribution, Binary: b.bin.upstream, Redis: true},
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		specs = slices.DeleteFunc(specs, func(sp servers.Spec) bool { return sp.Redis })
		for _, name := range []string{sBerthRedis, sUpstreamRedis} {
			b.naAll(name, "redis-server not installed (apt-get install -y redis-server)")
		}
	}
	if b.bin.debian != "" {
		specs = append(specs, servers.Spec{Name: sDebian, Kind: servers.Debian, Binary: b.bin.debian})
	} else {
		b.naAll(sDebian, b.bin.debianNA)
	}
	var vs []*variant
	defer func() {
		for _, v := range vs {
			if err := v.srv.Stop(); err != nil {
				b.log.Warn("stop", "server", v.name, "err", err)
			}
			v.redis.Stop()
		}
	}()
	for _, sp := range specs {
		v, err := b.startVariant(ctx, sp)
		if err != nil {
			b.log.Error("server did not start", "server", sp.Name, "err", err)
			for _, m := range serverMetrics {
				b.res.Fail(m, sp.Name, err)
			}
			continue
		}
		vs = append(vs, v)
	}

	b.pushBig(ctx, vs)
	b.pushSmall(ctx, vs)
	b.pull(ctx, vs)
	b.headStorm(ctx, vs)
	for _, v := range vs {
		b.measure(mRSS, v.name, func() (float64, error) {
			rss, err := v.srv.PeakRSS()
			return float64(rss) / (1 << 20), err
		})
	}
}

func (b *bench) naAll(subject, reason string) {
	for _, m := range serverMetrics {
		b.res.NA(m, subject, reason)
	}
}

func (b *bench) startVariant(ctx context.Context, sp servers.Spec) (*variant, error) {
	dir := filepath.Join(b.work, "servers", slug(sp.Name))
	v := &variant{name: sp.Name}
	if sp.Redis {
		r, err := servers.StartRedis(ctx, filepath.Join(dir, "redis"))
		if err != nil {
			return nil, err
		}
		v.redis = r
	}
	srv, err := servers.Start(ctx, sp, dir, v.redis)
	if err != nil {
		v.redis.Stop()
		return nil, err
	}
	v.srv = srv
	b.log.Info("started", "server", sp.Name, "addr", srv.Addr, "log", srv.LogPath())
	return v, nil
}

func bigTag(rep int) string { return fmt.Sprintf("r%d", rep) }

// bigInfo is what later workloads need to know of a rep's big image,
// without keeping its bytes.
type bigInfo struct {
	total  int64
	digest v1.Hash
	blobs  []v1.Hash
}

func bigImage(rep int, layers []int64) (v1.Image, bigInfo, error) {
	img, err := workload.Image(seedBig+uint64(rep), layers)
	if err != nil {
		return nil, bigInfo{}, err
	}
	var info bigInfo
	if info.total, err = workload.TotalSize(img); err != nil {
		return nil, info, err
	}
	if info.digest, err = img.Digest(); err != nil {
		return nil, info, err
	}
	info.blobs, err = workload.Blobs(img)
	return img, info, err
}

func (b *bench) pushBig(ctx context.Context, vs []*variant) {
	for rep := 0; rep < b.o.Reps && ctx.Err() == nil; rep++ {
		// One image in memory at a time; every server gets the same bytes.
		img, info, err := bigImage(rep, b.sz.BigLayers)
		if err != nil {
			for _, v := range vs {
				b.res.Fail(mPushBig, v.name, err)
			}
			return
		}
		b.big[rep] = info
		for _, v := range rotate(vs, rep) {
			b.measure(mPushBig, v.name, func() (float64, error) {
				ref, err := workload.Ref(v.srv.Addr, repoBig, bigTag(rep))
				if err != nil {
					return 0, err
				}
				tr := workload.Transport()
				defer tr.CloseIdleConnections()
				p, err := workload.Pusher(tr, b.sz.PushJobs)
				if err != nil {
					return 0, err
				}
				start := time.Now()
				if err := p.Push(ctx, ref, img); err != nil {
					return 0, fmt.Errorf("push %s: %w", ref, err)
				}
				return mbps(info.total, time.Since(start)), nil
			})
		}
	}
}

func (b *bench) pushSmall(ctx context.Context, vs []*variant) {
	for rep := 0; rep < b.o.Reps && ctx.Err() == nil; rep++ {
		imgs := make([]v1.Image, b.sz.SmallImages)
		for i := range imgs {
			img, err := workload.Image(seedSmall+uint64(rep*b.sz.SmallImages+i), []int64{b.sz.SmallLayer})
			if err != nil {
				for _, v := range vs {
					b.res.Fail(mPushSmall, v.name, err)
				}
				return
			}
			imgs[i] = img
		}
		for _, v := range rotate(vs, rep) {
			b.measure(mPushSmall, v.name, func() (float64, error) {
				items := make([]workload.Item, len(imgs))
				for i, img := range imgs {
					ref, err := workload.Ref(v.srv.Addr, repoSmall, fmt.Sprintf("r%d-i%04d", rep, i))
					if err != nil {
						return 0, err
					}
					items[i] = workload.Item{Image: img, To: ref}
				}
				tr := workload.Transport()
				defer tr.CloseIdleConnections()
				p, err := workload.Pusher(tr, 2)
				if err != nil {
					return 0, err
				}
				start := time.Now()
				if err := workload.PushAll(ctx, p, items, b.sz.SmallWorkers); err != nil {
					return 0, err
				}
				return float64(len(items)) / time.Since(start).Seconds(), nil
			})
		}
	}
}

// pull restarts each server (fresh process, Redis flushed) and pulls the
// rep's image twice: the first pull is cold, the second warm. The OS page
// cache is not dropped (that would disturb everyone else on the machine),
// so "cold" means the server's own caches are empty.
func (b *bench) pull(ctx context.Context, vs []*variant) {
	for rep := 0; rep < b.o.Reps && ctx.Err() == nil; rep++ {
		info, ok := b.big[rep]
		if !ok {
			err := fmt.Errorf("image of rep %d was never built", rep)
			for _, v := range vs {
				b.res.Fail(mPullCold, v.name, err)
				b.res.Fail(mPullWarm, v.name, err)
			}
			return
		}
		for _, v := range rotate(vs, rep) {
			if err := v.srv.Restart(ctx); err != nil {
				b.res.Fail(mPullCold, v.name, err)
				b.res.Fail(mPullWarm, v.name, err)
				continue
			}
			for _, m := range []string{mPullCold, mPullWarm} {
				b.measure(m, v.name, func() (float64, error) {
					ref, err := workload.Ref(v.srv.Addr, repoBig, bigTag(rep))
					if err != nil {
						return 0, err
					}
					tr := workload.Transport()
					defer tr.CloseIdleConnections()
					start := time.Now()
					n, err := workload.Pull(ctx, tr, ref, b.sz.PullJobs)
					el := time.Since(start)
					if err != nil {
						return 0, err
					}
					if n != info.total {
						return 0, fmt.Errorf("pull %s: read %d bytes, pushed %d", ref, n, info.total)
					}
					return mbps(n, el), nil
				})
			}
		}
	}
}

// headStorm resolves the last pulled image, which every server has just
// served, so the storm measures the steady state a fleet sees.
func (b *bench) headStorm(ctx context.Context, vs []*variant) {
	last := b.o.Reps - 1
	info, ok := b.big[last]
	if !ok {
		err := fmt.Errorf("image of rep %d was never built", last)
		for _, v := range vs {
			for _, m := range []string{mHeadRPS, mHeadP50, mHeadP99} {
				b.res.Fail(m, v.name, err)
			}
		}
		return
	}
	for rep := 0; rep < b.o.Reps && ctx.Err() == nil; rep++ {
		for _, v := range rotate(vs, rep) {
			t := workload.HeadTarget{BaseURL: v.srv.URL(), Repo: repoBig, Tag: bigTag(last), Manifest: info.digest, Blobs: info.blobs}
			r, err := workload.HeadStorm(ctx, t, b.sz.HeadClients, b.sz.HeadIters)
			if err != nil {
				for _, m := range []string{mHeadRPS, mHeadP50, mHeadP99} {
					b.res.Fail(m, v.name, err)
				}
				continue
			}
			ms := func(p float64) float64 {
				return float64(report.Percentile(r.Latencies, p)) / float64(time.Millisecond)
			}
			b.res.Add(mHeadRPS, v.name, float64(len(r.Latencies))/r.Elapsed.Seconds())
			b.res.Add(mHeadP50, v.name, ms(50))
			b.res.Add(mHeadP99, v.name, ms(99))
			b.log.Info("measured", "metric", "head-storm", "subject", v.name, "requests", len(r.Latencies),
				"req/s", report.FormatValue(float64(len(r.Latencies))/r.Elapsed.Seconds()), "p99_ms", report.FormatValue(ms(99)))
		}
	}
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }
