package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// recorder remembers the status and size of a response. It keeps
// io.ReaderFrom so blob downloads still use sendfile.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(r.ResponseWriter, src)
	}
	r.bytes += n
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) code() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}

// observe logs every request and counts it in the metrics. Query strings
// are left out of logs: upload URLs carry state tokens.
func observe(log *slog.Logger, m *metrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p))
				if rec.status == 0 {
					writeError(rec, http.StatusInternalServerError, "UNKNOWN", "internal error", 0)
				}
			}
			d := time.Since(start)
			code := rec.code()
			m.requests.WithLabelValues(strconv.Itoa(code), r.Method).Inc()
			m.duration.WithLabelValues(r.Method).Observe(d.Seconds())
			lvl := slog.LevelInfo
			if code >= 500 {
				lvl = slog.LevelError
			}
			log.Log(r.Context(), lvl, "request", "method", r.Method, "path", r.URL.Path, "status", code,
				"bytes", rec.bytes, "duration_ms", d.Milliseconds(), "remote", r.RemoteAddr)
		}()
		next.ServeHTTP(rec, r)
	})
}

// Gate tells whether writes are refused right now (gc's maintenance lease).
type Gate interface {
	WritesRefused() (bool, time.Duration)
}

func isWrite(r *http.Request) bool {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return strings.HasPrefix(r.URL.Path, "/v2/")
	}
	return false
}

// gate refuses writes during maintenance and counts writes in flight. The
// count goes up before the gate is read, and the replica sets the gate
// before it reads the count: so either a write sees the gate closed, or
// the replica sees the write in flight and waits for it.
func gate(g func() Gate, inflight *atomic.Int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isWrite(r) {
			next.ServeHTTP(w, r)
			return
		}
		inflight.Add(1)
		defer inflight.Add(-1)
		if gt := g(); gt != nil {
			if refused, retry := gt.WritesRefused(); refused {
				writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE",
					"the registry is read-only for maintenance (garbage collection); retry later", retry)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func writeError(w http.ResponseWriter, status int, code, msg string, retry time.Duration) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	if retry > 0 {
		h.Set("Retry-After", strconv.Itoa(int((retry+time.Second-1)/time.Second)))
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{"code": code, "message": msg}}})
}

// hygiene rewrites error bodies so they never show storage paths: upstream
// puts driver errors (with their paths) into the `detail` of errors such as
// MANIFEST_UNKNOWN.
func hygiene(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hw := &hygieneWriter{ResponseWriter: w}
		next.ServeHTTP(hw, r)
		hw.finish()
	})
}

type hygieneWriter struct {
	http.ResponseWriter
	status    int
	buffering bool
	buf       bytes.Buffer
}

const maxErrorBody = 64 << 10

func (h *hygieneWriter) WriteHeader(code int) {
	if h.status != 0 {
		return
	}
	h.status = code
	if code >= 400 && strings.HasPrefix(h.Header().Get("Content-Type"), "application/json") {
		h.buffering = true
		return
	}
	h.ResponseWriter.WriteHeader(code)
}

func (h *hygieneWriter) Write(b []byte) (int, error) {
	if h.status == 0 {
		h.WriteHeader(http.StatusOK)
	}
	if !h.buffering {
		return h.ResponseWriter.Write(b)
	}
	if h.buf.Len()+len(b) > maxErrorBody {
		// Not an error document we know; pass it through as is.
		h.buffering = false
		h.ResponseWriter.WriteHeader(h.status)
		if _, err := h.ResponseWriter.Write(h.buf.Bytes()); err != nil {
			return 0, err
		}
		h.buf.Reset()
		return h.ResponseWriter.Write(b)
	}
	return h.buf.Write(b)
}

func (h *hygieneWriter) ReadFrom(src io.Reader) (int64, error) {
	if h.status == 0 {
		h.WriteHeader(http.StatusOK)
	}
	if !h.buffering {
		if rf, ok := h.ResponseWriter.(io.ReaderFrom); ok {
			return rf.ReadFrom(src)
		}
		return io.Copy(h.ResponseWriter, src)
	}
	return io.Copy(struct{ io.Writer }{h}, src)
}

func (h *hygieneWriter) Flush() {
	if h.buffering {
		return
	}
	if f, ok := h.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (h *hygieneWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }

func (h *hygieneWriter) finish() {
	if !h.buffering {
		return
	}
	body := scrubErrorBody(h.status, h.buf.Bytes())
	h.Header().Del("Content-Length")
	h.ResponseWriter.WriteHeader(h.status)
	_, _ = h.ResponseWriter.Write(body)
}

// storageFailed is the whole answer when storage failed under a 5xx: the
// other entries Distribution lists then are guesses (a manifest's blobs are
// "unknown" because they could not be looked at), and clients show the
// first entry, which would otherwise be a bare "unknown error".
var storageFailed = map[string]any{"code": "UNKNOWN", "message": "storage error, try again"}

// scrubErrorBody drops details that name storage paths or drivers.
func scrubErrorBody(status int, b []byte) []byte {
	var doc struct {
		Errors []map[string]any `json:"errors"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || doc.Errors == nil {
		return b
	}
	for _, e := range doc.Errors {
		if d, ok := e["detail"]; ok && leaksPath(d) {
			delete(e, "detail")
			if status >= 500 && e["code"] == "UNKNOWN" {
				doc.Errors = []map[string]any{storageFailed}
				break
			}
		}
		if m, ok := e["message"].(string); ok && leaksPath(m) {
			e["message"] = "storage error"
		}
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return b
	}
	return append(out, '\n')
}

func leaksPath(v any) bool {
	switch t := v.(type) {
	case string:
		return strings.Contains(t, "/docker/registry/") || strings.Contains(t, "Path not found") ||
			strings.Contains(t, "filesystem:") || strings.Contains(t, "s3aws:")
	case map[string]any:
		if _, ok := t["Path"]; ok {
			return true
		}
		if _, ok := t["DriverName"]; ok {
			return true
		}
		for _, x := range t {
			if leaksPath(x) {
				return true
			}
		}
	case []any:
		for _, x := range t {
			if leaksPath(x) {
				return true
			}
		}
	}
	return false
}
