package maintenance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TODO: switch to testutil.StartRedis once internal/testutil exists.

var (
	redisOnce sync.Once
	redisAddr string
	redisCmd  *exec.Cmd
	redisErr  error
	prefixSeq atomic.Int64
)

func TestMain(m *testing.M) {
	code := m.Run()
	if redisCmd != nil {
		_ = redisCmd.Process.Kill()
		_ = redisCmd.Wait()
	}
	os.Exit(code)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startRedisServer() (string, *exec.Cmd, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", nil, err
	}
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return addr, cmd, nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return "", nil, fmt.Errorf("redis-server on %s did not answer: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

// testRedis returns a client on a shared real redis-server, skipping (or
// failing with BERTH_REQUIRE_REDIS=1) when redis-server is missing.
func testRedis(t *testing.T) redis.UniversalClient {
	t.Helper()
	redisOnce.Do(func() { redisAddr, redisCmd, redisErr = startRedisServer() })
	if redisErr != nil {
		if os.Getenv("BERTH_REQUIRE_REDIS") == "1" {
			t.Fatalf("redis-server required: %v", redisErr)
		}
		t.Skipf("SKIPPING: no redis-server (%v); install it with apt-get install -y redis-server", redisErr)
	}
	c := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// backends runs f once per Backend implementation, each with fresh state.
func backends(t *testing.T, f func(t *testing.T, newBackend func() Backend)) {
	t.Run("local", func(t *testing.T) {
		f(t, func() Backend { return NewLocal() })
	})
	t.Run("redis", func(t *testing.T) {
		c := testRedis(t)
		prefix := fmt.Sprintf("berth-test-%d:", prefixSeq.Add(1))
		f(t, func() Backend { return NewRedis(c, prefix) })
	})
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", within, what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}

// flaky wraps a Backend and fails every call while down is set, like an
// unreachable Redis.
type flaky struct {
	Backend
	down atomic.Bool
}

var errDown = errors.New("backend unreachable (test)")

func (f *flaky) State(ctx context.Context) (State, error) {
	if f.down.Load() {
		return State{}, errDown
	}
	return f.Backend.State(ctx)
}

func (f *flaky) Renew(ctx context.Context, h string, e uint64, ttl time.Duration) error {
	if f.down.Load() {
		return errDown
	}
	return f.Backend.Renew(ctx, h, e, ttl)
}

func (f *flaky) Heartbeat(ctx context.Context, id string, a Ack, ttl time.Duration) error {
	if f.down.Load() {
		return errDown
	}
	return f.Backend.Heartbeat(ctx, id, a, ttl)
}

func (f *flaky) Replicas(ctx context.Context) ([]ReplicaInfo, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.Backend.Replicas(ctx)
}

// startReplica runs a replica until the test ends.
func startReplica(t *testing.T, b Backend, id string, hooks Hooks, opts ReplicaOptions) *Replica {
	t.Helper()
	r := NewReplica(b, id, hooks, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func writable(r *Replica) bool {
	refused, _ := r.WritesRefused()
	return !refused
}
