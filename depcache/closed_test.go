package depcache_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
)

// A closed manager fills nothing and reads nothing: memoized calls run
// the function (logged once), and its methods return ErrClosed.
func TestClosedManagerNeitherReadsNorFills(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	t.Cleanup(func() { store.Close() })
	logs := &records{}
	m := depcache.New(store, depcache.WithName("m"), depcache.WithLogger(slog.New(logs)))
	// A second manager on the same prefix sees what m stores.
	peer := depcache.New(store, depcache.WithName("m"), depcache.WithLogger(quiet))
	t.Cleanup(func() { peer.Close() })

	var calls counter
	f := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
		calls.n.Add(1)
		depcache.AddDependency(ctx, "t")
		return x, nil
	}, depcache.Using(m), depcache.KeyName("f"))
	fetch := func(ctx context.Context) (int, error) {
		return depcache.Fetch(ctx, m, "fetched", func(context.Context) (int, error) {
			calls.n.Add(1)
			return 7, nil
		})
	}
	f(ctx, 1) // stored before Close
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if v, err := f(ctx, 1); v != 1 || err != nil {
			t.Fatalf("f(1) = %d, %v", v, err)
		}
		if v, err := f(ctx, 2); v != 2 || err != nil {
			t.Fatalf("f(2) = %d, %v", v, err)
		}
		if v, err := fetch(ctx); v != 7 || err != nil {
			t.Fatalf("Fetch = %d, %v", v, err)
		}
	}
	if calls.calls() != 1+9 {
		t.Fatalf("the functions ran %d times; want 10: a closed manager served hits", calls.calls())
	}
	if ok, _ := peer.Exists(ctx, "fetched"); ok {
		t.Fatal("a closed manager filled an entry")
	}
	if s := m.Stats(); s.Hits != 0 || s.Sets != 1 {
		t.Fatalf("after Close: %d hits, %d sets; want 0 and the 1 set before", s.Hits, s.Sets)
	}
	if n := logs.count("closed manager"); n != 1 {
		t.Fatalf("logged %d times; want once", n)
	}

	var v int
	calls2 := []struct {
		name string
		err  error
	}{
		{"Get", second(m.Get(ctx, "k", &v))},
		{"Set", m.Set(ctx, "k", 1, 0, "t")},
		{"Delete", second(m.Delete(ctx, "k"))},
		{"Exists", second(m.Exists(ctx, "k"))},
		{"TTL", second(m.TTL(ctx, "k"))},
		{"InvalidateDependency", second(m.InvalidateDependency(ctx, "t"))},
		{"Clear", second(m.Clear(ctx))},
	}
	for _, c := range calls2 {
		if !errors.Is(c.err, depcache.ErrClosed) {
			t.Errorf("%s on a closed manager: %v; want ErrClosed", c.name, c.err)
		}
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func second[T any](_ T, err error) error { return err }

// A computation running when its manager closes does not fill.
func TestManagerClosedDuringAComputationDoesNotFill(t *testing.T) {
	ctx := context.Background()
	m, store := newManager(t)
	peer := depcache.New(store, depcache.WithName(m.Name()), depcache.WithLogger(quiet))
	t.Cleanup(func() { peer.Close() })
	key := ""
	f := depcache.Memoize0(func(ctx context.Context) (int, error) {
		depcache.AddDependency(ctx, "t")
		key = depcache.CurrentKey(ctx)
		m.Close()
		return 1, nil
	}, depcache.Using(m), depcache.KeyName("f"))
	f(ctx)
	if ok, err := peer.Exists(ctx, key); ok || err != nil {
		t.Fatalf("Exists(%q) = %v, %v: a manager closed during the computation filled", key, ok, err)
	}
}

// The registry never hands out a closed manager.
func TestRegistryForgetsAClosedManager(t *testing.T) {
	reg := depcache.NewRegistry()
	t.Cleanup(func() { reg.Close() })
	store := memory.New()
	t.Cleanup(func() { store.Close() })
	m, err := reg.GetOrCreate("x", depcache.WithBackend(store), depcache.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if got, ok := reg.Lookup("x"); ok {
		t.Fatalf("Lookup after Close = %p", got)
	}
	m2, err := reg.GetOrCreate("x", depcache.WithBackend(store), depcache.WithLogger(quiet))
	if err != nil || m2 == m {
		t.Fatalf("GetOrCreate after Close = %p, %v; want a new manager", m2, err)
	}
	if _, err := m2.Exists(context.Background(), "k"); err != nil {
		t.Fatalf("new manager: %v", err)
	}
}
