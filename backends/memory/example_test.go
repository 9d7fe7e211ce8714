package memory_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
)

// A miss hands out the epoch that the fill presents back; an invalidation
// between the two makes the store refuse the fill, since the value may have
// been computed from data the invalidated write replaced.
func Example() {
	ctx := context.Background()
	b := memory.New()
	defer b.Close()

	l, _ := b.Lookup(ctx, "cache:users", "user:42")
	fmt.Println("found:", l.Found)

	// Compute the value (read users row 42), then fill it under its tag.
	fill := backends.Fill{
		Key:   "user:42",
		Entry: backends.Entry{Value: []byte(`{"name":"Ada"}`), Deps: []string{"users::42"}, Since: l.Epoch},
		Since: l.Epoch,
	}
	if err := b.Fill(ctx, "cache:users", fill); err != nil {
		fmt.Println("fill:", err)
	}
	l2, _ := b.Lookup(ctx, "cache:users", "user:42")
	fmt.Printf("found: %v %s %q\n", l2.Found, l2.Entry.Value, l2.Entry.Deps)

	// A write to row 42 commits and invalidates its tag.
	n, _ := b.Invalidate(ctx, "cache:users", "users::42")
	fmt.Println("invalidated:", n)

	// A computation that started before the invalidation cannot store.
	err := b.Fill(ctx, "cache:users", fill)
	fmt.Println("stale:", errors.Is(err, backends.ErrStale))

	// Output:
	// found: false
	// found: true {"name":"Ada"} ["users::42"]
	// invalidated: 1
	// stale: true
}
