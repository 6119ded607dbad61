package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	awss3 "github.com/aws/aws-sdk-go/service/s3"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/internal/config"
	"github.com/berth-registry/berth/internal/server"
	"github.com/berth-registry/berth/internal/testutil"
)

func TestS3PushPullRoundTrip(t *testing.T) {
	s3 := testutil.StartS3(t)
	b := testutil.StartBerth(t, testutil.Options{ConfigYAML: s3.ConfigYAML()})
	pushAndPull(t, b.Host)
}

// s3HTTP is the client for raw registry requests in the S3 tests: bounded,
// so a hung storage call fails the test instead of stalling the suite.
var s3HTTP = &http.Client{Timeout: 3 * time.Minute}

// pseudoRandom is a deterministic, incompressible stream of n bytes.
func pseudoRandom(seed byte, n int64) io.Reader {
	var key [32]byte
	key[0] = seed
	return io.LimitReader(rand.NewChaCha8(key), n)
}

type regResponse struct {
	status int
	header http.Header
	body   []byte
}

// send makes one registry request and reads the whole (small) answer.
func s3Send(t *testing.T, method, u string, body io.Reader, size int64, hdr map[string]string) regResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.ContentLength = size
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := s3HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("%s %s: read answer: %v", method, u, err)
	}
	return regResponse{status: resp.StatusCode, header: resp.Header, body: b}
}

// location resolves an upload's Location header against base.
func location(t *testing.T, base string, r regResponse) string {
	t.Helper()
	loc := r.header.Get("Location")
	if loc == "" {
		t.Fatalf("no Location in answer %d: %s", r.status, r.body)
	}
	b, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	l, err := url.Parse(loc)
	if err != nil {
		t.Fatalf("bad Location %q: %v", loc, err)
	}
	return b.ResolveReference(l).String()
}

func startUpload(t *testing.T, base, repo string) string {
	t.Helper()
	r := s3Send(t, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil, 0, nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("POST upload: %d %s", r.status, r.body)
	}
	return location(t, base, r)
}

// patchChunk sends size bytes of body as the chunk starting at offset and
// returns the next Location.
func patchChunk(t *testing.T, base, loc string, body io.Reader, offset, size int64) string {
	t.Helper()
	r := s3Send(t, http.MethodPatch, loc, body, size, map[string]string{
		"Content-Type":  "application/octet-stream",
		"Content-Range": fmt.Sprintf("%d-%d", offset, offset+size-1),
	})
	if r.status != http.StatusAccepted {
		t.Fatalf("PATCH %d bytes at %d: %d %s", size, offset, r.status, r.body)
	}
	if got, want := r.header.Get("Range"), fmt.Sprintf("0-%d", offset+size-1); got != want {
		t.Fatalf("PATCH at %d: Range %q, want %q", offset, got, want)
	}
	return location(t, base, r)
}

func finishUpload(t *testing.T, base, loc string, dg digest.Digest) {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("digest", dg.String())
	u.RawQuery = q.Encode()
	r := s3Send(t, http.MethodPut, u.String(), nil, 0, nil)
	if r.status != http.StatusCreated {
		t.Fatalf("PUT to finish the upload: %d %s", r.status, r.body)
	}
	if got := r.header.Get("Docker-Content-Digest"); got != dg.String() {
		t.Fatalf("finished upload has digest %q, want %s", got, dg)
	}
}

// pullBlobDigest streams a blob through sha256 and returns its digest and size.
func pullBlobDigest(t *testing.T, base, repo string, dg digest.Digest) (digest.Digest, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+repo+"/blobs/"+dg.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s3HTTP.Do(req)
	if err != nil {
		t.Fatalf("GET blob: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		t.Fatalf("GET blob: %d %s", resp.StatusCode, b)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("GET blob: read after %d bytes: %v", n, err)
	}
	return digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)), n
}

// A blob over 100 MiB goes up in several PATCH requests (each one a
// separate request, so the S3 driver resumes its multipart upload every
// time) and comes back byte for byte.
func TestS3LargeBlobChunkedUpload(t *testing.T) {
	s3 := testutil.StartS3(t)
	b := testutil.StartBerth(t, testutil.Options{ConfigYAML: s3.ConfigYAML()})
	const (
		size  = 105<<20 + 12345 // over 100 MiB and not a multiple of anything
		chunk = 21 << 20
		repo  = "big/blob"
	)
	h := sha256.New()
	if _, err := io.Copy(h, pseudoRandom(1, size)); err != nil {
		t.Fatal(err)
	}
	want := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))

	src := pseudoRandom(1, size)
	loc := startUpload(t, b.URL, repo)
	patches := 0
	for off := int64(0); off < size; off += chunk {
		n := min(int64(chunk), size-off)
		loc = patchChunk(t, b.URL, loc, io.LimitReader(src, n), off, n)
		patches++
	}
	if patches < 5 {
		t.Fatalf("only %d PATCH requests: the upload was not chunked", patches)
	}
	finishUpload(t, b.URL, loc, want)

	head := s3Send(t, http.MethodHead, b.URL+"/v2/"+repo+"/blobs/"+want.String(), nil, 0, nil)
	if head.status != http.StatusOK || head.header.Get("Content-Length") != fmt.Sprint(size) {
		t.Fatalf("HEAD blob: %d, Content-Length %q, want %d", head.status, head.header.Get("Content-Length"), size)
	}
	got, n := pullBlobDigest(t, b.URL, repo, want)
	if got != want || n != size {
		t.Fatalf("pulled %d bytes with digest %s, pushed %d bytes with digest %s", n, got, size, want)
	}
}

// Two berth processes on one bucket share upload state: an upload started
// on one is finished on the other, with the Location the first returned.
func TestS3UploadMovesBetweenReplicas(t *testing.T) {
	s3 := testutil.StartS3(t)
	a := testutil.StartBerth(t, testutil.Options{ConfigYAML: s3.ConfigYAML()})
	bb := testutil.StartBerth(t, testutil.Options{ConfigYAML: s3.ConfigYAML()})

	// The generated http secret lives in the bucket, so both share it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	obj, err := s3.Client(t).GetObjectWithContext(ctx, &awss3.GetObjectInput{Bucket: aws.String(s3.Bucket), Key: aws.String("berth/http-secret")})
	if err != nil {
		t.Fatalf("the http secret is not in the bucket: %v", err)
	}
	secret, _ := io.ReadAll(obj.Body)
	obj.Body.Close()
	if len(strings.TrimSpace(string(secret))) < 32 {
		t.Fatalf("stored http secret too short: %q", secret)
	}

	const repo = "shared/upload"
	// Chunk sizes straddle the driver's 5 MiB multipart minimum so that the
	// second replica must resume after a short part.
	sizes := []int64{3 << 20, 7<<20 + 1, 2 << 20, 1 << 20}
	var total int64
	for _, s := range sizes {
		total += s
	}
	h := sha256.New()
	if _, err := io.Copy(h, pseudoRandom(2, total)); err != nil {
		t.Fatal(err)
	}
	want := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))

	src := pseudoRandom(2, total)
	loc := startUpload(t, a.URL, repo)
	var off int64
	for i, s := range sizes {
		if i == 2 {
			// Hand over to the other replica, as a load balancer might.
			u, err := url.Parse(loc)
			if err != nil {
				t.Fatal(err)
			}
			u.Host = bb.Host
			loc = u.String()
		}
		base := a.URL
		if i >= 2 {
			base = bb.URL
		}
		loc = patchChunk(t, base, loc, io.LimitReader(src, s), off, s)
		off += s
	}
	finishUpload(t, bb.URL, loc, want)

	for _, srv := range []*testutil.Berth{a, bb} {
		if got, n := pullBlobDigest(t, srv.URL, repo, want); got != want || n != total {
			t.Fatalf("pull from %s: %d bytes, digest %s; want %d bytes, %s", srv.Host, n, got, total, want)
		}
	}
}

// pullVerified pulls ref and checks every layer's digest and size.
func pullVerified(t *testing.T, ref name.Reference, want v1.Image) {
	t.Helper()
	got, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	if err := validate.Image(got); err != nil {
		t.Fatalf("pulled %s does not verify: %v", ref, err)
	}
	gd, _ := got.Digest()
	wd, _ := want.Digest()
	if gd != wd {
		t.Fatalf("pulled %s has digest %s, pushed %s", ref, gd, wd)
	}
}

// checkErrorDoc asserts an answer from a failing backend is a 5xx with an
// OCI error document that leaks neither credentials nor storage layout.
func checkErrorDoc(t *testing.T, what string, r regResponse, s3 *testutil.S3) {
	t.Helper()
	t.Logf("%s with the store down: %d %s", what, r.status, r.body)
	if r.status < 500 {
		t.Fatalf("%s with the store down: %d %s, want a 5xx", what, r.status, r.body)
	}
	var doc struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil || len(doc.Errors) == 0 || doc.Errors[0].Code == "" {
		t.Fatalf("%s with the store down: body is not an OCI error document: %s", what, r.body)
	}
	for _, leak := range append([]string{s3.SecretKey, s3.AccessKey, s3.Bucket, s3.Endpoint, "127.0.0.1"}, leaks...) {
		if bytes.Contains(r.body, []byte(leak)) {
			t.Fatalf("%s: answer reveals %q: %s", what, leak, r.body)
		}
	}
}

// syncBuffer collects logs written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func readyz(t *testing.T, b *testutil.Berth) (int, string) {
	t.Helper()
	r := s3Send(t, http.MethodGet, b.DebugURL+"/readyz", nil, 0, nil)
	return r.status, string(r.body)
}

// The store dies in the middle of a push: the client gets a 5xx OCI error
// that reveals nothing about the store, readiness reports it, nothing
// half-pushed is visible afterwards, and the same push succeeds once the
// store is back.
func TestS3StoreGoesAwayMidPush(t *testing.T) {
	s3 := testutil.StartS3(t)
	var logs syncBuffer
	b := testutil.StartBerth(t, testutil.Options{ConfigYAML: s3.ConfigYAML(), Logs: &logs})
	const repo = "flaky/store"
	img, err := random.Image(64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(b.Host+"/"+repo+":v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	// The first layer is uploaded in full before the store goes away.
	ld, _ := layers[0].Digest()
	rc, _ := layers[0].Compressed()
	lb, _ := io.ReadAll(rc)
	loc := startUpload(t, b.URL, repo)
	loc = patchChunk(t, b.URL, loc, bytes.NewReader(lb), 0, int64(len(lb)))
	finishUpload(t, b.URL, loc, digest.Digest(ld.String()))
	// The second is half-way when it dies.
	l2, _ := layers[1].Compressed()
	l2b, _ := io.ReadAll(l2)
	half := int64(len(l2b) / 2)
	loc = startUpload(t, b.URL, repo)
	loc = patchChunk(t, b.URL, loc, bytes.NewReader(l2b[:half]), 0, half)

	s3.Kill()

	r := s3Send(t, http.MethodPatch, loc, bytes.NewReader(l2b[half:]), int64(len(l2b))-half, map[string]string{
		"Content-Type": "application/octet-stream", "Content-Range": fmt.Sprintf("%d-%d", half, len(l2b)-1)})
	checkErrorDoc(t, "PATCH", r, s3)
	if !strings.Contains(string(r.body), "storage error") {
		t.Fatalf("PATCH with the store down does not say storage failed: %s", r.body)
	}
	mf, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, _ := img.MediaType()
	r = s3Send(t, http.MethodPut, b.URL+"/v2/"+repo+"/manifests/v1", bytes.NewReader(mf), int64(len(mf)), map[string]string{"Content-Type": string(mt)})
	checkErrorDoc(t, "PUT manifest", r, s3)
	// Blobs that could not be looked at are not "unknown".
	if !strings.Contains(string(r.body), "storage error") || strings.Contains(string(r.body), "BLOB_UNKNOWN") {
		t.Fatalf("PUT manifest with the store down: %s, want a storage error only", r.body)
	}
	r = s3Send(t, http.MethodGet, b.URL+"/v2/"+repo+"/blobs/"+ld.String(), nil, 0, nil)
	checkErrorDoc(t, "GET blob", r, s3)
	if code, body := readyz(t, b); code != http.StatusServiceUnavailable || !strings.Contains(body, `"storage":"unavailable"`) {
		t.Fatalf("readyz with the store down: %d %s", code, body)
	}

	s3.Restart(t)
	testutil.Eventually(t, 30*time.Second, "readyz after the store is back", func() bool {
		code, _ := readyz(t, b)
		return code == http.StatusOK
	})
	// Nothing of the failed push is visible: no tag, no manifest.
	r = s3Send(t, http.MethodGet, b.URL+"/v2/"+repo+"/manifests/v1", nil, 0, map[string]string{"Accept": string(mt)})
	if r.status != http.StatusNotFound {
		t.Fatalf("tag of the failed push: %d %s, want 404", r.status, r.body)
	}
	md, _ := img.Digest()
	r = s3Send(t, http.MethodHead, b.URL+"/v2/"+repo+"/manifests/"+md.String(), nil, 0, map[string]string{"Accept": string(mt)})
	if r.status != http.StatusNotFound {
		t.Fatalf("manifest of the failed push: %d, want 404", r.status)
	}
	r = s3Send(t, http.MethodGet, b.URL+"/v2/"+repo+"/tags/list", nil, 0, nil)
	if r.status == http.StatusOK && strings.Contains(string(r.body), `"v1"`) {
		t.Fatalf("tag list shows the failed push: %s", r.body)
	}

	// The client retries the whole push; the blob that made it is reused.
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push after the store came back: %v", err)
	}
	pullVerified(t, ref, img)

	for _, leak := range []string{s3.SecretKey, s3.AccessKey} {
		if strings.Contains(logs.String(), leak) {
			t.Fatalf("credential %q in the logs:\n%s", leak, logs.String())
		}
	}
}

// Credentials never reach the logs, even at debug level and when the store
// rejects them, nor the configuration printout.
func TestS3CredentialsStayOutOfLogs(t *testing.T) {
	s3 := testutil.StartS3(t)
	secrets := []string{s3.SecretKey, s3.AccessKey}
	var logs syncBuffer
	b := startDebugBerth(t, s3.ConfigYAML()+"log:\n  level: debug\n", &logs)
	ref, err := name.ParseReference(b+"/creds/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push: %v", err)
	}
	pullVerified(t, ref, img)
	if !strings.Contains(logs.String(), "level=DEBUG") {
		t.Fatalf("no debug lines logged, so the test proves little:\n%s", logs.String())
	}
	for _, s := range secrets {
		if strings.Contains(logs.String(), s) {
			t.Fatalf("credential %q in the logs:\n%s", s, logs.String())
		}
	}

	// Wrong credentials: start-up fails (the http secret cannot be read) and
	// the error names neither key.
	wrong := strings.Replace(s3.ConfigYAML(), s3.SecretKey, "not-"+s3.SecretKey, 1)
	cfg := loadS3Config(t, wrong)
	var logs2 syncBuffer
	_, err = server.New(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs2, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err == nil {
		t.Fatal("server started with a wrong secret key")
	}
	t.Logf("start-up with a wrong secret key: %v", err)
	for _, s := range append(secrets, "not-"+s3.SecretKey) {
		if strings.Contains(err.Error(), s) || strings.Contains(logs2.String(), s) {
			t.Fatalf("credential %q in the start-up error or logs: %v\n%s", s, err, logs2.String())
		}
	}

	out, err := cfg.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range append(secrets, "not-"+s3.SecretKey) {
		if strings.Contains(string(out), s) {
			t.Fatalf("credential %q in the printed configuration:\n%s", s, out)
		}
	}
}

func loadS3Config(t *testing.T, yaml string) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Apply(config.Overrides{Addr: "127.0.0.1:0", DebugAddr: "127.0.0.1:0"}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startDebugBerth runs a server logging at debug level (StartBerth logs at
// info) and returns its host:port.
func startDebugBerth(t *testing.T, yaml string, logs io.Writer) string {
	t.Helper()
	cfg := loadS3Config(t, yaml)
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return srv.Addr()
}

// The catalog and berth's tag push-time endpoint work on S3, with S3
// configured through REGISTRY_* variables only (no file).
func TestS3CatalogAndTagTimesFromEnvironment(t *testing.T) {
	s3 := testutil.StartS3(t)
	for k, v := range map[string]string{
		"REGISTRY_STORAGE":                   "s3",
		"REGISTRY_STORAGE_S3_BUCKET":         s3.Bucket,
		"REGISTRY_STORAGE_S3_REGION":         s3.Region,
		"REGISTRY_STORAGE_S3_REGIONENDPOINT": s3.Endpoint,
		"REGISTRY_STORAGE_S3_FORCEPATHSTYLE": "true",
		"REGISTRY_STORAGE_S3_SECURE":         "false",
		"REGISTRY_STORAGE_S3_ACCESSKEY":      s3.AccessKey,
		"REGISTRY_STORAGE_S3_SECRETKEY":      s3.SecretKey,
	} {
		t.Setenv(k, v)
	}
	start := time.Now()
	b := testutil.StartBerth(t, testutil.Options{})
	if typ := b.Config.Distribution.Storage.Type(); typ != "s3" {
		t.Fatalf("storage %s, want s3 from the environment", typ)
	}
	// An empty bucket is a ready registry (nothing under the root yet).
	if code, body := readyz(t, b); code != http.StatusOK {
		t.Fatalf("readyz on an empty bucket: %d %s", code, body)
	}
	pushed := map[string]v1.Hash{}
	for _, r := range []string{"zeta/app:v1", "alpha/app:v1", "alpha/app:v2"} {
		img, err := random.Image(512, 1)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := name.ParseReference(b.Host+"/"+r, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatalf("push %s: %v", r, err)
		}
		pushed[r], _ = img.Digest()
	}

	r := s3Send(t, http.MethodGet, b.URL+"/v2/_catalog", nil, 0, nil)
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"repositories":["alpha/app","zeta/app"]}` {
		t.Fatalf("catalog: %d %s", r.status, r.body)
	}
	r = s3Send(t, http.MethodGet, b.URL+"/v2/_catalog?n=1", nil, 0, nil)
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `["alpha/app"]`) || !strings.Contains(r.header.Get("Link"), "last=alpha") {
		t.Fatalf("catalog page: %d %s, Link %q", r.status, r.body, r.header.Get("Link"))
	}

	r = s3Send(t, http.MethodGet, b.URL+"/v2/alpha/app/_berth/tags", nil, 0, nil)
	if r.status != http.StatusOK {
		t.Fatalf("tag times: %d %s", r.status, r.body)
	}
	var tags server.TagsResponse
	if err := json.Unmarshal(r.body, &tags); err != nil {
		t.Fatalf("tag times: %v: %s", err, r.body)
	}
	if len(tags.Tags) != 2 || tags.Tags[0].Tag != "v1" || tags.Tags[1].Tag != "v2" {
		t.Fatalf("tag times: %s", r.body)
	}
	for _, ti := range tags.Tags {
		if ti.Digest != pushed["alpha/app:"+ti.Tag].String() {
			t.Errorf("tag %s: digest %s, pushed %s", ti.Tag, ti.Digest, pushed["alpha/app:"+ti.Tag])
		}
		// S3 keeps whole seconds; the bounds only catch a zero or made-up time.
		if ti.Pushed.Before(start.Add(-time.Minute)) || ti.Pushed.After(time.Now().Add(time.Minute)) {
			t.Errorf("tag %s: pushed %s, the push was at %s", ti.Tag, ti.Pushed, start)
		}
	}
	r = s3Send(t, http.MethodGet, b.URL+"/v2/nope/app/_berth/tags", nil, 0, nil)
	if r.status != http.StatusNotFound || !strings.Contains(string(r.body), "NAME_UNKNOWN") {
		t.Fatalf("tag times of an unknown repository: %d %s", r.status, r.body)
	}

	// Deletes are on without a file (gc and prune need them).
	r = s3Send(t, http.MethodDelete, b.URL+"/v2/zeta/app/manifests/"+pushed["zeta/app:v1"].String(), nil, 0, nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("delete a manifest: %d %s", r.status, r.body)
	}
}

// With redirects switched on, blob downloads go to a presigned URL on the
// store and clients that can reach it still pull verified images; the
// default keeps blob bytes flowing through berth.
func TestS3BlobRedirects(t *testing.T) {
	s3 := testutil.StartS3(t)
	noFollow := &http.Client{Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		name, yaml string
		redirect   bool
	}{
		{"default", strings.Replace(s3.ConfigYAML(), "  redirect:\n    disable: true\n", "", 1), false},
		{"enabled", strings.Replace(s3.ConfigYAML(), "disable: true", "disable: false", 1), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Contains(tc.yaml, "redirect") != tc.redirect {
				t.Fatalf("test config not as intended:\n%s", tc.yaml)
			}
			b := testutil.StartBerth(t, testutil.Options{ConfigYAML: tc.yaml})
			ref, err := name.ParseReference(b.Host+"/redir/app:"+tc.name, name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			img, err := random.Image(4096, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.Write(ref, img); err != nil {
				t.Fatalf("push: %v", err)
			}
			pullVerified(t, ref, img)
			layers, _ := img.Layers()
			ld, _ := layers[0].Digest()
			resp, err := noFollow.Get(b.URL + "/v2/redir/app/blobs/" + ld.String())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc := resp.Header.Get("Location")
			if !tc.redirect {
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("blob GET without redirects: %d (Location %q)", resp.StatusCode, loc)
				}
				return
			}
			if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, s3.Endpoint+"/") ||
				!strings.Contains(loc, "X-Amz-Signature=") || !strings.Contains(loc, "X-Amz-Expires=") {
				t.Fatalf("blob GET with redirects: %d, Location %q; want 307 to a presigned URL on %s", resp.StatusCode, loc, s3.Endpoint)
			}
			// SigV4 query signing puts the access key id (not the secret) in
			// the URL: docs/s3.md says so.
			if strings.Contains(loc, s3.SecretKey) || !strings.Contains(loc, "X-Amz-Credential="+s3.AccessKey) {
				t.Fatalf("presigned URL %q: want the access key id and not the secret key", loc)
			}
		})
	}
}
