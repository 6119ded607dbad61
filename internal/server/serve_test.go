package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/redis/go-redis/v9"

	"github.com/berth-registry/berth/internal/maintenance"
	"github.com/berth-registry/berth/internal/server"
	"github.com/berth-registry/berth/internal/testutil"
)

func basic(u, p string) *authn.Basic { return &authn.Basic{Username: u, Password: p} }

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func pushRandom(t *testing.T, ref name.Reference, opts ...remote.Option) v1.Image {
	t.Helper()
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, opts...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return img
}

func pullVerify(ref name.Reference, want v1.Hash, opts ...remote.Option) error {
	img, err := remote.Image(ref, opts...)
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	if err := validate.Image(img); err != nil {
		return fmt.Errorf("verify %s: %w", ref, err)
	}
	if d, _ := img.Digest(); d != want {
		return fmt.Errorf("pull %s: digest %s, want %s", ref, d, want)
	}
	return nil
}

func ociError(t *testing.T, body []byte) string {
	t.Helper()
	var doc struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || len(doc.Errors) == 0 {
		t.Fatalf("not an OCI error body: %q", body)
	}
	return doc.Errors[0].Code
}

func TestAuthChallengeAndNoUserEnumeration(t *testing.T) {
	b := testutil.StartBerth(t, testutil.Options{Users: map[string]string{"alice": "correct horse"}})

	get := func(user, pass string, path string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodGet, b.URL+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	resp, body := get("", "", "/v2/")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no credentials: %d, want 401", resp.StatusCode)
	}
	if ch := resp.Header.Get("WWW-Authenticate"); ch != `Basic realm="berth"` {
		t.Fatalf("challenge %q", ch)
	}
	if code := ociError(t, body); code != "UNAUTHORIZED" {
		t.Fatalf("code %s", code)
	}
	// A wrong password for a real user and any password for a made-up user
	// must look the same.
	r1, b1 := get("alice", "wrong", "/v2/")
	r2, b2 := get("mallory", "wrong", "/v2/")
	if r1.StatusCode != 401 || r2.StatusCode != 401 || !bytes.Equal(b1, b2) ||
		r1.Header.Get("WWW-Authenticate") != r2.Header.Get("WWW-Authenticate") {
		t.Fatalf("responses differ: %d %q vs %d %q", r1.StatusCode, b1, r2.StatusCode, b2)
	}
	// The push-time extension is guarded the same way.
	if resp, _ := get("", "", "/v2/x/_berth/tags"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("extension without credentials: %d", resp.StatusCode)
	}

	auth := remote.WithAuth(&authn.Basic{Username: "alice", Password: "correct horse"})
	ref := mustRef(t, b.Host+"/private/app:1")
	img := pushRandom(t, ref, auth)
	d, _ := img.Digest()
	if err := pullVerify(ref, d, auth); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Image(ref); err == nil {
		t.Fatal("anonymous pull succeeded")
	}
}

func TestWritesRefusedDuringMaintenanceReadsServed(t *testing.T) {
	b := testutil.StartBerth(t, testutil.Options{})
	ref := mustRef(t, b.Host+"/app:before")
	img := pushRandom(t, ref)
	d, _ := img.Digest()

	ctx := context.Background()
	lease, err := maintenance.NewCoordinator(b.Backend, "test-gc", maintenance.CoordinatorOptions{
		LeaseTTL: 5 * time.Second, ReplicaPoll: 100 * time.Millisecond,
	}).Begin(ctx)
	if err != nil {
		t.Fatalf("take lease: %v", err)
	}
	if err := pullVerify(ref, d); err != nil {
		t.Fatalf("read during maintenance: %v", err)
	}
	resp, err := http.Post(b.URL+"/v2/app/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("write during maintenance: %d Retry-After=%q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if code := ociError(t, body); code != "UNAVAILABLE" {
		t.Fatalf("code %s", code)
	}
	mresp, err := http.Get(b.DebugURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(metricsText), "\nberth_maintenance_readonly 1\n") {
		t.Fatal("berth_maintenance_readonly is not 1 during maintenance")
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "writes allowed after release", func() bool {
		refused, _ := b.Replica.WritesRefused()
		return !refused
	})
	pushRandom(t, mustRef(t, b.Host+"/app:after"))
}

func TestRedisOutageKeepsServingAndRecovers(t *testing.T) {
	r := testutil.StartRedis(t)
	b := testutil.StartBerth(t, testutil.Options{Redis: r.Addr})
	rc := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rc.Close()

	readyz := func() (int, map[string]any) {
		resp, err := http.Get(b.DebugURL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&doc)
		return resp.StatusCode, doc
	}
	redisCheck := func() string {
		_, doc := readyz()
		checks, _ := doc["checks"].(map[string]any)
		s, _ := checks["redis"].(string)
		return s
	}
	testutil.Eventually(t, 10*time.Second, "redis in use", func() bool { return redisCheck() == "ok" })

	refA := mustRef(t, b.Host+"/cached/a:1")
	imgA := pushRandom(t, refA)
	dA, _ := imgA.Digest()
	if err := pullVerify(refA, dA); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "blob descriptors cached in redis", func() bool {
		keys, _ := rc.Keys(context.Background(), "blobs::*").Result()
		return len(keys) > 0
	})

	// Pull continuously while Redis dies and comes back.
	var pulls, failures atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var firstErr atomic.Value
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := pullVerify(refA, dA); err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
			pulls.Add(1)
		}
	}()

	r.Kill()
	testutil.Eventually(t, 10*time.Second, "readyz reports redis down", func() bool { return redisCheck() == "unreachable" })
	code, doc := readyz()
	if code != http.StatusOK || doc["status"] != "degraded" {
		t.Fatalf("readyz with redis down: %d %v (a cache outage must not take the replica out of service)", code, doc)
	}
	refB := mustRef(t, b.Host+"/cached/b:1")
	imgB := pushRandom(t, refB)
	dB, _ := imgB.Digest()
	if err := pullVerify(refB, dB); err != nil {
		t.Fatalf("pull with redis down: %v", err)
	}

	r.Restart(t)
	testutil.Eventually(t, 15*time.Second, "redis back in use", func() bool { return redisCheck() == "ok" })
	refC := mustRef(t, b.Host+"/cached/c:1")
	imgC := pushRandom(t, refC)
	dC, _ := imgC.Digest()
	for _, p := range []struct {
		ref name.Reference
		d   v1.Hash
	}{{refA, dA}, {refB, dB}, {refC, dC}} {
		if err := pullVerify(p.ref, p.d); err != nil {
			t.Fatalf("after redis returned: %v", err)
		}
	}
	close(stop)
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d of %d pulls failed while redis went away and came back; first: %v", failures.Load(), pulls.Load(), firstErr.Load())
	}
	testutil.Eventually(t, 30*time.Second, "cache refilled", func() bool {
		keys, _ := rc.Keys(context.Background(), "blobs::*").Result()
		return len(keys) > 0
	})
}

func writeCert(t *testing.T, dir string, serial int64) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "berth-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	// Write beside and rename, as a Secret volume update does.
	for _, f := range []struct {
		path string
		data []byte
	}{{certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, {keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})}} {
		if err := os.WriteFile(f.path+".new", f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		// Make the change visible even within the file system's timestamp resolution.
		future := time.Now().Add(time.Duration(serial) * time.Second)
		_ = os.Chtimes(f.path+".new", future, future)
		if err := os.Rename(f.path+".new", f.path); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return certFile, keyFile, pool
}

func TestTLSReloadsRotatedCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool1 := writeCert(t, dir, 1)
	tb := testutil.StartBerth(t, testutil.Options{
		Users:     map[string]string{"u": "p"},
		Overrides: configOverridesTLS(certFile, keyFile),
	})
	if !strings.HasPrefix(tb.URL, "https://") {
		t.Fatalf("URL %s", tb.URL)
	}
	serialSeen := func(pool *x509.CertPool) (int64, error) {
		conn, err := tls.Dial("tcp", tb.Host, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
	}
	if s, err := serialSeen(pool1); err != nil || s != 1 {
		t.Fatalf("first certificate: serial %d, %v", s, err)
	}
	// Old protocol versions are refused.
	if c, err := tls.Dial("tcp", tb.Host, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}); err == nil {
		c.Close()
		t.Fatal("TLS 1.1 handshake succeeded")
	}
	_, _, pool2 := writeCert(t, dir, 2)
	testutil.Eventually(t, 10*time.Second, "rotated certificate served", func() bool {
		s, err := serialSeen(pool2)
		return err == nil && s == 2
	})
}

func TestShutdownLetsUploadFinish(t *testing.T) {
	root := filepath.Join(t.TempDir(), "data")
	b := testutil.StartBerth(t, testutil.Options{Root: root})
	resp, err := http.Post(b.URL+"/v2/slow/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		t.Fatalf("start upload: %d", resp.StatusCode)
	}
	blob := bytes.Repeat([]byte("berth"), 200_000)
	sum := sha256.Sum256(blob)
	dgst := "sha256:" + hex.EncodeToString(sum[:])
	u := loc
	if !strings.HasPrefix(u, "http") {
		u = b.URL + u
	}
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPut, u+sep+"digest="+dgst, pr)
	req.ContentLength = int64(len(blob))
	req.Header.Set("Content-Type", "application/octet-stream")
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		resp.Body.Close()
		done <- result{code: resp.StatusCode}
	}()
	half := len(blob) / 2
	if _, err := pw.Write(blob[:half]); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "upload in flight", func() bool { return b.Server.InFlightWrites() == 1 })
	stopped := make(chan struct{})
	go func() { b.Stop(); close(stopped) }()
	testutil.Eventually(t, 5*time.Second, "listener closed", func() bool {
		c, err := net.DialTimeout("tcp", b.Host, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return false
		}
		return true
	})
	if _, err := pw.Write(blob[half:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	r := <-done
	if r.err != nil || r.code != http.StatusCreated {
		t.Fatalf("upload in flight during shutdown: code %d err %v", r.code, r.err)
	}
	<-stopped
	b2 := testutil.StartBerth(t, testutil.Options{Root: root})
	head, err := http.Head(b2.URL + "/v2/slow/blobs/" + dgst)
	if err != nil {
		t.Fatal(err)
	}
	head.Body.Close()
	if head.StatusCode != http.StatusOK {
		t.Fatalf("blob after restart: %d", head.StatusCode)
	}
}

func TestPushTimesExtension(t *testing.T) {
	b := testutil.StartBerth(t, testutil.Options{})
	img := pushRandom(t, mustRef(t, b.Host+"/times/app:a"))
	for _, tag := range []string{"b", "c"} {
		if err := remote.Tag(mustRef(t, b.Host+"/times/app:a").Context().Tag(tag), img); err != nil {
			t.Fatal(err)
		}
	}
	// Backdate tag b as if it was pushed a year ago.
	old := time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC)
	link := filepath.Join(b.Root, "docker/registry/v2/repositories/times/app/_manifests/tags/b/current/link")
	if err := os.Chtimes(link, old, old); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(b.URL + "/v2/times/app/_berth/tags?n=2")
	if err != nil {
		t.Fatal(err)
	}
	var page server.TagsResponse
	_ = json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if len(page.Tags) != 2 || page.Tags[0].Tag != "a" || page.Tags[1].Tag != "b" {
		t.Fatalf("first page %+v", page.Tags)
	}
	if !page.Tags[1].Pushed.Equal(old) {
		t.Fatalf("tag b pushed %s, want %s", page.Tags[1].Pushed, old)
	}
	if time.Since(page.Tags[0].Pushed) > time.Hour {
		t.Fatalf("tag a pushed %s, want just now", page.Tags[0].Pushed)
	}
	d, _ := img.Digest()
	if page.Tags[0].Digest != d.String() {
		t.Fatalf("digest %s want %s", page.Tags[0].Digest, d)
	}
	next := resp.Header.Get("Link")
	if !strings.Contains(next, "last=b") {
		t.Fatalf("Link %q", next)
	}
	resp, err = http.Get(b.URL + "/v2/times/app/_berth/tags?n=2&last=b")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if len(page.Tags) != 1 || page.Tags[0].Tag != "c" || resp.Header.Get("Link") != "" {
		t.Fatalf("second page %+v link %q", page.Tags, resp.Header.Get("Link"))
	}
	resp, err = http.Get(b.URL + "/v2/nothing/here/_berth/tags")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || ociError(t, body) != "NAME_UNKNOWN" {
		t.Fatalf("unknown repository: %d %s", resp.StatusCode, body)
	}
}

func TestUploadSurvivesRestartWithPersistedSecret(t *testing.T) {
	root := filepath.Join(t.TempDir(), "data")
	b := testutil.StartBerth(t, testutil.Options{Root: root})
	resp, err := http.Post(b.URL+"/v2/resume/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	b.Stop()

	b2 := testutil.StartBerth(t, testutil.Options{Root: root})
	u := loc
	if i := strings.Index(u, "/v2/"); i >= 0 {
		u = b2.URL + u[i:]
	}
	blob := []byte("resumed after a restart")
	sum := sha256.Sum256(blob)
	req, _ := http.NewRequest(http.MethodPut, u+"&digest=sha256:"+hex.EncodeToString(sum[:]), bytes.NewReader(blob))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("finishing an upload started before a restart: %d (the http secret must persist)", resp.StatusCode)
	}
}
