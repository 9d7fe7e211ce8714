package stalecheck_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/schema"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/gormplugin"
	"github.com/depcache/go-depcache/internal/redistest"
	"github.com/depcache/go-depcache/internal/stalecheck"
	"github.com/depcache/go-depcache/internal/testenv"
)

// reads is the number of reads of a run: quick in a quick run, long with
// DEPCACHE_LONG set (as .ci/run does), DEPCACHE_STALECHECK_READS to choose.
// The proof run (SQLite + memory, guarded) reads 100,000 times in a long
// run; runs on real servers and the runs that show the harness bites read
// fewer, to keep CI quick under -race.
func reads(t *testing.T, quick, long int) int {
	if s := os.Getenv("DEPCACHE_STALECHECK_READS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("DEPCACHE_STALECHECK_READS=%q: %v", s, err)
		}
		return n
	}
	if testenv.Long() {
		return long
	}
	return quick
}

type target struct {
	name    string
	db      func(t *testing.T) *gorm.DB
	backend func(t *testing.T) backends.Backend
}

func openSQLite(t *testing.T, path string) *gorm.DB {
	db, err := gorm.Open(sqlite.Open(path+"?_txlock=immediate&_busy_timeout=10000&_journal_mode=WAL"),
		&gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	return db
}

func targets(t *testing.T) []target {
	sqliteDB := func(t *testing.T) *gorm.DB { return openSQLite(t, filepath.Join(t.TempDir(), "hot.db")) }
	mem := func(t *testing.T) backends.Backend {
		b := memory.New()
		t.Cleanup(func() { b.Close() })
		return b
	}
	out := []target{{"sqlite+memory", sqliteDB, mem}}
	if url := os.Getenv("REDIS_URL"); url != "" {
		rb := func(t *testing.T) backends.Backend {
			opt, err := redis.ParseURL(url)
			if err != nil {
				t.Fatal(err)
			}
			opt.ContextTimeoutEnabled = true
			c := redis.NewClient(opt)
			t.Cleanup(func() { c.Close() })
			return redisbackend.New(c)
		}
		out = append(out, target{"sqlite+redis", sqliteDB, rb})
		// Chunk size 1: every tag with two registrations or more is drained
		// as a big tag is (frozen, in HSCAN steps), concurrently with fills
		// and other invalidations of it.
		out = append(out, target{"sqlite+redis-chunk1", sqliteDB, func(t *testing.T) backends.Backend {
			opt, err := redis.ParseURL(url)
			if err != nil {
				t.Fatal(err)
			}
			opt.ContextTimeoutEnabled = true
			c := redis.NewClient(opt)
			t.Cleanup(func() { c.Close() })
			return redisbackend.New(c, redisbackend.WithChunkSize(1))
		}})
		if dsn := os.Getenv("DEPCACHE_POSTGRES_DSN"); dsn != "" {
			out = append(out, target{"postgres+redis", func(t *testing.T) *gorm.DB {
				prefix := "sc" + strconv.FormatInt(int64(os.Getpid()), 36) + "_"
				db, err := gorm.Open(postgres.Open(dsn), &gorm.Config{Logger: logger.Discard,
					NamingStrategy: schema.NamingStrategy{TablePrefix: prefix}})
				if err != nil {
					t.Fatal(err)
				}
				sqlDB, _ := db.DB()
				t.Cleanup(func() {
					db.Migrator().DropTable(&stalecheck.HotRow{})
					sqlDB.Close()
				})
				return db
			}, rb})
		}
		if dsn := os.Getenv("DEPCACHE_MYSQL_DSN"); dsn != "" {
			out = append(out, target{"mariadb+redis", func(t *testing.T) *gorm.DB {
				prefix := "sc" + strconv.FormatInt(int64(os.Getpid()), 36) + "_"
				db, err := gorm.Open(mysql.Open(dsn), &gorm.Config{Logger: logger.Discard,
					NamingStrategy: schema.NamingStrategy{TablePrefix: prefix}})
				if err != nil {
					t.Fatal(err)
				}
				sqlDB, _ := db.DB()
				t.Cleanup(func() {
					db.Migrator().DropTable(&stalecheck.HotRow{})
					sqlDB.Close()
				})
				return db
			}, rb})
		}
	}
	return out
}

// TestGuardedHasNoStaleReads is the proof: depcache with the GORM plugin
// serves no stale read, converges, and never serves a rolled-back value.
//
// Its -cached subtests read with gormplugin.Cached queries instead of
// depcache.Memoize (Config.CachedReads).
func TestGuardedHasNoStaleReads(t *testing.T) {
	for _, tg := range targets(t) {
		for _, cached := range []bool{false, true} {
			t.Run(subtestName(tg, cached), func(t *testing.T) {
				quick, long := proofReads(tg)
				rep, err := stalecheck.Run(context.Background(), stalecheck.Config{
					DB: tg.db(t), Backend: tg.backend(t), Mode: stalecheck.Guarded, Reads: reads(t, quick, long),
					Prefix: testPrefix(t), CachedReads: cached,
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Log(rep)
				if rep.Stale != 0 || rep.Diverged != 0 || rep.PoisonRead != 0 {
					t.Fatalf("violations: %v", rep)
				}
				if rep.Writes == 0 || rep.Hits == 0 || rep.Misses == 0 {
					t.Fatalf("the run did not exercise the cache: %v", rep)
				}
			})
		}
	}
}

// TestConjunctionsHaveNoStaleReads is the proof for conjunction tags:
// readers also read each group's rows (a conjunctive list), writers move
// rows between groups by key and by mass updates of the group column, and
// insert into random groups.
//
// Its -cached subtests read with gormplugin.Cached queries instead of
// depcache.Memoize (Config.CachedReads): Cached reads are keyed from
// GORM's clauses and got no conjunction tags until ef36524.
func TestConjunctionsHaveNoStaleReads(t *testing.T) {
	for _, tg := range targets(t) {
		for _, cached := range []bool{false, true} {
			t.Run(subtestName(tg, cached), func(t *testing.T) {
				quick, long := proofReads(tg)
				rep, err := stalecheck.Run(context.Background(), stalecheck.Config{
					DB: tg.db(t), Backend: tg.backend(t), Mode: stalecheck.Guarded, Reads: reads(t, quick, long),
					Prefix: testPrefix(t), Moves: true, CachedReads: cached,
					PluginOptions: []gormplugin.Option{gormplugin.WithConjunctionTags(0), gormplugin.WithLogger(quietLog)},
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Log(rep)
				if rep.Stale != 0 || rep.Diverged != 0 || rep.PoisonRead != 0 {
					t.Fatalf("violations: %v", rep)
				}
				if rep.Writes == 0 || rep.Hits == 0 || rep.Misses == 0 {
					t.Fatalf("the run did not exercise the cache: %v", rep)
				}
			})
		}
	}
}

// subtestName names a proof run's subtest: the target, and -cached when
// its reads are gormplugin.Cached queries.
func subtestName(tg target, cached bool) string {
	if cached {
		return tg.name + "-cached"
	}
	return tg.name
}

// proofReads returns a proof run's reads, quick and long: the embedded
// defaults read more.
func proofReads(tg target) (quick, long int) {
	if tg.name == "sqlite+memory" {
		return 20_000, 100_000
	}
	return 5_000, 30_000
}

// TestMovesBite shows the harness finds the stale reads of a naive fill
// in the conjunctive lists too, with Memoize and with Cached reads.
func TestMovesBite(t *testing.T) {
	tg := targets(t)[0]
	for _, cached := range []bool{false, true} {
		name := "memoize"
		if cached {
			name = "cached"
		}
		t.Run(name, func(t *testing.T) {
			// A naive fill goes stale only when a write lands inside its
			// window, which a short run on a loaded machine can miss: a few
			// runs, the first with a stale read ends it.
			var rep stalecheck.Report
			for range 5 {
				var err error
				rep, err = stalecheck.Run(context.Background(), stalecheck.Config{
					DB: tg.db(t), Backend: tg.backend(t), Mode: stalecheck.Naive, Reads: reads(t, 5_000, 20_000),
					Prefix: testPrefix(t), Moves: true, CachedReads: cached,
					PluginOptions: []gormplugin.Option{gormplugin.WithConjunctionTags(0), gormplugin.WithLogger(quietLog)},
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Log(rep)
				if rep.Stale != 0 {
					return
				}
			}
			t.Fatalf("5 naive runs produced no stale read: the harness does not bite (%v)", rep)
		})
	}
}

// TestHarnessBites shows the harness finds the stale reads of a naive fill
// and of invalidating before COMMIT, with Memoize and with Cached reads.
func TestHarnessBites(t *testing.T) {
	tg := targets(t)[0]
	for _, c := range []struct {
		mode   stalecheck.Mode
		cached bool
	}{{stalecheck.Naive, false}, {stalecheck.InvalidateBeforeCommit, false}, {stalecheck.Naive, true}, {stalecheck.InvalidateBeforeCommit, true}} {
		mode := c.mode
		name := mode.String()
		if c.cached {
			name += "-cached"
		}
		t.Run(name, func(t *testing.T) {
			// A faulty fill goes stale only when a write lands inside its
			// window, which a short run on a loaded machine can miss: a few
			// runs, the first with a stale read ends it.
			var rep stalecheck.Report
			for range 5 {
				path := filepath.Join(t.TempDir(), "hot.db")
				var err error
				rep, err = stalecheck.Run(context.Background(), stalecheck.Config{
					DB: openSQLite(t, path), PlainDB: openSQLite(t, path), Backend: tg.backend(t), Mode: mode, Reads: reads(t, 5_000, 20_000), Prefix: testPrefix(t),
					CachedReads: c.cached,
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Log(rep)
				if rep.Stale != 0 {
					return
				}
			}
			t.Fatalf("%s produced no stale read in 5 runs: the harness does not bite (%v)", mode, rep)
		})
	}
}

// testPrefix returns a key prefix of the test's own, removed when it ends
// if the test runs on the shared Redis of REDIS_URL.
func testPrefix(t *testing.T) string {
	p := fmt.Sprintf("dctest-stalecheck:%x", rand.Uint64())
	if url := os.Getenv("REDIS_URL"); url != "" {
		redistest.RemoveNamespaceAtEnd(t, url, p)
	}
	return p
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))
