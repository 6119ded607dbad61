package blobcache

import (
	"context"
	"errors"
	"testing"

	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

func desc(s string) v1.Descriptor {
	return v1.Descriptor{Digest: digest.FromString(s), Size: int64(len(s)), MediaType: "application/octet-stream"}
}

// After gc, no cache may claim a deleted blob exists — including services
// Distribution obtained before the flush.
func TestMemoryFlushForgetsEverything(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(0)
	d := desc("layer")
	scoped, err := m.RepositoryScoped("team/app")
	if err != nil {
		t.Fatal(err)
	}
	if err := scoped.SetDescriptor(ctx, d.Digest, d); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Stat(ctx, d.Digest); err != nil {
		t.Fatalf("global stat before flush: %v", err)
	}
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Stat(ctx, d.Digest); !errors.Is(err, distribution.ErrBlobUnknown) {
		t.Fatalf("global stat after flush: %v, want unknown", err)
	}
	if _, err := scoped.Stat(ctx, d.Digest); !errors.Is(err, distribution.ErrBlobUnknown) {
		t.Fatalf("scoped service held across the flush still answers: %v", err)
	}
}

func TestGatedStopsFillingWhilePaused(t *testing.T) {
	ctx := context.Background()
	paused := true
	m := NewMemory(0)
	g := Gated(m, func() bool { return paused })
	d := desc("fresh")
	scoped, _ := g.RepositoryScoped("team/app")
	_ = g.SetDescriptor(ctx, d.Digest, d)
	_ = scoped.SetDescriptor(ctx, d.Digest, d)
	if _, err := m.Stat(ctx, d.Digest); !errors.Is(err, distribution.ErrBlobUnknown) {
		t.Fatalf("cache filled while paused: %v", err)
	}
	paused = false
	_ = scoped.SetDescriptor(ctx, d.Digest, d)
	if _, err := g.Stat(ctx, d.Digest); err != nil {
		t.Fatalf("cache not filled after the pause: %v", err)
	}
}
