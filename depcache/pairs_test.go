package depcache_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
)

// records is an slog handler that keeps the messages logged through it,
// and their records.
type records struct {
	mu   sync.Mutex
	msgs []string
	recs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.msgs = append(r.msgs, rec.Message)
	r.recs = append(r.recs, rec.Clone())
	r.mu.Unlock()
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// count returns how many messages contain s.
func (r *records) count(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if strings.Contains(m, s) {
			n++
		}
	}
	return n
}

// countLevel returns how many records at level have a message starting
// with prefix.
func (r *records) countLevel(level slog.Level, prefix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.recs {
		if rec.Level == level && strings.HasPrefix(rec.Message, prefix) {
			n++
		}
	}
	return n
}

// twoManagers returns managers "a" and "b" on one memory backend.
func twoManagers(t *testing.T, opts ...depcache.Option) (a, b *depcache.Manager) {
	t.Helper()
	store := memory.New()
	opts = append([]depcache.Option{depcache.WithLogger(quiet)}, opts...)
	a = depcache.New(store, append(opts, depcache.WithName("a"))...)
	b = depcache.New(store, append(opts, depcache.WithName("b"))...)
	t.Cleanup(func() {
		a.Close()
		b.Close()
		store.Close()
	})
	return a, b
}

// A parent of manager A that calls a child of manager B depends on B's
// post:1, not on A's: on the child's miss and on its hit.
func TestParentInheritsPairsOfAChildOfAnotherManager(t *testing.T) {
	for _, childHits := range []bool{false, true} {
		name := "child miss"
		if childHits {
			name = "child hit"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			a, b := twoManagers(t)
			var parentCalls counter
			child := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
				depcache.AddDependency(ctx, "post:1")
				return id * 10, nil
			}, depcache.Using(b), depcache.KeyName("child"))
			page := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
				parentCalls.n.Add(1)
				return child(ctx, id)
			}, depcache.Using(a), depcache.KeyName("page"))

			if childHits {
				child(ctx, 1)
			}
			page(ctx, 1)
			page(ctx, 1)
			if parentCalls.calls() != 1 {
				t.Fatalf("page ran %d times before any invalidation; want 1", parentCalls.calls())
			}
			// A's own post:1 is another dependency.
			if n, err := a.InvalidateDependency(ctx, "post:1"); n != 0 || err != nil {
				t.Fatalf("A.InvalidateDependency(post:1) = %d, %v; want 0 (the page depends on B's post:1)", n, err)
			}
			page(ctx, 1)
			if parentCalls.calls() != 1 {
				t.Fatalf("A's post:1 removed the page built from B's post:1")
			}
			// B's post:1 removes the child and the page built from it.
			if n, err := b.InvalidateDependency(ctx, "post:1"); n != 2 || err != nil {
				t.Fatalf("B.InvalidateDependency(post:1) = %d, %v; want 2 (child and page)", n, err)
			}
			page(ctx, 1)
			if parentCalls.calls() != 2 {
				t.Fatalf("page ran %d times; want 2: B's invalidation left it stale", parentCalls.calls())
			}
		})
	}
}

// Manager.AddDependency adds pairs of that manager to the innermost
// computation, whatever its manager: what the GORM plugin does.
func TestManagerAddDependencyTagsAComputationOfAnotherManager(t *testing.T) {
	ctx := context.Background()
	a, b := twoManagers(t)
	var calls counter
	f := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
		calls.n.Add(1)
		b.AddDependency(ctx, "users::1")
		return id, nil
	}, depcache.Using(a), depcache.KeyName("f"))
	b.AddDependency(ctx, "users::1") // outside a computation: nothing
	f(ctx, 1)
	if n, _ := a.InvalidateDependency(ctx, "users::1"); n != 0 {
		t.Fatalf("A's users::1 removed %d entries; the entry depends on B's", n)
	}
	if n, _ := b.InvalidateDependency(ctx, "users::1"); n != 1 {
		t.Fatalf("B's users::1 removed %d entries; want 1", n)
	}
	f(ctx, 1)
	f(ctx, 1)
	if calls.calls() != 2 {
		t.Fatalf("f ran %d times; want 2", calls.calls())
	}
}

// AddDependencyTo passes through a computation of another manager, which
// stores the pair in its entry without depending on it, so that a parent
// hitting that entry later inherits it too.
func TestAddDependencyToThroughAComputationOfAnotherManager(t *testing.T) {
	ctx := context.Background()
	a, b := twoManagers(t)
	var midCalls, outerCalls counter
	mid := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
		midCalls.n.Add(1)
		depcache.AddDependency(ctx, "mid")
		depcache.AddDependencyTo(ctx, "a", "user_data:1")
		return id, nil
	}, depcache.Using(b), depcache.KeyName("mid"))
	outer := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
		outerCalls.n.Add(1)
		return mid(ctx, id)
	}, depcache.Using(a), depcache.KeyName("outer"))
	outer2 := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
		outerCalls.n.Add(1)
		return mid(ctx, id) // a hit on mid's entry
	}, depcache.Using(a), depcache.KeyName("outer2"))

	outer(ctx, 1)
	outer2(ctx, 1)
	if midCalls.calls() != 1 {
		t.Fatalf("mid ran %d times; outer2 should hit it", midCalls.calls())
	}
	// B's mid does not depend on user_data:1 of any manager.
	if n, _ := b.InvalidateDependency(ctx, "user_data:1"); n != 0 {
		t.Fatalf("B's user_data:1 removed %d entries; want 0", n)
	}
	// A's user_data:1 removes both outer entries, and not mid's.
	if n, _ := a.InvalidateDependency(ctx, "user_data:1"); n != 2 {
		t.Fatalf("A's user_data:1 removed %d entries; want outer and outer2 (inherited on mid's hit)", n)
	}
	// mid's entry predates that invalidation and carries the pair, so a
	// parent using it now cannot be stored: its value may be stale for A.
	outer(ctx, 1)
	if midCalls.calls() != 1 || outerCalls.calls() != 3 {
		t.Fatalf("mid ran %d times, outer %d; want 1 and 3", midCalls.calls(), outerCalls.calls())
	}
	if s := a.Stats(); s.StaleFills != 1 {
		t.Fatalf("A: %d stale fills; want 1 (outer built on mid's older entry)", s.StaleFills)
	}
	if n, _ := b.InvalidateDependency(ctx, "mid"); n != 1 {
		t.Fatalf("B's mid removed %d entries; want mid's", n)
	}
	// Both fill again; mid's own tag reaches outer as B's pair.
	outer(ctx, 1)
	outer(ctx, 1)
	if midCalls.calls() != 2 || outerCalls.calls() != 4 {
		t.Fatalf("mid ran %d times, outer %d; want 2 and 4", midCalls.calls(), outerCalls.calls())
	}
	if n, _ := b.InvalidateDependency(ctx, "mid"); n != 2 {
		t.Fatalf("B's mid removed %d entries; want mid and outer", n)
	}
}

// Managers on different backends: no store can register the parent under
// the child's tag, so the parent is not filled, and that is logged once.
func TestParentOnAnotherBackendIsNotFilled(t *testing.T) {
	ctx := context.Background()
	logs := &records{}
	storeA, storeB := memory.New(), memory.New()
	a := depcache.New(storeA, depcache.WithName("a"), depcache.WithLogger(slog.New(logs)))
	b := depcache.New(storeB, depcache.WithName("b"), depcache.WithLogger(quiet))
	t.Cleanup(func() { a.Close(); b.Close(); storeA.Close(); storeB.Close() })

	var parentCalls counter
	child := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
		depcache.AddDependency(ctx, "post:1")
		return id, nil
	}, depcache.Using(b), depcache.KeyName("child"))
	page := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
		parentCalls.n.Add(1)
		return child(ctx, id)
	}, depcache.Using(a), depcache.KeyName("page"))
	tagged := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
		parentCalls.n.Add(1)
		b.AddDependency(ctx, "users::1")
		return id, nil
	}, depcache.Using(a), depcache.KeyName("tagged"))

	for range 3 {
		page(ctx, 1) // child miss, then hits
		tagged(ctx, 1)
	}
	if parentCalls.calls() != 6 {
		t.Fatalf("parents ran %d times; want 6 (never filled)", parentCalls.calls())
	}
	if s := a.Stats(); s.Sets != 0 || s.SkippedFills != 6 {
		t.Fatalf("A: %d sets, %d skipped fills; want 0 and 6", s.Sets, s.SkippedFills)
	}
	if n := logs.count("another backend"); n != 1 {
		t.Fatalf("logged %d times; want once", n)
	}
}

// While B's invalidation of post:1 is pending retry, this process serves
// and stores no entry of A that depends on B's post:1.
func TestPendingInvalidationOfAnotherManagersTag(t *testing.T) {
	ctx := context.Background()
	store := &faulty{Backend: memory.New()}
	a := depcache.New(store, depcache.WithName("a"), depcache.WithLogger(quiet))
	b := depcache.New(store, depcache.WithName("b"), depcache.WithLogger(quiet))
	t.Cleanup(func() { a.Close(); b.Close(); store.Close() })
	page, calls := pageOnPost(a, b)
	warmPage(t, page, calls)
	store.invalidations.Store(true)
	if _, err := b.InvalidateDependency(ctx, "post:1"); err == nil {
		t.Fatal("the invalidation did not fail")
	}
	page(ctx, 1)
	page(ctx, 1)
	if calls.calls() != 3 {
		t.Fatalf("page ran %d times; want 3: an entry carrying B's pending post:1 was served or stored", calls.calls())
	}
	store.invalidations.Store(false)
	if err := b.RetryPending(ctx); err != nil {
		t.Fatal(err)
	}
	page(ctx, 1)
	page(ctx, 1)
	if calls.calls() != 4 {
		t.Fatalf("page ran %d times after the retry; want 4", calls.calls())
	}
}

// Tags starting with the bytes that mark stored pairs are refused: they
// would name another manager's tag.
func TestReservedTagBytesAreRefused(t *testing.T) {
	ctx := context.Background()
	a, b := twoManagers(t)
	forged := "\x00" + b.Prefix() + "\x00post:1"
	if err := a.Set(ctx, "k", 1, 0, forged); err == nil {
		t.Fatal("Set with a marked tag succeeded")
	}
	f := depcache.Memoize0(func(ctx context.Context) (int, error) {
		depcache.AddDependency(ctx, forged, "\x01x\x00y", "ok")
		return 1, nil
	}, depcache.Using(a), depcache.KeyName("f"))
	f(ctx)
	if n, _ := b.InvalidateDependency(ctx, "post:1"); n != 0 {
		t.Fatalf("a forged tag registered A's entry under B's post:1")
	}
	if n, _ := a.InvalidateDependency(ctx, "ok"); n != 1 {
		t.Fatalf("the valid tag removed %d entries; want 1", n)
	}
}

// While B is held (its durable outbox has not delivered yet), this
// process serves and stores no entry of A that depends on B's tags: a Hold
// is as if an invalidation of every tag of B were pending, and the pair
// rule applies to it as to a pending invalidation. Only B's own entries
// were refused, so A served a page built from B's post:1 that the outbox's
// delivery had yet to condemn. A lookup of A whose round trip spans the
// end of B's hold is a miss too.
func TestHoldOfAnotherManagerCoversItsTags(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	store := newStallBackend(mem)
	a := depcache.New(store, depcache.WithName("a"), depcache.WithLogger(quiet))
	b := depcache.New(store, depcache.WithName("b"), depcache.WithLogger(quiet))
	t.Cleanup(func() { a.Close(); b.Close(); mem.Close() })
	page, calls := pageOnPost(a, b)
	warmPage(t, page, calls)
	release := b.Hold()
	page(ctx, 1)
	page(ctx, 1)
	if calls.calls() != 3 {
		t.Fatalf("page ran %d times while B was held; want 3: an entry carrying B's post:1 was served or stored", calls.calls())
	}
	// A lookup sent while B is held, answered after B's release.
	store.armed.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		page(ctx, 1)
	}()
	<-store.read
	release()
	close(store.reply)
	<-done
	if calls.calls() != 4 {
		t.Fatalf("page ran %d times; want 4: a lookup spanning the end of B's hold served its entry", calls.calls())
	}
	page(ctx, 1) // stored by the previous call, after the release
	if calls.calls() != 4 {
		t.Fatalf("page ran %d times after the release; want 4 (a hit)", calls.calls())
	}
}

// pageOnPost returns a memoized page of manager a that depends on b's
// post:1, and the count of its runs.
func pageOnPost(a, b *depcache.Manager) (func(context.Context, int) (int, error), *counter) {
	calls := &counter{}
	page := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
		calls.n.Add(1)
		b.AddDependency(ctx, "post:1")
		return id, nil
	}, depcache.Using(a), depcache.KeyName("page"))
	return page, calls
}

// warmPage calls page twice and fails unless the second call was a hit.
func warmPage(t *testing.T, page func(context.Context, int) (int, error), calls *counter) {
	t.Helper()
	page(context.Background(), 1)
	page(context.Background(), 1)
	if calls.calls() != 1 {
		t.Fatalf("page ran %d times; want 1", calls.calls())
	}
}
