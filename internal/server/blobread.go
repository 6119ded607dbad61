package server

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
)

// guardBlobReads holds back a blob download's success status until the
// first byte has come from storage. Distribution commits the 200 and the
// Content-Length before it opens the object, so with a store that is down
// (S3 unreachable) the client gets a 200 with an empty body and reports
// "unexpected EOF". Held back, the failure becomes a 503 with an OCI error
// document, which clients retry. A store that fails after the first byte
// still truncates the body: the status is on the wire by then.
func guardBlobReads(log *slog.Logger, m *metrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || parseAPIPath(r.URL.Path).ep != epBlob {
			next.ServeHTTP(w, r)
			return
		}
		gw := &firstByteWriter{ResponseWriter: w}
		next.ServeHTTP(gw, r)
		if !gw.failed() {
			gw.commit()
			return
		}
		m.storageErrors.Inc()
		attrs := []any{"path", r.URL.Path}
		if gw.readErr != nil {
			attrs = append(attrs, "err", gw.readErr)
		}
		log.Warn("blob download failed: storage did not deliver the first byte", attrs...)
		h := w.Header()
		for _, k := range []string{"Content-Length", "Content-Range", "ETag", "Cache-Control", "Docker-Content-Digest", "Last-Modified", "Accept-Ranges"} {
			h.Del(k)
		}
		writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "service unavailable: the blob could not be read from storage, try again", 0)
	})
}

// firstByteWriter delays a 200/206 until there is body to send.
type firstByteWriter struct {
	http.ResponseWriter
	pending   int  // success status held back; 0 when none
	committed bool // status sent downstream
	wrote     bool // body bytes sent
	readErr   error
}

func (f *firstByteWriter) WriteHeader(code int) {
	if f.committed || f.pending != 0 {
		return
	}
	if code == http.StatusOK || code == http.StatusPartialContent {
		f.pending = code
		return
	}
	f.committed = true
	f.ResponseWriter.WriteHeader(code)
}

func (f *firstByteWriter) commit() {
	if f.committed {
		return
	}
	f.committed = true
	if f.pending != 0 {
		f.ResponseWriter.WriteHeader(f.pending)
	}
}

// failed: a success status with a non-empty body was promised and no byte
// of it came.
func (f *firstByteWriter) failed() bool {
	if f.committed || f.pending == 0 || f.wrote {
		return false
	}
	cl := f.Header().Get("Content-Length")
	return cl != "" && cl != "0"
}

func (f *firstByteWriter) Write(b []byte) (int, error) {
	if f.pending == 0 && !f.committed {
		f.pending = http.StatusOK
	}
	if len(b) == 0 {
		return 0, nil
	}
	f.commit()
	f.wrote = true
	return f.ResponseWriter.Write(b)
}

// ReadFrom keeps sendfile-style copies downstream once the first read has
// succeeded, and records the read error when it has not.
func (f *firstByteWriter) ReadFrom(src io.Reader) (int64, error) {
	if !f.committed {
		buf := make([]byte, 32<<10)
		var n int
		var err error
		for n == 0 && err == nil {
			n, err = src.Read(buf)
		}
		if n == 0 {
			if errors.Is(err, io.EOF) {
				return 0, nil
			}
			f.readErr = err
			return 0, err
		}
		if _, werr := f.Write(buf[:n]); werr != nil {
			return 0, werr
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return int64(n), err
		}
		rest, err := copyTo(f.ResponseWriter, src)
		return int64(n) + rest, err
	}
	return copyTo(f.ResponseWriter, src)
}

func copyTo(w http.ResponseWriter, src io.Reader) (int64, error) {
	if rf, ok := w.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(w, src)
}

func (f *firstByteWriter) Flush() {
	if !f.committed {
		return
	}
	if fl, ok := f.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
}

func (f *firstByteWriter) Unwrap() http.ResponseWriter { return f.ResponseWriter }
