// Package maintenance implements berth's read-only lease: while garbage
// collection runs, every replica refuses writes (503 UNAVAILABLE with
// Retry-After) and keeps serving reads. The lease lives in a Backend shared by
// gc and the replicas: Redis when several processes are involved, in-process
// when `berth serve` runs its own schedule. A lease has a TTL, so a gc that
// dies leaves the registry writable again on its own.
package maintenance

import (
	"context"
	"time"
)

// State is the shared maintenance state as a replica sees it.
type State struct {
	// Active means writes must be refused.
	Active bool `json:"active"`
	// Epoch increments with every lease, so acknowledgements of an earlier
	// lease never count for a later one.
	Epoch uint64 `json:"epoch"`
	// FlushGen increments whenever gc has deleted data: replicas drop their
	// in-memory blob-descriptor caches when they see a new value.
	FlushGen uint64 `json:"flushGen"`
	// Expires is when the lease ends unless renewed.
	Expires time.Time `json:"expires"`
	// Holder names the gc run holding the lease (for logs and status pages).
	Holder string `json:"holder,omitempty"`
	// Released is the epoch of the last lease that ended by Release. A lease
	// that ended any other way was abandoned: its gc may have deleted blobs
	// without flushing caches, so replicas flush them themselves.
	Released uint64 `json:"released"`
}

// Hooks are what a Replica needs from the server it guards.
type Hooks struct {
	// InFlightWrites reports write requests that started before writes were
	// refused and have not finished yet; a replica acknowledges a lease only
	// once this reaches zero.
	InFlightWrites func() int64
	// FlushCache drops the replica's in-memory blob-descriptor cache.
	FlushCache func(ctx context.Context) error
	// FlushShared drops the shared (Redis) blob-descriptor cache. It is
	// called, with FlushCache, when a lease ends without being released:
	// gc died, possibly after deleting and before flushing. Optional.
	FlushShared func(ctx context.Context) error
}
