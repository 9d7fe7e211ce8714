package gormplugin_test

import (
	"context"
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

// On SQLite with its default deferred transactions (no _txlock=immediate),
// a transaction that reads and then writes fails with "database is locked"
// at once, without waiting, when another connection is committing a write.
// The outbox's flusher must not be that other connection: GORM's own test
// suite failed at its first migration when it deleted delivered rows in
// the background. Every write here follows a read in its transaction, with
// the flusher polling as often as it can.
func TestOutboxSQLiteFlusherNeverLocksWrites(t *testing.T) {
	dsn := filepath.Join(t.TempDir(), "deferred.db") + "?_foreign_keys=1"
	db, err := gorm.Open(sqlite.Open(dsn), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sqlDB.Close() })
	m := depcache.New(memory.New(), depcache.WithLogger(testLogger()))
	t.Cleanup(func() { m.Close() })
	p := gormplugin.New(m, gormplugin.WithOutbox(), gormplugin.WithOutboxPoll(time.Millisecond), gormplugin.WithLogger(testLogger()))
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if err := db.AutoMigrate(&Item{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Create(&Item{ID: 1, Title: "v0"}).Error; err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		err := db.Transaction(func(tx *gorm.DB) error {
			var it Item
			if err := tx.First(&it, 1).Error; err != nil {
				return err
			}
			return tx.Model(&it).Update("title", it.Title+".").Error
		})
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if err := p.FlushOutbox(context.Background()); err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := db.Table(gormplugin.DefaultOutboxTable).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("outbox rows after FlushOutbox: %d, want 0", n)
	}
}
