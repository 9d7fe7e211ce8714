package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	gocache "github.com/eko/gocache/lib/v4/cache"
	gostore "github.com/eko/gocache/lib/v4/store"
	gocacheredis "github.com/eko/gocache/store/redis/v4"
	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/bench"
)

// invalidator prepares a tag with n entries in its own layout, then
// invalidates it; fill is not timed.
type invalidator struct {
	name       string
	client     *bench.Client
	fill       func(ctx context.Context, n int) error
	invalidate func(ctx context.Context) error
}

// invalidation is what one invalidation measured.
type invalidation struct {
	took, maxPing, slowest time.Duration
	slow                   int // SLOWLOG entries ≥ 10 ms from the contender's client
	trips                  int64
}

const slowThreshold = 10 * time.Millisecond

// invalidateWorkload: invalidating a tag with 1,000 and 100,000 entries,
// with a PING probe on a connection of its own recording the longest the
// server did not answer meanwhile, and the SLOWLOG entries the
// contender's own client caused.
func invalidateWorkload(ctx context.Context, e *env, w io.Writer) error {
	value := postJSON()
	const ttl = 10 * time.Minute
	var cs []invalidator

	raw, err := e.client("bench-inv-raw", 0)
	if err != nil {
		return err
	}
	rawSet := e.key("invraw", "set")
	cs = append(cs, invalidator{"one DEL of an n-member set (baseline)", raw,
		func(ctx context.Context, n int) error {
			return bench.FillLayout(ctx, raw.Pipeline(), n, func(p redis.Pipeliner, i int) {
				p.SAdd(ctx, rawSet, e.key("invraw", fmt.Sprint("k", i)))
			})
		},
		func(ctx context.Context) error { return raw.Del(ctx, rawSet).Err() }})

	// The issue's own baseline: one DEL of the n keys an invalidation
	// removes, entries of the same value and TTL, named in a random order
	// as a set or hash of them would list them (deleting keys in the order
	// they were written costs about half as much: memory locality).
	keysClient, err := e.client("bench-inv-keys", 0)
	if err != nil {
		return err
	}
	var delKeys []string
	cs = append(cs, invalidator{"one DEL of the same n keys", keysClient,
		func(ctx context.Context, n int) error {
			delKeys = make([]string, n)
			for i := range delKeys {
				delKeys[i] = e.key("invkeys", fmt.Sprint("k", i))
			}
			err := bench.FillLayout(ctx, keysClient.Pipeline(), n, func(p redis.Pipeliner, i int) {
				p.Set(ctx, delKeys[i], value, ttl)
			})
			rand.Shuffle(len(delKeys), func(i, j int) { delKeys[i], delKeys[j] = delKeys[j], delKeys[i] })
			return err
		},
		func(ctx context.Context) error {
			got, err := keysClient.Del(ctx, delKeys...).Result()
			if err == nil && got != int64(len(delKeys)) {
				err = fmt.Errorf("DEL removed %d keys, want %d", got, len(delKeys))
			}
			return err
		}})

	m, dc, err := e.newManager("inv", 64)
	if err != nil {
		return err
	}
	defer e.closeManager(m)
	var dcWant int
	var timeouts atomic.Int64
	cs = append(cs, invalidator{"depcache InvalidateDependency", dc,
		func(ctx context.Context, n int) error {
			dcWant = n
			// Through the public API (the layout is depcache's own), from
			// 32 goroutines so that 100,000 fills take seconds.
			var next atomic.Int64
			var wg sync.WaitGroup
			var firstErr atomic.Value
			for range 32 {
				wg.Go(func() {
					for i := next.Add(1); i <= int64(n); i = next.Add(1) {
						// A fill that outlives the manager's 250 ms timeout
						// (a load spike from the machine's other work) is
						// retried: the preparation is not what is measured.
						var err error
						for range 20 {
							if err = m.Set(ctx, fmt.Sprint("k", i), thePost, ttl, "big"); !errors.Is(err, context.DeadlineExceeded) {
								break
							}
							timeouts.Add(1)
						}
						if err != nil {
							firstErr.CompareAndSwap(nil, err)
							return
						}
					}
				})
			}
			wg.Wait()
			if t := timeouts.Swap(0); t > 0 {
				fmt.Fprintf(os.Stderr, "depcache fill of %d entries: %d Sets timed out and were retried\n", n, t)
			}
			if err, ok := firstErr.Load().(error); ok {
				return err
			}
			return nil
		},
		func(ctx context.Context) error {
			got, err := m.InvalidateDependency(ctx, "big")
			if err == nil && got != dcWant {
				err = fmt.Errorf("removed %d entries, want %d", got, dcWant)
			}
			return err
		}})

	nc, err := e.client("bench-inv-naive", 0)
	if err != nil {
		return err
	}
	naive := &bench.Naive{C: nc.Client, Prefix: e.key("invnaive")}
	cs = append(cs, invalidator{"naive dep cache (SMEMBERS, one DEL)", nc,
		func(ctx context.Context, n int) error {
			return naive.FillPipelined(ctx, nc.Pipeline(), "big", n, value, ttl)
		},
		func(ctx context.Context) error { _, err := naive.Invalidate(ctx, "big"); return err }})

	gc, err := e.client("bench-inv-gocache", 0)
	if err != nil {
		return err
	}
	gcache := gocache.New[string](gocacheredis.NewRedis(gc.Client, gostore.WithExpiration(ttl)))
	gtag := e.key("big")
	cs = append(cs, invalidator{"eko/gocache Invalidate (SMEMBERS, DEL per key)", gc,
		func(ctx context.Context, n int) error {
			// gocache's layout, written by pipeline: SET key, SADD gocache_tag_<tag> key.
			return bench.FillLayout(ctx, gc.Pipeline(), n, func(p redis.Pipeliner, i int) {
				k := e.key("invgocache", fmt.Sprint("k", i))
				p.Set(ctx, k, value, ttl)
				p.SAdd(ctx, fmt.Sprintf(gocacheredis.RedisTagPattern, gtag), k)
			})
		},
		func(ctx context.Context) error {
			return gcache.Invalidate(ctx, gostore.WithInvalidateTags([]string{gtag}))
		}})

	gg, err := e.client("bench-inv-gormcaches", 0)
	if err != nil {
		return err
	}
	cacher := &bench.GormCacher{C: gg.Client, Prefix: e.key("invgorm") + ":", TTL: ttl}
	cs = append(cs, invalidator{"go-gorm/caches Invalidate (SCAN + DEL, all entries)", gg,
		func(ctx context.Context, n int) error {
			return bench.FillLayout(ctx, gg.Pipeline(), n, func(p redis.Pipeliner, i int) {
				p.Set(ctx, cacher.Prefix+fmt.Sprint("k", i), value, ttl)
			})
		},
		func(ctx context.Context) error { return cacher.Invalidate(ctx) }})

	probe, err := e.client("bench-inv-probe", 1)
	if err != nil {
		return err
	}
	sizes := []struct{ n, rounds int }{{1000, 15}, {100_000, 3}}
	if e.quick {
		sizes = []struct{ n, rounds int }{{1000, 5}, {20_000, 1}}
	}
	for _, size := range sizes {
		results := make([][]invalidation, len(cs))
		order := make([]int, len(cs))
		for i := range order {
			order[i] = i
		}
		for range size.rounds {
			rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			for _, i := range order {
				if err := cs[i].fill(ctx, size.n); err != nil {
					return fmt.Errorf("%s fill: %w", cs[i].name, err)
				}
				r, err := measureInvalidation(ctx, probe, cs[i])
				if err != nil {
					return fmt.Errorf("%s: %w", cs[i].name, err)
				}
				results[i] = append(results[i], r)
			}
		}
		printInvalidations(w, size.n, size.rounds, cs, results)
	}
	return nil
}

func measureInvalidation(ctx context.Context, probe *bench.Client, c invalidator) (invalidation, error) {
	var r invalidation
	before, err := probe.SlowLogGet(ctx, 128).Result()
	if err != nil {
		return r, fmt.Errorf("SLOWLOG GET: %w", err)
	}
	lastID := int64(-1)
	for _, s := range before {
		lastID = max(lastID, s.ID)
	}
	stop := make(chan struct{})
	maxPing := make(chan time.Duration)
	go func() {
		var worst time.Duration
		for {
			select {
			case <-stop:
				maxPing <- worst
				return
			default:
			}
			start := time.Now()
			probe.Ping(ctx)
			worst = max(worst, time.Since(start))
		}
	}()
	trips0 := c.client.Trips.Load()
	start := time.Now()
	err = c.invalidate(ctx)
	r.took = time.Since(start)
	r.trips = c.client.Trips.Load() - trips0
	close(stop)
	r.maxPing = <-maxPing
	if err != nil {
		return r, err
	}
	after, err := probe.SlowLogGet(ctx, 128).Result()
	if err != nil {
		return r, fmt.Errorf("SLOWLOG GET: %w", err)
	}
	for _, s := range after {
		if s.ID > lastID && s.ClientName == c.client.Name && s.Duration >= slowThreshold {
			r.slow++
			r.slowest = max(r.slowest, s.Duration)
		}
	}
	return r, nil
}

func printInvalidations(w io.Writer, n, rounds int, cs []invalidator, results [][]invalidation) {
	fmt.Fprintf(w, "\n### 3. Invalidate a tag with %s entries (%d rounds)\n\n", num(float64(n)), rounds)
	fmt.Fprintln(w, "| contender | ms median (p10–p90) | × one DEL of the set, median | × one DEL of the same keys, median | round trips, median | longest PING stall, median (max) ms | SLOWLOG ≥10 ms entries (slowest ms) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	base := make([]float64, rounds)
	for k, r := range results[0] {
		base[k] = float64(r.took)
	}
	keysBase := make([]float64, rounds)
	for k, r := range results[1] {
		keysBase[k] = float64(r.took)
	}
	for i, c := range cs {
		var took, ratio, keysRatio, stall []float64
		var worstStall, slowest time.Duration
		slow := 0
		var trips []float64
		for k, r := range results[i] {
			took = append(took, float64(r.took)/1e6)
			ratio = append(ratio, float64(r.took)/base[k])
			keysRatio = append(keysRatio, float64(r.took)/keysBase[k])
			stall = append(stall, float64(r.maxPing)/1e6)
			worstStall = max(worstStall, r.maxPing)
			slow += r.slow
			slowest = max(slowest, r.slowest)
			trips = append(trips, float64(r.trips))
		}
		t, q, s := bench.SpreadOf(took), bench.SpreadOf(ratio), bench.SpreadOf(stall)
		fmt.Fprintf(w, "| %s | %.2f (%.2f–%.2f) | %.1f | %.1f | %.0f | %.2f (%.2f) | %d (%.1f) |\n", c.name, t.Median, t.P10, t.P90,
			q.Median, bench.SpreadOf(keysRatio).Median, bench.SpreadOf(trips).Median, s.Median, float64(worstStall)/1e6, slow, float64(slowest)/1e6)
	}
}
