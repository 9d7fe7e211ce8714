package memory

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends"
)

// TestStampsPruned: 5,000 tags invalidated once and never filled again
// leave no stamp (and no tag state) once older than the longest fill, after
// ordinary traffic and no call from the user; a younger stamp stays and
// still refuses a fill that started before it.
func TestStampsPruned(t *testing.T) {
	clock := newFakeClock()
	b := New(WithClock(clock.Now))
	defer b.Close()
	ctx := context.Background()
	const ns, n = "ns", 5000
	for i := range n {
		if _, err := b.Invalidate(ctx, ns, fmt.Sprint("old", i)); err != nil {
			t.Fatal(err)
		}
	}
	tags := func() int {
		b.mu.RLock()
		defer b.mu.RUnlock()
		if sp := b.spaces[ns]; sp != nil {
			return len(sp.tags)
		}
		return 0
	}
	if got := tags(); got != n {
		t.Fatalf("%d tags kept, want %d", got, n)
	}
	clock.Advance(DefaultMaxFillAge + time.Second)
	before, _ := b.Epoch(ctx)
	if _, err := b.Invalidate(ctx, ns, "fresh"); err != nil {
		t.Fatal(err)
	}
	l, _ := b.Lookup(ctx, ns, "k")
	err := b.Fill(ctx, ns, backends.Fill{Key: "k", Entry: backends.Entry{Value: []byte("v"), Deps: []string{"hot"}}, Since: l.Epoch})
	if err != nil {
		t.Fatal(err)
	}
	if got := tags(); got != 2 {
		t.Errorf("%d tags kept after traffic, want 2 (the fresh stamp, the registration)", got)
	}
	b.mu.RLock()
	queued := len(b.stamps) - b.stampsAt
	b.mu.RUnlock()
	if queued != 1 {
		t.Errorf("%d stamps queued for pruning, want 1", queued)
	}
	err = b.Fill(ctx, ns, backends.Fill{Key: "late", Entry: backends.Entry{Value: []byte("v"), Deps: []string{"fresh"}}, Since: before})
	if !errors.Is(err, backends.ErrStale) {
		t.Errorf("Fill under the fresh stamp with an older Since = %v, want ErrStale", err)
	}
}
