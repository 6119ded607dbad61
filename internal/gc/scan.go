package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// Distribution's storage layout (registry/storage/paths.go, layout "v2").
// Walking it directly, rather than through the registry's enumerators, gives
// the modification times and sizes the grace rules and the report need, in
// one parallel pass.
const (
	v2Root    = "/docker/registry/v2"
	reposRoot = v2Root + "/repositories"
	blobsRoot = v2Root + "/blobs"
	// maxManifestSize matches Distribution's limit on manifest PUTs; a
	// larger blob linked as a revision is not a manifest.
	maxManifestSize = 4 << 20
)

func blobDir(d digest.Digest) string {
	return path.Join(blobsRoot, d.Algorithm().String(), d.Encoded()[:2], d.Encoded())
}

func blobDataPath(d digest.Digest) string { return path.Join(blobDir(d), "data") }

func repoPath(repo string, parts ...string) string {
	return path.Join(append([]string{reposRoot, repo}, parts...)...)
}

func isNotFound(err error) bool {
	var nf storagedriver.PathNotFoundError
	return errors.As(err, &nf)
}

// vanished reports a path that disappeared while being listed. Drivers
// report it in different ways (the filesystem driver's Walk passes the raw
// readdir error through its catch-all Error, which does not unwrap).
func vanished(err error) bool {
	var de storagedriver.Error
	if errors.As(err, &de) && de.Detail != nil {
		err = de.Detail
	}
	return isNotFound(err) || errors.Is(err, fs.ErrNotExist)
}

// parsed is the part of a manifest gc needs.
type parsed struct {
	mediaType string
	blobs     []digest.Digest
	children  []digest.Digest
	subject   digest.Digest
}

// ManifestCache keeps parsed manifests across scans. Manifests are content
// addressed and immutable, so an entry never goes stale; reusing it means a
// second scan (inside the lease, or the next scheduled run) reads only
// manifests pushed since.
type ManifestCache struct {
	mu sync.Mutex
	m  map[digest.Digest]parsed
}

// NewManifestCache returns an empty cache.
func NewManifestCache() *ManifestCache { return &ManifestCache{m: map[digest.Digest]parsed{}} }

func (c *ManifestCache) get(d digest.Digest) (parsed, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.m[d]
	return p, ok
}

func (c *ManifestCache) put(d digest.Digest, p parsed) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[d] = p
}

// Len reports how many manifests the cache holds.
func (c *ManifestCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

type descriptor struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
}

// parseManifest reads references from any manifest format Distribution
// stores: OCI image manifest and index, Docker schema2 manifest and list,
// and OCI artifact manifests (blobs). A reference with an invalid digest
// makes the manifest unusable rather than silently ignored.
func parseManifest(b []byte) (parsed, error) {
	var raw struct {
		MediaType string       `json:"mediaType"`
		Config    *descriptor  `json:"config"`
		Layers    []descriptor `json:"layers"`
		Blobs     []descriptor `json:"blobs"`
		Manifests []descriptor `json:"manifests"`
		Subject   *descriptor  `json:"subject"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return parsed{}, fmt.Errorf("not a JSON manifest: %w", err)
	}
	p := parsed{mediaType: raw.MediaType}
	add := func(field string, ds []descriptor, into *[]digest.Digest) error {
		for i, d := range ds {
			if err := d.Digest.Validate(); err != nil {
				return fmt.Errorf("%s[%d]: %w", field, i, err)
			}
			*into = append(*into, d.Digest)
		}
		return nil
	}
	if raw.Config != nil && raw.Config.Digest != "" {
		if err := add("config", []descriptor{*raw.Config}, &p.blobs); err != nil {
			return parsed{}, err
		}
	}
	if err := add("layers", raw.Layers, &p.blobs); err != nil {
		return parsed{}, err
	}
	if err := add("blobs", raw.Blobs, &p.blobs); err != nil {
		return parsed{}, err
	}
	if err := add("manifests", raw.Manifests, &p.children); err != nil {
		return parsed{}, err
	}
	if raw.Subject != nil && raw.Subject.Digest != "" {
		if err := raw.Subject.Digest.Validate(); err != nil {
			return parsed{}, fmt.Errorf("subject: %w", err)
		}
		p.subject = raw.Subject.Digest
	}
	return p, nil
}

// digestFromParts turns ".../<alg>/<hex>" path components into a digest.
func digestFromParts(alg, hex string) (digest.Digest, bool) {
	d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
	return d, d.Validate() == nil
}

// flatBlobLimit bounds the flat listing of an object store's blob store.
// One paginated listing of a small store is a few requests; the fallback,
// a listing per two-hex-digit prefix, is 256 requests however small the
// store is, but they run in parallel, which is what a large store needs.
const flatBlobLimit = 20000

// scanner lists a storage with bounded parallelism.
type scanner struct {
	d     storagedriver.StorageDriver
	conc  int
	cache *ManifestCache
	// flatBlobs overrides flatBlobLimit (tests).
	flatBlobs int
	// read counts manifest contents fetched from storage (for logs and tests).
	read int
}

// repoScan is one repository as walked, before contents are read.
type repoScan struct {
	name      string
	revisions []Link
	tagIndex  map[digest.Digest][]string
	tagLinks  []string // tag names with a current/link
	tags      map[string]digest.Digest
	layers    []Link
	aliases   []Link
	uploads   map[string]*uploadScan
	warnings  []string
}

type uploadScan struct {
	startedAt string    // path of startedat, "" when missing
	started   time.Time // from startedat, or the newest file when missing
	newest    time.Time
}

// scan lists the whole storage. It fails on any storage error other than a
// path vanishing: gc must never decide on a partial picture.
func (s *scanner) scan(ctx context.Context) (*Listing, error) {
	// On object stores the blob store is first listed flat, alongside the
	// repositories' listing (both are sequential page by page).
	var (
		flat     []Blob
		flatDone bool
		flatErr  error
	)
	flatWalked := make(chan struct{})
	go func() {
		defer close(flatWalked)
		if !listsCheaply(s.d) {
			flat, flatDone, flatErr = s.walkAllBlobs(ctx)
		}
	}()
	var (
		repos []string
		scans []*repoScan
		err   error
	)
	if listsCheaply(s.d) {
		repos, err = s.repositories(ctx)
	} else {
		scans, err = s.walkRepositories(ctx)
	}
	<-flatWalked
	if err != nil {
		return nil, err
	}
	if flatErr != nil {
		return nil, flatErr
	}
	var prefixes []string
	if !flatDone {
		if prefixes, err = s.blobPrefixes(ctx); err != nil {
			return nil, err
		}
	}

	blobParts := make([][]Blob, len(prefixes), len(prefixes)+1)
	if flatDone {
		blobParts = append(blobParts, flat)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.conc)
	if repos != nil {
		scans = make([]*repoScan, len(repos))
	}
	for i, name := range repos {
		g.Go(func() error {
			rs, err := s.walkRepository(gctx, name)
			scans[i] = rs
			return err
		})
	}
	for i, p := range prefixes {
		g.Go(func() error {
			list := s.walkBlobs
			if listsCheaply(s.d) {
				list = s.listBlobsCheaply
			}
			bs, err := list(gctx, p)
			blobParts[i] = bs
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	l := &Listing{}
	sizes := map[digest.Digest]int64{}
	for _, bs := range blobParts {
		for _, b := range bs {
			sizes[b.Digest] = b.Size
		}
		l.Blobs = append(l.Blobs, bs...)
	}

	// Second pass: tag links, manifest contents (each digest once, even if
	// several repositories hold it) and upload start times.
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(s.conc)
	for _, rs := range scans {
		var mu sync.Mutex
		for _, al := range aliasLinks(rs) {
			g.Go(func() error {
				b, err := s.d.GetContent(gctx, al.path)
				if err != nil {
					if isNotFound(err) {
						return nil
					}
					return fmt.Errorf("read alias link %s: %w", al.path, err)
				}
				target, err := digest.Parse(strings.TrimSpace(string(b)))
				if err != nil {
					return fmt.Errorf("alias link %s names no digest: %w", al.path, err)
				}
				mu.Lock()
				rs.aliases = append(rs.aliases, Link{Digest: al.digest, Modified: al.modified, Target: target})
				mu.Unlock()
				return nil
			})
		}
		for _, tag := range rs.tagLinks {
			g.Go(func() error {
				d, err := s.readTag(gctx, rs.name, tag)
				if err != nil || d == "" {
					return err
				}
				mu.Lock()
				rs.tags[tag] = d
				mu.Unlock()
				return nil
			})
		}
		for id, u := range rs.uploads {
			if u.startedAt == "" {
				continue
			}
			g.Go(func() error {
				b, err := s.d.GetContent(gctx, u.startedAt)
				if err != nil {
					if isNotFound(err) {
						return nil
					}
					return fmt.Errorf("read upload %s/%s start time: %w", rs.name, id, err)
				}
				if t, err := time.Parse(time.RFC3339, strings.TrimSpace(string(b))); err == nil {
					u.started = t
				}
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	contents, broken, err := s.readManifests(ctx, scans, sizes)
	if err != nil {
		return nil, err
	}
	for _, rs := range scans {
		l.Repositories = append(l.Repositories, assemble(rs, contents, broken))
	}
	return l, nil
}

// repositories finds every repository: a directory holding _manifests,
// _layers or _uploads. Repositories with layers but no manifest yet (a push
// in progress) count too, so their links and uploads are seen.
func (s *scanner) repositories(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	var repos []string
	err := s.d.Walk(ctx, reposRoot, func(fi storagedriver.FileInfo) error {
		if !fi.IsDir() {
			return nil
		}
		rel := strings.TrimPrefix(fi.Path(), reposRoot+"/")
		dir, base := path.Split(rel)
		if !strings.HasPrefix(base, "_") {
			return nil
		}
		switch base {
		case "_manifests", "_layers", "_uploads":
			if repo := strings.TrimSuffix(dir, "/"); repo != "" && !seen[repo] {
				seen[repo] = true
				repos = append(repos, repo)
			}
		}
		return storagedriver.ErrSkipDir
	})
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	return repos, nil
}

// blobPrefixes lists blobs/<alg>/<xx> directories, the unit of parallel
// blob listing.
func (s *scanner) blobPrefixes(ctx context.Context) ([]string, error) {
	algs, err := s.d.List(ctx, blobsRoot)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list blob store: %w", err)
	}
	var out []string
	for _, a := range algs {
		ps, err := s.d.List(ctx, a)
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("list blob store %s: %w", a, err)
		}
		out = append(out, ps...)
	}
	return out, nil
}

// walkAllBlobs lists the whole blob store in one walk. It gives up (done
// false) past the flat listing limit.
func (s *scanner) walkAllBlobs(ctx context.Context) (blobs []Blob, done bool, err error) {
	limit := flatBlobLimit
	if s.flatBlobs > 0 {
		limit = s.flatBlobs
	}
	full := false
	err = s.d.Walk(ctx, blobsRoot, func(fi storagedriver.FileInfo) error {
		if fi.IsDir() {
			return nil
		}
		// <alg>/<first two hex digits>/<hex>/data
		p := strings.Split(strings.TrimPrefix(fi.Path(), blobsRoot+"/"), "/")
		if len(p) != 4 || p[3] != "data" {
			return nil
		}
		if d, ok := digestFromParts(p[0], p[2]); ok {
			if len(blobs) >= limit {
				full = true
				return storagedriver.ErrFilledBuffer
			}
			blobs = append(blobs, Blob{Digest: d, Size: fi.Size(), Modified: fi.ModTime()})
		}
		return nil
	})
	if full {
		return nil, false, nil
	}
	if err != nil && !isNotFound(err) {
		return nil, false, fmt.Errorf("list blob store: %w", err)
	}
	return blobs, true, nil
}

func (s *scanner) walkBlobs(ctx context.Context, prefix string) ([]Blob, error) {
	var out []Blob
	alg := path.Base(path.Dir(prefix))
	err := s.d.Walk(ctx, prefix, func(fi storagedriver.FileInfo) error {
		if fi.IsDir() || path.Base(fi.Path()) != "data" {
			return nil
		}
		if d, ok := digestFromParts(alg, path.Base(path.Dir(fi.Path()))); ok {
			out = append(out, Blob{Digest: d, Size: fi.Size(), Modified: fi.ModTime()})
		}
		return nil
	})
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("list blobs under %s: %w", prefix, err)
	}
	return out, nil
}

// walkRepository lists one repository on a storage that lists cheaply.
func (s *scanner) walkRepository(ctx context.Context, name string) (*repoScan, error) {
	rs := newRepoScan(name)

	if err := s.listRepositoryCheaply(ctx, rs); err != nil {
		return nil, fmt.Errorf("list repository %s: %w", name, err)
	}

	base := repoPath(name, "_uploads")
	err := s.d.Walk(ctx, base, func(fi storagedriver.FileInfo) error {
		p := strings.Split(strings.TrimPrefix(fi.Path(), base+"/"), "/")
		u := rs.uploads[p[0]]
		if u == nil {
			u = &uploadScan{}
			rs.uploads[p[0]] = u
		}
		if fi.ModTime().After(u.newest) {
			u.newest = fi.ModTime()
		}
		if len(p) == 2 && p[1] == "startedat" {
			u.startedAt = fi.Path()
		}
		return nil
	})
	// Upload sessions come and go while gc runs (clients finish them, the
	// registry's own purger removes them). A walk cut short by that only
	// means fewer sessions purged this time, so it is not an error; every
	// other listing must be complete or gc stops.
	if err != nil && !vanished(err) {
		return nil, fmt.Errorf("list uploads of %s: %w", name, err)
	}
	for _, u := range rs.uploads {
		// Without a start time, the last write is the best evidence of age.
		u.started = u.newest
	}
	return rs, nil
}

func newRepoScan(name string) *repoScan {
	return &repoScan{name: name, tagIndex: map[digest.Digest][]string{}, tags: map[string]digest.Digest{},
		uploads: map[string]*uploadScan{}}
}

// walkRepositories lists every repository of an object store in one walk.
// There a walk is one paginated listing of every object below its root
// whatever the callback skips, so the walk that finds the repositories
// might as well read their revisions, tags, layer links and uploads too:
// one listing instead of one more per repository and kind.
func (s *scanner) walkRepositories(ctx context.Context) ([]*repoScan, error) {
	byName := map[string]*repoScan{}
	var scans []*repoScan
	err := s.d.Walk(ctx, reposRoot, func(fi storagedriver.FileInfo) error {
		if fi.IsDir() {
			return nil
		}
		rel := strings.TrimPrefix(fi.Path(), reposRoot+"/")
		// A repository's name ends before its first component starting
		// with "_": name components cannot.
		i := strings.Index(rel, "/_")
		if i <= 0 {
			return nil
		}
		name, p := rel[:i], strings.Split(rel[i+1:], "/")
		switch p[0] {
		case "_manifests", "_layers", "_uploads":
		default:
			return nil // berth's own _berth, or anything else
		}
		rs := byName[name]
		if rs == nil {
			rs = newRepoScan(name)
			byName[name] = rs
			scans = append(scans, rs)
		}
		rs.addFile(p, fi)
		return nil
	})
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	for _, rs := range scans {
		for _, u := range rs.uploads {
			u.started = u.newest
		}
	}
	return scans, nil
}

// addFile takes in one file of the repository, p being its path below the
// repository (starting with _manifests, _layers or _uploads).
func (rs *repoScan) addFile(p []string, fi storagedriver.FileInfo) {
	q := p[1:]
	switch p[0] {
	case "_manifests":
		switch {
		case len(q) == 4 && q[0] == "revisions" && q[3] == "link":
			if d, ok := digestFromParts(q[1], q[2]); ok {
				rs.revisions = append(rs.revisions, Link{Digest: d, Modified: fi.ModTime()})
			}
		case len(q) == 4 && q[0] == "tags" && q[2] == "current" && q[3] == "link":
			rs.tagLinks = append(rs.tagLinks, q[1])
		case len(q) == 6 && q[0] == "tags" && q[2] == "index" && q[5] == "link":
			if d, ok := digestFromParts(q[3], q[4]); ok {
				rs.tagIndex[d] = append(rs.tagIndex[d], q[1])
			}
		}
	case "_layers":
		if len(q) == 3 && q[2] == "link" {
			if d, ok := digestFromParts(q[0], q[1]); ok {
				rs.layers = append(rs.layers, Link{Digest: d, Modified: fi.ModTime()})
			}
		}
	case "_uploads":
		if len(q) == 0 {
			return
		}
		u := rs.uploads[q[0]]
		if u == nil {
			u = &uploadScan{}
			rs.uploads[q[0]] = u
		}
		if fi.ModTime().After(u.newest) {
			u.newest = fi.ModTime()
		}
		if len(q) == 2 && q[1] == "startedat" {
			u.startedAt = fi.Path()
		}
	}
}

func (s *scanner) readTag(ctx context.Context, repo, tag string) (digest.Digest, error) {
	b, err := s.d.GetContent(ctx, repoPath(repo, "_manifests", "tags", tag, "current", "link"))
	if err != nil {
		if isNotFound(err) {
			return "", nil // tag deleted while listing
		}
		return "", fmt.Errorf("read tag %s:%s: %w", repo, tag, err)
	}
	d, err := digest.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		// A tag gc cannot resolve could point at anything; refusing to
		// collect is the only safe answer.
		return "", fmt.Errorf("tag %s:%s has an unreadable link %q: %w", repo, tag, b, err)
	}
	return d, nil
}

// readManifests fetches and parses every manifest not in the cache. It
// returns the parsed contents and, for manifests that cannot be used, why.
func (s *scanner) readManifests(ctx context.Context, scans []*repoScan, sizes map[digest.Digest]int64) (map[digest.Digest]parsed, map[digest.Digest]string, error) {
	contents := map[digest.Digest]parsed{}
	broken := map[digest.Digest]string{}
	var todo []digest.Digest
	want := func(d digest.Digest) {
		if _, ok := contents[d]; ok {
			return
		}
		if _, ok := broken[d]; ok {
			return
		}
		if p, ok := s.cache.get(d); ok {
			contents[d] = p
			return
		}
		size, ok := sizes[d]
		switch {
		case !ok:
			broken[d] = "its blob is missing from the blob store"
		case size > maxManifestSize:
			broken[d] = fmt.Sprintf("its blob is %d bytes, too large for a manifest", size)
		default:
			broken[d] = "" // placeholder so the digest is read once
			todo = append(todo, d)
		}
	}
	for _, rs := range scans {
		for _, r := range rs.revisions {
			want(r.Digest)
		}
		for _, d := range rs.tags {
			want(d)
		}
	}
	for _, d := range todo {
		delete(broken, d)
	}

	results := make([]parsed, len(todo))
	errs := make([]string, len(todo))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.conc)
	for i, d := range todo {
		g.Go(func() error {
			b, err := s.d.GetContent(gctx, blobDataPath(d))
			if err != nil {
				if isNotFound(err) {
					errs[i] = "its blob is missing from the blob store"
					return nil
				}
				return fmt.Errorf("read manifest %s: %w", d, err)
			}
			if digest.FromBytes(b) != d && d.Algorithm() == digest.Canonical {
				errs[i] = "its content does not match its digest"
				return nil
			}
			p, err := parseManifest(b)
			if err != nil {
				errs[i] = err.Error()
				return nil
			}
			results[i] = p
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	s.read += len(todo)
	for i, d := range todo {
		if errs[i] != "" {
			broken[d] = errs[i]
			continue
		}
		contents[d] = results[i]
		s.cache.put(d, results[i])
	}
	return contents, broken, nil
}

type aliasLink struct {
	path     string
	digest   digest.Digest
	modified time.Time
}

// aliasLinks are the links named by a non-canonical digest (sha512 names that
// berth's OCI layer writes for content stored under sha256). Distribution
// keeps content under sha256 only, so such a link's file says where the
// content really is.
func aliasLinks(rs *repoScan) []aliasLink {
	var out []aliasLink
	for _, l := range rs.revisions {
		if l.Digest.Algorithm() != digest.Canonical {
			out = append(out, aliasLink{repoPath(rs.name, "_manifests", "revisions", l.Digest.Algorithm().String(), l.Digest.Encoded(), "link"), l.Digest, l.Modified})
		}
	}
	for _, l := range rs.layers {
		if l.Digest.Algorithm() != digest.Canonical {
			out = append(out, aliasLink{repoPath(rs.name, "_layers", l.Digest.Algorithm().String(), l.Digest.Encoded(), "link"), l.Digest, l.Modified})
		}
	}
	return out
}

// assemble builds a Repository from its walk and the manifest contents.
func assemble(rs *repoScan, contents map[digest.Digest]parsed, broken map[digest.Digest]string) Repository {
	r := Repository{Name: rs.name, Layers: rs.layers, Aliases: rs.aliases}
	tagsOf := map[digest.Digest][]string{}
	for tag, d := range rs.tags {
		tagsOf[d] = append(tagsOf[d], tag)
	}
	linked := map[digest.Digest]bool{}
	add := func(d digest.Digest, modified time.Time) {
		m := Manifest{Digest: d, Linked: modified, Tags: tagsOf[d], TagIndex: rs.tagIndex[d], Broken: broken[d]}
		if p, ok := contents[d]; ok {
			m.MediaType, m.Blobs, m.Children, m.Subject = p.mediaType, p.blobs, p.children, p.subject
		}
		r.Manifests = append(r.Manifests, m)
	}
	for _, rev := range rs.revisions {
		linked[rev.Digest] = true
		add(rev.Digest, rev.Modified)
	}
	// A tag pointing at a manifest with no revision link cannot be pulled,
	// but its content (and what it refers to) stays until someone repairs
	// or deletes the tag: it is listed as a tagged manifest.
	for d := range tagsOf {
		if !linked[d] {
			add(d, time.Time{})
		}
	}
	for id, u := range rs.uploads {
		r.Uploads = append(r.Uploads, Upload{ID: id, Started: u.started})
	}
	return r
}
