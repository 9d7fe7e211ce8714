package depcache_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/internal/pluginapi"
)

// A computation that does not cache, in the middle of a chain, is
// transparent: its children's pairs and epochs reach its parent, which
// caches as if it called the children directly.
func TestUncachedComputationInTheMiddleIsTransparent(t *testing.T) {
	type mode struct {
		name string
		// mid wraps fn as the middle computation, and says which manager
		// owns the tags mid adds itself.
		mid func(t *testing.T, m *depcache.Manager, fn func(context.Context, int) (int, error)) (func(context.Context, int) (int, error), *depcache.Manager)
	}
	modes := []mode{
		{"disabled manager", func(t *testing.T, m *depcache.Manager, fn func(context.Context, int) (int, error)) (func(context.Context, int) (int, error), *depcache.Manager) {
			off := depcache.New(m.Backend(), depcache.WithName("off"), depcache.WithEnabled(false), depcache.WithLogger(quiet))
			t.Cleanup(func() { off.Close() })
			return depcache.Memoize(fn, depcache.Using(off), depcache.KeyName("mid")), off
		}},
		{"closed manager", func(t *testing.T, m *depcache.Manager, fn func(context.Context, int) (int, error)) (func(context.Context, int) (int, error), *depcache.Manager) {
			closed := depcache.New(m.Backend(), depcache.WithName("closed"), depcache.WithLogger(quiet))
			closed.Close()
			return depcache.Memoize(fn, depcache.Using(closed), depcache.KeyName("mid")), nil
		}},
		{"unknown ManagerName", func(t *testing.T, m *depcache.Manager, fn func(context.Context, int) (int, error)) (func(context.Context, int) (int, error), *depcache.Manager) {
			reg := depcache.NewRegistry()
			t.Cleanup(func() { reg.Close() })
			return depcache.Memoize(fn, depcache.InRegistry(reg), depcache.ManagerName("nobody"), depcache.KeyName("mid")), m
		}},
		{"unkeyable argument", func(t *testing.T, m *depcache.Manager, fn func(context.Context, int) (int, error)) (func(context.Context, int) (int, error), *depcache.Manager) {
			g := depcache.Memoize(func(ctx context.Context, arg func() int) (int, error) {
				return fn(ctx, arg())
			}, depcache.Using(m), depcache.KeyName("mid"))
			return func(ctx context.Context, x int) (int, error) {
				return g(ctx, func() int { return x })
			}, m
		}},
		{"method value without KeyName", func(t *testing.T, m *depcache.Manager, fn func(context.Context, int) (int, error)) (func(context.Context, int) (int, error), *depcache.Manager) {
			return depcache.Memoize(midMethod{fn}.Call, depcache.Using(m)), m
		}},
		{"Bypass", func(t *testing.T, m *depcache.Manager, fn func(context.Context, int) (int, error)) (func(context.Context, int) (int, error), *depcache.Manager) {
			g := depcache.Memoize(fn, depcache.Using(m), depcache.KeyName("mid"))
			return func(ctx context.Context, x int) (int, error) {
				return g(depcache.Bypass(ctx), x)
			}, m
		}},
	}
	for _, md := range modes {
		t.Run(md.name, func(t *testing.T) {
			ctx := context.Background()
			m, _ := newManager(t)
			var parentCalls, childCalls counter
			child := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
				childCalls.n.Add(1)
				depcache.AddDependency(ctx, "child-tag")
				return x, nil
			}, depcache.Using(m), depcache.KeyName("child"))
			mid, midOwner := md.mid(t, m, func(ctx context.Context, x int) (int, error) {
				depcache.AddDependency(ctx, "mid-tag")
				a, err := child(ctx, x)
				if err != nil {
					return 0, err
				}
				b, err := child(ctx, x+1)
				return a + b, err
			})
			parent := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
				parentCalls.n.Add(1)
				return mid(ctx, x)
			}, depcache.Using(m), depcache.KeyName("parent"))

			for range 3 {
				if v, err := parent(ctx, 1); v != 3 || err != nil {
					t.Fatalf("parent(1) = %d, %v", v, err)
				}
			}
			if parentCalls.calls() != 1 {
				t.Fatalf("parent ran %d times in 3 calls; want 1: the uncached middle made it uncacheable", parentCalls.calls())
			}
			if s := m.Stats(); s.SkippedFills != 0 {
				t.Fatalf("%d skipped fills; want 0", s.SkippedFills)
			}
			// The children's tag reaches the parent: it and the children
			// go (under Bypass the children do not cache either).
			want := 3
			if md.name == "Bypass" {
				want = 1
			}
			if n, err := m.InvalidateDependency(ctx, "child-tag"); n != want || err != nil {
				t.Fatalf("child-tag removed %d entries, %v; want %d", n, err, want)
			}
			parent(ctx, 1)
			if parentCalls.calls() != 2 {
				t.Fatalf("parent ran %d times; want 2", parentCalls.calls())
			}
			if midOwner != nil {
				// mid's own tag is a pair of mid's manager (the parent's
				// when mid has none).
				if n, err := midOwner.InvalidateDependency(ctx, "mid-tag"); n != 1 || err != nil {
					t.Fatalf("mid-tag removed %d entries, %v; want the parent's", n, err)
				}
			}
		})
	}
}

// midMethod's method value has no usable identity without KeyName.
type midMethod struct {
	fn func(context.Context, int) (int, error)
}

func (m midMethod) Call(ctx context.Context, x int) (int, error) { return m.fn(ctx, x) }

// stalePeek serves one stored-looking entry for key: a value filled at
// since, tagged tag, which an invalidation of tag has condemned but not yet
// deleted (the race an invalidation in progress opens).
type stalePeek struct {
	backends.Backend
	key, tag string
	since    backends.Epoch
}

func (s *stalePeek) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	if key == s.key {
		return backends.Lookup{Found: true, Entry: backends.Entry{Value: []byte("v1"), Deps: []string{s.tag}, Since: s.since}}, nil
	}
	return s.Backend.Lookup(ctx, ns, key)
}

// The epoch of a cached result used under a transparent computation still
// lowers the parent's: the parent cannot store a value built on an entry
// that an invalidation condemned.
func TestTransparentComputationPassesEpochsOn(t *testing.T) {
	ctx := context.Background()
	_, store := newManager(t)
	since, err := store.Epoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	peek := &stalePeek{Backend: store, key: "child:fixed", tag: "t", since: since}
	m := depcache.New(peek, depcache.WithName("m"), depcache.WithLogger(quiet))
	t.Cleanup(func() { m.Close() })
	if _, err := m.InvalidateDependency(ctx, "t"); err != nil { // stamps t after since
		t.Fatal(err)
	}
	child := func(ctx context.Context) (int, error) {
		return depcache.Fetch(ctx, m, "child:fixed", func(context.Context) (int, error) { return 2, nil })
	}
	off := depcache.New(peek, depcache.WithName("off"), depcache.WithEnabled(false), depcache.WithLogger(quiet))
	t.Cleanup(func() { off.Close() })
	mid := depcache.Memoize0(child, depcache.Using(off), depcache.KeyName("mid"))
	parent := depcache.Memoize0(mid, depcache.Using(m), depcache.KeyName("parent"))
	if v, _ := parent(ctx); v != 1 {
		t.Fatalf("parent = %d; want the condemned entry's 1", v)
	}
	if s := m.Stats(); s.Sets != 0 || s.StaleFills != 1 || s.SkippedFills != 0 {
		t.Fatalf("%d sets, %d stale fills, %d skipped; want the parent refused as stale", s.Sets, s.StaleFills, s.SkippedFills)
	}
}

// pluginapi.SkipFillAll reaches every enclosing computation, through
// transparent ones too; SkipFill only the innermost.
func TestSkipFillAllReachesEveryEnclosingComputation(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	off := depcache.New(m.Backend(), depcache.WithName("off"), depcache.WithEnabled(false), depcache.WithLogger(quiet))
	t.Cleanup(func() { off.Close() })
	for _, all := range []bool{false, true} {
		child := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
			depcache.AddDependency(ctx, "t")
			if !pluginapi.InComputation(ctx) {
				t.Error("InComputation is false inside a computation")
			}
			if all {
				pluginapi.SkipFillAll(ctx, "test")
			} else {
				depcache.SkipFill(ctx, "test")
			}
			return x, nil
		}, depcache.Using(m), depcache.KeyName(fmt.Sprint("child", all)))
		mid := depcache.Memoize(child, depcache.Using(off), depcache.KeyName("mid"))
		parent := depcache.Memoize(mid, depcache.Using(m), depcache.KeyName(fmt.Sprint("parent", all)))
		before := m.Stats().Sets
		parent(ctx, 1)
		want := uint64(1) // the parent only
		if all {
			want = 0
		}
		if got := m.Stats().Sets - before; got != want {
			t.Errorf("SkipFillAll=%v: %d sets; want %d", all, got, want)
		}
	}
	if pluginapi.InComputation(ctx) {
		t.Error("InComputation outside any computation")
	}
}
