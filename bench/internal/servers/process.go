package servers

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Timeouts for process lifecycle; generous because other engineers'
// compiles share the cores.
const (
	readyTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
	startTries   = 3
)

// Server is one registry process. Restart keeps the storage, so a restart
// gives a process with cold in-memory caches over the same data.
type Server struct {
	Spec Spec
	// Dir holds the storage root, the config file and the server's log.
	Dir  string
	Root string
	// Addr is host:port of the registry listener while running.
	Addr  string
	Redis *Redis

	mu      sync.Mutex
	proc    *process
	peakKiB int64
}

type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start launches a server with fresh storage under dir and waits until it
// answers GET /v2/.
func Start(ctx context.Context, spec Spec, dir string, redis *Redis) (*Server, error) {
	if spec.Redis && redis == nil {
		return nil, fmt.Errorf("%s: needs a redis-server", spec.Name)
	}
	s := &Server{Spec: spec, Dir: dir, Root: filepath.Join(dir, "data"), Redis: redis}
	if err := os.MkdirAll(s.Root, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", spec.Name, err)
	}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// StartOn launches a server over an existing storage root (a copy prepared
// by the caller).
func StartOn(ctx context.Context, spec Spec, dir, root string, redis *Redis) (*Server, error) {
	s := &Server{Spec: spec, Dir: dir, Root: root, Redis: redis}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// URL is the registry's base URL.
func (s *Server) URL() string { return "http://" + s.Addr }

// LogPath is where the server's stdout and stderr go.
func (s *Server) LogPath() string { return filepath.Join(s.Dir, "server.log") }

func (s *Server) start(ctx context.Context) error {
	var lastErr error
	for try := 0; try < startTries; try++ {
		err := s.startOnce(ctx)
		if err == nil {
			return nil
		}
		lastErr = err
		// A port picked as free can be taken by someone else before the
		// server binds it; anything else will not get better by retrying.
		if !strings.Contains(err.Error(), "address already in use") || ctx.Err() != nil {
			break
		}
	}
	return lastErr
}

func (s *Server) startOnce(ctx context.Context) error {
	addr, err := FreeAddr()
	if err != nil {
		return err
	}
	redisAddr := ""
	if s.Spec.Redis {
		redisAddr = s.Redis.Addr
	}
	var args []string
	// Readiness as each server defines it: berth's /readyz on its debug
	// listener (what a Kubernetes probe uses) as well as the API root.
	readyURLs := []string{"http://" + addr + "/v2/"}
	switch s.Spec.Kind {
	case Berth:
		debug, err := FreeAddr()
		if err != nil {
			return err
		}
		args = BerthArgs(addr, debug, s.Root, redisAddr)
		if s.Spec.S3 != nil {
			// The storage comes from a config file (credentials stay off
			// the command line); flags still set the rest.
			path := filepath.Join(s.Dir, "berth.yml")
			if err := os.WriteFile(path, BerthConfig(s.Spec.S3), 0o600); err != nil {
				return fmt.Errorf("%s: write config: %w", s.Spec.Name, err)
			}
			args = append(BerthArgs(addr, debug, "", redisAddr), "--config", path)
		}
		readyURLs = append(readyURLs, "http://"+debug+"/readyz")
	case Distribution, Debian:
		cfg, err := registryConfig(s.Spec.Kind, addr, s.Root, s.Spec.S3, redisAddr)
		if err != nil {
			return err
		}
		path := filepath.Join(s.Dir, "config.yml")
		if err := os.WriteFile(path, cfg, 0o600); err != nil {
			return fmt.Errorf("%s: write config: %w", s.Spec.Name, err)
		}
		args = []string{"serve", path}
	default:
		return fmt.Errorf("%s: unknown kind %d", s.Spec.Name, s.Spec.Kind)
	}
	logf, err := os.OpenFile(s.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: open log: %w", s.Spec.Name, err)
	}
	defer logf.Close() // the child has its own descriptor
	fmt.Fprintf(logf, "### %s %s\n", s.Spec.Binary, strings.Join(args, " "))
	p, err := spawn(s.Spec.Binary, args, logf)
	if err != nil {
		return fmt.Errorf("%s: %w", s.Spec.Name, err)
	}
	for _, u := range readyURLs {
		if err := waitReady(ctx, u, p.exited); err != nil {
			p.kill()
			return fmt.Errorf("%s: %w; log tail:\n%s", s.Spec.Name, err, tail(s.LogPath(), 1500))
		}
	}
	s.mu.Lock()
	s.proc, s.Addr = p, addr
	s.mu.Unlock()
	return nil
}

// Env is the environment every child gets: upstream v3 otherwise tries to
// export traces to an OTLP collector that does not exist.
func Env() []string { return append(os.Environ(), "OTEL_TRACES_EXPORTER=none") }

func spawn(bin string, args []string, out io.Writer) (*process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = Env()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	return p, nil
}

func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// stop asks for a graceful shutdown and kills after stopTimeout; it reports
// whether the process had to be killed.
func (p *process) stop() (killed bool) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return false
	case <-time.After(stopTimeout):
		p.kill()
		return true
	}
}

// waitReady polls url until it answers 200, the process exits or the
// deadline passes.
func waitReady(ctx context.Context, url string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("exited before it was ready")
		case <-ctx.Done():
			return fmt.Errorf("not ready at %s: %w", url, ctx.Err())
		case <-tick.C:
		}
	}
}

// Stop shuts the server down (keeping its storage), after recording its
// peak RSS. Stopping a stopped server does nothing.
func (s *Server) Stop() error {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	s.notePeak(p)
	if p.stop() {
		return fmt.Errorf("%s: did not stop within %s of SIGTERM; killed", s.Spec.Name, stopTimeout)
	}
	return nil
}

// Restart stops the server and starts a fresh process on the same storage;
// with Redis, the cache is flushed too so that nothing is warm.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.Stop(); err != nil {
		return err
	}
	if s.Spec.Redis {
		if err := s.Redis.Flush(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.Spec.Name, err)
		}
	}
	return s.start(ctx)
}

func (s *Server) notePeak(p *process) {
	kib, err := VmHWM(p.cmd.Process.Pid)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.peakKiB = max(s.peakKiB, kib)
	s.mu.Unlock()
}

// PeakRSS is the largest resident set any of this server's processes
// reached, in bytes.
func (s *Server) PeakRSS() (int64, error) {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p != nil {
		s.notePeak(p)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.peakKiB == 0 {
		return 0, fmt.Errorf("%s: no VmHWM recorded", s.Spec.Name)
	}
	return s.peakKiB * 1024, nil
}

// VmHWM reads a process' peak resident set size in KiB from /proc.
func VmHWM(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read VmHWM: %w", err)
	}
	defer f.Close()
	return parseVmHWM(f)
}

func parseVmHWM(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		num, unit, _ := strings.Cut(strings.TrimSpace(rest), " ")
		if unit != "kB" {
			return 0, fmt.Errorf("VmHWM: unexpected unit %q", unit)
		}
		return strconv.ParseInt(num, 10, 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no VmHWM line in /proc/<pid>/status")
}

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// tail returns the last n bytes of a file, for error messages.
func tail(path string, n int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}
