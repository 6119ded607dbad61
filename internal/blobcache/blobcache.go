// Package blobcache is berth's blob-descriptor cache. Distribution's caches
// cannot be invalidated from outside the process that owns them, which is why
// a garbage collection leaves them claiming deleted blobs exist
// (distribution#2945). Berth builds the cache itself and hands it to
// Distribution, so gc can flush it: Memory swaps in an empty cache, and
// FlushRedis deletes the shared keys.
//
// Redis is only a cache: while it is unreachable, Redis answers "unknown" at
// once and Distribution falls back to storage; when it comes back, the cache
// is flushed first, because deletes made meanwhile could not clear it.
package blobcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage/cache"
	memorycache "github.com/distribution/distribution/v3/registry/storage/cache/memory"
	rediscache "github.com/distribution/distribution/v3/registry/storage/cache/redis"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/redis/go-redis/v9"
)

// Provider is a cache Distribution can use and berth can flush.
type Provider interface {
	cache.BlobDescriptorCacheProvider
	// Flush forgets every cached descriptor.
	Flush(ctx context.Context) error
}

// Memory is an in-process cache that can be flushed atomically.
type Memory struct {
	size int
	cur  atomic.Pointer[cache.BlobDescriptorCacheProvider]
}

// NewMemory returns an in-memory cache of at most size entries (0: upstream's default).
func NewMemory(size int) *Memory {
	if size <= 0 {
		size = memorycache.DefaultSize
	}
	m := &Memory{size: size}
	p := memorycache.NewInMemoryBlobDescriptorCacheProvider(size)
	m.cur.Store(&p)
	return m
}

func (m *Memory) get() cache.BlobDescriptorCacheProvider { return *m.cur.Load() }

// Flush replaces the cache with an empty one.
func (m *Memory) Flush(context.Context) error {
	p := memorycache.NewInMemoryBlobDescriptorCacheProvider(m.size)
	m.cur.Store(&p)
	return nil
}

func (m *Memory) Stat(ctx context.Context, dgst digest.Digest) (v1.Descriptor, error) {
	return m.get().Stat(ctx, dgst)
}

func (m *Memory) Clear(ctx context.Context, dgst digest.Digest) error {
	return m.get().Clear(ctx, dgst)
}

func (m *Memory) SetDescriptor(ctx context.Context, dgst digest.Digest, desc v1.Descriptor) error {
	return m.get().SetDescriptor(ctx, dgst, desc)
}

// RepositoryScoped resolves the current cache on every call, so a service
// held across a flush never reads the old one.
func (m *Memory) RepositoryScoped(repo string) (distribution.BlobDescriptorService, error) {
	if _, err := m.get().RepositoryScoped(repo); err != nil {
		return nil, err
	}
	return scoped{repo: repo, get: m.get}, nil
}

type scoped struct {
	repo string
	get  func() cache.BlobDescriptorCacheProvider
}

func (s scoped) svc() (distribution.BlobDescriptorService, error) {
	return s.get().RepositoryScoped(s.repo)
}

func (s scoped) Stat(ctx context.Context, dgst digest.Digest) (v1.Descriptor, error) {
	svc, err := s.svc()
	if err != nil {
		return v1.Descriptor{}, err
	}
	return svc.Stat(ctx, dgst)
}

func (s scoped) Clear(ctx context.Context, dgst digest.Digest) error {
	svc, err := s.svc()
	if err != nil {
		return err
	}
	return svc.Clear(ctx, dgst)
}

func (s scoped) SetDescriptor(ctx context.Context, dgst digest.Digest, desc v1.Descriptor) error {
	svc, err := s.svc()
	if err != nil {
		return err
	}
	return svc.SetDescriptor(ctx, dgst, desc)
}

// Redis is the shared cache of several replicas, with a circuit breaker.
type Redis struct {
	client redis.UniversalClient
	inner  cache.BlobDescriptorCacheProvider
	up     atomic.Bool
	// flushed is false from the moment Redis was seen down until the cache
	// has been flushed after it came back.
	flushed atomic.Bool
	log     *slog.Logger
	wake    chan struct{}
}

// NewRedis wraps client. Call Run to keep track of Redis' health.
func NewRedis(client redis.UniversalClient, log *slog.Logger) *Redis {
	r := &Redis{client: client, inner: rediscache.NewRedisBlobDescriptorCacheProvider(client), log: log, wake: make(chan struct{}, 1)}
	r.flushed.Store(true)
	return r
}

// Up reports whether the cache is in use (Redis reachable and coherent).
func (r *Redis) Up() bool { return r.up.Load() }

// Run pings Redis every interval until ctx ends, taking the cache out of use
// while Redis fails and flushing it before putting it back.
func (r *Redis) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		r.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.wake:
		}
	}
}

// check pings once and updates the state.
func (r *Redis) check(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := r.client.Ping(pctx).Err()
	if err != nil {
		if r.up.Swap(false) {
			r.log.Warn("redis unreachable; serving without the blob-descriptor cache", "err", err)
		}
		r.flushed.Store(false)
		return
	}
	if !r.flushed.Load() {
		if err := FlushRedis(pctx, r.client); err != nil {
			r.log.Warn("redis back but flushing the cache failed; staying without it", "err", err)
			return
		}
		r.flushed.Store(true)
	}
	if !r.up.Swap(true) {
		r.log.Info("redis reachable; blob-descriptor cache in use")
	}
}

// fail takes the cache out of use at the first failed call, without waiting
// for the next ping, and asks for a check.
func (r *Redis) fail(err error) {
	if err == nil || errors.Is(err, distribution.ErrBlobUnknown) || errors.Is(err, context.Canceled) {
		return
	}
	if r.up.Swap(false) {
		r.log.Warn("redis call failed; serving without the blob-descriptor cache", "err", err)
	}
	r.flushed.Store(false)
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// stat turns a Redis failure into a cache miss: Distribution then reads
// storage, and a failed write-back to the cache is a no-op while Redis is down.
// A Clear or SetDescriptor that fails is not an error either: the cache is
// flushed before it is used again.
func (r *Redis) stat(d v1.Descriptor, err error) (v1.Descriptor, error) {
	if err != nil && !errors.Is(err, distribution.ErrBlobUnknown) {
		r.fail(err)
		return v1.Descriptor{}, distribution.ErrBlobUnknown
	}
	return d, err
}

func (r *Redis) Stat(ctx context.Context, dgst digest.Digest) (v1.Descriptor, error) {
	if !r.up.Load() {
		return v1.Descriptor{}, distribution.ErrBlobUnknown
	}
	return r.stat(r.inner.Stat(ctx, dgst))
}

func (r *Redis) Clear(ctx context.Context, dgst digest.Digest) error {
	if !r.up.Load() {
		return nil
	}
	r.fail(r.inner.Clear(ctx, dgst))
	return nil
}

func (r *Redis) SetDescriptor(ctx context.Context, dgst digest.Digest, desc v1.Descriptor) error {
	if !r.up.Load() {
		return nil
	}
	r.fail(r.inner.SetDescriptor(ctx, dgst, desc))
	return nil
}

func (r *Redis) RepositoryScoped(repo string) (distribution.BlobDescriptorService, error) {
	svc, err := r.inner.RepositoryScoped(repo)
	if err != nil {
		return nil, err
	}
	return redisScoped{r: r, inner: svc}, nil
}

// Flush deletes every cached descriptor in Redis.
func (r *Redis) Flush(ctx context.Context) error { return FlushRedis(ctx, r.client) }

type redisScoped struct {
	r     *Redis
	inner distribution.BlobDescriptorService
}

func (s redisScoped) Stat(ctx context.Context, dgst digest.Digest) (v1.Descriptor, error) {
	if !s.r.up.Load() {
		return v1.Descriptor{}, distribution.ErrBlobUnknown
	}
	return s.r.stat(s.inner.Stat(ctx, dgst))
}

func (s redisScoped) Clear(ctx context.Context, dgst digest.Digest) error {
	if !s.r.up.Load() {
		return nil
	}
	s.r.fail(s.inner.Clear(ctx, dgst))
	return nil
}

func (s redisScoped) SetDescriptor(ctx context.Context, dgst digest.Digest, desc v1.Descriptor) error {
	if !s.r.up.Load() {
		return nil
	}
	s.r.fail(s.inner.SetDescriptor(ctx, dgst, desc))
	return nil
}

// FlushRedis deletes the blob-descriptor keys Distribution's Redis cache
// writes (`blobs::*`, `repository::*`) and nothing else, so a Redis shared
// with berth's maintenance lease keeps the lease.
func FlushRedis(ctx context.Context, c redis.UniversalClient) error {
	flush := func(ctx context.Context, c *redis.Client) error {
		for _, pattern := range []string{"blobs::*", "repository::*"} {
			iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
			batch := make([]string, 0, 500)
			for iter.Next(ctx) {
				batch = append(batch, iter.Val())
				if len(batch) == cap(batch) {
					if err := c.Unlink(ctx, batch...).Err(); err != nil {
						return err
					}
					batch = batch[:0]
				}
			}
			if err := iter.Err(); err != nil {
				return err
			}
			if len(batch) > 0 {
				if err := c.Unlink(ctx, batch...).Err(); err != nil {
					return err
				}
			}
		}
		return nil
	}
	var err error
	switch cl := c.(type) {
	case *redis.ClusterClient:
		err = cl.ForEachMaster(ctx, flush)
	case *redis.Client:
		err = flush(ctx, cl)
	default:
		return fmt.Errorf("flush redis cache: unsupported client %T", c)
	}
	if err != nil {
		return fmt.Errorf("flush redis cache: %w", err)
	}
	return nil
}

// Gated stops filling the cache while paused() is true. During gc's sweep a
// pull could otherwise cache a blob that is about to be deleted, after the
// flush gc relies on; reads still use what is cached.
func Gated(p cache.BlobDescriptorCacheProvider, paused func() bool) cache.BlobDescriptorCacheProvider {
	if p == nil {
		return nil
	}
	return gated{BlobDescriptorCacheProvider: p, paused: paused}
}

type gated struct {
	cache.BlobDescriptorCacheProvider
	paused func() bool
}

func (g gated) SetDescriptor(ctx context.Context, dgst digest.Digest, desc v1.Descriptor) error {
	if g.paused() {
		return nil
	}
	return g.BlobDescriptorCacheProvider.SetDescriptor(ctx, dgst, desc)
}

func (g gated) RepositoryScoped(repo string) (distribution.BlobDescriptorService, error) {
	svc, err := g.BlobDescriptorCacheProvider.RepositoryScoped(repo)
	if err != nil {
		return nil, err
	}
	return gatedScoped{BlobDescriptorService: svc, paused: g.paused}, nil
}

type gatedScoped struct {
	distribution.BlobDescriptorService
	paused func() bool
}

func (g gatedScoped) SetDescriptor(ctx context.Context, dgst digest.Digest, desc v1.Descriptor) error {
	if g.paused() {
		return nil
	}
	return g.BlobDescriptorService.SetDescriptor(ctx, dgst, desc)
}
