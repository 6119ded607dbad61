package imagebuild

import (
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// WriteDockerArchive writes img as a `docker save`-style tarball tagged with
// every tag, which `docker load`, `k3d image import`, `kind load
// image-archive` and containerd's `ctr images import` all read.
func WriteDockerArchive(path string, img v1.Image, tags ...string) error {
	if len(tags) == 0 {
		return fmt.Errorf("write %s: at least one tag is needed", path)
	}
	refs := map[name.Reference]v1.Image{}
	for _, t := range tags {
		tag, err := name.NewTag(t)
		if err != nil {
			return fmt.Errorf("write %s: tag %q: %w", path, t, err)
		}
		refs[tag] = img
	}
	if err := tarball.MultiRefWriteToFile(path, refs); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteOCILayout writes img into an OCI image layout directory (created if
// missing), annotated with each tag as org.opencontainers.image.ref.name.
func WriteOCILayout(dir string, img v1.Image, tags ...string) error {
	p, err := layout.FromPath(dir)
	if err != nil {
		if _, statErr := os.Stat(dir); statErr == nil {
			return fmt.Errorf("OCI layout %s: exists but is not a layout: %w", dir, err)
		}
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return fmt.Errorf("OCI layout %s: %w", dir, err)
		}
	}
	if len(tags) == 0 {
		tags = []string{""}
	}
	for _, t := range tags {
		var opts []layout.Option
		if t != "" {
			opts = append(opts, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": t}))
		}
		if err := p.AppendImage(img, opts...); err != nil {
			return fmt.Errorf("OCI layout %s: append %s: %w", dir, t, err)
		}
	}
	return nil
}
