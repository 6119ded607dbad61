package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-registry/berth/internal/config"
	"github.com/berth-registry/berth/internal/testutil"
)

// One process on a laptop cleans itself: `berth serve` with schedules prunes
// tags by policy and then collects their blobs, without anyone running a job.
func TestServeRunsPruneAndGCSchedules(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	storage := fmt.Sprintf("storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n", data)
	testServeSchedules(t, dir, storage, data)
}

// The same on S3: scheduled gc sweeps with batch deletes there.
func TestServeRunsPruneAndGCSchedulesOnS3(t *testing.T) {
	s3 := testutil.StartS3(t)
	// versitygw keeps each object as a file named by its key, and reports the
	// file's time as the object's LastModified, which is berth's push time.
	testServeSchedules(t, t.TempDir(), s3.StorageYAML(s3.Bucket), filepath.Join(s3.Dir, s3.Bucket))
}

// testServeSchedules runs berth serve with storage (a `storage:` section)
// whose tag links appear as files under root, so the test can age a tag.
func testServeSchedules(t *testing.T, dir, storage, root string) {
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte("rules:\n  - repositories: [\"**\"]\n    keep:\n      latest: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgFile, []byte(fmt.Sprintf(`version: 0.1
%sberth:
  maintenance:
    leasettl: 4s
    poll: 100ms
  gc:
    interval: 300ms
    deleteuntagged: true
    blobgrace: 10m
  prune:
    interval: 300ms
    policy: %s
`, storage, policy)), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	dbg := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, serveFlags{configFile: cfgFile, o: config.Overrides{Addr: addr, DebugAddr: dbg}})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	testutil.Eventually(t, 10*time.Second, "registry up", func() bool {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})

	repo, err := name.NewRepository(addr+"/laptop/app", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := random.Image(4096, 2)
	if err := remote.Write(repo.Tag("old"), old); err != nil {
		t.Fatal(err)
	}
	oldLayers, _ := old.Layers()
	oldLayer, _ := oldLayers[0].Digest()
	// Age everything "old" wrote by an hour: its tag becomes older than
	// "new" for keep-latest, and its blobs older than the grace period that
	// protects the layers of "new" while they are pushed.
	past := time.Now().Add(-time.Hour)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		return os.Chtimes(p, past, past)
	})
	if err != nil {
		t.Fatal(err)
	}
	newImg, _ := random.Image(4096, 2)
	if err := remote.Write(repo.Tag("new"), newImg); err != nil {
		t.Fatal(err)
	}

	blobGone := func() bool {
		resp, err := http.Head("http://" + addr + "/v2/laptop/app/blobs/" + oldLayer.String())
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusNotFound
	}
	testutil.Eventually(t, 60*time.Second, "old tag pruned and its layer collected", blobGone)
	if _, err := remote.Head(repo.Tag("old")); err == nil {
		t.Fatal("tag old still there")
	}
	if _, err := remote.Image(repo.Tag("new")); err != nil {
		t.Fatalf("kept tag: %v", err)
	}

	resp, err := http.Get("http://" + dbg + "/debug/berth/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Jobs map[string]struct {
			Result      string    `json:"result"`
			LastSuccess time.Time `json:"lastSuccess"`
		} `json:"jobs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	for _, job := range []string{"gc", "prune"} {
		if st.Jobs[job].LastSuccess.IsZero() {
			t.Errorf("status shows no successful %s run: %+v", job, st.Jobs)
		}
	}
}
