package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrMiss is a key that is not in a cache written here.
var ErrMiss = errors.New("bench: cache miss")

// Naive is a dependency cache laid out the way simple-dep-cache lays out its
// Redis: the value under its key, and per dependency a set of the keys that
// depend on it. A fill is SETEX, then SADD and EXPIRE per dependency, each a
// round trip of its own; an invalidation is SMEMBERS, then one DEL of the
// members and the set. It has none of depcache's guards (a fill racing an
// invalidation leaves a stale entry), which is what it is here to price.
type Naive struct {
	C      redis.Cmdable
	Prefix string
}

func (n *Naive) key(k string) string    { return n.Prefix + ":v:" + k }
func (n *Naive) dep(d string) string    { return n.Prefix + ":d:" + d }
func (n *Naive) DepKey(d string) string { return n.dep(d) }

// Get returns the stored bytes, or ErrMiss.
func (n *Naive) Get(ctx context.Context, k string) ([]byte, error) {
	b, err := n.C.Get(ctx, n.key(k)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrMiss
	}
	return b, err
}

// Set stores v under k for ttl and registers k under each dependency.
func (n *Naive) Set(ctx context.Context, k string, v []byte, ttl time.Duration, deps ...string) error {
	if err := n.C.SetEx(ctx, n.key(k), v, ttl).Err(); err != nil {
		return fmt.Errorf("naive set %s: %w", k, err)
	}
	for _, d := range deps {
		if err := n.C.SAdd(ctx, n.dep(d), n.key(k)).Err(); err != nil {
			return fmt.Errorf("naive register %s: %w", d, err)
		}
		if err := n.C.Expire(ctx, n.dep(d), ttl).Err(); err != nil {
			return fmt.Errorf("naive expire %s: %w", d, err)
		}
	}
	return nil
}

// Invalidate deletes every key registered under dep, and the set itself.
func (n *Naive) Invalidate(ctx context.Context, dep string) (int, error) {
	members, err := n.C.SMembers(ctx, n.dep(dep)).Result()
	if err != nil {
		return 0, fmt.Errorf("naive members of %s: %w", dep, err)
	}
	if len(members) == 0 {
		return 0, nil
	}
	deleted, err := n.C.Del(ctx, append(members, n.dep(dep))...).Result()
	if err != nil {
		return 0, fmt.Errorf("naive delete %s: %w", dep, err)
	}
	return int(deleted) - 1, nil
}

// FillPipelined writes count entries k0…k(count-1) under dep in the same
// layout as Set, pipelined in chunks, so that a large tag can be prepared in
// seconds rather than minutes.
func (n *Naive) FillPipelined(ctx context.Context, c redis.Pipeliner, dep string, count int, v []byte, ttl time.Duration) error {
	return FillLayout(ctx, c, count, func(p redis.Pipeliner, i int) {
		k := n.key(fmt.Sprint("k", i))
		p.SetEx(ctx, k, v, ttl)
		p.SAdd(ctx, n.dep(dep), k)
	})
}

// FillLayout runs add for 0…count-1 in pipelines of 1,000.
func FillLayout(ctx context.Context, newPipe redis.Pipeliner, count int, add func(p redis.Pipeliner, i int)) error {
	const chunk = 1000
	for start := 0; start < count; start += chunk {
		for i := start; i < min(start+chunk, count); i++ {
			add(newPipe, i)
		}
		if _, err := newPipe.Exec(ctx); err != nil {
			return fmt.Errorf("fill pipeline: %w", err)
		}
	}
	return nil
}
