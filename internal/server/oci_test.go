package server

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestParseAPIPath(t *testing.T) {
	cases := []struct {
		path string
		want apiPath
	}{
		{"/v2/", apiPath{ep: epBase}},
		{"/v2/_catalog", apiPath{ep: epCatalog}},
		{"/v2/a/b/tags/list", apiPath{ep: epTags, name: "a/b"}},
		{"/v2/a/_berth/tags", apiPath{ep: epBerthTags, name: "a"}},
		{"/v2/a/manifests/v1", apiPath{ep: epManifest, name: "a", ref: "v1"}},
		// The name may contain an endpoint word; the last one decides.
		{"/v2/a/manifests/b/manifests/v1", apiPath{ep: epManifest, name: "a/manifests/b", ref: "v1"}},
		{"/v2/a/blobs/sha256:x", apiPath{ep: epBlob, name: "a", ref: "sha256:x"}},
		{"/v2/a/blobs/uploads/", apiPath{ep: epUploadStart, name: "a"}},
		{"/v2/a/blobs/uploads/id-1", apiPath{ep: epUpload, name: "a", ref: "id-1"}},
		{"/v2/a/referrers/sha256:x", apiPath{ep: epReferrers, name: "a", ref: "sha256:x"}},
		// Unknown, or redirected by the router to a cleaned path.
		{"/v2", apiPath{}},
		{"/", apiPath{}},
		{"/v2/a/manifests", apiPath{}},
		{"/v2/a/manifests/", apiPath{}},
		{"/v2//a/manifests/v1", apiPath{}},
		{"/v2/a/../b/manifests/v1", apiPath{}},
		{"/v3/a/manifests/v1", apiPath{}},
	}
	for _, c := range cases {
		if got := parseAPIPath(c.path); got != c.want {
			t.Errorf("parseAPIPath(%q) = %+v, want %+v", c.path, got, c.want)
		}
	}
}

func TestCheckRequestAnswersWhatDistributionCannot(t *testing.T) {
	long := strings.Repeat("n", 256)
	cases := []struct {
		path   string
		status int
		code   string
	}{
		{"/v2/team/app/manifests/v1", 0, ""},
		{"/v2/team/app/manifests/sha256:" + strings.Repeat("a", 64), 0, ""},
		// Distribution checks the digest itself (and answers 400).
		{"/v2/team/app/manifests/sha256:short", 0, ""},
		{"/v2/localhost:5000/app/tags/list", 0, ""}, // Distribution accepts a host-like first component
		{"/v2/_catalog", 0, ""},
		{"/nonsense", 0, ""},
		{"/v2/" + long + "/manifests/v1", 400, "NAME_INVALID"},
		{"/v2/" + long + "/tags/list", 400, "NAME_INVALID"},
		{"/v2/-a/manifests/v1", 400, "NAME_INVALID"},
		{"/v2/a__-b/blobs/uploads/", 400, "NAME_INVALID"},
		{"/v2/a/manifests/" + strings.Repeat("t", 129), 400, "MANIFEST_INVALID"},
		{"/v2/a/manifests/.v1", 400, "MANIFEST_INVALID"},
		{"/v2/a/manifests/sha256:a!b", 400, "DIGEST_INVALID"},
		{"/v2/a/blobs/v1", 400, "DIGEST_INVALID"},
		{"/v2/a/referrers/v1", 400, "DIGEST_INVALID"},
		{"/v2/a/blobs/uploads/a!b", 404, "BLOB_UPLOAD_UNKNOWN"},
	}
	for _, c := range cases {
		e := checkRequest(parseAPIPath(c.path))
		switch {
		case c.status == 0 && e != nil:
			t.Errorf("%s: rejected with %+v", c.path, e)
		case c.status != 0 && (e == nil || e.status != c.status || e.code != c.code):
			t.Errorf("%s: got %+v, want %d %s", c.path, e, c.status, c.code)
		}
	}
}

func TestDropUnsafeMount(t *testing.T) {
	sha256 := "sha256:" + strings.Repeat("a", 64)
	sha512 := "sha512:" + strings.Repeat("b", 128)
	cases := []struct {
		query   string
		changed bool
	}{
		{"", false},
		{"digest=" + sha512, false},
		{"mount=" + sha256 + "&from=a", false},
		{"mount=" + sha512 + "&from=a", true},
		{"mount=garbage&from=a", true},
		{"mount=" + sha256 + "&mount=" + sha256 + "&from=a", true},
	}
	for _, c := range cases {
		got, changed := dropUnsafeMount(c.query)
		if changed != c.changed {
			t.Errorf("%q: changed=%v, want %v", c.query, changed, c.changed)
			continue
		}
		q, _ := url.ParseQuery(got)
		if changed && (q.Has("mount") || q.Has("from")) {
			t.Errorf("%q: kept the mount: %q", c.query, got)
		}
	}
}

func TestDecideResponse(t *testing.T) {
	put := apiPath{ep: epManifest, name: "a", ref: "v1"}
	blob := apiPath{ep: epBlob, name: "a", ref: "sha256:x"}
	const js = "application/json"
	cases := []struct {
		name       string
		method     string
		ap         apiPath
		status     int
		ctype      string
		body       string
		wantStatus int
		wantCode   string // "" means: unchanged
	}{
		{"foreign layer URLs", "PUT", put, 500, js,
			`{"errors":[{"code":"UNKNOWN","message":"unknown error"},{"code":"UNKNOWN","detail":"invalid URL on layer","message":"unknown error"},{"code":"MANIFEST_BLOB_UNKNOWN","detail":"sha256:x","message":"blob unknown to registry"}]}`,
			400, "MANIFEST_INVALID"},
		{"schema version", "PUT", put, 500, js,
			`{"errors":[{"code":"UNKNOWN","detail":"unrecognized manifest schema version 3","message":"unknown error"}]}`,
			400, "MANIFEST_INVALID"},
		{"descriptor digest with an unknown algorithm", "PUT", put, 500, js,
			`{"errors":[{"code":"UNKNOWN","message":"unknown error"},{"code":"UNKNOWN","detail":"unsupported digest algorithm","message":"unknown error"},{"code":"MANIFEST_BLOB_UNKNOWN","detail":"0:0","message":"blob unknown to registry"}]}`,
			400, "DIGEST_INVALID"},
		{"dangling blob link", "GET", blob, 500, js,
			`{"errors":[{"code":"UNKNOWN","detail":"unknown blob","message":"unknown error"}]}`,
			404, "BLOB_UNKNOWN"},
		{"a real storage error stays a 500", "PUT", put, 500, js,
			`{"errors":[{"code":"UNKNOWN","detail":"invalid URL on layer","message":"unknown error"},{"code":"UNKNOWN","detail":"disk on fire","message":"unknown error"}]}`,
			500, ""},
		{"same words on another endpoint stay a 500", "DELETE", blob, 500, js,
			`{"errors":[{"code":"UNKNOWN","detail":"unknown blob","message":"unknown error"}]}`,
			500, ""},
		{"plain-text 404", "GET", apiPath{}, 404, "text/plain; charset=utf-8", "404 page not found\n", 404, "UNSUPPORTED"},
		{"plain-text 405", "PATCH", put, 405, "text/plain; charset=utf-8", "Method not allowed\n", 405, "UNSUPPORTED"},
		{"plain-text 416", "GET", blob, 416, "text/plain; charset=utf-8", "invalid range\n", 416, "BLOB_UNKNOWN"},
		{"an OCI error is kept", "GET", put, 404, js, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`, 404, ""},
	}
	for _, c := range cases {
		status, body, changed := decideResponse(c.method, c.ap, c.status, c.ctype, []byte(c.body))
		if c.wantCode == "" {
			if changed || status != c.status || string(body) != c.body {
				t.Errorf("%s: changed to %d %s", c.name, status, body)
			}
			continue
		}
		var doc ociDoc
		if err := json.Unmarshal(body, &doc); err != nil || !changed || status != c.wantStatus || doc.Errors[0]["code"] != c.wantCode {
			t.Errorf("%s: got %d %s (changed=%v), want %d %s", c.name, status, body, changed, c.wantStatus, c.wantCode)
		}
		for _, e := range doc.Errors {
			if e["code"] == "UNKNOWN" {
				t.Errorf("%s: UNKNOWN kept in %s", c.name, body)
			}
		}
	}
}

// TestOCIWriterKeepsSuccessStreaming: successful responses pass straight
// through, so large blob downloads are not buffered.
func TestOCIWriterKeepsSuccessStreaming(t *testing.T) {
	h := ociErrors(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("first"))
		if _, ok := w.(http.Flusher); !ok {
			t.Error("the writer hides http.Flusher")
		}
		w.(http.Flusher).Flush()
	}))
	rec := &flushRecorder{header: http.Header{}}
	h.ServeHTTP(rec, mustRequest(t, "GET", "/v2/a/blobs/sha256:"+strings.Repeat("a", 64)))
	if rec.status != http.StatusOK || rec.body.String() != "first" || !rec.flushed {
		t.Fatalf("got %d %q flushed=%v", rec.status, rec.body.String(), rec.flushed)
	}
}

type flushRecorder struct {
	header  http.Header
	status  int
	body    strings.Builder
	flushed bool
}

func (f *flushRecorder) Header() http.Header         { return f.header }
func (f *flushRecorder) WriteHeader(code int)        { f.status = code }
func (f *flushRecorder) Write(b []byte) (int, error) { return f.body.Write(b) }
func (f *flushRecorder) Flush()                      { f.flushed = f.body.Len() > 0 }

func mustRequest(t *testing.T, method, target string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, "http://berth.test"+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
