package maintenance

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

func TestBeacons(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	d, err := factory.Create(ctx, "filesystem", map[string]any{"rootdirectory": root})
	if err != nil {
		t.Fatal(err)
	}

	live, err := LiveBeacons(ctx, d, time.Minute)
	if err != nil || len(live) != 0 {
		t.Fatalf("empty storage: %v, %v", live, err)
	}

	if err := NewBeacon(d, "bad/id", time.Second).Run(ctx); err == nil {
		t.Fatal("an id with a slash was accepted")
	}

	bctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- NewBeacon(d, "server-1", time.Hour).Run(bctx) }()
	eventually(t, 5*time.Second, "the beacon is visible", func() bool {
		live, err := LiveBeacons(ctx, d, time.Minute)
		return err == nil && reflect.DeepEqual(live, []string{"server-1"})
	})

	// A beacon left behind by a server that died long ago does not count.
	stale := filepath.Join(root, "berth", "replicas", "crashed")
	if err := os.WriteFile(stale, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	live, err = LiveBeacons(ctx, d, time.Minute)
	if err != nil || !reflect.DeepEqual(live, []string{"server-1"}) {
		t.Fatalf("with a stale beacon: %v, %v", live, err)
	}

	stop()
	if err := <-done; err != nil {
		t.Fatalf("beacon run: %v", err)
	}
	live, err = LiveBeacons(ctx, d, time.Minute)
	if err != nil || len(live) != 0 {
		t.Fatalf("after a clean stop: %v, %v; want none", live, err)
	}
}
