package workload

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Pull fetches ref's manifest, config and every layer (jobs layers at once)
// and returns the bytes read. go-containerregistry verifies each layer's
// digest as it reads, so a server returning wrong bytes fails the pull.
func Pull(ctx context.Context, tr http.RoundTripper, ref name.Reference, jobs int) (int64, error) {
	p, err := remote.NewPuller(remote.WithTransport(tr))
	if err != nil {
		return 0, err
	}
	desc, err := p.Get(ctx, ref)
	if err != nil {
		return 0, fmt.Errorf("pull %s: %w", ref, err)
	}
	img, err := desc.Image()
	if err != nil {
		return 0, fmt.Errorf("pull %s: %w", ref, err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return 0, fmt.Errorf("pull %s: config: %w", ref, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return 0, fmt.Errorf("pull %s: %w", ref, err)
	}
	var total atomic.Int64
	total.Add(int64(len(cfg)))
	err = parallel(ctx, len(layers), jobs, func(ctx context.Context, i int) error {
		rc, err := layers[i].Compressed()
		if err != nil {
			return fmt.Errorf("pull %s: layer %d: %w", ref, i, err)
		}
		defer rc.Close()
		n, err := io.Copy(io.Discard, rc)
		if err != nil {
			return fmt.Errorf("pull %s: layer %d: %w", ref, i, err)
		}
		total.Add(n)
		return nil
	})
	return total.Load(), err
}
