package gormplugin_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

// BenchmarkGORMFloor shows what a First(&a, 7) costs GORM itself, before
// any plugin can answer it, beside the uncached SQLite query and a Cached
// hit served by the in-process tier (issue 14, item 6), interleaved in a
// rotating order in every iteration:
//
//   - sqlite: the query, uncached;
//   - dryrun: a DryRun session: GORM builds the statement and its SQL and
//     runs nothing;
//   - noquery: gorm:query replaced by a callback that only reports a row:
//     GORM's cost for First (getInstance, Limit, Order, the condition,
//     Execute, its other query callbacks) with no SQL built — the floor of
//     anything that answers a First from a GORM callback;
//   - tier: a Cached First answered by depcache.WithLocalCache.
//
// It reports each one's median ns/op and allocs/op, and the median of the
// per-iteration ratios sqlite/x.
//
//	go test -run '^$' -bench GORMFloor ./gormplugin
func BenchmarkGORMFloor(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "floor.db") + "?_txlock=immediate&_journal_mode=WAL"
	open := func() *gorm.DB {
		db, err := gorm.Open(sqlite.Open(path), &gorm.Config{Logger: logger.Discard})
		if err != nil {
			b.Fatal(err)
		}
		sqlDB, _ := db.DB()
		b.Cleanup(func() { sqlDB.Close() })
		return db
	}
	plain, noquery, tiered := open(), open(), open()
	plain.AutoMigrate(&benchAuthor{}, &benchArticle{})
	for i := 1; i <= 200; i++ {
		plain.Create(&benchArticle{ID: i, AuthorID: i%10 + 1, Title: fmt.Sprint("title ", i), Body: "body of the article"})
	}
	if err := noquery.Callback().Query().Replace("gorm:query", func(db *gorm.DB) {
		db.RowsAffected = 1
	}); err != nil {
		b.Fatal(err)
	}
	backend := memory.New()
	m := depcache.New(backend, depcache.WithName(b.Name()), depcache.WithLocalCache(1000))
	b.Cleanup(func() {
		m.Close()
		backend.Close()
	})
	if err := tiered.Use(gormplugin.New(m)); err != nil {
		b.Fatal(err)
	}
	first := func(db *gorm.DB, check bool) func() error {
		return func() error {
			var a benchArticle
			if err := db.First(&a, 7).Error; err != nil || check && a.ID != 7 {
				return fmt.Errorf("First: %+v %v", a, err)
			}
			return nil
		}
	}
	ops := []benchOp{
		{"sqlite", first(plain.WithContext(ctx), true)},
		{"dryrun", first(plain.WithContext(ctx).Session(&gorm.Session{DryRun: true}), false)},
		{"noquery", first(noquery.WithContext(ctx), false)},
		{"tier", first(tiered.WithContext(ctx).Scopes(gormplugin.Cached(time.Minute)).Session(&gorm.Session{}), true)},
	}
	warm(b, ops) // the first Cached call fills
	local := m.Stats().LocalHits
	took := interleave(b, ops)
	if m.Stats().LocalHits == local {
		b.Fatal("no hit came from the tier")
	}
	reportInterleaved(b, ops, took, 0)
}
