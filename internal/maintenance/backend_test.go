package maintenance

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBackendLeaseRules(t *testing.T) {
	backends(t, func(t *testing.T, newBackend func() Backend) {
		ctx := context.Background()
		b := newBackend()

		st, err := b.State(ctx)
		if err != nil || st.Active {
			t.Fatalf("fresh backend: state %+v, err %v; want inactive", st, err)
		}

		a, err := b.Acquire(ctx, "gc-a", 10*time.Second)
		if err != nil {
			t.Fatalf("acquire: %v", err)
		}
		if !a.Active || a.Holder != "gc-a" || a.Epoch == 0 || time.Until(a.Expires) <= 0 {
			t.Fatalf("acquire returned %+v", a)
		}
		st, err = b.State(ctx)
		if err != nil || !st.Active || st.Epoch != a.Epoch || st.Holder != "gc-a" {
			t.Fatalf("state while held: %+v, %v", st, err)
		}

		_, err = b.Acquire(ctx, "gc-b", 10*time.Second)
		var held *HeldError
		if !errors.Is(err, ErrLeaseHeld) || !errors.As(err, &held) || held.Holder != "gc-a" {
			t.Fatalf("second acquire: err %v; want ErrLeaseHeld naming gc-a", err)
		}

		if err := b.Renew(ctx, "gc-b", a.Epoch, time.Second); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("renew by another holder: %v; want ErrLeaseLost", err)
		}
		if err := b.Renew(ctx, "gc-a", a.Epoch+1, time.Second); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("renew with a wrong epoch: %v; want ErrLeaseLost", err)
		}
		if err := b.Renew(ctx, "gc-a", a.Epoch, 10*time.Second); err != nil {
			t.Fatalf("renew by holder: %v", err)
		}

		if _, err := b.BumpFlush(ctx, "gc-b", a.Epoch); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("flush bump by a non-holder: %v; want ErrLeaseLost", err)
		}
		g1, err := b.BumpFlush(ctx, "gc-a", a.Epoch)
		if err != nil {
			t.Fatalf("flush bump: %v", err)
		}
		g2, err := b.BumpFlush(ctx, "gc-a", a.Epoch)
		if err != nil || g2 != g1+1 {
			t.Fatalf("second flush bump: %d, %v; want %d", g2, err, g1+1)
		}

		if err := b.Release(ctx, "gc-b", a.Epoch); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("release by a non-holder: %v; want ErrLeaseLost", err)
		}
		if err := b.Release(ctx, "gc-a", a.Epoch); err != nil {
			t.Fatalf("release: %v", err)
		}
		st, err = b.State(ctx)
		if err != nil || st.Active || st.FlushGen != g2 {
			t.Fatalf("state after release: %+v, %v; want inactive with flushGen %d", st, err, g2)
		}

		c, err := b.Acquire(ctx, "gc-b", 10*time.Second)
		if err != nil || c.Epoch <= a.Epoch {
			t.Fatalf("acquire after release: %+v, %v; want a newer epoch than %d", c, err, a.Epoch)
		}
		if err := b.Release(ctx, "gc-a", a.Epoch); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("stale holder released the new lease: %v", err)
		}
	})
}

func TestBackendLeaseExpiresOnItsOwn(t *testing.T) {
	backends(t, func(t *testing.T, newBackend func() Backend) {
		ctx := context.Background()
		b := newBackend()
		a, err := b.Acquire(ctx, "killed-gc", 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "the unrenewed lease expires", func() bool {
			st, err := b.State(ctx)
			return err == nil && !st.Active
		})
		if err := b.Renew(ctx, "killed-gc", a.Epoch, time.Second); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("renewing an expired lease: %v; want ErrLeaseLost", err)
		}
		if _, err := b.Acquire(ctx, "next-gc", time.Second); err != nil {
			t.Fatalf("acquire after expiry: %v", err)
		}
	})
}

func TestBackendReplicaRegistry(t *testing.T) {
	backends(t, func(t *testing.T, newBackend func() Backend) {
		ctx := context.Background()
		b := newBackend()
		if err := b.Heartbeat(ctx, "long", Ack{Epoch: 3, FlushGen: 7}, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := b.Heartbeat(ctx, "short", Ack{}, 200*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if err := b.Heartbeat(ctx, "leaving", Ack{}, time.Minute); err != nil {
			t.Fatal(err)
		}
		reps, err := b.Replicas(ctx)
		if err != nil || len(reps) != 3 {
			t.Fatalf("replicas: %+v, %v; want 3", reps, err)
		}
		if reps[0].ID != "leaving" || reps[1].ID != "long" || reps[1].Ack != (Ack{Epoch: 3, FlushGen: 7}) {
			t.Fatalf("replicas not sorted or ack lost: %+v", reps)
		}
		if err := b.Deregister(ctx, "leaving"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "the replica without heartbeat drops out", func() bool {
			reps, err := b.Replicas(ctx)
			return err == nil && len(reps) == 1 && reps[0].ID == "long"
		})
	})
}
