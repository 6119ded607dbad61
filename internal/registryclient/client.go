// Package registryclient is a small OCI distribution API client for berth's
// maintenance commands: authentication (via go-containerregistry), a
// keep-alive transport, retries that honour Retry-After, and pagination.
package registryclient

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Manifest media types a client must accept so the registry returns the
// manifest as stored. Without the index types, Distribution resolves a
// multi-arch tag to one platform's manifest (the seed cleaner's bug).
var manifestAccept = strings.Join([]string{
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}, ", ")

// maxManifestSize is what Distribution itself accepts for a manifest.
const maxManifestSize = 4 << 20

// Options configure a Client.
type Options struct {
	// URL of the registry: http://host:port or https://host. No path.
	URL string
	// Auth defaults to anonymous.
	Auth authn.Authenticator
	// CAFile adds PEM certificates to the system roots.
	CAFile string
	// ReadOnly requests pull-only tokens, so a dry run works with
	// read-only credentials.
	ReadOnly bool
	// MaxConnsPerHost sizes the keep-alive pool; set it to the request
	// concurrency so connections are reused rather than churned.
	MaxConnsPerHost int
	Retry           RetryPolicy
	Logger          *slog.Logger
	// Transport replaces the default base transport (tests, in-process use).
	Transport http.RoundTripper
	UserAgent string
}

// Client talks to one registry. It is safe for concurrent use.
type Client struct {
	base     *url.URL
	reg      name.Registry
	auth     authn.Authenticator
	readOnly bool
	rt       http.RoundTripper // guard → retry → base
	retry    *retryTransport
	log      *slog.Logger

	mu         sync.Mutex
	challenge  *transport.Challenge
	transports map[string]*scoped
}

type scoped struct {
	once sync.Once
	rt   http.RoundTripper
	err  error
}

// ParseURL validates a --registry value.
func ParseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("registry URL is empty")
	}
	if !strings.Contains(raw, "://") {
		return nil, fmt.Errorf("registry URL %q needs a scheme: http://%s or https://%s", raw, raw, raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("registry URL %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("registry URL %q: scheme must be http or https", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("registry URL %q has no host", raw)
	}
	if p := strings.TrimSuffix(u.Path, "/"); p != "" && p != "/v2" {
		return nil, fmt.Errorf("registry URL %q: the registry API lives at the root, drop the path %q", raw, u.Path)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("registry URL %q: no credentials, query or fragment allowed (use --username/--password-stdin)", raw)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// New builds a client; it sends no request.
func New(opts Options) (*Client, error) {
	u, err := ParseURL(opts.URL)
	if err != nil {
		return nil, err
	}
	var nameOpts []name.Option
	if u.Scheme == "http" {
		nameOpts = append(nameOpts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("registry host %q: %w", u.Host, err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	base := opts.Transport
	if base == nil {
		base, err = newBaseTransport(opts.CAFile, opts.MaxConnsPerHost)
		if err != nil {
			return nil, err
		}
	} else if opts.CAFile != "" {
		return nil, errors.New("CAFile and Transport are mutually exclusive")
	}
	auth := opts.Auth
	if auth == nil {
		auth = authn.Anonymous
	}
	retry := &retryTransport{inner: base, policy: opts.Retry.withDefaults(), log: logger, jitter: rand.Float64}
	var rt http.RoundTripper = &schemeGuard{host: u.Host, scheme: u.Scheme, inner: retry}
	rt = transport.NewUserAgent(rt, cmpOr(opts.UserAgent, "berth"))
	return &Client{
		base: u, reg: reg, auth: auth, readOnly: opts.ReadOnly,
		rt: rt, retry: retry, log: logger,
		transports: map[string]*scoped{},
	}, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func newBaseTransport(caFile string, conns int) (*http.Transport, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if conns < 1 {
		conns = 8
	}
	t.MaxIdleConnsPerHost = conns + 2
	t.MaxIdleConns = 2 * (conns + 2)
	t.ResponseHeaderTimeout = 2 * time.Minute
	t.DialContext = (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return t, nil
}

// URL is the registry's base URL.
func (c *Client) URL() string { return c.base.String() }

// Retries counts requests that were sent again after a transient failure.
func (c *Client) Retries() int64 { return c.retry.retries.Load() }

// scopeTransport returns an authenticated transport for one token scope.
// Basic and anonymous registries share one transport; only bearer token
// servers need a token per repository.
func (c *Client) scopeTransport(ctx context.Context, scope string) (http.RoundTripper, error) {
	c.mu.Lock()
	ch := c.challenge
	c.mu.Unlock()
	if ch == nil {
		pr, err := transport.Ping(ctx, c.reg, c.rt)
		if err != nil {
			return nil, fmt.Errorf("contact registry %s: %w", c.base, err)
		}
		c.mu.Lock()
		c.challenge, ch = pr, pr
		c.mu.Unlock()
	}
	key := scope
	if !strings.EqualFold(ch.Scheme, "bearer") {
		key = ""
	}
	c.mu.Lock()
	s := c.transports[key]
	if s == nil {
		s = &scoped{}
		c.transports[key] = s
	}
	c.mu.Unlock()
	s.once.Do(func() {
		s.rt, s.err = transport.NewWithContext(ctx, c.reg, c.auth, c.rt, []string{scope})
		if s.err != nil {
			s.err = fmt.Errorf("authenticate to %s (scope %s): %w", c.base, scope, s.err)
		}
	})
	return s.rt, s.err
}

func (c *Client) repoScope(repo string) string {
	actions := transport.DeleteScope
	if c.readOnly {
		actions = transport.PullScope
	}
	return "repository:" + repo + ":" + actions
}

// do sends one request with auth for scope; non-2xx answers come back as
// *transport.Error wrapped with the operation.
func (c *Client) do(ctx context.Context, scope, method, rawURL string, header http.Header) (*http.Response, error) {
	rt, err := c.scopeTransport(ctx, scope)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, transport.CheckError(resp)
}

func (c *Client) endpoint(path string, q url.Values) string {
	u := *c.base
	u.Path = path
	u.RawQuery = q.Encode()
	return u.String()
}

// Descriptor identifies a manifest.
type Descriptor struct {
	Digest    string
	MediaType string
	Size      int64
}

// Manifest is a manifest as stored in the registry.
type Manifest struct {
	Descriptor
	Body []byte
}

// HeadManifest resolves a tag or digest without downloading the manifest.
func (c *Client) HeadManifest(ctx context.Context, repo, ref string) (Descriptor, error) {
	resp, err := c.do(ctx, c.repoScope(repo), http.MethodHead, c.endpoint("/v2/"+repo+"/manifests/"+ref, nil),
		http.Header{"Accept": {manifestAccept}})
	if err != nil {
		return Descriptor{}, fmt.Errorf("resolve %s:%s: %w", repo, ref, err)
	}
	resp.Body.Close()
	d := Descriptor{Digest: resp.Header.Get("Docker-Content-Digest"), MediaType: mediaType(resp.Header), Size: resp.ContentLength}
	if d.Digest == "" {
		// Without the header only a GET can tell the digest.
		m, err := c.GetManifest(ctx, repo, ref)
		if err != nil {
			return Descriptor{}, err
		}
		return m.Descriptor, nil
	}
	return d, nil
}

// GetManifest fetches a manifest as stored (never a platform-resolved child).
func (c *Client) GetManifest(ctx context.Context, repo, ref string) (*Manifest, error) {
	resp, err := c.do(ctx, c.repoScope(repo), http.MethodGet, c.endpoint("/v2/"+repo+"/manifests/"+ref, nil),
		http.Header{"Accept": {manifestAccept}})
	if err != nil {
		return nil, fmt.Errorf("get manifest %s:%s: %w", repo, ref, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("read manifest %s:%s: %w", repo, ref, err)
	}
	if len(body) > maxManifestSize {
		return nil, fmt.Errorf("manifest %s:%s is larger than %d bytes", repo, ref, maxManifestSize)
	}
	sum := sha256.Sum256(body)
	computed := "sha256:" + hex.EncodeToString(sum[:])
	dgst := resp.Header.Get("Docker-Content-Digest")
	if dgst == "" {
		dgst = computed
	} else if strings.HasPrefix(dgst, "sha256:") && dgst != computed {
		return nil, fmt.Errorf("manifest %s:%s: registry says digest %s but content hashes to %s", repo, ref, dgst, computed)
	}
	return &Manifest{Descriptor: Descriptor{Digest: dgst, MediaType: mediaType(resp.Header), Size: int64(len(body))}, Body: body}, nil
}

func mediaType(h http.Header) string {
	mt, _, _ := strings.Cut(h.Get("Content-Type"), ";")
	return strings.TrimSpace(mt)
}

// GetBlob downloads a small blob (an image config), refusing more than max
// bytes.
func (c *Client) GetBlob(ctx context.Context, repo, dgst string, max int64) ([]byte, error) {
	resp, err := c.do(ctx, c.repoScope(repo), http.MethodGet, c.endpoint("/v2/"+repo+"/blobs/"+dgst, nil), nil)
	if err != nil {
		return nil, fmt.Errorf("get blob %s@%s: %w", repo, dgst, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("read blob %s@%s: %w", repo, dgst, err)
	}
	if int64(len(body)) > max {
		return nil, fmt.Errorf("blob %s@%s is larger than %d bytes", repo, dgst, max)
	}
	return body, nil
}

// DeleteTag removes one tag with DELETE /v2/<name>/manifests/<tag>; other
// tags on the same digest stay. It never falls back to deleting by digest.
func (c *Client) DeleteTag(ctx context.Context, repo, tag string) error {
	resp, err := c.do(ctx, c.repoScope(repo), http.MethodDelete, c.endpoint("/v2/"+repo+"/manifests/"+tag, nil), nil)
	if err != nil {
		if tagDeleteUnsupported(err) {
			return fmt.Errorf("delete %s:%s: %w: %w", repo, tag, ErrTagDeleteUnsupported, err)
		}
		return fmt.Errorf("delete %s:%s: %w", repo, tag, err)
	}
	resp.Body.Close()
	return nil
}

// ErrTagDeleteUnsupported: the registry cannot remove a tag on its own.
// Distribution 2.x answers 400 DIGEST_INVALID, registries with deletes
// disabled 405 UNSUPPORTED. Deleting by digest instead would remove every tag
// sharing the digest, so callers must stop rather than fall back.
var ErrTagDeleteUnsupported = errors.New("registry cannot delete a tag by name (deleting by digest would remove every tag sharing it, so berth refuses)")

func tagDeleteUnsupported(err error) bool {
	var te *transport.Error
	if !errors.As(err, &te) {
		return false
	}
	if te.StatusCode == http.StatusMethodNotAllowed {
		return true
	}
	if te.StatusCode == http.StatusBadRequest {
		for _, d := range te.Errors {
			if d.Code == transport.DigestInvalidErrorCode || d.Code == transport.UnsupportedErrorCode {
				return true
			}
		}
	}
	return false
}

// StatusCode returns the HTTP status of a registry error, or 0.
func StatusCode(err error) int {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode
	}
	return 0
}

// HasCode reports whether a registry error carries an OCI error code such
// as NAME_UNKNOWN.
func HasCode(err error, code string) bool {
	var te *transport.Error
	if errors.As(err, &te) {
		for _, d := range te.Errors {
			if string(d.Code) == code {
				return true
			}
		}
	}
	return false
}
