package server

import (
	"path"
	"regexp"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// endpoint is the registry API endpoint a request path addresses, parsed the
// way Distribution's router would match it.
type endpoint int

const (
	epUnknown     endpoint = iota
	epBase                 // /v2/
	epCatalog              // /v2/_catalog
	epTags                 // /v2/<name>/tags/list
	epManifest             // /v2/<name>/manifests/<reference>
	epBlob                 // /v2/<name>/blobs/<digest>
	epUploadStart          // /v2/<name>/blobs/uploads/
	epUpload               // /v2/<name>/blobs/uploads/<uuid>
	epReferrers            // /v2/<name>/referrers/<digest>
	epBerthTags            // /v2/<name>/_berth/tags
)

// apiPath is a parsed request path. Name and ref are as sent, not validated.
type apiPath struct {
	ep   endpoint
	name string
	ref  string // tag or digest, digest, or upload id
}

var (
	anchoredTag    = regexp.MustCompile(`^` + reference.TagRegexp.String() + `$`)
	anchoredDigest = regexp.MustCompile(`^` + digest.DigestRegexp.String() + `$`)
	anchoredUUID   = regexp.MustCompile(`^[a-zA-Z0-9-_.=]+$`)
)

// Suffixes whose last path segment is the reference; the one that starts
// furthest right wins, as with the router's greedy name pattern.
var refRoutes = []struct {
	sep string
	ep  endpoint
}{
	{"/blobs/uploads/", epUpload},
	{"/manifests/", epManifest},
	{"/blobs/", epBlob},
	{"/referrers/", epReferrers},
}

// parseAPIPath finds the endpoint of p. Paths the router would first
// redirect to a cleaned form (e.g. "//", "/../") are epUnknown: they are
// left to Distribution.
func parseAPIPath(p string) apiPath {
	if p != cleanPath(p) {
		return apiPath{}
	}
	switch p {
	case "/v2/":
		return apiPath{ep: epBase}
	case "/v2/_catalog":
		return apiPath{ep: epCatalog}
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return apiPath{}
	}
	for _, s := range []struct {
		suffix string
		ep     endpoint
	}{{"/tags/list", epTags}, {"/_berth/tags", epBerthTags}, {"/blobs/uploads/", epUploadStart}} {
		if name, ok := strings.CutSuffix(rest, s.suffix); ok {
			return apiPath{ep: s.ep, name: name}
		}
	}
	best := apiPath{}
	bestAt := -1
	for _, r := range refRoutes {
		i := strings.LastIndex(rest, r.sep)
		if i <= bestAt || i < 0 {
			continue
		}
		ref := rest[i+len(r.sep):]
		if ref == "" || strings.Contains(ref, "/") {
			continue
		}
		best, bestAt = apiPath{ep: r.ep, name: rest[:i], ref: ref}, i
	}
	return best
}

// cleanPath is gorilla/mux's path cleaning: path.Clean that keeps a
// trailing slash.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// validName is what Distribution accepts as a repository name.
func validName(name string) bool {
	_, err := reference.WithName(name)
	return err == nil
}

func validTag(s string) bool    { return anchoredTag.MatchString(s) }
func validDigest(s string) bool { return anchoredDigest.MatchString(s) }
