package gormplugin_test

import (
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
// rows when a preloaded model has soft delete. Both were once keyed alike
// where the SQL keys them (here a Table() name): the Unscoped query was
// served the scoped one's entry, without the soft-deleted post.
func TestCachedPreloadUnscopedKeyedApart(t *testing.T) {
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
			t.Logf("unscoped=%v want %+v got %+v", unscoped, want, got)
			sameValue(t, "unscoped="+map[bool]string{false: "false", true: "true"}[unscoped], got, want)
		}
	})
}
