package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"

	"github.com/berth-registry/berth/internal/maintenance"
)

// ErrPartial means gc ran but some deletions (or the cache flush) failed;
// the report lists them. Rerunning gc is safe.
var ErrPartial = errors.New("gc finished with errors")

// DefaultConcurrency bounds parallel storage calls when Options leaves it 0.
const DefaultConcurrency = 8

// Options configure one gc run. Durations are taken literally: a zero
// BlobGrace protects nothing, a zero UploadMaxAge purges no uploads.
type Options struct {
	Driver storagedriver.StorageDriver
	// Coordinator puts the replicas into read-only maintenance for the run.
	// nil means offline: the caller has established that no server writes
	// to this storage (stopped, or not using it).
	Coordinator    *maintenance.Coordinator
	DryRun         bool
	DeleteUntagged bool
	UploadMaxAge   time.Duration
	BlobGrace      time.Duration
	// Concurrency bounds parallel storage calls (default 8).
	Concurrency int
	// PreScan lists the storage once before taking the lease, so that the
	// listing inside the lease only reads manifests pushed in between. It
	// costs a second walk and shortens the time writes are refused.
	PreScan bool
	// FlushRedis deletes the shared blob-descriptor cache; it runs after the
	// sweep and before replicas are released.
	FlushRedis func(ctx context.Context) error
	// Files deletes links and blob data in batches by exact path (see
	// FileDeleterFor; S3 only). nil deletes path by path through Driver.
	Files FileDeleter
	// Cache keeps parsed manifests between runs (optional).
	Cache  *ManifestCache
	Logger *slog.Logger
}

// Run collects garbage once and reports what it did. With a Coordinator the
// sweep happens inside the lease; if the lease is lost, deleting stops at
// once. A non-nil report comes with ErrPartial when some deletions failed.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Driver == nil {
		return nil, errors.New("gc: no storage driver")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Cache == nil {
		o.Cache = NewManifestCache()
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "gc")

	start := time.Now()
	rep := &Report{DryRun: o.DryRun, DeleteUntagged: o.DeleteUntagged, Started: start.UTC(), Coordination: "none"}
	s := &scanner{d: o.Driver, conc: o.Concurrency, cache: o.Cache}

	var lease *maintenance.Lease
	release := func() {
		if lease == nil {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := lease.Release(rctx); err != nil {
			log.Warn("releasing the maintenance lease", "err", err)
		}
		rep.ReadOnly = lease.ReadOnlyFor()
		lease = nil
	}
	defer release()

	if o.Coordinator != nil && !o.DryRun {
		if o.PreScan {
			// Only a warm-up for the manifest cache: writers are still
			// active, so a listing spoiled by them is no reason to stop.
			if _, err := s.scan(ctx); err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				log.Warn("listing before maintenance failed; listing everything inside the lease", "err", err)
			} else {
				log.Info("storage listed before maintenance", "manifestsRead", s.read, "took", time.Since(start).Round(time.Millisecond))
			}
		}
		var err error
		if lease, err = o.Coordinator.Begin(ctx); err != nil {
			return nil, fmt.Errorf("enter read-only maintenance: %w", err)
		}
		rep.Coordination = "lease"
	}

	// Ages are judged from before the listing: anything written while
	// listing then looks younger, never older, than it is.
	now := time.Now()
	readBefore := s.read
	listing, err := s.scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("list storage: %w", err)
	}
	rep.Listing = time.Since(now)
	policy := Policy{DeleteUntagged: o.DeleteUntagged, BlobGrace: o.BlobGrace, UploadMaxAge: o.UploadMaxAge, Now: now}
	plan := Mark(listing, policy)
	rep.Repositories = len(listing.Repositories)
	rep.Warnings = plan.Warnings
	log.Info("marked", "repositories", rep.Repositories, "manifestsRead", s.read-readBefore,
		"manifestsToRemove", len(plan.Manifests), "blobsToRemove", len(plan.Blobs), "bytes", plan.Bytes)

	if o.DryRun {
		rep.ManifestsRemoved, rep.ManifestsKept = len(plan.Manifests), plan.ManifestsKept
		rep.BlobsRemoved, rep.BlobsKept, rep.BytesFreed = len(plan.Blobs), plan.BlobsKept, plan.Bytes
		rep.LayerLinksRemoved, rep.UploadsPurged = len(plan.LayerLinks), len(plan.Uploads)
		rep.Manifests = plan.Manifests
		rep.Duration = time.Since(start)
		return rep, nil
	}

	sw := &sweeper{d: o.Driver, conc: o.Concurrency, files: o.Files}
	if lease != nil {
		sw.guard = lease.Err
	}
	sweepStart := time.Now()
	okM := sw.manifests(ctx, plan.Manifests)
	if keep := keepFailed(plan.Manifests, okM); keep != nil {
		// A manifest that is still there still needs its blobs.
		policy.Keep = keep
		again := Mark(listing, policy)
		plan.Blobs, plan.LayerLinks, plan.BlobsKept = again.Blobs, again.LayerLinks, again.BlobsKept
	}
	okL := sw.layerLinks(ctx, plan.LayerLinks)
	okB := sw.blobs(ctx, plan.Blobs)
	rep.Sweeping = time.Since(sweepStart)

	rep.ManifestsKept = plan.ManifestsKept
	rep.BlobsKept = plan.BlobsKept
	for i, ok := range okM {
		if ok {
			rep.ManifestsRemoved++
			rep.Manifests = append(rep.Manifests, plan.Manifests[i])
		} else {
			rep.ManifestsKept++
		}
	}
	for _, ok := range okL {
		if ok {
			rep.LayerLinksRemoved++
		}
	}
	for i, ok := range okB {
		if ok {
			rep.BlobsRemoved++
			rep.BytesFreed += plan.Blobs[i].Size
		} else {
			rep.BlobsKept++
		}
	}
	deleted := rep.ManifestsRemoved+rep.BlobsRemoved+rep.LayerLinksRemoved > 0
	var problems []string
	// Once something is deleted the caches must be flushed even if gc is
	// being interrupted: a stale descriptor makes a re-push skip uploading.
	fctx := context.WithoutCancel(ctx)
	if deleted && o.FlushRedis != nil {
		cctx, cancel := context.WithTimeout(fctx, time.Minute)
		err := o.FlushRedis(cctx)
		cancel()
		if err != nil {
			problems = append(problems, fmt.Sprintf("flush the Redis blob-descriptor cache (it may still list deleted blobs until flushed): %v", err))
		}
	}
	if deleted && lease != nil {
		if err := lease.Flush(fctx); err != nil {
			problems = append(problems, fmt.Sprintf("flush the replicas' in-memory caches (they may still list deleted blobs until restarted): %v", err))
		}
	}
	release()

	// Upload sessions need no lease: a purged session only makes its
	// client start the upload again.
	up := &sweeper{d: o.Driver, conc: o.Concurrency}
	for _, ok := range up.uploads(ctx, plan.Uploads) {
		if ok {
			rep.UploadsPurged++
		}
	}

	rep.Warnings = append(rep.Warnings, sw.warnings...)
	rep.Errors = append(append(sw.errs, up.errs...), problems...)
	if sw.stopErr != nil {
		rep.Errors = append(rep.Errors, fmt.Sprintf("stopped deleting early: %v", sw.stopErr))
	}
	rep.Duration = time.Since(start)
	log.Info("done", "manifestsRemoved", rep.ManifestsRemoved, "blobsRemoved", rep.BlobsRemoved,
		"bytesFreed", rep.BytesFreed, "readOnly", rep.ReadOnly.Round(time.Millisecond), "took", rep.Duration.Round(time.Millisecond))
	if len(rep.Errors) > 0 {
		return rep, fmt.Errorf("%w: %d problem(s), first: %s", ErrPartial, len(rep.Errors), rep.Errors[0])
	}
	return rep, nil
}
