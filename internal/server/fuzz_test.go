package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/internal/config"
)

// FuzzRequest sends one fuzzed request through berth's whole handler chain
// (middleware and Distribution) and checks what clients and operators rely
// on: no panic, no 5xx, every 4xx carries an OCI error document (HEAD has no
// body), no response shows the storage root, and a rejected request leaves
// storage exactly as it was.
//
// The seed corpus runs with `go test`; `make fuzz` (FUZZTIME) fuzzes. Each
// fuzz worker process runs this function once, so it builds one server.
func FuzzRequest(f *testing.F) {
	fz := newFuzzRegistry(f)
	for _, s := range fuzzSeeds(fz) {
		f.Add(s.method, s.name, s.route, s.ref, s.query, s.ctype, s.body)
	}
	f.Fuzz(func(t *testing.T, method, name string, route uint8, ref, query, ctype string, body []byte) {
		req, ok := fuzzHTTPRequest(method, fuzzTarget(name, route, ref, query), ctype, body)
		if !ok {
			// net/http answers requests it cannot parse itself; berth never sees them.
			return
		}
		before := fz.snapshot(t)
		rec := httptest.NewRecorder()
		fz.handler.ServeHTTP(rec, req)
		res := rec.Result()
		got, _ := io.ReadAll(res.Body)
		describe := func() string {
			return fmt.Sprintf("%s %s (Content-Type %q, %d body bytes) → %d %s\n%s",
				req.Method, req.URL.RequestURI(), ctype, len(body), res.StatusCode, res.Header.Get("Content-Type"), truncate(got, 2000))
		}
		if res.StatusCode >= 500 {
			t.Fatalf("server error:\n%s", describe())
		}
		if bytes.Contains(got, []byte(fz.root)) {
			t.Fatalf("response shows the storage root:\n%s", describe())
		}
		if res.StatusCode >= 400 {
			if req.Method != http.MethodHead {
				if err := checkOCIError(got); err != nil {
					t.Fatalf("%v:\n%s", err, describe())
				}
			}
			if diff := fz.snapshot(t).diff(before); diff != "" {
				t.Fatalf("rejected request changed storage (%s):\n%s", diff, describe())
			}
			return
		}
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			// An accepted write may have removed what other inputs expect.
			fz.populate(t)
		}
	})
}

// checkOCIError reports whether b is {"errors":[{"code":..,"message":..}]}.
func checkOCIError(b []byte) error {
	var doc struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("4xx body is not an OCI error document: %v", err)
	}
	if len(doc.Errors) == 0 {
		return fmt.Errorf("4xx body has no errors")
	}
	for _, e := range doc.Errors {
		if e.Code == "" || e.Message == "" {
			return fmt.Errorf("4xx error without code or message")
		}
	}
	return nil
}

// Routes the fuzzer can pick; fzRaw uses name as the whole request target.
const (
	fzManifest uint8 = iota
	fzBlob
	fzUpload
	fzTags
	fzReferrers
	fzCatalog
	fzBase
	fzBerthTags
	fzRaw
	fzRouteCount
)

func fuzzTarget(name string, route uint8, ref, query string) string {
	var p string
	switch route % fzRouteCount {
	case fzManifest:
		p = "/v2/" + name + "/manifests/" + ref
	case fzBlob:
		p = "/v2/" + name + "/blobs/" + ref
	case fzUpload:
		p = "/v2/" + name + "/blobs/uploads/" + ref
	case fzTags:
		p = "/v2/" + name + "/tags/list"
	case fzReferrers:
		p = "/v2/" + name + "/referrers/" + ref
	case fzCatalog:
		p = "/v2/_catalog"
	case fzBase:
		p = "/v2/"
	case fzBerthTags:
		p = "/v2/" + name + "/_berth/tags"
	default:
		p = name
	}
	if query != "" {
		p += "?" + query
	}
	return p
}

// fuzzHTTPRequest builds the request the way berth's listener would: from
// the bytes on the wire, so whatever net/http refuses is skipped.
func fuzzHTTPRequest(method, target, ctype string, body []byte) (*http.Request, bool) {
	if method == "" || target == "" || len(body) > 8<<20 {
		return nil, false
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: berth.test\r\n", method, target)
	if ctype != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", ctype)
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
	b.Write(body)
	req, err := http.ReadRequest(bufio.NewReader(&b))
	if err != nil || !validHeaderValue(ctype) || req.Method != method || req.RequestURI != target {
		return nil, false
	}
	// The server only passes "*" to OPTIONS and absolute paths otherwise.
	if !strings.HasPrefix(req.URL.Path, "/") || req.URL.Host != "" {
		return nil, false
	}
	req.RemoteAddr = "127.0.0.1:40000"
	return req, true
}

// validHeaderValue mirrors the check net/http's server applies to header values.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return v == strings.TrimSpace(v)
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// fuzzRegistry is one berth handler on a temp storage root, preloaded with
// a small image so inputs can reach existing content.
type fuzzRegistry struct {
	handler http.Handler
	root    string
	// The preloaded image.
	repo, tag                string
	config, layer, manifest  []byte
	configD, layerD, manifD  digest.Digest
	layerSHA512, missingBlob digest.Digest
}

func newFuzzRegistry(tb testing.TB) *fuzzRegistry {
	tb.Helper()
	root := filepath.Join(tb.TempDir(), "data")
	s := newDirectServer(tb, root, "")
	fz := &fuzzRegistry{handler: s.regSrv.Handler, root: root, repo: "fuzz/app", tag: "v1"}
	fz.config = []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	fz.layer = []byte("berth fuzz layer")
	fz.configD, fz.layerD = digest.FromBytes(fz.config), digest.FromBytes(fz.layer)
	fz.layerSHA512 = digest.SHA512.FromBytes(fz.layer)
	fz.missingBlob = digest.FromString("not pushed")
	fz.manifest = ociManifest(fz.configD, int64(len(fz.config)), fz.layerD, int64(len(fz.layer)))
	fz.manifD = digest.FromBytes(fz.manifest)
	fz.populate(tb)
	return fz
}

// newDirectServer builds a berth server on the filesystem root with berth's
// default configuration plus extraYAML (Distribution keys), without
// listening: tests call its handler directly.
func newDirectServer(tb testing.TB, root, extraYAML string) *Server {
	tb.Helper()
	path := ""
	if extraYAML != "" {
		path = filepath.Join(tb.TempDir(), "config.yml")
		text := "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: " + root + "\n  delete:\n    enabled: true\n" + extraYAML
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	cfg, err := config.Load(path, nil)
	if err != nil {
		tb.Fatalf("load config: %v", err)
	}
	if err := cfg.Apply(config.Overrides{Addr: "127.0.0.1:0", DebugAddr: "127.0.0.1:0", DataDir: root}); err != nil {
		tb.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		tb.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	s, err := New(context.Background(), cfg, log)
	if err != nil {
		tb.Fatalf("server.New: %v", err)
	}
	tb.Cleanup(func() { _ = s.app.Shutdown() })
	return s
}

func ociManifest(configD digest.Digest, configSize int64, layerD digest.Digest, layerSize int64) []byte {
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}]}`,
		configD, configSize, layerD, layerSize))
}

// populate (re)pushes the preloaded image; every step is idempotent.
func (fz *fuzzRegistry) populate(tb testing.TB) {
	tb.Helper()
	for _, b := range [][]byte{fz.config, fz.layer} {
		pushBlob(tb, fz.handler, fz.repo, b)
	}
	fz.mustDo(tb, http.StatusCreated, "PUT", "/v2/"+fz.repo+"/manifests/"+fz.tag, "application/vnd.oci.image.manifest.v1+json", fz.manifest)
}

// pushBlob uploads b to repo as clients do: POST a session, PUT the data.
func pushBlob(tb testing.TB, h http.Handler, repo string, b []byte) {
	tb.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v2/"+repo+"/blobs/uploads/", nil))
	if rec.Code != http.StatusAccepted {
		tb.Fatalf("start upload: %d %s", rec.Code, rec.Body.String())
	}
	loc, err := url.Parse(rec.Header().Get("Location"))
	if err != nil {
		tb.Fatalf("upload location: %v", err)
	}
	q := loc.Query()
	q.Set("digest", digest.FromBytes(b).String())
	req := httptest.NewRequest("PUT", loc.Path+"?"+q.Encode(), bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/octet-stream")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusCreated {
		tb.Fatalf("finish upload: %d %s", rec.Code, rec.Body.String())
	}
}

func (fz *fuzzRegistry) do(method, target, ctype string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	rec := httptest.NewRecorder()
	fz.handler.ServeHTTP(rec, req)
	return rec
}

func (fz *fuzzRegistry) mustDo(tb testing.TB, want int, method, target, ctype string, body []byte) {
	tb.Helper()
	if rec := fz.do(method, target, ctype, body); rec.Code != want {
		tb.Fatalf("%s %s: %d, want %d: %s", method, target, rec.Code, want, rec.Body.String())
	}
}

// storageState is every path under the storage root with its size and
// modification time: a write anywhere shows up as a difference.
type storageState map[string]string

func (fz *fuzzRegistry) snapshot(tb testing.TB) storageState {
	tb.Helper()
	return snapshotDir(tb, fz.root)
}

func snapshotDir(tb testing.TB, root string) storageState {
	tb.Helper()
	st := storageState{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			st[rel+"/"] = ""
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st[rel] = fmt.Sprintf("%d@%d", info.Size(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		tb.Fatalf("list storage: %v", err)
	}
	return st
}

// diff names the first difference between two states, or "".
func (s storageState) diff(before storageState) string {
	for p, v := range s {
		if old, ok := before[p]; !ok {
			return "created " + p
		} else if old != v {
			return "modified " + p
		}
	}
	for p := range before {
		if _, ok := s[p]; !ok {
			return "removed " + p
		}
	}
	return ""
}

type fuzzSeed struct {
	method, name string
	route        uint8
	ref, query   string
	ctype        string
	body         []byte
}

func fuzzSeeds(fz *fuzzRegistry) []fuzzSeed {
	const (
		ociManifestType = "application/vnd.oci.image.manifest.v1+json"
		ociIndexType    = "application/vnd.oci.image.index.v1+json"
	)
	repo := fz.repo
	sha512Ref := "sha512:" + strings.Repeat("ab", 64)
	ndManifest := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":%q,"size":123,"urls":["https://example.com/layer"]}]}`,
		ociManifestType, fz.configD, len(fz.config), fz.missingBlob))
	missingLayer := ociManifest(fz.configD, int64(len(fz.config)), fz.missingBlob, 3)
	index := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[{"mediaType":%q,"digest":%q,"size":10}]}`,
		ociIndexType, ociManifestType, fz.missingBlob))
	s := []fuzzSeed{
		{"GET", repo, fzManifest, fz.tag, "", "", nil},
		{"HEAD", repo, fzManifest, fz.manifD.String(), "", "", nil},
		{"GET", repo, fzManifest, sha512Ref, "", "", nil},
		{"GET", repo, fzManifest, "sha256:zz", "", "", nil},
		{"GET", repo, fzManifest, "sha256:" + strings.Repeat("0", 63), "", "", nil},
		{"GET", repo, fzManifest, strings.Repeat("t", 129), "", "", nil},
		{"DELETE", repo, fzManifest, fz.missingBlob.String(), "", "", nil},
		{"DELETE", repo, fzManifest, "nosuchtag", "", "", nil},
		{"PUT", repo, fzManifest, "v2", "", ociManifestType, fz.manifest},
		{"PUT", repo, fzManifest, fz.manifD.String(), "", ociManifestType, fz.manifest},
		{"PUT", repo, fzManifest, "sha256:" + strings.Repeat("1", 64), "", ociManifestType, fz.manifest},
		{"PUT", repo, fzManifest, "bad", "", ociManifestType, []byte(`{"schemaVersion":2,`)},
		{"PUT", repo, fzManifest, "bad", "", ociManifestType, []byte(`{"schemaVersion":3,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)},
		{"PUT", repo, fzManifest, "bad", "", ociManifestType, []byte(`{"schemaVersion":1}`)},
		{"PUT", repo, fzManifest, "bad", "", "application/vnd.example.unknown+json", fz.manifest},
		{"PUT", repo, fzManifest, "bad", "", "", fz.manifest},
		{"PUT", repo, fzManifest, "bad", "", "application/vnd.docker.distribution.manifest.v1+prettyjws", []byte(`{"schemaVersion":1,"name":"x","tag":"y"}`)},
		{"PUT", repo, fzManifest, "bad", "", ociManifestType, missingLayer},
		{"PUT", repo, fzManifest, "nd", "", ociManifestType, ndManifest},
		{"PUT", repo, fzManifest, "idx", "", ociIndexType, index},
		{"PUT", "new/repo", fzManifest, "v1", "", ociManifestType, missingLayer},
		{"GET", repo, fzBlob, fz.layerD.String(), "", "", nil},
		{"HEAD", repo, fzBlob, fz.layerSHA512.String(), "", "", nil},
		{"GET", repo, fzBlob, sha512Ref, "", "", nil},
		{"GET", repo, fzBlob, "sha256:xyz", "", "", nil},
		{"DELETE", repo, fzBlob, fz.missingBlob.String(), "", "", nil},
		{"POST", repo, fzUpload, "", "", "", nil},
		{"POST", repo, fzUpload, "", "digest=" + digest.FromString("other").String(), "application/octet-stream", []byte("content")},
		{"POST", repo, fzUpload, "", "digest=sha256:nothex", "application/octet-stream", []byte("content")},
		{"POST", repo, fzUpload, "", "digest=" + fz.layerSHA512.String(), "application/octet-stream", fz.layer},
		{"POST", "other/repo", fzUpload, "", "mount=" + fz.layerD.String() + "&from=" + repo, "", nil},
		{"POST", "other/repo", fzUpload, "", "mount=" + fz.layerSHA512.String() + "&from=" + repo, "", nil},
		{"POST", "other/repo", fzUpload, "", "mount=garbage&from=" + repo, "", nil},
		{"POST", "other/repo", fzUpload, "", "mount=" + fz.layerD.String() + "&from=Bad..Name", "", nil},
		{"GET", repo, fzUpload, "not-a-uuid", "", "", nil},
		{"PATCH", repo, fzUpload, "0190d3f2-1111-7222-8333-444455556666", "_state=forged", "application/octet-stream", []byte("x")},
		{"PUT", repo, fzUpload, "0190d3f2-1111-7222-8333-444455556666", "digest=" + fz.layerD.String(), "application/octet-stream", fz.layer},
		{"DELETE", repo, fzUpload, "0190d3f2-1111-7222-8333-444455556666", "", "", nil},
		{"GET", repo, fzTags, "", "n=-1", "", nil},
		{"GET", repo, fzTags, "", "n=abc&last=zzz", "", nil},
		{"GET", "nosuch/repo", fzTags, "", "", "", nil},
		{"GET", repo, fzReferrers, fz.manifD.String(), "", "", nil},
		{"GET", repo, fzReferrers, "garbage", "artifactType=x", "", nil},
		{"GET", "", fzCatalog, "", "n=abc", "", nil},
		{"GET", "", fzCatalog, "", "n=-5&last=%zz", "", nil},
		{"GET", "", fzBase, "", "", "", nil},
		{"GET", repo, fzBerthTags, "", "n=0", "", nil},
		{"GET", "UPPER/case", fzManifest, "v1", "", "", nil},
		{"GET", "a//b", fzManifest, "v1", "", "", nil},
		{"GET", "a/../b", fzManifest, "v1", "", "", nil},
		{"GET", "-a", fzManifest, "v1", "", "", nil},
		{"GET", strings.Repeat("n", 300), fzManifest, "v1", "", "", nil},
		{"PUT", strings.Repeat("n", 300), fzManifest, "v1", "", ociManifestType, fz.manifest},
		{"GET", "%2e%2e/x", fzManifest, "v1", "", "", nil},
		{"GET", "/v2", fzRaw, "", "", "", nil},
		{"GET", "/", fzRaw, "", "", "", nil},
		{"GET", "/v2/x/manifests", fzRaw, "", "", "", nil},
		{"GET", "//v2/", fzRaw, "", "", "", nil},
		{"GET", "/v2/../v2/", fzRaw, "", "", "", nil},
		{"GET", "/v2/x/manifests/v1/extra", fzRaw, "", "", "", nil},
		{"OPTIONS", repo, fzManifest, "v1", "", "", nil},
		{"TRACE", repo, fzBlob, fz.layerD.String(), "", "", nil},
		{"BREW", repo, fzTags, "", "", "", nil},
		{"PATCH", repo, fzManifest, "v1", "", ociManifestType, fz.manifest},
		{"POST", repo, fzManifest, "v1", "", ociManifestType, fz.manifest},
		{"DELETE", repo, fzTags, "", "", "", nil},
	}
	return s
}
