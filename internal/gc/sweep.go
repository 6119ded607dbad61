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

func (s *sweeper) layerLinks(ctx context.Context, refs []LinkRef) []bool {
	return each(ctx, s, refs, func(ctx context.Context, l LinkRef) error {
		return s.deleteIfPresent(ctx, repoPath(l.Repository, "_layers", l.Digest.Algorithm().String(), l.Digest.Encoded()))
	}, func(l LinkRef) string { return "layer link " + l.Repository + "@" + l.Digest.String() })
}

func (s *sweeper) blobs(ctx context.Context, blobs []Blob) []bool {
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
