package depcache_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	_ "gorm.io/driver/sqlite" // registers database/sql's "sqlite3"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/internal/redistest"
	"github.com/depcache/go-depcache/internal/testenv"
)

// brkBackend counts what reaches the store: lookups of the callers' keys
// (the breaker's probes look up a key of their own), fills and
// invalidations.
type brkBackend struct {
	backends.Backend
	keyPrefix                                   string
	lookups, probes, fills, epochs, invalidates atomic.Int64
}

func (b *brkBackend) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	if strings.HasPrefix(key, b.keyPrefix) {
		b.lookups.Add(1)
	} else {
		b.probes.Add(1)
	}
	return b.Backend.Lookup(ctx, ns, key)
}

func (b *brkBackend) Epoch(ctx context.Context) (backends.Epoch, error) {
	b.epochs.Add(1)
	return b.Backend.Epoch(ctx)
}

func (b *brkBackend) Fill(ctx context.Context, ns string, f backends.Fill) error {
	b.fills.Add(1)
	return b.Backend.Fill(ctx, ns, f)
}

func (b *brkBackend) Invalidate(ctx context.Context, ns string, tags ...string) (int, error) {
	b.invalidates.Add(1)
	return b.Backend.Invalidate(ctx, ns, tags...)
}

// logLines captures a manager's log messages.
type logLines struct{ records }

func (l *logLines) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.msgs)
}

func (l *logLines) messages() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.msgs)
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling, not synchronisation
	}
}

// breakerRig is a manager on a go-redis client of addr, wrapped to count
// backend calls, with a memoized function whose runs are counted.
type breakerRig struct {
	m     *depcache.Manager
	b     *brkBackend
	logs  *logLines
	evs   *events
	runs  atomic.Int64
	memo  func(context.Context, int) (int, error)
	funcs string
}

func newBreakerRig(t *testing.T, c redis.UniversalClient, opts ...depcache.Option) *breakerRig {
	t.Helper()
	r := &breakerRig{logs: &logLines{}, evs: &events{}}
	r.b = &brkBackend{Backend: redisbackend.New(c, redisbackend.WithLogger(quiet)), keyPrefix: "brk"}
	r.m = depcache.New(r.b, append([]depcache.Option{
		depcache.WithLogger(slog.New(&r.logs.records)), depcache.WithObserver(r.evs.observe),
		depcache.WithPrefix(randomPrefix(t)), depcache.WithTimeout(cacheTimeout),
	}, opts...)...)
	t.Cleanup(func() { r.m.Close() })
	r.memo = depcache.Memoize(func(ctx context.Context, n int) (int, error) {
		r.runs.Add(1)
		depcache.AddDependency(ctx, fmt.Sprintf("n::%d", n))
		return n * n, nil
	}, depcache.Using(r.m), depcache.KeyName("brk"))
	return r
}

func (r *breakerRig) call(t *testing.T, n int) {
	t.Helper()
	if v, err := r.memo(context.Background(), n); err != nil || v != n*n {
		t.Fatalf("memo(%d) = %v, %v; want %d, nil", n, v, err, n*n)
	}
}

// With Redis refusing connections, the breaker opens after its failures,
// and from then on a call runs its function with no backend call and no
// log line; invalidations are still sent, and retried; when Redis is back
// a probe closes the breaker and caching resumes by itself. One log line
// at the opening, one at the closing.
func TestBreakerRefusedRedisOpensAndRecovers(t *testing.T) {
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	const failures = 3
	// A refused connection fails at once; the long timeout keeps the
	// first connection (scripts to load, under -race) from failing.
	r := newBreakerRig(t, c, depcache.WithBreaker(failures, 5*time.Millisecond), depcache.WithTimeout(5*time.Second),
		depcache.WithRetryBackoff(time.Millisecond, 5*time.Millisecond))
	r.call(t, 1) // warm: filled while Redis answers
	mr.Close()

	for i := range failures {
		r.call(t, 1)
		if got := r.b.lookups.Load(); got != int64(2+i) {
			t.Fatalf("after %d failed calls: %d lookups, want %d", i+1, got, 2+i)
		}
	}
	if got := r.evs.count(depcache.EventBreakerOpen); got != 1 {
		t.Fatalf("%d breaker-open events after %d failures, want 1", got, failures)
	}
	linesAtOpen := r.logs.total()
	if got := r.logs.count("backend unreachable"); got != 1 {
		t.Fatalf("%d lines announce the opening, want 1", got)
	}
	lookups, runs := r.b.lookups.Load(), r.runs.Load()
	const skipped = 50
	for range skipped {
		r.call(t, 1)
	}
	if got := r.b.lookups.Load(); got != lookups {
		t.Errorf("open breaker: %d lookups of callers' keys reached the backend, want 0", got-lookups)
	}
	if got := r.runs.Load() - runs; got != skipped {
		t.Errorf("open breaker: the function ran %d times for %d calls", got, skipped)
	}
	if got := r.m.Stats().BreakerSkips; got < skipped {
		t.Errorf("Stats.BreakerSkips = %d, want at least %d", got, skipped)
	}
	if got := r.logs.total(); got != linesAtOpen {
		t.Errorf("open breaker: %d more log lines during %d calls, want 0", got-linesAtOpen, skipped)
	}

	// An invalidation is sent whatever the breaker, fails, and is retried.
	inv := r.b.invalidates.Load()
	if _, err := r.m.InvalidateDependency(context.Background(), "n::1"); err == nil {
		t.Fatal("InvalidateDependency with Redis down returned nil")
	}
	if r.b.invalidates.Load() == inv {
		t.Fatal("the invalidation was not sent to the backend while the breaker was open")
	}
	waitFor(t, "a background retry of the invalidation", func() bool { return r.b.invalidates.Load() > inv+1 })

	// Redis returns (empty: its data went with it). A probe, started by a
	// call, closes the breaker; the pending invalidation is delivered.
	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the breaker to close", func() bool {
		r.call(t, 1)
		return r.evs.count(depcache.EventBreakerClose) == 1
	})
	waitFor(t, "the pending invalidation", func() bool { return r.m.Stats().PendingInvalidations == 0 })
	r.call(t, 2) // miss, fill
	runs = r.runs.Load()
	r.call(t, 2)
	if r.runs.Load() != runs {
		t.Error("after the breaker closed, a second call of a key missed: caching did not resume")
	}
	if got := r.logs.count("caching resumed"); got != 1 {
		t.Errorf("%d lines announce the closing, want 1", got)
	}
	if got := r.m.Stats().BreakerOpens; got != 1 {
		t.Errorf("Stats.BreakerOpens = %d, want 1", got)
	}
}

// With a frozen Redis (it accepts connections and never answers), each
// failure costs a timeout until the breaker opens; after that no call
// reaches the backend, Get is a miss and Set stores nothing, with no error
// for a manager that fails open and ErrBreakerOpen for a strict one — but
// Set returns ErrBreakerOpen either way: the value it was to replace may be
// served once the store is back, which a nil would deny.
func TestBreakerFrozenRedis(t *testing.T) {
	addr, _ := redistest.Frozen(t)
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	for _, strict := range []bool{false, true} {
		t.Run(fmt.Sprintf("strict=%v", strict), func(t *testing.T) {
			opts := []depcache.Option{depcache.WithBreaker(2, time.Hour), depcache.WithInvalidationTimeout(cacheTimeout)}
			if strict {
				opts = append(opts, depcache.WithStrictErrors())
			}
			r := newBreakerRig(t, c, opts...)
			for range 2 {
				r.memo(ctx, 1) // strict: a lookup error
			}
			if r.evs.count(depcache.EventBreakerOpen) != 1 {
				t.Fatal("the breaker did not open after 2 timeouts")
			}
			lookups, fills, epochs := r.b.lookups.Load(), r.b.fills.Load(), r.b.epochs.Load()
			v, err := r.memo(ctx, 3)
			var dst int
			found, gerr := r.m.Get(ctx, "brk:x", &dst)
			serr := r.m.Set(ctx, "brk:y", 1, 0, "n::1")
			if strict {
				for _, e := range []error{err, gerr, serr} {
					if !errors.Is(e, depcache.ErrBreakerOpen) {
						t.Errorf("strict manager, breaker open: %v, want ErrBreakerOpen", e)
					}
				}
			} else {
				if err != nil || v != 9 || found || gerr != nil || !errors.Is(serr, depcache.ErrBreakerOpen) {
					t.Errorf("memo = %v, %v; Get = %v, %v; Set = %v: want 9, nil; false, nil; ErrBreakerOpen", v, err, found, gerr, serr)
				}
			}
			if r.b.lookups.Load() != lookups || r.b.fills.Load() != fills || r.b.epochs.Load() != epochs {
				t.Error("a read or fill reached the backend while the breaker was open")
			}
			if got := r.m.Stats().BreakerSkips; got != 3 {
				t.Errorf("Stats.BreakerSkips = %d, want 3 (memo, Get, Set)", got)
			}
			// An invalidation is still sent (and fails on the frozen server).
			if _, err := r.m.InvalidateDependency(ctx, "n::1"); err == nil {
				t.Error("InvalidateDependency on a frozen Redis returned nil")
			}
			if r.b.invalidates.Load() == 0 {
				t.Error("the invalidation was not sent")
			}
		})
	}
}

// A client that ignores context deadlines is a permanent misconfiguration:
// its error is logged once, not per lookup, and the breaker's probes, which
// fail the same way, add no line.
func TestBreakerPermanentErrorLoggedOnce(t *testing.T) {
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()}) // no ContextTimeoutEnabled
	t.Cleanup(func() { c.Close() })
	r := newBreakerRig(t, c, depcache.WithBreaker(3, time.Millisecond))
	waitFor(t, "three failed probes", func() bool {
		r.call(t, 1)
		return r.b.probes.Load() >= 3
	})
	if got := r.logs.count("misconfigured"); got != 1 {
		t.Errorf("the misconfiguration was logged %d times, want once", got)
	}
	if got := r.logs.total(); got != 2 {
		t.Errorf("%d log lines (%q), want 2: the misconfiguration and the opening", got, r.logs.messages())
	}
	if r.evs.count(depcache.EventBreakerClose) != 0 {
		t.Error("the breaker closed on a client that cannot work")
	}
}

// WithoutBreaker sends every read; WithBreaker rejects values that cannot
// work.
func TestBreakerOptions(t *testing.T) {
	// A failing store, not a refused port: 20 refused dials would start
	// go-redis's dial-retry goroutine, which outlives the test.
	b := &opCounter{Backend: memory.New(), failLookups: true}
	evs := &events{}
	m := depcache.New(b, depcache.WithoutBreaker(), depcache.WithLogger(quiet), depcache.WithObserver(evs.observe))
	t.Cleanup(func() { m.Close() })
	memo := depcache.Memoize(func(ctx context.Context, n int) (int, error) { return n, nil },
		depcache.Using(m), depcache.KeyName("brk"))
	for range 20 {
		memo(context.Background(), 1)
	}
	if got := b.lookups.Load(); got != 20 {
		t.Errorf("WithoutBreaker: %d lookups for 20 calls", got)
	}
	if m.Stats().BreakerSkips != 0 || evs.count(depcache.EventBreakerOpen) != 0 {
		t.Error("WithoutBreaker: the breaker acted")
	}
	for _, o := range []depcache.Option{depcache.WithBreaker(0, time.Second), depcache.WithBreaker(1, 0)} {
		m := depcache.New(b, o, depcache.WithLogger(quiet))
		if !errors.Is(m.Err(), depcache.ErrInvalidOption) {
			t.Errorf("invalid WithBreaker: Err() = %v, want ErrInvalidOption", m.Err())
		}
		m.Close()
	}
}

// TestBreakerOutageLatency prints the p50 and p99 of a memoized read
// during an outage against the database query alone (issue 15's target:
// p99 at most 2×). It asserts no timing: the machine is shared.
func TestBreakerOutageLatency(t *testing.T) {
	testenv.SkipUnlessLong(t)
	db, err := sql.Open("sqlite3", "file:brk?mode=memory&cache=shared")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'Ada'), (2, 'Grace')`); err != nil {
		t.Fatal(err)
	}
	query := func(ctx context.Context, id int) (string, error) {
		depcache.AddDependency(ctx, fmt.Sprintf("users::%d", id))
		var name string
		err := db.QueryRowContext(ctx, `SELECT name FROM users WHERE id = ?`, id).Scan(&name)
		return name, err
	}
	outages := map[string]func(t *testing.T) redis.UniversalClient{
		"refused": func(t *testing.T) redis.UniversalClient {
			mr := miniredis.RunT(t)
			addr := mr.Addr()
			mr.Close()
			return redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
		},
		"frozen": func(t *testing.T) redis.UniversalClient {
			addr, _ := redistest.Frozen(t)
			return redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
		},
	}
	for _, name := range []string{"refused", "frozen"} {
		t.Run(name, func(t *testing.T) {
			c := outages[name](t)
			t.Cleanup(func() { c.Close() })
			m := depcache.New(redisbackend.New(c, redisbackend.WithLogger(quiet)),
				depcache.WithLogger(quiet), depcache.WithPrefix(randomPrefix(t)))
			t.Cleanup(func() { m.Close() })
			memo := depcache.Memoize(query, depcache.Using(m), depcache.KeyName("user"))
			ctx := context.Background()
			// Interleaved, the outage starting cold, for at least 3 s so
			// that probes run (one per second) during the measurement.
			var alone, cached []time.Duration
			var mu sync.Mutex
			began := time.Now()
			for i := 0; i < 20000 || time.Since(began) < 3*time.Second; i++ {
				start := time.Now()
				if _, err := query(ctx, 1+i%2); err != nil {
					t.Fatal(err)
				}
				d1 := time.Since(start)
				start = time.Now()
				if _, err := memo(ctx, 1+i%2); err != nil {
					t.Fatal(err)
				}
				d2 := time.Since(start)
				mu.Lock()
				alone, cached = append(alone, d1), append(cached, d2)
				mu.Unlock()
			}
			pct := func(v []time.Duration, p float64) time.Duration {
				s := slices.Clone(v)
				slices.Sort(s)
				return s[int(float64(len(s)-1)*p)]
			}
			t.Logf("%s Redis, %d reads in %v, default breaker (%d failures, probe every %v): query alone p50 %v p99 %v; memoized p50 %v p99 %v; p99 ratio %.2f; breaker skips %d",
				name, len(cached), time.Since(began).Round(time.Millisecond), depcache.DefaultBreakerFailures, depcache.DefaultBreakerOpenFor,
				pct(alone, .5), pct(alone, .99), pct(cached, .5), pct(cached, .99),
				float64(pct(cached, .99))/float64(pct(alone, .99)), m.Stats().BreakerSkips)
		})
	}
}

// BenchmarkBreakerHit measures what the breaker adds to a hit on the
// memory store (the cheapest backend, so the largest share): Get and a
// memoized call, with and without the breaker, interleaved, medians.
func BenchmarkBreakerHit(b *testing.B) {
	ctx := context.Background()
	type contender struct {
		name string
		run  func()
	}
	var cs []contender
	for _, on := range []bool{false, true} {
		opts := []depcache.Option{depcache.WithLogger(quiet)}
		if !on {
			opts = append(opts, depcache.WithoutBreaker())
		}
		m := depcache.New(memory.New(), opts...)
		defer m.Close()
		if err := m.Set(ctx, "k", 42, 0, "t"); err != nil {
			b.Fatal(err)
		}
		memo := depcache.Memoize(func(ctx context.Context, n int) (int, error) {
			depcache.AddDependency(ctx, "t")
			return n, nil
		}, depcache.Using(m), depcache.KeyName("brkbench"))
		memo(ctx, 1)
		suffix := map[bool]string{false: "off", true: "on"}[on]
		cs = append(cs,
			contender{"get-" + suffix, func() { var v int; m.Get(ctx, "k", &v) }},
			contender{"memo-" + suffix, func() { memo(ctx, 1) }})
	}
	took := make([][]float64, len(cs))
	i := 0
	for b.Loop() {
		i++
		for k := range cs {
			c := (i + k) % len(cs)
			start := time.Now()
			for range 16 {
				cs[c].run()
			}
			took[c] = append(took[c], float64(time.Since(start).Nanoseconds())/16)
		}
	}
	for k, c := range cs {
		b.ReportMetric(median(took[k]), c.name+"-ns/op")
		b.ReportMetric(testing.AllocsPerRun(100, c.run), c.name+"-allocs/op")
	}
}

// A fill the breaker skips — it opened while the function ran — sends
// nothing: no entry, no half-registered value; the call still returns its
// value (a strict manager adds ErrBreakerOpen), and the lease its lookup
// took is left to expire rather than cost a round trip to a store the
// breaker holds down.
func TestBreakerSkippedFillSendsNothing(t *testing.T) {
	for _, strict := range []bool{false, true} {
		t.Run(fmt.Sprintf("strict=%v", strict), func(t *testing.T) {
			mem := memory.New()
			b := &breakFrom{opCounter: opCounter{Backend: mem, lease: true}, failKey: "down"}
			opts := []depcache.Option{depcache.WithLogger(quiet), depcache.WithPrefix("skipfill"), depcache.WithBreaker(1, time.Hour)}
			if strict {
				opts = append(opts, depcache.WithStrictErrors())
			}
			evs := &events{}
			m := depcache.New(b, append(opts, depcache.WithObserver(evs.observe))...)
			t.Cleanup(func() { m.Close() })
			memo := depcache.Memoize(func(ctx context.Context, n int) (int, error) {
				depcache.AddDependency(ctx, "t")
				var v int
				m.Get(ctx, "down", &v) // fails: the breaker opens
				return n, nil
			}, depcache.Using(m), depcache.KeyName("skipfill"))
			v, err := memo(context.Background(), 7)
			if v != 7 || (strict != errors.Is(err, depcache.ErrBreakerOpen)) || (!strict && err != nil) {
				t.Fatalf("memo = %v, %v (strict %v)", v, err, strict)
			}
			if got := b.fills.Load(); got != 0 {
				t.Errorf("%d fills sent with the breaker open", got)
			}
			if l, err := mem.Lookup(context.Background(), "skipfill", "skipfill:"+"v1|i:7"); err != nil || l.Found {
				t.Errorf("store after a skipped fill: found %v, %v", l.Found, err)
			}
			if got := b.releases.Load(); got != 0 {
				t.Errorf("%d lease releases sent with the breaker open", got)
			}
			if got := m.Stats().SkippedFills; got != 1 {
				t.Errorf("Stats.SkippedFills = %d, want 1", got)
			}
			if ev, ok := evs.last(depcache.EventSkip); !ok || !errors.Is(ev.Err, depcache.ErrBreakerOpen) {
				t.Errorf("skip event %v, want one wrapping ErrBreakerOpen", ev.Err)
			}
		})
	}
}

// breakFrom is an opCounter whose lookups of failKey time out.
type breakFrom struct {
	opCounter
	failKey string
}

func (b *breakFrom) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	if key == b.failKey {
		return backends.Lookup{}, context.DeadlineExceeded
	}
	return b.opCounter.Lookup(ctx, ns, key)
}
