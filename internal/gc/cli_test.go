package gc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-registry/berth/internal/maintenance"
)

func runCommand(t *testing.T, args ...string) (stdout string, err error) {
	t.Helper()
	cmd := NewCommand()
	var out, errw bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errw)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err = cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// writeConfig writes a configuration for the filesystem root with no grace
// period, so freshly pushed test data is collectable.
func writeConfig(t *testing.T, root, extra string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yml")
	doc := "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: " + root +
		"\n  delete:\n    enabled: true\nberth:\n  gc:\n    blobgrace: 0s\n" + extra
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return -1
}

func TestCLIRefusesWhileAnUncoordinatedServerIsLive(t *testing.T) {
	reg := newTestRegistry(t)
	d := reg.push(t, "app:v1", ociImage(t))
	reg.push(t, "app:v1", ociImage(t))
	// A server that uses this storage and shares no Redis with gc.
	if err := reg.driver.PutContent(context.Background(), path.Join(maintenance.BeaconDir, "server-1"), []byte("{}")); err != nil {
		t.Fatal(err)
	}

	cfg := writeConfig(t, reg.root, "")
	_, err := runCommand(t, "--config", cfg, "--delete-untagged")
	if exitCode(err) != 2 {
		t.Fatalf("exit %d (%v); want 2", exitCode(err), err)
	}
	for _, want := range []string{"server-1", "redis.addrs", "--registry-stopped"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not mention %q", err, want)
		}
	}
	if !reg.exists(t, reg.digestRef(t, "app", d)) {
		t.Fatal("gc deleted although it refused")
	}

	// A dry run is harmless and allowed.
	out, err := runCommand(t, "--config", cfg, "--delete-untagged", "--dry-run", "--output", "json")
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	var dry map[string]any
	if err := json.Unmarshal([]byte(out), &dry); err != nil {
		t.Fatalf("dry run output is not JSON: %v\n%s", err, out)
	}
	if dry["dryRun"] != true || dry["manifestsRemoved"] != 1.0 {
		t.Fatalf("dry run report: %s", out)
	}

	out, err = runCommand(t, "--config", cfg, "--delete-untagged", "--registry-stopped", "--output", "json")
	if err != nil {
		t.Fatalf("with --registry-stopped: %v", err)
	}
	var real map[string]any
	if err := json.Unmarshal([]byte(out), &real); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"manifestsRemoved", "blobsRemoved", "bytesFreed", "layerLinksRemoved"} {
		if real[k] != dry[k] {
			t.Errorf("%s: dry run %v, real run %v", k, dry[k], real[k])
		}
	}
	if reg.exists(t, reg.digestRef(t, "app", d)) {
		t.Fatal("the untagged manifest survived")
	}
	if err := reg.pullsCompletely(t, reg.ref(t, "app:v1")); err != nil {
		t.Fatal(err)
	}
}

func TestCLITextReport(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "app:v1", ociImage(t))
	out, err := runCommand(t, "--data-dir", reg.root)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"berth gc: done", "repositories", "bytes freed", "writes refused for"} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
}

func TestCLIUsageErrors(t *testing.T) {
	root := t.TempDir()
	for _, args := range [][]string{
		{"--data-dir", root, "--output", "xml"},
		{"--data-dir", root, "--concurrency", "0"},
		{"--data-dir", root, "--lease-ttl", "1s"}, // too short for the 1s default poll
		{"--config", path.Join(root, "missing.yml")},
	} {
		if _, err := runCommand(t, args...); exitCode(err) != 2 {
			t.Errorf("%v: exit %d (%v); want 2", args, exitCode(err), err)
		}
	}
}

// berth gc reads the S3 storage from the configuration file, as serve does,
// and deletes in batches opened from the same section.
func TestCLIOnS3(t *testing.T) {
	reg := newS3TestRegistry(t)
	old := reg.push(t, "app:v1", ociImage(t))
	reg.push(t, "app:v1", ociImage(t))
	cfg := filepath.Join(t.TempDir(), "config.yml")
	doc := "version: 0.1\n" + reg.s3.StorageYAML(reg.bucket) + "berth:\n  gc:\n    blobgrace: 0s\n"
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCommand(t, "--config", cfg, "--delete-untagged", "--output", "json")
	if err != nil {
		t.Fatalf("gc: %v\n%s", err, out)
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, out)
	}
	if rep["manifestsRemoved"] != 1.0 || rep["blobsRemoved"] != 4.0 {
		t.Fatalf("report: %s", out)
	}
	if reg.exists(t, reg.digestRef(t, "app", old)) {
		t.Fatal("the untagged manifest survived")
	}
	if err := reg.pullsCompletely(t, reg.ref(t, "app:v1")); err != nil {
		t.Fatal(err)
	}
}
