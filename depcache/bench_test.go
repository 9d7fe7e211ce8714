package depcache_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
)

type benchUser struct {
	ID    int
	Name  string
	Email string
	Bio   string
}

// benchStores are the stores every benchmark runs on, side by side:
// memory, miniredis, and the real Redis when REDIS_URL is set.
func benchStores(b *testing.B) []struct {
	name    string
	backend backends.Backend
	raw     func(ctx context.Context, key string) error // a plain GET, or nil
	set     func(ctx context.Context, key string, v []byte) error
} {
	type store = struct {
		name    string
		backend backends.Backend
		raw     func(ctx context.Context, key string) error
		set     func(ctx context.Context, key string, v []byte) error
	}
	out := []store{{name: "memory", backend: memory.New()}}
	for _, tg := range redisTargets(b) {
		c := tg.client
		out = append(out, store{
			name:    tg.name,
			backend: redisbackend.New(c),
			raw:     func(ctx context.Context, key string) error { return c.Get(ctx, key).Err() },
			set:     func(ctx context.Context, key string, v []byte) error { return c.Set(ctx, key, v, 0).Err() },
		})
	}
	return out
}

// BenchmarkMemoize measures a memoized call that hits, one that misses and
// fills with 1 and 10 dependencies, and, as the baseline, a raw go-redis GET
// of a value of the same size on the same server in the same run.
func BenchmarkMemoize(b *testing.B) {
	ctx := context.Background()
	for _, st := range benchStores(b) {
		m := depcache.New(st.backend, depcache.WithPrefix(randomPrefix(b)), depcache.WithLogger(quiet))
		user := benchUser{ID: 42, Name: "Ada Lovelace", Email: "ada@example.com", Bio: "Wrote the first program."}
		get := depcache.Memoize(func(ctx context.Context, id int) (benchUser, error) {
			depcache.AddDependency(ctx, "users::42")
			return user, nil
		}, depcache.Using(m), depcache.KeyName("getUser"))

		b.Run("hit/"+st.name, func(b *testing.B) {
			get(ctx, 42)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := get(ctx, 42); err != nil {
					b.Fatal(err)
				}
			}
			if s := m.Stats(); s.Misses > 1 {
				b.Fatalf("hit benchmark missed %d times", s.Misses)
			}
		})
		if st.raw != nil {
			b.Run("rawGET/"+st.name, func(b *testing.B) {
				payload, _ := depcache.JSON.Marshal(user)
				key := randomPrefix(b) + ":raw"
				st.set(ctx, key, payload)
				b.ReportAllocs()
				for b.Loop() {
					if err := st.raw(ctx, key); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		for _, deps := range []int{1, 10} {
			tags := make([]string, deps)
			for i := range tags {
				tags[i] = fmt.Sprintf("tag::%d", i)
			}
			n := 0
			fill := depcache.Memoize(func(ctx context.Context, i int) (benchUser, error) {
				depcache.AddDependency(ctx, tags...)
				return user, nil
			}, depcache.Using(m), depcache.KeyName(fmt.Sprintf("fill%d", deps)), depcache.TTL(60e9))
			b.Run(fmt.Sprintf("missFill/deps=%d/%s", deps, st.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					n++ // a new key every time: always a miss
					if _, err := fill(ctx, n); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		m.Clear(ctx)
		m.Close()
		st.backend.Close()
	}
}

// BenchmarkHit interleaves, in every iteration and in a random order, a
// raw go-redis GET of the value's bytes with a Manager.Get, a Memoize hit
// and a Fetch hit of the same value, so that the loopback's fast and slow
// phases (a round trip here is ~21 µs or ~60 µs depending on whether client
// and Redis share a vCPU) fall on all of them alike; a benchmark that runs
// one contender after another measures the phase it happened to get. It
// reports each one's ns/op, its ratio to the raw GET of the same
// iterations, and its allocations; under context.Background() and under a
// context that can be cancelled (a request's), which costs an operation
// context of its own.
//
//	REDIS_URL=redis://127.0.0.1:6379/15 go test -run x -bench Hit -benchmem ./depcache
func BenchmarkHit(b *testing.B) {
	user := benchUser{ID: 42, Name: "Ada Lovelace", Email: "ada@example.com", Bio: "Wrote the first program."}
	payload, _ := depcache.JSON.Marshal(user)
	for _, tg := range redisTargets(b) {
		cancellable, cancel := context.WithCancel(context.Background())
		defer cancel()
		for _, c := range []struct {
			name string
			ctx  context.Context
		}{{"background", context.Background()}, {"cancellable", cancellable}} {
			b.Run(tg.name+"/ctx="+c.name, func(b *testing.B) {
				ctx := c.ctx
				m := depcache.New(redisbackend.New(tg.client, redisbackend.WithLogger(quiet)),
					depcache.WithPrefix(randomPrefix(b)), depcache.WithLogger(quiet))
				defer m.Close()
				rawKey := randomPrefix(b) + ":raw"
				if err := tg.client.Set(ctx, rawKey, payload, 0).Err(); err != nil {
					b.Fatal(err)
				}
				if err := m.Set(ctx, "user:42", user, 0, "users::42"); err != nil {
					b.Fatal(err)
				}
				load := func(ctx context.Context) (benchUser, error) {
					depcache.AddDependency(ctx, "users::42")
					return user, nil
				}
				memo := depcache.Memoize(func(ctx context.Context, id int) (benchUser, error) { return load(ctx) },
					depcache.Using(m), depcache.KeyName("getUser"))
				ops := []struct {
					name string
					run  func() error
				}{
					{"raw", func() error { return tg.client.Get(ctx, rawKey).Err() }},
					{"get", func() error {
						var u benchUser
						found, err := m.Get(ctx, "user:42", &u)
						if err == nil && !found {
							err = errors.New("Manager.Get missed")
						}
						return err
					}},
					{"memo", func() error { _, err := memo(ctx, 42); return err }},
					{"fetch", func() error { _, err := depcache.Fetch(ctx, m, "user:42f", load); return err }},
				}
				for _, op := range ops { // warm: the first Memoize and Fetch fill
					if err := op.run(); err != nil {
						b.Fatal(err)
					}
				}
				misses := m.Stats().Misses
				took := make([][]float64, len(ops)) // per op, ns per iteration
				// A new random order every iteration: a rotation gives each
				// contender the same predecessor every time (what one call
				// leaves behind, in the caches or the scheduler, would fall
				// on one contender only).
				order := make([]int, len(ops))
				for k := range order {
					order[k] = k
				}
				for b.Loop() {
					rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
					for _, op := range order {
						start := time.Now()
						if err := ops[op].run(); err != nil {
							b.Fatal(err)
						}
						took[op] = append(took[op], float64(time.Since(start).Nanoseconds()))
					}
				}
				if m.Stats().Misses != misses {
					b.Fatal("a hit benchmark missed")
				}
				// Medians: a GC or a descheduling lands on one call, not on
				// the contender.
				for k, op := range ops {
					b.ReportMetric(median(took[k]), op.name+"-ns/op")
					if k > 0 {
						ratios := make([]float64, len(took[k]))
						for j := range ratios {
							ratios[j] = took[k][j] / took[0][j]
						}
						b.ReportMetric(median(ratios), op.name+"/raw")
					}
					allocs := testing.AllocsPerRun(100, func() { op.run() })
					b.ReportMetric(allocs, op.name+"-allocs/op")
				}
			})
		}
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
