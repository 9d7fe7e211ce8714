package depcache_test

import (
	"context"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
)

// BenchmarkLocalCache measures a hit served by the in-process tier
// (Manager.Get, Fetch, Memoize) beside a Get that goes to Redis, in the
// same run.
func BenchmarkLocalCache(b *testing.B) {
	ctx := context.Background()
	for _, tg := range redisTargets(b) {
		prefix := randomPrefix(b)
		user := benchUser{ID: 42, Name: "Ada Lovelace", Email: "ada@example.com", Bio: "Wrote the first program."}
		rb := redisbackend.New(tg.client)
		plain := depcache.New(rb, depcache.WithPrefix(prefix), depcache.WithLogger(quiet))
		tiered := depcache.New(rb, depcache.WithPrefix(prefix), depcache.WithLogger(quiet), depcache.WithLocalCache(10_000))
		for !tiered.LocalCacheServing() {
			time.Sleep(time.Millisecond)
		}
		if err := plain.Set(ctx, "u", user, 0, "users::42"); err != nil {
			b.Fatal(err)
		}
		get := depcache.Memoize(func(ctx context.Context, id int) (benchUser, error) {
			depcache.AddDependency(ctx, "users::42")
			return user, nil
		}, depcache.Using(tiered), depcache.KeyName("getUser"))
		fetch := func(ctx context.Context) (benchUser, error) {
			depcache.AddDependency(ctx, "users::42")
			return user, nil
		}
		b.Run("Get/redis/"+tg.name, func(b *testing.B) {
			var u benchUser
			b.ReportAllocs()
			for b.Loop() {
				if found, err := plain.Get(ctx, "u", &u); !found || err != nil {
					b.Fatal(found, err)
				}
			}
		})
		b.Run("Get/tier/"+tg.name, func(b *testing.B) {
			var u benchUser
			tiered.Get(ctx, "u", &u)
			before := tiered.Stats()
			b.ReportAllocs()
			for b.Loop() {
				if found, err := tiered.Get(ctx, "u", &u); !found || err != nil {
					b.Fatal(found, err)
				}
			}
			// A lease that lapses on a loaded machine sends hits to Redis:
			// say how many came from the tier.
			after := tiered.Stats()
			b.ReportMetric(100*float64(after.LocalHits-before.LocalHits)/float64(after.Hits-before.Hits), "%tier")
		})
		b.Run("Fetch/tier/"+tg.name, func(b *testing.B) {
			depcache.Fetch(ctx, tiered, "f", fetch)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := depcache.Fetch(ctx, tiered, "f", fetch); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("Memoize/tier/"+tg.name, func(b *testing.B) {
			get(ctx, 42)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := get(ctx, 42); err != nil {
					b.Fatal(err)
				}
			}
		})
		tiered.Clear(ctx)
		tiered.Close()
		plain.Close()
		rb.Close()
	}
}
