package maintenance

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrLeaseHeld is returned when another holder already has the lease.
var ErrLeaseHeld = errors.New("maintenance lease is held by another gc")

// ErrLeaseLost is returned when an operation needs a lease that has expired
// or belongs to someone else.
var ErrLeaseLost = errors.New("maintenance lease lost")

// HeldError says who holds the lease; it matches ErrLeaseHeld with errors.Is.
type HeldError struct {
	Holder  string
	Expires time.Time
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("maintenance lease is held by %q until %s", e.Holder, e.Expires.Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrLeaseHeld) true.
func (e *HeldError) Is(target error) bool { return target == ErrLeaseHeld }

// Ack is what a replica reports in its heartbeat. It describes the replica's
// current condition rather than its history, so a stale value can never
// satisfy a later lease: Epoch is zero whenever the replica is not both
// refusing writes and drained.
type Ack struct {
	// Epoch is the lease epoch for which the replica refuses writes and has
	// no write in flight, or 0.
	Epoch uint64 `json:"epoch"`
	// FlushGen is the flush generation whose cache flush the replica has
	// completed.
	FlushGen uint64 `json:"flushGen"`
}

// ReplicaInfo is one live replica as the backend knows it.
type ReplicaInfo struct {
	ID  string `json:"id"`
	Ack Ack    `json:"ack"`
}

// Backend is the state shared by gc and the replicas. Implementations must
// make Acquire, Renew, Release and BumpFlush atomic with respect to each
// other, and must compute State.Expires on the caller's clock (now plus the
// remaining TTL) so that no two machines have to agree on wall-clock time.
type Backend interface {
	// State returns the current lease state. Active is false when no lease
	// exists; Epoch and FlushGen are still the latest values.
	State(ctx context.Context) (State, error)
	// Acquire takes the lease for holder with a fresh epoch, or fails with an
	// error matching ErrLeaseHeld.
	Acquire(ctx context.Context, holder string, ttl time.Duration) (State, error)
	// Renew extends the lease to ttl from now if holder still has epoch;
	// otherwise it fails with ErrLeaseLost.
	Renew(ctx context.Context, holder string, epoch uint64, ttl time.Duration) error
	// Release ends the lease if holder still has epoch; otherwise it fails
	// with ErrLeaseLost.
	Release(ctx context.Context, holder string, epoch uint64) error
	// BumpFlush increments the flush generation while holder has epoch and
	// returns the new generation.
	BumpFlush(ctx context.Context, holder string, epoch uint64) (uint64, error)
	// Heartbeat registers replica id as live for ttl with its current ack.
	Heartbeat(ctx context.Context, id string, ack Ack, ttl time.Duration) error
	// Deregister removes replica id from the live set at once.
	Deregister(ctx context.Context, id string) error
	// Replicas lists the replicas whose heartbeat has not expired.
	Replicas(ctx context.Context) ([]ReplicaInfo, error)
}

// notifier is implemented by backends that can wake replicas immediately
// instead of waiting for the next poll; it shortens the read-only window.
type notifier interface {
	// changed returns a channel that is closed at the next state change.
	changed() <-chan struct{}
}
