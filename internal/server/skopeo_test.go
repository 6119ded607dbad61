package server_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/berth-registry/berth/internal/testutil"
)

// skopeo is a second, independent client (containers/image): what it pushes
// go-containerregistry must pull intact, and the other way round.
func TestSkopeoCopiesInAndOut(t *testing.T) {
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		if os.Getenv("BERTH_REQUIRE_SKOPEO") == "1" {
			t.Fatal("skopeo not found and BERTH_REQUIRE_SKOPEO=1 (apt-get install -y skopeo)")
		}
		t.Skip("SKIPPING: skopeo not installed (apt-get install -y skopeo)")
	}
	b := testutil.StartBerth(t, testutil.Options{Users: map[string]string{"ci": "pw"}})
	dir := t.TempDir()
	img, err := random.Image(4096, 3)
	if err != nil {
		t.Fatal(err)
	}
	// An OCI layout holds OCI manifests; skopeo ignores others there.
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	p, err := layout.Write(filepath.Join(dir, "src"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "1"})); err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	sk := func(args ...string) {
		t.Helper()
		cmd := exec.Command(skopeo, append([]string{"--insecure-policy"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	dest := "docker://" + b.Host + "/skopeo/app:1"
	sk("copy", "--dest-tls-verify=false", "--dest-creds", "ci:pw", "--preserve-digests",
		"oci:"+filepath.Join(dir, "src")+":1", dest)

	auth := remote.WithAuth(basic("ci", "pw"))
	got, err := remote.Image(mustRef(t, b.Host+"/skopeo/app:1"), auth)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := got.Digest(); d != want {
		t.Fatalf("digest %s, want %s", d, want)
	}
	if err := validate.Image(got); err != nil {
		t.Fatal(err)
	}
	sk("copy", "--src-tls-verify=false", "--src-creds", "ci:pw", dest, "oci:"+filepath.Join(dir, "back")+":1")
	back, err := layout.ImageIndexFromPath(filepath.Join(dir, "back"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := back.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("copied back: %v %v", m, err)
	}
}
