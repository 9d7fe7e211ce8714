package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/depcache/go-depcache/bench"
)

// contender is one way of doing a workload's operation. trips is the
// round-trip counter of the client it uses (nil: no Redis).
type contender struct {
	name  string
	trips *bench.RoundTrips
	op    func(ctx context.Context) error
}

// sample is what one contender's batches measured: per batch, ns/op and
// its ratio to the baseline's batch of the same round.
type sample struct {
	name                 string
	nsPerOp, ratio       []float64
	allocs, bytes, trips float64 // totals over all batches, divided by ops at the end
	ops                  int
}

// interleave runs batches of batch ops of every contender, in a new random
// order each round, so that the loopback's slow and fast phases fall on all
// of them alike. contenders[0] is the baseline the ratios divide by.
func interleave(ctx context.Context, contenders []contender, rounds, batch int) ([]*sample, error) {
	out := make([]*sample, len(contenders))
	for i, c := range contenders {
		out[i] = &sample{name: c.name}
		for range 3 { // warm: first fills, connection set-up
			if err := c.op(ctx); err != nil {
				return nil, fmt.Errorf("%s warm-up: %w", c.name, err)
			}
		}
	}
	order := make([]int, len(contenders))
	for i := range order {
		order[i] = i
	}
	perRound := make([]float64, len(contenders))
	var ms runtime.MemStats
	for range rounds {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, i := range order {
			c, s := contenders[i], out[i]
			runtime.ReadMemStats(&ms)
			mallocs, total := ms.Mallocs, ms.TotalAlloc
			var trips0 int64
			if c.trips != nil {
				trips0 = c.trips.Load()
			}
			start := time.Now()
			for range batch {
				if err := c.op(ctx); err != nil {
					return nil, fmt.Errorf("%s: %w", c.name, err)
				}
			}
			elapsed := time.Since(start)
			runtime.ReadMemStats(&ms)
			s.allocs += float64(ms.Mallocs - mallocs)
			s.bytes += float64(ms.TotalAlloc - total)
			if c.trips != nil {
				s.trips += float64(c.trips.Load() - trips0)
			}
			s.ops += batch
			perRound[i] = float64(elapsed.Nanoseconds()) / float64(batch)
			s.nsPerOp = append(s.nsPerOp, perRound[i])
		}
		for i, s := range out {
			s.ratio = append(s.ratio, perRound[i]/perRound[0])
		}
	}
	for _, s := range out {
		s.allocs /= float64(s.ops)
		s.bytes /= float64(s.ops)
		s.trips /= float64(s.ops)
	}
	return out, nil
}
