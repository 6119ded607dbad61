package server

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type failingReader struct{ after string }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.after != "" {
		n := copy(p, f.after)
		f.after = f.after[n:]
		return n, nil
	}
	return 0, errors.New("connection refused")
}

// Distribution commits 200 and Content-Length before reading the object;
// the guard turns "no byte came" into a 503 and leaves everything else alone.
func TestGuardBlobReads(t *testing.T) {
	const blob = "/v2/repo/blobs/sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	serve := func(method, path string, h http.HandlerFunc) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		guardBlobReads(slog.New(slog.DiscardHandler), getMetrics(), h).ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec
	}
	for _, tc := range []struct {
		name, method, path string
		body               func() io.Reader
		size               string
		status             int
		want               string
	}{
		{"storage down", http.MethodGet, blob, func() io.Reader { return &failingReader{} }, "5", http.StatusServiceUnavailable, "UNAVAILABLE"},
		{"read ok", http.MethodGet, blob, func() io.Reader { return strings.NewReader("hello") }, "5", http.StatusOK, "hello"},
		{"fails after the first byte", http.MethodGet, blob, func() io.Reader { return &failingReader{after: "he"} }, "5", http.StatusOK, "he"},
		{"empty blob", http.MethodGet, blob, func() io.Reader { return strings.NewReader("") }, "0", http.StatusOK, ""},
		{"not a blob", http.MethodGet, "/v2/repo/manifests/v1", func() io.Reader { return &failingReader{} }, "5", http.StatusOK, ""},
		{"HEAD", http.MethodHead, blob, func() io.Reader { return &failingReader{} }, "5", http.StatusOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, viaReaderFrom := range []bool{true, false} {
				rec := serve(tc.method, tc.path, func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Length", tc.size)
					w.Header().Set("Docker-Content-Digest", "sha256:x")
					w.WriteHeader(http.StatusOK)
					if viaReaderFrom {
						_, _ = io.Copy(w, tc.body())
					} else {
						_, _ = io.Copy(struct{ io.Writer }{w}, tc.body())
					}
				})
				if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.want) {
					t.Fatalf("ReadFrom %v: %d %q, want %d with %q", viaReaderFrom, rec.Code, rec.Body.String(), tc.status, tc.want)
				}
				if tc.status == http.StatusServiceUnavailable && rec.Header().Get("Docker-Content-Digest") != "" {
					t.Fatalf("the 503 keeps the blob's headers: %v", rec.Header())
				}
			}
		})
	}
}
