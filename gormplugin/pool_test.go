package gormplugin_test

import (
	"testing"

	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/gormplugin"
)

// With gorm.Config{PrepareStmt: true} the pool keeps GORM's type after
// db.Use (GORM's own tests, dbresolver and users type-assert it), db.DB()
// still reaches the *sql.DB, and the plugin still owns the commit: a write
// in a transaction invalidates after COMMIT, not before, and mass writes
// still find their rows.
func TestPrepareStmtPoolKeepsItsType(t *testing.T) {
	prepared := envSetup{gorm: func(c *gorm.Config) { c.PrepareStmt = true }}
	forEachDBWith(t, prepared, func(t *testing.T, e *env) {
		if _, ok := e.db.ConnPool.(*gorm.PreparedStmtDB); !ok {
			t.Fatalf("db.ConnPool is %T after db.Use, want *gorm.PreparedStmtDB", e.db.ConnPool)
		}
		if _, ok := e.db.Statement.ConnPool.(*gorm.PreparedStmtDB); !ok {
			t.Fatalf("db.Statement.ConnPool is %T after db.Use, want *gorm.PreparedStmtDB", e.db.Statement.ConnPool)
		}
		sqlDB, err := e.db.DB()
		noErr(t, "db.DB()", err)
		noErr(t, "Ping", sqlDB.Ping())

		b := newBlog(e)
		b.warm(t)
		err = e.db.Transaction(func(tx *gorm.DB) error {
			if err := updateTitle(7, "Prepared")(tx); err != nil {
				return err
			}
			if !exists(t, e, b.key("page/1")) || !exists(t, e, b.key("post/7")) {
				t.Errorf("invalidated before COMMIT: the plugin does not own the prepared pool's transactions")
			}
			return nil
		})
		noErr(t, "transaction", err)
		if exists(t, e, b.key("page/1")) || exists(t, e, b.key("post/7")) {
			t.Errorf("still cached after COMMIT")
		}
		b.checkFresh(t)

		noErr(t, "mass update", e.db.Model(&Post{}).Where("title = ?", "Six").Update("title", "Six prepared").Error)
		b.checkFresh(t)
		if b.runs("post/8") != 1 || b.runs("user/2") != 1 {
			t.Errorf("lookups of rows no write touched ran again: post/8 %d, user/2 %d times", b.runs("post/8"), b.runs("user/2"))
		}
	})
}

// GORM opened on a *sql.Tx (gorm.Open(dialector with Conn: tx)) stays a
// transaction after db.Use: db.Commit() commits it, and its writes are
// those of a transaction the plugin did not begin (invalidated when they
// run).
func TestPoolOnSQLTxStaysATransaction(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		sqlDB, err := e.raw.DB()
		noErr(t, "raw.DB()", err)
		sqlTx, err := sqlDB.BeginTx(e.ctx, nil)
		noErr(t, "BeginTx", err)
		db, err := gorm.Open(dialectorOn(e.dialect, sqlTx), &gorm.Config{
			NamingStrategy: e.db.NamingStrategy,
			Logger:         logger.Default.LogMode(logger.Silent),
		})
		noErr(t, "open on *sql.Tx", err)
		plugin := gormplugin.New(e.m, gormplugin.WithLogger(testLogger()))
		defer plugin.Close()
		noErr(t, "Use", db.Use(plugin))
		if _, ok := db.ConnPool.(gorm.TxCommitter); !ok {
			t.Fatalf("db.ConnPool is %T after db.Use, want the *sql.Tx GORM was opened on", db.ConnPool)
		}

		b := newBlog(e)
		b.warm(t)
		noErr(t, "update in the *sql.Tx", updateTitle(7, "On a tx")(db))
		if exists(t, e, b.key("post/7")) {
			t.Errorf("a write in a transaction the plugin did not begin did not invalidate when it ran")
		}
		noErr(t, "Commit", db.Commit().Error)
		b.checkFresh(t)
		if p, _ := b.post(e.ctx, 7); p.Title != "On a tx" {
			t.Errorf("post 7 = %q after COMMIT, want %q", p.Title, "On a tx")
		}
	})
}

// dialectorOn opens the env's kind of database on an existing connection
// or transaction.
func dialectorOn(dialect string, conn gorm.ConnPool) gorm.Dialector {
	switch dialect {
	case "postgres":
		return postgres.New(postgres.Config{Conn: conn})
	case "mysql":
		return mysql.New(mysql.Config{Conn: conn})
	}
	return sqlite.New(sqlite.Config{Conn: conn})
}

// tx.DB() inside a transaction returns the *sql.DB, as it does without the
// plugin (GORM itself calls it, e.g. in Connection).
func TestTransactionDBReturnsSQLDB(t *testing.T) {
	prepared := envSetup{gorm: func(c *gorm.Config) { c.PrepareStmt = true }}
	for name, setup := range map[string]envSetup{"plain": {}, "PrepareStmt": prepared} {
		t.Run(name, func(t *testing.T) {
			forEachDBWith(t, setup, func(t *testing.T, e *env) {
				want, err := e.db.DB()
				noErr(t, "db.DB()", err)
				noErr(t, "transaction", e.db.Transaction(func(tx *gorm.DB) error {
					got, err := tx.DB()
					if err != nil || got != want {
						t.Errorf("tx.DB() = %p, %v; want %p", got, err, want)
					}
					return nil
				}))
				noErr(t, "connection", e.db.Connection(func(c *gorm.DB) error {
					return c.Create(&Tag{Name: "conn"}).Error // GORM's statement transaction on the connection
				}))
			})
		})
	}
}
