package gc

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/sirupsen/logrus"

	"github.com/berth-registry/berth/internal/testutil"
)

// testRegistry is Distribution's real HTTP handler on a filesystem root (or
// an S3 bucket),
// without a blob-descriptor cache: gc's own tests must not depend on cache
// invalidation, which the server tests cover.
type testRegistry struct {
	root   string
	host   string
	driver storagedriver.StorageDriver
	// files is what `berth gc` deletes with on this storage (nil but on S3).
	files FileDeleter
	// s3 and bucket are set on S3.
	s3     *testutil.S3
	bucket string
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	root := t.TempDir()
	r := startTestRegistry(t, "filesystem", map[string]any{"rootdirectory": root})
	r.root = root
	return r
}

// newS3TestRegistry is the same registry on a fresh bucket of a real S3
// server (versitygw), through Distribution's s3-aws driver.
func newS3TestRegistry(t *testing.T) *testRegistry { return newS3TestRegistryWith(t, nil) }

// newS3TestRegistryWith adds driver parameters (rootdirectory, say).
func newS3TestRegistryWith(t *testing.T, extra map[string]any) *testRegistry {
	t.Helper()
	s3 := testutil.StartS3(t)
	params := s3.Parameters(s3.Bucket)
	for k, v := range extra {
		params[k] = v
	}
	r := startTestRegistry(t, "s3aws", params)
	r.s3, r.bucket = s3, s3.Bucket
	return r
}

func startTestRegistry(t *testing.T, driver string, params map[string]any) *testRegistry {
	t.Helper()
	logrus.SetOutput(io.Discard) // Distribution logs every 404 at error level
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			driver:        configuration.Parameters(params),
			"delete":      configuration.Parameters{"enabled": true},
			"redirect":    configuration.Parameters{"disable": true},
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		},
	}
	cfg.HTTP.Secret = "test-secret"
	cfg.Log.AccessLog.Disabled = true
	cfg.Log.Level = "error"
	ctx, cancel := context.WithCancel(context.Background())
	app := handlers.NewApp(ctx, cfg)
	srv := httptest.NewServer(app)
	t.Cleanup(func() { srv.Close(); cancel() })
	d, err := factory.Create(context.Background(), driver, params)
	if err != nil {
		t.Fatal(err)
	}
	files, err := FileDeleterFor(driver, params)
	if err != nil {
		t.Fatal(err)
	}
	return &testRegistry{host: strings.TrimPrefix(srv.URL, "http://"), driver: d, files: files}
}

func (r *testRegistry) ref(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(r.host+"/"+s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func (r *testRegistry) digestRef(t *testing.T, repo string, d v1.Hash) name.Reference {
	return r.ref(t, repo+"@"+d.String())
}

func ociImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	return mutate.ConfigMediaType(img, types.OCIConfigJSON)
}

// referrerOf builds a small OCI artifact (a signature or SBOM stand-in)
// whose subject is the given manifest.
func referrerOf(t *testing.T, subject v1.Descriptor) v1.Image {
	t.Helper()
	l, err := random.Layer(64, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), l)
	if err != nil {
		t.Fatal(err)
	}
	return mutate.Subject(mutate.ConfigMediaType(img, types.OCIConfigJSON), subject).(v1.Image)
}

func descriptorOf(t *testing.T, img v1.Image) v1.Descriptor {
	t.Helper()
	dg, err := img.Digest()
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
	return v1.Descriptor{MediaType: mt, Digest: dg, Size: size}
}

func digestOf(t *testing.T, x interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	dg, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return dg
}

func (r *testRegistry) push(t *testing.T, ref string, img v1.Image) v1.Hash {
	t.Helper()
	if err := remote.Write(r.ref(t, ref), img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return digestOf(t, img)
}

func (r *testRegistry) pushByDigest(t *testing.T, repo string, img v1.Image) v1.Hash {
	t.Helper()
	dg := digestOf(t, img)
	if err := remote.Write(r.digestRef(t, repo, dg), img); err != nil {
		t.Fatalf("push %s@%s: %v", repo, dg, err)
	}
	return dg
}

// pullsCompletely pulls ref and verifies every blob against its digest.
func (r *testRegistry) pullsCompletely(t *testing.T, ref name.Reference) error {
	t.Helper()
	desc, err := remote.Get(ref)
	if err != nil {
		return fmt.Errorf("get %s: %w", ref, err)
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return err
		}
		return validate.Index(idx)
	}
	img, err := desc.Image()
	if err != nil {
		return err
	}
	return validate.Image(img)
}

func (r *testRegistry) exists(t *testing.T, ref name.Reference) bool {
	t.Helper()
	_, err := remote.Head(ref)
	return err == nil
}
