package workload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Transport is a fresh connection pool sized for the HEAD storm. Each
// measurement gets its own so no connection outlives the server process it
// was opened to. Proxies are ignored: all traffic stays on loopback.
func Transport() *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		DisableCompression:    true,
	}
}

// Ref parses host/repo:tag or host/repo@digest for a loopback registry.
func Ref(host, repo, tagOrDigest string) (name.Reference, error) {
	sep := ":"
	if strings.HasPrefix(tagOrDigest, "sha256:") {
		sep = "@"
	}
	return name.ParseReference(host+"/"+repo+sep+tagOrDigest, name.Insecure, name.StrictValidation)
}

// Pusher returns a go-containerregistry pusher over tr pushing jobs blobs
// at once (go-containerregistry's and docker's default is 4 and 5).
func Pusher(tr http.RoundTripper, jobs int) (*remote.Pusher, error) {
	return remote.NewPusher(remote.WithTransport(tr), remote.WithJobs(jobs))
}

// Item is one image to push.
type Item struct {
	Image remote.Taggable
	To    name.Reference
	// ManifestOnly PUTs just the manifest; its blobs must already exist.
	ManifestOnly bool
}

// PushAll pushes items with workers in parallel and stops at the first
// error.
func PushAll(ctx context.Context, p *remote.Pusher, items []Item, workers int) error {
	return parallel(ctx, len(items), workers, func(ctx context.Context, i int) error {
		it := items[i]
		var err error
		if it.ManifestOnly {
			err = p.Put(ctx, it.To, it.Image)
		} else {
			err = p.Push(ctx, it.To, it.Image)
		}
		if err != nil {
			return fmt.Errorf("push %s: %w", it.To, err)
		}
		return nil
	})
}

// parallel runs f(0..n-1) on at most workers goroutines; the first error
// cancels the rest and is returned.
func parallel(ctx context.Context, n, workers int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < max(1, min(workers, n)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(ctx, i); err != nil {
					cancel(err)
				}
			}
		}()
	}
feed:
	for i := 0; i < n; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// get fetches a registry API URL and returns the body and the next
// page's URL from the Link header.
func get(ctx context.Context, c *http.Client, u string) ([]byte, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, "", fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	next, err := nextLink(u, resp.Header.Get("Link"))
	if err != nil {
		return nil, "", fmt.Errorf("GET %s: %w", u, err)
	}
	return body, next, nil
}

// nextLink resolves a `Link: <url>; rel="next"` header against the request
// URL; "" when there is no next page.
func nextLink(base, header string) (string, error) {
	if header == "" {
		return "", nil
	}
	for _, part := range strings.Split(header, ",") {
		target, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.Contains(params, `rel="next"`) {
			continue
		}
		target = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(target), "<"), ">")
		b, err := url.Parse(base)
		if err != nil {
			return "", err
		}
		r, err := url.Parse(target)
		if err != nil {
			return "", fmt.Errorf("bad Link header %q: %w", header, err)
		}
		return b.ResolveReference(r).String(), nil
	}
	return "", nil
}
