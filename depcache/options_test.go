package depcache_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
)

// Options that cannot work make the manager report an error instead of
// running with a value that spins, fails every call or is ignored.
func TestInvalidOptionsAreErrors(t *testing.T) {
	ctx := context.Background()
	cases := map[string]depcache.Option{
		"WithName empty":              depcache.WithName(""),
		"WithPrefix empty":            depcache.WithPrefix(""),
		"WithDefaultTTL negative":     depcache.WithDefaultTTL(-time.Second),
		"WithCodec nil":               depcache.WithCodec(nil),
		"WithBackend nil":             depcache.WithBackend(nil),
		"WithTimeout zero":            depcache.WithTimeout(0),
		"WithTimeout negative":        depcache.WithTimeout(-time.Second),
		"WithInvalidationTimeout 0":   depcache.WithInvalidationTimeout(0),
		"WithPendingLimit 0":          depcache.WithPendingLimit(0),
		"WithRetryBackoff 0":          depcache.WithRetryBackoff(0, time.Second),
		"WithRetryBackoff inverted":   depcache.WithRetryBackoff(time.Second, time.Millisecond),
		"WithFillWait negative":       depcache.WithFillWait(-time.Second),
		"WithInvalidationTimeout neg": depcache.WithInvalidationTimeout(-1),
	}
	for name, opt := range cases {
		t.Run(name, func(t *testing.T) {
			b := memory.New()
			defer b.Close()
			m := depcache.New(b, depcache.WithLogger(quiet), opt)
			defer m.Close()
			if err := m.Err(); !errors.Is(err, depcache.ErrInvalidOption) {
				t.Fatalf("Err() = %v, want ErrInvalidOption", err)
			}
			if err := m.Set(ctx, "k", 1, 0, "t"); !errors.Is(err, depcache.ErrInvalidOption) {
				t.Fatalf("Set = %v", err)
			}
			var calls counter
			f := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
				calls.n.Add(1)
				depcache.AddDependency(ctx, "t")
				return x, nil
			}, depcache.Using(m), depcache.KeyName("f"))
			f(ctx, 1)
			f(ctx, 1)
			if calls.calls() != 2 {
				t.Fatalf("a misconfigured manager cached: %d calls", calls.calls())
			}
			// Invalidations still run, with the defaults in place.
			if _, err := m.InvalidateDependency(ctx, "t"); err != nil {
				t.Fatalf("InvalidateDependency = %v", err)
			}

			reg := depcache.NewRegistry()
			defer reg.Close()
			if _, err := reg.GetOrCreate("x", depcache.WithBackend(b), depcache.WithLogger(quiet), opt); !errors.Is(err, depcache.ErrInvalidOption) {
				t.Fatalf("GetOrCreate = %v", err)
			}
			if _, ok := reg.Lookup("x"); ok {
				t.Fatal("a misconfigured manager was registered")
			}
		})
	}
}

func TestValidOptionsAreAccepted(t *testing.T) {
	b := memory.New()
	defer b.Close()
	m := depcache.New(b, depcache.WithLogger(nil), depcache.WithObserver(nil),
		depcache.WithDefaultTTL(depcache.NoExpiry), depcache.WithFillWait(0),
		depcache.WithRetryBackoff(time.Millisecond, time.Millisecond), depcache.WithPendingLimit(1))
	defer m.Close()
	if err := m.Err(); err != nil {
		t.Fatal(err)
	}
}

// MemoOptions that cannot work run the function uncached and report the
// error once, rather than being ignored (KeyName("")) or failing every fill
// (TTL(-2s)).
func TestInvalidMemoOptionsAreErrors(t *testing.T) {
	ctx := context.Background()
	cases := map[string]depcache.MemoOption{
		"KeyName empty":     depcache.KeyName(""),
		"ManagerName empty": depcache.ManagerName(""),
		"TTL negative":      depcache.TTL(-2 * time.Second),
		"Deps empty tag":    depcache.Deps("a", ""),
		"CacheErrors nil":   depcache.CacheErrors(nil),
		"InRegistry nil":    depcache.InRegistry(nil),
		"Using nil":         depcache.Using(nil),
	}
	for name, opt := range cases {
		t.Run(name, func(t *testing.T) {
			var ev events
			m, _ := newManager(t, depcache.WithObserver(ev.observe))
			var calls counter
			f := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
				calls.n.Add(1)
				depcache.AddDependency(ctx, "t")
				return x, nil
			}, depcache.Using(m), depcache.KeyName("f"), opt)
			f(ctx, 1)
			f(ctx, 1)
			if calls.calls() != 2 {
				t.Fatalf("cached despite an invalid option: %d calls", calls.calls())
			}
			e, ok := ev.last(depcache.EventError)
			if !ok || !errors.Is(e.Err, depcache.ErrInvalidOption) {
				t.Fatalf("no ErrInvalidOption reported: %v", e.Err)
			}
			if n := ev.count(depcache.EventError); n != 1 {
				t.Fatalf("reported %d times, want once", n)
			}
		})
	}
}

// A nil Option or MemoOption (one built conditionally) is no option: New,
// GetOrCreate, Memoize and Fetch ignore it instead of panicking.
func TestNilOptionsAreIgnored(t *testing.T) {
	ctx := context.Background()
	m := depcache.New(memory.New(), depcache.WithPrefix("nil-options"), nil)
	defer m.Close()
	if err := m.Err(); err != nil {
		t.Fatalf("New with a nil option: %v", err)
	}
	r := depcache.NewRegistry()
	defer r.Close()
	if _, err := r.GetOrCreate("x", nil, depcache.WithBackend(memory.New())); err != nil {
		t.Fatalf("GetOrCreate with a nil option: %v", err)
	}
	f := depcache.Memoize(func(ctx context.Context, i int) (int, error) { return i, nil }, nil, depcache.Using(m), depcache.KeyName("nil-options"))
	if v, err := f(ctx, 3); v != 3 || err != nil {
		t.Fatalf("Memoize with a nil option = %v, %v", v, err)
	}
	if v, err := depcache.Fetch(ctx, m, "k", func(context.Context) (int, error) { return 4, nil }, nil); v != 4 || err != nil {
		t.Fatalf("Fetch with a nil option = %v, %v", v, err)
	}
}
