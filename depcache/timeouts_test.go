package depcache_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/internal/redistest"
)

// The frozen-server tests configure cacheTimeout and assert that a call
// ends within frozenBound, twenty times more: far below the 5-10 s a call
// took when the client ignored deadlines, and wide enough for a slow
// machine.
const (
	cacheTimeout = 50 * time.Millisecond
	frozenBound  = 20 * cacheTimeout
)

// frozenManager returns a manager on a Redis that accepts connections and
// never answers.
func frozenManager(t *testing.T, opts ...depcache.Option) *depcache.Manager {
	t.Helper()
	addr, _ := redistest.Frozen(t)
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	m := depcache.New(redisbackend.New(c, redisbackend.WithLogger(quiet)),
		append([]depcache.Option{depcache.WithLogger(quiet), depcache.WithPrefix("frozen"), depcache.WithTimeout(cacheTimeout)}, opts...)...)
	t.Cleanup(func() { m.Close() })
	return m
}

// A memoized call on a frozen Redis runs its function and returns within
// about one timeout, paying it once: the failed lookup is the call's only
// cache operation.
func TestFrozenRedisMemoizedCallPaysOneTimeout(t *testing.T) {
	m := frozenManager(t)
	var runs atomic.Int64
	square := depcache.Memoize(func(ctx context.Context, n int) (int, error) {
		runs.Add(1)
		return n * n, nil
	}, depcache.Using(m), depcache.KeyName("square"))
	for i := range 3 {
		start := time.Now()
		v, err := square(context.Background(), 7)
		took := time.Since(start)
		if err != nil || v != 49 {
			t.Fatalf("call %d: %v, %v; want 49, nil", i, v, err)
		}
		if took > frozenBound {
			t.Errorf("call %d took %v, want at most %v (timeout %v)", i, took, frozenBound, cacheTimeout)
		}
		if got := m.Stats().Errors; got != uint64(i+1) {
			t.Errorf("after call %d: %d backend errors, want %d (one timeout per call)", i, got, i+1)
		}
	}
	if runs.Load() != 3 {
		t.Errorf("function ran %d times, want 3", runs.Load())
	}
}

// A caller's deadline shorter than the cache's timeout leaves the function
// time to run: the cache waits at most half of what remains of it.
func TestCallerDeadlineLeavesTheFunctionTime(t *testing.T) {
	m := frozenManager(t, depcache.WithTimeout(time.Hour))
	ran := false
	fn := depcache.Memoize(func(ctx context.Context, n int) (int, error) {
		ran = true
		return n + 1, nil
	}, depcache.Using(m), depcache.KeyName("inc"))
	ctx, cancel := context.WithTimeout(context.Background(), frozenBound)
	defer cancel()
	v, err := fn(ctx, 1)
	if err != nil || v != 2 || !ran {
		t.Fatalf("call with a %v deadline: %v, %v, ran %v; want 2, nil, ran", frozenBound, v, err, ran)
	}
}

// InvalidateDependency on a frozen Redis fails within its invalidation
// timeout and leaves the tags to the retry queue.
func TestFrozenRedisInvalidationFailsWithinItsTimeout(t *testing.T) {
	m := frozenManager(t, depcache.WithInvalidationTimeout(cacheTimeout))
	start := time.Now()
	_, err := m.InvalidateDependency(context.Background(), "user:1")
	took := time.Since(start)
	if err == nil {
		t.Fatal("InvalidateDependency on a frozen Redis succeeded")
	}
	if took > frozenBound {
		t.Errorf("InvalidateDependency took %v, want at most %v (invalidation timeout %v)", took, frozenBound, cacheTimeout)
	}
	if got := m.Stats().PendingInvalidations; got != 1 {
		t.Errorf("%d invalidations pending retry, want 1", got)
	}
}

// opCounter counts the backend operations a call makes, and fails or
// shapes them as told (a lookup miss that hands out a lease, or that
// carries no epoch, as after a corrupt entry).
type opCounter struct {
	backends.Backend
	failLookups, failEpochs, failFills bool
	busy, lease, noEpoch, staleFills   bool

	lookups, epochs, fills, releases atomic.Int64
}

var _ backends.Releaser = (*opCounter)(nil)

func (o *opCounter) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	o.lookups.Add(1)
	if o.failLookups {
		return backends.Lookup{}, context.DeadlineExceeded
	}
	l, err := o.Backend.Lookup(ctx, ns, key)
	l.Busy = l.Busy || o.busy
	if o.lease && !l.Found {
		l.Lease = "lease"
	}
	if o.noEpoch {
		l.Epoch = backends.Epoch{}
	}
	return l, err
}

func (o *opCounter) Epoch(ctx context.Context) (backends.Epoch, error) {
	o.epochs.Add(1)
	if o.failEpochs {
		return backends.Epoch{}, context.DeadlineExceeded
	}
	return o.Backend.Epoch(ctx)
}

func (o *opCounter) Fill(ctx context.Context, ns string, f backends.Fill) error {
	o.fills.Add(1)
	switch {
	case o.failFills:
		return context.DeadlineExceeded
	case o.staleFills:
		return backends.ErrStale
	}
	return o.Backend.Fill(ctx, ns, f)
}

func (o *opCounter) Release(ctx context.Context, ns, key, lease string) error {
	o.releases.Add(1)
	return nil
}

// Once the lookup of a call failed, the call reads no epoch and fills
// nothing: the backend is not asked again within the call.
func TestFailedLookupSkipsTheRestOfTheCall(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	b := &opCounter{Backend: mem, failLookups: true}
	m := depcache.New(b, depcache.WithLogger(quiet), depcache.WithName(t.Name()))
	defer m.Close()
	fn := depcache.Memoize(func(ctx context.Context, n int) (int, error) {
		depcache.AddDependency(ctx, "n")
		return n, nil
	}, depcache.Using(m), depcache.KeyName("id"))
	if v, err := fn(context.Background(), 3); err != nil || v != 3 {
		t.Fatalf("call: %v, %v; want 3, nil", v, err)
	}
	if l, e, f := b.lookups.Load(), b.epochs.Load(), b.fills.Load(); l != 1 || e != 0 || f != 0 {
		t.Errorf("backend saw %d lookups, %d epoch reads, %d fills; want 1, 0, 0", l, e, f)
	}
}

// Waiting for another process's fill is bounded by the caller's deadline
// as any cache operation is: the function still runs within it.
func TestFillWaitLeavesTheFunctionTime(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	b := &opCounter{Backend: mem, busy: true}
	m := depcache.New(b, depcache.WithLogger(quiet), depcache.WithName(t.Name()), depcache.WithFillWait(time.Hour))
	defer m.Close()
	ran := false
	fn := depcache.Memoize(func(ctx context.Context, n int) (int, error) {
		ran = true
		return n, nil
	}, depcache.Using(m), depcache.KeyName("id"))
	ctx, cancel := context.WithTimeout(context.Background(), frozenBound)
	defer cancel()
	if v, err := fn(ctx, 5); err != nil || v != 5 || !ran {
		t.Fatalf("call with a %v deadline while another fills: %v, %v, ran %v; want 5, nil, ran", frozenBound, v, err, ran)
	}
}

// A call holding a fill lease whose epoch read or fill failed leaves the
// lease to expire instead of asking the failed backend again to release
// it; a fill refused as stale by a working backend still releases it.
func TestFailedCallLeavesItsLeaseToExpire(t *testing.T) {
	cases := []struct {
		name         string
		b            *opCounter
		wantReleases int64
	}{
		{"epoch read fails", &opCounter{lease: true, noEpoch: true, failEpochs: true}, 0},
		{"fill fails", &opCounter{lease: true, failFills: true}, 0},
		{"fill refused as stale", &opCounter{lease: true, staleFills: true}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mem := memory.New()
			defer mem.Close()
			b := tc.b
			b.Backend = mem
			m := depcache.New(b, depcache.WithLogger(quiet), depcache.WithName(t.Name()))
			defer m.Close()
			fn := depcache.Memoize(func(ctx context.Context, n int) (int, error) {
				depcache.AddDependency(ctx, "n")
				return n, nil
			}, depcache.Using(m), depcache.KeyName("id"))
			if v, err := fn(context.Background(), 4); err != nil || v != 4 {
				t.Fatalf("call: %v, %v; want 4, nil", v, err)
			}
			if got := b.releases.Load(); got != tc.wantReleases {
				t.Errorf("%d lease releases, want %d", got, tc.wantReleases)
			}
		})
	}
}

// The same under a caller context that can end but has no deadline (an
// HTTP request's): such operations are bounded by a shared deadline
// without a timer of their own, and must still end within the timeout, on
// every call and with several at once on a one-connection pool (the
// others wait for a pool turn, which only ctx.Done() bounds).
func TestFrozenRedisCancellableCallerPaysOneTimeout(t *testing.T) {
	addr, _ := redistest.Frozen(t)
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, PoolSize: 1, PoolTimeout: time.Minute})
	t.Cleanup(func() { c.Close() })
	m := depcache.New(redisbackend.New(c, redisbackend.WithLogger(quiet)),
		depcache.WithLogger(quiet), depcache.WithPrefix("frozen"), depcache.WithTimeout(cacheTimeout))
	t.Cleanup(func() { m.Close() })
	square := depcache.Memoize(func(ctx context.Context, n int) (int, error) {
		return n * n, nil
	}, depcache.Using(m), depcache.KeyName("square-cancellable"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 3 {
		start := time.Now()
		errs := make(chan error, 4)
		for range 4 {
			go func() {
				v, err := square(ctx, 7)
				if err == nil && v != 49 {
					err = context.Canceled // any non-nil: a wrong value
				}
				errs <- err
			}()
		}
		for range 4 {
			if err := <-errs; err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		if took := time.Since(start); took > frozenBound {
			t.Errorf("round %d took %v, want at most %v (timeout %v)", i, took, frozenBound, cacheTimeout)
		}
	}
}
