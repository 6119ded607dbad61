package retention

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/berth-registry/berth/internal/progress"
	"github.com/berth-registry/berth/internal/registryclient"
)

// Media types whose push time can be approximated from the image.
const (
	mtOCIIndex     = "application/vnd.oci.image.index.v1+json"
	mtDockerList   = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtOCIManifest  = "application/vnd.oci.image.manifest.v1+json"
	mtDockerSchema = "application/vnd.docker.distribution.manifest.v2+json"

	annotationCreated = "org.opencontainers.image.created"
	maxConfigSize     = 4 << 20
)

// registryAPI is what listing needs from the registry client.
type registryAPI interface {
	Catalog(ctx context.Context, pageSize int) ([]string, error)
	Tags(ctx context.Context, repo string, pageSize int) ([]string, error)
	Paginate(ctx context.Context, scope, path string, pageSize int, each registryclient.PageFunc) error
	RepoScope(repo string) string
	GetManifest(ctx context.Context, repo, ref string) (*registryclient.Manifest, error)
	GetBlob(ctx context.Context, repo, dgst string, max int64) ([]byte, error)
}

// inventory lists the repositories the policy covers with all their tags,
// digests and push times. Repositories no rule matches are returned by name
// only: their tags are never listed, let alone touched.
func inventory(ctx context.Context, api registryAPI, pol *Policy, pageSize, concurrency int, bars progress.Factory) ([]RepoInput, []string, error) {
	names, err := api.Catalog(ctx, pageSize)
	if err != nil {
		return nil, nil, err
	}
	var matched, untouched []string
	for _, n := range names {
		if _, ok := pol.Match(n); ok {
			matched = append(matched, n)
		} else {
			untouched = append(untouched, n)
		}
	}

	repos := make([]RepoInput, len(matched))
	bar := bars.New("listing", len(matched))
	err = forEach(ctx, concurrency, len(matched), func(ctx context.Context, i int) error {
		defer bar.Add(1)
		r, err := listRepo(ctx, api, matched[i], pageSize)
		repos[i] = r
		return err
	})
	bar.Finish()
	if err != nil {
		return nil, nil, err
	}

	// Registries without the berth endpoint: approximate push times from
	// the images, one tag at a time, bounded like everything else.
	type job struct{ repo, tag int }
	var jobs []job
	for ri, r := range repos {
		if r.PushTimes == TimeSourceCreated {
			for ti := range r.Tags {
				jobs = append(jobs, job{ri, ti})
			}
		}
	}
	if len(jobs) > 0 {
		bar := bars.New("reading image dates", len(jobs))
		err = forEach(ctx, concurrency, len(jobs), func(ctx context.Context, i int) error {
			defer bar.Add(1)
			j := jobs[i]
			r := &repos[j.repo]
			t := &r.Tags[j.tag]
			d, created, err := imageCreated(ctx, api, r.Name, t.Tag)
			if err != nil {
				return err
			}
			t.Digest, t.Pushed = d, created
			return nil
		})
		bar.Finish()
		if err != nil {
			return nil, nil, err
		}
		for ri := range repos {
			// A tag deleted between listing and reading has no digest; it
			// needs no decision.
			tags := repos[ri].Tags[:0]
			for _, t := range repos[ri].Tags {
				if t.Digest != "" {
					tags = append(tags, t)
				}
			}
			repos[ri].Tags = tags
		}
	}
	return repos, untouched, nil
}

// berthTagsPath is berth's push-time extension (docs/design.md).
func berthTagsPath(repo string) string { return "/v2/" + repo + "/_berth/tags" }

func listRepo(ctx context.Context, api registryAPI, repo string, pageSize int) (RepoInput, error) {
	in := RepoInput{Name: repo, PushTimes: TimeSourceBerth}
	err := api.Paginate(ctx, api.RepoScope(repo), berthTagsPath(repo), pageSize, func(body []byte) (int, string, error) {
		var page struct {
			Tags []struct {
				Tag    string    `json:"tag"`
				Digest string    `json:"digest"`
				Pushed time.Time `json:"pushed"`
			} `json:"tags"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return 0, "", err
		}
		for _, t := range page.Tags {
			if t.Tag == "" || t.Digest == "" {
				return 0, "", fmt.Errorf("entry without tag or digest: %+v", t)
			}
			in.Tags = append(in.Tags, TagInfo{Tag: t.Tag, Digest: t.Digest, Pushed: KnownTime(t.Pushed)})
		}
		if len(page.Tags) == 0 {
			return 0, "", nil
		}
		return len(page.Tags), page.Tags[len(page.Tags)-1].Tag, nil
	})
	switch {
	case err == nil:
		return in, nil
	case registryclient.HasCode(err, "NAME_UNKNOWN"):
		// The repository has no tags (berth answers NAME_UNKNOWN when the
		// tags directory does not exist).
		return RepoInput{Name: repo, PushTimes: TimeSourceBerth}, nil
	case !endpointMissing(err):
		return in, fmt.Errorf("list push times of %s: %w", repo, err)
	}
	tags, err := api.Tags(ctx, repo, pageSize)
	if err != nil {
		return in, err
	}
	in = RepoInput{Name: repo, PushTimes: TimeSourceCreated, Tags: make([]TagInfo, len(tags))}
	for i, t := range tags {
		in.Tags[i] = TagInfo{Tag: t}
	}
	return in, nil
}

// endpointMissing tells "this registry is not berth" from real failures.
func endpointMissing(err error) bool {
	switch registryclient.StatusCode(err) {
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusNotImplemented, http.StatusBadRequest:
		return true
	}
	return false
}

// imageCreated returns the tag's digest and its approximate push time: the
// first known of the org.opencontainers.image.created annotation, the label
// of that name, and the config's created field. For an index it uses the
// index's annotation or its first platform image. An empty digest means the
// tag vanished meanwhile.
func imageCreated(ctx context.Context, api registryAPI, repo, tag string) (string, time.Time, error) {
	m, err := api.GetManifest(ctx, repo, tag)
	if err != nil {
		if registryclient.StatusCode(err) == http.StatusNotFound {
			return "", time.Time{}, nil
		}
		return "", time.Time{}, err
	}
	t, err := manifestCreated(ctx, api, repo, m, 1)
	return m.Digest, t, err
}

type manifestDoc struct {
	MediaType   string            `json:"mediaType"`
	Annotations map[string]string `json:"annotations"`
	Config      struct {
		Digest string `json:"digest"`
		Size   int64  `json:"size"`
	} `json:"config"`
	Manifests []struct {
		Digest   string `json:"digest"`
		Platform *struct {
			OS           string `json:"os"`
			Architecture string `json:"architecture"`
		} `json:"platform"`
	} `json:"manifests"`
}

func manifestCreated(ctx context.Context, api registryAPI, repo string, m *registryclient.Manifest, depth int) (time.Time, error) {
	var doc manifestDoc
	if err := json.Unmarshal(m.Body, &doc); err != nil {
		return time.Time{}, fmt.Errorf("parse manifest %s@%s: %w", repo, m.Digest, err)
	}
	if t := parseCreated(doc.Annotations[annotationCreated]); !t.IsZero() {
		return t, nil
	}
	mt := m.MediaType
	if mt == "" || mt == "application/json" {
		mt = doc.MediaType
	}
	switch mt {
	case mtOCIIndex, mtDockerList:
		if depth <= 0 {
			return time.Time{}, nil
		}
		for _, child := range doc.Manifests {
			// Attestation manifests carry platform unknown/unknown.
			if child.Platform != nil && child.Platform.OS == "unknown" {
				continue
			}
			cm, err := api.GetManifest(ctx, repo, child.Digest)
			if err != nil {
				return time.Time{}, err
			}
			return manifestCreated(ctx, api, repo, cm, depth-1)
		}
		return time.Time{}, nil
	case mtOCIManifest, mtDockerSchema:
		if doc.Config.Digest == "" || doc.Config.Size > maxConfigSize {
			return time.Time{}, nil
		}
		blob, err := api.GetBlob(ctx, repo, doc.Config.Digest, maxConfigSize)
		if err != nil {
			return time.Time{}, err
		}
		var cfg struct {
			Created string `json:"created"`
			Config  struct {
				Labels map[string]string `json:"Labels"`
			} `json:"config"`
		}
		if err := json.Unmarshal(blob, &cfg); err != nil {
			// Artifacts use configs that are not image configs: no date.
			return time.Time{}, nil
		}
		if t := parseCreated(cfg.Config.Labels[annotationCreated]); !t.IsZero() {
			return t, nil
		}
		return parseCreated(cfg.Created), nil
	}
	return time.Time{}, nil
}

func parseCreated(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return KnownTime(t)
}

// forEach runs fn for 0..n-1 with at most limit running at once, stops
// starting new work after the first error or cancellation, and returns the
// first error.
func forEach(ctx context.Context, limit, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	limit = max(limit, 1)
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	fail := func(err error) {
		once.Do(func() { first = err; cancel(err) })
	}
loop:
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		if ctx.Err() != nil {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(ctx, i); err != nil {
				fail(err)
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}
