package redisbackend

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
)

// WithFillLock makes a single Redis take a fill lease at every miss, as
// Redis Cluster always does: of the processes sharing the Redis, one fills
// a key at a time, and the others see Lookup.Busy — they compute without
// filling, or wait for the value with depcache.WithFillWait. The lookup
// becomes one script instead of an MGET (still one round trip). Turn it on
// in every process that shares the Redis. On Cluster it changes nothing.
func WithFillLock() Option { return func(c *config) { c.fillLock = true } }

// lockedLookupScript reads the entry and the epoch, and on a miss takes the
// lease: reply {value or false, epoch or false, code}, code 0 for a value,
// 1 for another caller's lease (busy), 2 for a lease taken.
var lockedLookupScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
local e = redis.call('GET', KEYS[2])
if v then
  if string.sub(v, 1, #ARGV[3]) == ARGV[3] then return {false, e, 1} end
  return {v, e, 0}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {false, e, 2}
`)

// releaseScript deletes a key only while it holds the given lease.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// entryTTLScript is PTTL for value entries only: a lease is no entry.
var entryTTLScript = redis.NewScript(`
local v = redis.call('GETRANGE', KEYS[1], 0, #ARGV[1] - 1)
if v == '' or v == ARGV[1] then return -2 end
return redis.call('PTTL', KEYS[1])
`)

// unlinkEntriesScript unlinks keys and counts the entries among them, not
// the leases.
var unlinkEntriesScript = redis.NewScript(`
local n = 0
for i = 1, #KEYS do
  local head = redis.call('GETRANGE', KEYS[i], 0, #ARGV[1] - 1)
  if head ~= '' and head ~= ARGV[1] then n = n + 1 end
  redis.call('UNLINK', KEYS[i])
end
return n
`)

func (b *Backend) lockedLookup(ctx context.Context, st *state, ns, key string) (backends.Lookup, error) {
	ek := entryKey(ns, key)
	token := newLeaseToken()
	res, err := lockedLookupScript.Run(ctx, b.c, []string{ek, b.cfg.epochKey}, token, b.leaseMS(), leasePrefix).Slice()
	if err == nil && len(res) != 3 {
		err = fmt.Errorf("reply of %d values", len(res))
	}
	if err != nil {
		return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: %w", key, err)
	}
	var l backends.Lookup
	switch code, _ := res[2].(int64); code {
	case 0:
		s, _ := res[0].(string)
		e, derr := backends.DecodeEntry([]byte(s))
		if derr == nil {
			return backends.Lookup{Found: true, Entry: e}, nil
		}
		b.log.Warn("redisbackend: corrupt entry deleted", "key", ek, "err", derr)
		if err := b.c.Unlink(ctx, ek).Err(); err != nil {
			return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: delete corrupt entry: %w", key, err)
		}
		l.Corrupt = true
	case 1:
		l.Busy = true
	case 2:
		l.Lease = token
	}
	v, found := res[1].(string)
	if l.Epoch, err = b.epoch(ctx, st, v, found); err != nil {
		return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: epoch: %w", key, err)
	}
	return l, nil
}

// unlinkEntries unlinks keys and returns how many were entries: with
// WithFillLock some may hold leases.
func (b *Backend) unlinkEntries(ctx context.Context, keys []string) (int, error) {
	if !b.cfg.fillLock {
		n, err := b.c.Unlink(ctx, keys...).Result()
		return int(n), err
	}
	n, err := unlinkEntriesScript.Run(ctx, b.c, keys, leasePrefix).Int64()
	return int(n), err
}

// leaseFlag tells the invalidation scripts whether entry keys may hold
// leases, so that they count entries, not leases, only where it costs a
// read per key to tell them apart.
func (b *Backend) leaseFlag() string {
	if b.cfg.fillLock {
		return "1"
	}
	return "0"
}
