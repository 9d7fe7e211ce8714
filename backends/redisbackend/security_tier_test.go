package redisbackend_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
)

// TestPrefixIsolationThroughTiers: two processes (Backends) share one
// Redis and its tier channel; a manager in each, with in-process tiers,
// different prefixes (one a prefix of the other), and the same function,
// key and tag. Everything the first does — fills, invalidations, Delete,
// Clear, each acknowledged by every tier before it returns — leaves the
// second serving its value from its tier, without recomputing.
func TestPrefixIsolationThroughTiers(t *testing.T) {
	mr := miniredis.RunT(t)
	open := func(prefix string) *depcache.Manager {
		c := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
		b := redisbackend.New(c, redisbackend.WithTierLease(time.Second))
		m := depcache.New(b, depcache.WithPrefix(prefix), depcache.WithLocalCache(100), depcache.WithStrictErrors(),
			depcache.WithTimeout(5*time.Second))
		t.Cleanup(func() { m.Close(); b.Close(); c.Close() })
		return m
	}
	mA, mB := open("app"), open("app2")
	var callsA, callsB atomic.Int64
	fn := func(calls *atomic.Int64, v string) func(context.Context, int) (string, error) {
		return func(ctx context.Context, id int) (string, error) {
			calls.Add(1)
			depcache.AddDependency(ctx, "t")
			return v, nil
		}
	}
	getA := depcache.Memoize(fn(&callsA, "A"), depcache.Using(mA), depcache.KeyName("f"))
	getB := depcache.Memoize(fn(&callsB, "B"), depcache.Using(mB), depcache.KeyName("f"))
	ctx := t.Context()

	// B's value, until its tier serves it (the tier's lease starts a lease
	// after its first registration).
	deadline := time.Now().Add(10 * time.Second)
	for mB.Stats().LocalHits == 0 {
		if v, err := getB(ctx, 1); err != nil || v != "B" {
			t.Fatalf("getB = %q, %v", v, err)
		}
		if time.Now().After(deadline) {
			t.Fatal("B's tier never served")
		}
	}
	hits, calls := mB.Stats().LocalHits, callsB.Load()

	if v, err := getA(ctx, 1); err != nil || v != "A" {
		t.Fatalf("getA = %q, %v", v, err)
	}
	if _, err := mA.InvalidateDependency(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	if err := mA.Set(ctx, "k", "A", 0, "t"); err != nil {
		t.Fatal(err)
	}
	if _, err := mA.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := mA.Clear(ctx); err != nil {
		t.Fatal(err)
	}

	if v, err := getB(ctx, 1); err != nil || v != "B" {
		t.Fatalf("getB after A's operations = %q, %v", v, err)
	}
	if got := callsB.Load(); got != calls {
		t.Errorf("B recomputed after A's operations (%d calls, %d before)", got, calls)
	}
	if got := mB.Stats().LocalHits; got != hits+1 {
		t.Errorf("B's tier hits went from %d to %d after A's operations and one call; want %d: A's changes dropped B's value", hits, got, hits+1)
	}
}
