package cli

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-registry/berth/internal/blobcache"
	"github.com/berth-registry/berth/internal/config"
	"github.com/berth-registry/berth/internal/gc"
	"github.com/berth-registry/berth/internal/maintenance"
	"github.com/berth-registry/berth/internal/retention"
	"github.com/berth-registry/berth/internal/schedule"
	"github.com/berth-registry/berth/internal/server"
)

func init() { startSchedules = runSchedules }

var (
	jobCountersOnce sync.Once
	gcBytesFreed    prometheus.Counter
	gcBlobsRemoved  prometheus.Counter
	gcReadOnly      prometheus.Histogram
	pruneDeleted    prometheus.Counter
	pruneFailed     prometheus.Counter
)

func jobCounters() {
	jobCountersOnce.Do(func() {
		gcBytesFreed = prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_gc_bytes_freed_total", Help: "Bytes freed by scheduled gc."})
		gcBlobsRemoved = prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_gc_blobs_removed_total", Help: "Blobs removed by scheduled gc."})
		gcReadOnly = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "berth_gc_readonly_seconds", Help: "How long scheduled gc kept writes refused.", Buckets: prometheus.ExponentialBuckets(0.01, 4, 10)})
		pruneDeleted = prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_prune_tags_deleted_total", Help: "Tags deleted by scheduled prune."})
		pruneFailed = prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_prune_tags_failed_total", Help: "Tag deletions that failed in scheduled prune."})
		prometheus.MustRegister(gcBytesFreed, gcBlobsRemoved, gcReadOnly, pruneDeleted, pruneFailed)
	})
}

// runSchedules starts the in-process gc and prune schedules (the embedded
// default for a single process; in a cluster the CronJobs do this).
func runSchedules(ctx context.Context, cfg *config.Config, srv *server.Server, b maintenance.Backend, id string, log *slog.Logger) {
	g, p := cfg.Berth.GC, cfg.Berth.Prune
	if g.Interval <= 0 && p.Interval <= 0 {
		return
	}
	jobCounters()
	r := schedule.NewRunner(log)
	srv.SetStatus("jobs", func() any { return r.Status() })
	if g.Interval > 0 {
		coord := maintenance.NewCoordinator(b, "serve-"+id, maintenance.CoordinatorOptions{
			LeaseTTL: cfg.Berth.Maintenance.LeaseTTL, ReplicaPoll: cfg.Berth.Maintenance.Poll, Logger: log,
		})
		manifests := gc.NewManifestCache() // parsed manifests are immutable; keep them across runs
		// On S3, batch deletes by exact key make the sweep an order of
		// magnitude faster; without them gc still works through the driver.
		files, err := gc.FileDeleterFor(cfg.Distribution.Storage.Type(), cfg.Distribution.Storage.Parameters())
		if err != nil {
			log.Warn("scheduled gc deletes path by path through the storage driver", "reason", err)
			files = nil
		}
		var flush func(context.Context) error
		if rc := srv.Redis(); rc != nil && cfg.CacheType() == "redis" {
			flush = func(ctx context.Context) error { return blobcache.FlushRedis(ctx, rc) }
		}
		r.Start(ctx, schedule.Job{Name: "gc", Interval: g.Interval, Run: func(ctx context.Context) (any, error) {
			if srv.Redis() == nil {
				// The in-process lease covers this process only: with no Redis
				// to coordinate through, another server on the same storage
				// would keep writing during the sweep.
				live, err := maintenance.LiveBeacons(ctx, srv.Driver(), maintenance.DefaultBeaconMaxAge)
				if err != nil {
					return nil, fmt.Errorf("check for other servers on this storage: %w", err)
				}
				if others := slices.DeleteFunc(live, func(s string) bool { return s == id }); len(others) > 0 {
					return nil, fmt.Errorf("skipped: other servers use this storage (%s) and no Redis is configured to coordinate with them", strings.Join(others, ", "))
				}
			}
			rep, err := gc.Run(ctx, gc.Options{
				Cache:  manifests,
				Driver: srv.Driver(), Files: files, Coordinator: coord, DeleteUntagged: g.DeleteUntagged,
				UploadMaxAge: g.UploadMaxAge, BlobGrace: g.BlobGrace, PreScan: true, FlushRedis: flush, Logger: log,
			})
			if rep == nil {
				return nil, err
			}
			gcBytesFreed.Add(float64(rep.BytesFreed))
			gcBlobsRemoved.Add(float64(rep.BlobsRemoved))
			if rep.Coordination == "lease" {
				gcReadOnly.Observe(rep.ReadOnly.Seconds())
			}
			return map[string]any{
				"manifestsRemoved": rep.ManifestsRemoved, "blobsRemoved": rep.BlobsRemoved,
				"bytesFreed": rep.BytesFreed, "readOnlySeconds": rep.ReadOnly.Seconds(), "errors": len(rep.Errors),
			}, err
		}})
	}
	if p.Interval > 0 {
		r.Start(ctx, schedule.Job{Name: "prune", Interval: p.Interval, Run: func(ctx context.Context) (any, error) {
			tr, err := srv.InternalTransport(ctx)
			if err != nil {
				return nil, err
			}
			rep, err := retention.Run(ctx, retention.RunOptions{
				Registry: "http://berth.internal", PolicyFile: p.Policy, Transport: tr, Logger: log,
			})
			if rep == nil {
				return nil, err
			}
			pruneDeleted.Add(float64(rep.Deleted))
			pruneFailed.Add(float64(rep.Failed))
			return map[string]any{
				"outcome": rep.Outcome, "kept": rep.Kept, "deleted": rep.Deleted, "failed": rep.Failed,
			}, err
		}})
	}
}
