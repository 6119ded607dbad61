package digests_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/internal/gc"
	"github.com/berth-registry/berth/internal/testutil"
)

// An image pushed entirely by sha512 digests and tagged must survive
// garbage collection with --delete-untagged and no grace period.
func TestGCKeepsTaggedSha512Image(t *testing.T) {
	b := testutil.StartBerth(t, testutil.Options{})
	r := registry{t, b.URL}
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer := bytes.Repeat([]byte("kept by gc "), 500)
	cfgD := r.monolithic("keep", config)
	layerD := r.chunked("keep", layer)
	manifest := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":%d},"layers":[{"mediaType":%q,"digest":%q,"size":%d}]}`,
		v1.MediaTypeImageManifest, v1.MediaTypeImageConfig, cfgD, len(config), v1.MediaTypeImageLayer, layerD, len(layer)))
	manD := digest.SHA512.FromBytes(manifest)
	res, body := r.do(http.MethodPut, "/v2/keep/manifests/"+manD.String(), v1.MediaTypeImageManifest, manifest)
	r.created(res, body, manD, "manifest by sha512")
	res, body = r.do(http.MethodPut, "/v2/keep/manifests/v1", v1.MediaTypeImageManifest, manifest)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("tag: %d %s", res.StatusCode, body)
	}

	rep, err := gc.Run(context.Background(), gc.Options{Driver: b.Server.Driver(), DeleteUntagged: true})
	if err != nil {
		t.Fatalf("gc: %v", err)
	}
	if rep.BlobsRemoved != 0 || rep.ManifestsRemoved != 0 {
		t.Fatalf("gc removed %d blobs and %d manifests of a tagged image", rep.BlobsRemoved, rep.ManifestsRemoved)
	}
	r.read("manifests", "keep", manD, manifest)
	r.read("blobs", "keep", cfgD, config)
	r.read("blobs", "keep", layerD, layer)
	res, body = r.do(http.MethodGet, "/v2/keep/manifests/v1", "", nil)
	if res.StatusCode != http.StatusOK || !bytes.Equal(body, manifest) {
		t.Fatalf("pull by tag after gc: %d", res.StatusCode)
	}
}
