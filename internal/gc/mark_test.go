package gc

import (
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

var (
	old   = now.Add(-48 * time.Hour)
	fresh = now.Add(-time.Minute)
)

// d makes a readable fake digest: d("layer-a") is a valid sha256 digest.
func d(name string) digest.Digest { return digest.FromString(name) }

// names maps digests back to names for readable failures.
var names = map[digest.Digest]string{}

func n(name string) digest.Digest {
	dg := d(name)
	names[dg] = name
	return dg
}

func nameOf(dg digest.Digest) string {
	if s, ok := names[dg]; ok {
		return s
	}
	return string(dg)
}

type fixture struct {
	repos []Repository
	blobs map[string]time.Time // blob name -> modtime
}

// image is a manifest with a config and layers, linked long ago.
func image(name string, tags []string, layers ...string) Manifest {
	m := Manifest{Digest: n(name), MediaType: "application/vnd.oci.image.manifest.v1+json", Tags: tags, Linked: old,
		Blobs: []digest.Digest{n(name + "-config")}}
	for _, l := range layers {
		m.Blobs = append(m.Blobs, n(l))
	}
	return m
}

func index(name string, tags []string, children ...string) Manifest {
	m := Manifest{Digest: n(name), MediaType: "application/vnd.oci.image.index.v1+json", Tags: tags, Linked: old}
	for _, c := range children {
		m.Children = append(m.Children, n(c))
	}
	return m
}

func referrer(name, subject string, tags []string, blobs ...string) Manifest {
	m := image(name, tags, blobs...)
	m.Subject = n(subject)
	return m
}

// refTag is the referrers-tag-schema tag naming the manifest called name.
func refTag(name, suffix string) string {
	return "sha256-" + d(name).Encoded() + suffix
}

func linkedAt(m Manifest, t time.Time) Manifest { m.Linked = t; return m }

// storeAll returns blobs for every digest the manifests mention, all old.
func storeAll(repos ...Repository) map[string]time.Time {
	out := map[string]time.Time{}
	for _, r := range repos {
		for _, m := range r.Manifests {
			out[nameOf(m.Digest)] = old
			for _, b := range slices.Concat(m.Blobs, m.Children) {
				out[nameOf(b)] = old
			}
		}
	}
	return out
}

func (f fixture) listing() *Listing {
	l := &Listing{Repositories: f.repos}
	for name, t := range f.blobs {
		l.Blobs = append(l.Blobs, Blob{Digest: n(name), Size: int64(len(name)), Modified: t})
	}
	return l
}

func manifestNames(p *Plan) []string {
	var out []string
	for _, m := range p.Manifests {
		out = append(out, m.Repository+"@"+nameOf(m.Digest))
	}
	sort.Strings(out)
	return out
}

func blobNames(p *Plan) []string {
	var out []string
	for _, b := range p.Blobs {
		out = append(out, nameOf(b.Digest))
	}
	sort.Strings(out)
	return out
}

func linkNames(p *Plan) []string {
	var out []string
	for _, l := range p.LayerLinks {
		out = append(out, l.Repository+"@"+nameOf(l.Digest))
	}
	sort.Strings(out)
	return out
}

func sorted(s ...string) []string {
	sort.Strings(s)
	if len(s) == 0 {
		return nil
	}
	return s
}

func TestMark(t *testing.T) {
	grace := time.Hour
	tests := []struct {
		name           string
		repos          []Repository
		extraBlobs     map[string]time.Time
		deleteUntagged bool
		keep           map[string]map[digest.Digest]bool
		wantManifests  []string
		wantBlobs      []string
		wantLinks      []string
	}{
		{
			name: "tagged image and its blobs are kept",
			repos: []Repository{{Name: "app", Manifests: []Manifest{
				image("app-v1", []string{"v1"}, "layer-a", "layer-b"),
			}}},
			deleteUntagged: true,
		},
		{
			name: "untagged manifest is kept without delete-untagged",
			repos: []Repository{{Name: "app", Manifests: []Manifest{
				image("app-v1", []string{"v1"}, "layer-a"),
				image("app-old", nil, "layer-old"),
			}}},
		},
		{
			name: "untagged manifest goes with delete-untagged, shared layers stay",
			repos: []Repository{{Name: "app", Manifests: []Manifest{
				image("app-v1", []string{"v1"}, "layer-base", "layer-a"),
				image("app-old", nil, "layer-base", "layer-old"),
			}}},
			deleteUntagged: true,
			wantManifests:  []string{"app@app-old"},
			wantBlobs:      []string{"app-old", "app-old-config", "layer-old"},
		},
		{
			name: "untagged manifest pushed within the grace period is kept",
			repos: []Repository{{Name: "app", Manifests: []Manifest{
				linkedAt(image("app-by-digest", nil, "layer-new"), fresh),
			}}},
			deleteUntagged: true,
		},
		{
			name: "children of a tagged index are kept",
			repos: []Repository{{Name: "multi", Manifests: []Manifest{
				index("multi-idx", []string{"latest"}, "multi-amd64", "multi-arm64"),
				image("multi-amd64", nil, "layer-amd64"),
				image("multi-arm64", nil, "layer-arm64"),
			}}},
			deleteUntagged: true,
		},
		{
			name: "untagged index goes with its children",
			repos: []Repository{{Name: "multi", Manifests: []Manifest{
				index("multi-idx", nil, "multi-amd64"),
				image("multi-amd64", nil, "layer-amd64"),
				image("multi-v2", []string{"v2"}, "layer-v2"),
			}}},
			deleteUntagged: true,
			wantManifests:  []string{"multi@multi-amd64", "multi@multi-idx"},
			wantBlobs:      []string{"layer-amd64", "multi-amd64", "multi-amd64-config", "multi-idx"},
		},
		{
			name: "a child shared with a live index stays when another index goes",
			repos: []Repository{{Name: "multi", Manifests: []Manifest{
				index("idx-old", nil, "shared-child", "old-child"),
				index("idx-new", []string{"latest"}, "shared-child"),
				image("shared-child", nil, "layer-shared"),
				image("old-child", nil, "layer-old"),
			}}},
			deleteUntagged: true,
			wantManifests:  []string{"multi@idx-old", "multi@old-child"},
			wantBlobs:      []string{"idx-old", "layer-old", "old-child", "old-child-config"},
		},
		{
			name: "referrers live with their subject",
			repos: []Repository{{Name: "signed", Manifests: []Manifest{
				image("signed-v1", []string{"v1"}, "layer-v1"),
				referrer("sig-v1", "signed-v1", nil, "sig-v1-payload"),
				referrer("sbom-v1", "signed-v1", nil, "sbom-v1-doc"),
				referrer("sig-of-sbom", "sbom-v1", nil, "sig-of-sbom-payload"),
			}}},
			deleteUntagged: true,
		},
		{
			name: "referrers die with their subject",
			repos: []Repository{{Name: "signed", Manifests: []Manifest{
				image("signed-gone", nil, "layer-gone"),
				referrer("sig-gone", "signed-gone", nil, "sig-gone-payload"),
				referrer("sig-of-sig", "sig-gone", nil, "sig-of-sig-payload"),
			}}},
			deleteUntagged: true,
			wantManifests:  []string{"signed@sig-gone", "signed@sig-of-sig", "signed@signed-gone"},
			wantBlobs: []string{"layer-gone", "sig-gone", "sig-gone-config", "sig-gone-payload", "sig-of-sig",
				"sig-of-sig-config", "sig-of-sig-payload", "signed-gone", "signed-gone-config"},
		},
		{
			name: "a tagged referrer stays when its subject goes",
			repos: []Repository{{Name: "signed", Manifests: []Manifest{
				image("signed-gone", nil, "layer-gone"),
				referrer("sig-tagged", "signed-gone", []string{"sha256-gone.sig"}, "sig-payload"),
			}}},
			deleteUntagged: true,
			wantManifests:  []string{"signed@signed-gone"},
			wantBlobs:      []string{"layer-gone", "signed-gone", "signed-gone-config"},
		},
		{
			name: "referrer tags live with the subject they name",
			repos: []Repository{{Name: "signed", Manifests: []Manifest{
				image("signed-v1", []string{"v1"}, "layer-v1"),
				image("cosign-sig", []string{refTag("signed-v1", ".sig")}, "sig-payload"),
				index("fallback", []string{refTag("signed-v1", "")}, "oci-sig"),
				referrer("oci-sig", "signed-v1", nil, "oci-sig-payload"),
			}}},
			deleteUntagged: true,
		},
		{
			name: "referrer tags die with the subject they name",
			repos: []Repository{{Name: "signed", Manifests: []Manifest{
				image("signed-gone", nil, "layer-gone"),
				image("cosign-sig", []string{refTag("signed-gone", ".sig")}, "sig-payload"),
				index("fallback", []string{refTag("signed-gone", "")}, "oci-sig"),
				referrer("oci-sig", "signed-gone", nil, "oci-sig-payload"),
				image("never-had-subject", []string{refTag("nothing", ".att")}, "att-payload"),
			}}},
			deleteUntagged: true,
			wantManifests: []string{"signed@cosign-sig", "signed@fallback", "signed@never-had-subject",
				"signed@oci-sig", "signed@signed-gone"},
			wantBlobs: []string{"att-payload", "cosign-sig", "cosign-sig-config", "fallback", "layer-gone",
				"never-had-subject", "never-had-subject-config", "oci-sig", "oci-sig-config", "oci-sig-payload",
				"sig-payload", "signed-gone", "signed-gone-config"},
		},
		{
			name: "a referrer of a child of a live index stays",
			repos: []Repository{{Name: "multi", Manifests: []Manifest{
				index("idx", []string{"latest"}, "child"),
				image("child", nil, "layer-child"),
				referrer("child-sig", "child", nil, "child-sig-payload"),
			}}},
			deleteUntagged: true,
		},
		{
			name: "blobs shared across repositories stay while any repository uses them",
			repos: []Repository{
				{Name: "a", Manifests: []Manifest{image("a-old", nil, "layer-shared", "layer-only-a")}},
				{Name: "b", Manifests: []Manifest{image("b-v1", []string{"v1"}, "layer-shared")}},
			},
			deleteUntagged: true,
			wantManifests:  []string{"a@a-old"},
			wantBlobs:      []string{"a-old", "a-old-config", "layer-only-a"},
		},
		{
			name: "the same manifest in two repositories stays while one keeps it",
			repos: []Repository{
				{Name: "a", Manifests: []Manifest{image("same", nil, "layer-same")}},
				{Name: "b", Manifests: []Manifest{image("same", []string{"v1"}, "layer-same")}},
			},
			deleteUntagged: true,
			wantManifests:  []string{"a@same"},
		},
		{
			name: "young unreferenced blobs stay, old ones go",
			repos: []Repository{{Name: "app", Manifests: []Manifest{
				image("app-v1", []string{"v1"}, "layer-a"),
			}}},
			extraBlobs: map[string]time.Time{"uploaded-just-now": fresh, "orphan-old": old},
			wantBlobs:  []string{"orphan-old"},
		},
		{
			name: "a blob linked into a repository within the grace period stays",
			repos: []Repository{{Name: "app",
				Layers: []Link{{Digest: n("relinked-old-blob"), Modified: fresh}},
			}},
			extraBlobs: map[string]time.Time{"relinked-old-blob": old},
		},
		{
			name: "layer links go with their blob or when dangling, and stay while live",
			repos: []Repository{{Name: "app",
				Manifests: []Manifest{image("app-v1", []string{"v1"}, "layer-a")},
				Layers: []Link{
					{Digest: n("layer-a"), Modified: old},
					{Digest: n("orphan"), Modified: old},
					{Digest: n("never-stored"), Modified: old},
					{Digest: n("young-orphan"), Modified: old},
				},
			}},
			extraBlobs: map[string]time.Time{"orphan": old, "young-orphan": fresh},
			wantBlobs:  []string{"orphan"},
			wantLinks:  []string{"app@never-stored", "app@orphan"},
		},
		{
			name: "a manifest gc failed to delete keeps its blobs",
			repos: []Repository{{Name: "app", Manifests: []Manifest{
				image("app-old", nil, "layer-old"),
			}}},
			deleteUntagged: true,
			keep:           map[string]map[digest.Digest]bool{"app": {n("app-old"): true}},
		},
		{
			name: "a broken manifest is kept",
			repos: []Repository{{Name: "app", Manifests: []Manifest{
				{Digest: n("broken"), Linked: old, Broken: "its blob is missing from the blob store"},
			}}},
			deleteUntagged: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blobs := storeAll(tt.repos...)
			for k, v := range tt.extraBlobs {
				blobs[k] = v
			}
			f := fixture{repos: tt.repos, blobs: blobs}
			plan := Mark(f.listing(), Policy{DeleteUntagged: tt.deleteUntagged, BlobGrace: grace, Now: now, Keep: tt.keep})
			if got, want := manifestNames(plan), sorted(tt.wantManifests...); !slices.Equal(got, want) {
				t.Errorf("manifests to delete:\n got %v\nwant %v", got, want)
			}
			if got, want := blobNames(plan), sorted(tt.wantBlobs...); !slices.Equal(got, want) {
				t.Errorf("blobs to delete:\n got %v\nwant %v", got, want)
			}
			if got, want := linkNames(plan), sorted(tt.wantLinks...); !slices.Equal(got, want) {
				t.Errorf("layer links to delete:\n got %v\nwant %v", got, want)
			}
			var bytes int64
			for _, b := range plan.Blobs {
				bytes += b.Size
			}
			if plan.Bytes != bytes {
				t.Errorf("bytes %d; want the sum of the deleted blobs, %d", plan.Bytes, bytes)
			}
			if plan.BlobsKept+len(plan.Blobs) != len(blobs) {
				t.Errorf("kept %d + deleted %d blobs != %d stored", plan.BlobsKept, len(plan.Blobs), len(blobs))
			}
		})
	}
}

func TestMarkReportsBrokenManifests(t *testing.T) {
	plan := Mark(&Listing{Repositories: []Repository{{Name: "app", Manifests: []Manifest{
		{Digest: n("broken"), Linked: old, Broken: "its blob is missing from the blob store"},
	}}}}, Policy{DeleteUntagged: true, Now: now})
	if len(plan.Warnings) != 1 || !strings.Contains(plan.Warnings[0], "app@"+string(n("broken"))) {
		t.Fatalf("warnings %v; want one naming the broken manifest", plan.Warnings)
	}
}

func TestMarkUploads(t *testing.T) {
	repos := []Repository{{Name: "app", Uploads: []Upload{
		{ID: "stale", Started: now.Add(-8 * 24 * time.Hour)},
		{ID: "active", Started: now.Add(-time.Hour)},
	}}}
	plan := Mark(&Listing{Repositories: repos}, Policy{UploadMaxAge: 7 * 24 * time.Hour, Now: now})
	if len(plan.Uploads) != 1 || plan.Uploads[0].ID != "stale" {
		t.Fatalf("uploads to purge %+v; want only the stale one", plan.Uploads)
	}
	if plan := Mark(&Listing{Repositories: repos}, Policy{Now: now}); len(plan.Uploads) != 0 {
		t.Fatalf("UploadMaxAge 0 purged %+v", plan.Uploads)
	}
}

func TestParseManifest(t *testing.T) {
	tests := []struct {
		name            string
		doc             string
		blobs, children int
		subject         bool
		wantErr         string
	}{
		{"oci image", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
			"config":{"digest":"` + string(d("c")) + `"},"layers":[{"digest":"` + string(d("l1")) + `"},{"digest":"` + string(d("l2")) + `"}]}`,
			3, 0, false, ""},
		{"index with subject", `{"schemaVersion":2,"manifests":[{"digest":"` + string(d("m1")) + `"}],
			"subject":{"digest":"` + string(d("s")) + `"}}`, 0, 1, true, ""},
		{"artifact blobs", `{"mediaType":"application/vnd.oci.artifact.manifest.v1+json","blobs":[{"digest":"` + string(d("b")) + `"}]}`,
			1, 0, false, ""},
		{"invalid layer digest", `{"layers":[{"digest":"sha256:nothex"}]}`, 0, 0, false, "layers[0]"},
		{"not json", `<html>`, 0, 0, false, "not a JSON manifest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := parseManifest([]byte(tt.doc))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v; want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(p.blobs) != tt.blobs || len(p.children) != tt.children || (p.subject != "") != tt.subject {
				t.Fatalf("parsed %+v", p)
			}
		})
	}
}

func TestReferrerTagSubject(t *testing.T) {
	hex := d("x").Encoded()
	for tag, want := range map[string]bool{
		"sha256-" + hex:                  true,
		"sha256-" + hex + ".sig":         true,
		"sha256-" + hex + ".att":         true,
		"sha256-" + hex[:10]:             false,
		"latest":                         false,
		"v1.0-sha256-" + hex:             false,
		"sha256-" + strings.ToUpper(hex): false,
	} {
		got, ok := ReferrerTagSubject(tag)
		if ok != want || (ok && got != d("x")) {
			t.Errorf("ReferrerTagSubject(%q) = %s, %v; want ok=%v", tag, got, ok, want)
		}
	}
}
