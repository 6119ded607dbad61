// Package gcbench builds storages for gc benchmarks: it seeds images into a
// filesystem root through Distribution's own storage code (the on-disk
// result is what a push over HTTP leaves, without the HTTP cost), copies
// storages so that two collectors can run on identical data (another root,
// or an S3 bucket through the storage driver), and writes the configuration
// upstream's `registry garbage-collect` needs.
package gcbench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/manifest/ocischema"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // the driver Seed uses
	"github.com/distribution/reference"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// SeedOptions shape the seeded storage; zero values take the defaults.
type SeedOptions struct {
	// Images is the number of image manifests (default 1000).
	Images int
	// Repositories spreads the images (default 50).
	Repositories int
	// LayersPerImage unique layers per image, on top of one base layer
	// shared by every image of a repository (default 2).
	LayersPerImage int
	// LayerSize in bytes (default 4096).
	LayerSize int
	// UntaggedEvery: every k-th image of a repository is pushed by digest
	// only (the first one included), so that --delete-untagged has work
	// (default 4; negative means none).
	UntaggedEvery int
	// Seed makes the content reproducible.
	Seed uint64
	// Concurrency of the seeding (default 8).
	Concurrency int
}

func (o SeedOptions) withDefaults() SeedOptions {
	if o.Images == 0 {
		o.Images = 1000
	}
	if o.Repositories == 0 {
		o.Repositories = 50
	}
	if o.LayersPerImage == 0 {
		o.LayersPerImage = 2
	}
	if o.LayerSize == 0 {
		o.LayerSize = 4096
	}
	if o.UntaggedEvery == 0 {
		o.UntaggedEvery = 4
	}
	if o.Concurrency == 0 {
		o.Concurrency = 8
	}
	return o
}

// Seeded says what Seed wrote.
type Seeded struct {
	Tagged, Untagged int
}

// Seed writes images into the filesystem storage at root.
func Seed(ctx context.Context, root string, o SeedOptions) (*Seeded, error) {
	o = o.withDefaults()
	d, err := factory.Create(ctx, "filesystem", map[string]any{"rootdirectory": root})
	if err != nil {
		return nil, fmt.Errorf("open storage %s: %w", root, err)
	}
	reg, err := storage.NewRegistry(ctx, d, storage.EnableDelete)
	if err != nil {
		return nil, fmt.Errorf("open registry on %s: %w", root, err)
	}
	res := make([]Seeded, o.Repositories)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.Concurrency)
	for r := range o.Repositories {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(o.Seed, uint64(r)))
			name, err := reference.WithName(fmt.Sprintf("bench/repo-%03d", r))
			if err != nil {
				return err
			}
			repo, err := reg.Repository(gctx, name)
			if err != nil {
				return err
			}
			base, err := putRandom(gctx, repo, rng, v1.MediaTypeImageLayerGzip, o.LayerSize)
			if err != nil {
				return fmt.Errorf("seed %s: %w", name, err)
			}
			for i := r; i < o.Images; i += o.Repositories {
				// Counted within the repository, so that every repository
				// holds both kinds: upstream's gc mishandles a repository
				// without any tag (it deletes the blobs of its manifests
				// but keeps their revision links), which is not what is
				// being measured.
				untagged := o.UntaggedEvery > 0 && (i/o.Repositories)%o.UntaggedEvery == 0
				tag := ""
				if !untagged {
					tag = fmt.Sprintf("v%d", i/o.Repositories)
				}
				if err := pushImage(gctx, repo, rng, base, o, tag); err != nil {
					return fmt.Errorf("seed %s image %d: %w", name, i, err)
				}
				if untagged {
					res[r].Untagged++
				} else {
					res[r].Tagged++
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var total Seeded
	for _, s := range res {
		total.Tagged += s.Tagged
		total.Untagged += s.Untagged
	}
	return &total, nil
}

func putRandom(ctx context.Context, repo distribution.Repository, rng *rand.Rand, mediaType string, size int) (v1.Descriptor, error) {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	desc, err := repo.Blobs(ctx).Put(ctx, mediaType, b)
	if err != nil {
		return v1.Descriptor{}, err
	}
	desc.MediaType = mediaType
	return desc, nil
}

func pushImage(ctx context.Context, repo distribution.Repository, rng *rand.Rand, base v1.Descriptor, o SeedOptions, tag string) error {
	cfg, err := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Labels": map[string]string{"nonce": fmt.Sprint(rng.Uint64())}}})
	if err != nil {
		return err
	}
	cdesc, err := repo.Blobs(ctx).Put(ctx, v1.MediaTypeImageConfig, cfg)
	if err != nil {
		return err
	}
	cdesc.MediaType = v1.MediaTypeImageConfig
	layers := []v1.Descriptor{base}
	for range o.LayersPerImage {
		l, err := putRandom(ctx, repo, rng, v1.MediaTypeImageLayerGzip, o.LayerSize)
		if err != nil {
			return err
		}
		layers = append(layers, l)
	}
	m, err := ocischema.FromStruct(ocischema.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageManifest,
		Config:    cdesc,
		Layers:    layers,
	})
	if err != nil {
		return err
	}
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return err
	}
	dg, err := ms.Put(ctx, m)
	if err != nil || tag == "" {
		return err
	}
	// As the manifest PUT handler does: the tag is linked after the manifest.
	return repo.Tags(ctx).Tag(ctx, tag, v1.Descriptor{Digest: dg})
}

// CopyTree copies a storage root, so that two collectors start from
// identical data. Modification times are kept: grace periods depend on them.
func CopyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := e.Info()
		if err != nil {
			return err
		}
		if e.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if err := copyFile(p, target); err != nil {
			return err
		}
		return os.Chtimes(target, info.ModTime(), info.ModTime())
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Upload copies the storage at root into d, file by file with PutContent:
// the driver maps each path to its object exactly as when the registry
// writes it, so the result is the layout a push leaves (object times are
// the upload's). It returns the number of objects written.
func Upload(ctx context.Context, root string, d storagedriver.StorageDriver, concurrency int) (int, error) {
	files, err := Files(root)
	if err != nil {
		return 0, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for _, f := range files {
		g.Go(func() error {
			b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
			if err != nil {
				return err
			}
			if err := d.PutContent(gctx, "/"+f, b); err != nil {
				return fmt.Errorf("upload %s: %w", f, err)
			}
			return nil
		})
	}
	return len(files), g.Wait()
}

// Keys lists a storage's files through its driver, as Files does for a
// root: relative, sorted, without upload sessions and berth's beacons.
func Keys(ctx context.Context, d storagedriver.StorageDriver) ([]string, error) {
	var out []string
	err := d.Walk(ctx, "/", func(fi storagedriver.FileInfo) error {
		if fi.IsDir() {
			if n := path.Base(fi.Path()); n == "_uploads" || n == "berth" {
				return storagedriver.ErrSkipDir
			}
			return nil
		}
		out = append(out, strings.TrimPrefix(fi.Path(), "/"))
		return nil
	})
	slices.Sort(out)
	return out, err
}

// UpstreamConfigStorage is a registry configuration for `registry
// garbage-collect` with the given top-level `storage:` section.
func UpstreamConfigStorage(storageSection string) []byte {
	return fmt.Appendf(nil, "version: 0.1\nlog:\n  level: error\n%shttp:\n  addr: 127.0.0.1:0\n", storageSection)
}

// UpstreamConfig is a registry configuration for `registry garbage-collect`
// on the filesystem storage at root.
func UpstreamConfig(root string) []byte {
	return fmt.Appendf(nil, `version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: 127.0.0.1:0
`, root)
}

// Files lists the files of a storage root relative to it, leaving out
// upload sessions and berth's own beacons; two collectors that agree leave
// the same files behind.
func Files(root string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			if n := e.Name(); n == "_uploads" || n == "berth" {
				return filepath.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	return out, err
}

// RunUpstream runs `registry garbage-collect` from Distribution and returns
// its wall time. OpenTelemetry export is turned off as upstream's docs say.
func RunUpstream(ctx context.Context, bin, configPath string, deleteUntagged bool) (time.Duration, error) {
	args := []string{"garbage-collect"}
	if deleteUntagged {
		args = append(args, "--delete-untagged")
	}
	args = append(args, configPath)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("%s %v: %w: %s", bin, args, err, stderr.String())
	}
	return took, nil
}
