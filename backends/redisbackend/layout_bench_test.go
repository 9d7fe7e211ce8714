package redisbackend

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
)

// BenchmarkRegistryRead prices, in the server's CPU per element, reading a
// tag's 100,000 registrations in chunks of 1,000 — with the command each
// layout allows — beside deleting the 100,000 entries they name in one DEL:
// an invalidation does both, so a layout whose read costs about what the
// DEL does cannot bring a big tag's invalidation near one DEL. The
// registrations are a hash (entry key → fill id: this backend's layout,
// read by HSCAN), a set (SSCAN), a sorted set (ZRANGE by rank) and a list
// (LRANGE). The write benchmarks price a fill's registration in each.
// Server CPU comes from INFO cpu: run it on a server of its own
// (REDIS_URL), where no other client's commands count.
func BenchmarkRegistryRead(b *testing.B) {
	for _, tg := range targets(b) {
		if tg.name == "miniredis" {
			continue
		}
		c := tg.client(b)
		ctx := context.Background()
		base := randomName(b, "bench-layout:")
		const n, chunk = 100_000, 1_000
		keys := make([]string, n)
		for i := range keys {
			keys[i] = entryKey(base, fmt.Sprint("k", i))
		}
		id := newFillID()
		hash, set, zset, list := base+":h", base+":s", base+":z", base+":l"
		for start := 0; start < n; start += chunk {
			part := keys[start : start+chunk]
			pipe := c.Pipeline()
			pairs := make([]any, 0, 2*chunk)
			members := make([]any, 0, chunk)
			zs := make([]redis.Z, 0, chunk)
			for i, k := range part {
				pairs = append(pairs, k, id)
				members = append(members, k)
				zs = append(zs, redis.Z{Score: float64(start + i), Member: k})
			}
			pipe.HSet(ctx, hash, pairs...)
			pipe.SAdd(ctx, set, members...)
			pipe.ZAdd(ctx, zset, zs...)
			pipe.RPush(ctx, list, members...)
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.Cleanup(func() { c.Unlink(context.Background(), hash, set, zset, list) })
		scan := func(next func(cursor uint64) ([]string, uint64, error), perElem int) func() int {
			return func() int {
				var cursor uint64
				read := 0
				for {
					got, c, err := next(cursor)
					if err != nil {
						b.Fatal(err)
					}
					read += len(got) / perElem
					if cursor = c; cursor == 0 {
						return read
					}
				}
			}
		}
		ranged := func(r func(start, stop int64) ([]string, error)) func() int {
			return func() int {
				read := 0
				for start := int64(0); start < n; start += chunk {
					got, err := r(start, start+chunk-1)
					if err != nil {
						b.Fatal(err)
					}
					read += len(got)
				}
				return read
			}
		}
		layouts := []struct {
			name string
			read func() int
		}{
			{"hash-HSCAN", scan(func(cur uint64) ([]string, uint64, error) { return c.HScan(ctx, hash, cur, "", chunk).Result() }, 2)},
			{"set-SSCAN", scan(func(cur uint64) ([]string, uint64, error) { return c.SScan(ctx, set, cur, "", chunk).Result() }, 1)},
			{"zset-ZRANGE", ranged(func(a, z int64) ([]string, error) { return c.ZRange(ctx, zset, a, z).Result() })},
			{"list-LRANGE", ranged(func(a, z int64) ([]string, error) { return c.LRange(ctx, list, a, z).Result() })},
		}
		for _, l := range layouts {
			b.Run(tg.name+"/read/"+l.name, func(b *testing.B) {
				cpu := serverCPU(c)
				for b.Loop() {
					if got := l.read(); got < n {
						b.Fatalf("read %d registrations, want %d", got, n)
					}
				}
				cpu.report(b, "server-ns/element", 1000.0/n)
			})
		}
		// What a fill pays per registration in each layout, on the same
		// 100,000-registration structures: 1,000 new registrations per op,
		// pipelined, removed again outside the measurement.
		extra := make([]string, chunk)
		for i := range extra {
			extra[i] = entryKey(base, fmt.Sprint("x", i))
		}
		writes := []struct {
			name        string
			add, remove func(redis.Pipeliner, string)
		}{
			{"hash-HSET", func(p redis.Pipeliner, k string) { p.HSet(ctx, hash, k, id) }, func(p redis.Pipeliner, k string) { p.HDel(ctx, hash, k) }},
			{"set-SADD", func(p redis.Pipeliner, k string) { p.SAdd(ctx, set, k) }, func(p redis.Pipeliner, k string) { p.SRem(ctx, set, k) }},
			{"zset-ZADD", func(p redis.Pipeliner, k string) { p.ZAdd(ctx, zset, redis.Z{Score: 1 << 52, Member: k}) }, func(p redis.Pipeliner, k string) { p.ZRem(ctx, zset, k) }},
			{"list-RPUSH", func(p redis.Pipeliner, k string) { p.RPush(ctx, list, k) }, func(p redis.Pipeliner, _ string) { p.RPop(ctx, list) }},
		}
		for _, w := range writes {
			b.Run(tg.name+"/write/"+w.name, func(b *testing.B) {
				var cpuUS float64
				run := func(op func(redis.Pipeliner, string)) {
					pipe := c.Pipeline()
					for _, k := range extra {
						op(pipe, k)
					}
					if _, err := pipe.Exec(ctx); err != nil {
						b.Fatal(err)
					}
				}
				for i := 0; i < b.N; i++ {
					cpu := serverCPU(c)
					run(w.add)
					b.StopTimer()
					cpuUS += cpu.since()
					run(w.remove)
					b.StartTimer()
				}
				b.ReportMetric(cpuUS*1000/float64(b.N)/chunk, "server-ns/element")
			})
		}
		b.Run(tg.name+"/delete/DEL", func(b *testing.B) {
			var cpuUS float64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for start := 0; start < n; start += chunk {
					pipe := c.Pipeline()
					for _, k := range keys[start : start+chunk] {
						pipe.Set(ctx, k, benchValue, 0)
					}
					if _, err := pipe.Exec(ctx); err != nil {
						b.Fatal(err)
					}
				}
				cpu := serverCPU(c)
				b.StartTimer()
				if got, err := c.Del(ctx, keys...).Result(); err != nil || got != n {
					b.Fatalf("DEL = %d, %v; want %d", got, err, n)
				}
				b.StopTimer()
				cpuUS += cpu.since()
				b.StartTimer()
			}
			b.ReportMetric(cpuUS*1000/float64(b.N)/n, "server-ns/element")
		})
	}
}
