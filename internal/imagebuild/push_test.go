package imagebuild_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/berth-registry/berth/internal/imagebuild"
	"github.com/berth-registry/berth/internal/testutil"
)

// The image `make image` produces must survive a trip through berth itself
// with its run-time contract intact: entrypoint, non-root user.
func TestBerthImageRoundTripsThroughBerth(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the berth binary")
	}
	bin := filepath.Join(t.TempDir(), "berth")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/berth")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	certs := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	if b, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		certs = b
	}
	img, err := imagebuild.Build(imagebuild.Options{Binary: binary, CACerts: certs})
	if err != nil {
		t.Fatal(err)
	}

	b := testutil.StartBerth(t, testutil.Options{})
	ref, err := name.ParseReference(b.Host+"/berth/berth:test", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push: %v", err)
	}
	got, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	if err := validate.Image(got); err != nil {
		t.Fatalf("pulled image: %v", err)
	}
	cf, err := got.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/berth"}) {
		t.Errorf("entrypoint %v", cf.Config.Entrypoint)
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 (non-root)", cf.Config.User)
	}
	if cf.OS != "linux" || cf.Architecture == "" {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
}
