package depcache_test

import (
	"context"
	"fmt"
	"testing"

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
