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

// stallBackend holds a lookup's reply, once armed: the entry has been read
// and the reply is on its way while the test changes the world.
type stallBackend struct {
	backends.Backend
	armed      atomic.Bool
	read       chan struct{} // closed once the armed lookup has read
	reply      chan struct{} // closing it lets the reply through
	refuseInvs atomic.Bool
}

func newStallBackend(b backends.Backend) *stallBackend {
	return &stallBackend{Backend: b, read: make(chan struct{}), reply: make(chan struct{})}
}

func (b *stallBackend) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	l, err := b.Backend.Lookup(ctx, ns, key)
	if b.armed.CompareAndSwap(true, false) {
		close(b.read)
		<-b.reply
	}
	return l, err
}

func (b *stallBackend) Invalidate(ctx context.Context, ns string, tags ...string) (int, error) {
	if b.refuseInvs.Load() {
		return 0, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	}
	return b.Backend.Invalidate(ctx, ns, tags...)
}

// A lookup sent while the manager was held, whose reply arrives after the
// hold ended, read its entry before the delivery that ended the hold (an
// outbox's): it is a miss. The hold was checked only when the reply
// arrived, and such a lookup served the old entry (TestOutboxProcesses saw
// one stale read in a reader started after the recovery).
func TestLookupSpanningTheEndOfAHoldIsAMiss(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	b := newStallBackend(mem)
	m := depcache.New(b, depcache.WithLogger(quiet))
	defer m.Close()
	ctx := context.Background()
	if err := m.Set(ctx, "k", "old", 0, "t"); err != nil {
		t.Fatal(err)
	}
	release := m.Hold()
	b.armed.Store(true)
	type got struct {
		found bool
		v     string
		err   error
	}
	done := make(chan got)
	go func() {
		var v string
		found, err := m.Get(ctx, "k", &v)
		done <- got{found, v, err}
	}()
	<-b.read
	// The delivery: the write's invalidation reaches the backend, then the
	// hold ends; a new value is stored.
	if _, err := m.InvalidateDependency(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	release()
	if err := m.Set(ctx, "k", "new", 0, "t"); err != nil {
		t.Fatal(err)
	}
	close(b.reply)
	if r := <-done; r.err != nil || r.found {
		t.Fatalf("Get read during the hold, answered after it: found=%v %q err=%v, want a miss", r.found, r.v, r.err)
	}
	var v string
	if found, err := m.Get(ctx, "k", &v); err != nil || !found || v != "new" {
		t.Fatalf("a later Get: found=%v %q err=%v, want new", found, v, err)
	}
}

// The same for an invalidation pending retry: a lookup whose round trip
// spans the retry's delivery does not serve what it read.
func TestLookupSpanningAPendingDeliveryIsAMiss(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	b := newStallBackend(mem)
	m := depcache.New(b, depcache.WithLogger(quiet), depcache.WithoutBreaker(),
		depcache.WithRetryBackoff(time.Millisecond, time.Millisecond))
	defer m.Close()
	ctx := context.Background()
	if err := m.Set(ctx, "k", "old", 0, "t"); err != nil {
		t.Fatal(err)
	}
	b.refuseInvs.Store(true)
	if _, err := m.InvalidateDependency(ctx, "t"); err == nil {
		t.Fatal("the invalidation succeeded on a backend refusing it")
	}
	if n := m.Stats().PendingInvalidations; n != 1 {
		t.Fatalf("%d invalidations pending, want 1", n)
	}
	b.armed.Store(true)
	done := make(chan bool)
	go func() {
		var v string
		found, _ := m.Get(ctx, "k", &v)
		done <- found
	}()
	<-b.read
	b.refuseInvs.Store(false)
	waitFor(t, "the pending invalidation's retry", func() bool { return m.Stats().PendingInvalidations == 0 })
	close(b.reply)
	if <-done {
		t.Fatal("Get read while the invalidation was pending, answered after its delivery: a hit on the entry it predates, want a miss")
	}
}

// An entry of manager A carrying B's tag, read while B's invalidation of
// it was pending and answered after B delivered it, is a miss; an entry
// of A carrying none of B's tags stays a hit whatever B delivers.
func TestLookupSpanningAnotherManagersDelivery(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	defer mem.Close()
	store := newStallBackend(mem)
	a := depcache.New(store, depcache.WithName("a"), depcache.WithLogger(quiet), depcache.WithoutBreaker())
	b := depcache.New(store, depcache.WithName("b"), depcache.WithLogger(quiet), depcache.WithoutBreaker())
	defer a.Close()
	defer b.Close()
	page, calls := pageOnPost(a, b)
	if _, err := page(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := a.Set(ctx, "own", "x", 0, "own-tag"); err != nil {
		t.Fatal(err)
	}
	store.refuseInvs.Store(true)
	if _, err := b.InvalidateDependency(ctx, "post:1"); err == nil {
		t.Fatal("the invalidation succeeded on a backend refusing it")
	}
	store.refuseInvs.Store(false)

	// A's page, read while post:1 is pending, answered after its delivery.
	store.armed.Store(true)
	done := make(chan int64)
	go func() {
		page(ctx, 1)
		done <- int64(calls.calls())
	}()
	<-store.read
	if err := b.RetryPending(ctx); err != nil {
		t.Fatal(err)
	}
	close(store.reply)
	if n := <-done; n != 2 {
		t.Fatalf("page ran %d times, want 2: the entry read before B delivered post:1 was served", n)
	}

	// A's own entry, answered after another delivery of B's, is a hit.
	store.refuseInvs.Store(true)
	b.InvalidateDependency(ctx, "post:2")
	store.refuseInvs.Store(false)
	store.read, store.reply = make(chan struct{}), make(chan struct{})
	store.armed.Store(true)
	found := make(chan bool)
	go func() {
		var v string
		ok, _ := a.Get(ctx, "own", &v)
		found <- ok
	}()
	<-store.read
	if err := b.RetryPending(ctx); err != nil {
		t.Fatal(err)
	}
	close(store.reply)
	if !<-found {
		t.Fatal("an entry carrying no tag of B's was a miss because B delivered an invalidation meanwhile")
	}
}

// Two managers of one prefix on one backend read and fill the same
// entries: a Hold, a pending invalidation or an open breaker of one keeps
// the other from serving them too. Each covered only itself.
func TestManagersOfOnePrefixCoverEachOther(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	defer mem.Close()
	store := newStallBackend(mem)
	a := depcache.New(store, depcache.WithPrefix("shared"), depcache.WithLogger(quiet), depcache.WithoutBreaker())
	b := depcache.New(store, depcache.WithPrefix("shared"), depcache.WithLogger(quiet), depcache.WithoutBreaker())
	defer a.Close()
	defer b.Close()
	if err := a.Set(ctx, "k", "v", 0, "t"); err != nil {
		t.Fatal(err)
	}
	var v string
	hit := func() bool {
		found, err := a.Get(ctx, "k", &v)
		if err != nil {
			t.Fatal(err)
		}
		return found
	}
	if !hit() {
		t.Fatal("no hit before anything happened")
	}
	release := b.Hold()
	if hit() {
		t.Error("a served an entry of its prefix while b, of the same prefix, was held")
	}
	release()
	if !hit() {
		t.Error("no hit after b's hold ended")
	}
	store.refuseInvs.Store(true)
	if _, err := b.InvalidateDependency(ctx, "t"); err == nil {
		t.Fatal("the invalidation succeeded on a backend refusing it")
	}
	store.refuseInvs.Store(false)
	if hit() {
		t.Error("a served an entry carrying t while b's invalidation of t was pending retry")
	}
	if err := b.RetryPending(ctx); err != nil {
		t.Fatal(err)
	}
	if hit() {
		t.Error("the entry survived b's delivered invalidation")
	}
	// Another prefix on the same backend is not held by b.
	c := depcache.New(store, depcache.WithPrefix("other"), depcache.WithLogger(quiet))
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0, "t"); err != nil {
		t.Fatal(err)
	}
	release = b.Hold()
	defer release()
	if found, err := c.Get(ctx, "k", &v); !found || err != nil {
		t.Errorf("a manager of another prefix missed while b was held: found=%v err=%v", found, err)
	}
}
