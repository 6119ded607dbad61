package referrers_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/internal/referrers"
	"github.com/berth-registry/berth/internal/testutil"
)

const (
	sigType  = "application/vnd.dev.cosign.artifact.sig.v1+json"
	sbomType = "application/spdx+json"
)

// artifact is a cosign-style artifact: an OCI manifest whose config media
// type is its artifact type and whose subject is the signed image.
func artifact(t *testing.T, subject ggcrv1.Descriptor, artifactType string) ggcrv1.Image {
	t.Helper()
	l, err := random.Layer(64, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), l)
	if err != nil {
		t.Fatal(err)
	}
	return mutate.Subject(mutate.ConfigMediaType(img, types.MediaType(artifactType)), subject).(ggcrv1.Image)
}

func descriptor(t *testing.T, img ggcrv1.Image) ggcrv1.Descriptor {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	size, err := img.Size()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	return ggcrv1.Descriptor{MediaType: mt, Digest: d, Size: size}
}

func push(t *testing.T, ref string, img ggcrv1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	// Without the tag fallback ggcr fails unless the registry serves the
	// referrers API for a manifest with a subject.
	if err := remote.Write(r, img, remote.WithReferrersTagFallback(false)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

func referrerDigests(t *testing.T, subject string, opts ...remote.Option) map[string]string {
	t.Helper()
	d, err := name.NewDigest(subject)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Referrers(d, append(opts, remote.WithReferrersTagFallback(false))...)
	if err != nil {
		t.Fatalf("referrers of %s: %v", subject, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, desc := range m.Manifests {
		out[desc.Digest.String()] = desc.ArtifactType
	}
	return out
}

// TestCosignStyleFlow pushes an image, attaches a signature and an SBOM the
// way cosign and ORAS do, lists them, and deletes.
func TestCosignStyleFlow(t *testing.T) {
	b := testutil.StartBerth(t, testutil.Options{})
	repo := b.Host + "/team/app"
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	push(t, repo+":v1", img)
	subject := descriptor(t, img)
	sig := artifact(t, subject, sigType)
	sbom := artifact(t, subject, sbomType)
	sigDesc, sbomDesc := descriptor(t, sig), descriptor(t, sbom)
	push(t, repo+"@"+sigDesc.Digest.String(), sig)
	push(t, repo+":sbom", sbom)

	subjectRef := repo + "@" + subject.Digest.String()
	got := referrerDigests(t, subjectRef)
	want := map[string]string{sigDesc.Digest.String(): sigType, sbomDesc.Digest.String(): sbomType}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("referrers: got %v, want %v", got, want)
	}
	if got := referrerDigests(t, subjectRef, remote.WithFilter("artifactType", sbomType)); fmt.Sprint(got) != fmt.Sprint(map[string]string{sbomDesc.Digest.String(): sbomType}) {
		t.Fatalf("referrers filtered by %s: %v", sbomType, got)
	}

	// The descriptors are complete: size and media type as pushed.
	idx := getReferrers(t, b.URL, "team/app", subject.Digest.String(), "")
	for _, d := range idx.Manifests {
		if d.Digest.String() == sigDesc.Digest.String() && (d.Size != sigDesc.Size || d.MediaType != string(sigDesc.MediaType)) {
			t.Errorf("signature descriptor %+v, pushed %+v", d, sigDesc)
		}
	}

	// No tag-schema fallback tag was needed.
	tags, err := remote.List(mustRepo(t, repo))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tags, []string{"sbom", "v1"}) {
		t.Fatalf("tags: %v (a sha256-… fallback tag means the referrers API was not used)", tags)
	}

	// Deleting the subject's tag leaves the referrers to gc (which keeps or
	// removes them with their subject).
	if err := remote.Delete(mustRef(t, repo+":v1")); err != nil {
		t.Fatal(err)
	}
	if got := referrerDigests(t, subjectRef); len(got) != 2 {
		t.Fatalf("referrers after untagging the subject: %v", got)
	}

	// Deleting the signature removes it from the list at once.
	if err := remote.Delete(mustRef(t, repo+"@"+sigDesc.Digest.String())); err != nil {
		t.Fatal(err)
	}
	if got := referrerDigests(t, subjectRef); fmt.Sprint(got) != fmt.Sprint(map[string]string{sbomDesc.Digest.String(): sbomType}) {
		t.Fatalf("referrers after deleting the signature: %v", got)
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustRepo(t *testing.T, s string) name.Repository {
	t.Helper()
	r, err := name.NewRepository(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// getReferrers calls the API directly and checks what every answer must be.
func getReferrers(t *testing.T, base, repo, subject, query string) v1.Index {
	t.Helper()
	idx, _ := getReferrersPage(t, base+"/v2/"+repo+"/referrers/"+subject+query)
	return idx
}

func getReferrersPage(t *testing.T, u string) (v1.Index, http.Header) {
	t.Helper()
	res, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, res.StatusCode, body)
	}
	if ct := res.Header.Get("Content-Type"); ct != v1.MediaTypeImageIndex {
		t.Fatalf("GET %s: Content-Type %q", u, ct)
	}
	var idx v1.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		t.Fatalf("GET %s: %v: %s", u, err, body)
	}
	if idx.SchemaVersion != 2 || idx.MediaType != v1.MediaTypeImageIndex || idx.Manifests == nil {
		t.Fatalf("GET %s: not an OCI index with a manifests list: %s", u, body)
	}
	return idx, res.Header
}

// registry is raw HTTP access to berth, for what clients' libraries hide.
type registry struct {
	t    *testing.T
	base string
}

func (r registry) do(method, path, ctype string, body []byte) (*http.Response, []byte) {
	r.t.Helper()
	req, err := http.NewRequest(method, r.base+path, bytes.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

// blob uploads content monolithically (POST, then PUT).
func (r registry) blob(repo string, content []byte) digest.Digest {
	r.t.Helper()
	res, b := r.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", "", nil)
	if res.StatusCode != http.StatusAccepted {
		r.t.Fatalf("start upload: %d %s", res.StatusCode, b)
	}
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil {
		r.t.Fatal(err)
	}
	d := digest.FromBytes(content)
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	res, b = r.do(http.MethodPut, loc.RequestURI(), "application/octet-stream", content)
	if res.StatusCode != http.StatusCreated {
		r.t.Fatalf("finish upload: %d %s", res.StatusCode, b)
	}
	return d
}

// artifactManifest is a minimal artifact manifest referring to subject.
func artifactManifest(subject digest.Digest, artifactType, salt string) []byte {
	empty := digest.FromString("{}")
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"artifactType":%q,`+
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},"layers":[],`+
		`"subject":{"mediaType":%q,"digest":%q,"size":100},"annotations":{"salt":%q}}`,
		v1.MediaTypeImageManifest, artifactType, empty, v1.MediaTypeImageManifest, subject, salt))
}

func (r registry) putManifest(repo, ref string, body []byte) *http.Response {
	r.t.Helper()
	res, b := r.do(http.MethodPut, "/v2/"+repo+"/manifests/"+ref, v1.MediaTypeImageManifest, body)
	if res.StatusCode != http.StatusCreated {
		r.t.Fatalf("PUT manifest %s: %d %s", ref, res.StatusCode, b)
	}
	return res
}

func TestSubjectHeaderEmptyListsAndBadInput(t *testing.T) {
	b := testutil.StartBerth(t, testutil.Options{})
	r := registry{t, b.URL}
	r.blob("app", []byte("{}"))
	// The subject need not exist (yet): signatures may be pushed first.
	subject := digest.FromString("not pushed")
	m := artifactManifest(subject, sigType, "1")
	res := r.putManifest("app", digest.FromBytes(m).String(), m)
	if got := res.Header.Get("OCI-Subject"); got != subject.String() {
		t.Fatalf("OCI-Subject = %q, want %q", got, subject)
	}
	if got := getReferrers(t, b.URL, "app", subject.String(), "").Manifests; len(got) != 1 || got[0].Digest != digest.FromBytes(m) {
		t.Fatalf("referrers: %+v", got)
	}
	// A manifest without subject gets no OCI-Subject.
	plain := []byte(strings.Replace(string(artifactManifest(subject, sigType, "2")), `"subject"`, `"notsubject"`, 1))
	if res := r.putManifest("app", "plain", plain); res.Header.Get("OCI-Subject") != "" {
		t.Fatalf("OCI-Subject on a manifest without subject: %q", res.Header.Get("OCI-Subject"))
	}

	// None: an empty index, not a 404, in a repository that exists or not.
	for _, u := range []string{"/v2/app/referrers/" + digest.FromString("x").String(), "/v2/no/such/repo/referrers/" + subject.String()} {
		if idx, _ := getReferrersPage(t, b.URL+u); len(idx.Manifests) != 0 {
			t.Fatalf("%s: %+v", u, idx.Manifests)
		}
	}
	// A filter is reported as applied, even when nothing matches.
	_, h := getReferrersPage(t, b.URL+"/v2/app/referrers/"+subject.String()+"?artifactType=none%2Fsuch")
	if h.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("OCI-Filters-Applied = %q", h.Get("OCI-Filters-Applied"))
	}

	for _, tc := range []struct{ path, code string }{
		{"/v2/app/referrers/sha256:nothex", "DIGEST_INVALID"},
		{"/v2/app/referrers/" + subject.String() + "?n=0", "PAGINATION_NUMBER_INVALID"},
	} {
		res, body := r.do(http.MethodGet, tc.path, "", nil)
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), tc.code) {
			t.Errorf("GET %s: %d %s, want 400 %s", tc.path, res.StatusCode, body, tc.code)
		}
	}

	// A subject berth cannot index is refused before anything is stored.
	bad := []byte(strings.Replace(string(artifactManifest(subject, sigType, "3")), subject.String(), "sha256:nothex", 1))
	res, body := r.do(http.MethodPut, "/v2/app/manifests/bad", v1.MediaTypeImageManifest, bad)
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "MANIFEST_INVALID") || !strings.Contains(string(body), "subject") {
		t.Fatalf("manifest with an invalid subject digest: %d %s", res.StatusCode, body)
	}
	if res, _ := r.do(http.MethodHead, "/v2/app/manifests/bad", "", nil); res.StatusCode != http.StatusNotFound {
		t.Fatalf("the refused manifest was stored: HEAD %d", res.StatusCode)
	}
}

func TestPaginationFollowsLinks(t *testing.T) {
	b := testutil.StartBerth(t, testutil.Options{})
	r := registry{t, b.URL}
	r.blob("app", []byte("{}"))
	subject := digest.FromString("image")
	var want []digest.Digest
	for i := range 5 {
		at := sigType
		if i%2 == 1 {
			at = sbomType
		}
		m := artifactManifest(subject, at, fmt.Sprint(i))
		r.putManifest("app", digest.FromBytes(m).String(), m)
		if at == sigType {
			want = append(want, digest.FromBytes(m))
		}
	}
	slices.Sort(want)
	var got []digest.Digest
	next := "/v2/app/referrers/" + subject.String() + "?n=2&artifactType=" + url.QueryEscape(sigType)
	for pages := 0; next != ""; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		idx, h := getReferrersPage(t, b.URL+next)
		if len(idx.Manifests) > 2 {
			t.Fatalf("page of %d with n=2", len(idx.Manifests))
		}
		for _, d := range idx.Manifests {
			got = append(got, digest.Digest(d.Digest))
		}
		next = ""
		if link := h.Get("Link"); link != "" {
			next = strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged referrers: got %v, want %v", got, want)
	}
}

// TestEveryReplicaAndDataFromBefore runs two replicas on one storage: a
// referrer pushed to one is listed by the other at once. Then it removes
// berth's index, as for data written by plain Distribution, and restarts:
// the referrers are still found.
func TestEveryReplicaAndDataFromBefore(t *testing.T) {
	b1 := testutil.StartBerth(t, testutil.Options{})
	b2 := testutil.StartBerth(t, testutil.Options{Root: b1.Root})
	r1, r2 := registry{t, b1.URL}, registry{t, b2.URL}
	r1.blob("app", []byte("{}"))
	subject := digest.FromString("image")
	m := artifactManifest(subject, sigType, "replicas")
	d := digest.FromBytes(m)
	r1.putManifest("app", d.String(), m)
	if got := getReferrers(t, b2.URL, "app", subject.String(), "").Manifests; len(got) != 1 || got[0].Digest != d {
		t.Fatalf("other replica lists %+v", got)
	}
	if res, body := r2.do(http.MethodDelete, "/v2/app/manifests/"+d.String(), "", nil); res.StatusCode != http.StatusAccepted {
		t.Fatalf("delete: %d %s", res.StatusCode, body)
	}
	if got := getReferrers(t, b1.URL, "app", subject.String(), "").Manifests; len(got) != 0 {
		t.Fatalf("first replica still lists %+v", got)
	}
	r1.putManifest("app", d.String(), m)
	b1.Stop()
	b2.Stop()

	if err := os.RemoveAll(filepath.Join(b1.Root, "docker/registry/v2/repositories/app/_berth")); err != nil {
		t.Fatal(err)
	}
	b3 := testutil.StartBerth(t, testutil.Options{Root: b1.Root})
	if got := getReferrers(t, b3.URL, "app", subject.String(), "").Manifests; len(got) != 1 || got[0].Digest != d || got[0].ArtifactType != sigType {
		t.Fatalf("after restart on data without an index: %+v", got)
	}
}

// TestMigrateCommand indexes data written without berth's index, the way an
// operator would before opening a registry written by Distribution.
func TestMigrateCommand(t *testing.T) {
	b := testutil.StartBerth(t, testutil.Options{})
	r := registry{t, b.URL}
	r.blob("app", []byte("{}"))
	subject := digest.FromString("image")
	m := artifactManifest(subject, sigType, "migrate")
	r.putManifest("app", digest.FromBytes(m).String(), m)
	b.Stop()
	if err := os.RemoveAll(filepath.Join(b.Root, "docker/registry/v2/repositories/app/_berth")); err != nil {
		t.Fatal(err)
	}

	run := func(args ...string) (string, error) {
		cmd := referrers.NewMigrateCommand()
		var out, errw bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&errw)
		cmd.SetArgs(args)
		err := cmd.Execute()
		return out.String(), err
	}
	out, err := run("referrers", "--data-dir", b.Root, "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var st referrers.Stats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if st != (referrers.Stats{Repositories: 1, Manifests: 1, Referrers: 1, Added: 1}) {
		t.Fatalf("stats: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(b.Root, "docker/registry/v2/repositories/app/_berth/referrers-indexed")); err != nil {
		t.Fatalf("repository not marked indexed: %v", err)
	}
	b2 := testutil.StartBerth(t, testutil.Options{Root: b.Root})
	if got := getReferrers(t, b2.URL, "app", subject.String(), "").Manifests; len(got) != 1 {
		t.Fatalf("referrers after migrate: %+v", got)
	}

	_, err = run("referrers", "--data-dir", b.Root, "--concurrency", "0")
	var ec interface{ ExitCode() int }
	if !errors.As(err, &ec) || ec.ExitCode() != 2 {
		t.Fatalf("bad flag: %v, want exit status 2", err)
	}
}
