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

// lockedSingle is the topology of one Redis with WithFillLock: single,
// except that a miss takes a fill lease on the entry key in the lookup's
// script, and that entry keys may therefore hold leases, which TTL, Delete,
// Clear and invalidations must not count as entries (single.leases). The
// fill itself is single's: its script overwrites the lease, and an
// invalidation that ran in between refuses it by its stamp.
type lockedSingle struct {
	single
}

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

// lookup reads the entry and the epoch and, on a miss, takes the lease, in
// one script.
func (s *lockedSingle) lookup(ctx context.Context, srv *server, ns, key string) (backends.Lookup, error) {
	ek := entryKey(ns, key)
	token := newLeaseToken()
	res, err := lockedLookupScript.Run(ctx, s.client, []string{ek, s.cfg.epochKey}, token, s.cfg.leaseMS(), leasePrefix).Slice()
	if err == nil && len(res) != 3 {
		err = fmt.Errorf("reply of %d values", len(res))
	}
	if err != nil {
		return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: %w", key, err)
	}
	var l backends.Lookup
	switch code, _ := res[2].(int64); code {
	case 0:
		v, _ := res[0].(string)
		if l, err = s.decode(ctx, key, ek, v, nil); err != nil || l.Found {
			return l, err
		}
	case 1:
		l.Busy = true
	case 2:
		l.Lease = token
	}
	v, found := res[1].(string)
	if l.Epoch, err = ensureEpoch(ctx, s.client, srv, s.cfg.epochKey, v, found); err != nil {
		return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: epoch: %w", key, err)
	}
	return l, nil
}

// entryTTL is PTTL of the entry, -2 for a lease.
func (s *lockedSingle) entryTTL(ctx context.Context, _ *server, ek string) (int64, error) {
	return entryTTLScript.Run(ctx, s.client, []string{ek}, leasePrefix).Int64()
}
