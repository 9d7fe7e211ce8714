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

// outageBackend is a memory store (with its notifier, for the tier) whose
// lookups of other keys than "k" fail while down, and whose lookup of "k",
// once armed, holds its reply: the entry has been read and the reply is on
// its way while the breaker opens (and, with a recovery check, closes).
type outageBackend struct {
	*memory.Backend
	down  atomic.Bool
	armed atomic.Bool
	read  chan struct{} // closed once the armed lookup has read
	reply chan struct{} // closing it lets the reply through
}

func newOutageBackend() *outageBackend {
	return &outageBackend{Backend: memory.New(), read: make(chan struct{}), reply: make(chan struct{})}
}

func (b *outageBackend) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	if b.down.Load() {
		return backends.Lookup{}, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	}
	l, err := b.Backend.Lookup(ctx, ns, key)
	if key == "k" && b.armed.CompareAndSwap(true, false) {
		close(b.read)
		<-b.reply
	}
	return l, err
}

// breakerEvents records the breaker's openings and closings.
type breakerEvents struct{ opened, closed atomic.Int64 }

func (e *breakerEvents) observe(ev depcache.Event) {
	switch ev.Kind {
	case depcache.EventBreakerOpen:
		e.opened.Add(1)
	case depcache.EventBreakerClose:
		e.closed.Add(1)
	}
}

// A lookup sent while the breaker was closed, whose reply arrives after
// the breaker opened, read its entry at some point of an outage after
// which the manager serves nothing until its recovery checks (a durable
// outbox's delivery) have passed: it is a miss, whether the reply arrives
// while the breaker is still open or after the recovery closed it. Only a
// Hold and the pending set were counted (aedae5d), so such a reply served
// the entry the delivery had condemned.
func TestLookupSpanningABreakerOpeningIsAMiss(t *testing.T) {
	for _, tc := range []struct {
		name    string
		recover bool // the reply arrives after the recovery check closed the breaker
	}{
		{"reply while open", false},
		{"reply after recovery", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newOutageBackend()
			defer b.Close()
			var evs breakerEvents
			// A huge openFor: no probe comes due unless the test wants one
			// (it then uses a manager whose openFor is short).
			m := depcache.New(b, depcache.WithLogger(quiet), depcache.WithObserver(evs.observe),
				depcache.WithBreaker(1, openFor(tc.recover)))
			defer m.Close()
			ctx := context.Background()
			if err := m.Set(ctx, "k", "old", 0, "t"); err != nil {
				t.Fatal(err)
			}
			// The outbox's recovery check: the write committed during the
			// outage is delivered before the breaker closes.
			var delivered atomic.Bool
			defer m.AddRecoveryCheck(func(ctx context.Context) error {
				if _, err := m.InvalidateDependency(ctx, "t"); err != nil {
					return err
				}
				delivered.Store(true)
				return nil
			})()

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
			// The outage: another read fails and opens the breaker.
			b.down.Store(true)
			var v string
			m.Get(ctx, "other", &v)
			if evs.opened.Load() != 1 {
				t.Fatalf("the breaker opened %d times, want 1", evs.opened.Load())
			}
			b.down.Store(false)
			if tc.recover {
				waitFor(t, "the breaker to close after the recovery check", func() bool {
					m.Get(ctx, "other", &v) // starts the probe once due
					return evs.closed.Load() == 1
				})
				if !delivered.Load() {
					t.Fatal("the breaker closed before the recovery check delivered")
				}
				if err := m.Set(ctx, "k", "new", 0, "t"); err != nil {
					t.Fatal(err)
				}
			}
			close(b.reply)
			if r := <-done; r.err != nil || r.found {
				t.Fatalf("Get sent before the breaker opened, answered after: found=%v %q err=%v, want a miss", r.found, r.v, r.err)
			}
		})
	}
}

func openFor(short bool) time.Duration {
	if short {
		return time.Millisecond
	}
	return time.Hour
}

// While the breaker is open after an outage, the in-process tier serves
// nothing either: the manager serves nothing from the cache until its
// recovery checks (a durable outbox's delivery of the writes committed
// during the outage) have passed. The tier checked only its lease, which
// outlives the opening of the breaker (up to a lease on Redis, and for
// good after a freeze that kept the subscription), so it served values
// the outbox had not yet invalidated.
func TestLocalCacheServesNothingWhileTheBreakerIsOpen(t *testing.T) {
	b := newOutageBackend()
	defer b.Close()
	var evs breakerEvents
	m := depcache.New(b, depcache.WithLogger(quiet), depcache.WithObserver(evs.observe),
		depcache.WithLocalCache(100), depcache.WithBreaker(1, time.Millisecond))
	defer m.Close()
	ctx := context.Background()
	waitFor(t, "the tier's lease", m.LocalCacheServing)
	var pass atomic.Bool
	defer m.AddRecoveryCheck(func(context.Context) error {
		if !pass.Load() {
			return errors.New("outbox not delivered")
		}
		return nil
	})()
	calls := 0
	fn := func(context.Context) (string, error) { calls++; return "old", nil }
	if v, err := depcache.Fetch(ctx, m, "f", fn, depcache.Deps("t")); err != nil || v != "old" || calls != 1 {
		t.Fatalf("Fetch: %q, %v, %d runs, want a fill", v, err, calls)
	}
	if v, err := depcache.Fetch(ctx, m, "f", fn, depcache.Deps("t")); err != nil || v != "old" || m.Stats().LocalHits != 1 {
		t.Fatalf("Fetch: %q, %v, %d tier hits, want a tier hit", v, err, m.Stats().LocalHits)
	}
	b.down.Store(true)
	var v string
	m.Get(ctx, "other", &v)
	if evs.opened.Load() != 1 {
		t.Fatalf("the breaker opened %d times, want 1", evs.opened.Load())
	}
	b.down.Store(false) // it answers, but the outbox is not delivered yet
	hits := m.Stats().LocalHits
	if _, err := depcache.Fetch(ctx, m, "f", fn, depcache.Deps("t")); err != nil {
		t.Fatal(err)
	}
	if n := m.Stats().LocalHits - hits; n != 0 || calls != 2 {
		t.Fatalf("while the breaker is open (recovery check failing): %d tier hits, %d runs; want none and the function run", n, calls)
	}
	pass.Store(true)
	waitFor(t, "the breaker to close", func() bool {
		m.Get(ctx, "other", &v)
		return evs.closed.Load() == 1
	})
}

// nsDown refuses the lookups of one namespace while down.
type nsDown struct {
	backends.Backend
	ns   string
	down atomic.Bool
}

func (b *nsDown) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	if ns == b.ns && b.down.Load() {
		return backends.Lookup{}, errDown
	}
	return b.Backend.Lookup(ctx, ns, key)
}

// While B's breaker is open (B saw the backend fail; its recovery checks,
// a durable outbox's delivery, have not passed), this process serves no
// entry of A that depends on B's tags either: A's breaker did not open,
// and A served a page built from B's post:1 that B's outbox had yet to
// invalidate.
func TestOpenBreakerOfAnotherManagerCoversItsTags(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	store := &nsDown{Backend: mem}
	b := depcache.New(store, depcache.WithName("b"), depcache.WithLogger(quiet), depcache.WithBreaker(1, time.Hour))
	store.ns = b.Prefix()
	a := depcache.New(store, depcache.WithName("a"), depcache.WithLogger(quiet))
	t.Cleanup(func() { a.Close(); b.Close(); mem.Close() })
	page, calls := pageOnPost(a, b)
	warmPage(t, page, calls)
	store.down.Store(true)
	var v string
	b.Get(ctx, "x", &v) // B's breaker opens
	if b.Stats().BreakerOpens != 1 {
		t.Fatalf("B's breaker opened %d times, want 1", b.Stats().BreakerOpens)
	}
	page(ctx, 1)
	page(ctx, 1)
	if calls.calls() != 3 {
		t.Fatalf("page ran %d times while B's breaker was open; want 3: an entry carrying B's post:1 was served or stored", calls.calls())
	}
}

// failLater fails, once armed, one lookup of its namespace: it signals,
// waits for the test, and returns a network error.
type failLater struct {
	backends.Backend
	ns    string
	armed atomic.Bool
	read  chan struct{}
	reply chan struct{}
}

func (b *failLater) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	if ns == b.ns && b.armed.CompareAndSwap(true, false) {
		close(b.read)
		<-b.reply
		return backends.Lookup{}, errDown
	}
	return b.Backend.Lookup(ctx, ns, key)
}

// A manager closed while one of its lookups was under way, whose failure
// then opens its breaker, is not indexed again: a closed manager never
// stops others from serving entries that carry its tags. The breaker's
// opening indexed it after Close had removed it, for good, and every
// entry of A carrying B's post:1 was a miss from then on.
func TestClosedManagerStaysOutOfThePairsIndex(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	store := &failLater{Backend: mem, read: make(chan struct{}), reply: make(chan struct{})}
	b := depcache.New(store, depcache.WithName("b"), depcache.WithLogger(quiet), depcache.WithBreaker(1, time.Hour))
	store.ns = b.Prefix()
	a := depcache.New(store, depcache.WithName("a"), depcache.WithLogger(quiet))
	t.Cleanup(func() { a.Close(); mem.Close() })
	page, calls := pageOnPost(a, b)
	page(ctx, 1)
	store.armed.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var v string
		b.Get(ctx, "x", &v)
	}()
	<-store.read
	b.Close()
	close(store.reply) // the lookup fails after Close: the breaker opens
	<-done
	if b.Stats().BreakerOpens != 1 {
		t.Fatalf("B's breaker opened %d times, want 1", b.Stats().BreakerOpens)
	}
	page(ctx, 1)
	if calls.calls() != 1 {
		t.Fatalf("page ran %d times; want 1: an entry carrying a closed manager's tag was refused", calls.calls())
	}
}

// While B's breaker is open, A's reads of entries carrying B's tags start
// B's probes, as B's own reads do: B's breaker closes once the backend
// answers (and B's recovery checks pass) even if B reads nothing itself,
// and A serves those entries again. Without that, a B whose reads stopped
// kept its breaker open for good, and A refused them for good.
func TestReadsOfAnotherManagersTagsProbeItsBreaker(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	store := &nsDown{Backend: mem}
	b := depcache.New(store, depcache.WithName("b"), depcache.WithLogger(quiet), depcache.WithBreaker(1, time.Millisecond))
	store.ns = b.Prefix()
	a := depcache.New(store, depcache.WithName("a"), depcache.WithLogger(quiet))
	t.Cleanup(func() { a.Close(); b.Close(); mem.Close() })
	page, calls := pageOnPost(a, b)
	page(ctx, 1)
	store.down.Store(true)
	var v string
	b.Get(ctx, "x", &v) // B's breaker opens; B reads nothing more
	if b.Stats().BreakerOpens != 1 {
		t.Fatalf("B's breaker opened %d times, want 1", b.Stats().BreakerOpens)
	}
	store.down.Store(false)
	waitFor(t, "A's page served from the cache again", func() bool {
		before := calls.calls()
		page(ctx, 1)
		return calls.calls() == before
	})
}
