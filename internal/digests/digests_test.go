package digests

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/cache/memory"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestSHA512IsUsable(t *testing.T) {
	d := digest.SHA512.FromString("x")
	if _, err := digest.Parse(d.String()); err != nil {
		t.Fatalf("sha512 digests do not parse: %v", err)
	}
	if !IsAlias(d) || IsAlias(digest.FromString("x")) {
		t.Fatal("IsAlias: sha512 is an alias, sha256 is not")
	}
}

func TestPathsAreDistributions(t *testing.T) {
	d := digest.Digest("sha512:ab" + strings.Repeat("c", 126))
	if got, want := LinkPath("a/b", Blob, d), "/docker/registry/v2/repositories/a/b/_layers/sha512/ab"+strings.Repeat("c", 126)+"/link"; got != want {
		t.Errorf("blob link path\n got %s\nwant %s", got, want)
	}
	if got, want := LinkPath("a/b", Manifest, d), "/docker/registry/v2/repositories/a/b/_manifests/revisions/sha512/ab"+strings.Repeat("c", 126)+"/link"; got != want {
		t.Errorf("manifest link path\n got %s\nwant %s", got, want)
	}
	c := digest.FromString("x")
	if got, want := DataPath(c), "/docker/registry/v2/blobs/sha256/"+c.Encoded()[:2]+"/"+c.Encoded()+"/data"; got != want {
		t.Errorf("data path\n got %s\nwant %s", got, want)
	}
}

func TestAliasesResolveAndGoAway(t *testing.T) {
	ctx := context.Background()
	drv := inmemory.New()
	content := []byte("blob content")
	canonical := digest.FromBytes(content)
	alias := digest.SHA512.FromBytes(content)
	other := digest.SHA512.FromString("another blob")

	if _, ok, err := Resolve(ctx, drv, "app", Blob, alias); ok || err != nil {
		t.Fatalf("resolve before linking: ok=%v err=%v", ok, err)
	}
	for _, d := range []digest.Digest{alias, canonical} {
		if err := WriteAlias(ctx, drv, "app", Blob, d, canonical); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteAlias(ctx, drv, "app", Blob, other, digest.FromString("another blob")); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := Resolve(ctx, drv, "app", Blob, alias); !ok || err != nil || got != canonical {
		t.Fatalf("resolve alias: %s ok=%v err=%v", got, ok, err)
	}
	names, err := BlobAliases(ctx, drv, "app", canonical)
	if err != nil || !slices.Equal(names, []digest.Digest{alias}) {
		t.Fatalf("blob aliases of %s: %v, %v", canonical, names, err)
	}

	// Distribution's repository-scoped cache answers before the link is
	// read: unlinking must clear it.
	provider := memory.NewInMemoryBlobDescriptorCacheProvider(100)
	scoped, err := provider.RepositoryScoped("app")
	if err != nil {
		t.Fatal(err)
	}
	desc := v1.Descriptor{Digest: canonical, Size: int64(len(content)), MediaType: "application/octet-stream"}
	if err := scoped.SetDescriptor(ctx, alias, desc); err != nil {
		t.Fatal(err)
	}
	u := Unlinker{Driver: drv, Cache: provider}
	if err := u.Unlink(ctx, "app", Blob, alias); err != nil {
		t.Fatal(err)
	}
	if err := u.Unlink(ctx, "app", Blob, alias); err != nil {
		t.Fatalf("unlinking twice: %v", err)
	}
	if _, ok, _ := Resolve(ctx, drv, "app", Blob, alias); ok {
		t.Fatal("alias link still there")
	}
	if _, err := scoped.Stat(ctx, alias); err == nil {
		t.Fatal("cache still answers for the unlinked alias")
	}
	if _, ok, _ := Resolve(ctx, drv, "app", Blob, other); !ok {
		t.Fatal("unlinking one alias removed another")
	}
}

func TestManifestAliases(t *testing.T) {
	ctx := context.Background()
	drv := inmemory.New()
	content := []byte(`{"schemaVersion":2}`)
	names := ManifestNames(content)
	if len(names) != 3 || names[0] != digest.FromBytes(content) || names[2] != digest.SHA512.FromBytes(content) {
		t.Fatalf("manifest names: %v", names)
	}
	canonical, alias := names[0], names[2]
	for _, d := range []digest.Digest{canonical, alias} {
		if err := WriteAlias(ctx, drv, "app", Manifest, d, canonical); err != nil {
			t.Fatal(err)
		}
	}
	// An alias in another repository is that repository's.
	if err := WriteAlias(ctx, drv, "other", Manifest, alias, canonical); err != nil {
		t.Fatal(err)
	}
	u := Unlinker{Driver: drv}
	if err := u.UnlinkManifestAliases(ctx, "app", canonical, content); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := Resolve(ctx, drv, "app", Manifest, alias); ok {
		t.Fatal("alias still linked")
	}
	if _, ok, _ := Resolve(ctx, drv, "app", Manifest, canonical); !ok {
		t.Fatal("the canonical revision is Distribution's to delete")
	}
	if _, ok, _ := Resolve(ctx, drv, "other", Manifest, alias); !ok {
		t.Fatal("another repository's alias went")
	}
}
