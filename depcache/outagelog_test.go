package depcache_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
)

// TestFailedInvalidationsLoggedOncePerOutage: a burst of writes during an
// outage logs one error, not one per write; the first success logs the end
// of the outage with how many failed after the first; the next outage logs
// its own error.
func TestFailedInvalidationsLoggedOncePerOutage(t *testing.T) {
	logs := &records{}
	f := &faulty{Backend: memory.New()}
	// No background retry within the test: it would add failures of its own.
	m := depcache.New(f, depcache.WithLogger(slog.New(logs)), depcache.WithName(t.Name()), depcache.WithRetryBackoff(time.Hour, time.Hour))
	t.Cleanup(func() { m.Close() })
	ctx := context.Background()
	const failed = "depcache: invalidation failed"

	f.invalidations.Store(true)
	for i := range 50 {
		if _, err := m.InvalidateDependency(ctx, "post:"+string(rune('a'+i%26))); err == nil {
			t.Fatal("InvalidateDependency succeeded on a failing backend")
		}
	}
	if n := logs.countLevel(slog.LevelError, failed); n != 1 {
		t.Errorf("%d error lines for 50 failed invalidations in one outage, want 1", n)
	}
	if n := logs.countLevel(slog.LevelDebug, failed); n != 49 {
		t.Errorf("%d debug lines for the 49 failures after the first, want 49", n)
	}
	if got := m.Stats().Errors; got < 50 {
		t.Errorf("Stats().Errors = %d, want every failure counted (50)", got)
	}

	f.invalidations.Store(false)
	if _, err := m.InvalidateDependency(ctx, "post:z"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.InvalidateDependency(ctx, "post:y"); err != nil {
		t.Fatal(err)
	}
	logs.mu.Lock()
	var ends []slog.Record
	for _, rec := range logs.recs {
		if rec.Message == "depcache: invalidations succeed again" {
			ends = append(ends, rec)
		}
	}
	logs.mu.Unlock()
	if len(ends) != 1 {
		t.Fatalf("%d lines for the end of the outage, want 1", len(ends))
	}
	var more int64 = -1
	ends[0].Attrs(func(a slog.Attr) bool {
		if a.Key == "failed_after_the_first" {
			more = a.Value.Int64()
		}
		return true
	})
	if more != 49 {
		t.Errorf("end of outage reports %d failures after the first, want 49", more)
	}

	f.invalidations.Store(true)
	if _, err := m.InvalidateDependency(ctx, "post:x"); err == nil {
		t.Fatal("InvalidateDependency succeeded on a failing backend")
	}
	if n := logs.countLevel(slog.LevelError, failed); n != 2 {
		t.Errorf("%d error lines after a second outage began, want 2", n)
	}
}
