package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/registry/auth"
	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// TagInfo is one tag as the push-time extension reports it.
type TagInfo struct {
	Tag    string    `json:"tag"`
	Digest string    `json:"digest"`
	Pushed time.Time `json:"pushed"`
}

// TagsResponse is the body of GET /v2/<name>/_berth/tags.
type TagsResponse struct {
	Name string    `json:"name"`
	Tags []TagInfo `json:"tags"`
}

const tagsSuffix = "/_berth/tags"

// tagTimes serves GET /v2/<name>/_berth/tags: every tag with its digest and
// the time it was last pushed, i.e. the modification time of the tag's
// current link, which changes exactly when the tag is (re)pointed. Image
// build times are no substitute: ko and Bazel set them to 1970.
type tagTimes struct {
	driver driver.StorageDriver
	access auth.AccessController // nil without auth
	next   http.Handler
}

func (t *tagTimes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if !strings.HasPrefix(p, "/v2/") || !strings.HasSuffix(p, tagsSuffix) {
		t.next.ServeHTTP(w, r)
		return
	}
	name := strings.TrimSuffix(strings.TrimPrefix(p, "/v2/"), tagsSuffix)
	if _, err := reference.WithName(name); err != nil {
		writeError(w, http.StatusBadRequest, "NAME_INVALID", "invalid repository name", 0)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "method not allowed", 0)
		return
	}
	if t.access != nil {
		_, err := t.access.Authorized(r, auth.Access{Resource: auth.Resource{Type: "repository", Name: name}, Action: "pull"})
		if err != nil {
			var ch auth.Challenge
			if errors.As(err, &ch) {
				ch.SetHeaders(r, w)
				writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required", 0)
				return
			}
			writeError(w, http.StatusInternalServerError, "UNKNOWN", "authorization failed", 0)
			return
		}
	}
	n, last := 1000, r.URL.Query().Get("last")
	if s := r.URL.Query().Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			writeError(w, http.StatusBadRequest, "PAGINATION_NUMBER_INVALID", "invalid number of results requested", 0)
			return
		}
		n = min(v, 10000)
	}
	tags, more, err := listTagTimes(r.Context(), t.driver, name, n, last)
	if err != nil {
		var nf driver.PathNotFoundError
		if errors.As(err, &nf) {
			writeError(w, http.StatusNotFound, "NAME_UNKNOWN", "repository name not known to registry", 0)
			return
		}
		writeError(w, http.StatusInternalServerError, "UNKNOWN", "cannot list tags", 0)
		return
	}
	if more && len(tags) > 0 {
		q := url.Values{"n": {strconv.Itoa(n)}, "last": {tags[len(tags)-1].Tag}}
		w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, p, q.Encode()))
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(TagsResponse{Name: name, Tags: tags})
}

func tagsDir(name string) string {
	return path.Join("/docker/registry/v2/repositories", name, "_manifests/tags")
}

// listTagTimes reads at most n tags after last, in lexical order.
func listTagTimes(ctx context.Context, d driver.StorageDriver, name string, n int, last string) ([]TagInfo, bool, error) {
	dir := tagsDir(name)
	entries, err := d.List(ctx, dir)
	if err != nil {
		return nil, false, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if t := path.Base(e); t > last {
			names = append(names, t)
		}
	}
	sort.Strings(names)
	more := len(names) > n
	if more {
		names = names[:n]
	}
	out := make([]TagInfo, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, tag := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			link := path.Join(dir, tag, "current/link")
			fi, err := d.Stat(ctx, link)
			if err != nil {
				errs[i] = err
				return
			}
			b, err := d.GetContent(ctx, link)
			if err != nil {
				errs[i] = err
				return
			}
			dg, err := digest.Parse(strings.TrimSpace(string(b)))
			if err != nil {
				errs[i] = fmt.Errorf("tag %s: bad link: %w", tag, err)
				return
			}
			out[i] = TagInfo{Tag: tag, Digest: dg.String(), Pushed: fi.ModTime().UTC()}
		}()
	}
	wg.Wait()
	// A tag deleted while we listed has no link any more: leave it out.
	kept := out[:0]
	for i, ti := range out {
		if errs[i] != nil {
			var nf driver.PathNotFoundError
			if errors.As(errs[i], &nf) {
				continue
			}
			return nil, false, errs[i]
		}
		kept = append(kept, ti)
	}
	return kept, more, nil
}
