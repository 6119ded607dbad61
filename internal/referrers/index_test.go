package referrers

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/internal/digests"
)

func TestDescribe(t *testing.T) {
	subject := digest.FromString("subject")
	subj := fmt.Sprintf(`"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":7}`, subject)
	d := digest.FromString("m")
	tests := []struct {
		name, body, ctype string
		want              v1.Descriptor
		wantSubject       digest.Digest
		wantErr           bool
	}{
		{
			name: "artifact type wins over config media type",
			body: `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sig",` +
				`"config":{"mediaType":"application/vnd.oci.empty.v1+json"},"annotations":{"a":"b"},` + subj + `}`,
			want:        v1.Descriptor{MediaType: v1.MediaTypeImageManifest, ArtifactType: "application/vnd.example.sig", Annotations: map[string]string{"a": "b"}},
			wantSubject: subject,
		},
		{
			name:        "image manifest without artifactType uses the config media type",
			body:        `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.example.sbom"},` + subj + `}`,
			want:        v1.Descriptor{MediaType: v1.MediaTypeImageManifest, ArtifactType: "application/vnd.example.sbom"},
			wantSubject: subject,
		},
		{
			name:        "index without artifactType has none",
			body:        `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],` + subj + `}`,
			want:        v1.Descriptor{MediaType: v1.MediaTypeImageIndex},
			wantSubject: subject,
		},
		{
			name:        "media type from the Content-Type when the manifest has none",
			body:        `{"schemaVersion":2,"manifests":[],"artifactType":"x/y",` + subj + `}`,
			ctype:       "application/vnd.oci.image.index.v1+json; charset=utf-8",
			want:        v1.Descriptor{MediaType: v1.MediaTypeImageIndex, ArtifactType: "x/y"},
			wantSubject: subject,
		},
		{
			name: "no subject, no referrer",
			body: `{"schemaVersion":2,"config":{"mediaType":"a/b"}}`,
		},
		{
			name:    "invalid subject digest",
			body:    `{"schemaVersion":2,"subject":{"digest":"sha256:nothex"}}`,
			wantErr: true,
		},
		{
			name:    "not JSON",
			body:    `{`,
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, s, err := Describe([]byte(tt.body), tt.ctype, d)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if s != tt.wantSubject {
				t.Fatalf("subject = %q, want %q", s, tt.wantSubject)
			}
			if s == "" {
				return
			}
			tt.want.Digest, tt.want.Size = d, int64(len(tt.body))
			if g, w := mustJSON(t, got), mustJSON(t, tt.want); g != w {
				t.Errorf("descriptor\n got %s\nwant %s", g, w)
			}
		})
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// store is a storage holding manifests the way Distribution lays them out.
type store struct {
	t   testing.TB
	ctx context.Context
	d   driver.StorageDriver
}

func newStore(t testing.TB) *store {
	return &store{t: t, ctx: context.Background(), d: inmemory.New()}
}

// manifest stores a manifest with the given subject and artifact type in
// repo, as Distribution would after a push, and returns its digest.
func (s *store) manifest(repo string, subject digest.Digest, artifactType, salt string) (digest.Digest, []byte) {
	s.t.Helper()
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     v1.MediaTypeImageManifest,
		"artifactType":  artifactType,
		"config":        map[string]any{"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest.FromString("{}"), "size": 2},
		"layers":        []any{},
		"annotations":   map[string]string{"salt": salt},
	}
	if subject != "" {
		m["subject"] = map[string]any{"mediaType": v1.MediaTypeImageManifest, "digest": subject, "size": 1}
	}
	b, err := json.Marshal(m)
	if err != nil {
		s.t.Fatal(err)
	}
	d := digest.FromBytes(b)
	s.put(digests.DataPath(d), b)
	s.put(digests.LinkPath(repo, digests.Manifest, d), []byte(d))
	return d, b
}

func (s *store) put(p string, b []byte) {
	s.t.Helper()
	if err := s.d.PutContent(s.ctx, p, b); err != nil {
		s.t.Fatal(err)
	}
}

func (s *store) record(repo string, subject digest.Digest, d digest.Digest, body []byte) {
	s.t.Helper()
	desc, subj, err := Describe(body, "", d)
	if err != nil || subj != subject {
		s.t.Fatalf("describe: %v (subject %s)", err, subj)
	}
	if err := Record(s.ctx, s.d, repo, subject, desc); err != nil {
		s.t.Fatal(err)
	}
}

func (s *store) list(repo string, subject digest.Digest, q Query) Page {
	s.t.Helper()
	p, err := List(s.ctx, s.d, repo, subject, q)
	if err != nil {
		s.t.Fatal(err)
	}
	return p
}

func digestsOf(descs []v1.Descriptor) []digest.Digest {
	var out []digest.Digest
	for _, d := range descs {
		out = append(out, d.Digest)
	}
	return out
}

func TestListPagesFiltersAndSkipsDeleted(t *testing.T) {
	s := newStore(t)
	subject := digest.FromString("image")
	var sigs, sboms []digest.Digest
	for i := range 5 {
		d, b := s.manifest("app", subject, "application/vnd.example.sig", fmt.Sprint("sig", i))
		s.record("app", subject, d, b)
		sigs = append(sigs, d)
		d, b = s.manifest("app", subject, "application/vnd.example.sbom", fmt.Sprint("sbom", i))
		s.record("app", subject, d, b)
		sboms = append(sboms, d)
	}
	all := slices.Sorted(slices.Values(append(slices.Clone(sigs), sboms...)))

	if got := digestsOf(s.list("app", subject, Query{}).Manifests); !slices.Equal(got, all) {
		t.Fatalf("all referrers: got %v, want %v", got, all)
	}
	if p := s.list("other", subject, Query{}); len(p.Manifests) != 0 || p.More {
		t.Fatalf("another repository's list: %+v", p)
	}

	// Paging with a limit visits everything once, in order.
	var paged []digest.Digest
	q := Query{Limit: 3}
	for range 10 {
		p := s.list("app", subject, q)
		paged = append(paged, digestsOf(p.Manifests)...)
		if !p.More {
			break
		}
		q.After = p.Manifests[len(p.Manifests)-1].Digest
	}
	if !slices.Equal(paged, all) {
		t.Fatalf("paged: got %v, want %v", paged, all)
	}

	// A byte budget splits pages too, but never below one descriptor.
	if p := s.list("app", subject, Query{MaxBytes: 1}); len(p.Manifests) != 1 || !p.More {
		t.Fatalf("tiny byte budget: %d descriptors, more=%v", len(p.Manifests), p.More)
	}

	filtered := s.list("app", subject, Query{ArtifactType: "application/vnd.example.sbom"})
	if got, want := digestsOf(filtered.Manifests), slices.Sorted(slices.Values(sboms)); !slices.Equal(got, want) {
		t.Fatalf("filtered: got %v, want %v", got, want)
	}

	// A referrer whose manifest is unlinked (deleted by any tool) is not
	// listed even while its entry remains.
	if err := s.d.Delete(s.ctx, digests.LinkPath("app", digests.Manifest, sigs[0])); err != nil {
		t.Fatal(err)
	}
	if got := digestsOf(s.list("app", subject, Query{}).Manifests); slices.Contains(got, sigs[0]) || len(got) != 9 {
		t.Fatalf("after unlinking %s: %v", sigs[0], got)
	}

	if err := Forget(s.ctx, s.d, "app", subject, sboms[0]); err != nil {
		t.Fatal(err)
	}
	if err := Forget(s.ctx, s.d, "app", subject, sboms[0]); err != nil {
		t.Fatalf("forgetting twice: %v", err)
	}
	if got := digestsOf(s.list("app", subject, Query{}).Manifests); slices.Contains(got, sboms[0]) || len(got) != 8 {
		t.Fatalf("after Forget %s: %v", sboms[0], got)
	}
}

func TestRebuildIndexesExistingDataOnce(t *testing.T) {
	s := newStore(t)
	ctx := s.ctx
	subject, _ := s.manifest("app", "", "", "image")
	ref, refBody := s.manifest("app", subject, "application/vnd.example.sig", "sig")
	s.manifest("app", "", "", "unrelated")

	// The same manifest pushed by sha512 too: one entry, under the name it
	// was pushed by.
	alias := digest.SHA512.FromBytes(refBody)
	s.put(digests.LinkPath("app", digests.Manifest, alias), []byte(ref))

	// A stale entry: its referrer is not linked into the repository.
	ghost, ghostBody := s.manifest("elsewhere", subject, "x/y", "ghost")
	s.record("app", subject, ghost, ghostBody)

	x := &Index{Driver: s.d}
	p, err := x.List(ctx, "app", subject, Query{})
	if err != nil {
		t.Fatal(err)
	}
	if got := digestsOf(p.Manifests); !slices.Equal(got, []digest.Digest{alias}) {
		t.Fatalf("referrers after the first listing built the index: %v, want [%s]", got, alias)
	}
	if _, err := s.d.Stat(ctx, EntryPath("app", subject, ghost)); !isNotFound(err) {
		t.Fatalf("stale entry kept (%v)", err)
	}

	// Built once: an entry added behind the index's back is not found by a
	// new process either, because the repository is marked indexed.
	late, _ := s.manifest("app", subject, "x/y", "late")
	p, err = (&Index{Driver: s.d}).List(ctx, "app", subject, Query{})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(digestsOf(p.Manifests), late) {
		t.Fatal("the index was rebuilt although the repository is marked indexed")
	}
	// Migrate picks it up.
	st, err := Migrate(ctx, s.d, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Repositories != 2 || st.Added != 2 || st.Referrers != 3 {
		t.Fatalf("migrate stats: %+v", st)
	}
	p = s.list("app", subject, Query{})
	if !slices.Contains(digestsOf(p.Manifests), late) {
		t.Fatal("migrate did not index the late referrer")
	}

	// A repository without manifests is not created by a listing.
	if p, err := x.List(ctx, "nothing/here", subject, Query{}); err != nil || len(p.Manifests) != 0 {
		t.Fatalf("unknown repository: %+v, %v", p, err)
	}
	if _, err := s.d.Stat(ctx, reposRoot+"/nothing"); !isNotFound(err) {
		t.Fatalf("listing an unknown repository created it (%v)", err)
	}
}
