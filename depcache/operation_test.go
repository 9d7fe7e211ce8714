package depcache_test

import (
	"context"
	"testing"

	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/internal/pluginapi"
)

func TestOutsideAComputationTheHelpersDoNothing(t *testing.T) {
	ctx := context.Background()
	depcache.AddDependency(ctx, "x")
	depcache.AddDependencyTo(ctx, "m", "x")
	depcache.SetTTL(ctx, 1)
	depcache.SkipFill(ctx, "why")
	if depcache.CurrentKey(ctx) != "" || depcache.CurrentManager(ctx) != nil {
		t.Fatal("CurrentKey/CurrentManager outside a computation are not empty")
	}
}

func TestParentInheritsChildDepsOnMissAndOnHit(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	var childCalls, parentCalls counter
	child := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
		childCalls.n.Add(1)
		depcache.AddDependency(ctx, "child::x")
		return id, nil
	}, depcache.Using(m), depcache.KeyName("child"))
	parentA := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
		parentCalls.n.Add(1)
		depcache.AddDependency(ctx, "parent::a")
		v, err := child(ctx, id) // a miss: the child runs
		return v + 1, err
	}, depcache.Using(m), depcache.KeyName("parentA"))
	parentB := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
		parentCalls.n.Add(1)
		v, err := child(ctx, id) // a hit: the child's stored tags are inherited
		return v + 2, err
	}, depcache.Using(m), depcache.KeyName("parentB"))

	parentA(ctx, 1)
	parentB(ctx, 1)
	if childCalls.calls() != 1 {
		t.Fatalf("child ran %d times; parentB's call should hit", childCalls.calls())
	}
	// child::x is on the child, parentA (inherited on a miss) and parentB
	// (inherited on a hit).
	if n, err := m.InvalidateDependency(ctx, "child::x"); n != 3 || err != nil {
		t.Fatalf("child::x removed %d entries, %v; want 3", n, err)
	}
	parentA(ctx, 1)
	parentB(ctx, 1)
	if parentCalls.calls() != 4 || childCalls.calls() != 2 {
		t.Fatalf("after invalidation: parents ran %d, child %d; want 4 and 2", parentCalls.calls(), childCalls.calls())
	}
	if n, _ := m.InvalidateDependency(ctx, "parent::a"); n != 1 {
		t.Fatalf("parent::a removed %d entries; it belongs to parentA only", n)
	}
}

func TestAddDependencyToAnEnclosingManager(t *testing.T) {
	ctx := context.Background()
	users, b := newManager(t)
	other := depcache.New(b, depcache.WithName("other"), depcache.WithLogger(quiet))
	t.Cleanup(func() { other.Close() })

	profile := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
		depcache.AddDependency(ctx, "user:1")
		depcache.AddDependencyTo(ctx, "other", "user_data:1")
		return id, nil
	}, depcache.Using(users), depcache.KeyName("profile"))
	content := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
		return profile(ctx, id)
	}, depcache.Using(other), depcache.KeyName("content"))

	content(ctx, 1)
	if n, _ := other.InvalidateDependency(ctx, "user_data:1"); n != 1 {
		t.Fatalf("other's user_data:1 removed %d entries; want content's entry", n)
	}
	if n, _ := users.InvalidateDependency(ctx, "user:1"); n != 1 {
		t.Fatalf("users' user:1 removed %d entries; want profile's entry", n)
	}
	// With no computation of the named manager running, AddDependencyTo is
	// a no-op, and the entry carries only its own tags.
	profile(ctx, 1)
	if n, _ := other.InvalidateDependency(ctx, "user_data:1"); n != 0 {
		t.Fatalf("user_data:1 in other removed %d entries with no enclosing computation", n)
	}
}

func TestSkipFillAndBypass(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	var calls counter
	f := depcache.Memoize(func(ctx context.Context, skip bool) (int, error) {
		calls.n.Add(1)
		depcache.AddDependency(ctx, "t")
		if skip {
			depcache.SkipFill(ctx, "test")
		}
		return 1, nil
	}, depcache.Using(m), depcache.KeyName("skip"))
	f(ctx, true)
	f(ctx, true)
	if calls.calls() != 2 {
		t.Fatalf("SkipFill stored a value")
	}
	if s := m.Stats(); s.SkippedFills != 2 {
		t.Fatalf("SkippedFills = %d", s.SkippedFills)
	}
	f(ctx, false)
	f(depcache.Bypass(ctx), false)
	if calls.calls() != 4 {
		t.Fatalf("Bypass read the cache: %d calls", calls.calls())
	}

	// A bypassed child still hands its tags to its parent.
	child := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
		depcache.AddDependency(ctx, "child-tag")
		return x, nil
	}, depcache.Using(m), depcache.KeyName("bypassed-child"))
	parent := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
		return child(depcache.Bypass(ctx), x)
	}, depcache.Using(m), depcache.KeyName("parent-of-bypassed"))
	parent(ctx, 1)
	if n, _ := m.InvalidateDependency(ctx, "child-tag"); n != 1 {
		t.Fatalf("parent of a bypassed child: child-tag removed %d entries, want 1", n)
	}
}

func TestTrack(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	f := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
		depcache.AddDependency(ctx, "t")
		return x, nil
	}, depcache.Using(m), depcache.KeyName("track"))
	tctx, tr := depcache.Track(ctx)
	f(tctx, 1)
	if tr.String() != "miss" || tr.Misses() != 1 {
		t.Fatalf("trace after a miss: %s hits=%d misses=%d", tr, tr.Hits(), tr.Misses())
	}
	tctx, tr = depcache.Track(ctx)
	f(tctx, 1)
	if tr.String() != "hit" || tr.Hits() != 1 {
		t.Fatalf("trace after a hit: %s", tr)
	}
}

func TestLateAddDependencyDeletesTheEntry(t *testing.T) {
	ctx := context.Background()
	ev := &events{}
	m, _ := newManager(t, depcache.WithObserver(ev.observe))
	release := make(chan struct{})
	done := make(chan struct{})
	var key string
	f := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
		key = depcache.CurrentKey(ctx)
		depcache.AddDependency(ctx, "early")
		go func() { // outlives the computation
			defer close(done)
			<-release
			depcache.AddDependency(ctx, "late")
		}()
		return x, nil
	}, depcache.Using(m), depcache.KeyName("late"))
	f(ctx, 1)
	if ok, _ := m.Exists(ctx, key); !ok {
		t.Fatal("entry not stored")
	}
	close(release)
	<-done
	if ok, _ := m.Exists(ctx, key); ok {
		t.Fatal("an entry that missed a late dependency is still served")
	}
	if ev.count(depcache.EventError) == 0 || m.Stats().Errors == 0 {
		t.Fatal("late dependency not reported")
	}
}

func TestSetTTLDoesNotCapParent(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	var parentKey string
	child := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
		depcache.SetTTL(ctx, 1e9)
		depcache.AddDependency(ctx, "c")
		return x, nil
	}, depcache.Using(m), depcache.KeyName("short-child"))
	parent := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
		parentKey = depcache.CurrentKey(ctx)
		return child(ctx, x)
	}, depcache.Using(m), depcache.KeyName("long-parent"), depcache.TTL(3600e9))
	parent(ctx, 1)
	if d, _ := m.TTL(ctx, parentKey); d < 3000e9 {
		t.Fatalf("parent TTL %v was capped by its child's", d)
	}
}

func TestRestrict(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	var calls counter
	f := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
		calls.n.Add(1)
		depcache.AddDependency(ctx, "t")
		return x, nil
	}, depcache.Using(m), depcache.KeyName("restrict"))
	read, fill := true, false
	rctx := pluginapi.Restrict(ctx, func() (bool, bool) { return read, fill })
	f(rctx, 1)
	f(rctx, 1)
	if calls.calls() != 2 {
		t.Fatalf("a context that may not fill stored a value")
	}
	f(ctx, 1) // fills
	f(rctx, 1)
	if calls.calls() != 3 {
		t.Fatalf("a context that may read missed a stored value")
	}
	read = false // the answer changes while the context lives
	f(rctx, 1)
	if calls.calls() != 4 {
		t.Fatalf("a context that may not read was served from the cache")
	}
}
