//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-registry/berth/internal/deploytest"
)

// The prune test's policy: keep the two most recently pushed tags and every
// v* tag of each repository.
const prunePolicy = `rules:
  - repositories: ["**"]
    keep:
      latest: 2
      tags: ["v*"]
`

// TestPruneJob: a Job made from the prune CronJob deletes exactly the tags
// the policy does not keep, and the kept ones still pull.
func TestPruneJob(t *testing.T) {
	e := deploy(t, deployOptions{policy: prunePolicy})
	ctx := t.Context()
	host := e.registry()

	pushed := map[string]v1.Hash{}
	// Pushed one after another: push time decides "latest".
	for _, tag := range []string{"old-1", "old-2", "v1.0", "old-3", "new-1", "new-2"} {
		img := randomImage(t, 16<<10, 1)
		e.mustPush(host, "prune/app:"+tag, img)
		pushed["prune/app:"+tag] = digest(t, img)
	}
	for _, tag := range []string{"a", "b"} {
		img := randomImage(t, 16<<10, 1)
		e.mustPush(host, "prune/other:"+tag, img)
		pushed["prune/other:"+tag] = digest(t, img)
	}

	e.runCronJob(deploytest.PruneCronJob)

	want := map[string][]string{
		"prune/app":   {"new-1", "new-2", "v1.0"},
		"prune/other": {"a", "b"},
	}
	for repo, keep := range want {
		got, err := e.tags(ctx, host, repo)
		if err != nil {
			t.Fatalf("list %s: %v", repo, err)
		}
		slices.Sort(got)
		if !slices.Equal(got, keep) {
			t.Errorf("%s tags after prune = %v, want exactly %v", repo, got, keep)
		}
		for _, tag := range keep {
			if err := e.pull(ctx, host, repo+":"+tag, pushed[repo+":"+tag]); err != nil {
				t.Errorf("kept tag: %v", err)
			}
		}
	}
	for _, tag := range []string{"old-1", "old-2", "old-3"} {
		code, _, _, err := httpGet(ctx, "http://"+host+"/v2/prune/app/manifests/"+tag, adminUser, e.adminPass)
		if err != nil || code != http.StatusNotFound {
			t.Errorf("pruned tag %s: GET manifest = %d (%v), want 404", tag, code, err)
		}
	}
}

// TestGCJob: a Job made from the gc CronJob frees the blobs of a deleted
// image, keeps those of the remaining one, restarts no pod and rolls
// nothing out; the remaining image pulls afterwards.
func TestGCJob(t *testing.T) {
	e := deploy(t, deployOptions{})
	ctx := t.Context()
	host := e.registry()

	gone := randomImage(t, 128<<10, 2)
	kept := randomImage(t, 128<<10, 2)
	e.mustPush(host, "gc/app:gone", gone)
	e.mustPush(host, "gc/app:kept", kept)
	dr, err := name.NewDigest(host+"/gc/app@"+digest(t, gone).String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(dr, e.auth(), remote.WithContext(ctx)); err != nil {
		t.Fatalf("delete the manifest of gc/app:gone: %v", err)
	}
	for _, d := range layerDigests(t, gone) {
		if !e.blobOnDisk(d) {
			t.Fatalf("blob %s of the deleted image is not on the volume before gc: the test would prove nothing", d)
		}
	}

	podsBefore, err := e.registryPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dep, err := e.cs.AppsV1().Deployments(e.ns).Get(ctx, deploytest.RegistryDeployment, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	e.runCronJob(deploytest.GCCronJob)

	for _, d := range layerDigests(t, gone) {
		if code, err := e.blobStatus(ctx, host, "gc/app", d); err != nil || code != http.StatusNotFound {
			t.Errorf("blob %s of the deleted image: HEAD = %d (%v), want 404 after gc", d, code, err)
		}
		if e.blobOnDisk(d) {
			t.Errorf("blob %s of the deleted image is still on the volume after gc", d)
		}
	}
	for _, d := range layerDigests(t, kept) {
		if !e.blobOnDisk(d) {
			t.Errorf("blob %s of the kept image was deleted", d)
		}
	}
	if err := e.pull(ctx, host, "gc/app:kept", digest(t, kept)); err != nil {
		t.Errorf("remaining image after gc: %v", err)
	}

	podsAfter, err := e.registryPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for n, s := range podsBefore {
		if a, ok := podsAfter[n]; !ok || a != s {
			t.Errorf("registry pod %s changed during gc (before %+v, after %+v): gc must not restart or replace replicas", n, s, a)
		}
	}
	dep2, err := e.cs.AppsV1().Deployments(e.ns).Get(ctx, deploytest.RegistryDeployment, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dep2.Generation != dep.Generation {
		t.Errorf("Deployment generation %d → %d: gc rolled the registry out", dep.Generation, dep2.Generation)
	}
}

// blobOnDisk reports whether Distribution's filesystem layout holds the
// blob's data on the test's hostPath volume. The volume is on this machine
// when the test runs on the node (../shared/k8s) or the node mounts it
// (deploy/README.md); without it the test fails rather than guess.
func (e *env) blobOnDisk(d v1.Hash) bool {
	e.t.Helper()
	p := filepath.Join(e.pvDir, "docker", "registry", "v2", "blobs", d.Algorithm, d.Hex[:2], d.Hex, "data")
	_, err := os.Stat(p)
	if err != nil && !os.IsNotExist(err) {
		e.t.Fatalf("stat %s: %v", p, err)
	}
	return err == nil
}

// TestGCDuringPushes: pushes keep going while a gc Job runs; every push the
// registry acknowledged pulls complete afterwards. Pushes refused during
// gc's read-only window are fine (the client saw the error); a lost
// acknowledged push is not.
func TestGCDuringPushes(t *testing.T) {
	e := deploy(t, deployOptions{})
	ctx := t.Context()
	host := e.registry()

	// Garbage for gc to sweep while the pushes run.
	for i := range 3 {
		img := randomImage(t, 64<<10, 2)
		e.mustPush(host, fmt.Sprintf("gcp/garbage:%d", i), img)
		dr, _ := name.NewDigest(host+"/gcp/garbage@"+digest(t, img).String(), name.Insecure)
		if err := remote.Delete(dr, e.auth(), remote.WithContext(ctx)); err != nil {
			t.Fatal(err)
		}
	}

	type acked struct {
		tag string
		d   v1.Hash
	}
	var (
		mu        sync.Mutex
		ok        []acked
		refused   []string
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		jobDone   = make(chan struct{})
		maxPushes = 150 // per pusher: the loop is bounded even if gc hangs
	)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			after := -1 // pushes left once the Job is done
			for i := 0; i < maxPushes && after != 0; i++ {
				select {
				case <-stop:
					return
				default:
				}
				select {
				case <-jobDone:
					if after < 0 {
						after = 3
					}
				default:
				}
				if after > 0 {
					after--
				}
				img, err := randomImageE(32<<10, 2)
				if err != nil {
					continue
				}
				tag := fmt.Sprintf("gcp/w%d:%d", w, i)
				pctx, cancel := context.WithTimeout(ctx, time.Minute)
				err = e.push(pctx, host, tag, img)
				cancel()
				d, _ := img.Digest()
				mu.Lock()
				if err == nil {
					ok = append(ok, acked{tag, d})
				} else {
					refused = append(refused, tag+": "+err.Error())
				}
				mu.Unlock()
			}
		}()
	}
	job := e.startCronJob(deploytest.GCCronJob)
	e.waitJob(job)
	close(jobDone)
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(5 * time.Minute):
		close(stop)
		<-waited
	}

	t.Logf("%d pushes acknowledged, %d refused during the run", len(ok), len(refused))
	for i, r := range refused {
		if i < 5 {
			t.Logf("refused: %s", r)
		}
	}
	if len(ok) == 0 {
		t.Fatal("no push was acknowledged: the registry never accepted writes around gc")
	}
	for _, a := range ok {
		if err := e.pull(ctx, host, a.tag, a.d); err != nil {
			t.Errorf("acknowledged push lost or damaged by gc: %v", err)
		}
	}
}
