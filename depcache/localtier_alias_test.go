package depcache_test

import (
	"context"
	"slices"
	"testing"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
)

// A caller that did not hit the tier (its call computed the value, or read
// it from the backend) owns what it got: changing it must not change what
// the tier serves next, which is the store's value.
func TestLocalCacheMissCallerOwnsItsValue(t *testing.T) {
	b := memory.New()
	t.Cleanup(func() { b.Close() })
	m := depcache.New(b, depcache.WithLogger(quiet), depcache.WithName(t.Name()), depcache.WithPrefix("alias"), depcache.WithLocalCache(100))
	t.Cleanup(func() { m.Close() })
	ctx := context.Background()

	t.Run("memoized fill", func(t *testing.T) {
		buf := []int{3, 1, 2} // the function's own buffer, changed after it returned
		f := depcache.Memoize(func(ctx context.Context, id int) ([]int, error) {
			depcache.AddDependency(ctx, "list")
			return buf, nil
		}, depcache.Using(m), depcache.KeyName("alias-fill"))
		v, err := f(ctx, 1)
		if err != nil || !slices.Equal(v, []int{3, 1, 2}) {
			t.Fatalf("first call: %v %v", v, err)
		}
		slices.Sort(v)
		buf[2] = 99
		w, err := f(ctx, 1)
		if err != nil || !slices.Equal(w, []int{3, 1, 2}) {
			t.Fatalf("second call served %v (%v), want the stored [3 1 2]", w, err)
		}
	})
	t.Run("memoized backend hit", func(t *testing.T) {
		f := depcache.Memoize(func(ctx context.Context, id int) ([]int, error) {
			depcache.AddDependency(ctx, "list")
			return []int{3, 1, 2}, nil
		}, depcache.Using(m), depcache.KeyName("alias-hit"))
		if _, err := f(ctx, 1); err != nil {
			t.Fatal(err)
		}
		// A second manager's tier is empty: its call is a backend hit.
		m2 := depcache.New(b, depcache.WithLogger(quiet), depcache.WithName(t.Name()+"2"), depcache.WithPrefix("alias"), depcache.WithLocalCache(100))
		t.Cleanup(func() { m2.Close() })
		g := depcache.Memoize(func(ctx context.Context, id int) ([]int, error) {
			t.Error("computed again")
			return nil, nil
		}, depcache.Using(m2), depcache.KeyName("alias-hit"))
		v, err := g(ctx, 1)
		if err != nil || !slices.Equal(v, []int{3, 1, 2}) {
			t.Fatalf("backend hit: %v %v", v, err)
		}
		slices.Sort(v)
		w, err := g(ctx, 1)
		if err != nil || !slices.Equal(w, []int{3, 1, 2}) {
			t.Fatalf("tier hit served %v (%v), want the stored [3 1 2]", w, err)
		}
	})
	t.Run("Get", func(t *testing.T) {
		if err := m.Set(ctx, "k", []int{3, 1, 2}, 0, "list"); err != nil {
			t.Fatal(err)
		}
		var v []int
		if found, err := m.Get(ctx, "k", &v); !found || err != nil {
			t.Fatalf("Get: %v %v", found, err)
		}
		slices.Sort(v)
		var w []int
		if found, err := m.Get(ctx, "k", &w); !found || err != nil || !slices.Equal(w, []int{3, 1, 2}) {
			t.Fatalf("tier Get served %v (%v %v), want the stored [3 1 2]", w, found, err)
		}
	})
}
