package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"testing"
)

// The same contenders as the command, as ordinary benchmarks (one
// contender after another, so compare them only within one run, and prefer
// the command's interleaved tables on a machine whose loopback drifts):
//
//	REDIS_URL=redis://127.0.0.1:6379/15 go test -run x -bench . -benchmem ./cmd/sidebyside

func benchEnv(b *testing.B) *env {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		b.Skip("REDIS_URL is not set: these benchmarks need a real Redis (use a database of its own)")
	}
	e := &env{
		config: config{url: url},
		prefix: fmt.Sprintf("bench:gotest:%x", rand.Uint64()),
		quiet:  slog.New(slog.DiscardHandler),
	}
	b.Cleanup(func() {
		if err := e.cleanup(context.Background()); err != nil {
			b.Error(err)
		}
	})
	return e
}

func runContenders(b *testing.B, cs []contender) {
	ctx := context.Background()
	for _, c := range cs {
		b.Run(c.name, func(b *testing.B) {
			if err := c.op(ctx); err != nil { // warm
				b.Fatal(err)
			}
			b.ReportAllocs()
			var trips0 int64
			if c.trips != nil {
				trips0 = c.trips.Load()
			}
			for b.Loop() {
				if err := c.op(ctx); err != nil {
					b.Fatal(err)
				}
			}
			if c.trips != nil {
				b.ReportMetric(float64(c.trips.Load()-trips0)/float64(b.N), "trips/op")
			}
		})
	}
}

func BenchmarkHit(b *testing.B) {
	cs, done, err := hitContenders(context.Background(), benchEnv(b), 0)
	defer done()
	if err != nil {
		b.Fatal(err)
	}
	runContenders(b, cs)
}

func BenchmarkFill10Deps(b *testing.B) {
	cs, done, err := fillContenders(context.Background(), benchEnv(b))
	defer done()
	if err != nil {
		b.Fatal(err)
	}
	runContenders(b, cs)
}

func BenchmarkGormFirst(b *testing.B) {
	cs, done, err := gormContenders(benchEnv(b))
	defer done()
	if err != nil {
		b.Fatal(err)
	}
	runContenders(b, cs)
}
