package depcache_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/depcache/go-depcache/depcache"
)

func TestMemoizeHitMissAndInvalidate(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	var calls counter
	get := depcache.Memoize(func(ctx context.Context, id int) (string, error) {
		calls.n.Add(1)
		depcache.AddDependency(ctx, fmt.Sprintf("users::%d", id))
		return fmt.Sprintf("user %d v%d", id, calls.calls()), nil
	}, depcache.Using(m))

	v1, _ := get(ctx, 1)
	v2, _ := get(ctx, 1)
	if v1 != v2 || calls.calls() != 1 {
		t.Fatalf("second call: %q vs %q after %d calls; want a hit", v1, v2, calls.calls())
	}
	get(ctx, 2)
	if calls.calls() != 2 {
		t.Fatalf("another argument shares an entry")
	}
	n, err := m.InvalidateDependency(ctx, "users::1")
	if err != nil || n != 1 {
		t.Fatalf("InvalidateDependency = %d, %v; want 1, nil", n, err)
	}
	v3, _ := get(ctx, 1)
	if v3 == v1 || calls.calls() != 3 {
		t.Fatalf("after invalidation got %q (calls %d); want a fresh value", v3, calls.calls())
	}
	get(ctx, 2)
	if calls.calls() != 3 {
		t.Fatalf("invalidating users::1 removed users::2's entry")
	}
	if s := m.Stats(); s.Hits != 2 || s.Misses != 3 || s.Sets != 3 || s.Invalidations != 1 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestZeroValuesAreHits(t *testing.T) {
	ctx := context.Background()
	for _, codec := range []depcache.Codec{depcache.JSON, depcache.Msgpack, depcache.Gob} {
		t.Run(codec.Name(), func(t *testing.T) {
			m, _ := newManager(t, depcache.WithCodec(codec))
			var calls counter
			nilSlice := depcache.Memoize0(func(ctx context.Context) ([]int, error) {
				calls.n.Add(1)
				depcache.AddDependency(ctx, "t")
				return nil, nil
			}, depcache.Using(m), depcache.KeyName("nil-slice"))
			empty := depcache.Memoize0(func(ctx context.Context) (string, error) {
				calls.n.Add(1)
				depcache.AddDependency(ctx, "t")
				return "", nil
			}, depcache.Using(m), depcache.KeyName("empty"))
			zero := depcache.Memoize0(func(ctx context.Context) (int, error) {
				calls.n.Add(1)
				depcache.AddDependency(ctx, "t")
				return 0, nil
			}, depcache.Using(m), depcache.KeyName("zero"))
			for range 3 {
				if v, err := nilSlice(ctx); v != nil || err != nil {
					t.Fatalf("nil slice: %v, %v", v, err)
				}
				empty(ctx)
				zero(ctx)
			}
			if calls.calls() != 3 {
				t.Fatalf("%d calls for three functions called three times; zero values must be hits", calls.calls())
			}
		})
	}
}

func TestArityAndFetchKeys(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	var keys []string
	record := depcache.OnResult(func(r depcache.Result) { keys = append(keys, r.Key) })
	f0 := depcache.Memoize0(func(ctx context.Context) (int, error) { return 0, nil }, depcache.Using(m), depcache.KeyName("f0"), record)
	f2 := depcache.Memoize2(func(ctx context.Context, a int, b string) (string, error) {
		return fmt.Sprint(a, b), nil
	}, depcache.Using(m), depcache.KeyName("f2"), record)
	f3 := depcache.Memoize3(func(ctx context.Context, a, b, c int) (int, error) {
		return a + b + c, nil
	}, depcache.Using(m), depcache.KeyName("f3"), record)
	f0(ctx)
	if v, _ := f2(ctx, 1, "x"); v != "1x" {
		t.Fatalf("f2 = %q", v)
	}
	f2(ctx, 1, "y")
	if v, _ := f3(ctx, 1, 2, 3); v != 6 {
		t.Fatalf("f3 = %d", v)
	}
	f3(ctx, 3, 2, 1)
	var inside string
	v, err := depcache.Fetch(ctx, m, "my-key", func(ctx context.Context) (int, error) {
		inside = depcache.CurrentKey(ctx)
		depcache.AddDependency(ctx, "t")
		return 7, nil
	})
	if v != 7 || err != nil || inside != "my-key" {
		t.Fatalf("Fetch = %d, %v; CurrentKey inside = %q", v, err, inside)
	}
	if ok, _ := m.Exists(ctx, "my-key"); !ok {
		t.Fatalf("Exists(my-key) after Fetch = false")
	}
	var got int
	if found, err := m.Get(ctx, "my-key", &got); !found || err != nil || got != 7 {
		t.Fatalf("Get(my-key) = %v, %v, %d", found, err, got)
	}
	if len(slices.Compact(slices.Sorted(slices.Values(keys)))) != len(keys) {
		t.Fatalf("distinct calls share keys: %q", keys)
	}
	for _, k := range keys {
		if ok, _ := m.Exists(ctx, k); !ok {
			t.Errorf("Result.Key %q is not a key Exists finds", k)
		}
	}
}

func double(ctx context.Context, x int) (int, error) {
	depcache.AddDependency(ctx, "double")
	return 2 * x, nil
}

func TestFunctionIdentity(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	var k1, k2 string
	a := depcache.Memoize(double, depcache.Using(m), depcache.OnResult(func(r depcache.Result) { k1 = r.Key }))
	b := depcache.Memoize(double, depcache.Using(m), depcache.OnResult(func(r depcache.Result) { k2 = r.Key }))
	a(ctx, 21)
	b(ctx, 21)
	if k1 != k2 {
		t.Fatalf("two wrappers of one function use %q and %q", k1, k2)
	}
	if s := m.Stats(); s.Hits != 1 {
		t.Fatalf("second wrapper missed: %+v", s)
	}
	// The identity is the symbol, stable across runs: no addresses.
	if want := "depcache_test.double#"; !strings.Contains(k1, want) {
		t.Fatalf("key %q does not name the function (%q)", k1, want)
	}
}

type repo struct{ calls counter }

func (r *repo) Get(ctx context.Context, id int) (int, error) {
	r.calls.n.Add(1)
	depcache.AddDependency(ctx, "repo")
	return id, nil
}

func TestMethodValueNeedsKeyName(t *testing.T) {
	ctx := context.Background()
	ev := &events{}
	m, _ := newManager(t, depcache.WithObserver(ev.observe))
	r := &repo{}
	get := depcache.Memoize(r.Get, depcache.Using(m))
	get(ctx, 1)
	get(ctx, 1)
	if r.calls.calls() != 2 {
		t.Fatalf("a method value without KeyName was cached (%d calls); receivers would share entries", r.calls.calls())
	}
	if ev.count(depcache.EventError) != 1 {
		t.Fatalf("want the problem reported once, got %d error events", ev.count(depcache.EventError))
	}
	named := depcache.Memoize(r.Get, depcache.Using(m), depcache.KeyName("repo.Get"))
	named(ctx, 1)
	named(ctx, 1)
	if r.calls.calls() != 3 {
		t.Fatalf("with KeyName: %d calls, want 3", r.calls.calls())
	}
}

func TestTTLOptionAndSetTTL(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t, depcache.WithDefaultTTL(time.Hour))
	var key string
	keyOf := depcache.OnResult(func(r depcache.Result) { key = r.Key })
	plain := depcache.Memoize(func(ctx context.Context, k string) (string, error) { return k, nil },
		depcache.Using(m), depcache.KeyName("default-ttl"), keyOf)
	plain(ctx, "a")
	if d, err := m.TTL(ctx, key); err != nil || d <= 59*time.Minute || d > time.Hour {
		t.Fatalf("default TTL = %v, %v; want about 1h", d, err)
	}
	opt := depcache.Memoize(func(ctx context.Context, k string) (string, error) { return k, nil },
		depcache.Using(m), depcache.KeyName("opt-ttl"), depcache.TTL(time.Minute), keyOf)
	opt(ctx, "a")
	if d, _ := m.TTL(ctx, key); d <= 50*time.Second || d > time.Minute {
		t.Fatalf("TTL option = %v; want about 1m", d)
	}
	override := depcache.Memoize(func(ctx context.Context, k string) (string, error) {
		depcache.SetTTL(ctx, depcache.NoExpiry)
		return k, nil
	}, depcache.Using(m), depcache.KeyName("set-ttl"), depcache.TTL(time.Minute), keyOf)
	override(ctx, "a")
	if d, _ := m.TTL(ctx, key); d != depcache.NoExpiry {
		t.Fatalf("SetTTL(NoExpiry) gave TTL %v", d)
	}
	if _, err := m.TTL(ctx, "missing"); !errors.Is(err, depcache.ErrNotFound) {
		t.Fatalf("TTL(missing) err = %v; want ErrNotFound", err)
	}
}

func TestStaticDepsAndManagerName(t *testing.T) {
	ctx := context.Background()
	reg := depcache.NewRegistry()
	t.Cleanup(func() { reg.Close() })
	m, b := newManager(t)
	_ = b
	named, err := reg.GetOrCreate("named", depcache.WithBackend(b), depcache.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	var calls counter
	f := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
		calls.n.Add(1)
		if depcache.CurrentManager(ctx) != named {
			t.Errorf("CurrentManager is not the named manager")
		}
		return x, nil
	}, depcache.ManagerName("named"), depcache.InRegistry(reg), depcache.Deps("static"))
	f(ctx, 1)
	f(ctx, 1)
	if calls.calls() != 1 {
		t.Fatalf("ManagerName: %d calls, want 1", calls.calls())
	}
	if n, _ := named.InvalidateDependency(ctx, "static"); n != 1 {
		t.Fatalf("static dependency invalidated %d entries, want 1", n)
	}
	if n, _ := m.InvalidateDependency(ctx, "static"); n != 0 {
		t.Fatalf("another manager's namespace shared the tag")
	}

	unknown := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
		calls.n.Add(1)
		return x, nil
	}, depcache.ManagerName("nope"), depcache.InRegistry(reg))
	unknown(ctx, 1)
	unknown(ctx, 1)
	if calls.calls() != 3 {
		t.Fatalf("unknown manager name: calls = %d; want the function run uncached", calls.calls())
	}
}

func TestOnResultAndObserverPanicsAreRecovered(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t, depcache.WithObserver(func(depcache.Event) { panic("observer") }))
	var results []depcache.Result
	f := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
		depcache.AddDependency(ctx, "t")
		return x * 10, nil
	}, depcache.Using(m), depcache.KeyName("cb"), depcache.OnResult(func(r depcache.Result) {
		results = append(results, r)
		panic("callback")
	}))
	v1, err1 := f(ctx, 4)
	v2, err2 := f(ctx, 4)
	if v1 != 40 || v2 != 40 || err1 != nil || err2 != nil {
		t.Fatalf("panicking callbacks broke the call: %v %v %v %v", v1, err1, v2, err2)
	}
	if len(results) != 2 || results[0].Hit || !results[1].Hit || results[1].Value != 40 ||
		results[1].Manager != m.Name() || results[0].Args[0] != 4 || results[0].Func != "cb" {
		t.Fatalf("results = %+v", results)
	}
}

func TestDisabledManagerCallsThroughButInvalidates(t *testing.T) {
	ctx := context.Background()
	m, b := newManager(t, depcache.WithEnabled(false))
	var calls counter
	f := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
		calls.n.Add(1)
		return x, nil
	}, depcache.Using(m))
	f(ctx, 1)
	f(ctx, 1)
	if calls.calls() != 2 {
		t.Fatalf("disabled manager cached: %d calls", calls.calls())
	}
	on := depcache.New(b, depcache.WithName(t.Name()), depcache.WithLogger(quiet))
	if err := on.Set(ctx, "k", 1, 0, "tag"); err != nil {
		t.Fatal(err)
	}
	if n, err := m.InvalidateDependency(ctx, "tag"); n != 1 || err != nil {
		t.Fatalf("disabled manager's InvalidateDependency = %d, %v; want 1, nil", n, err)
	}
}

func TestConcurrentCallers(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	f := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				depcache.AddDependency(ctx, fmt.Sprintf("part::%d", i))
			}()
		}
		wg.Wait()
		return x, nil
	}, depcache.Using(m), depcache.KeyName("conc"))
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if v, err := f(ctx, i%4); v != i%4 || err != nil {
				t.Errorf("f(%d) = %d, %v", i%4, v, err)
			}
		}()
	}
	wg.Wait()
	// Every entry depends on all four parts added from goroutines.
	if n, _ := m.InvalidateDependency(ctx, "part::3"); n != 4 {
		t.Fatalf("part::3 removed %d entries; want the 4 stored", n)
	}
}

func TestUnkeyableArgumentsRunUncached(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	var calls counter
	f := depcache.Memoize(func(ctx context.Context, fn func() int) (int, error) {
		calls.n.Add(1)
		return fn(), nil
	}, depcache.Using(m), depcache.KeyName("func-arg"))
	a, _ := f(ctx, func() int { return 1 })
	b, _ := f(ctx, func() int { return 2 })
	if a != 1 || b != 2 || calls.calls() != 2 {
		t.Fatalf("function arguments shared an entry: %d %d (calls %d)", a, b, calls.calls())
	}
}
