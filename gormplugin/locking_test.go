package gormplugin_test

import (
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/depcache/go-depcache/gormplugin"
)

// A Cached() read that locks rows (SELECT … FOR UPDATE/SHARE, by
// clause.Locking or in raw SQL) always reaches the database: the lock is
// what the caller asked for. Before, inside a transaction that had not
// written yet, it was served from the cache and took no lock (found by a
// new-user check: on PostgreSQL another session's UPDATE of the row went
// through while the transaction was open).
func TestCachedLockingReadReachesTheDatabase(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		lockings := map[string]func(db *gorm.DB) error{
			"clause": func(db *gorm.DB) error {
				var u User
				return db.Scopes(gormplugin.Cached(time.Minute)).Clauses(clause.Locking{Strength: "UPDATE"}).First(&u, alice).Error
			},
			"raw": func(db *gorm.DB) error {
				var u User
				return db.Scopes(gormplugin.Cached(time.Minute)).Raw("SELECT * FROM "+e.table(&User{})+" WHERE id = ? FOR UPDATE", alice).Find(&u).Error
			},
		}
		if e.dialect == "sqlite" {
			// SQLite has no FOR UPDATE: GORM's SQLite dialect drops the
			// clause, and raw SQL with it is a syntax error.
			delete(lockings, "raw")
		}
		for name, lock := range lockings {
			t.Run(name, func(t *testing.T) {
				s0 := e.m.Stats()
				noErr(t, "locking read outside a transaction", lock(e.db))
				noErr(t, "locking read in a transaction", e.db.Transaction(func(tx *gorm.DB) error {
					return lock(tx)
				}))
				noErr(t, "locking read again", lock(e.db))
				if s := e.m.Stats(); s.Hits != s0.Hits || s.Sets != s0.Sets {
					t.Errorf("locking reads: %d hits, %d stores; want none", s.Hits-s0.Hits, s.Sets-s0.Sets)
				}
			})
		}
	})
}
