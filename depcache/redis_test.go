package depcache_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/internal/redistest"
)

// redisTarget is a Redis the tests and benchmarks run on: miniredis in
// process, or the server REDIS_URL names.
type redisTarget struct {
	name   string
	client *redis.Client
}

// redisTargets returns miniredis, plus the real Redis when REDIS_URL is set.
func redisTargets(tb testing.TB) []redisTarget {
	tb.Helper()
	mr := miniredis.RunT(tb)
	// redisbackend refuses reads and fills on a client that ignores
	// context deadlines.
	targets := []redisTarget{{"miniredis", redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})}}
	if url := os.Getenv("REDIS_URL"); url != "" {
		opt, err := redis.ParseURL(url)
		if err != nil {
			tb.Fatalf("REDIS_URL: %v", err)
		}
		opt.ContextTimeoutEnabled = true
		targets = append(targets, redisTarget{"redis", redis.NewClient(opt)})
	}
	for _, tg := range targets {
		tb.Cleanup(func() { tg.client.Close() })
	}
	return targets
}

// randomPrefix returns a key prefix of tb's own, removed when tb ends if it
// runs on the shared Redis of REDIS_URL.
func randomPrefix(tb testing.TB) string {
	b := make([]byte, 6)
	rand.Read(b)
	p := "dctest:" + hex.EncodeToString(b)
	if url := os.Getenv("REDIS_URL"); url != "" {
		redistest.RemoveNamespaceAtEnd(tb, url, p)
	}
	return p
}

// roundTrips counts the commands and pipelines a client sends.
type roundTrips struct {
	n    atomic.Int64
	mu   sync.Mutex
	sent []string // what was counted, for a failure's message
}

func (r *roundTrips) count(what string) {
	r.n.Add(1)
	r.mu.Lock()
	r.sent = append(r.sent, what)
	r.mu.Unlock()
}

// reset zeroes the count and returns what was sent since the last reset.
func (r *roundTrips) reset() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	sent := r.sent
	r.sent = nil
	r.n.Store(0)
	return sent
}

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.count(cmd.Name())
		return next(ctx, cmd)
	}
}
func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		names := make([]string, len(cmds))
		for i, c := range cmds {
			names[i] = c.Name()
		}
		r.count("pipeline" + fmt.Sprint(names))
		return next(ctx, cmds)
	}
}

var _ redis.Hook = (*roundTrips)(nil)

// A memoized hit is one round trip to Redis, and a miss is two: the lookup
// (which also reads the epoch) and the fill (one script, whatever the number
// of dependencies).
func TestMemoizeRoundTrips(t *testing.T) {
	ctx := context.Background()
	for _, tg := range redisTargets(t) {
		t.Run(tg.name, func(t *testing.T) {
			rt := &roundTrips{}
			tg.client.AddHook(rt)
			// While no process has an in-process tier, an invalidation
			// also reads the tier registry once per tier lease (1 s by
			// default): a minute keeps that read out of the counts below
			// however slowly a loaded machine runs them.
			b := redisbackend.New(tg.client, redisbackend.WithTierLease(time.Minute))
			m := depcache.New(b, depcache.WithPrefix(randomPrefix(t)), depcache.WithLogger(quiet))
			defer m.Close()
			for _, deps := range []int{1, 10} {
				f := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
					for i := range deps {
						depcache.AddDependency(ctx, "t"+string(rune('a'+i)))
					}
					return x, nil
				}, depcache.Using(m), depcache.KeyName("rt"))
				f(ctx, deps) // warm up: first use learns the server and loads scripts
				// On a loaded machine the warm-up invalidation may time
				// out; its background retry would then be counted below.
				for try := 0; ; try++ {
					_, err := m.InvalidateDependency(ctx, "ta")
					if err == nil && m.Stats().PendingInvalidations == 0 {
						break
					}
					if try == 20 {
						t.Fatalf("warm-up invalidation: %v (pending %d)", err, m.Stats().PendingInvalidations)
					}
				}

				rt.n.Store(0)
				f(ctx, deps)
				if got := rt.n.Load(); got != 2 {
					t.Errorf("miss with %d deps: %d round trips, want 2 (lookup, fill)", deps, got)
				}
				rt.n.Store(0)
				f(ctx, deps)
				if got := rt.n.Load(); got != 1 {
					t.Errorf("hit: %d round trips, want 1", got)
				}
				rt.reset()
				if _, err := m.InvalidateDependency(ctx, "ta"); err != nil {
					t.Fatal(err)
				}
				if got, sent := rt.n.Load(), rt.reset(); got != 1 {
					t.Errorf("invalidation of a small tag: %d round trips %q, want 1", got, sent)
				}
			}
		})
	}
}

// The suite of memoize tests' essentials against Redis: nesting, stale
// fills and Clear with a real store.
func TestMemoizeOnRedis(t *testing.T) {
	ctx := context.Background()
	for _, tg := range redisTargets(t) {
		t.Run(tg.name, func(t *testing.T) {
			m := depcache.New(redisbackend.New(tg.client), depcache.WithPrefix(randomPrefix(t)), depcache.WithLogger(quiet))
			defer m.Close()
			db := "old"
			racing := true
			var calls counter
			child := depcache.Memoize(func(ctx context.Context, id int) (string, error) {
				calls.n.Add(1)
				v := db
				if racing {
					racing = false
					db = "new"
					if _, err := m.InvalidateDependency(ctx, "rows::1"); err != nil {
						t.Fatal(err)
					}
				}
				depcache.AddDependency(ctx, "rows::1")
				return v, nil
			}, depcache.Using(m), depcache.KeyName("child"))
			parent := depcache.Memoize(func(ctx context.Context, id int) (string, error) {
				v, err := child(ctx, id)
				return "page:" + v, err
			}, depcache.Using(m), depcache.KeyName("parent"))

			if v, _ := parent(ctx, 1); v != "page:old" {
				t.Fatalf("first = %q", v)
			}
			if v, _ := parent(ctx, 1); v != "page:new" {
				t.Fatalf("after the invalidation returned: %q", v)
			}
			if v, _ := parent(ctx, 1); v != "page:new" || calls.calls() != 2 {
				t.Fatalf("third call %q, child calls %d", v, calls.calls())
			}
			if st := m.Stats(); st.StaleFills != 2 {
				t.Fatalf("stale fills = %d, want 2 (child and parent)", st.StaleFills)
			}
			if n, _ := m.InvalidateDependency(ctx, "rows::1"); n != 2 {
				t.Fatalf("rows::1 removed %d entries; want child and parent", n)
			}
			parent(ctx, 1)
			if n, err := m.Clear(ctx); n != 2 || err != nil {
				t.Fatalf("Clear = %d, %v", n, err)
			}
		})
	}
}

// Two processes sharing a Redis with redisbackend.WithFillLock run a
// function once between them: the second one's miss finds the first's
// lease, waits (WithFillWait), and takes the value the first stored.
func TestFillLockAcrossProcesses(t *testing.T) {
	ctx := context.Background()
	for _, tg := range redisTargets(t) {
		t.Run(tg.name, func(t *testing.T) {
			prefix := randomPrefix(t)
			rt := &roundTrips{}
			o := tg.client.Options()
			c2 := redis.NewClient(&redis.Options{Addr: o.Addr, DB: o.DB, ContextTimeoutEnabled: true})
			defer c2.Close()
			c2.AddHook(rt)
			p1 := depcache.New(redisbackend.New(tg.client, redisbackend.WithFillLock()), depcache.WithPrefix(prefix), depcache.WithLogger(quiet))
			p2 := depcache.New(redisbackend.New(c2, redisbackend.WithFillLock()), depcache.WithPrefix(prefix), depcache.WithLogger(quiet),
				depcache.WithFillWait(time.Minute))
			defer p1.Close()
			defer p2.Close()
			defer p1.Clear(ctx)

			var calls atomic.Int32
			started, release := make(chan struct{}), make(chan struct{})
			fn := func(ctx context.Context, x int) (int, error) {
				if calls.Add(1) == 1 {
					close(started)
					<-release
				}
				depcache.AddDependency(ctx, "t")
				return x * 2, nil
			}
			f1 := depcache.Memoize(fn, depcache.Using(p1), depcache.KeyName("locked"))
			f2 := depcache.Memoize(fn, depcache.Using(p2), depcache.KeyName("locked"))

			done := make(chan int)
			go func() { v, _ := f1(ctx, 21); done <- v }()
			<-started // process 1 holds the lease and computes
			got := make(chan int)
			p2.Exists(ctx, "warm-up") // the backend learns the server first
			rt.n.Store(0)
			go func() { v, _ := f2(ctx, 21); got <- v }()
			for rt.n.Load() < 2 { // process 2 found the key busy and looks again
				runtime.Gosched()
			}
			close(release)
			if v := <-done; v != 42 {
				t.Fatalf("process 1 got %d", v)
			}
			if v := <-got; v != 42 {
				t.Fatalf("process 2 got %d", v)
			}
			if calls.Load() != 1 {
				t.Fatalf("the function ran %d times across two processes, want 1", calls.Load())
			}
		})
	}
}

// On Redis too, a parent of manager A is registered under the tags of its
// child's manager B, in B's tag hash: B's invalidation removes it, A's tag
// of the same name does not.
func TestRedisPairsAcrossManagers(t *testing.T) {
	for _, tg := range redisTargets(t) {
		t.Run(tg.name, func(t *testing.T) {
			ctx := context.Background()
			store := redisbackend.New(tg.client)
			a := depcache.New(store, depcache.WithPrefix(randomPrefix(t)), depcache.WithName("a"), depcache.WithLogger(quiet))
			b := depcache.New(store, depcache.WithPrefix(randomPrefix(t)), depcache.WithName("b"), depcache.WithLogger(quiet))
			t.Cleanup(func() {
				for _, m := range []*depcache.Manager{a, b} {
					m.Clear(context.Background())
					m.Close()
				}
			})
			var calls atomic.Int64
			child := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
				depcache.AddDependency(ctx, "post:1")
				return id, nil
			}, depcache.Using(b), depcache.KeyName("child"))
			page := depcache.Memoize(func(ctx context.Context, id int) (int, error) {
				calls.Add(1)
				return child(ctx, id)
			}, depcache.Using(a), depcache.KeyName("page"))
			page(ctx, 1)
			page(ctx, 1)
			if n, err := a.InvalidateDependency(ctx, "post:1"); n != 0 || err != nil {
				t.Fatalf("A's post:1 removed %d, %v; want 0", n, err)
			}
			if n, err := b.InvalidateDependency(ctx, "post:1"); n != 2 || err != nil {
				t.Fatalf("B's post:1 removed %d, %v; want child and page", n, err)
			}
			page(ctx, 1)
			if calls.Load() != 2 {
				t.Fatalf("page ran %d times; want 2", calls.Load())
			}
		})
	}
}
