package maintenance

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// Defaults shared by the replica and the coordinator; config validation in
// the server should use the same values.
const (
	DefaultPoll     = time.Second
	DefaultLeaseTTL = 30 * time.Second
	// MaxRetryAfter caps the Retry-After hint: the lease is renewed while gc
	// runs and released as soon as it is done, so its remaining TTL says
	// little about when writes come back.
	MaxRetryAfter = 5 * time.Second
)

// callTimeout bounds one backend call of a replica polling every poll.
func callTimeout(poll time.Duration) time.Duration {
	return min(max(poll, 250*time.Millisecond), 5*time.Second)
}

// PollBound is the longest a healthy replica goes between two successful
// reads of the lease: one poll interval plus one call timeout. The
// coordinator stops deleting early enough that a replica which last saw the
// lease that long ago still refuses writes.
func PollBound(poll time.Duration) time.Duration {
	return poll + callTimeout(poll)
}

// ReplicaOptions tune a Replica; zero values take the defaults.
type ReplicaOptions struct {
	// Poll is how often the replica reads the lease (default 1s). While a
	// lease is active it polls four times as often, to acknowledge sooner.
	Poll time.Duration
	// LeaseTTL bounds how long a lease the replica has not seen yet can
	// still be active: until the first successful poll the replica refuses
	// writes for at most this long (default 30s).
	LeaseTTL time.Duration
	// HeartbeatTTL is how long the replica counts as live after a heartbeat
	// (default max(10×Poll, 5s)). A replica that dies stops delaying gc
	// after this long.
	HeartbeatTTL time.Duration
	Logger       *slog.Logger
}

func (o ReplicaOptions) withDefaults() ReplicaOptions {
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.HeartbeatTTL <= 0 {
		o.HeartbeatTTL = max(10*o.Poll, 5*time.Second)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

type snapshot struct {
	refuse bool
	until  time.Time // refuse only before this instant (local clock)
	state  State
}

// Replica is the server side of the lease: it tracks the shared state,
// refuses writes while a lease is active, acknowledges once its in-flight
// writes drained, and drops its in-memory cache when gc asks.
type Replica struct {
	b     Backend
	id    string
	hooks Hooks
	opts  ReplicaOptions
	log   *slog.Logger

	snap    atomic.Pointer[snapshot]
	writes  atomic.Int64  // writes admitted through AdmitWrite and not done
	kick    chan struct{} // the last admitted write finished
	applied uint64        // flush generation applied; Run's goroutine only
	seen    uint64        // epoch of the lease last seen active; Run's goroutine only
	failing bool          // last backend call failed; Run's goroutine only
}

// NewReplica returns a replica named id (unique per process). Until Run has
// read the lease once, writes are refused: a lease may be active already.
func NewReplica(b Backend, id string, hooks Hooks, opts ReplicaOptions) *Replica {
	opts = opts.withDefaults()
	r := &Replica{b: b, id: id, hooks: hooks, opts: opts, kick: make(chan struct{}, 1),
		log: opts.Logger.With("component", "maintenance", "replica", id)}
	r.snap.Store(&snapshot{refuse: true, until: time.Now().Add(opts.LeaseTTL)})
	return r
}

// WritesRefused reports whether writes must be refused now, with a
// Retry-After hint. It is called on every request: no I/O, no locks.
func (r *Replica) WritesRefused() (bool, time.Duration) {
	s := r.snap.Load()
	if !s.refuse {
		return false, 0
	}
	rem := time.Until(s.until)
	if rem <= 0 {
		return false, 0
	}
	return true, min(max(rem, time.Second), MaxRetryAfter)
}

// AdmitWrite counts a write request in and says whether it may proceed.
// It increments the in-flight count before looking at the lease, and the
// replica publishes refusal before reading that count, so a write can never
// slip past an acknowledgement. Call done exactly once when the request ends.
func (r *Replica) AdmitWrite() (done func(), retryAfter time.Duration, ok bool) {
	r.writes.Add(1)
	if refused, ra := r.WritesRefused(); refused {
		r.release()
		return nil, ra, false
	}
	var finished atomic.Bool
	return func() {
		if finished.CompareAndSwap(false, true) {
			r.release()
		}
	}, 0, true
}

func (r *Replica) release() {
	// Waking the poll loop only matters while a lease waits for the drain;
	// outside maintenance it would turn every idle moment into a poll.
	if r.writes.Add(-1) == 0 && r.snap.Load().refuse {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// Status returns the lease state as last read from the backend.
func (r *Replica) Status() State {
	return r.snap.Load().state
}

func (r *Replica) drained() bool {
	if r.writes.Load() != 0 {
		return false
	}
	return r.hooks.InFlightWrites == nil || r.hooks.InFlightWrites() == 0
}

// Run polls the backend until ctx is done. Cancel ctx only after the HTTP
// server stopped serving: on the way out the replica leaves the live set so
// that gc does not wait for it.
func (r *Replica) Run(ctx context.Context) error {
	n, notifies := r.b.(notifier)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		var wake <-chan struct{}
		if notifies {
			// Taken before polling, so a change during the poll still wakes us.
			wake = n.changed()
		}
		r.tick(ctx)
		interval := r.opts.Poll
		if r.snap.Load().refuse {
			interval = max(r.opts.Poll/4, 10*time.Millisecond)
		}
		timer.Reset(interval)
		select {
		case <-ctx.Done():
			r.leave()
			return nil
		case <-timer.C:
		case <-wake:
		case <-r.kick:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

func (r *Replica) leave() {
	if !r.drained() {
		// Writes still running: let the heartbeat expire instead, so gc
		// keeps waiting for them.
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout(r.opts.Poll))
	defer cancel()
	if err := r.b.Deregister(ctx, r.id); err != nil {
		r.log.Warn("leaving the maintenance replica set", "err", err)
	}
}

func (r *Replica) tick(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout(r.opts.Poll))
	st, err := r.b.State(cctx)
	cancel()
	if err != nil {
		// Keep the last known state: WritesRefused lets it lapse at the
		// last known expiry, which is what a dead gc would amount to.
		r.noteFailure("reading the maintenance lease", err)
		return
	}
	// Publish before reading the in-flight count (see AdmitWrite).
	r.snap.Store(&snapshot{refuse: st.Active, until: st.Expires, state: st})

	if r.seen != 0 && (!st.Active || st.Epoch != r.seen) {
		// The lease we saw has ended. If it was not released, its gc died,
		// maybe between deleting blobs and flushing caches.
		if st.Released != r.seen {
			if err := r.flushAbandoned(ctx); err != nil {
				r.noteFailure("flushing caches after an abandoned lease", err)
				return // r.seen stays, so the next poll tries again
			}
			r.log.Warn("maintenance lease ended without release (gc died?); blob-descriptor caches flushed", "epoch", r.seen)
		}
		r.seen = 0
	}
	if st.Active {
		r.seen = st.Epoch
	}

	if st.FlushGen != r.applied {
		if r.hooks.FlushCache != nil {
			if err := r.hooks.FlushCache(ctx); err != nil {
				r.noteFailure("flushing the blob-descriptor cache", err)
				return
			}
		}
		r.log.Debug("blob-descriptor cache flushed", "flushGen", st.FlushGen)
		r.applied = st.FlushGen
	}
	ack := Ack{FlushGen: r.applied}
	if st.Active && r.drained() {
		ack.Epoch = st.Epoch
	}
	cctx, cancel = context.WithTimeout(ctx, callTimeout(r.opts.Poll))
	err = r.b.Heartbeat(cctx, r.id, ack, r.opts.HeartbeatTTL)
	cancel()
	if err != nil {
		r.noteFailure("sending the replica heartbeat", err)
		return
	}
	if r.failing {
		r.failing = false
		r.log.Info("maintenance backend reachable again")
	}
}

func (r *Replica) flushAbandoned(ctx context.Context) error {
	if r.hooks.FlushCache != nil {
		if err := r.hooks.FlushCache(ctx); err != nil {
			return err
		}
	}
	if r.hooks.FlushShared != nil {
		return r.hooks.FlushShared(ctx)
	}
	return nil
}

// noteFailure logs the first failure of a streak at Warn and the rest at
// Debug, so an unreachable backend does not flood the log every poll.
func (r *Replica) noteFailure(what string, err error) {
	if r.failing {
		r.log.Debug(what, "err", err)
		return
	}
	r.failing = true
	r.log.Warn(what+" failed; keeping the last known lease until it expires", "err", err)
}
