package server_test

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/internal/testutil"
)

func ociDo(t *testing.T, method, u, ctype string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", v1.MediaTypeImageManifest)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

func ociBlob(t *testing.T, base, repo string, content []byte) digest.Digest {
	t.Helper()
	res, b := ociDo(t, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d %s", res.StatusCode, b)
	}
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(content)
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	res, b = ociDo(t, http.MethodPut, base+loc.RequestURI(), "application/octet-stream", content)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %d %s", res.StatusCode, b)
	}
	return d
}

// foreignManifest is an image whose only layer is non-distributable: it
// lives at url and is not pushed.
func foreignManifest(t *testing.T, base, repo, layerURL string) []byte {
	t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"windows","rootfs":{"type":"layers","diff_ids":[]}}`)
	cfgD := ociBlob(t, base, repo, cfg)
	layerD := digest.FromString("foreign layer " + layerURL)
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":%q,"size":123456,"urls":[%q]}]}`,
		v1.MediaTypeImageManifest, v1.MediaTypeImageConfig, cfgD, len(cfg), layerD, layerURL))
}

// TestForeignLayers: non-distributable layers are accepted as the
// configuration says (validation.manifests.urls, as upstream), and a
// refused URL is a 400 that says why, never a 500.
func TestForeignLayers(t *testing.T) {
	const conf = `version: 0.1
storage:
  filesystem:
    rootdirectory: /unused
  delete:
    enabled: true
validation:
  manifests:
    urls:
      allow: ['^https://store\.example\.com/']
      deny: ['/forbidden/']
`
	t.Run("default refuses with a clear error", func(t *testing.T) {
		b := testutil.StartBerth(t, testutil.Options{})
		m := foreignManifest(t, b.URL, "win", "https://store.example.com/layer.tgz")
		res, body := ociDo(t, http.MethodPut, b.URL+"/v2/win/manifests/v1", v1.MediaTypeImageManifest, m)
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "MANIFEST_INVALID") ||
			!strings.Contains(string(body), "validation.manifests.urls.allow") {
			t.Fatalf("PUT: %d %s", res.StatusCode, body)
		}
		if res, _ := ociDo(t, http.MethodHead, b.URL+"/v2/win/manifests/v1", "", nil); res.StatusCode != http.StatusNotFound {
			t.Fatalf("refused manifest stored: HEAD %d", res.StatusCode)
		}
	})
	t.Run("configured", func(t *testing.T) {
		b := testutil.StartBerth(t, testutil.Options{ConfigYAML: conf, Root: t.TempDir()})
		m := foreignManifest(t, b.URL, "win", "https://store.example.com/layer.tgz")
		res, body := ociDo(t, http.MethodPut, b.URL+"/v2/win/manifests/v1", v1.MediaTypeImageManifest, m)
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("allowed URL: %d %s", res.StatusCode, body)
		}
		res, body = ociDo(t, http.MethodGet, b.URL+"/v2/win/manifests/v1", "", nil)
		if res.StatusCode != http.StatusOK || !bytes.Equal(body, m) {
			t.Fatalf("pull: %d %s", res.StatusCode, body)
		}
		for _, tc := range []struct{ url, why string }{
			{"https://elsewhere.example.com/layer.tgz", "refused by validation.manifests.urls"},
			{"https://store.example.com/forbidden/layer.tgz", "refused by validation.manifests.urls"},
			{"ftp://store.example.com/layer.tgz", "http or https"},
			{"https://store.example.com/layer.tgz#frag", "without a fragment"},
		} {
			m := foreignManifest(t, b.URL, "win", tc.url)
			res, body := ociDo(t, http.MethodPut, b.URL+"/v2/win/manifests/bad", v1.MediaTypeImageManifest, m)
			if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), tc.why) {
				t.Errorf("layer URL %s: %d %s, want 400 %q", tc.url, res.StatusCode, body, tc.why)
			}
		}
	})
}

// TestSinglePOSTUpload pushes blobs with one POST carrying the blob, by
// sha256 and sha512; a blob that does not match its digest is refused
// without leaving anything in storage.
func TestSinglePOSTUpload(t *testing.T) {
	b := testutil.StartBerth(t, testutil.Options{})
	content := []byte("a small config blob")
	for _, d := range []digest.Digest{digest.FromBytes(content), digest.SHA512.FromBytes(content)} {
		res, body := ociDo(t, http.MethodPost, b.URL+"/v2/app/blobs/uploads/?digest="+d.String(), "application/octet-stream", content)
		if res.StatusCode != http.StatusCreated || res.Header.Get("Docker-Content-Digest") != d.String() ||
			!strings.HasSuffix(res.Header.Get("Location"), "/v2/app/blobs/"+d.String()) {
			t.Fatalf("POST %s: %d %v %s", d.Algorithm(), res.StatusCode, res.Header, body)
		}
		res, body = ociDo(t, http.MethodGet, b.URL+"/v2/app/blobs/"+d.String(), "", nil)
		if res.StatusCode != http.StatusOK || !bytes.Equal(body, content) {
			t.Fatalf("GET %s: %d %s", d, res.StatusCode, body)
		}
	}

	before := storageFiles(t, b.Root)
	res, body := ociDo(t, http.MethodPost, b.URL+"/v2/fresh/blobs/uploads/?digest="+digest.FromString("other").String(), "application/octet-stream", content)
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "DIGEST_INVALID") {
		t.Fatalf("POST with a wrong digest: %d %s", res.StatusCode, body)
	}
	if after := storageFiles(t, b.Root); !slices.Equal(after, before) {
		t.Fatalf("a refused POST changed storage:\nbefore %v\nafter  %v", before, after)
	}
}

// storageFiles lists every file and directory under root.
func storageFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		out = append(out, p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
