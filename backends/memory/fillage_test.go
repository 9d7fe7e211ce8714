package memory

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends"
)

// TestFillQueuedPastMaxAgeRefused: a fill whose computation was quick
// (Age well inside the bound) but which then waited for the store's lock
// until the stamp that condemns it was older than the longest allowed fill
// is refused. The store itself must count the wait: the stamp is pruned by
// the first call that takes the lock after it is due, possibly this very
// fill, so a check that trusts Age alone finds nothing to refuse it.
func TestFillQueuedPastMaxAgeRefused(t *testing.T) {
	clock := newFakeClock()
	const maxAge = time.Minute
	b := New(WithClock(clock.Now), WithMaxFillAge(maxAge))
	defer b.Close()
	ctx := context.Background()

	l, err := b.Lookup(ctx, "ns", "k")
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if _, err := b.Invalidate(ctx, "ns", "t"); err != nil { // written after Since: refuses the fill
		t.Fatal(err)
	}
	// The fill is sent 2s after Since and waits for the lock until the
	// stamp is older than the bound.
	b.fillQueued = func() { clock.Advance(maxAge + time.Second) }
	err = b.Fill(ctx, "ns", backends.Fill{
		Key:   "k",
		Entry: backends.Entry{Value: []byte("before the write"), Deps: []string{"t"}, Since: l.Epoch},
		Since: l.Epoch,
		Age:   2 * time.Second,
	})
	if !errors.Is(err, backends.ErrStale) {
		t.Fatalf("Fill that waited past the bound = %v, want ErrStale", err)
	}
	b.fillQueued = nil
	if got, _ := b.Lookup(ctx, "ns", "k"); got.Found {
		t.Fatalf("the condemned value was stored: %q", got.Entry.Value)
	}
}
