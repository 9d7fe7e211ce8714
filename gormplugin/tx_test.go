package gormplugin_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

var errAbort = errors.New("abort")

// txStyle runs write in a transaction, then during (still inside it), then
// ends the transaction its own way.
type txStyle struct {
	name string
	run  func(t *testing.T, e *env, write func(tx *gorm.DB) error, during func(tx *gorm.DB)) error
}

// Styles that commit.
var commitStyles = []txStyle{
	{"Transaction", func(t *testing.T, e *env, write func(*gorm.DB) error, during func(*gorm.DB)) error {
		return e.db.Transaction(func(tx *gorm.DB) error {
			if err := write(tx); err != nil {
				return err
			}
			during(tx)
			return nil
		})
	}},
	{"Begin-Commit", func(t *testing.T, e *env, write func(*gorm.DB) error, during func(*gorm.DB)) error {
		tx := e.db.Begin()
		noErr(t, "Begin", tx.Error)
		if err := write(tx); err != nil {
			tx.Rollback()
			return err
		}
		during(tx)
		return tx.Commit().Error
	}},
	{"PrepareStmt Transaction", func(t *testing.T, e *env, write func(*gorm.DB) error, during func(*gorm.DB)) error {
		return e.db.Session(&gorm.Session{PrepareStmt: true}).Transaction(func(tx *gorm.DB) error {
			if err := write(tx); err != nil {
				return err
			}
			during(tx)
			return nil
		})
	}},
}

// Styles that roll back; each returns errAbort when it did.
var rollbackStyles = []txStyle{
	{"Transaction returns an error", func(t *testing.T, e *env, write func(*gorm.DB) error, during func(*gorm.DB)) error {
		return e.db.Transaction(func(tx *gorm.DB) error {
			if err := write(tx); err != nil {
				return err
			}
			during(tx)
			return errAbort
		})
	}},
	{"Transaction panics", func(t *testing.T, e *env, write func(*gorm.DB) error, during func(*gorm.DB)) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = errAbort
			}
		}()
		return e.db.Transaction(func(tx *gorm.DB) error {
			if err := write(tx); err != nil {
				return err
			}
			during(tx)
			panic("abort")
		})
	}},
	{"Begin-Rollback", func(t *testing.T, e *env, write func(*gorm.DB) error, during func(*gorm.DB)) error {
		tx := e.db.Begin()
		noErr(t, "Begin", tx.Error)
		if err := write(tx); err != nil {
			tx.Rollback()
			return err
		}
		during(tx)
		noErr(t, "Rollback", tx.Rollback().Error)
		return errAbort
	}},
}

func updateTitle(id uint, title string) func(tx *gorm.DB) error {
	return func(tx *gorm.DB) error { return tx.Model(&Post{ID: id}).Update("title", title).Error }
}

// A write in a transaction invalidates when the transaction has really
// committed, not when the statement ran.
func TestTxInvalidatesAfterCommit(t *testing.T) {
	for _, style := range commitStyles {
		t.Run(style.name, func(t *testing.T) {
			forEachDB(t, func(t *testing.T, e *env) {
				b := newBlog(e)
				b.warm(t)
				err := style.run(t, e, updateTitle(7, "Committed"), func(*gorm.DB) {
					if !exists(t, e, b.key("page/1")) || !exists(t, e, b.key("post/7")) {
						t.Errorf("invalidated before COMMIT: a reader could refill from the old snapshot")
					}
				})
				noErr(t, "transaction", err)
				if exists(t, e, b.key("page/1")) || exists(t, e, b.key("post/7")) {
					t.Errorf("still cached after COMMIT")
				}
				b.checkFresh(t)
				if p, _ := b.post(e.ctx, 7); p.Title != "Committed" {
					t.Errorf("post 7 after COMMIT: %q", p.Title)
				}
				if b.runs("post/8") != 1 || b.runs("user/2") != 1 {
					t.Errorf("lookups of other rows ran again: post/8 %d, user/2 %d times", b.runs("post/8"), b.runs("user/2"))
				}
			})
		})
	}
}

// A rolled-back write invalidates nothing, and its value is never served:
// inside the transaction reads see it, after the rollback nobody does.
func TestTxRollbackDropsInvalidations(t *testing.T) {
	for _, style := range rollbackStyles {
		t.Run(style.name, func(t *testing.T) {
			forEachDB(t, func(t *testing.T, e *env) {
				b := newBlog(e)
				b.warm(t)
				var scoped Post
				noErr(t, "Cached First", e.db.Scopes(gormplugin.Cached(time.Minute)).First(&scoped, 7).Error)
				sets := e.m.Stats().Sets

				err := style.run(t, e, updateTitle(7, "Rolled back"), func(tx *gorm.DB) {
					readOwnWrite(t, e, b, tx, "Rolled back")
				})
				if !errors.Is(err, errAbort) {
					t.Fatalf("transaction: %v, want it rolled back", err)
				}
				if d := e.m.Stats().Sets - sets; d != 0 {
					t.Errorf("%d entries stored inside the transaction", d)
				}
				if !exists(t, e, b.key("page/1")) || !exists(t, e, b.key("post/7")) {
					t.Errorf("a rolled-back write invalidated")
				}
				b.checkFresh(t)
				var p Post
				noErr(t, "Cached First", e.db.Scopes(gormplugin.Cached(time.Minute)).First(&p, 7).Error)
				if p.Title != "Seven" {
					t.Errorf("Cached First(&post, 7) after the rollback: %q", p.Title)
				}
			})
		})
	}
}

// readOwnWrite checks, inside a transaction that has written post 7's title,
// that every way of reading through the cache sees the transaction's own
// write, and that none of them fills.
func readOwnWrite(t *testing.T, e *env, b *blog, tx *gorm.DB, title string) {
	t.Helper()
	sets := e.m.Stats().Sets
	ctx := withTx(gormplugin.TxContext(tx), tx)
	page, err := b.page(ctx, alice)
	noErr(t, "page in tx", err)
	if len(page) < 5 || page[4].ID != 7 || page[4].Title != title {
		t.Errorf("page inside the transaction does not show its own write %q: %s", title, asJSON(t, page))
	}
	p, err := b.post(ctx, 7)
	noErr(t, "post in tx", err)
	if p.Title != title {
		t.Errorf("First(&post, 7) inside the transaction = %q, want its own write %q", p.Title, title)
	}
	var scoped Post
	noErr(t, "Cached First in tx", tx.Scopes(gormplugin.Cached(time.Minute)).First(&scoped, 7).Error)
	if scoped.Title != title {
		t.Errorf("Cached First(&post, 7) through tx = %q, want its own write %q", scoped.Title, title)
	}
	// A memoized function not given TxContext that reads through tx: the
	// plugin sees the transaction itself and must not fill.
	_, err = b.user(withTx(e.ctx, tx), carol)
	noErr(t, "user in tx", err)
	if d := e.m.Stats().Sets - sets; d != 0 {
		t.Errorf("%d entries stored by reads inside a transaction that has written", d)
	}
}

// Reads inside a transaction that has written bypass the cache; after the
// commit everyone sees the write.
func TestTxWrittenReadsBypassCache(t *testing.T) {
	for _, style := range commitStyles {
		t.Run(style.name, func(t *testing.T) {
			forEachDB(t, func(t *testing.T, e *env) {
				b := newBlog(e)
				b.warm(t)
				var scoped Post
				noErr(t, "Cached First", e.db.Scopes(gormplugin.Cached(time.Minute)).First(&scoped, 7).Error)
				err := style.run(t, e, updateTitle(7, "Mine"), func(tx *gorm.DB) {
					readOwnWrite(t, e, b, tx, "Mine")
				})
				noErr(t, "transaction", err)
				b.checkFresh(t)
				var p Post
				noErr(t, "Cached First", e.db.Scopes(gormplugin.Cached(time.Minute)).First(&p, 7).Error)
				if p.Title != "Mine" {
					t.Errorf("Cached First(&post, 7) after COMMIT = %q", p.Title)
				}
			})
		})
	}
}

// Reads inside a transaction that has not written never fill either: its
// snapshot may predate an invalidation that has already run.
func TestTxReadsNeverFill(t *testing.T) {
	read := func(t *testing.T, e *env, b *blog, tx *gorm.DB) {
		t.Helper()
		sets := e.m.Stats().Sets
		page, err := b.page(withTx(gormplugin.TxContext(tx), tx), alice)
		noErr(t, "page", err)
		sameJSON(t, "page in a read-only transaction", page, b.truePage(t))
		_, err = b.user(withTx(e.ctx, tx), bob) // not given TxContext
		noErr(t, "user", err)
		var ps []Post
		noErr(t, "Cached Find", tx.Scopes(gormplugin.Cached(time.Minute)).Where("author_id = ?", bob).Find(&ps).Error)
		if len(ps) != 3 {
			t.Errorf("Cached Find in tx: %d posts, want 3", len(ps))
		}
		if d := e.m.Stats().Sets - sets; d != 0 {
			t.Errorf("%d entries stored by reads inside a transaction", d)
		}
	}
	after := func(t *testing.T, e *env, b *blog) {
		t.Helper()
		sets := e.m.Stats().Sets
		_, err := b.page(e.ctx, alice)
		noErr(t, "page", err)
		if n := b.runs("page/1"); n != 2 {
			t.Errorf("page ran %d times, want 2 (once in the transaction, once after)", n)
		}
		if d := e.m.Stats().Sets - sets; d != 1 {
			t.Errorf("the page read after the transaction stored %d entries, want 1", d)
		}
	}
	t.Run("Transaction", func(t *testing.T) {
		forEachDB(t, func(t *testing.T, e *env) {
			b := newBlog(e)
			noErr(t, "transaction", e.db.Transaction(func(tx *gorm.DB) error {
				read(t, e, b, tx)
				return nil
			}))
			after(t, e, b)
		})
	})
	t.Run("Begin-Commit", func(t *testing.T) {
		forEachDB(t, func(t *testing.T, e *env) {
			b := newBlog(e)
			tx := e.db.Begin()
			noErr(t, "Begin", tx.Error)
			read(t, e, b, tx)
			noErr(t, "Commit", tx.Commit().Error)
			after(t, e, b)
		})
	})
}

// Nested transactions (savepoints) invalidate at the outermost COMMIT, and
// nothing rolled back is ever served.
func TestTxNested(t *testing.T) {
	t.Run("inner commit waits for the outer", func(t *testing.T) {
		forEachDB(t, func(t *testing.T, e *env) {
			b := newBlog(e)
			b.warm(t)
			noErr(t, "transaction", e.db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Transaction(updateTitle(7, "Inner")); err != nil {
					return err
				}
				if !exists(t, e, b.key("page/1")) {
					t.Errorf("invalidated when the savepoint was released, before COMMIT")
				}
				return nil
			}))
			if exists(t, e, b.key("page/1")) || exists(t, e, b.key("post/7")) {
				t.Errorf("still cached after COMMIT")
			}
			b.checkFresh(t)
		})
	})
	t.Run("inner rolled back, outer commits", func(t *testing.T) {
		forEachDB(t, func(t *testing.T, e *env) {
			b := newBlog(e)
			b.warm(t)
			noErr(t, "transaction", e.db.Transaction(func(tx *gorm.DB) error {
				err := tx.Transaction(func(tx2 *gorm.DB) error {
					if err := updateTitle(7, "Inner rolled back")(tx2); err != nil {
						return err
					}
					return errAbort
				})
				if !errors.Is(err, errAbort) {
					t.Errorf("inner transaction: %v", err)
				}
				return updateTitle(6, "Outer")(tx)
			}))
			b.checkFresh(t)
			if p, _ := b.post(e.ctx, 6); p.Title != "Outer" {
				t.Errorf("post 6 = %q, want Outer", p.Title)
			}
		})
	})
	t.Run("inner commits, outer rolled back", func(t *testing.T) {
		forEachDB(t, func(t *testing.T, e *env) {
			b := newBlog(e)
			b.warm(t)
			err := e.db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Transaction(updateTitle(7, "Inner")); err != nil {
					return err
				}
				return errAbort
			})
			if !errors.Is(err, errAbort) {
				t.Fatalf("transaction: %v", err)
			}
			if !exists(t, e, b.key("page/1")) || !exists(t, e, b.key("post/7")) {
				t.Errorf("a rolled-back transaction invalidated")
			}
			b.checkFresh(t)
		})
	})
	t.Run("SavePoint RollbackTo", func(t *testing.T) {
		forEachDB(t, func(t *testing.T, e *env) {
			b := newBlog(e)
			b.warm(t)
			tx := e.db.Begin()
			noErr(t, "Begin", tx.Error)
			noErr(t, "SavePoint", tx.SavePoint("sp1").Error)
			noErr(t, "update 7", updateTitle(7, "Undone")(tx))
			noErr(t, "RollbackTo", tx.RollbackTo("sp1").Error)
			noErr(t, "update 6", updateTitle(6, "Kept")(tx))
			if !exists(t, e, b.key("page/1")) {
				t.Errorf("invalidated before COMMIT")
			}
			noErr(t, "Commit", tx.Commit().Error)
			b.checkFresh(t)
			if p, _ := b.post(e.ctx, 7); p.Title != "Seven" {
				t.Errorf("post 7 = %q, want Seven", p.Title)
			}
			if p, _ := b.post(e.ctx, 6); p.Title != "Kept" {
				t.Errorf("post 6 = %q, want Kept", p.Title)
			}
		})
	})
}

// A transaction the plugin did not begin (one begun on db.Connection's
// *sql.Conn) is detected: no cache reads or fills inside it, and its writes
// invalidate when the statement runs.
func TestTxForeignTransaction(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		b := newBlog(e)
		b.warm(t)
		var scoped Post
		noErr(t, "Cached First", e.db.Scopes(gormplugin.Cached(time.Minute)).First(&scoped, 8).Error)
		err := e.db.Connection(func(c *gorm.DB) error {
			return c.Transaction(func(tx *gorm.DB) error {
				before := e.m.Stats()
				var p Post
				if err := tx.Scopes(gormplugin.Cached(time.Minute)).First(&p, 8).Error; err != nil {
					return err
				}
				if _, err := b.user(withTx(e.ctx, tx), carol); err != nil {
					return err
				}
				now := e.m.Stats()
				if now.Hits != before.Hits || now.Sets != before.Sets {
					t.Errorf("inside a foreign transaction: %d hits, %d sets; want none", now.Hits-before.Hits, now.Sets-before.Sets)
				}
				if err := updateTitle(7, "Foreign")(tx); err != nil {
					return err
				}
				if exists(t, e, b.key("page/1")) || exists(t, e, b.key("post/7")) {
					t.Errorf("a write in a foreign transaction did not invalidate when it ran")
				}
				return nil
			})
		})
		noErr(t, "foreign transaction", err)
		b.checkFresh(t)
		if p, _ := b.post(e.ctx, 7); p.Title != "Foreign" {
			t.Errorf("post 7 = %q, want Foreign", p.Title)
		}
	})
}

// gormplugin.DB(ctx, db) is the transaction TxContext put in ctx — also in
// the ctx a memoized function receives — and db otherwise, or when the
// transaction belongs to another database handle.
func TestDBReachesTheTransaction(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		post := depcache.Memoize(func(ctx context.Context, id uint) (Post, error) {
			return lookupPost(gormplugin.DB(ctx, e.db), id)
		}, depcache.Using(e.m), depcache.KeyName("post via DB"))
		if p, err := post(e.ctx, 7); err != nil || p.Title != "Seven" {
			t.Fatalf("post 7 = %q, %v", p.Title, err)
		}
		noErr(t, "transaction", e.db.Transaction(func(tx *gorm.DB) error {
			if err := updateTitle(7, "In tx")(tx); err != nil {
				return err
			}
			p, err := post(gormplugin.TxContext(tx), 7)
			noErr(t, "post in tx", err)
			if p.Title != "In tx" {
				t.Errorf("memoized read under TxContext(tx) = %q, want the transaction's own write", p.Title)
			}
			if got := gormplugin.DB(gormplugin.TxContext(tx), e.raw); got.Statement.ConnPool == tx.Statement.ConnPool {
				t.Errorf("DB(ctx, another handle) returned the transaction of e.db")
			}
			if got := gormplugin.DB(e.ctx, e.db); got.Statement.ConnPool == tx.Statement.ConnPool {
				t.Errorf("DB(ctx without a transaction, db) returned the transaction")
			}
			return nil
		}))
		if p, err := post(e.ctx, 7); err != nil || p.Title != "In tx" {
			t.Errorf("post 7 after COMMIT = %q, %v", p.Title, err)
		}
	})
}
