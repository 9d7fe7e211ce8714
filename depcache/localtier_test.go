package depcache_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
)

// countingMemory is a memory backend that counts lookups, so that a test
// can tell a tier hit (no lookup) from a backend hit.
type countingMemory struct {
	*memory.Backend
	lookups atomic.Int64
}

func (c *countingMemory) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	c.lookups.Add(1)
	return c.Backend.Lookup(ctx, ns, key)
}

type post struct {
	ID    int
	Title string
	Tags  []string
}

func TestLocalCacheServesWithoutBackendAndNoAllocs(t *testing.T) {
	b := &countingMemory{Backend: memory.New()}
	t.Cleanup(func() { b.Close() })
	m := depcache.New(b, depcache.WithLogger(quiet), depcache.WithName(t.Name()), depcache.WithLocalCache(100))
	t.Cleanup(func() { m.Close() })
	ctx := context.Background()
	if err := m.Set(ctx, "p1", post{1, "one", []string{"a"}}, 0, "post:1"); err != nil {
		t.Fatal(err)
	}
	var p post
	if found, err := m.Get(ctx, "p1", &p); !found || err != nil || p.Title != "one" {
		t.Fatalf("first Get: %v %v %+v", found, err, p)
	}
	before := b.lookups.Load()
	for range 10 {
		var q post
		if found, err := m.Get(ctx, "p1", &q); !found || err != nil || q.Title != "one" || len(q.Tags) != 1 {
			t.Fatalf("tier Get: %v %v %+v", found, err, q)
		}
	}
	if n := b.lookups.Load() - before; n != 0 {
		t.Fatalf("%d backend lookups after the value was in the tier, want 0", n)
	}
	if s := m.Stats(); s.LocalHits != 10 {
		t.Fatalf("LocalHits = %d, want 10", s.LocalHits)
	}
	var q post
	if allocs := testing.AllocsPerRun(200, func() { m.Get(ctx, "p1", &q) }); allocs != 0 {
		t.Fatalf("a tier hit of Get allocates %.1f times, want 0", allocs)
	}

	// Fetch: the value its own fill stored is served from the tier.
	calls := 0
	fetch := func() string {
		v, err := depcache.Fetch(ctx, m, "f", func(ctx context.Context) (string, error) {
			calls++
			depcache.AddDependency(ctx, "f")
			return "computed", nil
		})
		if err != nil || v != "computed" {
			t.Fatalf("Fetch: %q %v", v, err)
		}
		return v
	}
	fetch()
	before = b.lookups.Load()
	fetch()
	if calls != 1 || b.lookups.Load() != before {
		t.Fatalf("second Fetch: %d calls, %d lookups; want 1 call and no lookup", calls, b.lookups.Load()-before)
	}
}

func TestLocalCacheOffByDefault(t *testing.T) {
	b := &countingMemory{Backend: memory.New()}
	t.Cleanup(func() { b.Close() })
	m := depcache.New(b, depcache.WithLogger(quiet), depcache.WithName(t.Name()))
	t.Cleanup(func() { m.Close() })
	ctx := context.Background()
	m.Set(ctx, "k", 1, 0, "d")
	var v int
	m.Get(ctx, "k", &v)
	m.Get(ctx, "k", &v)
	if b.lookups.Load() != 2 || m.Stats().LocalHits != 0 {
		t.Fatalf("without WithLocalCache: %d lookups, %d local hits; want 2 and 0", b.lookups.Load(), m.Stats().LocalHits)
	}
}

// TestLocalCacheCoherentAcrossManagers: two managers with their own tiers
// on one store (as two processes); every change one makes is gone from the
// other's tier when the call returns.
func TestLocalCacheCoherentAcrossManagers(t *testing.T) {
	for _, tg := range tierTargets(t) {
		t.Run(tg.name, func(t *testing.T) {
			ctx := context.Background()
			prefix := randomPrefix(t)
			a := tg.manager(t, prefix)
			b := tg.manager(t, prefix)
			waitServing(t, a, b)
			get := func(m *depcache.Manager, key string) (string, bool) {
				var s string
				found, err := m.Get(ctx, key, &s)
				if err != nil {
					t.Fatal(err)
				}
				return s, found
			}
			// warm puts key in b's tier (a Get from the backend, then one
			// from the tier).
			warm := func(key, want string) {
				t.Helper()
				hits := b.Stats().LocalHits
				deadline := time.Now().Add(10 * time.Second)
				// A read from the store, then reads until one comes from
				// the tier (its lease may lapse on a loaded machine).
				for b.Stats().LocalHits == hits {
					if v, found := get(b, key); !found || v != want {
						t.Fatalf("b.Get(%q) = %q %v, want %q", key, v, found, want)
					}
					if time.Now().After(deadline) {
						t.Fatalf("b did not serve %q from its tier", key)
					}
				}
			}
			gone := func(key, what string) {
				t.Helper()
				if v, found := get(b, key); found {
					t.Fatalf("after a's %s returned, b still serves %q = %q", what, key, v)
				}
			}

			must(t, a.Set(ctx, "k1", "v1", 0, "t1"))
			warm("k1", "v1")
			if _, err := a.InvalidateDependency(ctx, "t1"); err != nil {
				t.Fatal(err)
			}
			gone("k1", "InvalidateDependency")

			must(t, a.Set(ctx, "k2", "v2", 0, "t2"))
			warm("k2", "v2")
			if _, err := a.Delete(ctx, "k2"); err != nil {
				t.Fatal(err)
			}
			gone("k2", "Delete")

			must(t, a.Set(ctx, "k3", "old", 0, "t3"))
			warm("k3", "old")
			must(t, a.Set(ctx, "k3", "new", 0, "t3"))
			if v, _ := get(b, "k3"); v != "new" {
				t.Fatalf("after a's Set returned, b serves k3 = %q, want new", v)
			}

			must(t, a.Set(ctx, "k4", "v4", 0, "t4"))
			warm("k4", "v4")
			if _, err := a.Clear(ctx); err != nil {
				t.Fatal(err)
			}
			gone("k4", "Clear")
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// tierTarget makes managers with tiers that share one store, each as a
// separate process would have it.
type tierTarget struct {
	name    string
	manager func(t *testing.T, prefix string) *depcache.Manager
}

const testLease = 200 * time.Millisecond

func tierTargets(t *testing.T) []tierTarget {
	mem := memory.New()
	t.Cleanup(func() { mem.Close() })
	out := []tierTarget{{"memory", func(t *testing.T, prefix string) *depcache.Manager {
		m := depcache.New(mem, depcache.WithLogger(quiet), depcache.WithPrefix(prefix), depcache.WithLocalCache(100))
		t.Cleanup(func() { m.Close() })
		return m
	}}}
	mr := miniredis.RunT(t)
	redisManager := func(opt *redis.Options) func(t *testing.T, prefix string) *depcache.Manager {
		return func(t *testing.T, prefix string) *depcache.Manager {
			c := redis.NewClient(opt)
			rb := redisbackend.New(c, redisbackend.WithTierLease(testLease))
			m := depcache.New(rb, depcache.WithLogger(quiet), depcache.WithPrefix(prefix), depcache.WithLocalCache(100))
			t.Cleanup(func() {
				m.Close()
				rb.Close()
				c.Close()
			})
			return m
		}
	}
	out = append(out, tierTarget{"miniredis", redisManager(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})})
	if url := os.Getenv("REDIS_URL"); url != "" {
		opt, err := redis.ParseURL(url)
		if err != nil {
			t.Fatal(err)
		}
		opt.ContextTimeoutEnabled = true
		out = append(out, tierTarget{"redis", redisManager(opt)})
	}
	return out
}

// waitServing waits until every manager's tier may serve (a Redis tier
// waits a lease after registering).
func waitServing(t *testing.T, ms ...*depcache.Manager) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, m := range ms {
		for !m.LocalCacheServing() {
			if time.Now().After(deadline) {
				t.Fatal("the tier's lease never started")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// TestLocalCacheSilentProcessStopsServing: a process that cannot hear an
// invalidation (its connections stall) does not acknowledge it; the
// invalidation returns after about a lease, and by then that process no
// longer serves from its tier.
func TestLocalCacheSilentProcessStopsServing(t *testing.T) {
	mr := miniredis.RunT(t)
	ctx := context.Background()
	prefix := randomPrefix(t)
	var stall stallDialer
	mk := func(opt *redis.Options) *depcache.Manager {
		c := redis.NewClient(opt)
		rb := redisbackend.New(c, redisbackend.WithTierLease(testLease))
		m := depcache.New(rb, depcache.WithLogger(quiet), depcache.WithPrefix(prefix), depcache.WithLocalCache(100))
		t.Cleanup(func() {
			stall.release()
			m.Close()
			rb.Close()
			c.Close()
		})
		return m
	}
	a := mk(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	b := mk(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true, Dialer: stall.dial, MaxRetries: -1})
	waitServing(t, a, b)
	must(t, a.Set(ctx, "k", "v", 0, "t"))
	var s string
	deadline := time.Now().Add(10 * time.Second)
	for b.Stats().LocalHits == 0 { // a read from Redis, then one from the tier
		if found, _ := b.Get(ctx, "k", &s); !found && time.Now().After(deadline) {
			t.Fatal("b never served the value")
		}
		time.Sleep(time.Millisecond)
	}
	stall.stall()
	start := time.Now()
	if _, err := a.InvalidateDependency(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < testLease {
		t.Fatalf("the invalidation returned after %v without b's acknowledgement, before b's lease (%v) could run out", waited, testLease)
	}
	hits := b.Stats().LocalHits
	if found, _ := b.Get(ctx, "k", &s); found && s == "v" || b.Stats().LocalHits != hits {
		t.Fatalf("b served from its tier after an invalidation it never heard of returned (found %v, %q)", found, s)
	}
}

// stallDialer makes connections whose reads can be stalled at once.
type stallDialer struct {
	mu      sync.Mutex
	stalled chan struct{} // closed: not stalled
	on      bool
}

func (d *stallDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &stallConn{Conn: c, d: d}, nil
}

func (d *stallDialer) gate() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stalled == nil {
		d.stalled = make(chan struct{})
		close(d.stalled)
	}
	return d.stalled
}

func (d *stallDialer) stall() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stalled = make(chan struct{})
	d.on = true
}

func (d *stallDialer) release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.on {
		close(d.stalled)
		d.on = false
	}
}

type stallConn struct {
	net.Conn
	d        *stallDialer
	deadline atomic.Int64 // unix ns; 0: none
}

func (c *stallConn) SetReadDeadline(t time.Time) error {
	c.deadline.Store(t.UnixNano())
	if t.IsZero() {
		c.deadline.Store(0)
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *stallConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.Conn.SetDeadline(t)
}

// Read waits while stalled, until the read deadline at most.
func (c *stallConn) Read(p []byte) (int, error) {
	gate := c.d.gate()
	select {
	case <-gate:
	default:
		var timeout <-chan time.Time
		if dl := c.deadline.Load(); dl != 0 {
			t := time.NewTimer(time.Until(time.Unix(0, dl)))
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-gate:
		case <-timeout:
			return 0, os.ErrDeadlineExceeded
		}
	}
	n, err := c.Conn.Read(p)
	// A read that was already waiting when the stall began holds what it
	// got until the stall ends, as a stalled network would.
	<-c.d.gate()
	return n, err
}

// TestLocalCacheRefusedOnCluster: on Redis Cluster the tier stays off, with
// a logged error, and the manager works without it.
func TestLocalCacheRefusedOnCluster(t *testing.T) {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}, ContextTimeoutEnabled: true})
	defer cc.Close()
	rb := redisbackend.New(cc)
	defer rb.Close()
	var log strings.Builder
	m := depcache.New(rb, depcache.WithLocalCache(10), depcache.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	defer m.Close()
	if m.LocalCacheEnabled() {
		t.Fatal("the tier is on over Redis Cluster")
	}
	if !strings.Contains(log.String(), "in-process tier is off") || !strings.Contains(log.String(), "Cluster") {
		t.Fatalf("no clear error logged: %q", log.String())
	}
}

// TestLocalCacheStopsServingWhenTheMemoryBackendCloses: a closed memory
// store holds nothing; its tiers stop serving, as a Redis Backend's do.
func TestLocalCacheStopsServingWhenTheMemoryBackendCloses(t *testing.T) {
	b := memory.New()
	m := depcache.New(b, depcache.WithLogger(quiet), depcache.WithName(t.Name()), depcache.WithLocalCache(10))
	t.Cleanup(func() { m.Close() })
	ctx := context.Background()
	if err := m.Set(ctx, "k", "v", 0, "t"); err != nil {
		t.Fatal(err)
	}
	var v string
	if found, err := m.Get(ctx, "k", &v); !found || err != nil {
		t.Fatalf("Get: %v %v", found, err)
	}
	b.Close()
	if m.LocalCacheServing() {
		t.Fatal("the tier serves after its memory backend closed")
	}
	if found, _ := m.Get(ctx, "k", &v); found {
		t.Fatalf("Get found %q in the tier of a closed store", v)
	}
}
