package depcache_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
)

// pausingClear is a faulty backend whose Clear, once armed, runs and then
// waits before it returns, so a test can fail an invalidation while the
// overflow Clear is under way.
type pausingClear struct {
	*faulty
	armed   atomic.Bool
	cleared chan struct{} // closed when the armed Clear has run
	resume  chan struct{} // the armed Clear returns once this is closed
}

func (p *pausingClear) Clear(ctx context.Context, ns string) (int, error) {
	n, err := p.faulty.Clear(ctx, ns)
	if p.armed.CompareAndSwap(true, false) {
		close(p.cleared)
		<-p.resume
	}
	return n, err
}

// A tag whose invalidation fails while the overflow Clear runs stays
// pending once that Clear succeeds: the Clear did not cover the write behind
// it, and the entry it condemned must not be served.
func TestPendingTagFailingDuringOverflowClearStaysPending(t *testing.T) {
	ctx := context.Background()
	fb := &pausingClear{faulty: &faulty{Backend: memory.New()}}
	defer fb.Close()
	m := depcache.New(fb, depcache.WithLogger(quiet), depcache.WithPendingLimit(1), depcache.WithRetryBackoff(time.Hour, time.Hour))
	defer m.Close()
	// Another process on the same Redis and prefix, which knows nothing of
	// this one's failures.
	other := depcache.New(fb, depcache.WithLogger(quiet), depcache.WithPrefix(m.Prefix()))
	defer other.Close()

	fb.invalidations.Store(true)
	m.InvalidateDependency(ctx, "a", "b") // overflows: a Clear is pending
	fb.cleared, fb.resume = make(chan struct{}), make(chan struct{})
	fb.armed.Store(true)
	retried := make(chan error)
	go func() { retried <- m.RetryPending(ctx) }()
	<-fb.cleared
	// After the Clear swept the namespace, another process stores an entry
	// tagged c (read before the write below), the write commits and its
	// invalidation fails.
	if err := other.Set(ctx, "page", "old", 0, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.InvalidateDependency(ctx, "c"); !errors.Is(err, errDown) {
		t.Fatalf("invalidation of c: %v", err)
	}
	close(fb.resume)
	if err := <-retried; !errors.Is(err, errDown) {
		t.Fatalf("retry while invalidations fail: %v", err) // a is still pending
	}
	var v string
	if found, _ := m.Get(ctx, "page", &v); found {
		t.Fatalf("served %q, condemned by an invalidation that is still failing", v)
	}
	if m.Stats().PendingInvalidations == 0 {
		t.Fatal("the failed invalidation of c was dropped")
	}
	fb.invalidations.Store(false)
	if err := m.RetryPending(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := m.Exists(ctx, "page"); ok {
		t.Fatal("the entry survived the retry")
	}
	if n := m.Stats().PendingInvalidations; n != 0 {
		t.Fatalf("%d still pending after every retry succeeded", n)
	}
}

// The overflow Clear is as strong as the invalidations it replaces for the
// tags it still knows: a fill that started before it, carrying one of them,
// is refused after it.
func TestOverflowClearStampsTheTagsItKnows(t *testing.T) {
	ctx := context.Background()
	fb := &faulty{Backend: memory.New()}
	defer fb.Close()
	m := depcache.New(fb, depcache.WithLogger(quiet), depcache.WithPendingLimit(1), depcache.WithRetryBackoff(time.Hour, time.Hour))
	defer m.Close()

	// Another process on the same Redis and prefix.
	other := depcache.New(fb, depcache.WithLogger(quiet), depcache.WithPrefix(m.Prefix()))
	defer other.Close()
	started, finish := make(chan struct{}), make(chan struct{})
	var key string
	f := depcache.Memoize(func(ctx context.Context, x int) (string, error) {
		key = depcache.CurrentKey(ctx)
		close(started)
		<-finish
		depcache.AddDependency(ctx, "a")
		return "old", nil
	}, depcache.Using(other), depcache.KeyName("other-process"))
	done := make(chan struct{})
	go func() { f(ctx, 1); close(done) }() // another process's fill, begun before the write
	<-started
	fb.invalidations.Store(true)
	m.InvalidateDependency(ctx, "a", "b") // overflows
	fb.invalidations.Store(false)
	if err := m.RetryPending(ctx); err != nil {
		t.Fatal(err)
	}
	close(finish)
	<-done
	if ok, _ := m.Exists(ctx, key); ok {
		t.Fatal("a fill begun before the overflow Clear stored after it")
	}
}

// recordingInvalidate records the tags of every invalidation that succeeded,
// and runs during once, right after the first one.
type recordingInvalidate struct {
	*faulty
	once      atomic.Bool
	during    func()
	delivered []string
}

func (r *recordingInvalidate) Invalidate(ctx context.Context, ns string, tags ...string) (int, error) {
	n, err := r.faulty.Invalidate(ctx, ns, tags...)
	if err == nil {
		r.delivered = append(r.delivered, tags...)
	}
	if r.during != nil && r.once.CompareAndSwap(false, true) {
		r.during()
	}
	return n, err
}

// A known tag that fails again while the overflow retry is invalidating it
// is invalidated again later, even though the set is in overflow: its
// retry may have stamped the tag before the write behind the new failure.
func TestKnownTagFailingAgainDuringOverflowIsRetried(t *testing.T) {
	ctx := context.Background()
	fb := &recordingInvalidate{faulty: &faulty{Backend: memory.New()}}
	defer fb.Close()
	m := depcache.New(fb, depcache.WithLogger(quiet), depcache.WithPendingLimit(1), depcache.WithRetryBackoff(time.Hour, time.Hour))
	defer m.Close()
	fb.invalidations.Store(true)
	m.InvalidateDependency(ctx, "a", "b") // a is kept, b overflows
	fb.invalidations.Store(false)
	fb.during = func() {
		fb.invalidations.Store(true)
		if _, err := m.InvalidateDependency(ctx, "a"); !errors.Is(err, errDown) {
			t.Errorf("second invalidation of a: %v", err)
		}
		fb.invalidations.Store(false)
	}
	m.RetryPending(ctx) // delivers a, during which a fails again
	fb.delivered = nil
	m.RetryPending(ctx)
	m.RetryPending(ctx)
	if len(fb.delivered) == 0 || fb.delivered[0] != "a" {
		t.Fatalf("a was not invalidated again after its second failure: %q", fb.delivered)
	}
	if n := m.Stats().PendingInvalidations; n != 0 {
		t.Fatalf("%d still pending", n)
	}
}
