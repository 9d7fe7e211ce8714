// Package soak runs a bounded load against a Redis — fills, hits,
// invalidations and TTL churn through a depcache manager — and then checks
// that what the load left behind goes away by itself: Redis memory, the
// namespace's tag metadata (ns:t:{…} hashes and ns:s members) and the
// process's goroutines return to their baseline once the load stops and
// the TTLs expire. cmd/soak runs it against a Redis of the caller's
// choosing; its test runs it against a redis-server of its own.
package soak

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
)

// Config sets the load. Zero values take the defaults in brackets.
type Config struct {
	Load      time.Duration // how long the load runs [5s]
	Settle    time.Duration // how long to wait for the baseline afterwards [30s]
	Workers   int           // concurrent callers [4]
	Keys      int           // distinct memoized arguments [2000]
	MaxTTL    time.Duration // entry TTLs are drawn in [MaxTTL/4, MaxTTL] [1s]
	MaxFill   time.Duration // redisbackend.WithMaxFillAge: pruning waits twice that [500ms]
	ValueSize int           // bytes per value [256]
	Logger    *slog.Logger  // the manager's logger [discard]
}

// Sample is one reading of what the load leaves behind.
type Sample struct {
	UsedMemory int64 // INFO memory used_memory, bytes
	TagHashes  int   // keys ns:t:{*
	IndexSize  int   // ZCARD ns:s
	Entries    int   // keys ns:e:{*
	Goroutines int   // runtime.NumGoroutine
}

func (s Sample) String() string {
	return fmt.Sprintf("used_memory=%d tag_hashes=%d index=%d entries=%d goroutines=%d",
		s.UsedMemory, s.TagHashes, s.IndexSize, s.Entries, s.Goroutines)
}

// Report is what Run measured.
type Report struct {
	Before, Peak, After Sample
	Calls, Hits         uint64
	Invalidations       uint64
	Errors              uint64
	Settled             time.Duration // from the end of the load to After
}

// Run loads the Redis behind c under a fresh random prefix, then waits
// (with a trickle of fills, which is what prunes the tag index) until
// entries and tag metadata are back to at most a handful and goroutines to
// at most baseline+slack, or cfg.Settle ends. It removes its prefix before
// returning. The caller judges the report.
func Run(ctx context.Context, c *redis.Client, cfg Config) (Report, error) {
	cfg = withDefaults(cfg)
	var r Report
	b := make([]byte, 6)
	crand.Read(b)
	ns := "soak:" + hex.EncodeToString(b)
	defer removeNamespace(context.WithoutCancel(ctx), c, ns)

	var err error
	if r.Before, err = sample(ctx, c, ns); err != nil {
		return r, err
	}
	m := depcache.New(redisbackend.New(c, redisbackend.WithMaxFillAge(cfg.MaxFill)),
		depcache.WithPrefix(ns), depcache.WithLogger(cfg.Logger), depcache.WithDefaultTTL(cfg.MaxTTL))
	value := strings.Repeat("v", cfg.ValueSize)
	get := depcache.Memoize(func(ctx context.Context, id int) (string, error) {
		depcache.AddDependency(ctx, "users::"+strconv.Itoa(id), "users::*", "groups::"+strconv.Itoa(id%50))
		d := cfg.MaxTTL/4 + rand.N(cfg.MaxTTL*3/4+1)
		depcache.SetTTL(ctx, d)
		return value, nil
	}, depcache.Using(m), depcache.KeyName("soak.user"))

	var calls atomic.Uint64
	loadCtx, stop := context.WithTimeout(ctx, cfg.Load)
	var wg sync.WaitGroup
	for range cfg.Workers {
		wg.Go(func() {
			for loadCtx.Err() == nil {
				id := rand.IntN(cfg.Keys)
				switch p := rand.IntN(100); {
				case p < 5:
					m.InvalidateDependency(loadCtx, "users::"+strconv.Itoa(id))
				case p == 5:
					m.InvalidateDependency(loadCtx, "groups::"+strconv.Itoa(id%50))
				default:
					get(loadCtx, id)
					calls.Add(1)
				}
			}
		})
	}
	// Peak: sampled while the load runs, half-way.
	select {
	case <-time.After(cfg.Load / 2):
		r.Peak, _ = sample(ctx, c, ns)
	case <-ctx.Done():
	}
	wg.Wait()
	stop()
	end := time.Now()

	// The trickle: one short-lived entry per 20 ms under one tag, as an
	// idle service would fill now and then. Fills trim the tag index.
	done := func(s Sample) bool {
		return s.Entries <= 2 && s.TagHashes <= 2 && s.IndexSize <= 2 && s.Goroutines <= r.Before.Goroutines+3
	}
	deadline := time.Now().Add(cfg.Settle)
	for i := 0; ; i++ {
		m.Set(ctx, "trickle", i, 50*time.Millisecond, "trickle")
		if r.After, err = sample(ctx, c, ns); err != nil {
			break
		}
		// Goroutines are counted with the manager closed only at the end;
		// until then compare the rest.
		if done(Sample{Entries: r.After.Entries, TagHashes: r.After.TagHashes, IndexSize: r.After.IndexSize}) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	st := m.Stats()
	r.Calls, r.Hits, r.Invalidations, r.Errors = calls.Load(), st.Hits, st.Invalidations, st.Errors
	m.Close()
	// Goroutines: the manager's own (retries, notifications) and go-redis's
	// idle connections reaped by the pool end with Close; poll briefly.
	for time.Now().Before(deadline.Add(5*time.Second)) && runtime.NumGoroutine() > r.Before.Goroutines+3 {
		time.Sleep(10 * time.Millisecond)
	}
	if s, err2 := sample(ctx, c, ns); err2 == nil {
		r.After = s
	}
	r.Settled = time.Since(end)
	return r, err
}

func withDefaults(cfg Config) Config {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.Load, 5*time.Second)
	def(&cfg.Settle, 30*time.Second)
	def(&cfg.MaxTTL, time.Second)
	def(&cfg.MaxFill, 500*time.Millisecond)
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Keys <= 0 {
		cfg.Keys = 2000
	}
	if cfg.ValueSize <= 0 {
		cfg.ValueSize = 256
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// sample reads Redis memory, the namespace's metadata and entries, and the
// goroutine count.
func sample(ctx context.Context, c *redis.Client, ns string) (Sample, error) {
	s := Sample{Goroutines: runtime.NumGoroutine()}
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return s, fmt.Errorf("soak: INFO memory: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			s.UsedMemory, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if s.TagHashes, err = count(ctx, c, ns+":t:{*"); err != nil {
		return s, err
	}
	if s.Entries, err = count(ctx, c, ns+":e:{*"); err != nil {
		return s, err
	}
	n, err := c.ZCard(ctx, ns+":s").Result()
	if err != nil {
		return s, fmt.Errorf("soak: ZCARD: %w", err)
	}
	s.IndexSize = int(n)
	return s, nil
}

func count(ctx context.Context, c *redis.Client, match string) (int, error) {
	n := 0
	iter := c.Scan(ctx, 0, match, 1000).Iterator()
	for iter.Next(ctx) {
		n++
	}
	if err := iter.Err(); err != nil {
		return 0, fmt.Errorf("soak: SCAN %s: %w", match, err)
	}
	return n, nil
}

// removeNamespace unlinks every key under ns (never a FLUSH: the Redis may
// be shared).
func removeNamespace(ctx context.Context, c *redis.Client, ns string) {
	iter := c.Scan(ctx, 0, ns+":*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			c.Unlink(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		c.Unlink(ctx, batch...)
	}
}
