package gormplugin_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

// A raw Exec that writes inside a transaction marks it as written: a
// memoized read under TxContext(tx) after it sees the write, not the
// cached value from before.
func TestRawExecInTransactionMarksItWritten(t *testing.T) {
	for _, style := range commitStyles {
		t.Run(style.name, func(t *testing.T) {
			forEachDB(t, func(t *testing.T, e *env) {
				b := newBlog(e)
				b.warm(t)
				rawUpdate := func(tx *gorm.DB) error {
					return tx.Exec("UPDATE "+e.table(&Post{})+" SET title = ? WHERE id = ?", "Raw in tx", 7).Error
				}
				err := style.run(t, e, rawUpdate, func(tx *gorm.DB) {
					p, err := b.post(withTx(gormplugin.TxContext(tx), tx), 7)
					noErr(t, "post in tx", err)
					if p.Title != "Raw in tx" {
						t.Errorf("First(&post, 7) under TxContext after a raw write = %q, want the transaction's own write", p.Title)
					}
				})
				noErr(t, "transaction", err)
				b.checkFresh(t)
			})
		})
	}
}

// Raw SQL that spells the table in another case than the model: unquoted
// names fold, so the model's cached reads are invalidated.
func TestRawExecUnquotedNameFolds(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		if e.dialect == "mysql" {
			t.Skip("MySQL table names are case-sensitive here (lower_case_table_names=0)")
		}
		b := newBlog(e)
		b.warm(t)
		noErr(t, "raw update", e.db.Exec("UPDATE "+strings.ToUpper(e.table(&Post{}))+" SET title = ? WHERE id = ?", "Shouted", 7).Error)
		b.checkFresh(t)
	})
}

// A raw DELETE cascades in the database as a GORM Delete does: cached reads
// of the referencing tables are fresh after it.
func TestRawDeleteCascades(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		comments := depcache.Memoize0(func(ctx context.Context) (int, error) {
			var cs []Comment
			err := e.db.WithContext(ctx).Where("post_id = ?", 7).Find(&cs).Error
			return len(cs), err
		}, depcache.Using(e.m), depcache.KeyName("comments"))
		if n, err := comments(e.ctx); err != nil || n != 2 {
			t.Fatalf("seed: %d comments of post 7, %v", n, err)
		}
		noErr(t, "raw delete", e.db.Exec("DELETE FROM "+e.table(&Post{})+" WHERE id = ?", 7).Error)
		if n, err := comments(e.ctx); err != nil || n != 0 {
			t.Errorf("cached comments of post 7 after a raw delete that cascaded: %d, %v", n, err)
		}
	})
}

// Under WithForeignTxError a raw write inside a transaction the plugin did
// not begin is refused before it runs, as GORM's writes are.
func TestRawExecForeignTransactionError(t *testing.T) {
	strict := envSetup{plugin: []gormplugin.Option{gormplugin.WithForeignTxError()}}
	forEachDBWith(t, strict, func(t *testing.T, e *env) {
		err := e.db.Connection(func(c *gorm.DB) error {
			return c.Transaction(func(tx *gorm.DB) error {
				return tx.Exec("UPDATE "+e.table(&Post{})+" SET title = ? WHERE id = ?", "Foreign", 7).Error
			})
		})
		if !errors.Is(err, gormplugin.ErrForeignTransaction) {
			t.Fatalf("raw write in a foreign transaction: %v, want ErrForeignTransaction", err)
		}
		if p, _ := lookupPost(e.raw, 7); p.Title != "Seven" {
			t.Errorf("the refused write ran: post 7 = %q", p.Title)
		}
	})
}

// A write run through Raw(…).Scan or Raw(…).Find (UPDATE … RETURNING) is a
// write: it invalidates as Exec does, and a Cached scope never serves it
// from the cache (the second call must write again).
func TestRawWriteThroughScanAndFind(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		if e.dialect == "mysql" {
			t.Skip("MariaDB has no UPDATE … RETURNING")
		}
		update := "UPDATE " + e.table(&Post{}) + " SET title = ? WHERE id = ? RETURNING id"
		b := newBlog(e)
		b.warm(t)
		var ids []uint
		noErr(t, "Raw.Scan", e.db.Raw(update, "Scanned", 7).Scan(&ids).Error)
		if len(ids) != 1 || ids[0] != 7 {
			t.Fatalf("RETURNING id = %v", ids)
		}
		b.checkFresh(t)

		bang := "UPDATE " + e.table(&Post{}) + " SET body = body || '!' WHERE id = ? RETURNING id"
		for _, want := range []string{"body of Seven!", "body of Seven!!"} {
			ids = nil
			noErr(t, "Cached Raw.Find", e.db.Scopes(gormplugin.Cached(time.Minute)).Raw(bang, 7).Find(&ids).Error)
			if p, _ := lookupPost(e.raw, 7); p.Body != want {
				t.Errorf("after a Cached Raw(UPDATE … RETURNING).Find: post 7 body = %q, want %q", p.Body, want)
			}
		}
		b.checkFresh(t)
	})
}
