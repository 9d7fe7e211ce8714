package gormplugin_test

import (
	"sync/atomic"
	"testing"

	"gorm.io/gorm"

	"github.com/depcache/go-depcache/gormplugin"
)

// GORM's own per-statement transaction, begun on a pool that is not the
// plugin's (db.Connection's *sql.Conn, the source pool another plugin
// swaps in, as dbresolver does), is not a foreign transaction: the plugin
// sees it begin and commit, so a plain Create or Update there succeeds
// under WithForeignTxError and invalidates after its COMMIT, not before.
func TestStatementTransactionIsNotForeign(t *testing.T) {
	strict := envSetup{plugin: []gormplugin.Option{gormplugin.WithForeignTxError()}}
	ways := []struct {
		name string
		run  func(e *env, write func(db *gorm.DB) error) error
	}{
		{"db.Connection", func(e *env, write func(*gorm.DB) error) error {
			return e.db.Connection(func(c *gorm.DB) error { return write(c) })
		}},
		{"db.Connection PrepareStmt", func(e *env, write func(*gorm.DB) error) error {
			return e.db.Session(&gorm.Session{PrepareStmt: true}).Connection(func(c *gorm.DB) error { return write(c) })
		}},
		{"a plugin swaps in its own *sql.DB", func(e *env, write func(*gorm.DB) error) error {
			return write(e.db)
		}},
	}
	for _, way := range ways {
		t.Run(way.name, func(t *testing.T) {
			forEachDBWith(t, strict, func(t *testing.T, e *env) {
				if way.name == "a plugin swaps in its own *sql.DB" {
					swapInSQLDB(t, e)
				}
				b := newBlog(e)
				b.warm(t)
				watchCommit(t, e, b.key("post/7"))

				noErr(t, "Update", way.run(e, updateTitle(7, "Per statement")))
				if exists(t, e, b.key("post/7")) {
					t.Errorf("still cached after the statement's COMMIT")
				}
				noErr(t, "Create", way.run(e, func(db *gorm.DB) error {
					return db.Create(&Post{AuthorID: alice, Title: "Eleven"}).Error
				}))
				// The new author is created first, inside the post's
				// statement transaction (gorm:save_before_associations).
				noErr(t, "Create with a new author", way.run(e, func(db *gorm.DB) error {
					return db.Create(&Post{Author: User{Name: "dave"}, Title: "Dave's"}).Error
				}))
				b.checkFresh(t)
				// On MariaDB the new author is an upsert without RETURNING,
				// which invalidates the users table tag, user 2 included.
				if b.runs("post/8") != 1 || b.runs("user/2") != 1 && e.dialect != "mysql" {
					t.Errorf("lookups of rows no write touched ran again: post/8 %d, user/2 %d times", b.runs("post/8"), b.runs("user/2"))
				}
			})
		})
	}
}

// watchCommit fails the test if key is gone when an update of e.db reaches
// gorm:commit_or_rollback_transaction: invalidating before the statement's
// COMMIT lets a reader refill the old row.
func watchCommit(t *testing.T, e *env, key string) {
	t.Helper()
	err := e.db.Callback().Update().After("gorm:after_update").Before("gorm:commit_or_rollback_transaction").
		Register("test:before_commit", func(db *gorm.DB) {
			if db.Error == nil && !exists(t, e, key) {
				t.Errorf("invalidated before the statement's COMMIT")
			}
		})
	noErr(t, "register test:before_commit", err)
}

// swapInSQLDB does what dbresolver's callbacks do: before anything else,
// every write statement runs on a *sql.DB of the plugin's own, not on the
// plugin's pool.
func swapInSQLDB(t *testing.T, e *env) {
	t.Helper()
	sqlDB, err := e.db.DB()
	noErr(t, "db.DB()", err)
	var swapped atomic.Int32
	swap := func(db *gorm.DB) {
		if _, inTx := db.Statement.ConnPool.(gorm.TxCommitter); !inTx {
			db.Statement.ConnPool = sqlDB
			swapped.Add(1)
		}
	}
	noErr(t, "register swap", e.db.Callback().Create().Before("*").Register("test:swap_pool", swap))
	noErr(t, "register swap", e.db.Callback().Update().Before("*").Register("test:swap_pool", swap))
	noErr(t, "register swap", e.db.Callback().Delete().Before("*").Register("test:swap_pool", swap))
	t.Cleanup(func() {
		if swapped.Load() == 0 {
			t.Errorf("test bug: no statement ran on the swapped-in pool")
		}
	})
}

// With gorm.Config{SkipDefaultTransaction: true} GORM registers no
// gorm:begin_transaction; the plugin's callbacks placed around it still
// run in order, and writes still invalidate.
func TestSkipDefaultTransactionConfig(t *testing.T) {
	skip := envSetup{gorm: func(c *gorm.Config) { c.SkipDefaultTransaction = true }}
	forEachDBWith(t, skip, func(t *testing.T, e *env) {
		b := newBlog(e)
		b.warm(t)
		noErr(t, "update", updateTitle(7, "No default tx")(e.db))
		noErr(t, "mass update", e.db.Model(&Post{}).Where("title = ?", "Six").Update("title", "Six, no default tx").Error)
		noErr(t, "create with a new author", e.db.Create(&Post{Author: User{Name: "dave"}, Title: "Dave's"}).Error)
		b.checkFresh(t)
	})
}
