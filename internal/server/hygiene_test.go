package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/internal/testutil"
)

const (
	ociManifestType = "application/vnd.oci.image.manifest.v1+json"
	ociIndexType    = "application/vnd.oci.image.index.v1+json"
)

// leaks are strings no error body may contain besides the storage root:
// they tell a client which storage driver and layout the registry uses.
var leaks = []string{"/docker/registry/v2", "Path not found", "PathNotFound", "filesystem", "s3aws", "DriverName"}

// ociErr is an OCI error document.
type ociErr struct {
	Errors []struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Detail  any    `json:"detail"`
	} `json:"errors"`
}

type exchange struct {
	method, path, ctype string
	body                []byte
}

type answer struct {
	status int
	header http.Header
	body   []byte
	doc    ociErr
}

func send(t *testing.T, base string, x exchange) answer {
	t.Helper()
	req, err := http.NewRequest(x.method, base+x.path, bytes.NewReader(x.body))
	if err != nil {
		t.Fatal(err)
	}
	if x.ctype != "" {
		req.Header.Set("Content-Type", x.ctype)
	}
	req.Header.Set("Accept", strings.Join([]string{ociManifestType, ociIndexType,
		"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json"}, ", "))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", x.method, x.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header, body: b}
	_ = json.Unmarshal(b, &a.doc)
	return a
}

// checkClientError asserts a 4xx with an OCI error document of the given
// code ("" for any) that shows nothing of the storage.
func checkClientError(t *testing.T, root string, x exchange, a answer, status int, code string) {
	t.Helper()
	where := fmt.Sprintf("%s %s → %d %s", x.method, x.path, a.status, a.body)
	if a.status != status {
		t.Errorf("%s: want status %d", where, status)
	}
	for _, s := range append([]string{root}, leaks...) {
		if bytes.Contains(a.body, []byte(s)) {
			t.Errorf("%s: body shows %q", where, s)
		}
	}
	if x.method == http.MethodHead {
		return
	}
	if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want JSON", where, ct)
	}
	if len(a.doc.Errors) == 0 {
		t.Errorf("%s: no OCI error document", where)
		return
	}
	for _, e := range a.doc.Errors {
		if e.Code == "" || e.Message == "" {
			t.Errorf("%s: error without code or message", where)
		}
	}
	if code != "" && a.doc.Errors[0].Code != code {
		t.Errorf("%s: first code %s, want %s", where, a.doc.Errors[0].Code, code)
	}
}

// listStorage is every path under root with its size and mtime.
func listStorage(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			out[rel+"/"] = ""
		} else {
			out[rel] = fmt.Sprintf("%d@%d", info.Size(), info.ModTime().UnixNano())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func storageDiff(before, after map[string]string) []string {
	var d []string
	for p, v := range after {
		if old, ok := before[p]; !ok {
			d = append(d, "created "+p)
		} else if old != v {
			d = append(d, "modified "+p)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			d = append(d, "removed "+p)
		}
	}
	return d
}

// pushBlob uploads b to repo with a POST and a PUT.
func pushBlob(t *testing.T, base, repo string, b []byte) digest.Digest {
	t.Helper()
	a := send(t, base, exchange{method: "POST", path: "/v2/" + repo + "/blobs/uploads/"})
	if a.status != http.StatusAccepted {
		t.Fatalf("start upload: %d %s", a.status, a.body)
	}
	loc, err := url.Parse(a.header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(b)
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	a = send(t, base, exchange{method: "PUT", path: loc.RequestURI(), ctype: "application/octet-stream", body: b})
	if a.status != http.StatusCreated {
		t.Fatalf("finish upload: %d %s", a.status, a.body)
	}
	return d
}

func manifestJSON(configD digest.Digest, configSize int, layers string) []byte {
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[%s]}`,
		ociManifestType, configD, configSize, layers))
}

// TestErrorBodiesNeverShowStorage drives every error path we know of where
// upstream Distribution puts driver errors (with storage paths) or plain
// text in the body, and checks each answer is a clean OCI error.
func TestErrorBodiesNeverShowStorage(t *testing.T) {
	b := testutil.StartBerth(t, testutil.Options{})
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(b.Host+"/team/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push: %v", err)
	}
	missing := digest.FromString("never pushed")
	cases := []struct {
		x      exchange
		status int
		code   string
	}{
		{exchange{method: "GET", path: "/v2/team/app/manifests/nosuchtag"}, 404, "MANIFEST_UNKNOWN"},
		{exchange{method: "GET", path: "/v2/team/app/manifests/" + missing.String()}, 404, "MANIFEST_UNKNOWN"},
		{exchange{method: "HEAD", path: "/v2/team/app/manifests/" + missing.String()}, 404, ""},
		{exchange{method: "DELETE", path: "/v2/team/app/manifests/" + missing.String()}, 404, "MANIFEST_UNKNOWN"},
		{exchange{method: "DELETE", path: "/v2/team/app/manifests/nosuchtag"}, 404, "MANIFEST_UNKNOWN"},
		{exchange{method: "GET", path: "/v2/no/such/repo/manifests/v1"}, 404, ""},
		{exchange{method: "GET", path: "/v2/no/such/repo/tags/list"}, 404, "NAME_UNKNOWN"},
		{exchange{method: "GET", path: "/v2/team/app/blobs/" + missing.String()}, 404, "BLOB_UNKNOWN"},
		{exchange{method: "HEAD", path: "/v2/team/app/blobs/" + missing.String()}, 404, ""},
		{exchange{method: "DELETE", path: "/v2/team/app/blobs/" + missing.String()}, 404, "BLOB_UNKNOWN"},
		{exchange{method: "GET", path: "/v2/team/app/blobs/uploads/0190d3f2-1111-7222-8333-444455556666"}, 404, "BLOB_UPLOAD_UNKNOWN"},
		// Without the signed upload state Distribution says BLOB_UPLOAD_INVALID.
		{exchange{method: "DELETE", path: "/v2/team/app/blobs/uploads/0190d3f2-1111-7222-8333-444455556666"}, 404, ""},
		{exchange{method: "PATCH", path: "/v2/team/app/blobs/uploads/0190d3f2-1111-7222-8333-444455556666", ctype: "application/octet-stream", body: []byte("x")}, 404, ""},
		// Endpoints and methods Distribution's router does not know answer
		// in plain text upstream.
		{exchange{method: "GET", path: "/v2/team/app/referrers/sha256:nothex!"}, 400, "DIGEST_INVALID"},
		{exchange{method: "GET", path: "/v2/team/app/manifests"}, 404, "UNSUPPORTED"},
		{exchange{method: "GET", path: "/"}, 404, "UNSUPPORTED"},
		{exchange{method: "PATCH", path: "/v2/team/app/manifests/v1"}, 405, "UNSUPPORTED"},
		{exchange{method: "DELETE", path: "/v2/team/app/tags/list"}, 405, "UNSUPPORTED"},
		// Names, references and digests the router cannot match.
		{exchange{method: "GET", path: "/v2/" + strings.Repeat("n", 256) + "/manifests/v1"}, 400, "NAME_INVALID"},
		{exchange{method: "GET", path: "/v2/-bad/manifests/v1"}, 400, "NAME_INVALID"},
		{exchange{method: "GET", path: "/v2/team/app/manifests/" + strings.Repeat("t", 129)}, 400, "MANIFEST_INVALID"},
		{exchange{method: "GET", path: "/v2/team/app/manifests/sha256:not.hex!"}, 400, "DIGEST_INVALID"},
		{exchange{method: "GET", path: "/v2/team/app/blobs/notadigest"}, 400, "DIGEST_INVALID"},
		{exchange{method: "GET", path: "/v2/team/app/blobs/uploads/bad!id"}, 404, "BLOB_UPLOAD_UNKNOWN"},
	}
	for _, c := range cases {
		a := send(t, b.URL, c.x)
		checkClientError(t, b.Root, c.x, a, c.status, c.code)
	}
}

// TestMalformedManifestsAreRejectedAndNotStored pushes broken manifests: each
// gets a 4xx with an OCI error, and storage is exactly as before.
func TestMalformedManifestsAreRejectedAndNotStored(t *testing.T) {
	b := testutil.StartBerth(t, testutil.Options{})
	const repo = "team/app"
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer := []byte("a layer")
	configD := pushBlob(t, b.URL, repo, config)
	layerD := pushBlob(t, b.URL, repo, layer)
	missing := digest.FromString("never pushed")
	layerJSON := func(d digest.Digest, size int) string {
		return fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}`, d, size)
	}
	good := manifestJSON(configD, len(config), layerJSON(layerD, len(layer)))
	foreign := manifestJSON(configD, len(config), fmt.Sprintf(
		`{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":%q,"size":123,"urls":["https://example.com/layer"]}`, missing))
	huge := manifestJSON(configD, len(config), layerJSON(layerD, len(layer)))
	huge = append(huge[:len(huge)-1], []byte(`,"annotations":{"pad":"`+strings.Repeat("x", 5<<20)+`"}}`)...)

	before := listStorage(t, b.Root)
	cases := []struct {
		name   string
		x      exchange
		status int
		code   string
	}{
		{"bad JSON", exchange{"PUT", "/v2/team/app/manifests/bad", ociManifestType, []byte(`{"schemaVersion":2,`)}, 400, "MANIFEST_INVALID"},
		{"schemaVersion 1 as OCI", exchange{"PUT", "/v2/team/app/manifests/bad", ociManifestType, []byte(`{"schemaVersion":1,"mediaType":"` + ociManifestType + `"}`)}, 400, "MANIFEST_INVALID"},
		{"schemaVersion 3", exchange{"PUT", "/v2/team/app/manifests/bad", ociManifestType, bytes.Replace(good, []byte(`"schemaVersion":2`), []byte(`"schemaVersion":3`), 1)}, 400, "MANIFEST_INVALID"},
		{"unknown media type", exchange{"PUT", "/v2/team/app/manifests/bad", "application/vnd.example.unknown+json", good}, 400, "MANIFEST_INVALID"},
		{"mediaType disagrees with Content-Type", exchange{"PUT", "/v2/team/app/manifests/bad", ociIndexType, good}, 400, "MANIFEST_INVALID"},
		{"docker schema 1", exchange{"PUT", "/v2/team/app/manifests/bad", "application/vnd.docker.distribution.manifest.v1+prettyjws", []byte(`{"schemaVersion":1,"name":"team/app","tag":"bad","fsLayers":[]}`)}, 400, ""},
		{"missing layer", exchange{"PUT", "/v2/team/app/manifests/bad", ociManifestType, manifestJSON(configD, len(config), layerJSON(missing, 3))}, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"missing config", exchange{"PUT", "/v2/team/app/manifests/bad", ociManifestType, manifestJSON(missing, 3, layerJSON(layerD, len(layer)))}, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"index of a missing manifest", exchange{"PUT", "/v2/team/app/manifests/bad", ociIndexType, []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[{"mediaType":%q,"digest":%q,"size":10}]}`, ociIndexType, ociManifestType, missing))}, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"foreign layer URLs (not allowed by default)", exchange{"PUT", "/v2/team/app/manifests/bad", ociManifestType, foreign}, 400, "MANIFEST_INVALID"},
		{"digest does not match the body", exchange{"PUT", "/v2/team/app/manifests/" + missing.String(), ociManifestType, good}, 400, "DIGEST_INVALID"},
		{"huge body", exchange{"PUT", "/v2/team/app/manifests/bad", ociManifestType, huge}, 400, ""},
		{"new repository, missing blobs", exchange{"PUT", "/v2/other/repo/manifests/v1", ociManifestType, manifestJSON(missing, 3, layerJSON(missing, 3))}, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"invalid name", exchange{"PUT", "/v2/Team/-app/manifests/v1", ociManifestType, good}, 400, "NAME_INVALID"},
		{"invalid tag", exchange{"PUT", "/v2/team/app/manifests/.hidden", ociManifestType, good}, 400, "MANIFEST_INVALID"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := send(t, b.URL, c.x)
			if a.status >= 400 && a.status < 500 && c.status == 400 && c.code == "" {
				c.status = a.status // 400 or 413 are both right for these
			}
			checkClientError(t, b.Root, c.x, a, c.status, c.code)
			if d := storageDiff(before, listStorage(t, b.Root)); len(d) > 0 {
				t.Errorf("rejected manifest changed storage: %v", d)
			}
		})
	}
	// The good manifest still goes in, so the rejections were about content.
	if a := send(t, b.URL, exchange{"PUT", "/v2/team/app/manifests/good", ociManifestType, good}); a.status != http.StatusCreated {
		t.Fatalf("valid manifest: %d %s", a.status, a.body)
	}
}

// TestForeignLayersFollowConfiguration: a manifest with non-distributable
// layer URLs is a 400 that names the setting by default (upstream answers
// 500), and is stored when validation.manifests.urls.allow admits the URL.
func TestForeignLayersFollowConfiguration(t *testing.T) {
	b := testutil.StartBerth(t, testutil.Options{ConfigYAML: `version: 0.1
storage:
  filesystem:
    rootdirectory: ` + filepath.Join(t.TempDir(), "data") + `
  delete:
    enabled: true
validation:
  manifests:
    urls:
      allow:
        - ^https://example\.com/
`})
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	configD := pushBlob(t, b.URL, "win/app", config)
	foreignLayer := func(u string) []byte {
		return manifestJSON(configD, len(config), fmt.Sprintf(
			`{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":%q,"size":123,"urls":[%q]}`,
			digest.FromString("foreign"), u))
	}
	if a := send(t, b.URL, exchange{"PUT", "/v2/win/app/manifests/ok", ociManifestType, foreignLayer("https://example.com/layer")}); a.status != http.StatusCreated {
		t.Fatalf("allowed foreign layer: %d %s", a.status, a.body)
	}
	if a := send(t, b.URL, exchange{"GET", "/v2/win/app/manifests/ok", "", nil}); a.status != http.StatusOK {
		t.Fatalf("pull the manifest with a foreign layer: %d %s", a.status, a.body)
	}
	x := exchange{"PUT", "/v2/win/app/manifests/denied", ociManifestType, foreignLayer("https://elsewhere.example.org/layer")}
	a := send(t, b.URL, x)
	checkClientError(t, b.Root, x, a, http.StatusBadRequest, "MANIFEST_INVALID")
	if !bytes.Contains(a.body, []byte("validation.manifests.urls")) {
		t.Errorf("the error does not name the setting: %s", a.body)
	}
}

// TestMountByNonCanonicalDigestNeverLeavesABrokenBlob: Distribution v3.1.2
// links a mount by sha512 to a blob that does not exist, so reads of the
// mounted blob failed with 500. A mount by sha512 must either work (201,
// and the blob reads back) or fall back to an upload session (202).
func TestMountByNonCanonicalDigestNeverLeavesABrokenBlob(t *testing.T) {
	b := testutil.StartBerth(t, testutil.Options{})
	content := []byte("mount me")
	pushBlob(t, b.URL, "src/repo", content)
	sha512 := digest.SHA512.FromBytes(content)
	a := send(t, b.URL, exchange{method: "POST", path: "/v2/dst/repo/blobs/uploads/?mount=" + sha512.String() + "&from=src/repo"})
	x := exchange{method: "GET", path: "/v2/dst/repo/blobs/" + sha512.String()}
	got := send(t, b.URL, x)
	switch a.status {
	case http.StatusCreated:
		if got.status != http.StatusOK || !bytes.Equal(got.body, content) {
			t.Fatalf("mounted by sha512 (201), then read: %d %s", got.status, got.body)
		}
	case http.StatusAccepted:
		checkClientError(t, b.Root, x, got, http.StatusNotFound, "BLOB_UNKNOWN")
	default:
		t.Fatalf("mount by sha512: %d %s, want 201 or 202", a.status, a.body)
	}

	// A sha256 mount mounts.
	sha256 := digest.FromBytes(content)
	a = send(t, b.URL, exchange{method: "POST", path: "/v2/other/repo/blobs/uploads/?mount=" + sha256.String() + "&from=src/repo"})
	if a.status != http.StatusCreated {
		t.Fatalf("mount by sha256: %d %s, want 201", a.status, a.body)
	}
	if a := send(t, b.URL, exchange{method: "GET", path: "/v2/other/repo/blobs/" + sha256.String()}); a.status != http.StatusOK || !bytes.Equal(a.body, content) {
		t.Fatalf("read the mounted blob: %d %s", a.status, a.body)
	}
}
