package bench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-gorm/caches/v4"
	"github.com/redis/go-redis/v9"
)

// GormCacher is a Redis Cacher for go-gorm/caches, written as that project's
// README writes one: GET/SET of the marshalled query under prefix+key, and
// Invalidate (called on every INSERT, UPDATE and DELETE) removes every key
// under the prefix by SCAN and DEL, since the plugin has no tags.
type GormCacher struct {
	C      redis.Cmdable
	Prefix string
	TTL    time.Duration

	Hits, Misses atomic.Int64
}

var _ caches.Cacher = (*GormCacher)(nil)

func (g *GormCacher) Get(ctx context.Context, key string, q *caches.Query[any]) (*caches.Query[any], error) {
	b, err := g.C.Get(ctx, g.Prefix+key).Bytes()
	if errors.Is(err, redis.Nil) {
		g.Misses.Add(1)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := q.Unmarshal(b); err != nil {
		return nil, err
	}
	g.Hits.Add(1)
	return q, nil
}

func (g *GormCacher) Store(ctx context.Context, key string, val *caches.Query[any]) error {
	b, err := val.Marshal()
	if err != nil {
		return err
	}
	return g.C.Set(ctx, g.Prefix+key, b, g.TTL).Err()
}

func (g *GormCacher) Invalidate(ctx context.Context) error {
	var cursor uint64
	for {
		keys, next, err := g.C.Scan(ctx, cursor, g.Prefix+"*", 1000).Result()
		if err != nil {
			return fmt.Errorf("gorm cacher scan: %w", err)
		}
		if len(keys) > 0 {
			if err := g.C.Del(ctx, keys...).Err(); err != nil {
				return fmt.Errorf("gorm cacher delete: %w", err)
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}
