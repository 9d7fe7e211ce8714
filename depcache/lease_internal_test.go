package depcache

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/backends/redisbackend"
)

// leasing is a store that takes a fill lease at every miss, as Redis
// Cluster does, and records which leases are still out.
type leasing struct {
	backends.Backend
	mu     sync.Mutex
	leases map[string]string // key → token
	next   int
	// hold, if set, is called by Lookup after it took a lease and before
	// it returns, so a test can order callers.
	hold func(key string)
}

func newLeasing() *leasing {
	return &leasing{Backend: memory.New(), leases: map[string]string{}}
}

func (b *leasing) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	l, err := b.Backend.Lookup(ctx, ns, key)
	if err != nil || l.Found {
		return l, err
	}
	b.mu.Lock()
	if _, busy := b.leases[key]; busy {
		b.mu.Unlock()
		l.Busy = true
		return l, nil
	}
	b.next++
	l.Lease = strconv.Itoa(b.next)
	b.leases[key] = l.Lease
	hold := b.hold
	b.mu.Unlock()
	if hold != nil {
		hold(key)
	}
	return l, nil
}

func (b *leasing) Fill(ctx context.Context, ns string, f backends.Fill) error {
	b.mu.Lock()
	if b.leases[f.Key] != f.Lease {
		b.mu.Unlock()
		return backends.ErrStale
	}
	delete(b.leases, f.Key)
	b.mu.Unlock()
	return b.Backend.Fill(ctx, ns, f)
}

func (b *leasing) Release(_ context.Context, _, key, lease string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.leases[key] == lease {
		delete(b.leases, key)
	}
	return nil
}

// out returns the number of leases still held.
func (b *leasing) out() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.leases)
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

var _ backends.Releaser = (*leasing)(nil)

// A caller that took the lease at its miss and then waits on another
// caller's flight gives the lease back when its context ends; otherwise the
// key stays unfillable for the lease's whole TTL.
func TestLeaseReturnedWhenWaiterLeaves(t *testing.T) {
	ctx := context.Background()
	b := newLeasing()
	defer b.Close()
	m := New(b, WithName("lease-waiter"), WithLogger(discard))
	defer m.Close()

	// Caller W takes the lease and is held inside its lookup while caller
	// L misses (busy) and leads the flight.
	inLookup, resume := make(chan struct{}), make(chan struct{})
	b.hold = func(string) {
		b.hold = nil
		close(inLookup)
		<-resume
	}
	leading, finish := make(chan struct{}), make(chan struct{})
	var key string
	f := Memoize(func(ctx context.Context, x int) (int, error) {
		AddDependency(ctx, "t")
		if key == "" {
			key = CurrentKey(ctx)
			close(leading)
			<-finish
		}
		return x, nil
	}, Using(m), KeyName("lease-waiter"))

	wctx, cancel := context.WithCancel(ctx)
	werr := make(chan error)
	go func() { _, err := f(wctx, 1); werr <- err }()
	<-inLookup
	ldone := make(chan struct{})
	go func() { f(ctx, 1); close(ldone) }()
	<-leading
	close(resume)
	waitForWaiters(m, key, 1)
	cancel()
	if err := <-werr; !errors.Is(err, context.Canceled) {
		t.Fatalf("waiter returned %v", err)
	}
	close(finish)
	<-ldone
	if n := b.out(); n != 0 {
		t.Fatalf("%d lease(s) still held after every caller returned", n)
	}
	if _, err := f(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if ok, _ := m.Exists(ctx, key); !ok {
		t.Fatal("the key could not be filled after the waiter left")
	}
}

// Every way a memoized call can end without storing gives its lease back.
func TestLeaseReturnedOnEveryExit(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		fn   func(ctx context.Context, x int) (float64, error)
		prep func(m *Manager)
	}{
		{name: "panic", fn: func(ctx context.Context, x int) (float64, error) { panic("boom") }},
		{name: "skip fill", fn: func(ctx context.Context, x int) (float64, error) {
			SkipFill(ctx, "test")
			return float64(x), nil
		}},
		{name: "encode error", fn: func(ctx context.Context, x int) (float64, error) {
			return math.NaN(), nil // JSON cannot encode it
		}},
		{name: "uncached error", fn: func(ctx context.Context, x int) (float64, error) {
			return 0, errors.New("not cached")
		}},
		{name: "closed during the call", fn: func(ctx context.Context, x int) (float64, error) {
			CurrentManager(ctx).Close()
			return float64(x), nil
		}},
		{name: "closed before the call", prep: func(m *Manager) { m.Close() }, fn: func(ctx context.Context, x int) (float64, error) {
			return float64(x), nil
		}},
		{name: "pending tag", fn: func(ctx context.Context, x int) (float64, error) {
			CurrentManager(ctx).pending.add([]string{"t"})
			return float64(x), nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newLeasing()
			defer b.Close()
			m := New(b, WithName("lease-exit"), WithLogger(discard))
			defer m.Close()
			var key string
			f := Memoize(func(ctx context.Context, x int) (float64, error) {
				key = CurrentKey(ctx)
				AddDependency(ctx, "t")
				return tc.fn(ctx, x)
			}, Using(m), KeyName("lease-exit"))
			if tc.prep != nil {
				tc.prep(m)
			}
			func() {
				defer func() { recover() }()
				f(ctx, 1)
			}()
			if n := b.out(); n != 0 {
				t.Fatalf("%d lease(s) still held", n)
			}
			if l, err := b.Backend.Lookup(ctx, m.Prefix(), key); err != nil || l.Found {
				t.Fatalf("an entry was stored (%v)", err)
			}
		})
	}
}

// The same on a real store: a Redis with its fill lock on. A panic in the
// first call must not leave the key unfillable until the lease expires.
func TestLeaseReturnedAfterPanicRedisFillLock(t *testing.T) {
	ctx := context.Background()
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer client.Close()
	b := redisbackend.New(client, redisbackend.WithFillLock(), redisbackend.WithLogger(discard))
	m := New(b, WithPrefix("leasetest"), WithLogger(discard))
	defer m.Close()
	boom := true
	var key string
	f := Memoize(func(ctx context.Context, x int) (int, error) {
		key = CurrentKey(ctx)
		AddDependency(ctx, "t")
		if boom {
			panic("boom")
		}
		return x, nil
	}, Using(m), KeyName("lease-redis"))
	func() {
		defer func() { recover() }()
		f(ctx, 1)
	}()
	boom = false
	if _, err := f(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if ok, err := m.Exists(ctx, key); !ok || err != nil {
		t.Fatalf("after a panic the key could not be filled: exists=%v err=%v", ok, err)
	}
}
