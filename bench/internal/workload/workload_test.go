package workload

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// Every server must get byte-identical images, and no two seeds may share
// a blob, or a later push would be shortened by an earlier one.
func TestImageIsDeterministicAndSeedsShareNoBlob(t *testing.T) {
	sizes := []int64{1000, 3000}
	a1, err := Image(7, sizes)
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := Image(7, sizes)
	b, _ := Image(8, sizes)
	da1, _ := a1.Digest()
	da2, _ := a2.Digest()
	if da1 != da2 {
		t.Errorf("same seed gave %s and %s", da1, da2)
	}
	ba, _ := Blobs(a1)
	bb, _ := Blobs(b)
	seen := map[string]bool{}
	for _, h := range ba {
		seen[h.String()] = true
	}
	for _, h := range bb {
		if seen[h.String()] {
			t.Errorf("seeds 7 and 8 share blob %s", h)
		}
	}
	if len(ba) != 3 {
		t.Errorf("blobs = %d, want config and 2 layers", len(ba))
	}
	total, err := TotalSize(a1)
	if err != nil || total < 4000 {
		t.Errorf("TotalSize = %d, %v; want the layers (4000) plus the config", total, err)
	}
	if _, err := Image(1, []int64{0}); err == nil {
		t.Error("an empty layer size must be refused")
	}
}

func TestTaggedManifestsDifferButShareBlobs(t *testing.T) {
	base, err := Image(1, []int64{100})
	if err != nil {
		t.Fatal(err)
	}
	x, _ := Tagged(base, "a")
	y, _ := Tagged(base, "b")
	dx, _ := x.Digest()
	dy, _ := y.Digest()
	if dx == dy {
		t.Error("two tags got the same manifest digest; deleting one by digest would take both")
	}
	bx, _ := Blobs(x)
	bb, _ := Blobs(base)
	if len(bx) != len(bb) || bx[0] != bb[0] || bx[1] != bb[1] {
		t.Errorf("tagged image blobs %v, base %v", bx, bb)
	}
}

func TestParallelStopsAtFirstError(t *testing.T) {
	var ran atomic.Int32
	boom := errors.New("boom")
	err := parallel(context.Background(), 1000, 4, func(ctx context.Context, i int) error {
		ran.Add(1)
		if i == 3 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if ran.Load() == 1000 {
		t.Error("work went on after the first error")
	}
	if err := parallel(context.Background(), 10, 3, func(context.Context, int) error { return nil }); err != nil {
		t.Errorf("no error expected, got %v", err)
	}
}

func TestNextLink(t *testing.T) {
	got, err := nextLink("http://h/v2/_catalog?n=2", `</v2/_catalog?last=b&n=2>; rel="next"`)
	if err != nil || got != "http://h/v2/_catalog?last=b&n=2" {
		t.Errorf("nextLink = %q, %v", got, err)
	}
	if got, _ := nextLink("http://h/x", ""); got != "" {
		t.Errorf("no header gave %q", got)
	}
	if got, _ := nextLink("http://h/x", `</y>; rel="prev"`); got != "" {
		t.Errorf("prev link gave %q", got)
	}
}

func TestCopyBackdateCount(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for _, d := range []string{"aa/sha256aa", "bb/sha256bb"} {
		p := filepath.Join(src, "docker/registry/v2/blobs/sha256", d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "data"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	if err := Backdate(src, old); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "dst")
	if err := CopyTree(context.Background(), src, dst); err != nil {
		t.Fatal(err)
	}
	if err := CopyTree(context.Background(), src, dst); err == nil {
		t.Error("copying onto an existing directory must fail, not nest")
	}
	fi, err := os.Stat(filepath.Join(dst, "docker/registry/v2/blobs/sha256/aa/sha256aa/data"))
	if err != nil || !fi.ModTime().Equal(old) {
		t.Errorf("copy lost the backdated time: %v, %v", fi.ModTime(), err)
	}
	if n, err := CountBlobs(dst); err != nil || n != 2 {
		t.Errorf("CountBlobs = %d, %v", n, err)
	}
	if n, err := CountBlobs(filepath.Join(dir, "empty")); err != nil || n != 0 {
		t.Errorf("CountBlobs of nothing = %d, %v", n, err)
	}
}

// A hard-linked copy shares file contents: deleting in the copy leaves the
// snapshot alone, writing in place does not, and the census notices.
func TestLinkTreeAndCensus(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(filepath.Join(src, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"a/link", "a/other"} {
		if err := os.WriteFile(filepath.Join(src, f), []byte("sha256:00"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before, err := TakeCensus(src)
	if err != nil || before.Files != 2 || before.Bytes != 18 {
		t.Fatalf("census = %+v, %v", before, err)
	}
	dst := filepath.Join(dir, "dst")
	if err := LinkTree(context.Background(), src, dst); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dst, "a/link")); err != nil {
		t.Fatal(err)
	}
	if after, _ := TakeCensus(src); after != before {
		t.Errorf("deleting in the copy changed the snapshot: %+v → %+v", before, after)
	}
	if err := os.WriteFile(filepath.Join(dst, "a/other"), []byte("sha256:0123"), 0o644); err != nil {
		t.Fatal(err)
	}
	if after, _ := TakeCensus(src); after == before {
		t.Error("an in-place write through a hard link went unnoticed")
	}
}
