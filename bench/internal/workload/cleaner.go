package workload

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// listPage is how many entries a listing asks for per page.
const listPage = 1000

// Catalog lists every repository, following Link pages.
func Catalog(ctx context.Context, c *http.Client, base string) ([]string, error) {
	var out []string
	u := fmt.Sprintf("%s/v2/_catalog?n=%d", base, listPage)
	for pages := 0; u != ""; pages++ {
		if pages > 100000 {
			return nil, fmt.Errorf("catalog: more than %d pages", pages)
		}
		body, next, err := get(ctx, c, u)
		if err != nil {
			return nil, fmt.Errorf("catalog: %w", err)
		}
		var page struct {
			Repositories []string `json:"repositories"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return nil, fmt.Errorf("catalog: %w", err)
		}
		out, u = append(out, page.Repositories...), next
	}
	return out, nil
}

// Tags lists a repository's tags, following Link pages.
func Tags(ctx context.Context, c *http.Client, base, repo string) ([]string, error) {
	var out []string
	u := fmt.Sprintf("%s/v2/%s/tags/list?n=%d", base, repo, listPage)
	for pages := 0; u != ""; pages++ {
		if pages > 100000 {
			return nil, fmt.Errorf("tags of %s: more than %d pages", repo, pages)
		}
		body, next, err := get(ctx, c, u)
		if err != nil {
			return nil, fmt.Errorf("tags of %s: %w", repo, err)
		}
		var page struct {
			Tags []string `json:"tags"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return nil, fmt.Errorf("tags of %s: %w", repo, err)
		}
		out, u = append(out, page.Tags...), next
	}
	return out, nil
}

// SequentialClean is the baseline berth prune is measured against: the
// seed's cleaner, redone in Go. One request at a time it lists the
// repositories and their tags, keeps the keep last tags by name, resolves
// each other tag to its digest with HEAD and deletes the manifest by digest
// (which takes every tag on that digest with it; here each tag has its own).
//
// Ordering by name is the baseline's only liberty: it costs no request,
// where finding real push times would cost a manifest and config fetch per
// tag, so the baseline is if anything flattered.
func SequentialClean(ctx context.Context, base string, keep int) (deleted int, err error) {
	tr := Transport()
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: time.Minute}
	repos, err := Catalog(ctx, c, base)
	if err != nil {
		return 0, err
	}
	for _, repo := range repos {
		tags, err := Tags(ctx, c, base, repo)
		if err != nil {
			return deleted, err
		}
		if len(tags) <= keep {
			continue
		}
		slices.Sort(tags)
		for _, tag := range tags[:len(tags)-keep] {
			digest, err := resolve(ctx, c, base, repo, tag)
			if err != nil {
				return deleted, err
			}
			if err := deleteManifest(ctx, c, base, repo, digest); err != nil {
				return deleted, err
			}
			deleted++
		}
	}
	return deleted, nil
}

func resolve(ctx context.Context, c *http.Client, base, repo, tag string) (string, error) {
	u := fmt.Sprintf("%s/v2/%s/manifests/%s", base, repo, url.PathEscape(tag))
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("resolve %s:%s: %w", repo, tag, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	d := resp.Header.Get("Docker-Content-Digest")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(d, "sha256:") {
		return "", fmt.Errorf("resolve %s:%s: %s, digest %q", repo, tag, resp.Status, d)
	}
	return d, nil
}

func deleteManifest(ctx context.Context, c *http.Client, base, repo, digest string) error {
	u := fmt.Sprintf("%s/v2/%s/manifests/%s", base, repo, digest)
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("delete %s@%s: %w", repo, digest, err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("delete %s@%s: %s: %s", repo, digest, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// CheckKept verifies a prune result: every repository has exactly keep
// tags left. Which ones is the prune tests' business; push times of tags
// pushed within one clock tick tie, so the exact set may legitimately
// differ between a push-time ranking and the baseline's name order.
func CheckKept(ctx context.Context, base string, repos, tags, keep int) error {
	tr := Transport()
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: time.Minute}
	want := min(keep, tags)
	for r := 0; r < repos; r++ {
		repo := PruneRepo(r)
		got, err := Tags(ctx, c, base, repo)
		if err != nil {
			return err
		}
		if len(got) != want {
			slices.Sort(got)
			return fmt.Errorf("%s: %d tags left %v, want %d", repo, len(got), abbreviate(got), want)
		}
	}
	return nil
}

func abbreviate(s []string) []string {
	if len(s) <= 6 {
		return s
	}
	return append(append(slices.Clip(s[:3]), "…"), s[len(s)-2:]...)
}
