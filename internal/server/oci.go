package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"
)

// ociErrors makes Distribution answer bad requests the way OCI clients
// expect: a 4xx with an OCI error document, never a 500 or a plain-text
// page, and nothing written to storage.
//
// Before Distribution, it rejects requests whose repository name, reference
// or digest Distribution cannot handle (its router answers those with a
// plain-text 404, names over 255 characters with a 500), and drops blob
// mounts Distribution gets wrong. After it, it rewrites the 500s that
// Distribution v3.1.2 returns for client mistakes (decideResponse), and
// wraps plain-text router errors (unknown endpoint, wrong method) in an
// OCI error document.
func ociErrors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ap := parseAPIPath(r.URL.Path)
		if e := checkRequest(ap); e != nil {
			writeError(w, e.status, e.code, e.message, 0)
			return
		}
		if ap.ep == epUploadStart && r.Method == http.MethodPost {
			if q, changed := dropUnsafeMount(r.URL.RawQuery); changed {
				r = r.Clone(r.Context())
				r.URL.RawQuery = q
				r.RequestURI = r.URL.RequestURI()
			}
		}
		ow := &ociWriter{ResponseWriter: w, method: r.Method, ap: ap}
		next.ServeHTTP(ow, r)
		ow.finish()
	})
}

// ociError is an error berth answers itself.
type ociError struct {
	status        int
	code, message string
}

// checkRequest rejects what Distribution would answer with a plain-text 404
// or a 500: an invalid repository name, tag, digest or upload id on an
// endpoint that takes one. Other paths are left alone: Distribution decides
// on them, and its answers are fixed afterwards if need be.
func checkRequest(ap apiPath) *ociError {
	switch ap.ep {
	case epUnknown, epBase, epCatalog:
		return nil
	}
	if !validName(ap.name) {
		return &ociError{http.StatusBadRequest, "NAME_INVALID",
			"invalid repository name: path components of lowercase letters, digits and separators (. _ __ -), at most 255 characters in all"}
	}
	switch ap.ep {
	case epManifest:
		if validTag(ap.ref) || validDigest(ap.ref) {
			return nil
		}
		if strings.Contains(ap.ref, ":") {
			return &ociError{http.StatusBadRequest, "DIGEST_INVALID", "invalid digest: expected algorithm:encoded, e.g. sha256:<64 hex digits>"}
		}
		return &ociError{http.StatusBadRequest, "MANIFEST_INVALID",
			"invalid tag: at most 128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'"}
	case epBlob, epReferrers:
		if !validDigest(ap.ref) {
			return &ociError{http.StatusBadRequest, "DIGEST_INVALID", "invalid digest: expected algorithm:encoded, e.g. sha256:<64 hex digits>"}
		}
	case epUpload:
		if !anchoredUUID.MatchString(ap.ref) {
			return &ociError{http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry"}
		}
	}
	return nil
}

// dropUnsafeMount removes a cross-repository mount of a digest that is not
// sha256. Distribution v3.1.2 stores blobs under their sha256 digest only
// and, when mounting by another algorithm, links the repository to a blob
// that does not exist: the mount answers 201 and every later read of the
// blob fails. Without mount and from the request is a plain upload start
// (202), which the OCI spec names as the fallback clients must handle.
func dropUnsafeMount(rawQuery string) (string, bool) {
	if !strings.Contains(rawQuery, "mount") {
		return rawQuery, false
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return rawQuery, false
	}
	m, ok := q["mount"]
	if !ok {
		return rawQuery, false
	}
	if len(m) == 1 {
		if d, err := digest.Parse(m[0]); err == nil && d.Algorithm() == digest.SHA256 {
			return rawQuery, false
		}
	}
	delete(q, "mount")
	delete(q, "from")
	return q.Encode(), true
}

// ociWriter holds back error responses so finish can correct them.
type ociWriter struct {
	http.ResponseWriter
	method    string
	ap        apiPath
	status    int
	buffering bool
	buf       bytes.Buffer
}

func (o *ociWriter) WriteHeader(code int) {
	if o.status != 0 {
		return
	}
	o.status = code
	if code >= 400 {
		o.buffering = true
		return
	}
	o.ResponseWriter.WriteHeader(code)
}

func (o *ociWriter) Write(b []byte) (int, error) {
	if o.status == 0 {
		o.WriteHeader(http.StatusOK)
	}
	if !o.buffering {
		return o.ResponseWriter.Write(b)
	}
	if o.buf.Len()+len(b) > maxErrorBody {
		// Too big for an error document: not one to correct.
		o.buffering = false
		o.ResponseWriter.WriteHeader(o.status)
		if _, err := o.ResponseWriter.Write(o.buf.Bytes()); err != nil {
			return 0, err
		}
		o.buf.Reset()
		return o.ResponseWriter.Write(b)
	}
	return o.buf.Write(b)
}

func (o *ociWriter) ReadFrom(src io.Reader) (int64, error) {
	if o.status == 0 {
		o.WriteHeader(http.StatusOK)
	}
	if !o.buffering {
		if rf, ok := o.ResponseWriter.(io.ReaderFrom); ok {
			return rf.ReadFrom(src)
		}
		return io.Copy(o.ResponseWriter, src)
	}
	return io.Copy(struct{ io.Writer }{o}, src)
}

func (o *ociWriter) Flush() {
	if o.buffering {
		return
	}
	if f, ok := o.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (o *ociWriter) Unwrap() http.ResponseWriter { return o.ResponseWriter }

func (o *ociWriter) finish() {
	if !o.buffering {
		return
	}
	h := o.Header()
	status, body, changed := decideResponse(o.method, o.ap, o.status, h.Get("Content-Type"), o.buf.Bytes())
	if changed {
		h.Del("Content-Length")
		h.Set("Content-Type", "application/json; charset=utf-8")
		h.Del("X-Content-Type-Options")
	}
	o.ResponseWriter.WriteHeader(status)
	if o.method != http.MethodHead {
		_, _ = o.ResponseWriter.Write(body)
	}
}

// ociDoc is an OCI error document; entries keep every field Distribution sent.
type ociDoc struct {
	Errors []map[string]any `json:"errors"`
}

func parseOCIDoc(ctype string, body []byte) (ociDoc, bool) {
	var doc ociDoc
	if mt, _, _ := mime.ParseMediaType(ctype); mt != "application/json" {
		return doc, false
	}
	if err := json.Unmarshal(body, &doc); err != nil || len(doc.Errors) == 0 {
		return doc, false
	}
	for _, e := range doc.Errors {
		if c, _ := e["code"].(string); c == "" {
			return doc, false
		}
		if m, _ := e["message"].(string); m == "" {
			return doc, false
		}
	}
	return doc, true
}

func encodeDoc(errs ...map[string]any) []byte {
	b, _ := json.Marshal(ociDoc{Errors: errs})
	return append(b, '\n')
}

func entry(code, message string) map[string]any {
	return map[string]any{"code": code, "message": message}
}

// decideResponse corrects an error response: it returns the status and body
// to send, and whether they differ from Distribution's.
func decideResponse(method string, ap apiPath, status int, ctype string, body []byte) (int, []byte, bool) {
	doc, isDoc := parseOCIDoc(ctype, body)
	if status >= 500 {
		if !isDoc {
			return status, body, false
		}
		if st, errs, ok := clientErrorBehind500(method, ap, doc); ok {
			return st, encodeDoc(errs...), true
		}
		return status, body, false
	}
	if isDoc {
		return status, body, false
	}
	// A plain-text page from the router or from net/http (range errors).
	code, msg := "UNSUPPORTED", strings.ToLower(http.StatusText(status))
	switch status {
	case http.StatusNotFound:
		msg = "no such API endpoint"
		if ap.ep == epReferrers {
			msg = "the referrers API is not supported"
		}
	case http.StatusMethodNotAllowed:
		msg = fmt.Sprintf("method %s not allowed on this endpoint", method)
	case http.StatusRequestedRangeNotSatisfiable:
		code, msg = "BLOB_UNKNOWN", "requested range not satisfiable"
		if ap.ep == epUpload {
			code = "BLOB_UPLOAD_INVALID"
		}
	case http.StatusUnauthorized:
		code = "UNAUTHORIZED"
	case http.StatusForbidden:
		code = "DENIED"
	case http.StatusTooManyRequests:
		code = "TOOMANYREQUESTS"
	case http.StatusRequestEntityTooLarge:
		code = "SIZE_INVALID"
	}
	if msg == "" {
		msg = "request failed"
	}
	return status, encodeDoc(entry(code, msg)), true
}

// invalidDigestErrors are go-digest's validation errors, as Distribution
// puts them in the detail of an UNKNOWN error.
var invalidDigestErrors = map[string]bool{
	digest.ErrDigestInvalidFormat.Error(): true,
	digest.ErrDigestInvalidLength.Error(): true,
	digest.ErrDigestUnsupported.Error():   true,
}

// clientErrorBehind500 recognises Distribution v3.1.2's 500s that are caused
// by the request, not by the server. Every UNKNOWN entry must be explained,
// so a real storage failure reported alongside is never masked.
func clientErrorBehind500(method string, ap apiPath, doc ociDoc) (int, []map[string]any, bool) {
	var (
		status  int
		first   map[string]any
		keep    []map[string]any
		unknown int
	)
	for _, e := range doc.Errors {
		code, _ := e["code"].(string)
		detail, _ := e["detail"].(string)
		if code != "UNKNOWN" {
			keep = append(keep, e)
			continue
		}
		unknown++
		switch {
		case detail == "":
			// Distribution sends a bare UNKNOWN before each verification
			// error it cannot classify; the next entry carries the cause.
		case ap.ep == epManifest && method == http.MethodPut && detail == "invalid URL on layer":
			status = http.StatusBadRequest
			first = entry("MANIFEST_INVALID", "a layer lists urls this registry does not allow: non-distributable "+
				"(foreign) layer URLs must match validation.manifests.urls.allow and not validation.manifests.urls.deny")
		case ap.ep == epManifest && method == http.MethodPut && invalidDigestErrors[detail]:
			// A descriptor's digest that go-digest cannot parse (Distribution
			// maps only one of these errors to DIGEST_INVALID).
			status = http.StatusBadRequest
			first = entry("DIGEST_INVALID", "a descriptor in the manifest has an invalid digest: "+detail)
		case ap.ep == epManifest && method == http.MethodPut && strings.HasPrefix(detail, "unrecognized manifest schema version"):
			status = http.StatusBadRequest
			first = entry("MANIFEST_INVALID", "manifest invalid: "+detail)
		case ap.ep == epBlob && (method == http.MethodGet || method == http.MethodHead) && detail == "unknown blob":
			// A repository link to a blob that is not in storage (e.g. left
			// by a mount by sha512, see dropUnsafeMount).
			status = http.StatusNotFound
			first = entry("BLOB_UNKNOWN", "blob unknown to registry")
		default:
			return 0, nil, false
		}
	}
	if unknown == 0 || first == nil {
		return 0, nil, false
	}
	return status, append([]map[string]any{first}, keep...), true
}
