package workload

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// CopyTree copies a storage root with `cp -a`, preserving modification
// times, so that every contender starts from byte-identical storage.
func CopyTree(ctx context.Context, src, dst string) error {
	return cp(ctx, "-a", src, dst)
}

// LinkTree makes dst a copy of src whose files are hard links to src's
// (`cp -al`): new directories, shared file contents. It is only for
// contenders that never rewrite a file in place, such as the registry API
// deleting tags (deletes unlink; they never write), where it turns minutes
// of copying a 100,000-file storage into seconds. Callers check the
// snapshot with Census afterwards.
func LinkTree(ctx context.Context, src, dst string) error {
	return cp(ctx, "-al", src, dst)
}

func cp(ctx context.Context, flags, src, dst string) error {
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("copy %s: %s already exists", src, dst)
	}
	out, err := exec.CommandContext(ctx, "cp", flags, src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp %s %s %s: %w: %s", flags, src, dst, err, out)
	}
	return nil
}

// Census summarises the files under root: any file added, removed,
// resized or rewritten changes it. It shows that a snapshot shared through
// hard links came through a run unchanged.
type Census struct {
	Files, Bytes int64
	Newest       time.Time
}

// TakeCensus walks root.
func TakeCensus(root string) (Census, error) {
	var c Census
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		c.Files++
		c.Bytes += fi.Size()
		if fi.ModTime().After(c.Newest) {
			c.Newest = fi.ModTime()
		}
		return nil
	})
	if err != nil {
		return Census{}, fmt.Errorf("census of %s: %w", root, err)
	}
	return c, nil
}

// Backdate sets every file's and directory's times under root to at. gc
// tools may spare blobs younger than a grace period (berth's default is an
// hour) to protect pushes in flight; the garbage in a real registry is old,
// so the benchmark makes it old.
func Backdate(root string, at time.Time) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Chtimes(path, at, at); err != nil {
			return fmt.Errorf("backdate: %w", err)
		}
		return nil
	})
}

// CountBlobs counts blob data files in a Distribution filesystem root.
func CountBlobs(root string) (int, error) {
	dir := filepath.Join(root, "docker", "registry", "v2", "blobs")
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path == dir {
				return fs.SkipAll
			}
			return err
		}
		if !d.IsDir() && d.Name() == "data" {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count blobs under %s: %w", dir, err)
	}
	return n, nil
}
