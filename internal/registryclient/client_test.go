package registryclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

func TestRetryDelay(t *testing.T) {
	p := RetryPolicy{MaxAttempts: 4, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second, MaxRetryAfter: 30 * time.Second}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	cases := []struct {
		name    string
		attempt int
		status  int
		header  http.Header
		jitter  float64
		want    time.Duration
		retry   bool
	}{
		{"503 honours Retry-After seconds", 1, 503, h("Retry-After", "7"), 0.5, 7 * time.Second, true},
		{"429 honours Retry-After date", 1, 429, h("Retry-After", now.Add(3*time.Second).Format(http.TimeFormat)), 0, 3 * time.Second, true},
		{"Retry-After in the past means now", 1, 503, h("Retry-After", now.Add(-time.Hour).Format(http.TimeFormat)), 0, 0, true},
		{"Retry-After beyond the cap fails", 1, 503, h("Retry-After", "3600"), 0, 0, false},
		{"500 ignores Retry-After, backs off", 1, 500, h("Retry-After", "7"), 0, 50 * time.Millisecond, true},
		{"exponential with full jitter on top", 2, 502, nil, 0.999999, 200 * time.Millisecond, true},
		{"capped at MaxDelay", 3, 504, nil, 0, 200 * time.Millisecond, true},
		{"transport error retried", 1, 0, nil, 0, 50 * time.Millisecond, true},
		{"last attempt not retried", 4, 503, nil, 0, 0, false},
		{"404 not retried", 1, 404, nil, 0, 0, false},
		{"401 not retried", 1, 401, nil, 0, 0, false},
		{"garbage Retry-After falls back to backoff", 1, 503, h("Retry-After", "soon"), 0, 50 * time.Millisecond, true},
	}
	p3 := p
	p3.MaxDelay = 400 * time.Millisecond
	for _, c := range cases {
		pol := p
		if c.name == "capped at MaxDelay" {
			pol = p3
		}
		got, ok := pol.Delay(c.attempt, c.status, c.header, now, c.jitter)
		if ok != c.retry || (ok && (got < c.want-c.want/100 || got > c.want+c.want/100)) {
			t.Errorf("%s: Delay = %v, %v; want %v, %v", c.name, got, ok, c.want, c.retry)
		}
	}
}

func TestNextLink(t *testing.T) {
	cases := map[string]string{
		`</v2/_catalog?last=b&n=2>; rel="next"`:                      "http://r:5000/v2/_catalog?last=b&n=2",
		`<http://other:1/v2/x/tags/list?n=1&last=a>; rel=next`:       "http://other:1/v2/x/tags/list?n=1&last=a",
		`</prev>; rel="prev", </v2/_catalog?last=c&n=2>; rel="next"`: "http://r:5000/v2/_catalog?last=c&n=2",
		`</v2/_catalog?last=c>; title="x"; rel="last next"`:          "http://r:5000/v2/_catalog?last=c",
		`</v2/_catalog?last=c>; rel="prev"`:                          "",
	}
	for h, want := range cases {
		resp := &http.Response{Header: http.Header{"Link": {h}}}
		got, err := nextLink(resp, "http://r:5000/v2/_catalog?n=2")
		if err != nil || got != want {
			t.Errorf("Link %s: got %q, %v; want %q", h, got, err, want)
		}
	}
	if _, err := nextLink(&http.Response{Header: http.Header{"Link": {`/v2/x; rel="next"`}}}, "http://r/"); err == nil {
		t.Error("malformed Link accepted")
	}
}

func TestParseURL(t *testing.T) {
	good := map[string]string{
		"http://127.0.0.1:5000":       "http://127.0.0.1:5000",
		"https://registry.example/":   "https://registry.example",
		"https://registry.example/v2": "https://registry.example",
	}
	for in, want := range good {
		u, err := ParseURL(in)
		if err != nil || u.String() != want {
			t.Errorf("ParseURL(%q) = %v, %v; want %s", in, u, err, want)
		}
	}
	for _, in := range []string{"", "127.0.0.1:5000", "ftp://x", "https://", "https://x/prefix", "https://u:p@x", "https://x/?a=b"} {
		if _, err := ParseURL(in); err == nil {
			t.Errorf("ParseURL(%q) accepted", in)
		}
	}
}

type fakeKeychain struct{ auth authn.Authenticator }

func (k fakeKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.auth, nil }

func TestResolveAuthPrecedence(t *testing.T) {
	ctx := context.Background()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	docker := fakeKeychain{&authn.Basic{Username: "docker", Password: "d"}}
	user := func(a authn.Authenticator) string {
		cfg, _ := a.Authorization()
		return cfg.Username
	}
	a, src, err := ResolveAuth(ctx, "http://r:1", AuthInput{Username: "flag", Password: "f",
		Getenv: env(map[string]string{EnvUser: "env", EnvPassword: "e"}), Keychain: docker})
	if err != nil || src != "flags" || user(a) != "flag" {
		t.Errorf("flags: %v %s %v", user(a), src, err)
	}
	a, src, err = ResolveAuth(ctx, "http://r:1", AuthInput{Getenv: env(map[string]string{EnvUser: "env", EnvPassword: "e"}), Keychain: docker})
	if err != nil || src != "environment" || user(a) != "env" {
		t.Errorf("env: %v %s %v", user(a), src, err)
	}
	a, src, err = ResolveAuth(ctx, "http://r:1", AuthInput{Getenv: env(nil), Keychain: docker})
	if err != nil || src != "docker config" || user(a) != "docker" {
		t.Errorf("docker: %v %s %v", user(a), src, err)
	}
	a, src, err = ResolveAuth(ctx, "http://r:1", AuthInput{Getenv: env(nil), Keychain: fakeKeychain{authn.Anonymous}})
	if err != nil || src != "anonymous" || a != authn.Anonymous {
		t.Errorf("anonymous: %v %s %v", a, src, err)
	}
	if _, _, err := ResolveAuth(ctx, "http://r:1", AuthInput{Getenv: env(map[string]string{EnvUser: "only-user"})}); err == nil {
		t.Error("REGISTRY_USER without REGISTRY_PASSWORD accepted")
	}
}

// The transport is real: a loopback server that fails, then recovers.
func TestClientRetriesTransientFailures(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		if hits.Add(1) < 3 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		fmt.Fprint(w, `{"repositories":["a","b"]}`)
	}))
	defer srv.Close()
	c, err := New(Options{URL: srv.URL, Retry: RetryPolicy{BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	repos, err := c.Catalog(context.Background(), 0)
	if err != nil || strings.Join(repos, ",") != "a,b" {
		t.Fatalf("catalog: %v %v", repos, err)
	}
	if c.Retries() != 2 {
		t.Errorf("retries = %d, want 2", c.Retries())
	}
}

// Once the parent context is done, a detached request still completes but
// is not retried.
func TestDetachStopsRetries(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		hits.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	c, err := New(Options{URL: srv.URL, Retry: RetryPolicy{BaseDelay: time.Hour, MaxDelay: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	// Authenticate first so the detached call below is a single request.
	if _, err := c.scopeTransport(context.Background(), c.repoScope("x")); err != nil {
		t.Fatal(err)
	}
	parent, cancel := context.WithCancel(context.Background())
	cancel()
	err = c.DeleteTag(Detach(parent), "x", "t")
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("want an interrupted error, got %v", err)
	}
	if hits.Load() != 1 {
		t.Errorf("%d requests, want exactly the one in flight", hits.Load())
	}
}

func TestSchemeGuardRefusesDowngrade(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	// The server speaks plain HTTP; asking for https must not silently
	// fall back to http.
	c, err := New(Options{URL: strings.Replace(srv.URL, "http://", "https://", 1)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Catalog(context.Background(), 0)
	if err == nil || !errors.Is(err, errWrongScheme) && !strings.Contains(err.Error(), "refusing http") {
		t.Fatalf("want a refused downgrade, got %v", err)
	}
}

func TestCAFile(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/_catalog" {
			fmt.Fprint(w, `{"repositories":["a"]}`)
		}
	}))
	defer srv.Close()
	c, err := New(Options{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Catalog(context.Background(), 0); err == nil {
		t.Fatal("an unknown CA was trusted")
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, certPEM(t, srv), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = New(Options{URL: srv.URL, CAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	if repos, err := c.Catalog(context.Background(), 0); err != nil || len(repos) != 1 {
		t.Fatalf("with --ca-file: %v %v", repos, err)
	}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("not a cert"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{URL: srv.URL, CAFile: bad}); err == nil {
		t.Fatal("a CA file without certificates was accepted")
	}
}
