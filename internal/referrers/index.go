// Package referrers keeps the OCI 1.1 referrers index: for every manifest
// that names a subject, one small file in shared storage, so every replica
// finds a referrer as soon as its PUT has answered.
//
// Layout, beside Distribution's data of the repository:
//
//	/docker/registry/v2/repositories/<repo>/_berth/referrers/<subject-alg>/<subject-hex>/<referrer-alg>/<referrer-hex>
//
// Each entry holds the referrer's descriptor as JSON (media type, size,
// artifact type, annotations), which a manifest, being immutable, never
// outdates. A listing skips entries whose referrer manifest is no longer
// linked into the repository, so an entry left behind (a crash between the
// delete and the index update, a delete by another tool) never shows. Path
// components starting with "_" cannot be repository names, and both
// Distribution's catalog and berth's gc skip them.
package referrers

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/internal/digests"
)

const reposRoot = "/docker/registry/v2/repositories"

// Dir is the directory holding the referrers of subject in repo.
func Dir(repo string, subject digest.Digest) string {
	return path.Join(reposRoot, repo, "_berth/referrers", subject.Algorithm().String(), subject.Encoded())
}

// EntryPath is the index entry saying that referrer refers to subject.
func EntryPath(repo string, subject, referrer digest.Digest) string {
	return path.Join(Dir(repo, subject), referrer.Algorithm().String(), referrer.Encoded())
}

func isNotFound(err error) bool {
	var nf driver.PathNotFoundError
	return errors.As(err, &nf)
}

// Record adds desc (a manifest stored in repo) to subject's referrers.
func Record(ctx context.Context, d driver.StorageDriver, repo string, subject digest.Digest, desc v1.Descriptor) error {
	b, err := json.Marshal(desc)
	if err != nil {
		return fmt.Errorf("encode referrer %s: %w", desc.Digest, err)
	}
	if err := d.PutContent(ctx, EntryPath(repo, subject, desc.Digest), b); err != nil {
		return fmt.Errorf("index referrer %s of %s in %s: %w", desc.Digest, subject, repo, err)
	}
	return nil
}

// Forget removes referrer from subject's referrers in repo; an entry that
// is not there is not an error. gc calls it for every referrer manifest it
// deletes.
func Forget(ctx context.Context, d driver.StorageDriver, repo string, subject, referrer digest.Digest) error {
	if err := d.Delete(ctx, EntryPath(repo, subject, referrer)); err != nil && !isNotFound(err) {
		return fmt.Errorf("forget referrer %s of %s in %s: %w", referrer, subject, repo, err)
	}
	return nil
}

// ForgetSubject removes subject's whole referrers list in repo.
func ForgetSubject(ctx context.Context, d driver.StorageDriver, repo string, subject digest.Digest) error {
	if err := d.Delete(ctx, Dir(repo, subject)); err != nil && !isNotFound(err) {
		return fmt.Errorf("forget referrers of %s in %s: %w", subject, repo, err)
	}
	return nil
}

// Query selects a page of a referrers list.
type Query struct {
	// ArtifactType keeps only referrers of this artifact type ("" keeps all).
	ArtifactType string
	// After is the last digest of the previous page ("" for the first page).
	After digest.Digest
	// Limit is the most descriptors a page holds (<= 0: DefaultLimit).
	Limit int
	// MaxBytes bounds the descriptors' encoded size, so a page stays a
	// manifest clients accept (<= 0: DefaultMaxBytes). A page holds at least
	// one descriptor.
	MaxBytes int
}

const (
	// DefaultLimit is the page size when the client asks for none.
	DefaultLimit = 1000
	// DefaultMaxBytes keeps a page well below the 4 MiB clients accept for
	// an index.
	DefaultMaxBytes = 2 << 20
	readConcurrency = 64
)

// Page is one page of a referrers list, in digest order.
type Page struct {
	Manifests []v1.Descriptor
	// More is set when descriptors after the last one may follow.
	More bool
}

// entryNames lists subject's entries in repo, as referrer digests in order.
func entryNames(ctx context.Context, d driver.StorageDriver, repo string, subject digest.Digest) ([]digest.Digest, error) {
	dir := Dir(repo, subject)
	algs, err := d.List(ctx, dir)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list referrers of %s in %s: %w", subject, repo, err)
	}
	var out []digest.Digest
	for _, a := range algs {
		entries, err := d.List(ctx, a)
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("list referrers of %s in %s: %w", subject, repo, err)
		}
		for _, e := range entries {
			if dg := digest.NewDigestFromEncoded(digest.Algorithm(path.Base(a)), path.Base(e)); dg.Validate() == nil {
				out = append(out, dg)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// List returns a page of subject's referrers in repo. A referrer whose
// manifest is no longer linked into repo is left out.
func List(ctx context.Context, d driver.StorageDriver, repo string, subject digest.Digest, q Query) (Page, error) {
	return list(ctx, d, nil, repo, subject, q)
}

func list(ctx context.Context, d driver.StorageDriver, c *entryCache, repo string, subject digest.Digest, q Query) (Page, error) {
	names, err := entryNames(ctx, d, repo, subject)
	if err != nil {
		return Page{}, err
	}
	if q.After != "" {
		i, _ := slices.BinarySearch(names, q.After)
		for i < len(names) && names[i] <= q.After {
			i++
		}
		names = names[i:]
	}
	pg := newPager(q)
	// Read in chunks, in parallel within a chunk, until the page is full:
	// with a filter, how many entries it takes is unknown up front.
	for start := 0; start < len(names); start += readConcurrency {
		chunk := names[start:min(start+readConcurrency, len(names))]
		descs, err := readEntries(ctx, d, c, repo, subject, chunk)
		if err != nil {
			return Page{}, err
		}
		for _, e := range descs {
			if e != nil && !pg.add(e.desc, e.size) {
				return pg.page, nil
			}
		}
	}
	return pg.page, nil
}

// pager assembles a page from descriptors in list order.
type pager struct {
	q        Query
	limit    int
	maxBytes int
	size     int
	page     Page
}

func newPager(q Query) *pager {
	return &pager{q: q, limit: cmp.Or(max(q.Limit, 0), DefaultLimit), maxBytes: cmp.Or(max(q.MaxBytes, 0), DefaultMaxBytes)}
}

// add offers the next descriptor; false means the page is full and the
// descriptor belongs to a later one.
func (p *pager) add(desc v1.Descriptor, n int) bool {
	if p.q.ArtifactType != "" && desc.ArtifactType != p.q.ArtifactType {
		return true
	}
	if len(p.page.Manifests) >= p.limit || (len(p.page.Manifests) > 0 && p.size+n > p.maxBytes) {
		p.page.More = true
		return false
	}
	p.page.Manifests = append(p.page.Manifests, desc)
	p.size += n
	return true
}

func encodedSize(desc v1.Descriptor) int {
	b, _ := json.Marshal(desc)
	return len(b) + 1
}

// readEntries reads the entries for refs, in parallel where storage has to
// be asked; a nil result is an entry that vanished, does not parse, or
// whose referrer is gone.
func readEntries(ctx context.Context, d driver.StorageDriver, c *entryCache, repo string, subject digest.Digest, refs []digest.Digest) ([]*cachedEntry, error) {
	out := make([]*cachedEntry, len(refs))
	errs := make([]error, len(refs))
	var wg sync.WaitGroup
	for i, ref := range refs {
		if e, ok := c.get(EntryPath(repo, subject, ref)); ok && time.Since(e.checked) < recheck {
			out[i] = &e
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = readEntry(ctx, d, c, repo, subject, ref)
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

func readEntry(ctx context.Context, d driver.StorageDriver, c *entryCache, repo string, subject, ref digest.Digest) (*cachedEntry, error) {
	p := EntryPath(repo, subject, ref)
	e, ok := c.get(p)
	if !ok {
		b, err := d.GetContent(ctx, p)
		if err != nil {
			if isNotFound(err) {
				return nil, nil
			}
			return nil, fmt.Errorf("read referrer %s of %s in %s: %w", ref, subject, repo, err)
		}
		if err := json.Unmarshal(b, &e.desc); err != nil || e.desc.Digest != ref {
			// Not an entry berth wrote; a rebuild replaces it.
			return nil, nil
		}
		e.size = encodedSize(e.desc)
	}
	// The entry outlives its referrer when the manifest is deleted behind
	// berth's back; the revision link is the truth.
	if _, err := d.Stat(ctx, digests.LinkPath(repo, digests.Manifest, ref)); err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("check referrer %s in %s: %w", ref, repo, err)
	}
	e.checked = time.Now()
	c.put(p, e)
	return &e, nil
}

// recheck is how long a listing trusts that a cached entry's referrer is
// still linked. Deletes through berth (the API, gc) remove the entry
// itself and show at once on every replica; this only bounds how long a
// manifest deleted behind berth's back stays listed.
const recheck = 10 * time.Second

type cachedEntry struct {
	desc    v1.Descriptor
	size    int // encoded, for the page's byte budget
	checked time.Time
}

// entryCache keeps decoded entries. An entry describes an immutable
// manifest, so its descriptor never goes stale; whether it is listed at
// all is decided by the directory listing on every read. A nil cache
// caches nothing.
type entryCache struct {
	mu  sync.Mutex
	max int
	m   map[string]cachedEntry
}

func (c *entryCache) get(p string) (cachedEntry, bool) {
	if c == nil {
		return cachedEntry{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[p]
	return e, ok
}

func (c *entryCache) put(p string, e cachedEntry) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= c.max {
		// Bounded the simple way: start over.
		c.m = make(map[string]cachedEntry)
	}
	c.m[p] = e
}
