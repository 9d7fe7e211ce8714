package soak_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/depcache/go-depcache/internal/redistest"
	"github.com/depcache/go-depcache/internal/soak"
	"github.com/depcache/go-depcache/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// After a load of fills, hits, invalidations and TTL churn stops, the
// entries expire and the tag metadata is pruned back to a handful of keys,
// Redis memory returns near its baseline and the goroutines to theirs. A
// redis-server of the test's own; 2 s of load in a quick run, 20 s in a
// long one.
func TestSoakReturnsToBaseline(t *testing.T) {
	load := 2 * time.Second
	if testenv.Long() {
		load = 20 * time.Second
	}
	addr := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer c.Close()
	r, err := soak.Run(context.Background(), c, soak.Config{Load: load, Settle: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("calls=%d hits=%d invalidated=%d errors=%d settled in %v", r.Calls, r.Hits, r.Invalidations, r.Errors, r.Settled.Round(time.Millisecond))
	t.Logf("before: %v", r.Before)
	t.Logf("peak:   %v", r.Peak)
	t.Logf("after:  %v", r.After)
	if r.Calls == 0 || r.Hits == 0 || r.Invalidations == 0 {
		t.Fatalf("the load did not exercise fills, hits and invalidations: %+v", r)
	}
	if r.Peak.TagHashes < 100 {
		t.Errorf("peak of %d tag hashes: the load left too little metadata to judge", r.Peak.TagHashes)
	}
	if r.After.Entries > 2 || r.After.TagHashes > 2 || r.After.IndexSize > 2 {
		t.Errorf("metadata did not return to baseline: %v", r.After)
	}
	if r.After.Goroutines > r.Before.Goroutines+3 {
		t.Errorf("goroutines %d after, %d before", r.After.Goroutines, r.Before.Goroutines)
	}
	// Memory: back within 1 MiB of the baseline (allocator slack), far
	// below the peak.
	if grew := r.After.UsedMemory - r.Before.UsedMemory; grew > 1<<20 {
		t.Errorf("used_memory %d bytes above baseline after settling (peak %d above)", grew, r.Peak.UsedMemory-r.Before.UsedMemory)
	}
}
