package redisbackend

import (
	"context"
	"fmt"
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
				i := 0
				for b.Loop() {
					i++
					key := fmt.Sprint("k", i)
					l, err := be.Lookup(ctx, ns, key)
					if err != nil || l.Found {
						b.Fatalf("Lookup = %+v, %v", l, err)
					}
					err = be.Fill(ctx, ns, backends.Fill{Key: key, Entry: backends.Entry{Value: benchValue, Deps: tags}, Since: l.Epoch})
					if err != nil {
						b.Fatal(err)
					}
				}
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
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					register(b, be.c, ns, "big", n, env)
					b.StartTimer()
					removed, err := be.Invalidate(ctx, ns, "big")
					if err != nil || removed != n {
						b.Fatalf("Invalidate = %d, %v; want %d", removed, err, n)
					}
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
