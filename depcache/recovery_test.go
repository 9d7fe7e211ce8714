package depcache_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
)

// downBackend refuses lookups with a network error while down.
type downBackend struct {
	backends.Backend
	down atomic.Bool
}

func (b *downBackend) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	if b.down.Load() {
		return backends.Lookup{}, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	}
	return b.Backend.Lookup(ctx, ns, key)
}

func TestHold(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	m := depcache.New(mem, depcache.WithLogger(quiet))
	defer m.Close()
	ctx := context.Background()
	if err := m.Set(ctx, "k", "v", 0, "t"); err != nil {
		t.Fatal(err)
	}
	release := m.Hold()
	var got string
	if found, err := m.Get(ctx, "k", &got); err != nil || found {
		t.Fatalf("Get while held: found=%v err=%v, want a miss", found, err)
	}
	calls := 0
	fn := func(context.Context) (string, error) { calls++; return "computed", nil }
	for range 2 {
		if v, err := depcache.Fetch(ctx, m, "f", fn, depcache.Deps("t")); err != nil || v != "computed" {
			t.Fatalf("Fetch while held: %q, %v", v, err)
		}
	}
	if calls != 2 {
		t.Errorf("while held the function ran %d times for 2 calls, want 2 (nothing stored)", calls)
	}
	release()
	release() // a second call changes nothing
	if m.Held() {
		t.Fatal("held after release")
	}
	if found, err := m.Get(ctx, "k", &got); err != nil || !found || got != "v" {
		t.Fatalf("Get after release: found=%v %q err=%v, want v", found, got, err)
	}
}

// The breaker closes only once every recovery check passes.
func TestRecoveryCheckKeepsBreakerOpen(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	b := &downBackend{Backend: mem}
	m := depcache.New(b, depcache.WithLogger(quiet), depcache.WithBreaker(1, time.Millisecond))
	defer m.Close()
	ctx := context.Background()
	if err := m.Set(ctx, "k", "v", 0, "t"); err != nil {
		t.Fatal(err)
	}
	var pass atomic.Bool
	var checks atomic.Int64
	remove := m.AddRecoveryCheck(func(context.Context) error {
		checks.Add(1)
		if pass.Load() {
			return nil
		}
		return errors.New("outbox not delivered")
	})
	defer remove()

	b.down.Store(true)
	var got string
	m.Get(ctx, "k", &got) // opens the breaker
	b.down.Store(false)
	// The backend answers, but the check fails: no read is served until
	// it passes, however many probes run.
	for checks.Load() < 3 {
		if found, _ := m.Get(ctx, "k", &got); found {
			t.Fatal("a hit while the recovery check fails")
		}
		time.Sleep(time.Millisecond) // let a probe come due
	}
	pass.Store(true)
	waitFor(t, "a hit once the check passes", func() bool {
		found, _ := m.Get(ctx, "k", &got)
		return found && got == "v"
	})
}
