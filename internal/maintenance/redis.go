package maintenance

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a Backend shared by every berth process that uses the same Redis.
//
// Keys (all under the prefix, in one hash slot so scripts work on a cluster):
//
//	<prefix>{maintenance}:lease     "<epoch>|<holder>" with a TTL (PX)
//	<prefix>{maintenance}:epoch     counter, one per lease
//	<prefix>{maintenance}:flushgen  counter, one per gc flush
//	<prefix>{maintenance}:released  epoch of the last lease ended by Release
//	<prefix>{maintenance}:replicas  sorted set: replica id -> heartbeat expiry (Redis ms)
//	<prefix>{maintenance}:acks      hash: replica id -> "<epoch> <flushgen>"
//
// Replica expiry uses the Redis server clock (TIME inside the script), and
// lease expiry is reported as the remaining TTL, so machines never compare
// their wall clocks.
type Redis struct {
	c                                                   redis.UniversalClient
	lease, epoch, flushGen, released, replicas, ackHash string
}

var _ Backend = (*Redis)(nil)

// NewRedis returns a Backend on c with keys under prefix (berth uses "berth:").
func NewRedis(c redis.UniversalClient, prefix string) *Redis {
	k := func(s string) string { return prefix + "{maintenance}:" + s }
	return &Redis{c: c, lease: k("lease"), epoch: k("epoch"), flushGen: k("flushgen"), released: k("released"),
		replicas: k("replicas"), ackHash: k("acks")}
}

// PTTL reports 0 for a key with less than a millisecond left, which still
// exists. Every script treats such a lease as over, as State does, so a lease
// State called expired can never be renewed or block the next Acquire.
//
// Lua returns no array elements after a nil, so absent values come back as
// empty strings.
var stateScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1]) or ''
local ttl = redis.call('PTTL', KEYS[1])
local e = redis.call('GET', KEYS[2]) or '0'
local f = redis.call('GET', KEYS[3]) or '0'
local r = redis.call('GET', KEYS[4]) or '0'
return {v, ttl, e, f, r}
`)

var acquireScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if cur and left > 0 then
  return {0, cur, left, redis.call('GET', KEYS[3]) or '0'}
end
local e = redis.call('INCR', KEYS[2])
local v = e .. '|' .. ARGV[1]
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
return {1, v, tonumber(ARGV[2]), redis.call('GET', KEYS[3]) or '0'}
`)

var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('PTTL', KEYS[1]) > 0 then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('PTTL', KEYS[1]) > 0 then
  redis.call('SET', KEYS[2], ARGV[2])
  return redis.call('DEL', KEYS[1])
end
return 0
`)

var bumpScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('INCR', KEYS[2])
end
return -1
`)

// The sorted set and hash expire a while after the last heartbeat so that a
// registry that is gone leaves nothing behind.
var heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, id in ipairs(dead) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
redis.call('PEXPIRE', KEYS[1], ttl * 10)
redis.call('PEXPIRE', KEYS[2], ttl * 10)
return 1
`)

var deregisterScript = redis.NewScript(`
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
`)

var replicasScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local out = {}
for _, id in ipairs(ids) do
  table.insert(out, id)
  table.insert(out, redis.call('HGET', KEYS[2], id) or '')
end
return out
`)

func leaseValue(holder string, epoch uint64) string {
	return strconv.FormatUint(epoch, 10) + "|" + holder
}

func parseLeaseValue(v string) (holder string, epoch uint64, err error) {
	e, h, ok := strings.Cut(v, "|")
	if !ok {
		return "", 0, fmt.Errorf("malformed lease value %q", v)
	}
	epoch, err = strconv.ParseUint(e, 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("malformed lease epoch in %q: %w", v, err)
	}
	return h, epoch, nil
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	default:
		return fmt.Sprint(x)
	}
}

func toInt64(v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		return x, nil
	case string:
		return strconv.ParseInt(x, 10, 64)
	default:
		return 0, fmt.Errorf("unexpected redis value %T", v)
	}
}

func toUint64(v any) (uint64, error) {
	n, err := toInt64(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("unexpected counter value %v: %w", v, err)
	}
	return uint64(n), nil
}

// State implements Backend.
func (r *Redis) State(ctx context.Context) (State, error) {
	res, err := stateScript.Run(ctx, r.c, []string{r.lease, r.epoch, r.flushGen, r.released}).Slice()
	if err != nil {
		return State{}, fmt.Errorf("read maintenance state from redis: %w", err)
	}
	now := time.Now()
	if len(res) != 5 {
		return State{}, fmt.Errorf("read maintenance state from redis: unexpected reply %v", res)
	}
	var st State
	if st.Epoch, err = toUint64(res[2]); err != nil {
		return State{}, fmt.Errorf("read maintenance epoch: %w", err)
	}
	if st.FlushGen, err = toUint64(res[3]); err != nil {
		return State{}, fmt.Errorf("read maintenance flush generation: %w", err)
	}
	if st.Released, err = toUint64(res[4]); err != nil {
		return State{}, fmt.Errorf("read released maintenance epoch: %w", err)
	}
	v := toString(res[0])
	ttl, err := toInt64(res[1])
	if err != nil {
		return State{}, fmt.Errorf("read maintenance lease ttl: %w", err)
	}
	if v == "" || ttl <= 0 {
		return st, nil
	}
	holder, epoch, err := parseLeaseValue(v)
	if err != nil {
		return State{}, err
	}
	st.Active, st.Holder, st.Epoch = true, holder, epoch
	st.Expires = now.Add(time.Duration(ttl) * time.Millisecond)
	return st, nil
}

// Acquire implements Backend.
func (r *Redis) Acquire(ctx context.Context, holder string, ttl time.Duration) (State, error) {
	if ttl < time.Millisecond {
		return State{}, fmt.Errorf("lease ttl %s too short", ttl)
	}
	res, err := acquireScript.Run(ctx, r.c, []string{r.lease, r.epoch, r.flushGen},
		holder, ttl.Milliseconds()).Slice()
	if err != nil {
		return State{}, fmt.Errorf("acquire maintenance lease in redis: %w", err)
	}
	now := time.Now()
	if len(res) != 4 {
		return State{}, fmt.Errorf("acquire maintenance lease: unexpected reply %v", res)
	}
	ok, _ := toInt64(res[0])
	curHolder, epoch, err := parseLeaseValue(toString(res[1]))
	if err != nil {
		return State{}, err
	}
	pttl, err := toInt64(res[2])
	if err != nil {
		return State{}, fmt.Errorf("acquire maintenance lease: %w", err)
	}
	expires := now.Add(time.Duration(pttl) * time.Millisecond)
	if ok != 1 {
		return State{}, &HeldError{Holder: curHolder, Expires: expires}
	}
	fg, err := toUint64(res[3])
	if err != nil {
		return State{}, fmt.Errorf("acquire maintenance lease: %w", err)
	}
	return State{Active: true, Epoch: epoch, FlushGen: fg, Expires: expires, Holder: holder}, nil
}

// Renew implements Backend.
func (r *Redis) Renew(ctx context.Context, holder string, epoch uint64, ttl time.Duration) error {
	n, err := renewScript.Run(ctx, r.c, []string{r.lease}, leaseValue(holder, epoch), ttl.Milliseconds()).Int64()
	if err != nil {
		return fmt.Errorf("renew maintenance lease in redis: %w", err)
	}
	if n != 1 {
		return ErrLeaseLost
	}
	return nil
}

// Release implements Backend.
func (r *Redis) Release(ctx context.Context, holder string, epoch uint64) error {
	n, err := releaseScript.Run(ctx, r.c, []string{r.lease, r.released}, leaseValue(holder, epoch), epoch).Int64()
	if err != nil {
		return fmt.Errorf("release maintenance lease in redis: %w", err)
	}
	if n != 1 {
		return ErrLeaseLost
	}
	return nil
}

// BumpFlush implements Backend.
func (r *Redis) BumpFlush(ctx context.Context, holder string, epoch uint64) (uint64, error) {
	n, err := bumpScript.Run(ctx, r.c, []string{r.lease, r.flushGen}, leaseValue(holder, epoch)).Int64()
	if err != nil {
		return 0, fmt.Errorf("bump flush generation in redis: %w", err)
	}
	if n < 0 {
		return 0, ErrLeaseLost
	}
	return uint64(n), nil
}

// Heartbeat implements Backend.
func (r *Redis) Heartbeat(ctx context.Context, id string, ack Ack, ttl time.Duration) error {
	if ttl < time.Millisecond {
		return fmt.Errorf("heartbeat ttl %s too short", ttl)
	}
	v := strconv.FormatUint(ack.Epoch, 10) + " " + strconv.FormatUint(ack.FlushGen, 10)
	if err := heartbeatScript.Run(ctx, r.c, []string{r.replicas, r.ackHash}, id, v, ttl.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("replica heartbeat to redis: %w", err)
	}
	return nil
}

// Deregister implements Backend.
func (r *Redis) Deregister(ctx context.Context, id string) error {
	if err := deregisterScript.Run(ctx, r.c, []string{r.replicas, r.ackHash}, id).Err(); err != nil {
		return fmt.Errorf("deregister replica in redis: %w", err)
	}
	return nil
}

// Replicas implements Backend.
func (r *Redis) Replicas(ctx context.Context) ([]ReplicaInfo, error) {
	res, err := replicasScript.Run(ctx, r.c, []string{r.replicas, r.ackHash}).Slice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("list replicas in redis: %w", err)
	}
	out := make([]ReplicaInfo, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		info := ReplicaInfo{ID: toString(res[i])}
		if e, f, ok := strings.Cut(toString(res[i+1]), " "); ok {
			info.Ack.Epoch, _ = strconv.ParseUint(e, 10, 64)
			info.Ack.FlushGen, _ = strconv.ParseUint(f, 10, 64)
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
