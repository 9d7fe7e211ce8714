// Command blog is depcache's runnable example: a small blog (users, posts,
// comments, tags) served as JSON over HTTP, whose reads are cached in Redis
// and invalidated by the GORM plugin, with no hand-written dependency or
// invalidation anywhere.
//
//	go run ./examples/blog            # serve on 127.0.0.1:8080
//	go run ./examples/blog -demo      # a scripted tour over HTTP, then exit
//	go run ./examples/blog -load      # throughput with and without the cache
//	go run ./examples/blog -cdc 'host=… dbname=…'  # a psql UPDATE invalidating a cached page
//
// With no setup it runs on a SQLite file in a temporary directory, seeded
// from testdata/blog/seed.json, and an in-process Redis (miniredis); with
// REDIS_URL set it uses that Redis, -store memory uses depcache's
// in-process store instead, and -db takes a PostgreSQL or MySQL DSN. Run
// it from the repository root (or pass -seed).
//
// What it shows:
//
//   - Reads (store.go) are ordinary functions that query with
//     db.WithContext(ctx), wrapped in depcache.Memoize with a KeyName. The
//     plugin tags each cached result with the rows and tables its queries
//     read: a post page depends on its post's row, its author's row, and the
//     comments, post_tags and tags it preloaded.
//   - Writes are plain GORM: Create, Updates, Association.Replace, Delete
//     (the database cascades a post's comments and tag links). Once a write
//     has committed, the plugin invalidates what it touched, and the next
//     read of anything built from it is a miss that shows the new data.
//   - Every response says X-Cache: hit when all the cached reads it made
//     were hits, miss otherwise; GET /debug/cache shows the manager's
//     counters.
//   - The granularity of the plugin's tags: a post page preloads the post's
//     comments with a query by post_id, so it depends on the list tag
//     comments::* and any new comment invalidates every post page, while
//     the front page, which reads no comments, stays cached. -load shows
//     what that costs under concurrent writers.
//   - Writes that bypass GORM (-cdc, PostgreSQL with wal_level=logical): a
//     gormplugin/pgcdc listener reads the database's logical replication
//     stream and invalidates what the plugin would have; an UPDATE made
//     with plain SQL on a connection of its own leaves the cache too.
//
// Endpoints: GET / (HTML), GET /posts?page=&author=&tag=, GET /posts/{id},
// POST /posts, PUT /posts/{id}, DELETE /posts/{id},
// POST /posts/{id}/comments, DELETE /comments/{id}, GET /users/{id},
// GET /debug/cache.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "blog:", err)
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	addr     string
	db       string
	store    string
	seed     string
	cdc      string
	demo     bool
	load     bool
	duration time.Duration
	readers  int
	writers  int
	interval time.Duration

	// Floors for tests: a load run goes on past duration until it has made
	// this many reads and writes.
	minReads, minWrites int
}

const usageHeader = `Usage: go run ./examples/blog [flags]

A blog served over HTTP whose reads are cached by depcache and invalidated
by its GORM plugin. With no flags: SQLite in a temporary directory, seeded
from testdata/blog/seed.json, and an in-process Redis (miniredis), or the
Redis of REDIS_URL when it is set.

Examples:
  go run ./examples/blog -demo
  go run ./examples/blog -load -duration 3s
  go run ./examples/blog -cdc "$DEPCACHE_POSTGRES_DSN"    # needs wal_level=logical
  REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/blog -db 'postgres://postgres@127.0.0.1/blog?sslmode=disable'

Flags:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := flag.NewFlagSet("blog", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHeader)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "address to serve on (-demo and -load use their own loopback port)")
	fs.StringVar(&o.db, "db", "", "database: a PostgreSQL DSN (postgres://… or host=…), a MySQL DSN\n(user:pass@tcp(host:3306)/db?parseTime=true), or a SQLite file path;\nempty: a SQLite file in a new temporary directory")
	fs.StringVar(&o.store, "store", "", "where cached entries live: redis (REDIS_URL, else an in-process miniredis)\nor memory (depcache's in-process store). Default redis, except that -load\nwithout REDIS_URL uses memory: miniredis runs the backend's Lua scripts one\nat a time, and a load test on it measures miniredis")
	fs.StringVar(&o.seed, "seed", "testdata/blog/seed.json", "seed file loaded into an empty database; \"\" skips seeding")
	fs.BoolVar(&o.demo, "demo", false, "run a scripted tour over HTTP against a server of its own, print each step, and exit\n(non-zero, naming the step, if a step misbehaved)")
	fs.BoolVar(&o.load, "load", false, "generate a few thousand rows, then drive a server of its own with concurrent\nreaders and writers, once with the cache and once without, and print\nrequests/s, p50/p99 latency, hit ratio and the speedup")
	fs.StringVar(&o.cdc, "cdc", "", "a PostgreSQL DSN (with wal_level=logical, a user with REPLICATION): run the blog\non it with a gormplugin/pgcdc listener, show an UPDATE made with plain SQL\n(as psql would) invalidating a cached page, and exit. The listener's slot and\npublication, "+cdcSlot+", are dropped at the end; the blog's tables (users, tags,\nposts, comments, post_tags) are created, seeded when empty, and left: use a scratch database")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "with -load: how long each of the two runs lasts")
	fs.IntVar(&o.readers, "readers", 8, "with -load: concurrent readers (each sends its next request as soon as the last is answered)")
	fs.IntVar(&o.writers, "writers", 2, "with -load: concurrent writers (comments, post edits, new posts)")
	fs.DurationVar(&o.interval, "write-interval", 500*time.Millisecond, "with -load: pause between two writes of one writer")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected arguments %q (see -h)", fs.Args())
	case o.demo && o.load, o.cdc != "" && (o.demo || o.load):
		return errors.New("-demo, -load and -cdc are exclusive")
	case o.cdc != "" && o.db != "" && o.db != o.cdc:
		return errors.New("-cdc runs the blog on its own DSN: leave -db out")
	case o.cdc != "" && !isPostgres(o.cdc):
		return fmt.Errorf("-cdc %q: want a PostgreSQL DSN (postgres://… or host=…)", o.cdc)
	case o.store != "" && o.store != "redis" && o.store != "memory":
		return fmt.Errorf("-store %q: want redis or memory", o.store)
	case o.load && (o.duration <= 0 || o.readers < 1 || o.writers < 0 || o.interval < 0):
		return errors.New("-load needs -duration > 0, -readers ≥ 1, -writers ≥ 0 and -write-interval ≥ 0")
	}

	// The libraries log warnings and errors only: the demo's output is the
	// tour itself.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if o.store == "" {
		o.store = "redis"
		if o.load && os.Getenv("REDIS_URL") == "" {
			o.store = "memory"
		}
	}
	if o.cdc != "" {
		o.db = o.cdc
	}
	in, err := openInfra(o.db, o.store)
	if err != nil {
		return err
	}
	defer in.Close()
	switch {
	case o.cdc != "":
		return cdcMode(ctx, in, o.cdc, o, stdout, log)
	case o.demo:
		return demoMode(ctx, in, o, stdout, log)
	case o.load:
		return loadMode(ctx, in, o, stdout, log)
	}
	return serveMode(ctx, in, o, stdout, log)
}

func serveMode(ctx context.Context, in *infra, o options, stdout io.Writer, log *slog.Logger) (err error) {
	a, err := newApp(in, "blog", true, log)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, a.Close()) }()
	if err := a.prepare(ctx, o.seed); err != nil {
		return err
	}
	srv, err := startServer(o.addr, a.handler)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "blog: serving %s (database: %s; cache: %s)\n", srv.URL, in.dbDesc, in.cacheDesc)
	fmt.Fprintf(stdout, "try:  curl -i %s/posts   then again, and watch X-Cache; Ctrl-C stops\n", srv.URL)
	<-ctx.Done()
	fmt.Fprintln(stdout, "blog: shutting down")
	return srv.Shutdown()
}

func demoMode(ctx context.Context, in *infra, o options, stdout io.Writer, log *slog.Logger) (err error) {
	a, err := newApp(in, "blog", true, log)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, a.Close()) }()
	if err := a.prepare(ctx, o.seed); err != nil {
		return err
	}
	srv, err := startServer("127.0.0.1:0", a.handler)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "blog demo on %s (database: %s; cache: %s)\n", srv.URL, in.dbDesc, in.cacheDesc)
	err = runDemo(ctx, srv.URL, stdout)
	return errors.Join(err, srv.Shutdown())
}
