// Package workload drives registries the way their users do, through
// go-containerregistry and plain HTTP on loopback, and times it.
package workload

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strconv"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image builds an OCI image whose layers hold random bytes of the given
// sizes, determined by seed: every server gets byte-identical images, and
// different seeds never share a blob.
//
// Layers are the random bytes themselves, not gzip of a tarball, so the
// client spends no CPU compressing during a timed push (the registry never
// looks inside a layer). All digests are computed here, before any timing.
func Image(seed uint64, sizes []int64) (v1.Image, error) {
	layers := make([]v1.Layer, len(sizes))
	for i, n := range sizes {
		if n <= 0 {
			return nil, fmt.Errorf("image %d: layer %d has size %d", seed, i, n)
		}
		layers[i] = static.NewLayer(randomBytes(seed, uint64(i), n), types.OCILayer)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		return nil, fmt.Errorf("image %d: %w", seed, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %d: %w", seed, err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Labels = map[string]string{"org.berth.bench.seed": strconv.FormatUint(seed, 10)}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("image %d: %w", seed, err)
	}
	if _, err := img.Digest(); err != nil {
		return nil, fmt.Errorf("image %d: %w", seed, err)
	}
	return img, nil
}

// Tagged returns img's manifest with an annotation naming tag, so that each
// tag gets its own manifest digest while sharing img's blobs.
func Tagged(img v1.Image, tag string) (v1.Image, error) {
	out, ok := mutate.Annotations(img, map[string]string{"org.berth.bench.tag": tag}).(v1.Image)
	if !ok {
		return nil, fmt.Errorf("annotate %s: not an image", tag)
	}
	return out, nil
}

// TotalSize is the number of bytes a push or pull of img moves: config and
// layers (the manifest is noise next to them).
func TotalSize(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	total := m.Config.Size
	for _, l := range m.Layers {
		total += l.Size
	}
	return total, nil
}

// Blobs lists the digests of img's config and layers.
func Blobs(img v1.Image) ([]v1.Hash, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	out := []v1.Hash{m.Config.Digest}
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out, nil
}

func randomBytes(seed, stream uint64, n int64) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[0:], seed)
	binary.LittleEndian.PutUint64(key[8:], stream)
	copy(key[16:], "berth-bench-data")
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b) // never fails
	return b
}
