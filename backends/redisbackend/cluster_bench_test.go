package redisbackend

import (
	"context"
	"fmt"
	"testing"

	"github.com/depcache/go-depcache/backends"
)

// Benchmarks on the tests' own Redis Cluster (3 masters on loopback, no
// replicas), next to a raw GET through the same cluster client.

func BenchmarkClusterLookupHit(b *testing.B) {
	tc := sharedCluster(b)
	be := clusterBackend(b, tc)
	ns := randomName(b, "cbench")
	clearAtEnd(b, be, ns)
	fill(b, be, ns, "k", string(benchValue), 0, "users::42", "users::*")
	ctx := context.Background()
	for b.Loop() {
		l, err := be.Lookup(ctx, ns, "k")
		if err != nil || !l.Found {
			b.Fatalf("Lookup = %+v, %v", l, err)
		}
	}
}

func BenchmarkClusterRawGet(b *testing.B) {
	tc := sharedCluster(b)
	c := clusterClient(b, tc)
	ctx := context.Background()
	key := randomName(b, "cbench-raw:")
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
}

// BenchmarkClusterMissFill is a miss (Lookup, which takes the lease)
// followed by its fill with that lease, on a new key every time.
func BenchmarkClusterMissFill(b *testing.B) {
	tc := sharedCluster(b)
	for _, deps := range []int{1, 10} {
		b.Run(fmt.Sprintf("deps=%d", deps), func(b *testing.B) {
			be := clusterBackend(b, tc)
			ns := randomName(b, "cbench")
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
				if err != nil || l.Found || l.Lease == "" {
					b.Fatalf("Lookup = %+v, %v", l, err)
				}
				err = be.Fill(ctx, ns, backends.Fill{Key: key, Entry: backends.Entry{Value: benchValue, Deps: tags}, Since: l.Epoch, Lease: l.Lease})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkClusterInvalidate invalidates one tag holding n entries spread
// over every master (registered outside the timer).
func BenchmarkClusterInvalidate(b *testing.B) {
	tc := sharedCluster(b)
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			be := clusterBackend(b, tc)
			ns := randomName(b, "cbench")
			clearAtEnd(b, be, ns)
			ctx := context.Background()
			env := backends.EncodeEntry(backends.Entry{Value: benchValue, Deps: []string{"big"}, Since: mustEpoch(b, be)})
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				pipe := be.c.Pipeline()
				fields := make([]any, 0, 2*n)
				for j := range n {
					k := entryKey(ns, fmt.Sprint("k", j))
					pipe.Set(ctx, k, env, 0)
					fields = append(fields, k, newFillID())
				}
				pipe.HSet(ctx, tagKey(ns, "big"), fields...)
				if _, err := pipe.Exec(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				removed, err := be.Invalidate(ctx, ns, "big")
				if err != nil || removed != n {
					b.Fatalf("Invalidate = %d, %v; want %d", removed, err, n)
				}
			}
		})
	}
}

// BenchmarkClusterSet fills without a lease (Manager.Set) keys that hold
// nothing: a lease taken with the stamps' check, then the fill's steps.
func BenchmarkClusterSet(b *testing.B) {
	tc := sharedCluster(b)
	be := clusterBackend(b, tc)
	ns := randomName(b, "cbench")
	clearAtEnd(b, be, ns)
	since := mustEpoch(b, be)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		i++
		err := be.Fill(ctx, ns, backends.Fill{Key: fmt.Sprint("k", i), Entry: backends.Entry{Value: benchValue, Deps: []string{"users::42", "users::*"}}, Since: since})
		if err != nil {
			b.Fatal(err)
		}
	}
}
