package maintenance

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Local is an in-process Backend for one berth process that runs its own gc
// schedule. It follows the same rules as Redis so that the replica and the
// coordinator cannot tell the difference.
type Local struct {
	mu       sync.Mutex
	now      func() time.Time
	holder   string
	epoch    uint64
	expires  time.Time // zero when no lease has ever existed
	flushGen uint64
	released uint64
	replicas map[string]localReplica
	wake     chan struct{}
}

type localReplica struct {
	ack     Ack
	expires time.Time
}

var _ Backend = (*Local)(nil)

// NewLocal returns an empty in-process backend.
func NewLocal() *Local {
	return &Local{now: time.Now, replicas: map[string]localReplica{}, wake: make(chan struct{})}
}

func (l *Local) activeLocked(now time.Time) bool {
	return l.holder != "" && now.Before(l.expires)
}

// broadcastLocked wakes every replica waiting on changed.
func (l *Local) broadcastLocked() {
	close(l.wake)
	l.wake = make(chan struct{})
}

func (l *Local) changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.wake
}

// State implements Backend.
func (l *Local) State(ctx context.Context) (State, error) {
	if err := ctx.Err(); err != nil {
		return State{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	st := State{Epoch: l.epoch, FlushGen: l.flushGen, Released: l.released}
	if l.activeLocked(now) {
		st.Active, st.Expires, st.Holder = true, l.expires, l.holder
	}
	return st, nil
}

// Acquire implements Backend.
func (l *Local) Acquire(ctx context.Context, holder string, ttl time.Duration) (State, error) {
	if err := ctx.Err(); err != nil {
		return State{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if l.activeLocked(now) {
		return State{}, &HeldError{Holder: l.holder, Expires: l.expires}
	}
	l.epoch++
	l.holder, l.expires = holder, now.Add(ttl)
	l.broadcastLocked()
	return State{Active: true, Epoch: l.epoch, FlushGen: l.flushGen, Expires: l.expires, Holder: holder, Released: l.released}, nil
}

func (l *Local) ownsLocked(holder string, epoch uint64) bool {
	return l.activeLocked(l.now()) && l.holder == holder && l.epoch == epoch
}

// Renew implements Backend.
func (l *Local) Renew(ctx context.Context, holder string, epoch uint64, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.ownsLocked(holder, epoch) {
		return ErrLeaseLost
	}
	l.expires = l.now().Add(ttl)
	return nil
}

// Release implements Backend.
func (l *Local) Release(ctx context.Context, holder string, epoch uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.ownsLocked(holder, epoch) {
		return ErrLeaseLost
	}
	l.holder, l.expires, l.released = "", time.Time{}, epoch
	l.broadcastLocked()
	return nil
}

// BumpFlush implements Backend.
func (l *Local) BumpFlush(ctx context.Context, holder string, epoch uint64) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.ownsLocked(holder, epoch) {
		return 0, ErrLeaseLost
	}
	l.flushGen++
	l.broadcastLocked()
	return l.flushGen, nil
}

// Heartbeat implements Backend.
func (l *Local) Heartbeat(ctx context.Context, id string, ack Ack, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	prev, known := l.replicas[id]
	l.replicas[id] = localReplica{ack: ack, expires: l.now().Add(ttl)}
	// Only a changed ack wakes waiters: waking on every heartbeat would make
	// replicas re-poll each other in a loop.
	if !known || prev.ack != ack {
		l.broadcastLocked()
	}
	return nil
}

// Deregister implements Backend.
func (l *Local) Deregister(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.replicas, id)
	return nil
}

// Replicas implements Backend.
func (l *Local) Replicas(ctx context.Context) ([]ReplicaInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	out := make([]ReplicaInfo, 0, len(l.replicas))
	for id, r := range l.replicas {
		if !now.Before(r.expires) {
			delete(l.replicas, id)
			continue
		}
		out = append(out, ReplicaInfo{ID: id, Ack: r.ack})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
