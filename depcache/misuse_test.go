package depcache_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
)

// A Get into something that is not a non-nil pointer is the caller's
// mistake: it returns an error naming it, and the entry stays. It used to
// be decoded, fail, and be deleted as corrupt, with (false, nil) returned.
func TestGetBadDestinationKeepsEntry(t *testing.T) {
	ctx := context.Background()
	for _, local := range []bool{false, true} {
		name := "backend"
		var opts []depcache.Option
		if local {
			name = "local"
			opts = append(opts, depcache.WithLocalCache(10))
		}
		t.Run(name, func(t *testing.T) {
			m, _ := newManager(t, opts...)
			if err := m.Set(ctx, "k", 7, time.Minute, "t"); err != nil {
				t.Fatal(err)
			}
			var x int
			var nilPtr *int
			for _, dst := range []any{nil, x, nilPtr, "text"} {
				found, err := m.Get(ctx, "k", dst)
				if found || err == nil || !strings.Contains(err.Error(), "dst") {
					t.Fatalf("Get into %T: found=%v err=%v, want an error naming dst", dst, found, err)
				}
			}
			if found, err := m.Get(ctx, "k", &x); !found || err != nil || x != 7 {
				t.Fatalf("Get after the bad ones: found=%v err=%v x=%d, want the entry still there", found, err, x)
			}
		})
	}
}

// Memoize and Fetch of a nil function return an error on each call
// instead of panicking when the function would run.
func TestNilFunctionIsAnError(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	var fn func(context.Context, int) (int, error)
	for name, f := range map[string]func(context.Context, int) (int, error){
		"Memoize":            depcache.Memoize(fn, depcache.Using(m)),
		"Memoize KeyName":    depcache.Memoize(fn, depcache.Using(m), depcache.KeyName("nilfn")),
		"Memoize no manager": depcache.Memoize(fn, depcache.ManagerName("nobody"), depcache.KeyName("nilfn")),
	} {
		if _, err := f(ctx, 1); !errors.Is(err, depcache.ErrInvalidOption) {
			t.Fatalf("%s of a nil function: err=%v, want ErrInvalidOption", name, err)
		}
	}
	var fn0 func(context.Context) (int, error)
	if _, err := depcache.Memoize0(fn0, depcache.Using(m))(ctx); !errors.Is(err, depcache.ErrInvalidOption) {
		t.Fatalf("Memoize0 of a nil function: err=%v", err)
	}
	if _, err := depcache.Fetch(ctx, m, "k", fn0); !errors.Is(err, depcache.ErrInvalidOption) {
		t.Fatalf("Fetch of a nil function: err=%v", err)
	}
	if _, err := depcache.Fetch(ctx, m, "k", fn0, depcache.TTL(time.Minute)); !errors.Is(err, depcache.ErrInvalidOption) {
		t.Fatalf("Fetch with options of a nil function: err=%v", err)
	}
}

// New(nil) and GetOrCreate("") are options that cannot work: their errors
// wrap ErrInvalidOption, as the README lists ("nil codec, backend or
// manager").
func TestMissingBackendOrNameIsInvalidOption(t *testing.T) {
	m := depcache.New(nil, depcache.WithLogger(quiet))
	defer m.Close()
	if err := m.Err(); !errors.Is(err, depcache.ErrInvalidOption) {
		t.Fatalf("New(nil).Err() = %v, want ErrInvalidOption", err)
	}
	b := memory.New()
	defer b.Close()
	if _, err := depcache.NewRegistry().GetOrCreate("", depcache.WithBackend(b)); !errors.Is(err, depcache.ErrInvalidOption) {
		t.Fatalf(`GetOrCreate("") = %v, want ErrInvalidOption`, err)
	}
}

// A nil ctx is context.Background() for the Manager's methods, as it is
// for Memoize and Fetch; several of them panicked on it (Set, Get, Exists,
// TTL, InvalidateDependency, RetryPending on any store, Delete and Clear
// on Redis), and so did Bypass and Track.
func TestNilContextIsBackground(t *testing.T) {
	stores := map[string]func(t *testing.T) backends.Backend{
		"memory": func(t *testing.T) backends.Backend { b := memory.New(); t.Cleanup(func() { b.Close() }); return b },
	}
	for _, tg := range redisTargets(t) {
		stores[tg.name] = func(t *testing.T) backends.Backend {
			return redisbackend.New(tg.client, redisbackend.WithLogger(quiet))
		}
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			var nilCtx context.Context
			m := depcache.New(open(t), depcache.WithLogger(quiet), depcache.WithPrefix(randomPrefix(t)))
			t.Cleanup(func() { m.Close() })
			if err := m.Set(nilCtx, "k", 7, time.Minute, "t"); err != nil {
				t.Fatalf("Set: %v", err)
			}
			var x int
			if found, err := m.Get(nilCtx, "k", &x); !found || err != nil || x != 7 {
				t.Fatalf("Get: found=%v err=%v x=%d", found, err, x)
			}
			if ok, err := m.Exists(nilCtx, "k"); !ok || err != nil {
				t.Fatalf("Exists: %v %v", ok, err)
			}
			if d, err := m.TTL(nilCtx, "k"); err != nil || d <= 0 {
				t.Fatalf("TTL: %v %v", d, err)
			}
			if n, err := m.InvalidateDependency(nilCtx, "t"); n != 1 || err != nil {
				t.Fatalf("InvalidateDependency: %d %v", n, err)
			}
			if err := m.Set(context.Background(), "k2", 1, time.Minute); err != nil {
				t.Fatal(err)
			}
			if n, err := m.Delete(nilCtx, "k2"); n != 1 || err != nil {
				t.Fatalf("Delete: %d %v", n, err)
			}
			if _, err := m.Clear(nilCtx); err != nil {
				t.Fatalf("Clear: %v", err)
			}
			if err := m.RetryPending(nilCtx); err != nil {
				t.Fatalf("RetryPending: %v", err)
			}
			calls := 0
			f := depcache.Memoize(func(ctx context.Context, a int) (int, error) {
				calls++
				depcache.AddDependency(ctx, "t")
				return a, nil
			}, depcache.Using(m), depcache.KeyName("f"))
			bctx := depcache.Bypass(nilCtx)
			tctx, trace := depcache.Track(nilCtx)
			f(tctx, 1)
			f(tctx, 1)
			f(bctx, 1)
			if calls != 2 || trace.Hits() != 1 || trace.Misses() != 1 {
				t.Fatalf("Track/Bypass of a nil ctx: calls=%d hits=%d misses=%d, want 2, 1, 1", calls, trace.Hits(), trace.Misses())
			}
		})
	}
}

// silentNotifier is a memory store whose Notify fails when told to: the
// value is stored, and no other tier hears of the change.
type silentNotifier struct {
	*memory.Backend
	fail atomic.Bool
}

func (s *silentNotifier) Notify(ctx context.Context, c backends.Change) error {
	if s.fail.Load() {
		return errDown
	}
	return s.Backend.Notify(ctx, c)
}

// A Set whose change could not reach the other in-process tiers returns
// the error, as Delete does: it used to fail open and return nil while
// another manager's tier went on serving the value it replaced.
func TestSetReportsUnnotifiedTiers(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	defer mem.Close()
	store := &silentNotifier{Backend: mem}
	writer := depcache.New(store, depcache.WithLogger(quiet), depcache.WithPrefix("p"))
	defer writer.Close()
	reader := depcache.New(mem, depcache.WithLogger(quiet), depcache.WithPrefix("p"), depcache.WithLocalCache(10))
	defer reader.Close()
	if err := writer.Set(ctx, "k", "old", time.Minute); err != nil {
		t.Fatal(err)
	}
	var v string
	for range 2 { // the second read is the reader's tier
		if found, err := reader.Get(ctx, "k", &v); !found || err != nil || v != "old" {
			t.Fatalf("reader: found=%v err=%v v=%q", found, err, v)
		}
	}
	store.fail.Store(true)
	err := writer.Set(ctx, "k", "new", time.Minute)
	if !errors.Is(err, errDown) {
		t.Fatalf("Set whose tier notification failed: err=%v, want it returned", err)
	}
}

// A Set or Exists whose ctx ended returns ctx's error: Set used to fail
// open (nil, nothing stored) and both logged and counted the caller's
// cancellation as a backend error.
func TestCancelledContextIsNotBackendError(t *testing.T) {
	for _, tg := range redisTargets(t) {
		t.Run(tg.name, func(t *testing.T) {
			m := depcache.New(redisbackend.New(tg.client, redisbackend.WithLogger(quiet)),
				depcache.WithLogger(quiet), depcache.WithPrefix(randomPrefix(t)))
			defer m.Close()
			if err := m.Set(context.Background(), "warm", 1, time.Minute); err != nil {
				t.Fatal(err)
			}
			errs := m.Stats().Errors
			cctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := m.Set(cctx, "k", 1, time.Minute); !errors.Is(err, context.Canceled) {
				t.Fatalf("Set under a cancelled ctx: %v, want context.Canceled", err)
			}
			if ok, err := m.Exists(cctx, "warm"); ok || !errors.Is(err, context.Canceled) {
				t.Fatalf("Exists under a cancelled ctx: %v %v, want context.Canceled", ok, err)
			}
			if _, err := m.TTL(cctx, "warm"); !errors.Is(err, context.Canceled) {
				t.Fatalf("TTL under a cancelled ctx: %v", err)
			}
			if _, err := m.Delete(cctx, "warm"); !errors.Is(err, context.Canceled) {
				t.Fatalf("Delete under a cancelled ctx: %v", err)
			}
			if got := m.Stats().Errors; got != errs {
				t.Fatalf("a cancelled ctx counted %d backend errors", got-errs)
			}
		})
	}
}

// panicCodec is a user's codec whose Marshal panics.
type panicCodec struct{}

func (panicCodec) Name() string                { return "panicky" }
func (panicCodec) Marshal(any) ([]byte, error) { panic("cannot") }
func (panicCodec) Unmarshal([]byte, any) error { return nil }

// A value the codec panics on is a value it cannot encode: returned
// uncached (Memoize) or an error (Set), as Gob's doc promises for a nil
// pointer. encoding/gob panics on one, and the panic used to reach the
// caller.
func TestCodecPanicIsEncodeError(t *testing.T) {
	ctx := context.Background()
	for _, codec := range []depcache.Codec{depcache.Gob, panicCodec{}} {
		t.Run(codec.Name(), func(t *testing.T) {
			m, _ := newManager(t, depcache.WithCodec(codec))
			calls := 0
			f := depcache.Memoize(func(ctx context.Context, id int) (*int, error) {
				calls++
				depcache.AddDependency(ctx, "t")
				return nil, nil
			}, depcache.Using(m), depcache.KeyName("nilptr"))
			for range 2 {
				if v, err := f(ctx, 1); v != nil || err != nil {
					t.Fatalf("memoized nil *int: %v, %v", v, err)
				}
			}
			if calls != 2 {
				t.Fatalf("%d calls, want 2: a value the codec cannot encode is not cached", calls)
			}
			if err := m.Set(ctx, "k", (*int)(nil), time.Minute); err == nil || !strings.Contains(err.Error(), "panicked") {
				t.Fatalf("Set of a value the codec panics on: %v, want an error", err)
			}
		})
	}
}

// A Fetch given an option that cannot work runs uncached and is reported
// once, as a memoized function is, not on every call: Fetch makes a spec
// per call, and each used to log an error (so did every query of a
// gormplugin.Cached with a negative TTL).
func TestFetchInvalidOptionReportedOnce(t *testing.T) {
	ctx := context.Background()
	var evs events
	m, _ := newManager(t, depcache.WithObserver(evs.observe))
	calls := 0
	for range 3 {
		v, err := depcache.Fetch(ctx, m, "k", func(context.Context) (int, error) { calls++; return 7, nil }, depcache.TTL(-time.Second))
		if v != 7 || err != nil {
			t.Fatalf("Fetch with TTL(-1s): %v %v", v, err)
		}
	}
	if calls != 3 {
		t.Fatalf("%d calls, want 3 (uncached)", calls)
	}
	if n := evs.count(depcache.EventError); n != 1 {
		t.Fatalf("%d error events for one invalid option, want 1", n)
	}
}

// An empty key is refused by every call that takes one, with ErrEmptyKey,
// and nothing is stored or deleted; Fetch, like for its other misuses,
// runs its function uncached (and logs ErrEmptyKey once). Set and Get used
// to accept it while Fetch refused it.
func TestEmptyKeyIsRefusedEverywhere(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	if err := m.Set(ctx, "k", 1, time.Minute, "t"); err != nil {
		t.Fatal(err)
	}
	var v int
	calls := 0
	for range 2 {
		if got, err := depcache.Fetch(ctx, m, "", func(context.Context) (int, error) { calls++; return 5, nil }); got != 5 || err != nil {
			t.Fatalf("Fetch with an empty key: %d, %v; want its function's 5, nil", got, err)
		}
	}
	_, gerr := m.Get(ctx, "", &v)
	_, eerr := m.Exists(ctx, "")
	_, terr := m.TTL(ctx, "")
	n, derr := m.Delete(ctx, "k", "")
	for name, err := range map[string]error{
		"Set": m.Set(ctx, "", 1, time.Minute, "t"), "Get": gerr, "Exists": eerr, "TTL": terr, "Delete": derr,
	} {
		if !errors.Is(err, depcache.ErrEmptyKey) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s with an empty key: %v, want ErrEmptyKey naming %s", name, err, name)
		}
	}
	if n != 0 {
		t.Errorf("Delete with an empty key among others deleted %d, want 0", n)
	}
	if found, err := m.Get(ctx, "k", &v); !found || err != nil {
		t.Errorf("the entry beside the empty key: found=%v err=%v, want kept", found, err)
	}
	if calls != 2 {
		t.Errorf("two Fetches with an empty key ran the function %d times, want 2 (uncached)", calls)
	}
}

// An argument that cannot be keyed runs the call uncached every time: it
// is counted and observed on every call, and logged once per function
// (it logged an ERROR line per call; found by a new-user check).
func TestUnkeyableArgumentLogsOnce(t *testing.T) {
	ctx := context.Background()
	var log bytes.Buffer
	m := depcache.New(memory.New(), depcache.WithPrefix("unkeyable"), depcache.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	defer m.Close()
	type withFunc struct {
		Name string
		F    func()
	}
	runs := 0
	f := depcache.Memoize(func(ctx context.Context, a withFunc) (string, error) {
		runs++
		return a.Name, nil
	}, depcache.Using(m), depcache.KeyName("unkeyable"))
	for range 3 {
		if v, err := f(ctx, withFunc{Name: "x", F: func() {}}); v != "x" || err != nil {
			t.Fatalf("f = %q, %v", v, err)
		}
	}
	if runs != 3 {
		t.Errorf("the function ran %d times, want 3 (uncached)", runs)
	}
	if n := strings.Count(log.String(), "runs uncached"); n != 1 {
		t.Errorf("%d log lines for 3 calls with an unkeyable argument, want 1:\n%s", n, log.String())
	}
	if got := m.Stats().Errors; got != 3 {
		t.Errorf("Stats.Errors = %d, want 3", got)
	}
}
