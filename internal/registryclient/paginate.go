package registryclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// DefaultPageSize matches Distribution's default catalog and tag limits.
const DefaultPageSize = 1000

// maxPageBody bounds one page; 1000 entries of the longest legal names fit.
const maxPageBody = 64 << 20

// PageFunc consumes one page body and returns how many entries it held and
// the last one, which is the `last` cursor when the server sends no Link.
type PageFunc func(body []byte) (count int, last string, err error)

// Paginate GETs path (with n=pageSize) and every following page. It follows
// the Link rel="next" header when present, else continues with n/last while
// pages come back full, so it works with registries that implement either.
func (c *Client) Paginate(ctx context.Context, scope, path string, pageSize int, each PageFunc) error {
	if pageSize <= 0 {
		pageSize = DefaultPageSize
	}
	q := url.Values{"n": {strconv.Itoa(pageSize)}}
	next := c.endpoint(path, q)
	seen := map[string]bool{}
	for next != "" {
		if seen[next] {
			return fmt.Errorf("list %s: the registry's pagination loops at %s", path, next)
		}
		seen[next] = true
		resp, err := c.do(ctx, scope, http.MethodGet, next, http.Header{"Accept": {"application/json"}})
		if err != nil {
			return err
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxPageBody))
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", next, err)
		}
		count, last, err := each(body)
		if err != nil {
			return fmt.Errorf("decode %s: %w", next, err)
		}
		link, err := nextLink(resp, next)
		if err != nil {
			return err
		}
		switch {
		case link != "":
			next = link
		case count >= pageSize && last != "":
			q.Set("last", last)
			next = c.endpoint(path, q)
		default:
			next = ""
		}
	}
	return nil
}

// nextLink resolves `Link: </v2/_catalog?last=x&n=2>; rel="next"` against
// the request URL.
func nextLink(resp *http.Response, reqURL string) (string, error) {
	for _, h := range resp.Header.Values("Link") {
		for _, part := range strings.Split(h, ",") {
			target, params, ok := strings.Cut(strings.TrimSpace(part), ";")
			if !ok || !isNextRel(params) {
				continue
			}
			target = strings.TrimSpace(target)
			if !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") {
				return "", fmt.Errorf("malformed Link header %q", h)
			}
			ref, err := url.Parse(target[1 : len(target)-1])
			if err != nil {
				return "", fmt.Errorf("malformed Link header %q: %w", h, err)
			}
			base, err := url.Parse(reqURL)
			if err != nil {
				return "", err
			}
			return base.ResolveReference(ref).String(), nil
		}
	}
	return "", nil
}

func isNextRel(params string) bool {
	for _, p := range strings.Split(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(strings.TrimSpace(k), "rel") {
			for _, rel := range strings.Fields(strings.Trim(strings.TrimSpace(v), `"`)) {
				if strings.EqualFold(rel, "next") {
					return true
				}
			}
		}
	}
	return false
}

// Catalog lists every repository.
func (c *Client) Catalog(ctx context.Context, pageSize int) ([]string, error) {
	var repos []string
	err := c.Paginate(ctx, c.reg.Scope(""), "/v2/_catalog", pageSize, func(body []byte) (int, string, error) {
		var page struct {
			Repositories []string `json:"repositories"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return 0, "", err
		}
		repos = append(repos, page.Repositories...)
		return len(page.Repositories), lastOf(page.Repositories), nil
	})
	if err != nil {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	return repos, nil
}

// Tags lists every tag of repo. A repository without tags, or one that
// disappeared since the catalog listed it, has none: not an error.
func (c *Client) Tags(ctx context.Context, repo string, pageSize int) ([]string, error) {
	var tags []string
	err := c.Paginate(ctx, c.repoScope(repo), "/v2/"+repo+"/tags/list", pageSize, func(body []byte) (int, string, error) {
		var page struct {
			Tags []string `json:"tags"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return 0, "", err
		}
		tags = append(tags, page.Tags...)
		return len(page.Tags), lastOf(page.Tags), nil
	})
	if err != nil {
		if HasCode(err, "NAME_UNKNOWN") {
			return nil, nil
		}
		return nil, fmt.Errorf("list tags of %s: %w", repo, err)
	}
	return tags, nil
}

// RepoScope is the token scope this client uses for repo.
func (c *Client) RepoScope(repo string) string { return c.repoScope(repo) }

func lastOf(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}
