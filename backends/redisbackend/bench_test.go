package redisbackend

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
)

// The benchmarks run on miniredis and, with REDIS_URL, on a real Redis,
// next to a raw go-redis GET of the same bytes in the same run.

// benchValue is a typical small cached value (a JSON row).
var benchValue = []byte(`{"id":42,"name":"Ada Lovelace","email":"ada@example.com","bio":"` + strings.Repeat("x", 120) + `"}`)

func BenchmarkLookupHit(b *testing.B) {
	for _, tg := range targets(b) {
		b.Run(tg.name, func(b *testing.B) {
			be := newBackend(b, tg)
			ns := randomName(b, "bench")
			clearAtEnd(b, be, ns)
			fill(b, be, ns, "k", string(benchValue), 0, "users::42", "users::*")
			ctx := context.Background()
			for b.Loop() {
				l, err := be.Lookup(ctx, ns, "k")
				if err != nil || !l.Found {
					b.Fatalf("Lookup = %+v, %v", l, err)
				}
			}
		})
	}
}

func BenchmarkRawGet(b *testing.B) {
	for _, tg := range targets(b) {
		b.Run(tg.name, func(b *testing.B) {
			c := tg.client(b)
			ctx := context.Background()
			key := randomName(b, "bench-raw:")
			env := backends.EncodeEntry(backends.Entry{Value: benchValue, Deps: []string{"users::42", "users::*"}})
			if err := c.Set(ctx, key, env, 0).Err(); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Del(context.Background(), key) })
			for b.Loop() {
				v, err := c.Get(ctx, key).Bytes()
				if err != nil || len(v) != len(env) {
					b.Fatalf("GET = %d bytes, %v", len(v), err)
				}
			}
		})
	}
}

// BenchmarkMissFill is a miss (Lookup) followed by its fill, on a new key
// every time.
func BenchmarkMissFill(b *testing.B) {
	benchFills(b, func(ctx context.Context, be *Backend, ns, key string, tags []string) error {
		l, err := be.Lookup(ctx, ns, key)
		if err != nil || l.Found {
			return fmt.Errorf("Lookup = %+v, %v", l, err)
		}
		return be.Fill(ctx, ns, backends.Fill{Key: key, Entry: backends.Entry{Value: benchValue, Deps: tags}, Since: l.Epoch})
	})
}

// BenchmarkSetCurrent is Manager.Set's fill: a new key every time, stored
// at the current epoch (Fill.Current), one round trip.
func BenchmarkSetCurrent(b *testing.B) {
	benchFills(b, func(ctx context.Context, be *Backend, ns, key string, tags []string) error {
		return be.Fill(ctx, ns, backends.Fill{Key: key, Entry: backends.Entry{Value: benchValue, Deps: tags}, Current: true})
	})
}

// benchFills runs op on a new key every time, with 1 and 10 tags, and
// reports the server's CPU per op.
func benchFills(b *testing.B, op func(ctx context.Context, be *Backend, ns, key string, tags []string) error) {
	for _, tg := range targets(b) {
		for _, deps := range []int{1, 10} {
			b.Run(fmt.Sprintf("%s/deps=%d", tg.name, deps), func(b *testing.B) {
				be := newBackend(b, tg)
				ns := randomName(b, "bench")
				clearAtEnd(b, be, ns)
				tags := make([]string, deps)
				for i := range tags {
					tags[i] = fmt.Sprint("tag", i)
				}
				ctx := context.Background()
				cpu := serverCPU(be.c)
				i := 0
				for b.Loop() {
					i++
					if err := op(ctx, be, ns, fmt.Sprint("k", i), tags); err != nil {
						b.Fatal(err)
					}
				}
				cpu.report(b, "server-µs/op", 1)
			})
		}
	}
}

// BenchmarkInvalidate invalidates one tag holding n entries (registered
// outside the timer, as fills would have).
func BenchmarkInvalidate(b *testing.B) {
	for _, tg := range targets(b) {
		for _, n := range []int{1, 1000, 100000} {
			b.Run(fmt.Sprintf("%s/entries=%d", tg.name, n), func(b *testing.B) {
				be := newBackend(b, tg)
				ns := randomName(b, "bench")
				clearAtEnd(b, be, ns)
				ctx := context.Background()
				env := backends.EncodeEntry(backends.Entry{Value: benchValue, Deps: []string{"big"}, Since: mustEpoch(b, be)})
				var cpuUS float64
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					register(b, be.c, ns, "big", n, env)
					cpu := serverCPU(be.c)
					b.StartTimer()
					removed, err := be.Invalidate(ctx, ns, "big")
					if err != nil || removed != n {
						b.Fatalf("Invalidate = %d, %v; want %d", removed, err, n)
					}
					b.StopTimer()
					cpuUS += cpu.since()
					b.StartTimer()
				}
				if cpuUS >= 0 {
					b.ReportMetric(cpuUS/1e3/float64(b.N), "server-ms/op")
				}
			})
		}
	}
}

// register writes n entries holding env and their registrations under tag,
// the state n fills leave, in pipelined batches.
func register(tb testing.TB, c redis.UniversalClient, ns, tag string, n int, env []byte) {
	tb.Helper()
	ctx := context.Background()
	const batch = 1000
	for start := 0; start < n; start += batch {
		end := min(n, start+batch)
		pairs := make([]any, 0, 2*(end-start))
		fields := make([]any, 0, 2*(end-start))
		for i := start; i < end; i++ {
			k := entryKey(ns, fmt.Sprint("k", i))
			pairs = append(pairs, k, env)
			fields = append(fields, k, newFillID())
		}
		pipe := c.Pipeline()
		pipe.MSet(ctx, pairs...)
		pipe.HSet(ctx, tagKey(ns, tag), fields...)
		if _, err := pipe.Exec(ctx); err != nil {
			tb.Fatal(err)
		}
	}
}

// cpuMark is the Redis main thread's CPU time (INFO cpu) at a point; -1
// where the server reports none (miniredis). Wall time on a loaded
// machine is mostly waiting: the server's own CPU time is what a change
// to a script or to the key layout moves.
type cpuMark struct {
	c  redis.UniversalClient
	us float64
}

func serverCPU(c redis.UniversalClient) cpuMark {
	return cpuMark{c, mainThreadCPU(c)}
}

// since returns the main thread's CPU µs since m, or -1.
func (m cpuMark) since() float64 {
	now := mainThreadCPU(m.c)
	if m.us < 0 || now < 0 {
		return -1
	}
	return now - m.us
}

// report reports the CPU µs since m per op (scaled by scale) as unit.
func (m cpuMark) report(b *testing.B, unit string, scale float64) {
	if d := m.since(); d >= 0 && b.N > 0 {
		b.ReportMetric(d*scale/float64(b.N), unit)
	}
}

func mainThreadCPU(c redis.UniversalClient) float64 {
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		return -1
	}
	sys, user := infoField(info, "used_cpu_sys_main_thread"), infoField(info, "used_cpu_user_main_thread")
	if sys == "" || user == "" {
		return -1
	}
	s, err1 := strconv.ParseFloat(sys, 64)
	u, err2 := strconv.ParseFloat(user, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return (s + u) * 1e6
}
