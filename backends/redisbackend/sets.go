package redisbackend

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
)

// Sets (backends.Sets): one Redis set per name, "<ns>:m:{<name>}", in one
// slot. Clear and pruning scan entry and tag keys only, so sets survive
// them; under a policy that may evict metadata the calls fail with
// ErrUnsafePolicy, as Lookup and Fill do. Both calls are scripts, so that
// a cluster client routing reads to replicas still asks the master.

var _ backends.Sets = (*Backend)(nil)

func setKey(ns, name string) string { return ns + ":m:{" + name + "}" }

var (
	addMemberScript = redis.NewScript(`
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 2`)
	membersScript = redis.NewScript(`return redis.call('SMEMBERS', KEYS[1])`)
)

// AddMember implements backends.Sets. Where the server has replicas, a
// member it adds is acknowledged by one (WAIT) before AddMember returns.
func (b *Backend) AddMember(ctx context.Context, ns, name, member string, limit int) (bool, error) {
	if name == "" || limit < 1 {
		return false, fmt.Errorf("redisbackend: set %q limit %d: %w", name, limit, backends.ErrBadSet)
	}
	srv, err := b.usable(ctx)
	if err != nil {
		return false, fmt.Errorf("redisbackend: add to set %q: %w", name, err)
	}
	key := setKey(ns, name)
	if srv.replicas == 0 && !srv.lateReplica.Load() {
		n, err := addMemberScript.Run(ctx, b.c, []string{key}, member, limit).Int()
		if err != nil {
			return false, fmt.Errorf("redisbackend: add to set %q: %w", name, err)
		}
		return n > 0, nil
	}
	// WAIT covers the writes of its own connection: pipeline it after the
	// script, on the connection of the key's master.
	var c redis.Cmdable = b.c
	if cc, ok := b.c.(*redis.ClusterClient); ok {
		m, err := cc.MasterForKey(ctx, key)
		if err != nil {
			return false, fmt.Errorf("redisbackend: add to set %q: %w", name, err)
		}
		c = m
	}
	pipe := c.Pipeline()
	add := addMemberScript.Eval(ctx, pipe, []string{key}, member, limit)
	w := pipe.Do(ctx, "WAIT", 1, b.cfg.waitTimeout.Milliseconds())
	_, _ = pipe.Exec(ctx)
	n, err := add.Int()
	if err != nil {
		return false, fmt.Errorf("redisbackend: add to set %q: %w", name, err)
	}
	switch acked, err := w.Int64(); {
	case err != nil:
		return false, fmt.Errorf("redisbackend: add to set %q: %w: WAIT: %w", name, ErrNotReplicated, err)
	case acked < 1:
		return false, fmt.Errorf("redisbackend: add to set %q: %w within %v", name, ErrNotReplicated, b.cfg.waitTimeout)
	}
	return n > 0, nil
}

// Members implements backends.Sets.
func (b *Backend) Members(ctx context.Context, ns, name string) ([]string, error) {
	if name == "" {
		return nil, fmt.Errorf("redisbackend: set %q: %w", name, backends.ErrBadSet)
	}
	if _, err := b.usable(ctx); err != nil {
		return nil, fmt.Errorf("redisbackend: read set %q: %w", name, err)
	}
	ms, err := membersScript.Run(ctx, b.c, []string{setKey(ns, name)}).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("redisbackend: read set %q: %w", name, err)
	}
	return ms, nil
}

// RemoveSet implements backends.Sets.
func (b *Backend) RemoveSet(ctx context.Context, ns, name string) error {
	if _, err := b.connected(ctx); err != nil {
		return fmt.Errorf("redisbackend: remove set %q: %w", name, err)
	}
	if err := b.c.Unlink(ctx, setKey(ns, name)).Err(); err != nil {
		return fmt.Errorf("redisbackend: remove set %q: %w", name, err)
	}
	return nil
}
