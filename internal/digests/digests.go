// Package digests completes Distribution's support for digest algorithms
// other than its canonical sha256 (in practice sha512, which OCI 1.1
// clients may push with).
//
// Distribution stores every blob and manifest under its sha256 digest and
// lets a repository name it by another digest through an alias link:
// `_layers/sha512/<hex>/link` or `_manifests/revisions/sha512/<hex>/link`
// containing "sha256:<hex>". Its own upload path writes such aliases, but it
// answers with the sha256 digest, corrupts the link when mounting by
// sha512, cannot store a manifest pushed by sha512 at all, and leaves the
// other names behind when one is deleted. Berth's HTTP layer fixes those
// cases with the storage helpers here. The layout stays Distribution's, so
// data written by plain Distribution needs no migration.
package digests

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	// go-digest can only parse and verify sha384/sha512 once the hash is
	// linked in.
	_ "crypto/sha512"

	"github.com/distribution/distribution/v3/registry/storage/cache"
	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

const (
	v2Root    = "/docker/registry/v2"
	reposRoot = v2Root + "/repositories"
)

// Kind says which link set of a repository a digest lives in.
type Kind int

const (
	// Blob links are a repository's layers and configs (_layers).
	Blob Kind = iota
	// Manifest links are a repository's manifest revisions (_manifests/revisions).
	Manifest
)

func (k Kind) String() string {
	if k == Manifest {
		return "manifest"
	}
	return "blob"
}

// IsAlias reports whether Distribution can only store content named by d
// through an alias link.
func IsAlias(d digest.Digest) bool { return d.Algorithm() != digest.Canonical }

// aliasAlgorithms are the algorithms go-digest accepts besides the canonical one.
var aliasAlgorithms = []digest.Algorithm{digest.SHA384, digest.SHA512}

func linkRoot(repo string, k Kind) string {
	if k == Manifest {
		return path.Join(reposRoot, repo, "_manifests/revisions")
	}
	return path.Join(reposRoot, repo, "_layers")
}

// LinkPath is where repo's link for d is stored.
func LinkPath(repo string, k Kind, d digest.Digest) string {
	return path.Join(linkRoot(repo, k), d.Algorithm().String(), d.Encoded(), "link")
}

// DataPath is where the content named by a canonical digest is stored.
func DataPath(d digest.Digest) string {
	return path.Join(v2Root, "blobs", d.Algorithm().String(), d.Encoded()[:2], d.Encoded(), "data")
}

// IsNotFound reports a storage path that does not exist.
func IsNotFound(err error) bool {
	var nf driver.PathNotFoundError
	return errors.As(err, &nf)
}

// Resolve returns the digest repo's link for d points at: d itself for
// canonical content, the canonical digest for an alias. ok is false when
// the repository has no such link.
func Resolve(ctx context.Context, drv driver.StorageDriver, repo string, k Kind, d digest.Digest) (target digest.Digest, ok bool, err error) {
	p := LinkPath(repo, k, d)
	b, err := drv.GetContent(ctx, p)
	if err != nil {
		if IsNotFound(err) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("read %s link %s in %s: %w", k, d, repo, err)
	}
	target, err = digest.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return "", false, fmt.Errorf("%s link %s in %s: %w", k, d, repo, err)
	}
	return target, true, nil
}

// WriteAlias links alias to canonical content in repo, the way
// Distribution's own upload path writes aliases.
func WriteAlias(ctx context.Context, drv driver.StorageDriver, repo string, k Kind, alias, canonical digest.Digest) error {
	if err := drv.PutContent(ctx, LinkPath(repo, k, alias), []byte(canonical)); err != nil {
		return fmt.Errorf("link %s %s to %s in %s: %w", k, alias, canonical, repo, err)
	}
	return nil
}

// Unlinker removes links and the cached descriptors that would otherwise
// keep answering for them: Distribution's repository-scoped cache is read
// before the link.
type Unlinker struct {
	Driver driver.StorageDriver
	// Cache is the blob-descriptor cache Distribution uses (nil: none).
	Cache cache.BlobDescriptorCacheProvider
}

// Unlink deletes repo's link for d; a missing link is not an error.
func (u Unlinker) Unlink(ctx context.Context, repo string, k Kind, d digest.Digest) error {
	if err := u.Driver.Delete(ctx, path.Dir(LinkPath(repo, k, d))); err != nil && !IsNotFound(err) {
		return fmt.Errorf("unlink %s %s in %s: %w", k, d, repo, err)
	}
	if u.Cache != nil {
		svc, err := u.Cache.RepositoryScoped(repo)
		if err != nil {
			return fmt.Errorf("blob descriptor cache for %s: %w", repo, err)
		}
		// A cache that cannot be cleared has nothing for d or is down; both
		// leave storage as the answer.
		_ = svc.Clear(ctx, d)
	}
	return nil
}

// ManifestNames are every digest the manifest content can be named by,
// canonical first.
func ManifestNames(content []byte) []digest.Digest {
	out := []digest.Digest{digest.Canonical.FromBytes(content)}
	for _, a := range aliasAlgorithms {
		if a.Available() {
			out = append(out, a.FromBytes(content))
		}
	}
	return out
}

// UnlinkManifestAliases removes every alias of a manifest (whose content is
// given) that points at canonical in repo. The canonical revision link is
// Distribution's to delete.
func (u Unlinker) UnlinkManifestAliases(ctx context.Context, repo string, canonical digest.Digest, content []byte) error {
	for _, d := range ManifestNames(content)[1:] {
		target, ok, err := Resolve(ctx, u.Driver, repo, Manifest, d)
		if err != nil {
			return err
		}
		if ok && target == canonical {
			if err := u.Unlink(ctx, repo, Manifest, d); err != nil {
				return err
			}
		}
	}
	return nil
}

// BlobAliases lists repo's blob aliases that point at canonical. Hashing
// the blob to find its other names would mean reading all of it, so the
// alias directories are listed instead; they exist only in repositories
// that were pushed to with another algorithm.
func BlobAliases(ctx context.Context, drv driver.StorageDriver, repo string, canonical digest.Digest) ([]digest.Digest, error) {
	var out []digest.Digest
	for _, a := range aliasAlgorithms {
		dir := path.Join(linkRoot(repo, Blob), a.String())
		entries, err := drv.List(ctx, dir)
		if err != nil {
			if IsNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("list %s: %w", dir, err)
		}
		for _, e := range entries {
			d := digest.NewDigestFromEncoded(a, path.Base(e))
			if d.Validate() != nil {
				continue
			}
			target, ok, err := Resolve(ctx, drv, repo, Blob, d)
			if err != nil {
				return nil, err
			}
			if ok && target == canonical {
				out = append(out, d)
			}
		}
	}
	return out, nil
}
