package maintenance

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Short timings keep the tests fast; ValidateTiming accepts them.
var (
	testTTL  = 1500 * time.Millisecond
	testPoll = 50 * time.Millisecond
)

func testCoordinator(b Backend, holder string) *Coordinator {
	return NewCoordinator(b, holder, CoordinatorOptions{LeaseTTL: testTTL, ReplicaPoll: testPoll, AckTimeout: 10 * time.Second})
}

func testReplicaOpts() ReplicaOptions {
	return ReplicaOptions{Poll: testPoll, LeaseTTL: testTTL, HeartbeatTTL: time.Second}
}

func TestLeaseWaitsForDrainThenRelease(t *testing.T) {
	backends(t, func(t *testing.T, newBackend func() Backend) {
		ctx := context.Background()
		b := newBackend()
		r1 := startReplica(t, b, "r1", Hooks{}, testReplicaOpts())
		var hookWrites atomic.Int64
		r2 := startReplica(t, b, "r2", Hooks{InFlightWrites: hookWrites.Load}, testReplicaOpts())
		eventually(t, 5*time.Second, "replicas are writable after their first poll", func() bool {
			return writable(r1) && writable(r2)
		})

		// One write through AdmitWrite on r1 and one counted by the server
		// hook on r2 are in flight when gc starts.
		done, _, ok := r1.AdmitWrite()
		if !ok {
			t.Fatal("write refused with no lease")
		}
		hookWrites.Store(1)

		type result struct {
			l   *Lease
			err error
		}
		began := make(chan result, 1)
		go func() {
			l, err := testCoordinator(b, "gc").Begin(ctx)
			began <- result{l, err}
		}()
		eventually(t, 5*time.Second, "both replicas refuse writes", func() bool {
			return !writable(r1) && !writable(r2)
		})
		if _, ra, ok := r2.AdmitWrite(); ok || ra < time.Second || ra > MaxRetryAfter {
			t.Fatalf("new write during maintenance: admitted=%v retryAfter=%s", ok, ra)
		}
		select {
		case res := <-began:
			t.Fatalf("Begin returned while writes were in flight: %+v", res)
		default:
		}
		if st := r1.Status(); !st.Active || st.Holder != "gc" {
			t.Fatalf("replica status during maintenance: %+v", st)
		}

		done()
		done() // a second call must not drive the count negative
		hookWrites.Store(0)
		res := <-began
		if res.err != nil {
			t.Fatalf("Begin: %v", res.err)
		}
		if res.l.ReadOnlyFor() <= 0 {
			t.Fatalf("read-only window %s", res.l.ReadOnlyFor())
		}
		if err := res.l.Err(); err != nil {
			t.Fatalf("fresh lease reports %v", err)
		}
		if err := res.l.Release(ctx); err != nil {
			t.Fatalf("release: %v", err)
		}
		window := res.l.ReadOnlyFor()
		if res.l.ReadOnlyFor() != window {
			t.Fatal("read-only window still grows after release")
		}
		eventually(t, 5*time.Second, "replicas are writable after release", func() bool {
			return writable(r1) && writable(r2)
		})
		if done, _, ok := r2.AdmitWrite(); !ok {
			t.Fatal("write refused after release")
		} else {
			done()
		}
	})
}

func TestLeaseFlushReachesEveryReplica(t *testing.T) {
	backends(t, func(t *testing.T, newBackend func() Backend) {
		ctx := context.Background()
		b := newBackend()
		var flushes [2]atomic.Int64
		for i, id := range []string{"a", "b"} {
			startReplica(t, b, id, Hooks{FlushCache: func(context.Context) error {
				flushes[i].Add(1)
				return nil
			}}, testReplicaOpts())
		}
		eventually(t, 5*time.Second, "both replicas registered", func() bool {
			reps, err := b.Replicas(ctx)
			return err == nil && len(reps) == 2
		})
		l, err := testCoordinator(b, "gc").Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Release(ctx)
		before := [2]int64{flushes[0].Load(), flushes[1].Load()}
		if err := l.Flush(ctx); err != nil {
			t.Fatalf("flush: %v", err)
		}
		for i := range flushes {
			if flushes[i].Load() <= before[i] {
				t.Fatalf("replica %d did not flush its cache before Flush returned", i)
			}
		}
	})
}

func TestTwoCoordinatorsExcludeEachOther(t *testing.T) {
	backends(t, func(t *testing.T, newBackend func() Backend) {
		ctx := context.Background()
		b := newBackend()
		l1, err := testCoordinator(b, "gc-1").Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = testCoordinator(b, "gc-2").Begin(ctx)
		if !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), "gc-1") {
			t.Fatalf("second coordinator: %v; want ErrLeaseHeld naming gc-1", err)
		}
		if err := l1.Release(ctx); err != nil {
			t.Fatal(err)
		}
		l2, err := testCoordinator(b, "gc-2").Begin(ctx)
		if err != nil {
			t.Fatalf("after release: %v", err)
		}
		if l2.Epoch() <= l1.Epoch() {
			t.Fatalf("epochs %d then %d; want increasing", l1.Epoch(), l2.Epoch())
		}
		_ = l2.Release(ctx)
	})
}

func TestAbandonedLeaseExpires(t *testing.T) {
	backends(t, func(t *testing.T, newBackend func() Backend) {
		ctx := context.Background()
		b := newBackend()
		r := startReplica(t, b, "r", Hooks{}, testReplicaOpts())
		// A gc that was killed: it took the lease and never renews it.
		if _, err := b.Acquire(ctx, "killed-gc", testTTL); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "the replica refuses writes", func() bool { return !writable(r) })
		eventually(t, 10*time.Second, "the replica is writable once the lease expired", func() bool { return writable(r) })
		// The next gc gets the lease. The replica turns writable at the expiry
		// it last read, which can be a moment before the backend drops the
		// key, so the next gc may have to ask again.
		var l *Lease
		eventually(t, 5*time.Second, "the next gc takes the lease", func() bool {
			var err error
			l, err = testCoordinator(b, "next-gc").Begin(ctx)
			return err == nil
		})
		_ = l.Release(ctx)
	})
}

func TestRenewalFailureLosesLease(t *testing.T) {
	backends(t, func(t *testing.T, newBackend func() Backend) {
		ctx := context.Background()
		b := &flaky{Backend: newBackend()}
		r := startReplica(t, b, "r", Hooks{}, testReplicaOpts())
		l, err := testCoordinator(b, "gc").Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b.down.Store(true)
		select {
		case <-l.Lost():
		case <-time.After(10 * time.Second):
			t.Fatal("lease not reported lost while the backend is unreachable")
		}
		if err := l.Err(); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("Err after loss: %v", err)
		}
		if err := l.Flush(ctx); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("Flush after loss: %v; want ErrLeaseLost", err)
		}
		// The replica cannot reach the backend either; it keeps refusing
		// until the last lease expiry it saw, then turns writable by itself.
		eventually(t, 10*time.Second, "the cut-off replica turns writable", func() bool { return writable(r) })
		b.down.Store(false)
		if err := l.Release(ctx); err != nil {
			t.Fatalf("release after loss: %v", err)
		}
	})
}

func TestDeadReplicaStopsCounting(t *testing.T) {
	backends(t, func(t *testing.T, newBackend func() Backend) {
		ctx := context.Background()
		b := newBackend()
		// A replica that registered and died: it never acknowledges.
		if err := b.Heartbeat(ctx, "dead", Ack{}, 500*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		l, err := testCoordinator(b, "gc").Begin(ctx)
		if err != nil {
			t.Fatalf("Begin with a dead replica: %v", err)
		}
		_ = l.Release(ctx)
	})
}

func TestStuckReplicaTimesOutAndReleases(t *testing.T) {
	backends(t, func(t *testing.T, newBackend func() Backend) {
		ctx := context.Background()
		b := newBackend()
		r := startReplica(t, b, "busy", Hooks{}, testReplicaOpts())
		eventually(t, 5*time.Second, "replica writable", func() bool { return writable(r) })
		done, _, ok := r.AdmitWrite()
		if !ok {
			t.Fatal("write refused")
		}
		defer done()
		c := NewCoordinator(b, "gc", CoordinatorOptions{LeaseTTL: testTTL, ReplicaPoll: testPoll, AckTimeout: 300 * time.Millisecond})
		_, err := c.Begin(ctx)
		if err == nil || !strings.Contains(err.Error(), "busy") {
			t.Fatalf("Begin with a stuck write: %v; want a timeout naming the replica", err)
		}
		st, err := b.State(ctx)
		if err != nil || st.Active {
			t.Fatalf("lease still active after a failed Begin: %+v, %v", st, err)
		}
	})
}

func TestReplicaRefusesUntilFirstPoll(t *testing.T) {
	b := &flaky{Backend: NewLocal()}
	b.down.Store(true)
	r := startReplica(t, b, "r", Hooks{}, ReplicaOptions{Poll: testPoll, LeaseTTL: 300 * time.Millisecond})
	if writable(r) {
		t.Fatal("a replica that has not read the lease yet accepts writes")
	}
	eventually(t, 5*time.Second, "an unreachable backend stops blocking writes after the lease TTL", func() bool {
		return writable(r)
	})
}

func TestValidateTiming(t *testing.T) {
	if err := ValidateTiming(DefaultLeaseTTL, DefaultPoll); err != nil {
		t.Fatalf("defaults rejected: %v", err)
	}
	if err := ValidateTiming(2*time.Second, time.Second); err == nil {
		t.Fatal("a 2s lease with 1s polling was accepted")
	}
	if err := ValidateTiming(testTTL, testPoll); err != nil {
		t.Fatalf("test timing rejected: %v", err)
	}
}

func TestLostDeadline(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms ...int) []time.Time {
		var out []time.Time
		for _, m := range ms {
			out = append(out, t0.Add(time.Duration(m)*time.Millisecond))
		}
		return out
	}
	ttl, bound := 10*time.Second, 2*time.Second
	margin := ttl - ttl/10
	tests := []struct {
		name      string
		successes []time.Time
		base      int // ms of the success the deadline counts from
	}{
		{"only the acquire", at(0), 0},
		{"renewal newer than the poll bound counts from the acquire", at(0, 1500), 0},
		{"renewal older than the poll bound counts", at(0, 2500, 5000), 2500},
		{"latest success within the bound is skipped", at(0, 2500, 5000, 6000), 2500},
		{"steady renewals", at(0, 2500, 5000, 7500, 10000), 7500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := lostDeadline(tt.successes, ttl, bound)
			want := t0.Add(time.Duration(tt.base)*time.Millisecond + margin)
			if !got.Equal(want) {
				t.Fatalf("deadline %s after t0; want %s", got.Sub(t0), want.Sub(t0))
			}
			// The safety property: a replica whose last read came within the
			// poll bound of the last success saw an expiry after the deadline.
			last := tt.successes[len(tt.successes)-1]
			read := last.Add(-bound)
			seen := tt.successes[0]
			for _, s := range tt.successes {
				if !s.After(read) {
					seen = s
				}
			}
			if seen.Add(ttl).Before(got) {
				t.Fatalf("a replica may turn writable at %s, before the deadline %s", seen.Add(ttl).Sub(t0), got.Sub(t0))
			}
		})
	}
}

func TestAbandonedLeaseFlushesCaches(t *testing.T) {
	backends(t, func(t *testing.T, newBackend func() Backend) {
		ctx := context.Background()
		b := newBackend()
		var local, shared atomic.Int64
		hooks := Hooks{
			FlushCache:  func(context.Context) error { local.Add(1); return nil },
			FlushShared: func(context.Context) error { shared.Add(1); return nil },
		}
		r := startReplica(t, b, "r", hooks, testReplicaOpts())
		eventually(t, 5*time.Second, "replica writable", func() bool { return writable(r) })

		// A lease that is released leaves the caches alone (gc flushed them).
		l, err := testCoordinator(b, "gc").Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "writable after release", func() bool { return writable(r) })
		if local.Load() != 0 || shared.Load() != 0 {
			t.Fatalf("released lease flushed caches: local %d shared %d", local.Load(), shared.Load())
		}

		// A gc killed after deleting: nobody releases, nobody flushed.
		if _, err := b.Acquire(ctx, "killed-gc", testTTL); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "the replica sees the lease", func() bool { return !writable(r) })
		eventually(t, 10*time.Second, "caches flushed once the abandoned lease expired", func() bool {
			return local.Load() == 1 && shared.Load() == 1
		})
	})
}
