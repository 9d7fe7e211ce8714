package redisbackend

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkLookupHitParallel runs warm hits from 64 goroutines on one
// client, in short windows that alternate, in random order, between a raw
// GET of the same bytes, a raw MGET of them and the epoch (what a lookup
// sends), and lookups: one loopback round trip here changes its cost
// every few seconds, so contenders run side by side, and the metrics are
// each one's hits per second as a percentage of the raw GET's in the
// same rounds.
func BenchmarkLookupHitParallel(b *testing.B) {
	for _, tg := range targets(b) {
		if tg.name == "miniredis" {
			continue
		}
		b.Run(tg.name, func(b *testing.B) {
			c := tg.client(b)
			be := New(c, WithLogger(testLogger(b)))
			b.Cleanup(func() { _ = be.Close() })
			ns := randomName(b, "bench")
			clearAtEnd(b, be, ns)
			fill(b, be, ns, "k", string(benchValue), 0, "users::42", "users::*")
			ek := entryKey(ns, "k")
			ctx := context.Background()
			contenders := []struct {
				name string
				op   func() error
			}{
				{"rawGET", func() error { return c.Get(ctx, ek).Err() }},
				{"rawMGET", func() error { return c.MGet(ctx, ek, DefaultEpochKey).Err() }},
				{"lookup", func() error {
					l, err := be.Lookup(ctx, ns, "k")
					if err == nil && !l.Found {
						err = errors.New("lookup missed")
					}
					return err
				}},
			}
			const goroutines, window = 64, 20 * time.Millisecond
			total := make([]float64, len(contenders))
			b.ResetTimer()
			for range b.N {
				for _, i := range rand.Perm(len(contenders)) {
					var n atomic.Int64
					var stop atomic.Bool
					var wg sync.WaitGroup
					var failed atomic.Value
					start := time.Now()
					for range goroutines {
						wg.Go(func() {
							for !stop.Load() {
								if err := contenders[i].op(); err != nil {
									failed.Store(err)
									return
								}
								n.Add(1)
							}
						})
					}
					time.Sleep(window)
					stop.Store(true)
					wg.Wait()
					if err := failed.Load(); err != nil {
						b.Fatalf("%s: %v", contenders[i].name, err)
					}
					total[i] += float64(n.Load()) / time.Since(start).Seconds()
				}
				runtime.Gosched()
			}
			for i, ct := range contenders[1:] {
				b.ReportMetric(100*total[i+1]/total[0], "%GET-"+ct.name)
			}
			b.ReportMetric(total[0]/float64(b.N), "GET/s")
		})
	}
}
