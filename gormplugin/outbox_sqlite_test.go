package gormplugin_test

import (
	"context"
	"database/sql"
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
	db, _, p := polledOutboxDB(t, "?_foreign_keys=1")
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

type PragmaParent struct {
	ID uint `gorm:"primaryKey"`
}

type PragmaChild struct {
	ID       uint `gorm:"primaryKey"`
	ParentID uint
	Parent   PragmaParent
}

// polledOutboxDB opens a SQLite database of the test's own (query: the
// DSN's parameters, after its file name) with the plugin and an outbox
// whose polls are due every millisecond.
func polledOutboxDB(t *testing.T, query string) (*gorm.DB, *sql.DB, *gormplugin.Plugin) {
	t.Helper()
	db, err := gorm.Open(sqlite.Open(filepath.Join(t.TempDir(), "outbox.db")+query), &gorm.Config{Logger: logger.Discard})
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
	return db, sqlDB, p
}

// GORM's own suite turns SQLite's foreign keys on with Exec("PRAGMA
// foreign_keys = ON"), which sets it on one connection of the pool: the
// one a sequential application keeps getting back. The outbox's poll must
// not take that connection while the application is using it, or
// database/sql opens a second one, without the setting, and the
// application may get it next (the suite's foreign-key tests failed with
// WithOutbox). Every transaction here holds the connection through a
// commit, with polls due every millisecond.
func TestOutboxPollTakesNoConnectionFromTheApplication(t *testing.T) {
	db, sqlDB, p := polledOutboxDB(t, "")
	if err := db.Exec("PRAGMA foreign_keys = ON").Error; err != nil {
		t.Fatal(err)
	}
	if err := db.AutoMigrate(&PragmaParent{}, &PragmaChild{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Create(&PragmaParent{ID: 1}).Error; err != nil {
		t.Fatal(err)
	}
	const wantPolls = 10
	for i := 0; gormplugin.OutboxPolls(p) < wantPolls; i++ {
		if i == 100000 {
			t.Fatalf("%d polls after %d rounds, want %d", gormplugin.OutboxPolls(p), i, wantPolls)
		}
		err := db.Transaction(func(tx *gorm.DB) error {
			var parent PragmaParent
			if err := tx.First(&parent, 1).Error; err != nil {
				return err
			}
			return tx.Create(&PragmaChild{ParentID: parent.ID}).Error
		})
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		var n int64
		if err := db.Model(&PragmaChild{}).Count(&n).Error; err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	if n := sqlDB.Stats().OpenConnections; n != 1 {
		t.Errorf("a sequential application's pool has %d connections, want 1: a poll took the application's connection from under it", n)
	}
	if err := db.Create(&PragmaChild{ParentID: 999}).Error; err == nil {
		t.Errorf("a child of a missing parent was created: the application's statement ran on a connection without PRAGMA foreign_keys")
	}
}

// A poll the application's statements never run (here: a connection held
// all along, no statement through the plugin) is not put off for ever:
// the flusher polls anyway once it has been due for an interval (a second
// at least), since rows a dead writer left must be found.
func TestOutboxPollsABusyPool(t *testing.T) {
	_, sqlDB, p := polledOutboxDB(t, "")
	conn, err := sqlDB.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := gormplugin.OutboxPolls(p)
	deadline := time.Now().Add(10 * time.Second)
	for gormplugin.OutboxPolls(p) < start+2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d polls in 10s with the pool busy, want 2", gormplugin.OutboxPolls(p)-start)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
