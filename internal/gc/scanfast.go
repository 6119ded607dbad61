package gc

import (
	"context"
	"fmt"
	"path"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

// Drivers without a native Walk (filesystem, inmemory) walk by listing every
// directory and stat-ing every entry, three calls per link or blob. Knowing
// the layout, gc lists only the directories that name digests and stats
// only the files whose time or size it needs: one call per entry. Object
// stores keep Walk, where one paginated listing returns everything and a
// stat per object would cost a request each.
func listsCheaply(d storagedriver.StorageDriver) bool {
	switch d.Name() {
	case "filesystem", "inmemory":
		return true
	}
	return false
}

// listOrEmpty lists dir; a missing dir is empty.
func (s *scanner) listOrEmpty(ctx context.Context, dir string) ([]string, error) {
	entries, err := s.d.List(ctx, dir)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	return entries, nil
}

// digestDirs lists <base>/<alg>/<hex> directories as digests.
func (s *scanner) digestDirs(ctx context.Context, base string) ([]digest.Digest, error) {
	algs, err := s.listOrEmpty(ctx, base)
	if err != nil {
		return nil, err
	}
	var out []digest.Digest
	for _, a := range algs {
		hexes, err := s.listOrEmpty(ctx, a)
		if err != nil {
			return nil, err
		}
		for _, h := range hexes {
			if d, ok := digestFromParts(path.Base(a), path.Base(h)); ok {
				out = append(out, d)
			}
		}
	}
	return out, nil
}

// links lists <base>/<alg>/<hex>/link with the link's modification time.
// A directory without its link (a deletion cut short) is skipped, as
// Distribution itself treats it as absent.
func (s *scanner) links(ctx context.Context, base string) ([]Link, error) {
	ds, err := s.digestDirs(ctx, base)
	if err != nil {
		return nil, err
	}
	var out []Link
	for _, d := range ds {
		p := path.Join(base, d.Algorithm().String(), d.Encoded(), "link")
		fi, err := s.d.Stat(ctx, p)
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("stat %s: %w", p, err)
		}
		out = append(out, Link{Digest: d, Modified: fi.ModTime()})
	}
	return out, nil
}

func (s *scanner) listRepositoryCheaply(ctx context.Context, rs *repoScan) error {
	var err error
	if rs.revisions, err = s.links(ctx, repoPath(rs.name, "_manifests", "revisions")); err != nil {
		return err
	}
	if rs.layers, err = s.links(ctx, repoPath(rs.name, "_layers")); err != nil {
		return err
	}
	tags, err := s.listOrEmpty(ctx, repoPath(rs.name, "_manifests", "tags"))
	if err != nil {
		return err
	}
	for _, t := range tags {
		tag := path.Base(t)
		rs.tagLinks = append(rs.tagLinks, tag)
		history, err := s.digestDirs(ctx, path.Join(t, "index"))
		if err != nil {
			return err
		}
		for _, d := range history {
			rs.tagIndex[d] = append(rs.tagIndex[d], tag)
		}
	}
	return nil
}

func (s *scanner) listBlobsCheaply(ctx context.Context, prefix string) ([]Blob, error) {
	alg := path.Base(path.Dir(prefix))
	hexes, err := s.listOrEmpty(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var out []Blob
	for _, h := range hexes {
		d, ok := digestFromParts(alg, path.Base(h))
		if !ok {
			continue
		}
		fi, err := s.d.Stat(ctx, path.Join(h, "data"))
		if err != nil {
			if isNotFound(err) {
				continue // a blob directory without data is not a blob
			}
			return nil, fmt.Errorf("stat blob %s: %w", d, err)
		}
		out = append(out, Blob{Digest: d, Size: fi.Size(), Modified: fi.ModTime()})
	}
	return out, nil
}
