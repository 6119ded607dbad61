package retention

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sirupsen/logrus"

	"github.com/berth-registry/berth/internal/registryclient"
	"github.com/berth-registry/berth/internal/testutil"
)

// registry is a real registry on loopback for a test: berth (with the
// push-time endpoint) or plain Distribution (a "foreign" registry that has
// none, so prune must fall back to image dates).
type registry struct {
	t    testing.TB
	URL  string
	Host string
	// Root is the filesystem storage root.
	Root   string
	pusher *remote.Pusher
	auth   authn.Authenticator
}

func startBerth(t testing.TB) *registry {
	t.Helper()
	return startBerthAt(t, "")
}

// startBerthAt keeps berth's storage under parent (a fresh directory that
// is removed afterwards), or in a temp dir when parent is "".
func startBerthAt(t testing.TB, parent string) *registry {
	t.Helper()
	var root string
	if parent != "" {
		dir, err := os.MkdirTemp(parent, "berth-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		root = filepath.Join(dir, "data")
	}
	b := testutil.StartBerth(t, testutil.Options{Root: root})
	return newRegistry(t, b.URL, b.Host, b.Root, nil)
}

// startBerthWithUser starts berth with htpasswd auth for one user.
func startBerthWithUser(t testing.TB, user, password string) *registry {
	t.Helper()
	b := testutil.StartBerth(t, testutil.Options{Users: map[string]string{user: password}})
	return newRegistry(t, b.URL, b.Host, b.Root, &authn.Basic{Username: user, Password: password})
}

// startForeign serves Distribution's own handler, as registry:3 would.
func startForeign(t testing.TB) *registry {
	t.Helper()
	root := t.TempDir()
	cfg := &configuration.Configuration{
		Version: "0.1",
		Storage: configuration.Storage{
			"filesystem": configuration.Parameters{"rootdirectory": root},
			"delete":     configuration.Parameters{"enabled": true},
		},
		// What configuration.Parse would default to.
		Catalog: configuration.Catalog{MaxEntries: 1000},
		Tags:    configuration.Tags{MaxTags: 1000},
	}
	cfg.HTTP.Secret = "test-secret"
	cfg.Log.AccessLog.Disabled = true
	logrus.SetLevel(logrus.ErrorLevel)
	app := handlers.NewApp(context.Background(), cfg)
	srv := httptest.NewServer(app)
	t.Cleanup(srv.Close)
	host := srv.Listener.Addr().String()
	return newRegistry(t, srv.URL, host, root, nil)
}

func newRegistry(t testing.TB, url, host, root string, auth authn.Authenticator) *registry {
	if auth == nil {
		auth = authn.Anonymous
	}
	p, err := remote.NewPusher(remote.WithJobs(8), remote.WithAuth(auth))
	if err != nil {
		t.Fatal(err)
	}
	return &registry{t: t, URL: url, Host: host, Root: root, pusher: p, auth: auth}
}

func (r *registry) ref(repo, tag string) name.Reference {
	r.t.Helper()
	ref, err := name.ParseReference(r.Host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		r.t.Fatal(err)
	}
	return ref
}

// push uploads t (an image or index) under repo:tag.
func (r *registry) push(repo, tag string, t remote.Taggable) string {
	r.t.Helper()
	if err := r.pusher.Push(context.Background(), r.ref(repo, tag), t); err != nil {
		r.t.Fatalf("push %s:%s: %v", repo, tag, err)
	}
	return digestOf(r.t, t)
}

// tag points more tags at content already in repo, with a manifest PUT
// each, concurrently: the cheap way to make many tags.
func (r *registry) tag(repo string, t remote.Taggable, tags ...string) {
	r.t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(tags))
	sem := make(chan struct{}, 8)
	for _, tg := range tags {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := r.pusher.Put(context.Background(), r.ref(repo, tg), t); err != nil {
				errs <- fmt.Errorf("tag %s:%s: %w", repo, tg, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		r.t.Fatal(err)
	}
}

// setPushed sets a tag's push time on berth. Berth reports the modification
// time of the tag's current/link file in storage (docs/design.md), so tests
// control ages by setting that file's mtime.
func (r *registry) setPushed(repo, tag string, at time.Time) {
	r.t.Helper()
	link := filepath.Join(r.Root, "docker/registry/v2/repositories", repo, "_manifests/tags", tag, "current/link")
	if err := os.Chtimes(link, at, at); err != nil {
		r.t.Fatalf("set push time of %s:%s: %v", repo, tag, err)
	}
}

func (r *registry) client() *registryclient.Client {
	r.t.Helper()
	c, err := registryclient.New(registryclient.Options{URL: r.URL, Auth: r.auth})
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

func (r *registry) tags(repo string) []string {
	r.t.Helper()
	tags, err := r.client().Tags(context.Background(), repo, 0)
	if err != nil {
		r.t.Fatalf("list tags of %s: %v", repo, err)
	}
	slices.Sort(tags)
	if tags == nil {
		tags = []string{}
	}
	return tags
}

// manifestExists reports whether repo@digest (or :tag) still resolves.
func (r *registry) manifestExists(repo, ref string) bool {
	r.t.Helper()
	_, err := r.client().HeadManifest(context.Background(), repo, ref)
	if err == nil {
		return true
	}
	if registryclient.StatusCode(err) == http.StatusNotFound {
		return false
	}
	r.t.Fatalf("head %s %s: %v", repo, ref, err)
	return false
}

func digestOf(t testing.TB, x remote.Taggable) string {
	t.Helper()
	d, ok := x.(interface{ Digest() (v1.Hash, error) })
	if !ok {
		t.Fatalf("%T has no digest", x)
	}
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

// dockerImage is a small random image with Docker schema 2 media types.
func dockerImage(t testing.TB) v1.Image {
	t.Helper()
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// ociImage is a small random image with OCI media types.
func ociImage(t testing.TB) v1.Image {
	t.Helper()
	l, err := random.Layer(64, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func withCreated(t testing.TB, img v1.Image, at time.Time) v1.Image {
	t.Helper()
	img, err := mutate.CreatedAt(img, v1.Time{Time: at})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// multiArch is an index of linux/amd64 and linux/arm64 images.
func multiArch(t testing.TB, mt types.MediaType) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, mt)
	for _, arch := range []string{"amd64", "arm64"} {
		img := dockerImage(t)
		if mt == types.OCIImageIndex {
			img = ociImage(t)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: arch},
		}})
	}
	return idx
}

func childDigests(t testing.TB, idx v1.ImageIndex) []string {
	t.Helper()
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range m.Manifests {
		out = append(out, d.Digest.String())
	}
	return out
}

// writePolicy writes a policy file and returns its path.
func writePolicy(t testing.TB, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// proxy sits between prune and the registry so tests can fail, delay or
// observe requests. hook returns true when it has answered the request.
type proxy struct {
	URL  string
	mu   sync.Mutex
	seen []string // "METHOD path"
}

func startProxy(t testing.TB, target string, hook func(w http.ResponseWriter, r *http.Request) bool) *proxy {
	t.Helper()
	p := &proxy{}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.seen = append(p.seen, r.Method+" "+r.URL.Path)
		p.mu.Unlock()
		if hook != nil && hook(w, r) {
			return
		}
		out, err := http.NewRequestWithContext(r.Context(), r.Method, target+r.URL.RequestURI(), r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		out.Header = r.Header.Clone()
		out.ContentLength = r.ContentLength
		resp, err := tr.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

func (p *proxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.seen)
}
