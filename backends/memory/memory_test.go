package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/backendtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func harness(opts ...Option) backendtest.Harness {
	clock := newFakeClock()
	return backendtest.Harness{
		New: func(t *testing.T) backends.Backend {
			return New(append([]Option{WithClock(clock.Now)}, opts...)...)
		},
		Advance:    func(t *testing.T, d time.Duration) { clock.Advance(d) },
		MaxFillAge: DefaultMaxFillAge,
	}
}

func TestConformance(t *testing.T) {
	backendtest.Run(t, harness())
}

// The bounded store takes other paths (every lookup takes the write lock).
func TestConformanceMaxEntries(t *testing.T) {
	backendtest.Run(t, harness(WithMaxEntries(1_000_000)))
}

// The suite on the real clock: expiry cases are skipped.
func TestConformanceRealClock(t *testing.T) {
	backendtest.Run(t, backendtest.Harness{
		New:        func(t *testing.T) backends.Backend { return New(WithMaxFillAge(time.Hour)) },
		MaxFillAge: time.Hour,
		BigTag:     500,
	})
}

// fill stores key with a fresh Since, failing the test if refused.
func fill(t *testing.T, b *Backend, ns, key string, ttl time.Duration, deps ...string) {
	t.Helper()
	since, err := b.Epoch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	err = b.Fill(t.Context(), ns, backends.Fill{
		Key:   key,
		Entry: backends.Entry{Value: []byte(key), Deps: deps, Since: since},
		TTL:   ttl,
		Since: since,
	})
	if err != nil {
		t.Fatalf("Fill(%q): %v", key, err)
	}
}

func found(t *testing.T, b *Backend, ns, key string) bool {
	t.Helper()
	l, err := b.Lookup(t.Context(), ns, key)
	if err != nil {
		t.Fatal(err)
	}
	return l.Found
}

// check verifies the bookkeeping: count, recency list, expiry heap and
// registrations agree with the entries, and nothing empty is kept.
func check(t *testing.T, b *Backend) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for name, sp := range b.spaces {
		if len(sp.entries) == 0 && len(sp.tags) == 0 {
			t.Errorf("empty space %q kept", name)
		}
		for k, en := range sp.entries {
			n++
			if en.sp != sp || en.key != k {
				t.Errorf("entry %q in %q: wrong back references", k, name)
			}
			if en.expires.IsZero() != (en.heapIdx < 0) {
				t.Errorf("entry %q: expiry %v, heap index %d", k, en.expires, en.heapIdx)
			}
			for _, d := range en.deps {
				if _, ok := sp.tags[d].regs[en]; !ok {
					t.Errorf("entry %q not registered under %q", k, d)
				}
			}
		}
		for tag, ts := range sp.tags {
			if len(ts.regs) == 0 && ts.stamp == 0 {
				t.Errorf("empty tag %q kept in %q", tag, name)
			}
			for en := range ts.regs {
				if sp.entries[en.key] != en {
					t.Errorf("tag %q registers %q, which is not stored", tag, en.key)
				}
			}
		}
	}
	if n != b.count {
		t.Errorf("count = %d, %d entries stored", b.count, n)
	}
	for i, en := range b.expiries {
		if en.heapIdx != i {
			t.Errorf("heap[%d] has index %d", i, en.heapIdx)
		}
	}
	// Every stamped tag is queued for pruning exactly once.
	queued := map[*tagState]int{}
	for _, ref := range b.stamps[b.stampsAt:] {
		queued[ref.ts]++
		if ref.ts.stamp == 0 || ref.sp.tags[ref.tag] != ref.ts || b.spaces[ref.sp.name] != ref.sp {
			t.Errorf("queued stamp of %q in %q: not a stamped tag of a live space", ref.tag, ref.sp.name)
		}
	}
	for _, sp := range b.spaces {
		for tag, ts := range sp.tags {
			if ts.stamp != 0 && queued[ts] != 1 {
				t.Errorf("stamp of %q in %q queued %d times", tag, sp.name, queued[ts])
			}
		}
	}
	if b.maxEntries > 0 {
		l := 0
		for en := b.lru.next; en != &b.lru; en = en.next {
			l++
		}
		if l != b.count {
			t.Errorf("recency list holds %d, count %d", l, b.count)
		}
	}
}

func TestMaxEntriesEvictsLeastRecentlyUsed(t *testing.T) {
	ctx := t.Context()
	b := New(WithMaxEntries(2))
	defer b.Close()
	fill(t, b, "ns", "a", 0, "A")
	fill(t, b, "ns", "b", 0, "B", "shared")
	if !found(t, b, "ns", "a") { // a is now more recent than b
		t.Fatal("a missing")
	}
	fill(t, b, "other", "c", 0, "C") // evicts b, across namespaces
	check(t, b)
	if found(t, b, "ns", "b") {
		t.Error("b survived: want the least recently used evicted")
	}
	if !found(t, b, "ns", "a") || !found(t, b, "other", "c") {
		t.Error("a or c evicted")
	}
	// b's registrations went with it.
	b.mu.Lock()
	_, keptB := b.spaces["ns"].tags["B"]
	_, keptShared := b.spaces["ns"].tags["shared"]
	b.mu.Unlock()
	if keptB || keptShared {
		t.Error("the evicted entry's registrations were kept")
	}
	if n, err := b.Invalidate(ctx, "ns", "B", "shared"); err != nil || n != 0 {
		t.Errorf("Invalidate of the evicted entry's tags = %d, %v; want 0", n, err)
	}
	// Refilling an existing key evicts nothing.
	fill(t, b, "ns", "a", 0, "A")
	if !found(t, b, "other", "c") {
		t.Error("refilling a key evicted another")
	}
	check(t, b)
}

func TestStampsPrunedAfterMaxFillAge(t *testing.T) {
	ctx := t.Context()
	clock := newFakeClock()
	b := New(WithClock(clock.Now), WithMaxFillAge(time.Minute))
	defer b.Close()

	old, _ := b.Epoch(ctx)
	if _, err := b.Invalidate(ctx, "ns", "T", "U"); err != nil {
		t.Fatal(err)
	}
	stamps := func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		n := 0
		for _, sp := range b.spaces {
			for _, ts := range sp.tags {
				if ts.stamp != 0 {
					n++
				}
			}
		}
		return n
	}
	if n := stamps(); n != 2 {
		t.Fatalf("%d stamps after invalidating two tags", n)
	}

	clock.Advance(time.Minute) // not older than the longest fill yet
	if _, err := b.Delete(ctx, "ns", "nothing"); err != nil {
		t.Fatal(err)
	}
	if n := stamps(); n != 2 {
		t.Fatalf("%d stamps at exactly MaxFillAge, want 2", n)
	}
	err := b.Fill(ctx, "ns", backends.Fill{Key: "k", Entry: backends.Entry{Deps: []string{"T"}}, Since: old, Age: time.Minute})
	if !errors.Is(err, backends.ErrStale) {
		t.Fatalf("Fill before the stamp, Age at the limit: %v, want ErrStale", err)
	}

	clock.Advance(time.Nanosecond)
	if _, err := b.Delete(ctx, "ns", "nothing"); err != nil { // any writing call sweeps
		t.Fatal(err)
	}
	if n := stamps(); n != 0 {
		t.Errorf("%d stamps older than MaxFillAge kept", n)
	}
	b.mu.Lock()
	spaces, queued := len(b.spaces), len(b.stamps)-b.stampsAt
	b.mu.Unlock()
	if spaces != 0 || queued != 0 {
		t.Errorf("after pruning: %d spaces, %d queued stamps; want none", spaces, queued)
	}
	// Such a fill is refused for its age, which is why pruning is safe.
	err = b.Fill(ctx, "ns", backends.Fill{Key: "k", Entry: backends.Entry{Deps: []string{"T"}}, Since: old, Age: time.Minute + time.Nanosecond})
	if !errors.Is(err, backends.ErrStale) {
		t.Errorf("Fill older than MaxFillAge: %v, want ErrStale", err)
	}

	// A stamp rewritten later is kept for its own full age.
	if _, err := b.Invalidate(ctx, "ns", "T"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(30 * time.Second)
	if _, err := b.Invalidate(ctx, "ns", "T"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(45 * time.Second) // the first stamp's age is 75s, the second's 45s
	if _, err := b.Delete(ctx, "ns", "nothing"); err != nil {
		t.Fatal(err)
	}
	if n := stamps(); n != 1 {
		t.Errorf("%d stamps, want the rewritten one kept", n)
	}
	check(t, b)
}

func TestStampQueueBounded(t *testing.T) {
	ctx := t.Context()
	clock := newFakeClock()
	b := New(WithClock(clock.Now), WithMaxFillAge(time.Minute))
	defer b.Close()
	for range 1000 {
		if _, err := b.Invalidate(ctx, "ns", "hot"); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Second)
	}
	b.mu.Lock()
	queued := len(b.stamps) - b.stampsAt
	b.mu.Unlock()
	if queued != 1 {
		t.Errorf("%d stamps queued for one tag invalidated 1000 times", queued)
	}
	check(t, b)
}

func TestRefillInPlace(t *testing.T) {
	ctx := t.Context()
	clock := newFakeClock()
	b := New(WithClock(clock.Now), WithMaxEntries(10))
	defer b.Close()
	fill(t, b, "ns", "k", time.Second, "A", "B")
	fill(t, b, "ns", "k", 0, "B", "C")
	check(t, b)
	b.mu.Lock()
	_, keptA := b.spaces["ns"].tags["A"]
	b.mu.Unlock()
	if keptA {
		t.Error("the tag the refill dropped is kept")
	}
	clock.Advance(time.Hour) // the refill removed the expiry
	if !found(t, b, "ns", "k") {
		t.Fatal("refilled entry without expiry expired")
	}
	if n, _ := b.Invalidate(ctx, "ns", "A"); n != 0 {
		t.Errorf("Invalidate of the dropped tag = %d, want 0", n)
	}
	fill(t, b, "ns", "k", time.Second, "C")
	check(t, b)
	if n, _ := b.Invalidate(ctx, "ns", "B"); n != 0 {
		t.Errorf("Invalidate of the dropped tag = %d, want 0", n)
	}
	clock.Advance(time.Second)
	if found(t, b, "ns", "k") {
		t.Error("refilled entry with a TTL did not expire")
	}
	check(t, b)
}

func TestExpirySweep(t *testing.T) {
	ctx := t.Context()
	clock := newFakeClock()
	b := New(WithClock(clock.Now))
	defer b.Close()
	const n = 3 * sweepBudget
	for i := range n {
		fill(t, b, "ns", fmt.Sprint("k", i), time.Second, "T", fmt.Sprint("own", i))
	}
	fill(t, b, "ns", "forever", 0, "T")
	clock.Advance(time.Second)
	for i := 1; i <= 3; i++ {
		if _, err := b.Delete(ctx, "ns", "nothing"); err != nil {
			t.Fatal(err)
		}
		b.mu.Lock()
		left := b.count
		b.mu.Unlock()
		if want := n + 1 - i*sweepBudget; left != want {
			t.Errorf("after %d sweeps: %d entries, want %d", i, left, want)
		}
		check(t, b)
	}
	b.mu.Lock()
	tags := len(b.spaces["ns"].tags)
	regs := len(b.spaces["ns"].tags["T"].regs)
	b.mu.Unlock()
	if tags != 1 || regs != 1 {
		t.Errorf("after the sweep: %d tags, %d registrations under T; want 1 and 1", tags, regs)
	}
}

func TestExpiredLookupRemoves(t *testing.T) {
	clock := newFakeClock()
	b := New(WithClock(clock.Now))
	defer b.Close()
	fill(t, b, "ns", "k", time.Second, "T")
	clock.Advance(time.Second)
	if found(t, b, "ns", "k") {
		t.Fatal("expired entry found")
	}
	b.mu.Lock()
	spaces := len(b.spaces)
	b.mu.Unlock()
	if spaces != 0 {
		t.Errorf("the expired entry's space is kept after a lookup")
	}
	check(t, b)
}

func TestClose(t *testing.T) {
	ctx := t.Context()
	b := New()
	fill(t, b, "ns", "k", 0, "T")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	errs := map[string]error{}
	_, errs["Lookup"] = b.Lookup(ctx, "ns", "k")
	errs["Fill"] = b.Fill(ctx, "ns", backends.Fill{Key: "k"})
	_, errs["Epoch"] = b.Epoch(ctx)
	_, errs["Invalidate"] = b.Invalidate(ctx, "ns", "T")
	_, errs["Invalidate()"] = b.Invalidate(ctx, "ns")
	_, errs["Delete"] = b.Delete(ctx, "ns", "k")
	_, errs["TTL"] = b.TTL(ctx, "ns", "k")
	_, errs["Clear"] = b.Clear(ctx, "ns")
	for op, err := range errs {
		if !errors.Is(err, backends.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", op, err)
		}
	}
	bounded := New(WithMaxEntries(1))
	bounded.Close()
	if _, err := bounded.Lookup(ctx, "ns", "k"); !errors.Is(err, backends.ErrClosed) {
		t.Errorf("Lookup on a closed bounded Backend: %v, want ErrClosed", err)
	}
}

func TestFillRefusals(t *testing.T) {
	ctx := t.Context()
	b := New()
	defer b.Close()
	since, _ := b.Epoch(ctx)
	if err := b.Fill(ctx, "ns", backends.Fill{Key: "k", TTL: -time.Second, Since: since}); err == nil || errors.Is(err, backends.ErrStale) {
		t.Errorf("Fill with a negative TTL: %v, want an error", err)
	}
	future := backends.Epoch{Era: since.Era, N: since.N + 1}
	if err := b.Fill(ctx, "ns", backends.Fill{Key: "k", Since: future}); !errors.Is(err, backends.ErrStale) {
		t.Errorf("Fill with an epoch not reached yet: %v, want ErrStale", err)
	}
	if found(t, b, "ns", "k") {
		t.Error("a refused fill stored its entry")
	}
}

func TestErasDiffer(t *testing.T) {
	ctx := context.Background()
	a, b := New(), New()
	defer a.Close()
	defer b.Close()
	ea, _ := a.Epoch(ctx)
	eb, _ := b.Epoch(ctx)
	if ea.Era == eb.Era {
		t.Fatalf("two Backends share the era %q", ea.Era)
	}
	if err := b.Fill(ctx, "ns", backends.Fill{Key: "k", Since: ea}); !errors.Is(err, backends.ErrStale) {
		t.Errorf("Fill with another Backend's epoch: %v, want ErrStale", err)
	}
}

func TestOptionsPanic(t *testing.T) {
	for name, f := range map[string]func(){
		"WithClock(nil)":      func() { WithClock(nil) },
		"WithMaxEntries(-1)":  func() { WithMaxEntries(-1) },
		"WithMaxFillAge(0)":   func() { WithMaxFillAge(0) },
		"WithMaxFillAge(-1s)": func() { WithMaxFillAge(-time.Second) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", name)
				}
			}()
			f()
		}()
	}
}
