package redisbackend_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/redisbackend"
)

// The fill protocol on an embedded Redis: a miss returns the epoch, the
// fill presents it back, and a fill whose computation started before an
// invalidation of one of its tags is refused.
func Example() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer client.Close()

	// miniredis refuses CONFIG GET: the backend assumes noeviction (and
	// would log so).
	b := redisbackend.New(client, redisbackend.WithLogger(slog.New(slog.DiscardHandler)))
	defer b.Close()
	ctx := context.Background()
	const ns = "cache:users"

	miss, _ := b.Lookup(ctx, ns, "user:42")
	fmt.Println("found:", miss.Found)

	// ... compute the value from the database, then store it.
	err := b.Fill(ctx, ns, backends.Fill{
		Key:   "user:42",
		Entry: backends.Entry{Value: []byte(`{"name":"Ada"}`), Deps: []string{"users::42"}},
		TTL:   time.Hour,
		Since: miss.Epoch,
	})
	fmt.Println("fill:", err)

	hit, _ := b.Lookup(ctx, ns, "user:42")
	fmt.Println("hit:", string(hit.Entry.Value), hit.Entry.Deps)

	// A write to users 42 commits; its invalidation removes the entry.
	n, _ := b.Invalidate(ctx, ns, "users::42")
	fmt.Println("invalidated:", n)

	// A computation that started before that write cannot store its result.
	err = b.Fill(ctx, ns, backends.Fill{
		Key:   "user:42",
		Entry: backends.Entry{Value: []byte(`{"name":"old"}`), Deps: []string{"users::42"}},
		Since: miss.Epoch,
	})
	fmt.Println("stale fill refused:", errors.Is(err, backends.ErrStale))
	// Output:
	// found: false
	// fill: <nil>
	// hit: {"name":"Ada"} [users::42]
	// invalidated: 1
	// stale fill refused: true
}
