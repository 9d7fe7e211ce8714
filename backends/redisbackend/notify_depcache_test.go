package redisbackend_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
)

// TestTierRecreatedOnABackendStaysCoherent: managers share one Backend (as
// README allows); the one with a tier closes and another with a tier takes
// its place at once, while a third without a tier writes. Every Set that
// returned is seen by the new tier: a Set right after the first tier left
// reached only the Backend's own subscription, and was once remembered as
// "no tier" though the new tier served on the notifier's lease at once.
func TestTierRecreatedOnABackendStaysCoherent(t *testing.T) {
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	// A long lease: the window is from the first tier's leaving to the
	// heartbeat's next tick, lease/4 at most.
	b := redisbackend.New(c, redisbackend.WithTierLease(time.Second), redisbackend.WithLogger(quiet))
	t.Cleanup(func() { b.Close() })
	opts := []depcache.Option{depcache.WithPrefix("p"), depcache.WithLogger(quiet), depcache.WithStrictErrors()}
	tierOpts := append(opts[:len(opts):len(opts)], depcache.WithLocalCache(100))
	writer := depcache.New(b, opts...)
	t.Cleanup(func() { writer.Close() })
	ctx := context.Background()
	for attempt := range 10 {
		first := depcache.New(b, tierOpts...)
		for deadline := time.Now().Add(10 * time.Second); !first.LocalCacheServing(); time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the first tier never served")
			}
		}
		first.Close()
		if err := writer.Set(ctx, "k", 2*attempt+1, time.Hour); err != nil {
			t.Fatal(err)
		}
		second := depcache.New(b, tierOpts...)
		if !second.LocalCacheServing() {
			// The heartbeat unregistered in between: the new tier waits
			// a lease and resets before it serves. Again.
			second.Close()
			continue
		}
		var v int
		if found, err := second.Get(ctx, "k", &v); !found || err != nil || v != 2*attempt+1 {
			t.Fatalf("Get: %v %v %d, want %d", found, err, v, 2*attempt+1)
		}
		if err := writer.Set(ctx, "k", 2*attempt+2, time.Hour); err != nil {
			t.Fatal(err)
		}
		if found, err := second.Get(ctx, "k", &v); !found || err != nil || v != 2*attempt+2 {
			t.Fatalf("Get after a Set returned: %v %v %d, want %d (the tier served what the Set replaced)", found, err, v, 2*attempt+2)
		}
		second.Close()
		return
	}
	t.Fatal("the heartbeat unregistered between the first tier's leaving and the second's arrival in every attempt")
}
