package maintenance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// CoordinatorOptions tune a Coordinator; zero values take the defaults.
type CoordinatorOptions struct {
	// LeaseTTL is the lease's time to live (default 30s). If gc dies the
	// registry is writable again at most this long (plus one poll) later.
	LeaseTTL time.Duration
	// ReplicaPoll is the replicas' poll interval (default 1s); the lease is
	// considered lost early enough that a replica polling this often cannot
	// have turned writable yet.
	ReplicaPoll time.Duration
	// AckTimeout bounds the wait for replicas to acknowledge the lease and a
	// flush (default 2×LeaseTTL); a replica stuck on a long upload makes gc
	// give up instead of keeping every write refused.
	AckTimeout time.Duration
	Logger     *slog.Logger
}

func (o CoordinatorOptions) withDefaults() CoordinatorOptions {
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.ReplicaPoll <= 0 {
		o.ReplicaPoll = DefaultPoll
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 2 * o.LeaseTTL
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// ValidateTiming checks that a lease of ttl can be kept safely with replicas
// polling every poll: the coordinator must be able to renew several times
// before it has to stop deleting.
func ValidateTiming(ttl, poll time.Duration) error {
	if ttl <= 0 || poll <= 0 {
		return fmt.Errorf("lease ttl (%s) and poll (%s) must be positive", ttl, poll)
	}
	if b := PollBound(poll); ttl < 4*b {
		return fmt.Errorf("lease ttl %s too short for a replica poll of %s: need at least %s", ttl, poll, 4*b)
	}
	return nil
}

// Coordinator is the gc side of the lease.
type Coordinator struct {
	b      Backend
	holder string
	opts   CoordinatorOptions
	log    *slog.Logger
}

// NewCoordinator returns a coordinator that takes the lease as holder (a
// name that identifies this gc run in logs and in the lease itself).
func NewCoordinator(b Backend, holder string, opts CoordinatorOptions) *Coordinator {
	opts = opts.withDefaults()
	return &Coordinator{b: b, holder: holder, opts: opts,
		log: opts.Logger.With("component", "maintenance", "holder", holder)}
}

// Begin takes the lease and returns once every live replica refuses writes
// and has no write in flight. The lease is renewed in the background until
// Release; if renewal fails for too long, Lost is closed.
func (c *Coordinator) Begin(ctx context.Context) (*Lease, error) {
	if err := ValidateTiming(c.opts.LeaseTTL, c.opts.ReplicaPoll); err != nil {
		return nil, err
	}
	sent := time.Now()
	st, err := c.b.Acquire(ctx, c.holder, c.opts.LeaseTTL)
	if err != nil {
		return nil, fmt.Errorf("take the maintenance lease: %w", err)
	}
	l := &Lease{c: c, epoch: st.Epoch, acquired: sent, successes: []time.Time{sent},
		lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	l.deadline = lostDeadline(l.successes, c.opts.LeaseTTL, PollBound(c.opts.ReplicaPoll))
	go l.keepAlive()
	c.log.Info("maintenance lease taken; waiting for replicas to refuse writes and drain", "epoch", st.Epoch)
	if err := l.waitReplicas(ctx, "refuse writes and drain", func(a Ack) bool { return a.Epoch == st.Epoch }); err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout(c.opts.ReplicaPoll))
		defer cancel()
		if rerr := l.Release(rctx); rerr != nil {
			c.log.Warn("releasing the lease after a failed start", "err", rerr)
		}
		return nil, err
	}
	c.log.Info("all replicas refuse writes", "epoch", st.Epoch, "after", time.Since(sent).Round(time.Millisecond))
	return l, nil
}

// Lease is a held maintenance lease.
type Lease struct {
	c        *Coordinator
	epoch    uint64
	acquired time.Time

	mu        sync.Mutex
	successes []time.Time // send times of the acquire and of renewals that succeeded
	deadline  time.Time   // stop deleting at this instant unless renewed
	released  time.Time
	lostErr   error

	lost     chan struct{}
	lostOnce sync.Once
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// Epoch identifies this lease.
func (l *Lease) Epoch() uint64 { return l.epoch }

// Lost is closed when the lease can no longer be trusted: gc must stop
// deleting at once.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Err returns nil while the lease is held. Unlike Lost it also checks the
// deadline itself, so a delayed renewal goroutine cannot let a deletion
// through after the replicas may have turned writable.
func (l *Lease) Err() error {
	select {
	case <-l.lost:
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.lostErr
	default:
	}
	l.mu.Lock()
	deadline, released := l.deadline, !l.released.IsZero()
	l.mu.Unlock()
	if released {
		return fmt.Errorf("%w: already released", ErrLeaseLost)
	}
	if !time.Now().Before(deadline) {
		l.markLost(fmt.Errorf("%w: not renewed in time", ErrLeaseLost))
		return l.Err()
	}
	return nil
}

// ReadOnlyFor is how long writes have been refused because of this lease:
// from taking it to releasing it (or to now while held).
func (l *Lease) ReadOnlyFor() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.released.IsZero() {
		return l.released.Sub(l.acquired)
	}
	return time.Since(l.acquired)
}

// Flush bumps the flush generation and waits until every live replica has
// dropped its in-memory blob-descriptor cache.
func (l *Lease) Flush(ctx context.Context) error {
	if err := l.Err(); err != nil {
		return err
	}
	gen, err := l.c.b.BumpFlush(ctx, l.c.holder, l.epoch)
	if err != nil {
		return fmt.Errorf("ask replicas to flush caches: %w", err)
	}
	return l.waitReplicas(ctx, "flush caches", func(a Ack) bool { return a.FlushGen == gen })
}

// Release stops renewing and ends the lease. Releasing a lease that already
// expired is not an error: there is nothing left to release.
func (l *Lease) Release(ctx context.Context) error {
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.done
	l.mu.Lock()
	if l.released.IsZero() {
		l.released = time.Now()
	}
	l.mu.Unlock()
	err := l.c.b.Release(ctx, l.c.holder, l.epoch)
	if errors.Is(err, ErrLeaseLost) {
		l.c.log.Warn("maintenance lease had already expired at release", "epoch", l.epoch)
		return nil
	}
	if err != nil {
		return fmt.Errorf("release the maintenance lease (it expires on its own): %w", err)
	}
	l.c.log.Info("maintenance lease released", "epoch", l.epoch, "readOnly", l.ReadOnlyFor().Round(time.Millisecond))
	return nil
}

func (l *Lease) markLost(err error) {
	l.lostOnce.Do(func() {
		l.mu.Lock()
		l.lostErr = err
		l.mu.Unlock()
		close(l.lost)
		l.c.log.Error("maintenance lease lost; gc stops deleting", "epoch", l.epoch, "err", err)
	})
}

// lostDeadline is when a coordinator must stop trusting its lease, given the
// send times of the acquire and of every successful renewal so far.
//
// A healthy replica reads the lease at least once per pollBound, so its last
// read came after the latest success minus pollBound and showed an expiry at
// least TTL after the latest success sent before that read. That renewal is
// no earlier than the latest success at or before (last - pollBound), and
// never earlier than the acquire, which every acknowledging replica has seen.
// Deleting stops a tenth of the TTL before that, to absorb clock-rate drift.
func lostDeadline(successes []time.Time, ttl, pollBound time.Duration) time.Time {
	base := successes[0]
	cutoff := successes[len(successes)-1].Add(-pollBound)
	for _, s := range successes {
		if !s.After(cutoff) {
			base = s
		}
	}
	return base.Add(ttl - ttl/10)
}

func (l *Lease) keepAlive() {
	defer close(l.done)
	ttl := l.c.opts.LeaseTTL
	interval := ttl / 4
	bound := PollBound(l.c.opts.ReplicaPoll)

	l.mu.Lock()
	deadline := l.deadline
	l.mu.Unlock()
	watchdog := time.NewTimer(time.Until(deadline))
	defer watchdog.Stop()
	next := time.NewTimer(interval)
	defer next.Stop()
	failures := 0
	for {
		select {
		case <-l.stop:
			return
		case <-watchdog.C:
			l.markLost(fmt.Errorf("%w: could not renew it in time", ErrLeaseLost))
			return
		case <-next.C:
		}
		sent := time.Now()
		// Never block past the deadline: the watchdog must fire on time.
		ctx, cancel := context.WithTimeout(context.Background(), min(interval, time.Until(deadline)))
		err := l.c.b.Renew(ctx, l.c.holder, l.epoch, ttl)
		cancel()
		switch {
		case err == nil:
			failures = 0
			l.mu.Lock()
			l.successes = append(l.successes, sent)
			// Only recent successes can matter for the deadline.
			if n := len(l.successes); n > 64 {
				l.successes = append(l.successes[:1], l.successes[n-32:]...)
			}
			l.deadline = lostDeadline(l.successes, ttl, bound)
			deadline = l.deadline
			l.mu.Unlock()
			watchdog.Reset(time.Until(deadline))
			next.Reset(interval)
		case errors.Is(err, ErrLeaseLost):
			l.markLost(fmt.Errorf("%w: it expired or was taken over", ErrLeaseLost))
			return
		default:
			failures++
			l.c.log.Warn("renewing the maintenance lease failed; retrying", "err", err, "failures", failures,
				"stopDeletingAt", deadline.Format(time.RFC3339Nano))
			next.Reset(max(interval/4, 10*time.Millisecond))
		}
	}
}

// waitReplicas polls until ok holds for every live replica.
func (l *Lease) waitReplicas(ctx context.Context, what string, ok func(Ack) bool) error {
	c := l.c
	deadline := time.Now().Add(c.opts.AckTimeout)
	interval := min(max(c.opts.ReplicaPoll/10, 5*time.Millisecond), 100*time.Millisecond)
	n, notifies := c.b.(notifier)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var pending []string
	var lastErr error
	lastLog := time.Now()
	for {
		var wake <-chan struct{}
		if notifies {
			wake = n.changed()
		}
		reps, err := c.b.Replicas(ctx)
		if err != nil {
			lastErr = err
		} else {
			lastErr, pending = nil, pending[:0]
			for _, r := range reps {
				if !ok(r.Ack) {
					pending = append(pending, r.ID)
				}
			}
			if len(pending) == 0 {
				return nil
			}
		}
		if err := l.Err(); err != nil {
			return err
		}
		now := time.Now()
		if now.After(deadline) {
			if lastErr != nil {
				return fmt.Errorf("waiting for replicas to %s: %w", what, lastErr)
			}
			return fmt.Errorf("replicas did not %s within %s: %s", what, c.opts.AckTimeout, strings.Join(pending, ", "))
		}
		if now.Sub(lastLog) > 5*time.Second {
			lastLog = now
			c.log.Info("waiting for replicas", "to", what, "pending", pending, "err", lastErr)
		}
		timer.Reset(interval)
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for replicas to %s: %w", what, ctx.Err())
		case <-l.lost:
			return l.Err()
		case <-wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}
