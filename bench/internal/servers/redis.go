package servers

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Redis is a redis-server started for one server variant.
type Redis struct {
	Addr string
	proc *process
}

// StartRedis starts redis-server on a free loopback port with persistence
// off and waits until it answers PING.
func StartRedis(ctx context.Context, dir string) (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server not found: install it (apt-get install -y redis-server)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var lastErr error
	for try := 0; try < startTries; try++ {
		addr, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		_, port, _ := net.SplitHostPort(addr)
		logPath := filepath.Join(dir, "redis.log")
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		p, err := spawn(bin, []string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", dir}, logf)
		logf.Close()
		if err != nil {
			return nil, err
		}
		r := &Redis{Addr: addr, proc: p}
		if lastErr = r.waitReady(ctx); lastErr == nil {
			return r, nil
		}
		p.kill()
		lastErr = fmt.Errorf("redis-server: %w; log tail:\n%s", lastErr, tail(logPath, 1000))
	}
	return nil, lastErr
}

func (r *Redis) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for {
		if _, err := r.do(ctx, "PING"); err == nil {
			return nil
		}
		select {
		case <-r.proc.exited:
			return errors.New("exited before it was ready")
		case <-ctx.Done():
			return fmt.Errorf("not answering PING on %s: %w", r.Addr, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Flush empties the server, so a restarted registry finds no warm cache.
func (r *Redis) Flush(ctx context.Context) error {
	if _, err := r.do(ctx, "FLUSHALL"); err != nil {
		return fmt.Errorf("redis FLUSHALL: %w", err)
	}
	return nil
}

// Stop kills redis-server; its data is never needed again.
func (r *Redis) Stop() {
	if r != nil && r.proc != nil {
		r.proc.kill()
		r.proc = nil
	}
}

// do sends one argument-less command in RESP and returns the reply line;
// two commands do not justify a client library.
func (r *Redis) do(ctx context.Context, cmd string) (string, error) {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", r.Addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := dctx.Deadline(); ok {
		_ = conn.SetDeadline(dl.Add(8 * time.Second))
	}
	if _, err := fmt.Fprintf(conn, "*1\r\n$%d\r\n%s\r\n", len(cmd), cmd); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "-") {
		return "", fmt.Errorf("%s: %s", cmd, line[1:])
	}
	return line, nil
}
