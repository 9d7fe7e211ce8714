// Command stalecheck runs the stale-read harness for as long as you like:
// concurrent writers change hot rows through GORM while readers read them
// through depcache and the GORM plugin, and every read is checked against
// what had been committed and invalidated before it began.
//
//	go run ./cmd/stalecheck -reads 2000000                      # SQLite + memory
//	go run ./cmd/stalecheck -redis redis://127.0.0.1:6379/15 -reads 1000000
//	go run ./cmd/stalecheck -mode naive                          # show that it bites
//	go run ./cmd/stalecheck -postgres "$DSN" -cdc 2              # + 2 writers on plain SQL, a pgcdc listener
//
// With -cdc (PostgreSQL with wal_level=logical, a user with REPLICATION)
// writers that bypass GORM write with plain SQL on their own connections,
// a pgcdc listener invalidates their writes, and each is acknowledged once
// the listener's processed position has passed it; the listener's slot and
// publication are dropped at the end.
//
// It exits 1 if the guarded mode had any violation, or if a broken mode had
// none.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/internal/stalecheck"
)

func main() {
	var (
		reads    = flag.Int("reads", 1_000_000, "reads before the writers stop")
		readers  = flag.Int("readers", 8, "concurrent readers")
		writers  = flag.Int("writers", 4, "concurrent writers")
		rows     = flag.Int("rows", 10, "hot rows")
		modeName = flag.String("mode", "guarded", "guarded, naive or invalidate-before-commit")
		redisURL = flag.String("redis", "", "Redis URL (default: the in-process memory store)")
		pgDSN    = flag.String("postgres", "", "PostgreSQL DSN (default: SQLite in a temp dir)")
		cdc      = flag.Int("cdc", 0, "with -postgres (wal_level=logical): this many more writers that bypass GORM, and a pgcdc listener")
	)
	flag.Parse()
	if err := run(*reads, *readers, *writers, *rows, *modeName, *redisURL, *pgDSN, *cdc); err != nil {
		fmt.Fprintln(os.Stderr, "stalecheck:", err)
		os.Exit(1)
	}
}

func run(reads, readers, writers, rows int, modeName, redisURL, pgDSN string, cdcWriters int) error {
	modes := map[string]stalecheck.Mode{"guarded": stalecheck.Guarded, "naive": stalecheck.Naive, "invalidate-before-commit": stalecheck.InvalidateBeforeCommit}
	mode, ok := modes[modeName]
	if !ok {
		return fmt.Errorf("-mode %q: want guarded, naive or invalidate-before-commit", modeName)
	}
	var cdc *stalecheck.CDC
	switch {
	case cdcWriters < 0:
		return fmt.Errorf("-cdc %d: want a number of writers ≥ 0", cdcWriters)
	case cdcWriters > 0 && pgDSN == "":
		return errors.New("-cdc needs -postgres (a server with wal_level=logical)")
	case cdcWriters > 0:
		cdc = &stalecheck.CDC{DSN: pgDSN, Writers: cdcWriters}
	}
	var open func() (*gorm.DB, error)
	if pgDSN != "" {
		open = func() (*gorm.DB, error) { return gorm.Open(postgres.Open(pgDSN), &gorm.Config{Logger: logger.Discard}) }
	} else {
		dir, err := os.MkdirTemp("", "stalecheck")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		dsn := filepath.Join(dir, "hot.db") + "?_txlock=immediate&_busy_timeout=10000&_journal_mode=WAL"
		open = func() (*gorm.DB, error) { return gorm.Open(sqlite.Open(dsn), &gorm.Config{Logger: logger.Discard}) }
	}
	db, err := open()
	if err != nil {
		return err
	}
	plain, err := open()
	if err != nil {
		return err
	}
	for _, g := range []*gorm.DB{db, plain} {
		if sqlDB, err := g.DB(); err == nil {
			defer sqlDB.Close()
		}
	}
	var backend backends.Backend = memory.New()
	if redisURL != "" {
		opt, err := redisbackend.ParseURL(redisURL) // errors never quote a password
		if err != nil {
			return fmt.Errorf("-redis: %w", err)
		}
		opt.ContextTimeoutEnabled = true
		c := redis.NewClient(opt)
		defer c.Close()
		backend = redisbackend.New(c)
	}
	defer backend.Close()

	rep, err := stalecheck.Run(context.Background(), stalecheck.Config{
		DB: db, PlainDB: plain, Backend: backend, Mode: mode,
		Reads: reads, Readers: readers, Writers: writers, Rows: rows, CDC: cdc,
	})
	if pgDSN != "" {
		plain.Migrator().DropTable(&stalecheck.HotRow{}) // plain: the plugin on db invalidates in a closed manager
	}
	if err != nil {
		return err
	}
	fmt.Println(rep)
	violations := rep.Stale + rep.Diverged + rep.PoisonRead
	switch {
	case mode == stalecheck.Guarded && violations > 0:
		return fmt.Errorf("%d violations", violations)
	case mode != stalecheck.Guarded && rep.Stale == 0:
		return fmt.Errorf("mode %s found no stale read: the harness did not bite", mode)
	}
	return nil
}
