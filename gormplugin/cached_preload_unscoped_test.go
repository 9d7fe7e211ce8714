package gormplugin_test

import (
	"fmt"
	"testing"

	"gorm.io/gorm"
)

// commentOnPost is a Comment that belongs to its Post, which has soft
// delete while the comment has none: Unscoped changes only what the
// preload reads, not the SQL of the query itself.
type commentOnPost struct {
	ID     uint
	PostID uint
	Body   string
	Post   Post
}

// Unscoped is passed on to the preloads (GORM's preload.go), so a query
// and its Unscoped twin that build the same SQL still read different
// rows when a preloaded model has soft delete. Where the SQL keys them
// (here a Table() name) both get one key; a hit replays a recorded
// preload only where its SQL and variables match (session.go), so the
// Unscoped query still reads the soft-deleted post, and the scoped one
// does not.
func TestCachedPreloadUnscopedReadsItsOwnRows(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		noErr(t, "soft delete post 7", e.db.Delete(&Post{}, 7).Error)
		stmt := &gorm.Statement{DB: e.db}
		noErr(t, "parse", stmt.Parse(&Comment{}))
		table := stmt.Schema.Table

		for _, unscoped := range []bool{false, true, false, true} {
			q := func(db *gorm.DB) *gorm.DB {
				db = db.Table(table).Preload("Post").Order("id")
				if unscoped {
					db = db.Unscoped()
				}
				return db
			}
			var want, got []commentOnPost
			noErr(t, "raw", q(e.raw).Find(&want).Error)
			noErr(t, "cached", q(cachedDB(e)).Find(&got).Error)
			sameValue(t, fmt.Sprint("unscoped=", unscoped), got, want)
		}
	})
}
