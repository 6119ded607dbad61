package digests_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/redis/go-redis/v9"

	"github.com/berth-registry/berth/internal/testutil"
)

type registry struct {
	t    *testing.T
	base string
}

func (r registry) do(method, path, ctype string, body []byte) (*http.Response, []byte) {
	r.t.Helper()
	req, err := http.NewRequest(method, r.base+path, bytes.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", v1.MediaTypeImageManifest+", "+v1.MediaTypeImageIndex)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

func (r registry) expect(res *http.Response, body []byte, status int, what string) {
	r.t.Helper()
	if res.StatusCode != status {
		r.t.Fatalf("%s: %d %s, want %d", what, res.StatusCode, body, status)
	}
}

// uploadURL starts an upload session and returns its path and query.
func (r registry) uploadURL(repo string) *url.URL {
	r.t.Helper()
	res, b := r.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", "", nil)
	r.expect(res, b, http.StatusAccepted, "start upload")
	u, err := url.Parse(res.Header.Get("Location"))
	if err != nil {
		r.t.Fatal(err)
	}
	return u
}

func withDigest(u *url.URL, d digest.Digest) string {
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	return u.RequestURI()
}

// created checks a 201 names the content by the digest the client used.
func (r registry) created(res *http.Response, body []byte, d digest.Digest, what string) {
	r.t.Helper()
	r.expect(res, body, http.StatusCreated, what)
	if got := res.Header.Get("Docker-Content-Digest"); got != d.String() {
		r.t.Errorf("%s: Docker-Content-Digest %s, want %s", what, got, d)
	}
	if loc := res.Header.Get("Location"); !strings.HasSuffix(loc, d.String()) {
		r.t.Errorf("%s: Location %s does not name %s", what, loc, d)
	}
}

// monolithic pushes a blob with POST then one PUT.
func (r registry) monolithic(repo string, content []byte) digest.Digest {
	r.t.Helper()
	d := digest.SHA512.FromBytes(content)
	res, b := r.do(http.MethodPut, withDigest(r.uploadURL(repo), d), "application/octet-stream", content)
	r.created(res, b, d, "monolithic sha512 upload")
	return d
}

// chunked pushes a blob in two PATCHes and a closing PUT.
func (r registry) chunked(repo string, content []byte) digest.Digest {
	r.t.Helper()
	d := digest.SHA512.FromBytes(content)
	u := r.uploadURL(repo)
	half := len(content) / 2
	for i, part := range [][]byte{content[:half], content[half:]} {
		start := 0
		if i == 1 {
			start = half
		}
		req, _ := http.NewRequest(http.MethodPatch, r.base+u.RequestURI(), bytes.NewReader(part))
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", start, start+len(part)-1))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			r.t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		r.expect(res, b, http.StatusAccepted, "PATCH chunk")
		if u, err = url.Parse(res.Header.Get("Location")); err != nil {
			r.t.Fatal(err)
		}
	}
	res, b := r.do(http.MethodPut, withDigest(u, d), "application/octet-stream", nil)
	r.created(res, b, d, "chunked sha512 upload")
	return d
}

// read fetches a blob or manifest and checks it is what was pushed, under
// the name it was pushed by.
func (r registry) read(kind, repo string, d digest.Digest, want []byte) {
	r.t.Helper()
	for _, m := range []string{http.MethodHead, http.MethodGet} {
		res, b := r.do(m, "/v2/"+repo+"/"+kind+"/"+d.String(), "", nil)
		r.expect(res, b, http.StatusOK, m+" "+kind+" "+d.String())
		if got := res.Header.Get("Docker-Content-Digest"); got != d.String() {
			r.t.Errorf("%s %s %s: Docker-Content-Digest %s", m, kind, d, got)
		}
		if m == http.MethodGet && !bytes.Equal(b, want) {
			r.t.Errorf("GET %s %s: content differs", kind, d)
		}
	}
}

func (r registry) gone(kind, repo string, d digest.Digest) {
	r.t.Helper()
	res, b := r.do(http.MethodHead, "/v2/"+repo+"/"+kind+"/"+d.String(), "", nil)
	r.expect(res, b, http.StatusNotFound, "HEAD deleted "+kind+" "+d.String())
}

// TestSHA512EndToEnd pushes, pulls, mounts and deletes blobs and manifests
// named by sha512 through berth's API.
// The blob-descriptor cache answers before storage, so both kinds run:
// every name removed must leave the cache too.
func TestSHA512EndToEnd(t *testing.T) {
	t.Run("memory cache", func(t *testing.T) {
		sha512EndToEnd(t, testutil.StartBerth(t, testutil.Options{}))
	})
	t.Run("redis cache", func(t *testing.T) {
		rs := testutil.StartRedis(t)
		b := testutil.StartBerth(t, testutil.Options{Redis: rs.Addr})
		testutil.Eventually(t, 10*time.Second, "writes allowed", func() bool {
			refused, _ := b.Replica.WritesRefused()
			return !refused
		})
		sha512EndToEnd(t, b)
		rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
		defer rc.Close()
		if keys, err := rc.Keys(context.Background(), "repository::*").Result(); err != nil || len(keys) == 0 {
			t.Fatalf("the Redis cache was not used (%v)", err)
		}
	})
}

func sha512EndToEnd(t *testing.T, b *testutil.Berth) {
	r := registry{t, b.URL}

	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer := bytes.Repeat([]byte("sha512 layer "), 1000)
	cfgD := r.monolithic("app", config)
	layerD := r.chunked("app", layer)
	r.read("blobs", "app", cfgD, config)
	r.read("blobs", "app", layerD, layer)
	emptyD := r.monolithic("app", nil)
	r.read("blobs", "app", emptyD, nil)

	// A content mismatch is the client's error, as for sha256.
	res, body := r.do(http.MethodPut, withDigest(r.uploadURL("app"), digest.SHA512.FromString("other")), "application/octet-stream", []byte("this"))
	r.expect(res, body, http.StatusBadRequest, "upload with a wrong sha512")

	// Mount into another repository by sha512.
	res, body = r.do(http.MethodPost, "/v2/other/blobs/uploads/?mount="+layerD.String()+"&from=app", "", nil)
	r.created(res, body, layerD, "mount by sha512")
	r.read("blobs", "other", layerD, layer)

	manifest := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":%d},"layers":[{"mediaType":%q,"digest":%q,"size":%d}]}`,
		v1.MediaTypeImageManifest, v1.MediaTypeImageConfig, cfgD, len(config), v1.MediaTypeImageLayer, layerD, len(layer)))
	manD := digest.SHA512.FromBytes(manifest)
	res, body = r.do(http.MethodPut, "/v2/app/manifests/"+manD.String(), v1.MediaTypeImageManifest, manifest)
	r.created(res, body, manD, "manifest by sha512")
	r.read("manifests", "app", manD, manifest)

	index := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[{"mediaType":%q,"digest":%q,"size":%d}]}`,
		v1.MediaTypeImageIndex, v1.MediaTypeImageManifest, manD, len(manifest)))
	idxD := digest.SHA512.FromBytes(index)
	res, body = r.do(http.MethodPut, "/v2/app/manifests/"+idxD.String(), v1.MediaTypeImageIndex, index)
	r.created(res, body, idxD, "index by sha512")
	r.read("manifests", "app", idxD, index)

	res, body = r.do(http.MethodPut, "/v2/app/manifests/"+digest.SHA512.FromString("x").String(), v1.MediaTypeImageManifest, manifest)
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "DIGEST_INVALID") {
		t.Fatalf("manifest under a wrong sha512: %d %s", res.StatusCode, body)
	}

	// Deleting by sha512 deletes the content under every name.
	res, body = r.do(http.MethodDelete, "/v2/app/manifests/"+idxD.String(), "", nil)
	r.expect(res, body, http.StatusAccepted, "delete index by sha512")
	r.gone("manifests", "app", idxD)
	r.gone("manifests", "app", digest.FromBytes(index))

	// And deleting by sha256 removes the sha512 name too.
	res, body = r.do(http.MethodDelete, "/v2/app/manifests/"+digest.FromBytes(manifest).String(), "", nil)
	r.expect(res, body, http.StatusAccepted, "delete manifest by sha256")
	r.gone("manifests", "app", manD)

	res, body = r.do(http.MethodDelete, "/v2/app/blobs/"+layerD.String(), "", nil)
	r.expect(res, body, http.StatusAccepted, "delete blob by sha512")
	r.gone("blobs", "app", layerD)
	r.gone("blobs", "app", digest.FromBytes(layer))
	r.read("blobs", "other", layerD, layer) // the mount is the other repository's

	res, body = r.do(http.MethodDelete, "/v2/other/blobs/"+digest.FromBytes(layer).String(), "", nil)
	r.expect(res, body, http.StatusAccepted, "delete blob by sha256")
	r.gone("blobs", "other", layerD)
}
