package servers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Upstream is the Distribution release berth embeds and is compared with.
const (
	UpstreamModule  = "github.com/distribution/distribution/v3/cmd/registry"
	UpstreamVersion = "v3.1.2"
	// DebianBinary is where Debian's docker-registry package installs.
	DebianBinary = "/usr/bin/docker-registry"
)

// DefaultCacheDir is where built binaries live between runs: outside the
// repository so that they are never committed.
func DefaultCacheDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("cache dir: %w (pass -cache)", err)
	}
	return filepath.Join(base, "berth-bench"), nil
}

// ModuleRoot finds the berth module root from the working directory.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the berth module: run from the repository (go run ./bench)")
	}
	return filepath.Dir(mod), nil
}

// BuildBerth builds cmd/berth into dir. The go command skips the link when
// the binary is already up to date, so calling it every run is cheap.
func BuildBerth(ctx context.Context, moduleRoot, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "berth")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/berth")
	cmd.Dir = moduleRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/berth: %w\n%s", err, b)
	}
	return out, nil
}

// InstallUpstream returns the upstream registry binary in dir, running
// `go install` first unless the right version is already there.
func InstallUpstream(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "registry")
	if v, err := Version(ctx, bin); err == nil && strings.Contains(v, UpstreamVersion) {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "install", UpstreamModule+"@"+UpstreamVersion)
	// Outside the berth module, so its go.mod neither constrains nor
	// records the install.
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s@%s: %w\n%s", UpstreamModule, UpstreamVersion, err, b)
	}
	v, err := Version(ctx, bin)
	if err != nil {
		return "", err
	}
	if !strings.Contains(v, UpstreamVersion) {
		return "", fmt.Errorf("%s reports %q, want %s", bin, v, UpstreamVersion)
	}
	return bin, nil
}

// FindDebian returns Debian's docker-registry if it is installed.
func FindDebian(ctx context.Context) (string, string, error) {
	if _, err := os.Stat(DebianBinary); err != nil {
		return "", "", fmt.Errorf("not installed (apt-get install -y docker-registry)")
	}
	v, err := Version(ctx, DebianBinary)
	if err != nil {
		return "", "", err
	}
	return DebianBinary, v, nil
}

// Version runs `bin --version` (or `bin args...`) and returns its first
// line.
func Version(ctx context.Context, bin string, args ...string) (string, error) {
	if _, err := os.Stat(bin); err != nil {
		return "", err
	}
	if len(args) == 0 {
		args = []string{"--version"}
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = Env()
	b, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(string(b)))
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return line, nil
}

// Help returns `berth <sub> --help`, or an error when the subcommand does
// not exist (yet): prune and gc are written in parallel with the bench, and
// their rows light up as soon as the binary has them.
func Help(ctx context.Context, berth, sub string) (string, error) {
	cmd := exec.CommandContext(ctx, berth, sub, "--help")
	b, err := cmd.CombinedOutput()
	out := string(b)
	if err != nil || !strings.Contains(out, "berth "+sub) {
		return "", fmt.Errorf("berth %s not available", sub)
	}
	return out, nil
}
