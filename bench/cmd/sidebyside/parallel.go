package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/depcache/go-depcache/bench"
)

const goroutines = 64

// parallelWorkload: 64 goroutines hitting one warm entry for a short
// window per contender, interleaved; throughput as a share of the raw GET's
// in the same round.
func parallelWorkload(ctx context.Context, e *env, w io.Writer) error {
	// 64 goroutines on two cores: a tier whose heartbeats are starved
	// loses its lease, and every goroutine's next Get queues for the
	// pool's connections at once; with strict errors the default 250 ms
	// deadline there ended the run now and then.
	e.opTimeout = 2 * time.Second
	defer func() { e.opTimeout = 0 }()
	cs, done, err := hitContenders(ctx, e, 0)
	defer done()
	if err != nil {
		return err
	}
	window, rounds := 150*time.Millisecond, max(e.rounds/10, 5)
	if e.quick {
		window = 80 * time.Millisecond
	}
	perSec := make([][]float64, len(cs))
	share := make([][]float64, len(cs))
	order := make([]int, len(cs))
	for i := range order {
		order[i] = i
	}
	thisRound := make([]float64, len(cs))
	for range rounds {
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, i := range order {
			n, err := hammer(ctx, cs[i].op, window)
			if err != nil {
				return fmt.Errorf("%s: %w", cs[i].name, err)
			}
			thisRound[i] = n
			perSec[i] = append(perSec[i], n)
		}
		for i := range cs {
			share[i] = append(share[i], 100*thisRound[i]/thisRound[0])
		}
	}
	fmt.Fprintf(w, "\n### 5. Warm hits from %d goroutines (%d windows of %v per contender)\n\n", goroutines, rounds, window)
	fmt.Fprintln(w, "| contender | hits/s median (p10–p90) | % of raw GET median (p10–p90) |")
	fmt.Fprintln(w, "|---|---|---|")
	for i, c := range cs {
		t, s := bench.SpreadOf(perSec[i]), bench.SpreadOf(share[i])
		fmt.Fprintf(w, "| %s | %s (%s–%s) | %.0f%% (%.0f–%.0f) |\n", c.name, num(t.Median), num(t.P10), num(t.P90), s.Median, s.P10, s.P90)
	}
	return nil
}

// hammer runs op from 64 goroutines for window and returns ops per second.
func hammer(ctx context.Context, op func(context.Context) error, window time.Duration) (float64, error) {
	var count atomic.Int64
	var firstErr atomic.Pointer[error] // errors of different types: atomic.Value would panic
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for range goroutines {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := op(ctx); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				count.Add(1)
			}
		})
	}
	timer := time.NewTimer(window)
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	if err := firstErr.Load(); err != nil {
		return 0, *err
	}
	return float64(count.Load()) / elapsed.Seconds(), ctx.Err()
}
