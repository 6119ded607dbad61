// Package testutil starts real parts for tests: berth on a free loopback
// port, and a real redis-server.
package testutil

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/internal/config"
	"github.com/berth-registry/berth/internal/maintenance"
	"github.com/berth-registry/berth/internal/server"
)

// Berth is a running berth server.
type Berth struct {
	// Host is host:port of the registry listener, as image references want it.
	Host string
	// URL is the registry's base URL (http:// or https://).
	URL string
	// DebugURL is the base URL of the debug listener.
	DebugURL string
	// Root is the filesystem storage root.
	Root   string
	Server *server.Server
	Config *config.Config
	// Backend is the maintenance backend the server's replica watches.
	Backend maintenance.Backend
	// Replica is the server's maintenance replica.
	Replica *maintenance.Replica
	stop    func()
}

// Options tune StartBerth.
type Options struct {
	// ConfigYAML is a configuration file's text; empty means defaults.
	// Addresses and the data dir are overridden to a free port and a temp dir
	// unless the text sets them.
	ConfigYAML string
	// Users enables htpasswd auth with these user → password pairs.
	Users map[string]string
	// Redis is a Redis address for the cache and maintenance coordination.
	Redis string
	// Root reuses a storage root (e.g. to restart on the same data).
	Root string
	// Backend shares a maintenance backend (in-process gc tests).
	Backend maintenance.Backend
	// Overrides are applied after the fields above.
	Overrides config.Overrides
	// Logs receives the server's logs (default: discarded unless -v).
	Logs io.Writer
}

// StartBerth starts berth in-process on free loopback ports and stops it
// when the test ends.
func StartBerth(t testing.TB, o Options) *Berth {
	t.Helper()
	dir := t.TempDir()
	root := o.Root
	if root == "" {
		root = filepath.Join(dir, "data")
	}
	path := ""
	if o.ConfigYAML != "" {
		path = filepath.Join(dir, "config.yml")
		if err := os.WriteFile(path, []byte(o.ConfigYAML), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Load(path, os.Environ())
	if err != nil {
		t.Fatalf("load config: %v", err)
	}
	ov := config.Overrides{Addr: "127.0.0.1:0", DebugAddr: "127.0.0.1:0", Redis: o.Redis}
	if cfg.Distribution.Storage.Type() == "filesystem" && (o.ConfigYAML == "" || o.Root != "") {
		ov.DataDir = root
	}
	if len(o.Users) > 0 {
		ov.Htpasswd = WriteHtpasswd(t, o.Users)
	}
	if err := cfg.Apply(ov); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Apply(o.Overrides); err != nil {
		t.Fatal(err)
	}
	// Tests need the lease to react quickly.
	cfg.Berth.Maintenance.Poll = 100 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	w := o.Logs
	if w == nil {
		w = io.Discard
		if testing.Verbose() {
			w = os.Stderr
		}
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Listen(); err != nil {
		cancel()
		t.Fatal(err)
	}
	backend := o.Backend
	if backend == nil {
		if rc := srv.Redis(); rc != nil {
			backend = maintenance.NewRedis(rc, "berth:")
		} else {
			backend = maintenance.NewLocal()
		}
	}
	rep := maintenance.NewReplica(backend, "test-"+filepath.Base(dir), maintenance.Hooks{
		InFlightWrites: srv.InFlightWrites, FlushCache: srv.FlushCache, FlushShared: srv.FlushSharedCache,
	}, maintenance.ReplicaOptions{Poll: cfg.Berth.Maintenance.Poll, LeaseTTL: cfg.Berth.Maintenance.LeaseTTL, Logger: log})
	srv.SetGate(rep)
	repCtx, repCancel := context.WithCancel(context.Background())
	repDone := make(chan struct{})
	go func() { defer close(repDone); _ = rep.Run(repCtx) }()
	// A replica refuses writes until it has read the lease once; tests start
	// writing at once, so wait for that first look.
	Eventually(t, 10*time.Second, "maintenance replica ready", func() bool {
		refused, _ := rep.WritesRefused()
		return !refused
	})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	scheme := "http"
	if srv.TLS() {
		scheme = "https"
	}
	b := &Berth{
		Host: srv.Addr(), URL: scheme + "://" + srv.Addr(), DebugURL: "http://" + srv.DebugAddr(),
		Root: cfg.RootDirectory(), Server: srv, Config: cfg, Backend: backend, Replica: rep,
	}
	stopped := false
	b.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		repCancel()
		<-repDone
	}
	t.Cleanup(b.stop)
	return b
}

// Stop shuts the server down gracefully (also done at test end).
func (b *Berth) Stop() { b.stop() }

// WriteHtpasswd writes a bcrypt htpasswd file for users and returns its path.
func WriteHtpasswd(t testing.TB, users map[string]string) string {
	t.Helper()
	var sb strings.Builder
	for u, p := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "%s:%s\n", u, h)
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Redis is a real redis-server started for a test.
type Redis struct {
	Addr string
	cmd  *exec.Cmd
	port int
	dir  string
}

// StartRedis starts redis-server on a free port. Without the binary the
// test is skipped loudly, or fails when BERTH_REQUIRE_REDIS=1 (CI).
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("BERTH_REQUIRE_REDIS") == "1" {
			t.Fatalf("redis-server not found and BERTH_REQUIRE_REDIS=1: install it (apt-get install -y redis-server)")
		}
		t.Skip("SKIPPING: redis-server not installed (apt-get install -y redis-server); set BERTH_REQUIRE_REDIS=1 to make this a failure")
	}
	r := &Redis{port: FreePort(t), dir: t.TempDir()}
	r.Addr = fmt.Sprintf("127.0.0.1:%d", r.port)
	r.start(t, bin)
	t.Cleanup(r.Kill)
	return r
}

func (r *Redis) start(t testing.TB, bin string) {
	t.Helper()
	r.cmd = exec.Command(bin, "--port", fmt.Sprint(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.Contains(sc.Text(), "Ready to accept connections") {
				close(ready)
				signalled = true
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatal("redis-server did not become ready")
	}
}

// Kill stops redis-server abruptly (SIGKILL), as a crash would.
func (r *Redis) Kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// Restart starts redis-server again on the same port, empty.
func (r *Redis) Restart(t testing.TB) {
	t.Helper()
	r.Kill()
	bin, _ := exec.LookPath("redis-server")
	r.start(t, bin)
}

// FreePort returns a TCP port that was free a moment ago on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Eventually polls cond until it is true or the deadline passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
