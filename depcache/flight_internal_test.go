package depcache

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/depcache/go-depcache/backends/memory"
)

// waitForWaiters yields until n callers wait on the flight for key.
func waitForWaiters(m *Manager, key string, n int32) {
	for {
		m.flights.mu.Lock()
		f := m.flights.m[flightKey{key: key}]
		m.flights.mu.Unlock()
		if f != nil && f.waiters.Load() >= n {
			return
		}
		runtime.Gosched()
	}
}

func TestConcurrentMissesRunOnce(t *testing.T) {
	for _, store := range []bool{true, false} {
		ctx := context.Background()
		b := memory.New()
		m := New(b, WithName("flight"))
		var calls atomic.Int32
		started, release := make(chan struct{}), make(chan struct{})
		var key string
		f := Memoize(func(ctx context.Context, x int) (int, error) {
			if calls.Add(1) == 1 {
				key = CurrentKey(ctx)
				close(started)
				<-release
			}
			AddDependency(ctx, "t")
			if !store {
				SkipFill(ctx, "test")
			}
			return x * 2, nil
		}, Using(m), KeyName("flight"))

		const n = 8
		var wg sync.WaitGroup
		results := make([]int, n)
		wg.Add(1)
		go func() { defer wg.Done(); results[0], _ = f(ctx, 21) }()
		<-started
		for i := 1; i < n; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); results[i], _ = f(ctx, 21) }()
		}
		waitForWaiters(m, key, n-1)
		close(release)
		wg.Wait()
		for i, r := range results {
			if r != 42 {
				t.Fatalf("caller %d got %d", i, r)
			}
		}
		want := int32(1)
		if !store {
			want = n // a flight whose value was not stored is not shared
		}
		if calls.Load() != want {
			t.Fatalf("store=%v: function ran %d times, want %d", store, calls.Load(), want)
		}
		m.Close()
		b.Close()
	}
}

func TestCancelledWaiterLeaves(t *testing.T) {
	ctx := context.Background()
	b := memory.New()
	defer b.Close()
	m := New(b, WithName("cancel"))
	defer m.Close()
	started, release := make(chan struct{}), make(chan struct{})
	var key string
	f := Memoize(func(ctx context.Context, x int) (int, error) {
		key = CurrentKey(ctx)
		close(started)
		<-release
		AddDependency(ctx, "t")
		return x, nil
	}, Using(m), KeyName("cancel"))
	done := make(chan int)
	go func() { v, _ := f(ctx, 1); done <- v }()
	<-started
	wctx, cancel := context.WithCancel(ctx)
	werr := make(chan error)
	go func() { _, err := f(wctx, 1); werr <- err }()
	waitForWaiters(m, key, 1)
	cancel()
	if err := <-werr; err != context.Canceled {
		t.Fatalf("cancelled waiter returned %v", err)
	}
	close(release)
	if v := <-done; v != 1 {
		t.Fatalf("leader got %d after a waiter left", v)
	}
}

func TestPanicDoesNotWedgeTheKey(t *testing.T) {
	ctx := context.Background()
	b := memory.New()
	defer b.Close()
	m := New(b, WithName("panic"))
	defer m.Close()
	boom := true
	f := Memoize(func(ctx context.Context, x int) (int, error) {
		AddDependency(ctx, "t")
		if boom {
			panic("boom")
		}
		return x, nil
	}, Using(m), KeyName("panic"))
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the panic was swallowed")
			}
		}()
		f(ctx, 1)
	}()
	boom = false
	if v, err := f(ctx, 1); v != 1 || err != nil {
		t.Fatalf("after a panic: %v, %v", v, err)
	}
	if len(m.flights.m) != 0 {
		t.Fatalf("a flight outlived its panic")
	}
}
