package redisbackend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/backendtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	// The shared Redis Cluster (clusterutil_test.go) goes before the leak
	// check; its clients were closed by the tests that made them.
	stopSharedCluster()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// target is a server the tests run against: miniredis always, a real Redis
// when REDIS_URL is set.
type target struct {
	name string
	// client returns a new client, closed when the test ends.
	client func(tb testing.TB, hooks ...redis.Hook) *redis.Client
	// mini is the miniredis server, nil for a real Redis.
	mini *miniredis.Miniredis
	// advance moves the server's clock; nil on a real Redis.
	advance func(d time.Duration)
}

// targets returns miniredis (one server per call) and, with REDIS_URL, the
// real Redis.
func targets(tb testing.TB) []target {
	ts := []target{miniTarget(tb)}
	if u := os.Getenv("REDIS_URL"); u != "" {
		opt, err := redis.ParseURL(u)
		if err != nil {
			tb.Fatalf("REDIS_URL: %v", err)
		}
		ts = append(ts, target{
			name: "redis",
			client: func(tb testing.TB, hooks ...redis.Hook) *redis.Client {
				o := *opt
				return newClient(tb, &o, hooks)
			},
		})
	}
	return ts
}

// miniTarget starts a miniredis whose clock (TIME, in scripts) and TTLs
// move together with advance.
func miniTarget(tb testing.TB) target {
	mr := miniredis.RunT(tb)
	var mu sync.Mutex
	now := time.Now()
	mr.SetTime(now)
	return target{
		name: "miniredis",
		mini: mr,
		client: func(tb testing.TB, hooks ...redis.Hook) *redis.Client {
			return newClient(tb, &redis.Options{Addr: mr.Addr()}, hooks)
		},
		advance: func(d time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			now = now.Add(d)
			mr.SetTime(now)
			mr.FastForward(d)
		},
	}
}

func newClient(tb testing.TB, opt *redis.Options, hooks []redis.Hook) *redis.Client {
	opt.ContextTimeoutEnabled = true // New refuses reads and fills without it
	c := redis.NewClient(opt)
	for _, h := range hooks {
		c.AddHook(h)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// testLogger logs warnings and errors to the test's output.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// newBackend returns a Backend on a new client of tg.
func newBackend(tb testing.TB, tg target, opts ...Option) *Backend {
	return newBackendHooked(tb, tg, nil, opts...)
}

func newBackendHooked(tb testing.TB, tg target, hooks []redis.Hook, opts ...Option) *Backend {
	c := tg.client(tb, hooks...)
	b := New(c, append([]Option{WithLogger(testLogger(tb))}, opts...)...)
	tb.Cleanup(func() { _ = b.Close() })
	return b
}

// longOnly skips a long test (failover, Sentinel) unless DEPCACHE_LONG
// asks for the long runs (backendtest.Long).
func longOnly(tb testing.TB) {
	tb.Helper()
	if !backendtest.Long() {
		tb.Skipf("a long run: set %s=1", backendtest.LongEnv)
	}
}

// randomName returns prefix followed by random hex, for namespaces and
// keys on a shared server.
func randomName(tb testing.TB, prefix string) string {
	var p [8]byte
	if _, err := rand.Read(p[:]); err != nil {
		tb.Fatal(err)
	}
	return prefix + hex.EncodeToString(p[:])
}

// counter is a go-redis hook that counts round trips: one per command
// sent on its own, one per pipeline.
type counter struct {
	n     atomic.Int64
	mu    sync.Mutex
	names []string
}

func (c *counter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		c.mu.Lock()
		c.names = append(c.names, cmd.Name())
		c.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (c *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		names := make([]string, len(cmds))
		for i, cmd := range cmds {
			names[i] = cmd.Name()
		}
		c.mu.Lock()
		c.names = append(c.names, "pipeline("+strings.Join(names, ",")+")")
		c.mu.Unlock()
		return next(ctx, cmds)
	}
}

// reset returns the round trips counted so far and what they sent, and
// starts again from zero.
func (c *counter) reset() (int64, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := c.names
	c.names = nil
	return c.n.Swap(0), names
}

// tidyBackend records the namespaces a conformance case uses and, when the
// case closes it, clears them stamps included, so that nothing is left
// behind on a shared server.
type tidyBackend struct {
	*Backend
	mu  sync.Mutex
	nss map[string]bool
}

func (b *tidyBackend) use(ns string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nss[ns] = true
}

func (b *tidyBackend) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	b.use(ns)
	return b.Backend.Lookup(ctx, ns, key)
}

func (b *tidyBackend) Fill(ctx context.Context, ns string, f backends.Fill) error {
	b.use(ns)
	return b.Backend.Fill(ctx, ns, f)
}

func (b *tidyBackend) Invalidate(ctx context.Context, ns string, tags ...string) (int, error) {
	b.use(ns)
	return b.Backend.Invalidate(ctx, ns, tags...)
}

func (b *tidyBackend) Delete(ctx context.Context, ns string, keys ...string) (int, error) {
	b.use(ns)
	return b.Backend.Delete(ctx, ns, keys...)
}

func (b *tidyBackend) Clear(ctx context.Context, ns string) (int, error) {
	b.use(ns)
	return b.Backend.Clear(ctx, ns)
}

func (b *tidyBackend) Close() error {
	for ns := range b.nss {
		if err := sweep(context.Background(), b.Backend, ns); err != nil {
			return err
		}
	}
	return b.Backend.Close()
}

// sweep removes everything of ns from b's server, stamps included: Clear
// by a sweeper, then the namespace stamp that Clear writes and the tag
// index that holds it, one by one (they may live in different Cluster
// slots).
func sweep(ctx context.Context, b *Backend, ns string) error {
	if _, err := sweeper(b).Clear(ctx, ns); err != nil {
		return fmt.Errorf("Clear(%q): %w", ns, err)
	}
	for _, k := range []string{clearKey(ns), tagIndexKey(ns)} {
		if err := b.c.Unlink(ctx, k).Err(); err != nil {
			return fmt.Errorf("unlink %q: %w", k, err)
		}
	}
	return nil
}

// sweeper returns a Backend on b's client whose Clear drops every stamp.
func sweeper(b *Backend) *Backend {
	s := New(b.c, WithLogger(b.log), WithEpochKey(b.cfg.epochKey))
	s.cfg.maxFillAge = -time.Millisecond
	return s
}

// clearAtEnd removes ns, stamps included, when the test ends, to leave a
// shared server tidy.
func clearAtEnd(tb testing.TB, b *Backend, ns string) {
	tb.Cleanup(func() {
		if err := sweep(context.Background(), b, ns); err != nil {
			tb.Error(err)
		}
	})
}
