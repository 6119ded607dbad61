// Package gc is berth's garbage collector: a mark phase that is a pure
// function of a storage listing, and I/O around it (listing the storage,
// deleting, coordinating the read-only lease, reporting).
package gc

import (
	"time"

	"github.com/opencontainers/go-digest"
)

// Listing is everything the mark phase needs to know about a storage.
type Listing struct {
	Repositories []Repository
	// Blobs is the global blob store.
	Blobs []Blob
}

// Repository is one repository's manifests, layer links and uploads.
type Repository struct {
	Name      string
	Manifests []Manifest
	// Layers are the repository's links into the blob store (_layers).
	Layers []Link
	// Uploads are unfinished upload sessions (_uploads).
	Uploads []Upload
	// Aliases are the revision and layer links under a non-canonical
	// algorithm, with their targets.
	Aliases []Link
}

// Manifest is a manifest revision linked into a repository.
type Manifest struct {
	Digest    digest.Digest
	MediaType string
	// Tags point at this manifest now (their current/link).
	Tags []string
	// TagIndex names the tags whose history index holds this revision; the
	// entries go when the manifest goes.
	TagIndex []string
	// Blobs are the config and layers (and an artifact's blobs).
	Blobs []digest.Digest
	// Children are the manifests of an index or manifest list.
	Children []digest.Digest
	// Subject is the manifest this one refers to (signatures, SBOMs).
	Subject digest.Digest
	// Linked is when the revision link was written: when it was pushed.
	Linked time.Time
	// Broken says why the content could not be used (missing or not a
	// manifest); such a manifest is kept and reported, never guessed at.
	Broken string
}

// Link is a repository's link to a blob.
type Link struct {
	Digest   digest.Digest
	Modified time.Time
	// Target is the content the link names when Digest is an alias (a
	// sha512 name of content stored under its sha256 digest); "" otherwise.
	Target digest.Digest
}

// Blob is a blob in the global store.
type Blob struct {
	Digest   digest.Digest `json:"digest"`
	Size     int64         `json:"size"`
	Modified time.Time     `json:"-"`
}

// Upload is an unfinished upload session.
type Upload struct {
	ID      string
	Started time.Time
}

// Policy is what the mark phase decides with.
type Policy struct {
	// DeleteUntagged also collects manifests no tag points at (unless
	// something live refers to them).
	DeleteUntagged bool
	// BlobGrace protects anything written less than this long ago: blobs
	// whose manifest has not been pushed yet, and, with DeleteUntagged,
	// manifests pushed by digest that are about to be tagged.
	BlobGrace time.Duration
	// UploadMaxAge purges upload sessions started longer ago; 0 keeps them.
	UploadMaxAge time.Duration
	// Now is the reference time for the ages above.
	Now time.Time
	// Keep forces manifests to stay live, by repository then digest. The
	// sweep uses it for manifests it failed to delete, so that their blobs
	// stay too.
	Keep map[string]map[digest.Digest]bool
}

// Plan is the mark phase's answer: what to delete.
type Plan struct {
	Manifests  []ManifestRef `json:"manifests"`
	LayerLinks []LinkRef     `json:"layerLinks"`
	Blobs      []Blob        `json:"blobs"`
	Uploads    []UploadRef   `json:"uploads"`
	// Bytes is the size of the blobs to delete.
	Bytes int64 `json:"bytes"`
	// Counts of what stays.
	ManifestsKept int `json:"manifestsKept"`
	BlobsKept     int `json:"blobsKept"`
	// Warnings are problems found in the storage that gc leaves alone.
	Warnings []string `json:"warnings,omitempty"`
}

// ManifestRef names a manifest to delete and the tag-history entries that go
// with it.
type ManifestRef struct {
	Repository string        `json:"repository"`
	Digest     digest.Digest `json:"digest"`
	MediaType  string        `json:"mediaType,omitempty"`
	// Subject is the manifest this one refers to; its entry in the
	// referrers index goes with it.
	Subject digest.Digest `json:"subject,omitempty"`
	// Tags are referrer tags (sha256-<hex>...) still pointing at it; they
	// are deleted with it.
	Tags     []string `json:"tags,omitempty"`
	TagIndex []string `json:"tagHistory,omitempty"`
}

// LinkRef names a repository's link to a blob.
type LinkRef struct {
	Repository string        `json:"repository"`
	Digest     digest.Digest `json:"digest"`
}

// UploadRef names an upload session.
type UploadRef struct {
	Repository string    `json:"repository"`
	ID         string    `json:"id"`
	Started    time.Time `json:"started"`
}
