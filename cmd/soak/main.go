// Command soak runs internal/soak against a Redis: a bounded load of
// fills, hits, invalidations and TTL churn, then the wait for Redis memory,
// tag metadata and goroutines to return to baseline. It writes under a
// random prefix of its own and removes it at the end (never a FLUSH).
//
//	go run ./cmd/soak -url redis://127.0.0.1:6379/15 -load 20s
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/internal/soak"
)

func main() {
	url := flag.String("url", "redis://127.0.0.1:6379/15", "the Redis to load")
	load := flag.Duration("load", 20*time.Second, "how long the load runs")
	settle := flag.Duration("settle", 30*time.Second, "how long to wait for the baseline afterwards")
	workers := flag.Int("workers", 4, "concurrent callers")
	flag.Parse()
	opt, err := redisbackend.ParseURL(*url) // errors never quote a password
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	opt.ContextTimeoutEnabled = true
	c := redis.NewClient(opt)
	defer c.Close()
	r, err := soak.Run(context.Background(), c, soak.Config{Load: *load, Settle: *settle, Workers: *workers})
	fmt.Printf("calls=%d hits=%d invalidated=%d errors=%d settled in %v\n", r.Calls, r.Hits, r.Invalidations, r.Errors, r.Settled.Round(time.Millisecond))
	fmt.Printf("before: %v\npeak:   %v\nafter:  %v\n", r.Before, r.Peak, r.After)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}
