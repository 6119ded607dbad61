package workload

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// HeadTarget is the image a fleet of nodes resolves.
type HeadTarget struct {
	BaseURL, Repo, Tag string
	Manifest           v1.Hash
	Blobs              []v1.Hash
}

// HeadResult is one storm.
type HeadResult struct {
	Elapsed   time.Duration
	Latencies []time.Duration
}

// manifestAccept is what a container runtime sends when resolving a tag.
var manifestAccept = strings.Join([]string{
	string(types.OCIImageIndex), string(types.OCIManifestSchema1),
	string(types.DockerManifestList), string(types.DockerManifestSchema2),
}, ", ")

// HeadStorm has clients goroutines each resolve the tag and HEAD every blob
// iters times, as nodes pulling the same image do before they fetch, and
// checks every answer's digest. The request count is fixed, not the time,
// so the loop is bounded and every server does the same work.
func HeadStorm(ctx context.Context, t HeadTarget, clients, iters int) (HeadResult, error) {
	tr := Transport()
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: time.Minute}
	lat := make([][]time.Duration, clients)
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, iters*(1+len(t.Blobs)))
			for n := 0; n < iters; n++ {
				d, err := head(ctx, c, t.BaseURL+"/v2/"+t.Repo+"/manifests/"+t.Tag, manifestAccept, t.Manifest)
				if err != nil {
					errs <- err
					return
				}
				mine = append(mine, d)
				for _, b := range t.Blobs {
					d, err := head(ctx, c, t.BaseURL+"/v2/"+t.Repo+"/blobs/"+b.String(), "", b)
					if err != nil {
						errs <- err
						return
					}
					mine = append(mine, d)
				}
			}
			lat[i] = mine
		}()
	}
	wg.Wait()
	res := HeadResult{Elapsed: time.Since(start)}
	close(errs)
	if err := <-errs; err != nil {
		return res, err
	}
	for _, l := range lat {
		res.Latencies = append(res.Latencies, l...)
	}
	return res, nil
}

func head(ctx context.Context, c *http.Client, url, accept string, want v1.Hash) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
	if err != nil {
		return 0, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, fmt.Errorf("HEAD %s: %w", url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("HEAD %s: %s", url, resp.Status)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != want.String() {
		return 0, fmt.Errorf("HEAD %s: Docker-Content-Digest %q, want %s", url, got, want)
	}
	return d, nil
}
