package stalecheck_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/internal/redistest"
	"github.com/depcache/go-depcache/internal/stalecheck"
)

// TestNoStaleReadsUnderEviction runs the harness on a Redis of its own with
// a small maxmemory while noise keys force evictions. Under volatile-lru the
// backend keeps tag registrations and stamps without a TTL, so only entries
// (and noise) are evicted: no stale read. Under allkeys-lru metadata could be
// evicted, so the backend refuses to cache: no stale read either, and no hit.
func TestNoStaleReadsUnderEviction(t *testing.T) {
	for _, policy := range []string{"volatile-lru", "allkeys-lru"} {
		t.Run(policy, func(t *testing.T) {
			addr := redistest.Start(t, "--maxmemory", "3mb", "--maxmemory-policy", policy)
			c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
			defer c.Close()
			ctx, stop := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // noise that keeps memory full
				defer wg.Done()
				blob := strings.Repeat("x", 2048)
				for i := 0; ctx.Err() == nil; i++ {
					c.Set(ctx, fmt.Sprint("noise:", i), blob, 0x7fffffff*1e9)
				}
			}()
			// Memory full before the run starts, so that it evicts
			// throughout: a run whose reads fail fast (allkeys-*: no read
			// is sent) can otherwise end before the noise fills it.
			for deadline := time.Now().Add(30 * time.Second); evicted(c) == 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the noise evicted nothing in 30 s")
				}
			}
			path := filepath.Join(t.TempDir(), "hot.db")
			rep, err := stalecheck.Run(context.Background(), stalecheck.Config{
				DB: openSQLite(t, path), Backend: redisbackend.New(c, redisbackend.WithLogger(quietLog)),
				Mode: stalecheck.Guarded, Reads: reads(t, 5_000, 20_000),
			})
			stop()
			wg.Wait()
			if err != nil {
				t.Fatal(err)
			}
			t.Log(rep)
			info := c.Info(context.Background(), "stats").Val()
			if !strings.Contains(info, "evicted_keys:") || strings.Contains(info, "evicted_keys:0\r") {
				t.Fatalf("the run evicted nothing; the test proves nothing:\n%s", info)
			}
			if rep.Stale != 0 || rep.Diverged != 0 || rep.PoisonRead != 0 {
				t.Fatalf("violations under %s: %v", policy, rep)
			}
			if policy == "allkeys-lru" && rep.Hits != 0 {
				t.Fatalf("under allkeys-lru the backend must not serve hits: %v", rep)
			}
			if policy == "volatile-lru" && rep.Hits == 0 {
				t.Fatalf("under volatile-lru the cache must still work: %v", rep)
			}
		})
	}
}

// evicted returns the server's evicted_keys.
func evicted(c *redis.Client) int {
	info := c.Info(context.Background(), "stats").Val()
	i := strings.Index(info, "evicted_keys:")
	if i < 0 {
		return 0
	}
	var n int
	fmt.Sscanf(info[i+len("evicted_keys:"):], "%d", &n)
	return n
}
