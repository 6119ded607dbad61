package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/auth"
	"github.com/distribution/distribution/v3/registry/storage/cache"
	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/internal/blobcache"
	"github.com/berth-registry/berth/internal/digests"
	"github.com/berth-registry/berth/internal/referrers"
)

// maxManifestBody is Distribution's limit on a manifest PUT.
const maxManifestBody = 4 << 20

// oci11 completes Distribution v3.1.2's OCI 1.1 support in front of its
// handler:
//
//   - GET /v2/<name>/referrers/<digest> from berth's storage-backed index
//     (package referrers), kept current on manifest PUT and DELETE, and the
//     OCI-Subject header on a PUT whose manifest has a subject;
//   - sha512 names for blobs and manifests (package digests): Distribution
//     stores content under sha256 only, so berth links the sha512 name as an
//     alias and answers with the digest the client used;
//   - a manifest whose foreign-layer URLs the configuration refuses is a 400
//     saying so, not Distribution's 500.
//
// Everything else, and all authorization of requests it passes on, is
// Distribution's.
type oci11 struct {
	driver driver.StorageDriver
	access auth.AccessController // nil without auth
	unlink digests.Unlinker
	index  *referrers.Index
	urls   urlPolicy
	log    *slog.Logger
	next   http.Handler
}

func newOCI11(d driver.StorageDriver, access auth.AccessController, c blobcache.Provider, dc *configuration.Configuration, log *slog.Logger, next http.Handler) *oci11 {
	var provider cache.BlobDescriptorCacheProvider
	if c != nil {
		provider = c
	}
	return &oci11{
		driver: d,
		access: access,
		unlink: digests.Unlinker{Driver: d, Cache: provider},
		index:  &referrers.Index{Driver: d, Concurrency: 16},
		urls:   newURLPolicy(dc.Validation),
		log:    log.With("component", "oci"),
		next:   next,
	}
}

// aliasDigest returns s as a digest when it names content by an algorithm
// Distribution only knows through aliases.
func aliasDigest(s string) (digest.Digest, bool) {
	d, err := digest.Parse(s)
	if err != nil || !digests.IsAlias(d) {
		return "", false
	}
	return d, true
}

func (o *oci11) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := parseAPIPath(r.URL.Path)
	if rt.ep != epUnknown && rt.name != "" && !validName(rt.name) {
		rt.ep = epUnknown // Distribution (or ociErrors) says what is wrong
	}
	switch {
	case rt.ep == epReferrers:
		o.serveReferrers(w, r, rt)
	case rt.ep == epManifest && r.Method == http.MethodPut:
		o.putManifest(w, r, rt)
	case rt.ep == epManifest && r.Method == http.MethodDelete:
		o.deleteManifest(w, r, rt)
	case rt.ep == epBlob && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		o.getBlob(w, r, rt)
	case rt.ep == epBlob && r.Method == http.MethodDelete:
		o.deleteBlob(w, r, rt)
	case rt.ep == epUploadStart && r.Method == http.MethodPost:
		o.startUpload(w, r, rt)
	case rt.ep == epUpload && r.Method == http.MethodPut:
		o.completeUpload(w, r)
	default:
		o.next.ServeHTTP(w, r)
	}
}

// authorize checks access the way Distribution would, for requests berth
// answers itself. It writes the error response when access is refused.
func (o *oci11) authorize(w http.ResponseWriter, r *http.Request, name string, actions ...string) bool {
	if o.access == nil {
		return true
	}
	var acc []auth.Access
	for _, a := range actions {
		acc = append(acc, auth.Access{Resource: auth.Resource{Type: "repository", Name: name}, Action: a})
	}
	if _, err := o.access.Authorized(r, acc...); err != nil {
		var ch auth.Challenge
		if errors.As(err, &ch) {
			ch.SetHeaders(r, w)
			writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required", 0)
			return false
		}
		o.log.Error("authorization failed", "err", err)
		writeError(w, http.StatusInternalServerError, "UNKNOWN", "authorization failed", 0)
		return false
	}
	return true
}

// withPath returns r addressed to another path and query, as Distribution
// will route it.
func withPath(r *http.Request, p, rawQuery string) *http.Request {
	r2 := r.Clone(r.Context())
	r2.URL.Path, r2.URL.RawPath, r2.URL.RawQuery = p, "", rawQuery
	r2.RequestURI = r2.URL.RequestURI()
	return r2
}

// ---- referrers API ----

func (o *oci11) serveReferrers(w http.ResponseWriter, r *http.Request, rt apiPath) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "method not allowed", 0)
		return
	}
	if !o.authorize(w, r, rt.name, "pull") {
		return
	}
	subject, err := digest.Parse(rt.ref)
	if err != nil {
		writeError(w, http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("invalid subject digest %q: %v", rt.ref, err), 0)
		return
	}
	params := r.URL.Query()
	q := referrers.Query{ArtifactType: params.Get("artifactType")}
	if s := params.Get("n"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "PAGINATION_NUMBER_INVALID", "n must be a positive number", 0)
			return
		}
		q.Limit = min(n, referrers.DefaultLimit)
	}
	if s := params.Get("last"); s != "" {
		if q.After, err = digest.Parse(s); err != nil {
			writeError(w, http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("invalid last digest %q", s), 0)
			return
		}
	}
	page, err := o.index.List(r.Context(), rt.name, subject, q)
	if err != nil {
		o.log.Error("list referrers", "repository", rt.name, "subject", subject, "err", err)
		writeError(w, http.StatusInternalServerError, "UNKNOWN", "cannot list referrers", 0)
		return
	}
	idx := v1.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageIndex,
		Manifests: page.Manifests,
	}
	if idx.Manifests == nil {
		idx.Manifests = []v1.Descriptor{}
	}
	body, err := json.Marshal(idx)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "UNKNOWN", "cannot encode referrers", 0)
		return
	}
	h := w.Header()
	h.Set("Content-Type", v1.MediaTypeImageIndex)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Docker-Distribution-API-Version", "registry/2.0")
	if q.ArtifactType != "" {
		h.Set("OCI-Filters-Applied", "artifactType")
	}
	if page.More {
		next := url.Values{"last": {string(page.Manifests[len(page.Manifests)-1].Digest)}}
		if q.Limit > 0 {
			next.Set("n", strconv.Itoa(q.Limit))
		}
		if q.ArtifactType != "" {
			next.Set("artifactType", q.ArtifactType)
		}
		h.Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, next.Encode()))
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

// ---- manifests ----

// putManifest indexes a referrer once Distribution has stored it, before
// the client hears of it, and lets a manifest be pushed by sha512.
func (o *oci11) putManifest(w http.ResponseWriter, r *http.Request, rt apiPath) {
	contentType := r.Header.Get("Content-Type")
	alias, isAlias := aliasDigest(rt.ref)
	if isAlias {
		// Distribution checks a pushed digest against sha256 only: verify the
		// sha512 here and hand it the sha256 name. That needs the body first,
		// so check access first, as Distribution would.
		if !o.authorize(w, r, rt.name, "pull", "push") {
			return
		}
		b, err := io.ReadAll(io.LimitReader(r.Body, maxManifestBody+1))
		if err != nil {
			writeError(w, http.StatusBadRequest, "MANIFEST_INVALID", "cannot read the manifest: "+err.Error(), 0)
			return
		}
		if len(b) > maxManifestBody {
			writeError(w, http.StatusBadRequest, "MANIFEST_INVALID", "manifest larger than 4 MiB", 0)
			return
		}
		if alias.Algorithm().FromBytes(b) != alias {
			writeError(w, http.StatusBadRequest, "DIGEST_INVALID", "the manifest does not match digest "+alias.String(), 0)
			return
		}
		r = withPath(r, "/v2/"+rt.name+"/manifests/"+digest.FromBytes(b).String(), r.URL.RawQuery)
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
	}
	body := &captureBody{r: r.Body, check: func(b []byte) error { return o.checkManifest(b, contentType) }}
	r.Body = body
	hw := &hookWriter{ResponseWriter: w}
	hw.hook = func(h http.Header, status int) (int, []byte) {
		if status != http.StatusCreated {
			return status, nil
		}
		content, ok := body.complete()
		if !ok {
			o.log.Error("manifest stored but its body was not seen whole; referrers index not updated", "repository", rt.name)
			return errorBody(http.StatusInternalServerError, "UNKNOWN", "manifest stored, but indexing failed; push it again")
		}
		canonical := digest.FromBytes(content)
		stored := canonical
		if isAlias {
			stored = alias
			if err := digests.WriteAlias(r.Context(), o.driver, rt.name, digests.Manifest, alias, canonical); err != nil {
				o.log.Error("link sha512 manifest name", "repository", rt.name, "err", err)
				return errorBody(http.StatusInternalServerError, "UNKNOWN", "manifest stored, but linking its digest failed; push it again")
			}
			renameDigest(h, canonical, alias)
		}
		desc, subject, err := referrers.Describe(content, contentType, stored)
		if err != nil || subject == "" {
			return status, nil
		}
		if err := referrers.Record(r.Context(), o.driver, rt.name, subject, desc); err != nil {
			o.log.Error("index referrer", "repository", rt.name, "referrer", stored, "subject", subject, "err", err)
			return errorBody(http.StatusInternalServerError, "UNKNOWN", "manifest stored, but indexing its subject failed; push it again")
		}
		h.Set("OCI-Subject", subject.String())
		return status, nil
	}
	o.next.ServeHTTP(hw, r)
}

// checkManifest refuses, before Distribution stores anything, what it would
// store without a usable subject or refuse with a 500.
func (o *oci11) checkManifest(b []byte, contentType string) error {
	var m struct {
		MediaType string          `json:"mediaType"`
		Config    *v1.Descriptor  `json:"config"`
		Layers    []v1.Descriptor `json:"layers"`
		Subject   *struct {
			Digest string `json:"digest"`
		} `json:"subject"`
	}
	if json.Unmarshal(b, &m) != nil {
		return nil // Distribution says what is wrong with it
	}
	if m.Subject != nil {
		if _, err := digest.Parse(m.Subject.Digest); err != nil {
			return fmt.Errorf("subject digest %q: %v", m.Subject.Digest, err)
		}
	}
	mt := m.MediaType
	if mt == "" {
		mt = contentType
	}
	descs := m.Layers
	if m.Config != nil {
		descs = append([]v1.Descriptor{*m.Config}, descs...)
	}
	return o.urls.check(mt, descs)
}

// deleteManifest deletes a manifest under all its names and drops it from
// its subject's referrers.
func (o *oci11) deleteManifest(w http.ResponseWriter, r *http.Request, rt apiPath) {
	d, err := digest.Parse(rt.ref)
	if err != nil {
		o.next.ServeHTTP(w, r) // a tag: only the tag goes
		return
	}
	ctx := r.Context()
	canonical, ok, err := digests.Resolve(ctx, o.driver, rt.name, digests.Manifest, d)
	if err != nil || !ok || digests.IsAlias(canonical) {
		o.next.ServeHTTP(w, r) // Distribution reports what is missing
		return
	}
	content, err := o.driver.GetContent(ctx, digests.DataPath(canonical))
	if err != nil || len(content) > maxManifestBody {
		o.next.ServeHTTP(w, r)
		return
	}
	if digests.IsAlias(d) {
		// Distribution deletes the sha256 revision and the tags on it.
		r = withPath(r, "/v2/"+rt.name+"/manifests/"+canonical.String(), r.URL.RawQuery)
	}
	hw := &hookWriter{ResponseWriter: w}
	hw.hook = func(h http.Header, status int) (int, []byte) {
		if status != http.StatusAccepted {
			return status, nil
		}
		if err := o.forgetManifest(ctx, rt.name, canonical, content); err != nil {
			o.log.Error("manifest deleted, cleanup failed", "repository", rt.name, "digest", d, "err", err)
			return errorBody(http.StatusInternalServerError, "UNKNOWN", "manifest deleted, but removing its other names or its referrers entry failed")
		}
		return status, nil
	}
	o.next.ServeHTTP(hw, r)
}

func (o *oci11) forgetManifest(ctx context.Context, repo string, canonical digest.Digest, content []byte) error {
	if err := o.unlink.UnlinkManifestAliases(ctx, repo, canonical, content); err != nil {
		return err
	}
	subject := referrers.Subject(content)
	if subject == "" {
		return nil
	}
	for _, name := range digests.ManifestNames(content) {
		if err := referrers.Forget(ctx, o.driver, repo, subject, name); err != nil {
			return err
		}
	}
	return nil
}

// ---- blobs ----

// getBlob answers with the digest the client asked for: Distribution
// reports the sha256 its alias points at.
func (o *oci11) getBlob(w http.ResponseWriter, r *http.Request, rt apiPath) {
	alias, ok := aliasDigest(rt.ref)
	if !ok {
		o.next.ServeHTTP(w, r)
		return
	}
	hw := &hookWriter{ResponseWriter: w}
	hw.hook = func(h http.Header, status int) (int, []byte) {
		if status < 400 {
			if h.Get("Docker-Content-Digest") != "" {
				h.Set("Docker-Content-Digest", alias.String())
			}
			if h.Get("ETag") != "" {
				h.Set("ETag", `"`+alias.String()+`"`)
			}
		}
		return status, nil
	}
	o.next.ServeHTTP(hw, r)
}

// deleteBlob removes every name of the blob from the repository, not just
// the one the client used.
func (o *oci11) deleteBlob(w http.ResponseWriter, r *http.Request, rt apiPath) {
	d, err := digest.Parse(rt.ref)
	if err != nil {
		o.next.ServeHTTP(w, r)
		return
	}
	ctx := r.Context()
	canonical := d
	if digests.IsAlias(d) {
		t, ok, err := digests.Resolve(ctx, o.driver, rt.name, digests.Blob, d)
		if err != nil || !ok || digests.IsAlias(t) {
			o.next.ServeHTTP(w, r)
			return
		}
		canonical = t
	}
	hw := &hookWriter{ResponseWriter: w}
	hw.hook = func(h http.Header, status int) (int, []byte) {
		if status != http.StatusAccepted {
			return status, nil
		}
		if err := o.unlinkBlob(ctx, rt.name, d, canonical); err != nil {
			o.log.Error("blob deleted, removing its other names failed", "repository", rt.name, "digest", d, "err", err)
			return errorBody(http.StatusInternalServerError, "UNKNOWN", "blob deleted, but removing its other names failed")
		}
		return status, nil
	}
	o.next.ServeHTTP(hw, r)
}

func (o *oci11) unlinkBlob(ctx context.Context, repo string, deleted, canonical digest.Digest) error {
	names, err := digests.BlobAliases(ctx, o.driver, repo, canonical)
	if err != nil {
		return err
	}
	if deleted != canonical {
		names = append(names, canonical)
	}
	for _, n := range names {
		if n == deleted {
			continue
		}
		if err := o.unlink.Unlink(ctx, repo, digests.Blob, n); err != nil {
			return err
		}
	}
	return nil
}

// startUpload makes a cross-repository mount by sha512 mount the sha256
// content the source's alias points at (Distribution would link the sha512
// name to itself, a blob that does not exist) and links the alias.
func (o *oci11) startUpload(w http.ResponseWriter, r *http.Request, rt apiPath) {
	q := r.URL.Query()
	if !q.Has("mount") && q.Get("digest") != "" {
		o.postOnly(w, r, rt, q)
		return
	}
	alias, isAlias := aliasDigest(q.Get("mount"))
	from := q.Get("from")
	if !isAlias || from == "" {
		o.next.ServeHTTP(w, r)
		return
	}
	if !validName(from) {
		o.next.ServeHTTP(w, r)
		return
	}
	canonical, ok, err := digests.Resolve(r.Context(), o.driver, from, digests.Blob, alias)
	if err != nil || !ok || digests.IsAlias(canonical) {
		// Nothing to mount: a plain upload session, as the spec asks.
		q.Del("mount")
		q.Del("from")
		o.next.ServeHTTP(w, withPath(r, r.URL.Path, q.Encode()))
		return
	}
	q.Set("mount", canonical.String())
	r = withPath(r, r.URL.Path, q.Encode())
	hw := &hookWriter{ResponseWriter: w}
	hw.hook = func(h http.Header, status int) (int, []byte) {
		if status != http.StatusCreated {
			return status, nil
		}
		if err := digests.WriteAlias(r.Context(), o.driver, rt.name, digests.Blob, alias, canonical); err != nil {
			o.log.Error("link mounted sha512 blob", "repository", rt.name, "err", err)
			return errorBody(http.StatusInternalServerError, "UNKNOWN", "blob mounted, but linking its digest failed")
		}
		renameDigest(h, canonical, alias)
		return status, nil
	}
	o.next.ServeHTTP(hw, r)
}

// maxPostOnly is the largest blob berth takes in a single POST; larger
// ones get the upload session the spec lets a registry answer with (202),
// and the client sends the blob again with PUT.
const maxPostOnly = 32 << 20

// postOnly takes a whole blob in the POST that starts its upload
// (POST /v2/<name>/blobs/uploads/?digest=<digest> with the blob as body),
// which Distribution does not support. The blob is verified before anything
// is written, then stored through Distribution as an upload session closed
// by a PUT, so Distribution authorizes, stores and links it as usual.
func (o *oci11) postOnly(w http.ResponseWriter, r *http.Request, rt apiPath, q url.Values) {
	d, err := digest.Parse(q.Get("digest"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("invalid digest %q: %v", q.Get("digest"), err), 0)
		return
	}
	q.Del("digest")
	if r.ContentLength < 0 || r.ContentLength > maxPostOnly {
		o.next.ServeHTTP(w, withPath(r, r.URL.Path, q.Encode()))
		return
	}
	if !o.authorize(w, r, rt.name, "pull", "push") {
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, r.ContentLength+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "BLOB_UPLOAD_INVALID", "cannot read the blob: "+err.Error(), 0)
		return
	}
	if int64(len(body)) != r.ContentLength {
		writeError(w, http.StatusBadRequest, "SIZE_INVALID", "the blob's length does not match Content-Length", 0)
		return
	}
	if d.Algorithm().FromBytes(body) != d {
		writeError(w, http.StatusBadRequest, "DIGEST_INVALID", "the blob does not match digest "+d.String(), 0)
		return
	}

	start := withPath(r, r.URL.Path, q.Encode())
	start.Body, start.ContentLength = http.NoBody, 0
	start.Header.Del("Content-Length")
	rec := newResponseRecorder()
	o.next.ServeHTTP(rec, start)
	if rec.code != http.StatusAccepted {
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.code)
		_, _ = w.Write(rec.body.Bytes())
		return
	}
	loc, err := url.Parse(rec.header.Get("Location"))
	if err != nil {
		o.log.Error("upload session without a usable Location", "repository", rt.name, "err", err)
		writeError(w, http.StatusInternalServerError, "UNKNOWN", "cannot start the upload", 0)
		return
	}
	session := withPath(r, loc.Path, loc.RawQuery)
	pq := loc.Query()
	pq.Set("digest", d.String())
	put := withPath(r, loc.Path, pq.Encode())
	put.Method = http.MethodPut
	put.Body, put.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	put.Header.Set("Content-Length", strconv.Itoa(len(body)))
	put.Header.Set("Content-Type", "application/octet-stream")
	hw := &hookWriter{ResponseWriter: w}
	status := 0
	hw.hook = func(h http.Header, code int) (int, []byte) {
		status = code
		if code == http.StatusCreated && digests.IsAlias(d) {
			if c, err := digest.Parse(h.Get("Docker-Content-Digest")); err == nil {
				renameDigest(h, c, d)
			}
		}
		return code, nil
	}
	o.next.ServeHTTP(hw, put)
	if status != http.StatusCreated {
		// Leave no session behind for what was refused.
		session.Method = http.MethodDelete
		session.Body, session.ContentLength = http.NoBody, 0
		o.next.ServeHTTP(newResponseRecorder(), session)
	}
}

// completeUpload answers a sha512 upload with the sha512 digest;
// Distribution has linked both names already.
func (o *oci11) completeUpload(w http.ResponseWriter, r *http.Request) {
	alias, ok := aliasDigest(r.URL.Query().Get("digest"))
	if !ok {
		o.next.ServeHTTP(w, r)
		return
	}
	hw := &hookWriter{ResponseWriter: w}
	hw.hook = func(h http.Header, status int) (int, []byte) {
		if status == http.StatusCreated {
			if c, err := digest.Parse(h.Get("Docker-Content-Digest")); err == nil {
				renameDigest(h, c, alias)
			}
		}
		return status, nil
	}
	o.next.ServeHTTP(hw, r)
}

// renameDigest makes a created response name the content by alias.
func renameDigest(h http.Header, canonical, alias digest.Digest) {
	h.Set("Docker-Content-Digest", alias.String())
	if loc := h.Get("Location"); loc != "" {
		h.Set("Location", strings.Replace(loc, canonical.String(), alias.String(), 1))
	}
}

// ---- foreign layers ----

// urlPolicy mirrors Distribution's validation of layer URLs
// (validation.manifests.urls), so a refused URL is reported as the
// client's error it is.
type urlPolicy struct {
	allow, deny *regexp.Regexp
	configured  bool // allow or deny set
}

func newURLPolicy(v configuration.Validation) urlPolicy {
	if !v.Enabled && v.Disabled {
		return urlPolicy{}
	}
	join := func(res []string) *regexp.Regexp {
		if len(res) == 0 {
			return nil
		}
		parts := make([]string, len(res))
		for i, s := range res {
			parts[i] = "(?:" + s + ")"
		}
		re, err := regexp.Compile(strings.Join(parts, "|"))
		if err != nil {
			return nil // config.Validate refuses it first
		}
		return re
	}
	p := urlPolicy{allow: join(v.Manifests.URLs.Allow), deny: join(v.Manifests.URLs.Deny)}
	p.configured = p.allow != nil || p.deny != nil
	if !p.configured {
		p.allow = regexp.MustCompile("^$") // upstream's default: no URLs
	}
	return p
}

const foreignLayerDocker = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

// check returns why Distribution would refuse the layer URLs of a manifest
// of media type mt, or nil.
func (p urlPolicy) check(mt string, descs []v1.Descriptor) error {
	if parsed, _, err := mime.ParseMediaType(mt); err == nil {
		mt = parsed
	}
	for i, d := range descs {
		switch {
		case mt == v1.MediaTypeImageManifest && isOCILayer(d.MediaType):
		case mt == "application/vnd.docker.distribution.manifest.v2+json" && d.MediaType == foreignLayerDocker:
			if len(d.URLs) == 0 {
				return fmt.Errorf("descriptor %d (%s): a foreign layer needs urls", i, d.Digest)
			}
		default:
			continue
		}
		for _, u := range d.URLs {
			pu, err := url.Parse(u)
			if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Fragment != "" {
				return fmt.Errorf("descriptor %d (%s): layer URL %q must be http or https without a fragment", i, d.Digest, u)
			}
			if (p.allow != nil && !p.allow.MatchString(u)) || (p.deny != nil && p.deny.MatchString(u)) {
				if !p.configured {
					return fmt.Errorf("descriptor %d (%s): layer URL %q refused: this registry accepts no foreign layer URLs (set validation.manifests.urls.allow)", i, d.Digest, u)
				}
				return fmt.Errorf("descriptor %d (%s): layer URL %q refused by validation.manifests.urls", i, d.Digest, u)
			}
		}
	}
	return nil
}

func isOCILayer(mt string) bool {
	switch mt {
	case v1.MediaTypeImageLayer, v1.MediaTypeImageLayerGzip,
		"application/vnd.oci.image.layer.nondistributable.v1.tar",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip":
		return true
	}
	return false
}

// ---- plumbing ----

// captureBody keeps what Distribution reads of a manifest and, when the
// whole body has been read, runs check on it: an error then makes
// Distribution refuse the manifest with MANIFEST_INVALID and that detail,
// before it stores anything.
type captureBody struct {
	r     io.ReadCloser
	buf   bytes.Buffer
	over  bool
	eof   bool
	check func([]byte) error
}

func (c *captureBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if !c.over {
		if c.buf.Len()+n > maxManifestBody {
			c.over = true
			c.buf = bytes.Buffer{}
		} else {
			c.buf.Write(p[:n])
		}
	}
	if err == io.EOF && !c.eof {
		c.eof = true
		if !c.over && c.check != nil {
			if cerr := c.check(c.buf.Bytes()); cerr != nil {
				return n, cerr
			}
		}
	}
	return n, err
}

func (c *captureBody) Close() error { return c.r.Close() }

// complete returns the body when it was read whole.
func (c *captureBody) complete() ([]byte, bool) {
	if !c.eof || c.over {
		return nil, false
	}
	return c.buf.Bytes(), true
}

// hookWriter lets a handler look at, and change, a response of the wrapped
// handler before its status goes out. hook returns the status to send; a
// non-nil body replaces the wrapped handler's body. It keeps io.ReaderFrom
// so blob downloads still use sendfile.
type hookWriter struct {
	http.ResponseWriter
	hook    func(h http.Header, status int) (int, []byte)
	written bool
	discard bool
}

func (w *hookWriter) WriteHeader(code int) {
	if w.written {
		return
	}
	w.written = true
	status, body := w.hook(w.Header(), code)
	if body == nil {
		w.ResponseWriter.WriteHeader(status)
		return
	}
	w.discard = true
	h := w.Header()
	for _, k := range []string{"Location", "Docker-Content-Digest", "OCI-Subject", "ETag"} {
		h.Del(k)
	}
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.ResponseWriter.WriteHeader(status)
	_, _ = w.ResponseWriter.Write(body)
}

func (w *hookWriter) Write(b []byte) (int, error) {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	if w.discard {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

func (w *hookWriter) ReadFrom(src io.Reader) (int64, error) {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	if w.discard {
		return io.Copy(io.Discard, src)
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(w.ResponseWriter, src)
}

func (w *hookWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *hookWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// errorBody is a hook result replacing the response with a registry error.
func errorBody(status int, code, msg string) (int, []byte) {
	b, _ := json.Marshal(map[string]any{"errors": []map[string]any{{"code": code, "message": msg}}})
	return status, append(b, '\n')
}
