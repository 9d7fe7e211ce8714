package stalecheck_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/internal/stalecheck"
)

// tierLease is short so that the tiers start serving early in a run (a
// Redis tier waits a lease after it registers) and a killed subscription
// costs little.
const tierLease = 150 * time.Millisecond

// TestTierHasNoStaleReads runs the harness with three managers, as three
// processes, each with its own in-process tier, against one store: no
// stale read, also when the subscriptions are killed halfway through.
func TestTierHasNoStaleReads(t *testing.T) {
	type store struct {
		name string
		// backends returns one backend per manager and a function that
		// kills their subscriptions (nil: nothing to kill).
		backends func(t *testing.T, n int) ([]backends.Backend, func())
	}
	stores := []store{{"memory", func(t *testing.T, n int) ([]backends.Backend, func()) {
		b := memory.New()
		t.Cleanup(func() { b.Close() })
		out := make([]backends.Backend, n)
		for i := range out {
			out[i] = b
		}
		return out, nil
	}}, {"miniredis", func(t *testing.T, n int) ([]backends.Backend, func()) {
		mr := miniredis.RunT(t)
		var conns connSet
		out := make([]backends.Backend, n)
		for i := range out {
			opt := &redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true}
			if i > 0 {
				// Reader managers only: closing their connections fails
				// their reads and fills open, never a writer's
				// invalidation (which would be outside the guarantee).
				opt.Dialer = conns.dial
			}
			out[i] = redisBackend(t, opt)
		}
		return out, conns.closeAll
	}}}
	if url := os.Getenv("REDIS_URL"); url != "" {
		stores = append(stores, store{"redis", func(t *testing.T, n int) ([]backends.Backend, func()) {
			opt, err := redis.ParseURL(url)
			if err != nil {
				t.Fatal(err)
			}
			opt.ContextTimeoutEnabled = true
			opt.ClientName = "dctest-tier-" + testPrefix(t)[len("dctest-stalecheck:"):]
			out := make([]backends.Backend, n)
			for i := range out {
				out[i] = redisBackend(t, opt)
			}
			admin := redis.NewClient(opt)
			t.Cleanup(func() { admin.Close() })
			return out, func() { killPubSub(t, admin, opt.ClientName) }
		}})
	}
	for _, st := range stores {
		for _, kill := range []bool{false, true} {
			name := st.name
			if kill {
				name += "/subscriptions-killed"
			}
			t.Run(name, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "hot.db")
				bs, killer := st.backends(t, 3)
				if kill && killer == nil {
					t.Skip("an in-process store has no subscription")
				}
				var midway func()
				killed := false
				if kill {
					midway = func() { killer(); killed = true }
				}
				rep, err := stalecheck.Run(context.Background(), stalecheck.Config{
					DB: openSQLite(t, path), Backend: bs[0], Mode: stalecheck.Guarded,
					Reads:  reads(t, 3_000, 40_000),
					Prefix: testPrefix(t),
					Others: []stalecheck.Other{{DB: openSQLite(t, path), Backend: bs[1]}, {DB: openSQLite(t, path), Backend: bs[2]}},
					Options: []depcache.Option{
						depcache.WithLocalCache(1000), depcache.WithLogger(quietLog),
					},
					Midway: midway,
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%v; %d served from the tiers (%d when Midway ran)", rep, rep.LocalHits, rep.LocalHitsAtMidway)
				if rep.Stale != 0 || rep.Diverged != 0 || rep.PoisonRead != 0 {
					t.Fatalf("violations: %v", rep)
				}
				if rep.Writes == 0 || rep.LocalHits == 0 {
					t.Fatalf("the run did not exercise the tiers: %v (%d local hits)", rep, rep.LocalHits)
				}
				if kill && (!killed || rep.LocalHitsAtMidway == 0 || rep.LocalHits == rep.LocalHitsAtMidway) {
					t.Fatalf("the subscriptions were not killed while the tiers served and before they served again (killed %v, %d local hits at the kill, %d at the end)", killed, rep.LocalHitsAtMidway, rep.LocalHits)
				}
			})
		}
	}
}

func redisBackend(t *testing.T, opt *redis.Options) backends.Backend {
	c := redis.NewClient(opt)
	b := redisbackend.New(c, redisbackend.WithTierLease(tierLease), redisbackend.WithLogger(quietLog))
	t.Cleanup(func() {
		b.Close()
		c.Close()
	})
	return b
}

// killPubSub kills the pub/sub connections of clients named name, as
// CLIENT KILL TYPE pubsub would, without touching other tests' clients on
// the shared server.
func killPubSub(t *testing.T, admin *redis.Client, name string) {
	list, err := admin.ClientList(context.Background()).Result()
	if err != nil {
		t.Errorf("CLIENT LIST: %v", err)
		return
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		fields := map[string]string{}
		for _, f := range strings.Fields(line) {
			if k, v, ok := strings.Cut(f, "="); ok {
				fields[k] = v
			}
		}
		if fields["name"] != name || fields["sub"] == "0" || fields["sub"] == "" {
			continue
		}
		if err := admin.Do(context.Background(), "CLIENT", "KILL", "ID", fields["id"]).Err(); err != nil {
			t.Errorf("CLIENT KILL ID %s: %v", fields["id"], err)
		}
		killed++
	}
	if killed == 0 {
		t.Error("no subscription to kill")
	}
}

// connSet records the connections it dials, to close them all at once.
type connSet struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (s *connSet) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
	}
	return c, err
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

// lateNotifier delivers changes after Notify has returned, as plain
// pub/sub would.
type lateNotifier struct {
	*memory.Backend
	wg sync.WaitGroup
}

func (l *lateNotifier) Notify(ctx context.Context, c backends.Change) error {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		time.Sleep(20 * time.Millisecond)
		l.Backend.Notify(context.WithoutCancel(ctx), c)
	}()
	return nil
}

// TestTierHarnessBites shows the harness finds the stale reads of tiers
// told of changes only after the invalidation returned.
func TestTierHarnessBites(t *testing.T) {
	b := &lateNotifier{Backend: memory.New()}
	t.Cleanup(func() {
		b.wg.Wait()
		b.Close()
	})
	// A late notification shows only when a read lands in its window,
	// which a short run on a loaded machine can miss: a few runs, the
	// first with a stale read ends it.
	var rep stalecheck.Report
	for range 3 {
		path := filepath.Join(t.TempDir(), "hot.db")
		var err error
		rep, err = stalecheck.Run(context.Background(), stalecheck.Config{
			DB: openSQLite(t, path), Backend: b, Mode: stalecheck.Guarded, Reads: reads(t, 20_000, 40_000),
			Prefix:  testPrefix(t),
			Others:  []stalecheck.Other{{DB: openSQLite(t, path), Backend: b}},
			Options: []depcache.Option{depcache.WithLocalCache(1000), depcache.WithLogger(quietLog)},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Log(rep)
		if rep.Stale != 0 {
			return
		}
	}
	t.Fatalf("late notifications produced no stale read in 3 runs: the harness does not bite (%v)", rep)
}
