// Command sidebyside measures depcache against its peers on a real Redis and
// prints Markdown tables. Contenders run interleaved, in short batches and a
// new order every round, and the tables give medians with their p10–p90
// spread: a loopback round trip on a shared machine drifts by 3× within
// seconds, so only numbers from one run, taken side by side, compare.
//
//	go run ./cmd/sidebyside -redis redis://127.0.0.1:6379/15
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"time"

	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/bench"
	"github.com/depcache/go-depcache/depcache"
)

// config is what the flags set.
type config struct {
	url       string
	rounds    int
	quick     bool
	workloads map[string]bool
}

// env is what every workload shares: the run's key prefix and the clients
// to close, and the settings derived from the flags.
type env struct {
	config
	prefix  string
	clients []*bench.Client
	quiet   *slog.Logger
	// backends of the managers newManager made, closed with them: a
	// backend outliving its tier's manager stays subscribed, and every
	// later Notify on the Redis (Set, invalidations) waits for it.
	backends map[*depcache.Manager]*redisbackend.Backend
	// opTimeout, if set, is the managers' WithTimeout (parallelWorkload).
	opTimeout time.Duration
}

func main() {
	var cfg config
	var list string
	flag.StringVar(&cfg.url, "redis", "redis://127.0.0.1:6379/15", "Redis URL (a database of its own: the run writes under a random prefix and removes it)")
	flag.IntVar(&cfg.rounds, "rounds", 0, "rounds of interleaved batches (0: 200, or 40 with -quick)")
	flag.StringVar(&list, "workloads", "hit,fill,invalidate,gorm,parallel,mix", "comma-separated workloads to run")
	flag.BoolVar(&cfg.quick, "quick", false, "fewer rounds and smaller tags: under a minute")
	flag.Parse()
	if cfg.rounds == 0 {
		cfg.rounds = 200
		if cfg.quick {
			cfg.rounds = 40
		}
	}
	cfg.workloads = map[string]bool{}
	for _, w := range strings.Split(list, ",") {
		if w = strings.TrimSpace(w); w != "" {
			cfg.workloads[w] = true
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, cfg, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sidebyside:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, w io.Writer) (err error) {
	e := &env{
		config: cfg,
		prefix: fmt.Sprintf("bench:sbs:%x", rand.Uint64()),
		quiet:  slog.New(slog.DiscardHandler),
	}
	defer func() {
		// Cleanup runs on its own context so that an interrupted run still
		// removes what it wrote.
		if cerr := e.cleanup(context.Background()); err == nil {
			err = cerr
		}
	}()
	probe, err := e.client("bench-setup", 0)
	if err != nil {
		return err
	}
	if err := probe.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s: %w", cfg.url, err)
	}
	version := probe.Info(ctx, "server").Val()
	for _, line := range strings.Split(version, "\n") {
		if strings.HasPrefix(line, "redis_version:") {
			version = strings.TrimSpace(strings.TrimPrefix(line, "redis_version:"))
		}
	}
	fmt.Fprintf(w, "## depcache side by side (%s, Redis %s, %s, GOMAXPROCS %d, %d rounds%s)\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), version, runtime.Version(), runtime.GOMAXPROCS(0), cfg.rounds, map[bool]string{true: ", -quick"}[cfg.quick])

	steps := []struct {
		name string
		fn   func(context.Context, *env, io.Writer) error
	}{
		{"hit", hitWorkload},
		{"fill", fillWorkload},
		{"gorm", gormWorkload},
		{"parallel", parallelWorkload},
		{"mix", mixWorkload},
		{"invalidate", invalidateWorkload},
	}
	for _, s := range steps {
		if !cfg.workloads[s.name] {
			continue
		}
		start := time.Now()
		if err := s.fn(ctx, e, w); err != nil {
			return fmt.Errorf("workload %s: %w", s.name, err)
		}
		fmt.Fprintf(os.Stderr, "workload %s took %v\n", s.name, time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// client opens a contender's own client, closed and its keys removed at the end.
func (e *env) client(name string, pool int) (*bench.Client, error) {
	c, err := bench.NewClient(e.url, name, pool)
	if err != nil {
		return nil, err
	}
	e.clients = append(e.clients, c)
	return c, nil
}

// key is a key under the run's prefix.
func (e *env) key(parts ...string) string {
	return e.prefix + ":" + strings.Join(parts, ":")
}

// cleanup unlinks every key the run wrote (all carry the prefix; gocache's
// tag sets carry it inside their tag name) and closes the clients.
func (e *env) cleanup(ctx context.Context) error {
	if len(e.clients) == 0 {
		return nil
	}
	c := e.clients[0]
	var firstErr error
	for _, pattern := range []string{e.prefix + "*", "gocache_tag_" + e.prefix + "*"} {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, pattern, 1000).Result()
			if err != nil {
				firstErr = fmt.Errorf("cleanup scan: %w", err)
				break
			}
			if len(keys) > 0 {
				if err := c.Unlink(ctx, keys...).Err(); err != nil && firstErr == nil {
					firstErr = fmt.Errorf("cleanup unlink: %w", err)
				}
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	for _, cl := range e.clients {
		cl.Close()
	}
	e.clients = nil
	return firstErr
}
