//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/gruntwork-io/terratest/modules/k8s"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func direct() bool { return os.Getenv("BERTH_E2E_DIRECT") == "1" }

// endpoint returns host:port for port of Service svc and a function that
// releases it: the ClusterIP when the test runs inside the cluster network
// (BERTH_E2E_DIRECT=1), else a kubectl port-forward. A port-forward sticks to
// one pod; callers that outlive a pod open a new endpoint per attempt.
func (e *env) endpoint(ctx context.Context, svc string, port int) (string, func(), error) {
	if direct() {
		s, err := e.cs.CoreV1().Services(e.ns).Get(ctx, svc, metav1.GetOptions{})
		if err != nil {
			return "", nil, fmt.Errorf("Service %s: %w", svc, err)
		}
		return fmt.Sprintf("%s:%d", s.Spec.ClusterIP, port), func() {}, nil
	}
	tun := k8s.NewTunnel(e.kubectl, k8s.ResourceTypeService, svc, 0, port)
	if err := tun.ForwardPortE(e.t); err != nil {
		return "", nil, fmt.Errorf("port-forward to Service %s:%d: %w", svc, port, err)
	}
	return tun.Endpoint(), tun.Close, nil
}

// registry is the registry Service for the test's lifetime.
func (e *env) registry() string {
	e.t.Helper()
	host, closeFn, err := e.endpoint(e.t.Context(), "berth", 5000)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(closeFn)
	return host
}

func (e *env) auth() remote.Option {
	return remote.WithAuth(&authn.Basic{Username: adminUser, Password: e.adminPass})
}

func ref(t *testing.T, host, repoTag string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatalf("reference %s/%s: %v", host, repoTag, err)
	}
	return r
}

// randomImage is an image whose layers no other image shares.
func randomImage(t *testing.T, layerSize int64, layers int64) v1.Image {
	t.Helper()
	img, err := random.Image(layerSize, layers)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func (e *env) push(ctx context.Context, host, repoTag string, img v1.Image) error {
	r, err := name.ParseReference(host+"/"+repoTag, name.Insecure)
	if err != nil {
		return err
	}
	if err := remote.Write(r, img, e.auth(), remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("push %s: %w", repoTag, err)
	}
	return nil
}

func (e *env) mustPush(host, repoTag string, img v1.Image) {
	e.t.Helper()
	if err := e.push(e.t.Context(), host, repoTag, img); err != nil {
		e.t.Fatal(err)
	}
}

// pull fetches repoTag and every one of its blobs, verifying all digests;
// want is the digest the push acknowledged ("" to skip that check).
func (e *env) pull(ctx context.Context, host, repoTag string, want v1.Hash) error {
	r, err := name.ParseReference(host+"/"+repoTag, name.Insecure)
	if err != nil {
		return err
	}
	img, err := remote.Image(r, e.auth(), remote.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("pull %s: %w", repoTag, err)
	}
	if want != (v1.Hash{}) {
		got, err := img.Digest()
		if err != nil {
			return fmt.Errorf("pull %s: digest: %w", repoTag, err)
		}
		if got != want {
			return fmt.Errorf("pull %s: digest %s, pushed %s", repoTag, got, want)
		}
	}
	if err := validate.Image(img); err != nil {
		return fmt.Errorf("pull %s: content does not match its digests: %w", repoTag, err)
	}
	return nil
}

func digest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func layerDigests(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Hash
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// httpGet is a plain GET with optional basic auth; it returns status and body.
func httpGet(ctx context.Context, url, user, pass string) (int, http.Header, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, "", err
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, resp.Header, string(b), err
}

// blobStatus is the HTTP status of HEAD /v2/<repo>/blobs/<digest>.
func (e *env) blobStatus(ctx context.Context, host, repo string, d v1.Hash) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, fmt.Sprintf("http://%s/v2/%s/blobs/%s", host, repo, d), nil)
	if err != nil {
		return 0, err
	}
	req.SetBasicAuth(adminUser, e.adminPass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// tags lists a repository's tags through the registry API.
func (e *env) tags(ctx context.Context, host, repo string) ([]string, error) {
	r, err := name.NewRepository(host+"/"+repo, name.Insecure)
	if err != nil {
		return nil, err
	}
	return remote.List(r, e.auth(), remote.WithContext(ctx))
}

func joinSorted(s []string) string { return strings.Join(s, ",") }

func randomImageE(layerSize, layers int64) (v1.Image, error) { return random.Image(layerSize, layers) }
