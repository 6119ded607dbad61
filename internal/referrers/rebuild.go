package referrers

import (
	"context"
	"fmt"
	"path"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/berth-registry/berth/internal/digests"
)

// maxManifestSize is Distribution's limit on manifest PUTs; a larger blob
// linked as a revision is not a manifest anyone pushed.
const maxManifestSize = 4 << 20

// markerPath records that repo's index was built from its manifests, so
// data pushed before berth (plain Distribution storage) is found without a
// migration step: the first listing in a repository without the marker
// builds the index.
func markerPath(repo string) string { return path.Join(reposRoot, repo, "_berth/referrers-indexed") }

// Stats counts what a rebuild did.
type Stats struct {
	Repositories int `json:"repositories"`
	Manifests    int `json:"manifests"`
	Referrers    int `json:"referrers"`
	Added        int `json:"added"`
	Removed      int `json:"removed"`
}

func (s *Stats) add(o Stats) {
	s.Repositories += o.Repositories
	s.Manifests += o.Manifests
	s.Referrers += o.Referrers
	s.Added += o.Added
	s.Removed += o.Removed
}

// Rebuild makes repo's index match its manifests: it adds an entry for
// every linked manifest with a subject, removes entries whose referrer is
// no longer linked, and marks the repository indexed. It is safe while the
// registry serves: entries are only added for manifests that exist and
// only removed for manifests that do not, each checked at that moment.
func Rebuild(ctx context.Context, d driver.StorageDriver, repo string, concurrency int) (Stats, error) {
	st := Stats{Repositories: 1}
	revs, err := revisions(ctx, d, repo)
	if err != nil {
		return st, err
	}
	targets := make([]digest.Digest, len(revs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(concurrency, 1))
	for i, rev := range revs {
		g.Go(func() error {
			t, ok, err := digests.Resolve(gctx, d, repo, digests.Manifest, rev)
			if ok && !digests.IsAlias(t) {
				targets[i] = t
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return st, err
	}
	// A manifest pushed by sha512 is linked under both names; its entry is
	// the name it was pushed by, as at push time.
	aliased := map[digest.Digest]bool{}
	for i, rev := range revs {
		if targets[i] != "" && digests.IsAlias(rev) {
			aliased[targets[i]] = true
		}
	}
	var manifests, refs, added atomic.Int64
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(max(concurrency, 1))
	for i, rev := range revs {
		if targets[i] == "" || (!digests.IsAlias(rev) && aliased[rev]) {
			continue
		}
		g.Go(func() error {
			content, ok, err := readContent(gctx, d, targets[i])
			if err != nil || !ok {
				return err
			}
			manifests.Add(1)
			desc, subject, err := Describe(content, "", rev)
			if err != nil || subject == "" {
				// A revision that is not a manifest with a valid subject
				// refers to nothing.
				return nil
			}
			refs.Add(1)
			p := EntryPath(repo, subject, rev)
			if _, err := d.Stat(gctx, p); err == nil {
				return nil
			} else if !isNotFound(err) {
				return fmt.Errorf("check index entry %s: %w", p, err)
			}
			added.Add(1)
			return Record(gctx, d, repo, subject, desc)
		})
	}
	if err := g.Wait(); err != nil {
		return st, err
	}
	st.Manifests, st.Referrers, st.Added = int(manifests.Load()), int(refs.Load()), int(added.Load())
	removed, err := pruneStale(ctx, d, repo, concurrency)
	st.Removed = removed
	if err != nil {
		return st, err
	}
	if err := d.PutContent(ctx, markerPath(repo), []byte("v1\n")); err != nil {
		return st, fmt.Errorf("mark %s indexed: %w", repo, err)
	}
	return st, nil
}

// revisions lists the manifest revisions linked into repo.
func revisions(ctx context.Context, d driver.StorageDriver, repo string) ([]digest.Digest, error) {
	root := path.Join(reposRoot, repo, "_manifests/revisions")
	algs, err := d.List(ctx, root)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list manifests of %s: %w", repo, err)
	}
	var out []digest.Digest
	for _, a := range algs {
		hexes, err := d.List(ctx, a)
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("list manifests of %s: %w", repo, err)
		}
		for _, h := range hexes {
			if dg := digest.NewDigestFromEncoded(digest.Algorithm(path.Base(a)), path.Base(h)); dg.Validate() == nil {
				out = append(out, dg)
			}
		}
	}
	return out, nil
}

// readContent returns the manifest stored under canonical digest c; ok is
// false when the content is gone or too large to be a manifest.
func readContent(ctx context.Context, d driver.StorageDriver, c digest.Digest) ([]byte, bool, error) {
	p := digests.DataPath(c)
	fi, err := d.Stat(ctx, p)
	if err != nil {
		if isNotFound(err) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("stat manifest %s: %w", c, err)
	}
	if fi.Size() > maxManifestSize {
		return nil, false, nil
	}
	b, err := d.GetContent(ctx, p)
	if err != nil {
		if isNotFound(err) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("read manifest %s: %w", c, err)
	}
	return b, true, nil
}

// pruneStale removes index entries whose referrer is no longer linked.
func pruneStale(ctx context.Context, d driver.StorageDriver, repo string, concurrency int) (int, error) {
	root := path.Join(reposRoot, repo, "_berth/referrers")
	var subjects []digest.Digest
	algs, err := d.List(ctx, root)
	if err != nil {
		if isNotFound(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("list referrers index of %s: %w", repo, err)
	}
	for _, a := range algs {
		hexes, err := d.List(ctx, a)
		if err != nil && !isNotFound(err) {
			return 0, fmt.Errorf("list referrers index of %s: %w", repo, err)
		}
		for _, h := range hexes {
			if dg := digest.NewDigestFromEncoded(digest.Algorithm(path.Base(a)), path.Base(h)); dg.Validate() == nil {
				subjects = append(subjects, dg)
			}
		}
	}
	var removed atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(concurrency, 1))
	for _, subject := range subjects {
		names, err := entryNames(ctx, d, repo, subject)
		if err != nil {
			return 0, err
		}
		for _, ref := range names {
			g.Go(func() error {
				if _, err := d.Stat(gctx, digests.LinkPath(repo, digests.Manifest, ref)); err == nil {
					return nil
				} else if !isNotFound(err) {
					return fmt.Errorf("check referrer %s in %s: %w", ref, repo, err)
				}
				removed.Add(1)
				return Forget(gctx, d, repo, subject, ref)
			})
		}
	}
	err = g.Wait()
	return int(removed.Load()), err
}

// Repositories lists every repository with manifests.
func Repositories(ctx context.Context, d driver.StorageDriver) ([]string, error) {
	var repos []string
	err := d.Walk(ctx, reposRoot, func(fi driver.FileInfo) error {
		if !fi.IsDir() {
			return nil
		}
		rel := strings.TrimPrefix(fi.Path(), reposRoot+"/")
		dir, base := path.Split(rel)
		if !strings.HasPrefix(base, "_") {
			return nil
		}
		if base == "_manifests" && dir != "" {
			repos = append(repos, strings.TrimSuffix(dir, "/"))
		}
		return driver.ErrSkipDir
	})
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	return repos, nil
}

// Migrate rebuilds the index of every repository: the one-time step for a
// registry whose data was written by plain Distribution, or to repair the
// index after another tool changed the storage. progress, when set, is
// called after each repository.
func Migrate(ctx context.Context, d driver.StorageDriver, concurrency int, progress func(repo string, st Stats)) (Stats, error) {
	var total Stats
	repos, err := Repositories(ctx, d)
	if err != nil {
		return total, err
	}
	for _, repo := range repos {
		st, err := Rebuild(ctx, d, repo, concurrency)
		total.add(st)
		if err != nil {
			return total, fmt.Errorf("repository %s: %w", repo, err)
		}
		if progress != nil {
			progress(repo, st)
		}
	}
	return total, nil
}

// entryCacheSize bounds the decoded entries an Index keeps (about 300 bytes each).
const entryCacheSize = 100_000

// Index serves listings, building a repository's index the first time it
// is asked for one (once per process and repository, and once at a time).
type Index struct {
	Driver      driver.StorageDriver
	Concurrency int

	group   singleflight.Group
	indexed sync.Map // repo → true
	once    sync.Once
	entries *entryCache
}

// Ensure builds repo's index unless storage says it was built. A
// repository without manifests has nothing to index and is left untouched:
// a GET must not create repositories.
func (x *Index) Ensure(ctx context.Context, repo string) error {
	if _, ok := x.indexed.Load(repo); ok {
		return nil
	}
	// The build outlives a client that gives up: the next one would only
	// start it again.
	ctx = context.WithoutCancel(ctx)
	_, err, _ := x.group.Do(repo, func() (any, error) {
		if _, err := x.Driver.Stat(ctx, markerPath(repo)); err == nil {
			x.indexed.Store(repo, true)
			return nil, nil
		} else if !isNotFound(err) {
			return nil, fmt.Errorf("check referrers index of %s: %w", repo, err)
		}
		if _, err := x.Driver.Stat(ctx, path.Join(reposRoot, repo, "_manifests")); err != nil {
			if isNotFound(err) {
				return nil, nil
			}
			return nil, fmt.Errorf("stat repository %s: %w", repo, err)
		}
		if _, err := Rebuild(ctx, x.Driver, repo, max(x.Concurrency, 8)); err != nil {
			return nil, err
		}
		x.indexed.Store(repo, true)
		return nil, nil
	})
	return err
}

// List builds repo's index if needed and returns a page of subject's
// referrers.
func (x *Index) List(ctx context.Context, repo string, subject digest.Digest, q Query) (Page, error) {
	if err := x.Ensure(ctx, repo); err != nil {
		return Page{}, err
	}
	x.once.Do(func() { x.entries = &entryCache{max: entryCacheSize} })
	return list(ctx, x.Driver, x.entries, repo, subject, q)
}
