package redisbackend_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/backends/backendtest"
	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/gormplugin"
	"github.com/depcache/go-depcache/internal/stalecheck"
)

// The stale-read harness (internal/stalecheck) on Redis Cluster: writers
// change hot rows through GORM, readers read them through Memoize and the
// GORM plugin, and no read may return a row older than the last write
// acknowledged before it began.
//
// That the harness bites a naive fill is shown on SQLite + memory in
// internal/stalecheck; on Cluster the lease already refuses part of a naive
// fill's stale values, so the count there is small (51 in 20,000 reads in
// one run) and not asserted.
func TestClusterNoStaleReads(t *testing.T) {
	for _, conj := range []bool{false, true} {
		name := "list tag"
		if conj {
			name = "conjunction tags and moves"
		}
		t.Run(name, func(t *testing.T) { clusterNoStaleReads(t, conj) })
	}
}

func clusterNoStaleReads(t *testing.T, conj bool) {
	c := redisbackend.SharedClusterClient(t)
	db, err := gorm.Open(sqlite.Open(filepath.Join(t.TempDir(), "hot.db")+"?_txlock=immediate&_busy_timeout=10000&_journal_mode=WAL"),
		&gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	defer sqlDB.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := redisbackend.New(c, redisbackend.WithLogger(quiet))
	reads := 3_000
	if backendtest.Long() {
		reads = 20_000
	}
	cfg := stalecheck.Config{DB: db, Backend: b, Reads: reads}
	if conj {
		cfg.Moves = true
		cfg.PluginOptions = []gormplugin.Option{gormplugin.WithConjunctionTags(0), gormplugin.WithLogger(quiet)}
	}
	rep, err := stalecheck.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep)
	if rep.Stale != 0 || rep.Diverged != 0 || rep.PoisonRead != 0 {
		t.Fatalf("violations on Redis Cluster: %v", rep)
	}
	if rep.Hits == 0 || rep.Stored == 0 || rep.Writes == 0 {
		t.Fatalf("the run did not exercise the cache: %v", rep)
	}
}
