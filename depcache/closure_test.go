package depcache_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/depcache/go-depcache/depcache"
)

// multiplier is a factory: every closure it returns is the same function
// literal, with its own k. noinline keeps one symbol for all of them (an
// inlined factory gives each call site a symbol of its own).
//
//go:noinline
func multiplier(k int) func(context.Context, int) (int, error) {
	return func(_ context.Context, x int) (int, error) { return k * x, nil }
}

//go:noinline
func adder(k int) func(context.Context, int) (int, error) {
	return func(_ context.Context, x int) (int, error) { return k + x, nil }
}

// Two closures of one literal wrapped without KeyName must not share
// entries silently: the second is logged once, naming the symbol and
// KeyName, and runs uncached.
func TestClosuresOfOneLiteralDoNotShareEntries(t *testing.T) {
	ctx := context.Background()
	logs := &records{}
	m, _ := newManager(t, depcache.WithLogger(slog.New(logs)))
	double := depcache.Memoize(multiplier(2), depcache.Using(m))
	triple := depcache.Memoize(multiplier(3), depcache.Using(m))
	for range 3 {
		if v, _ := double(ctx, 10); v != 20 {
			t.Fatalf("double(10) = %d", v)
		}
		if v, _ := triple(ctx, 10); v != 30 {
			t.Fatalf("triple(10) = %d: it shares double's entries", v)
		}
	}
	if s := m.Stats(); s.Hits != 2 {
		t.Fatalf("%d hits; want 2 (double keeps caching)", s.Hits)
	}
	if n := logs.count("KeyName"); n != 1 {
		t.Fatalf("logged %d errors naming KeyName; want 1", n)
	}
	// With KeyName each caches under its own identity.
	quad := depcache.Memoize(multiplier(4), depcache.Using(m), depcache.KeyName("quad"))
	quad(ctx, 10)
	if v, _ := quad(ctx, 10); v != 40 || m.Stats().Hits != 3 {
		t.Fatalf("quad(10) = %d, %d hits", v, m.Stats().Hits)
	}
	// Wrapping the same closure value again shares its entries, as two
	// wrappers of one function do.
	f := adder(5)
	a := depcache.Memoize(f, depcache.Using(m))
	b := depcache.Memoize(f, depcache.Using(m))
	a(ctx, 1)
	if v, _ := b(ctx, 1); v != 6 || m.Stats().Hits != 4 {
		t.Fatalf("b(1) = %d, %d hits; want 6 from a's entry", v, m.Stats().Hits)
	}
}

// A fresh literal per subtest, each under its own manager, keeps caching.
func TestAFreshClosurePerManagerKeepsCaching(t *testing.T) {
	for _, k := range []int{2, 3} {
		t.Run("", func(t *testing.T) {
			ctx := context.Background()
			m, _ := newManager(t)
			var calls counter
			f := depcache.Memoize(func(_ context.Context, x int) (int, error) {
				calls.n.Add(1)
				return k * x, nil
			}, depcache.Using(m))
			f(ctx, 1)
			if v, _ := f(ctx, 1); v != k || calls.calls() != 1 {
				t.Fatalf("f(1) = %d after %d calls; want %d after 1", v, calls.calls(), k)
			}
		})
	}
}
