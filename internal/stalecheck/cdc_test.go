package stalecheck_test

import (
	"context"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/gormplugin"
	"github.com/depcache/go-depcache/internal/pgtest"
	"github.com/depcache/go-depcache/internal/stalecheck"
)

// TestBypassWritesWithListener: writers that bypass GORM (plain SQL on
// their own connections) beside GORM's, a pgcdc listener invalidating
// their writes, and each raw write acknowledged once the listener's
// Processed passed pg_current_wal_lsn() read after its commit. A read that
// begins after that must not be stale. It needs a PostgreSQL with
// wal_level=logical of its own (internal/pgtest) and skips where none can
// start.
func TestBypassWritesWithListener(t *testing.T) {
	s := pgtest.Start(t, pgtest.Logical...)
	cases := []struct {
		name  string
		cdc   stalecheck.CDC
		moves bool
		conj  bool // the plugin's conjunction tags
		quick int
		long  int
	}{
		{"acked after the listener", stalecheck.CDC{}, false, false, 5_000, 50_000},
		{"acked after the listener, rows moving between groups", stalecheck.CDC{}, true, false, 20_000, 100_000},
		{"acked after the listener, conjunction tags", stalecheck.CDC{}, true, true, 20_000, 100_000},
		// Acknowledging at commit, before the listener invalidated, must be
		// caught: the harness bites.
		{"acked at commit", stalecheck.CDC{AckAtCommit: true}, false, false, 3_000, 10_000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A run that should bite gets three tries: on a loaded machine
			// one may make few raw writes.
			for try := 1; ; try++ {
				rep := runCDC(t, s, c.cdc, c.moves, c.conj, reads(t, c.quick, c.long))
				switch {
				case !c.cdc.AckAtCommit:
					if rep.Stale != 0 || rep.Diverged != 0 || rep.PoisonRead != 0 {
						t.Fatalf("violations: %v", rep)
					}
					return
				case rep.Stale > 0:
					return
				case try == 3:
					t.Fatalf("acknowledging raw writes at commit produced no stale read in %d runs: the harness does not bite (%v)", try, rep)
				}
			}
		})
	}
}

func runCDC(t *testing.T, s *pgtest.Server, cdc stalecheck.CDC, moves, conj bool, reads int) stalecheck.Report {
	t.Helper()
	dsn := s.CreateDatabase(t)
	db, err := gorm.Open(postgres.Open(dsn), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	defer sqlDB.Close()
	cdc.DSN = dsn
	var plugin []gormplugin.Option
	if conj {
		plugin = append(plugin, gormplugin.WithConjunctionTags(0))
	}
	rep, err := stalecheck.Run(context.Background(), stalecheck.Config{
		DB: db, Backend: targets(t)[0].backend(t), Reads: reads,
		Prefix: testPrefix(t), CDC: &cdc, Writers: 2, Moves: moves, PluginOptions: plugin,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep)
	if rep.RawWrites == 0 || rep.Hits == 0 || rep.Misses == 0 {
		t.Fatalf("the run did not exercise the listener and the cache: %v", rep)
	}
	return rep
}
