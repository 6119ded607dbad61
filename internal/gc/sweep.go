package gc

import (
	"context"
	"fmt"
	"sync"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/berth-registry/berth/internal/referrers"
)

// sweeper deletes with bounded parallelism. guard is asked before every
// deletion; once it fails nothing more is deleted.
type sweeper struct {
	d     storagedriver.StorageDriver
	conc  int
	guard func() error
	// files, when set, deletes links and blob data by exact path in
	// batches; without it every deletion goes through d.Delete.
	files FileDeleter

	mu       sync.Mutex
	stopErr  error
	errs     []string
	warnings []string
}

func (s *sweeper) check(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopErr != nil {
		return s.stopErr
	}
	err := ctx.Err()
	if err == nil && s.guard != nil {
		err = s.guard()
	}
	if err != nil {
		s.stopErr = err
	}
	return err
}

func (s *sweeper) warn(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.warnings = append(s.warnings, fmt.Sprintf(format, args...))
}

func (s *sweeper) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, fmt.Sprintf(format, args...))
}

// each runs del for every item in parallel and returns which succeeded.
func each[T any](ctx context.Context, s *sweeper, items []T, del func(context.Context, T) error, describe func(T) string) []bool {
	ok := make([]bool, len(items))
	var g errgroup.Group
	g.SetLimit(s.conc)
	for i, it := range items {
		if s.check(ctx) != nil {
			break
		}
		g.Go(func() error {
			if s.check(ctx) != nil {
				return nil
			}
			if err := del(ctx, it); err != nil {
				s.fail("delete %s: %v", describe(it), err)
				return nil
			}
			ok[i] = true
			return nil
		})
	}
	_ = g.Wait()
	return ok
}

// batchSize spreads n deletions over the concurrency limit, up to S3's
// limit per request: a few large requests in parallel rather than one
// after the other.
func batchSize(n, conc int) int {
	size := (n + conc - 1) / conc
	return max(1, min(size, maxDeleteBatch))
}

// eachInBatches deletes every attempted item's files with s.files, in
// batches run in parallel, and returns which items lost all their files.
// Items not attempted fail; attempted items without files succeed.
func eachInBatches[T any](ctx context.Context, s *sweeper, items []T, attempt []bool, files func(T) []string, describe func(T) string) []bool {
	type ref struct {
		item int
		path string
	}
	var refs []ref
	ok := make([]bool, len(items))
	for i, it := range items {
		if attempt != nil && !attempt[i] {
			continue
		}
		ok[i] = true
		for _, p := range files(it) {
			refs = append(refs, ref{i, p})
		}
	}
	var mu sync.Mutex
	ran := make([]bool, len(refs))
	itemErr := map[int]error{}
	size := batchSize(len(refs), s.conc)
	var g errgroup.Group
	g.SetLimit(s.conc)
	for start := 0; start < len(refs); start += size {
		if s.check(ctx) != nil {
			break
		}
		batch := refs[start:min(start+size, len(refs))]
		g.Go(func() error {
			if s.check(ctx) != nil {
				return nil
			}
			paths := make([]string, len(batch))
			for j, r := range batch {
				paths[j] = r.path
			}
			failed, err := s.files.DeleteFiles(ctx, paths)
			mu.Lock()
			defer mu.Unlock()
			for j, r := range batch {
				ran[start+j] = true
				switch {
				case err != nil:
					itemErr[r.item] = err
				case failed[r.path] != nil:
					itemErr[r.item] = fmt.Errorf("%s: %w", r.path, failed[r.path])
				}
			}
			return nil
		})
	}
	_ = g.Wait()
	for j, r := range refs {
		if !ran[j] {
			ok[r.item] = false // stopped before its batch (the stop is reported once)
		}
	}
	for i, err := range itemErr {
		ok[i] = false
		s.fail("delete %s: %v", describe(items[i]), err)
	}
	return ok
}

// deleteIfPresent treats an already missing path as deleted: a previous,
// interrupted gc may have got there first.
func (s *sweeper) deleteIfPresent(ctx context.Context, p string) error {
	if err := s.d.Delete(ctx, p); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

// manifests deletes each manifest's referrer tags and tag-history entries,
// then its revision link. The revision goes last so that an interrupted run
// leaves the manifest listed, and the next run finishes the job.
func (s *sweeper) manifests(ctx context.Context, refs []ManifestRef) []bool {
	if s.files != nil {
		return s.manifestsInBatches(ctx, refs)
	}
	return each(ctx, s, refs, func(ctx context.Context, m ManifestRef) error {
		for _, tag := range m.Tags {
			if err := s.deleteIfPresent(ctx, repoPath(m.Repository, "_manifests", "tags", tag)); err != nil {
				return err
			}
		}
		for _, tag := range m.TagIndex {
			p := repoPath(m.Repository, "_manifests", "tags", tag, "index", m.Digest.Algorithm().String(), m.Digest.Encoded())
			if err := s.deleteIfPresent(ctx, p); err != nil {
				return err
			}
		}
		if err := s.deleteIfPresent(ctx, repoPath(m.Repository, "_manifests", "revisions", m.Digest.Algorithm().String(), m.Digest.Encoded())); err != nil {
			return err
		}
		if m.Subject != "" {
			// The referrers API already hides entries of unlinked manifests,
			// so a failure here only leaves a harmless file behind.
			if err := referrers.Forget(ctx, s.d, m.Repository, m.Subject, m.Digest); err != nil {
				s.warn("%v", err)
			}
		}
		return nil
	}, func(m ManifestRef) string { return "manifest " + m.Repository + "@" + m.Digest.String() })
}

// manifestsInBatches deletes as manifests does, in the same order, phase
// by phase: referrer tags (directories, through the driver), then every
// tag-history entry, then the revision links, then referrers entries.
func (s *sweeper) manifestsInBatches(ctx context.Context, refs []ManifestRef) []bool {
	describe := func(m ManifestRef) string { return "manifest " + m.Repository + "@" + m.Digest.String() }
	ok := each(ctx, s, refs, func(ctx context.Context, m ManifestRef) error {
		for _, tag := range m.Tags {
			if err := s.deleteIfPresent(ctx, repoPath(m.Repository, "_manifests", "tags", tag)); err != nil {
				return err
			}
		}
		return nil
	}, describe)
	ok = eachInBatches(ctx, s, refs, ok, func(m ManifestRef) []string {
		var out []string
		for _, tag := range m.TagIndex {
			out = append(out, repoPath(m.Repository, "_manifests", "tags", tag, "index", m.Digest.Algorithm().String(), m.Digest.Encoded(), "link"))
		}
		return out
	}, describe)
	ok = eachInBatches(ctx, s, refs, ok, func(m ManifestRef) []string {
		return []string{repoPath(m.Repository, "_manifests", "revisions", m.Digest.Algorithm().String(), m.Digest.Encoded(), "link")}
	}, describe)
	var withSubject []ManifestRef
	for i, m := range refs {
		if ok[i] && m.Subject != "" {
			withSubject = append(withSubject, m)
		}
	}
	each(ctx, s, withSubject, func(ctx context.Context, m ManifestRef) error {
		if err := referrers.Forget(ctx, s.d, m.Repository, m.Subject, m.Digest); err != nil {
			s.warn("%v", err)
		}
		return nil
	}, describe)
	return ok
}

func (s *sweeper) layerLinks(ctx context.Context, refs []LinkRef) []bool {
	if s.files != nil {
		return eachInBatches(ctx, s, refs, nil, func(l LinkRef) []string {
			return []string{repoPath(l.Repository, "_layers", l.Digest.Algorithm().String(), l.Digest.Encoded(), "link")}
		}, func(l LinkRef) string { return "layer link " + l.Repository + "@" + l.Digest.String() })
	}
	return each(ctx, s, refs, func(ctx context.Context, l LinkRef) error {
		return s.deleteIfPresent(ctx, repoPath(l.Repository, "_layers", l.Digest.Algorithm().String(), l.Digest.Encoded()))
	}, func(l LinkRef) string { return "layer link " + l.Repository + "@" + l.Digest.String() })
}

func (s *sweeper) blobs(ctx context.Context, blobs []Blob) []bool {
	if s.files != nil {
		return eachInBatches(ctx, s, blobs, nil, func(b Blob) []string { return []string{blobDataPath(b.Digest)} },
			func(b Blob) string { return "blob " + b.Digest.String() })
	}
	return each(ctx, s, blobs, func(ctx context.Context, b Blob) error {
		return s.deleteIfPresent(ctx, blobDir(b.Digest))
	}, func(b Blob) string { return "blob " + b.Digest.String() })
}

func (s *sweeper) uploads(ctx context.Context, refs []UploadRef) []bool {
	return each(ctx, s, refs, func(ctx context.Context, u UploadRef) error {
		return s.deleteIfPresent(ctx, repoPath(u.Repository, "_uploads", u.ID))
	}, func(u UploadRef) string { return "upload " + u.Repository + "/" + u.ID })
}

// keepFailed returns a Keep set holding the manifests whose deletion failed,
// so a second mark keeps their blobs.
func keepFailed(refs []ManifestRef, ok []bool) map[string]map[digest.Digest]bool {
	var keep map[string]map[digest.Digest]bool
	for i, m := range refs {
		if ok[i] {
			continue
		}
		if keep == nil {
			keep = map[string]map[digest.Digest]bool{}
		}
		if keep[m.Repository] == nil {
			keep[m.Repository] = map[digest.Digest]bool{}
		}
		keep[m.Repository][m.Digest] = true
	}
	return keep
}
