package depcache_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
)

func TestManualOperations(t *testing.T) {
	ctx := context.Background()
	ev := &events{}
	m, _ := newManager(t, depcache.WithObserver(ev.observe))
	if err := m.Set(ctx, "a", map[string]int{"x": 1}, time.Minute, "t1", "t2"); err != nil {
		t.Fatal(err)
	}
	m.Set(ctx, "b", "bee", 0, "t2")
	m.Set(ctx, "c", 3, 0)
	var got map[string]int
	if found, err := m.Get(ctx, "a", &got); !found || err != nil || got["x"] != 1 {
		t.Fatalf("Get(a) = %v %v %v", found, err, got)
	}
	if found, _ := m.Get(ctx, "zzz", &got); found {
		t.Fatal("Get of a missing key found something")
	}
	if e, _ := ev.last(depcache.EventSet); e.Key != "c" {
		t.Fatalf("last set event %+v", e)
	}
	if n, err := m.InvalidateDependency(ctx, "t1", "t2"); n != 2 || err != nil {
		t.Fatalf("invalidate t1,t2 = %d, %v; want 2 distinct entries", n, err)
	}
	if e, _ := ev.last(depcache.EventInvalidate); e.Count != 2 || len(e.Deps) != 2 {
		t.Fatalf("invalidate event %+v", e)
	}
	if n, _ := m.Delete(ctx, "c", "nope"); n != 1 {
		t.Fatalf("Delete counted %d, want 1", n)
	}
	m.Set(ctx, "d", 1, 0, "x")
	m.Set(ctx, "e", 1, 0, "y")
	if n, err := m.Clear(ctx); n != 2 || err != nil {
		t.Fatalf("Clear = %d, %v", n, err)
	}
	if ok, _ := m.Exists(ctx, "d"); ok {
		t.Fatal("Clear left an entry")
	}
	if _, err := m.InvalidateDependency(ctx, "ok", ""); err == nil || !strings.Contains(err.Error(), "empty tag") {
		t.Fatalf("an empty tag must be an error naming it, got %v", err)
	}
	if err := m.Set(ctx, "k", 1, -5*time.Second); !errors.Is(err, depcache.ErrInvalidTTL) {
		t.Fatalf("negative TTL: %v", err)
	}
}

func TestPrefixesIsolateManagers(t *testing.T) {
	ctx := context.Background()
	b := memory.New()
	defer b.Close()
	a := depcache.New(b, depcache.WithName("cache"), depcache.WithLogger(quiet))
	a2 := depcache.New(b, depcache.WithPrefix("cache:cache2"), depcache.WithLogger(quiet))
	if a.Prefix() != "cache:cache" {
		t.Fatalf("default prefix = %q", a.Prefix())
	}
	a.Set(ctx, "k", 1, 0, "t")
	a2.Set(ctx, "k", 2, 0, "t")
	if n, _ := a.Clear(ctx); n != 1 {
		t.Fatalf("Clear counted %d", n)
	}
	var v int
	if found, _ := a2.Get(ctx, "k", &v); !found || v != 2 {
		t.Fatal("Clear of cache:cache touched cache:cache2")
	}
	t.Setenv(depcache.EnvPrefix, "app")
	p := depcache.New(b, depcache.WithName("users"))
	if p.Prefix() != "app:users" {
		t.Fatalf("DEP_CACHE_PREFIX: prefix = %q", p.Prefix())
	}
}

func TestCodecFailures(t *testing.T) {
	ctx := context.Background()
	ev := &events{}
	m, b := newManager(t, depcache.WithObserver(ev.observe))
	var calls counter
	f := depcache.Memoize(func(ctx context.Context, x int) (chan int, error) {
		calls.n.Add(1)
		depcache.AddDependency(ctx, "t")
		return make(chan int), nil
	}, depcache.Using(m), depcache.KeyName("chan"))
	if v, err := f(ctx, 1); v == nil || err != nil {
		t.Fatalf("unencodable value not returned: %v %v", v, err)
	}
	f(ctx, 1)
	if calls.calls() != 2 || ev.count(depcache.EventError) != 2 {
		t.Fatalf("unencodable value: calls=%d errors=%d", calls.calls(), ev.count(depcache.EventError))
	}

	// Bytes the codec cannot read are a miss, and are deleted.
	var key string
	g := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
		calls.n.Add(1)
		key = depcache.CurrentKey(ctx)
		depcache.AddDependency(ctx, "t")
		return 5, nil
	}, depcache.Using(m), depcache.KeyName("corrupt"))
	g(ctx, 1)
	e0, _ := b.Epoch(ctx)
	if err := b.Fill(ctx, m.Prefix(), backends.Fill{Key: key, Entry: backends.Entry{Value: []byte("v{not json"), Since: e0}, Since: e0}); err != nil {
		t.Fatal(err)
	}
	if v, err := g(ctx, 1); v != 5 || err != nil {
		t.Fatalf("corrupt entry: %v, %v", v, err)
	}
	if calls.calls() != 4 {
		t.Fatalf("corrupt entry was served")
	}
	var dst int
	b.Fill(ctx, m.Prefix(), backends.Fill{Key: "raw", Entry: backends.Entry{Value: []byte{0xff, 0}, Since: e0}, Since: e0})
	if found, err := m.Get(ctx, "raw", &dst); found || err != nil {
		t.Fatalf("Get of foreign bytes = %v, %v; want a miss", found, err)
	}
	if ok, _ := m.Exists(ctx, "raw"); ok {
		t.Fatal("foreign bytes were not deleted")
	}
}

func TestFailOpenAndStrict(t *testing.T) {
	ctx := context.Background()
	fb := &faulty{Backend: memory.New()}
	defer fb.Close()
	m := depcache.New(fb, depcache.WithLogger(quiet))
	strict := depcache.New(fb, depcache.WithLogger(quiet), depcache.WithStrictErrors(), depcache.WithName("strict"))
	var calls counter
	fn := func(ctx context.Context, x int) (int, error) {
		calls.n.Add(1)
		depcache.AddDependency(ctx, "t")
		return x, nil
	}
	f := depcache.Memoize(fn, depcache.Using(m), depcache.KeyName("f"))
	s := depcache.Memoize(fn, depcache.Using(strict), depcache.KeyName("f"))
	fb.lookups.Store(true)
	if v, err := f(ctx, 3); v != 3 || err != nil {
		t.Fatalf("fail-open call = %v, %v", v, err)
	}
	if m.Stats().Errors != 1 {
		t.Fatalf("backend error not counted: %+v", m.Stats())
	}
	if _, err := s(ctx, 3); !errors.Is(err, errDown) {
		t.Fatalf("strict call err = %v; want the backend error", err)
	}
	fb.lookups.Store(false)
	fb.fills.Store(true)
	if v, err := f(ctx, 4); v != 4 || err != nil {
		t.Fatalf("fail-open on fill = %v, %v", v, err)
	}
	if _, err := s(ctx, 4); !errors.Is(err, errDown) {
		t.Fatalf("strict fill err = %v", err)
	}
	if calls.calls() != 3 {
		t.Fatalf("calls = %d", calls.calls())
	}
}

func TestFailedInvalidationIsRetriedAndGuardedMeanwhile(t *testing.T) {
	ctx := context.Background()
	fb := &faulty{Backend: memory.New()}
	defer fb.Close()
	// A backoff longer than the test: only RetryPending delivers.
	m := depcache.New(fb, depcache.WithLogger(quiet), depcache.WithRetryBackoff(time.Hour, time.Hour))
	defer m.Close()
	var version, calls counter
	f := depcache.Memoize(func(ctx context.Context, x int) (int64, error) {
		calls.n.Add(1)
		depcache.AddDependency(ctx, "row")
		return version.n.Load(), nil
	}, depcache.Using(m), depcache.KeyName("row"))
	f(ctx, 1)
	version.n.Add(1) // the write commits
	fb.invalidations.Store(true)
	if _, err := m.InvalidateDependency(ctx, "row"); !errors.Is(err, errDown) {
		t.Fatalf("failed invalidation returned %v", err)
	}
	if m.Stats().PendingInvalidations != 1 {
		t.Fatalf("pending = %d", m.Stats().PendingInvalidations)
	}
	// The stale entry is still in the backend, but this process will not
	// serve it, nor store a value carrying the pending tag.
	if v, _ := f(ctx, 1); v != 1 {
		t.Fatalf("served %d while the invalidation is pending", v)
	}
	if err := m.RetryPending(ctx); !errors.Is(err, errDown) {
		t.Fatalf("retry while down: %v", err)
	}
	fb.invalidations.Store(false)
	if err := m.RetryPending(ctx); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if m.Stats().PendingInvalidations != 0 {
		t.Fatal("tag still pending after a successful retry")
	}
	before := calls.calls()
	f(ctx, 1)
	f(ctx, 1)
	if calls.calls() != before+1 {
		t.Fatalf("after the retry the entry is cached again once: %d calls", calls.calls()-before)
	}
}

func TestPendingOverflowClearsTheNamespace(t *testing.T) {
	ctx := context.Background()
	fb := &faulty{Backend: memory.New()}
	defer fb.Close()
	m := depcache.New(fb, depcache.WithLogger(quiet), depcache.WithPendingLimit(2), depcache.WithRetryBackoff(time.Hour, time.Hour))
	defer m.Close()
	m.Set(ctx, "other", 1, 0, "unrelated")
	fb.invalidations.Store(true)
	m.InvalidateDependency(ctx, "a", "b", "c")
	var v int
	if found, _ := m.Get(ctx, "other", &v); found {
		t.Fatal("after overflow every entry is suspect, and must not be served")
	}
	fb.invalidations.Store(false)
	if err := m.RetryPending(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := m.Exists(ctx, "other"); ok {
		t.Fatal("overflow retry did not clear the namespace")
	}
	if m.Stats().PendingInvalidations != 0 {
		t.Fatal("still pending")
	}
}

func TestBackgroundRetryDelivers(t *testing.T) {
	ctx := context.Background()
	fb := &faulty{Backend: memory.New()}
	defer fb.Close()
	delivered := make(chan struct{})
	m := depcache.New(fb, depcache.WithLogger(quiet), depcache.WithRetryBackoff(time.Millisecond, time.Millisecond),
		depcache.WithObserver(func(e depcache.Event) {
			if e.Kind == depcache.EventInvalidate {
				close(delivered)
			}
		}))
	defer m.Close()
	m.Set(ctx, "k", 1, 0, "tag")
	fb.invalidations.Store(true)
	m.InvalidateDependency(ctx, "tag")
	fb.invalidations.Store(false)
	<-delivered // the background loop retried on its own
	if ok, _ := m.Exists(ctx, "k"); ok {
		t.Fatal("background retry did not delete the entry")
	}
}

// TestStaleFillIsRefused walks the race of consistency-notes.md: the
// computation reads the database, a write commits and its invalidation
// returns, and only then does the computation try to store.
func TestStaleFillIsRefused(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	db := map[int]string{1: "old"}
	write := func(v string) {
		db[1] = v
		if _, err := m.InvalidateDependency(ctx, "rows::1"); err != nil {
			t.Fatal(err)
		}
	}
	racing := true
	f := depcache.Memoize(func(ctx context.Context, id int) (string, error) {
		v := db[id] // the read
		if racing {
			racing = false
			write("new") // commits and invalidates before the fill
		}
		depcache.AddDependency(ctx, "rows::1") // discovered after the read
		return v, nil
	}, depcache.Using(m), depcache.KeyName("row"))
	if v, _ := f(ctx, 1); v != "old" {
		t.Fatalf("first call returned %q", v)
	}
	if v, _ := f(ctx, 1); v != "new" {
		t.Fatalf("after the write's invalidation returned, a read gave %q", v)
	}
	if m.Stats().StaleFills != 1 {
		t.Fatalf("StaleFills = %d", m.Stats().StaleFills)
	}
}

// leased reports Busy for a key's first lookups, as a store does while
// another process holds the key's fill lease; on the last one the other
// process's value has arrived.
type leased struct {
	backends.Backend
	busyFor int
	lookups int
	arrive  func()
}

func (l *leased) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	l.lookups++
	if l.lookups <= l.busyFor {
		if l.lookups == l.busyFor && l.arrive != nil {
			l.arrive()
		}
		e, err := l.Backend.Epoch(ctx)
		return backends.Lookup{Busy: true, Epoch: e}, err
	}
	return l.Backend.Lookup(ctx, ns, key)
}

func TestBusyLease(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	defer mem.Close()
	var calls counter
	fn := func(ctx context.Context, x int) (int, error) {
		calls.n.Add(1)
		depcache.AddDependency(ctx, "t")
		return x, nil
	}

	// Without a wait, a busy key is computed at once and not filled.
	lb := &leased{Backend: mem, busyFor: 1}
	m := depcache.New(lb, depcache.WithLogger(quiet), depcache.WithName("nowait"))
	f := depcache.Memoize(fn, depcache.Using(m), depcache.KeyName("busy"))
	if v, _ := f(ctx, 1); v != 1 || calls.calls() != 1 || m.Stats().Sets != 0 {
		t.Fatalf("busy without wait: v=%d calls=%d stats=%+v", v, calls.calls(), m.Stats())
	}

	// With a wait, the other process's value is taken when it arrives.
	var key string
	lb = &leased{Backend: mem, busyFor: 3}
	m2 := depcache.New(lb, depcache.WithLogger(quiet), depcache.WithName("wait"), depcache.WithFillWait(time.Minute))
	g := depcache.Memoize(fn, depcache.Using(m2), depcache.KeyName("busy"),
		depcache.OnResult(func(r depcache.Result) { key = r.Key }))
	lb.arrive = func() { m2.Set(ctx, "busy:v1|i:7", 7, 0, "t") }
	if v, _ := g(ctx, 7); v != 7 || calls.calls() != 1 || lb.lookups != 4 {
		t.Fatalf("busy with wait: v=%d calls=%d lookups=%d key=%q", v, calls.calls(), lb.lookups, key)
	}
}

func TestCancelledCallerIsNotABackendError(t *testing.T) {
	m, _ := newManager(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	slow := &faulty{Backend: m.Backend()}
	slow.lookups.Store(true)
	m2 := depcache.New(slow, depcache.WithLogger(quiet), depcache.WithName("cancelled"))
	defer m2.Close()
	f := depcache.Memoize(func(ctx context.Context, x int) (int, error) { return x, nil }, depcache.Using(m2), depcache.KeyName("c"))
	if _, err := f(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("a call on a cancelled ctx returned %v", err)
	}
	if m2.Stats().Errors != 0 {
		t.Fatalf("a caller's cancellation was counted as a backend error: %+v", m2.Stats())
	}
}

// leasing hands out a lease on every miss and records what is given back.
type leasing struct {
	backends.Backend
	released []string
}

func (l *leasing) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	r, err := l.Backend.Lookup(ctx, ns, key)
	if err == nil && !r.Found {
		r.Lease = "lease:" + key
	}
	return r, err
}

func (l *leasing) Release(ctx context.Context, ns, key, lease string) error {
	l.released = append(l.released, lease)
	return nil
}

func TestReadsThatWillNotFillReleaseTheirLease(t *testing.T) {
	ctx := context.Background()
	lb := &leasing{Backend: memory.New()}
	defer lb.Close()
	m := depcache.New(lb, depcache.WithLogger(quiet))
	defer m.Close()
	var v int
	m.Get(ctx, "a", &v)
	m.Exists(ctx, "b")
	f := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
		depcache.SkipFill(ctx, "test")
		return x, nil
	}, depcache.Using(m), depcache.KeyName("skip"))
	f(ctx, 1)
	if len(lb.released) != 3 || lb.released[0] != "lease:a" || lb.released[1] != "lease:b" {
		t.Fatalf("released %q; want the leases of Get, Exists and the skipped fill", lb.released)
	}
}

// Get into a type the stored value does not decode into (the caller's
// mistake) returns the decode error and keeps the entry; bytes that are
// not the codec's at all are a miss and are deleted. Before, the entry
// was deleted and Get said found=false, err=nil (found by a new-user
// check).
func TestGetIntoTheWrongTypeKeepsTheEntry(t *testing.T) {
	ctx := context.Background()
	m := depcache.New(memory.New(), depcache.WithPrefix("wrong-type"))
	defer m.Close()
	if err := m.Set(ctx, "k", "a string", time.Hour); err != nil {
		t.Fatal(err)
	}
	var n int
	if found, err := m.Get(ctx, "k", &n); found || err == nil {
		t.Fatalf("Get of a string into *int = %v, %v; want an error", found, err)
	}
	var s string
	if found, err := m.Get(ctx, "k", &s); !found || err != nil || s != "a string" {
		t.Fatalf("Get into *string after = %q, %v, %v; want the entry kept", s, found, err)
	}
}
