//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-registry/berth/internal/deploytest"
)

// TestPushPullWithCredentials: images pushed through the registry Service
// with credentials pull back byte for byte; without (or with wrong)
// credentials the API answers 401 with a Basic challenge.
func TestPushPullWithCredentials(t *testing.T) {
	e := deploy(t, deployOptions{})
	host := e.registry()
	ctx := t.Context()

	imgs := map[string]string{"team/app:v1": "", "team/app:v2": "", "other:latest-build": ""}
	for tag := range imgs {
		img := randomImage(t, 256<<10, 3)
		e.mustPush(host, tag, img)
		if err := e.pull(ctx, host, tag, digest(t, img)); err != nil {
			t.Error(err)
		}
	}
	tags, err := e.tags(ctx, host, "team/app")
	if err != nil || joinSorted(tags) != "v1,v2" {
		t.Errorf("tags of team/app = %v (%v), want v1,v2", tags, err)
	}

	for _, tc := range []struct{ what, user, pass string }{
		{"no credentials", "", ""},
		{"wrong password", adminUser, "wrong"},
		{"unknown user", "mallory", e.adminPass},
	} {
		for _, path := range []string{"/v2/", "/v2/team/app/manifests/v1", "/v2/_catalog"} {
			code, hdr, _, err := httpGet(ctx, "http://"+host+path, tc.user, tc.pass)
			if err != nil {
				t.Fatalf("%s GET %s: %v", tc.what, path, err)
			}
			if code != http.StatusUnauthorized {
				t.Errorf("%s: GET %s = %d, want 401", tc.what, path, code)
			}
			if ch := hdr.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "Basic") {
				t.Errorf("%s: GET %s: WWW-Authenticate %q, want a Basic challenge", tc.what, path, ch)
			}
		}
	}
	code, _, _, err := httpGet(ctx, "http://"+host+"/v2/", adminUser, e.adminPass)
	if err != nil || code != http.StatusOK {
		t.Errorf("GET /v2/ with credentials = %d (%v), want 200", code, err)
	}
	// A client library without credentials sees the same refusal.
	_, err = remote.Image(ref(t, host, "team/app:v1"), remote.WithContext(ctx))
	var terr *transport.Error
	if err == nil || !asTransportErr(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous pull: %v, want a 401 transport error", err)
	}
}

func asTransportErr(err error, target **transport.Error) bool {
	for err != nil {
		if te, ok := err.(*transport.Error); ok {
			*target = te
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// TestRedisHoldsBlobDescriptors: the replicas share blob descriptors through
// Redis, so after a pull Redis has a blobs:: key for every layer.
func TestRedisHoldsBlobDescriptors(t *testing.T) {
	e := deploy(t, deployOptions{})
	host := e.registry()
	img := randomImage(t, 64<<10, 2)
	e.mustPush(host, "cache/app:1", img)
	if err := e.pull(t.Context(), host, "cache/app:1", digest(t, img)); err != nil {
		t.Fatal(err)
	}
	want := layerDigests(t, img)
	poll(t, "blob descriptors in Redis", 30*time.Second, func(ctx context.Context) (bool, string, error) {
		out, err := e.redisCLI(ctx, "--scan", "--pattern", "blobs::*")
		if err != nil {
			return false, err.Error(), nil
		}
		var missing []string
		for _, d := range want {
			if !strings.Contains(out, "blobs::"+d.String()) {
				missing = append(missing, d.String())
			}
		}
		if len(missing) == 0 {
			return true, "", nil
		}
		return false, fmt.Sprintf("no blobs::<digest> key for %v; blobs:: keys now: %q", missing, out), nil
	})
}

// TestRegistryPodDeletedMidPull: deleting a registry pod while a client
// pulls costs at most a retry; the image stays complete, and after every
// pod has been replaced the data is still there (it lives on the volume).
func TestRegistryPodDeletedMidPull(t *testing.T) {
	e := deploy(t, deployOptions{})
	ctx := t.Context()
	host := e.registry()
	img := randomImage(t, 8<<20, 3)
	e.mustPush(host, "big/app:1", img)
	small := randomImage(t, 64<<10, 1)
	e.mustPush(host, "small/app:1", small)

	pods, err := e.registryPods(ctx)
	if err != nil || len(pods) == 0 {
		t.Fatalf("registry pods: %v %v", pods, err)
	}
	victim := sortedKeys(pods)[0]

	// Start pulling, and delete the pod once the first layer is streaming.
	var once sync.Once
	deleted := make(chan error, 1)
	deletePod := func() {
		once.Do(func() {
			_, err := e.kubectlCtx(ctx, time.Minute, e.ns, "delete", "pod", victim, "--wait=false")
			deleted <- err
		})
	}
	attempts := 0
	err = pollE(ctx, 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		attempts++
		h, closeFn, err := e.endpoint(ctx, "berth", 5000) // a port-forward dies with its pod
		if err != nil {
			return false, err.Error(), nil
		}
		defer closeFn()
		perr := e.pullWhile(ctx, h, "big/app:1", digest(t, img), deletePod)
		if perr != nil {
			return false, "attempt " + fmt.Sprint(attempts) + ": " + perr.Error(), nil
		}
		return true, "", nil
	})
	if err != nil {
		t.Fatalf("pull never succeeded after deleting pod %s mid-pull: %v", victim, err)
	}
	if err := <-deleted; err != nil {
		t.Fatalf("delete pod %s: %v", victim, err)
	}
	t.Logf("pull succeeded after %d attempt(s) with pod %s deleted mid-pull", attempts, victim)

	// Every replica replaced: the images are on the volume, not in a pod.
	e.waitRollout(deploytest.RegistryDeployment)
	if out, err := e.kubectlCtx(ctx, time.Minute, e.ns, "rollout", "restart", "deploy/"+deploytest.RegistryDeployment); err != nil {
		t.Fatalf("rollout restart: %v\n%s", err, out)
	}
	poll(t, "every registry pod replaced", 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		now, err := e.registryPods(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		for n := range now {
			if _, old := pods[n]; old {
				return false, "old pod " + n + " still running", nil
			}
		}
		return len(now) > 0, fmt.Sprint(sortedKeys(now)), nil
	})
	e.waitRollout(deploytest.RegistryDeployment)
	host = e.registry()
	for tag, want := range map[string]v1.Hash{"big/app:1": digest(t, img), "small/app:1": digest(t, small)} {
		if err := e.pullRetry(host, tag, want); err != nil {
			t.Errorf("after every registry pod was replaced: %v", err)
		}
	}
}

// pullWhile pulls repoTag, calls during once the first layer is streaming,
// finishes that layer and then verifies the whole image.
func (e *env) pullWhile(ctx context.Context, host, repoTag string, want v1.Hash, during func()) error {
	img, err := remote.Image(ref(e.t, host, repoTag), e.auth(), remote.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) == 0 {
		return fmt.Errorf("layers: %v", err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		return fmt.Errorf("first layer: %w", err)
	}
	defer rc.Close()
	if _, err := io.CopyN(io.Discard, rc, 1<<20); err != nil {
		return fmt.Errorf("first MiB of the first layer: %w", err)
	}
	during()
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return fmt.Errorf("rest of the first layer: %w", err)
	}
	return e.pull(ctx, host, repoTag, want)
}

// pullRetry pulls until it works or a minute passes: Service endpoints
// follow pod changes within seconds, not at once.
func (e *env) pullRetry(host, repoTag string, want v1.Hash) error {
	var last error
	err := pollE(e.t.Context(), time.Minute, func(ctx context.Context) (bool, string, error) {
		last = e.pull(ctx, host, repoTag, want)
		if last != nil {
			return false, last.Error(), nil
		}
		return true, "", nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", repoTag, err)
	}
	return nil
}
