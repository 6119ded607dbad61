package gc

import (
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// Content pushed under sha512 names is stored under sha256 with alias links.
// gc must never collect it: the alias manifest cannot be read by its name,
// so what it refers to is unknown.
func TestMarkKeepsContentBehindSha512Aliases(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	old := now.Add(-48 * time.Hour)
	sha512 := func(s string) digest.Digest {
		return digest.NewDigestFromEncoded(digest.SHA512, strings.Repeat(s, 128))
	}
	sha256 := func(s string) digest.Digest {
		return digest.NewDigestFromEncoded(digest.SHA256, strings.Repeat(s, 64))
	}
	manifest512, manifest256 := sha512("a"), sha256("a")
	layer512, layer256 := sha512("b"), sha256("b")
	garbage := sha256("c")
	l := &Listing{
		Repositories: []Repository{{
			Name: "sha512/app",
			Manifests: []Manifest{
				{Digest: manifest512, Linked: old, Tags: []string{"v1"}, Broken: "content not found under its alias"},
				{Digest: manifest256, Linked: old, Blobs: nil},
			},
			Layers:  []Link{{Digest: layer512, Modified: old}},
			Aliases: []Link{{Digest: manifest512, Modified: old, Target: manifest256}, {Digest: layer512, Modified: old, Target: layer256}},
		}},
		Blobs: []Blob{{Digest: manifest256, Size: 10, Modified: old}, {Digest: layer256, Size: 100, Modified: old}, {Digest: garbage, Size: 1, Modified: old}},
	}
	plan := Mark(l, Policy{DeleteUntagged: true, Now: now})
	if len(plan.Manifests) != 0 {
		t.Errorf("manifests planned for deletion: %+v", plan.Manifests)
	}
	if len(plan.LayerLinks) != 0 {
		t.Errorf("alias layer links planned for deletion: %+v", plan.LayerLinks)
	}
	if len(plan.Blobs) != 1 || plan.Blobs[0].Digest != garbage {
		t.Errorf("blobs planned: %+v, want only the unreferenced one", plan.Blobs)
	}
}
