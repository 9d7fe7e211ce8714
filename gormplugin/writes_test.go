package gormplugin_test

import (
	"context"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/depcache/go-depcache/depcache"
)

// writeCase is one kind of GORM write. Each changes alice's page.
type writeCase struct {
	name  string
	write func(t *testing.T, e *env) error
	// touches8 says whether the write may legitimately invalidate a cached
	// First(&post, 8) on this database: it writes post 8, or it cannot
	// identify its rows there and falls back to the table tag. When false,
	// the lookup of post 8 must not run again.
	touches8 func(dialect string) bool
}

func always(string) bool          { return true }
func onMySQL(dialect string) bool { return dialect == "mysql" }

// upsertTitle is an upsert that updates the title on a conflict on id.
var upsertTitle = clause.OnConflict{
	Columns:   []clause.Column{{Name: "id"}},
	DoUpdates: clause.AssignmentColumns([]string{"title"}),
}

var writeCases = []writeCase{
	{name: "Create", write: func(t *testing.T, e *env) error {
		return e.db.Create(&Post{AuthorID: alice, Title: "Eleven"}).Error
	}},
	{name: "Create batch", write: func(t *testing.T, e *env) error {
		return e.db.Create(&[]Post{{AuthorID: alice, Title: "Eleven"}, {AuthorID: bob, Title: "Twelve"}}).Error
	}},
	{name: "CreateInBatches", write: func(t *testing.T, e *env) error {
		return e.db.CreateInBatches(&[]Post{{AuthorID: alice, Title: "Eleven"}, {AuthorID: alice, Title: "Twelve"}, {AuthorID: alice, Title: "Thirteen"}}, 2).Error
	}},
	{name: "Save existing", write: func(t *testing.T, e *env) error {
		var p Post
		noErr(t, "load post 7", e.raw.First(&p, 7).Error)
		p.Title = "Saved"
		return e.db.Save(&p).Error
	}},
	{name: "Save new", write: func(t *testing.T, e *env) error {
		return e.db.Save(&Post{AuthorID: alice, Title: "Saved new"}).Error
	}},
	// Without RETURNING (MariaDB) an upsert cannot name its rows: table tag.
	{name: "upsert conflict", touches8: onMySQL, write: func(t *testing.T, e *env) error {
		return e.db.Clauses(upsertTitle).Create(&Post{ID: 7, AuthorID: alice, Title: "Upserted"}).Error
	}},
	{name: "upsert insert", touches8: onMySQL, write: func(t *testing.T, e *env) error {
		return e.db.Clauses(upsertTitle).Create(&Post{AuthorID: alice, Title: "Upserted new"}).Error
	}},
	{name: "Model(&loaded).Updates struct", write: func(t *testing.T, e *env) error {
		var p Post
		noErr(t, "load post 7", e.raw.First(&p, 7).Error)
		return e.db.Model(&p).Updates(Post{Title: "Updated"}).Error
	}},
	{name: "Model.Updates map", write: func(t *testing.T, e *env) error {
		return e.db.Model(&Post{ID: 7}).Updates(map[string]any{"title": "Updated map"}).Error
	}},
	{name: "Model.Update", write: func(t *testing.T, e *env) error {
		return e.db.Model(&Post{ID: 7}).Update("title", "Update").Error
	}},
	{name: "Model.UpdateColumn", write: func(t *testing.T, e *env) error {
		return e.db.Model(&Post{ID: 7}).UpdateColumn("title", "UpdateColumn").Error
	}},
	{name: "Model.UpdateColumns", write: func(t *testing.T, e *env) error {
		return e.db.Model(&Post{ID: 7}).UpdateColumns(Post{Title: "UpdateColumns"}).Error
	}},
	{name: "Where.Update mass", write: func(t *testing.T, e *env) error {
		return e.db.Model(&Post{}).Where("author_id = ?", alice).Update("title", "Bulk").Error
	}},
	{name: "Where.Or.Update", write: func(t *testing.T, e *env) error {
		return e.db.Model(&Post{}).Where("id = ?", 6).Or("id = ?", 7).Update("title", "Either").Error
	}},
	{name: "Where pk IN.Updates", write: func(t *testing.T, e *env) error {
		return e.db.Model(&Post{}).Where("id IN ?", []uint{6, 7}).Updates(Post{Title: "Both"}).Error
	}},
	{name: "Where.Update SkipDefaultTransaction", write: func(t *testing.T, e *env) error {
		return e.db.Session(&gorm.Session{SkipDefaultTransaction: true}).
			Model(&Post{}).Where("title = ?", "Seven").Update("title", "Renamed").Error
	}},
	{name: "update the author", write: func(t *testing.T, e *env) error {
		return e.db.Model(&User{ID: alice}).Update("name", "alicia").Error
	}},
	{name: "Delete model", write: func(t *testing.T, e *env) error {
		return e.db.Delete(&Comment{ID: 1}).Error
	}},
	{name: "Where.Delete", write: func(t *testing.T, e *env) error {
		return e.db.Where("post_id = ?", 7).Delete(&Comment{}).Error
	}},
	{name: "soft Delete by pk", write: func(t *testing.T, e *env) error {
		return e.db.Delete(&Post{}, 7).Error
	}},
	{name: "soft Delete by Where", write: func(t *testing.T, e *env) error {
		return e.db.Where("title = ?", "Seven").Delete(&Post{}).Error
	}},
	{name: "Unscoped Delete", write: func(t *testing.T, e *env) error {
		return e.db.Unscoped().Delete(&Post{ID: 7}).Error
	}},
	{name: "Association Append", write: func(t *testing.T, e *env) error {
		return e.db.Model(&Post{ID: 7}).Association("Tags").Append(&Tag{ID: 3})
	}},
	{name: "Association Replace", write: func(t *testing.T, e *env) error {
		return e.db.Model(&Post{ID: 7}).Association("Tags").Replace(&Tag{ID: 3})
	}},
	{name: "Association Delete", write: func(t *testing.T, e *env) error {
		return e.db.Model(&Post{ID: 7}).Association("Tags").Delete(&Tag{ID: 1})
	}},
	{name: "Association Clear", write: func(t *testing.T, e *env) error {
		return e.db.Model(&Post{ID: 7}).Association("Tags").Clear()
	}},
	{name: "raw Exec", touches8: always, write: func(t *testing.T, e *env) error {
		return e.db.Exec("UPDATE "+e.table(&Post{})+" SET title = ? WHERE id IN (?, ?)", "Raw", 7, 8).Error
	}},
}

// After each kind of write the cached page and lookups are fresh, and the
// lookups the write has nothing to do with were not run again.
func TestWritesRefreshCache(t *testing.T) {
	for _, w := range writeCases {
		t.Run(w.name, func(t *testing.T) {
			forEachDB(t, func(t *testing.T, e *env) {
				b := newBlog(e)
				b.warm(t)
				before := b.truePage(t)
				noErr(t, "write", w.write(t, e))
				if asJSON(t, b.truePage(t)) == asJSON(t, before) {
					t.Fatalf("test bug: the write did not change the page")
				}

				b.checkFresh(t)
				if n := b.runs("page/1"); n != 2 {
					t.Errorf("page ran %d times, want 2", n)
				}
				if _, err := b.page(e.ctx, alice); err != nil || b.runs("page/1") != 2 {
					t.Errorf("the page was not cached again after the write: ran %d times, %v", b.runs("page/1"), err)
				}
				if n := b.runs("user/2"); n != 1 {
					t.Errorf("First(&user, 2) ran %d times: a write to other rows invalidated it", n)
				}
				if (w.touches8 == nil || !w.touches8(e.dialect)) && b.runs("post/8") != 1 {
					t.Errorf("First(&post, 8) ran %d times: a write to other rows invalidated it", b.runs("post/8"))
				}
			})
		})
	}
}

// Deleting a post deletes its comments and tag links (ON DELETE CASCADE):
// cached reads of those tables are fresh too.
func TestCascadeDeleteRefreshesReferencingTables(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		postTags := e.table("post_tags")
		comments := func(db *gorm.DB) ([]Comment, error) {
			var cs []Comment
			err := db.Where("post_id = ?", 7).Order("id").Find(&cs).Error
			return cs, err
		}
		tagIDs := func(db *gorm.DB) ([]uint, error) {
			var ids []uint
			err := db.Table(postTags).Where("post_id = ?", 7).Order("tag_id").Pluck("tag_id", &ids).Error
			return ids, err
		}
		cachedComments := depcache.Memoize0(func(ctx context.Context) ([]Comment, error) { return comments(conn(ctx, e.db)) },
			depcache.Using(e.m), depcache.KeyName("comments"))
		cachedTagIDs := depcache.Memoize0(func(ctx context.Context) ([]uint, error) { return tagIDs(conn(ctx, e.db)) },
			depcache.Using(e.m), depcache.KeyName("tagIDs"))
		cs, err := cachedComments(e.ctx)
		noErr(t, "comments", err)
		ids, err := cachedTagIDs(e.ctx)
		noErr(t, "tag ids", err)
		if len(cs) != 2 || len(ids) != 2 {
			t.Fatalf("seed: post 7 has %d comments and %d tags, want 2 and 2", len(cs), len(ids))
		}

		noErr(t, "delete post 7", e.db.Unscoped().Delete(&Post{ID: 7}).Error)
		if cs, _ := comments(e.raw); len(cs) != 0 {
			t.Fatalf("test bug: the database did not cascade (%d comments left)", len(cs))
		}
		cs, err = cachedComments(e.ctx)
		noErr(t, "comments", err)
		if len(cs) != 0 {
			t.Errorf("cached comments of deleted post 7: %s", asJSON(t, cs))
		}
		ids, err = cachedTagIDs(e.ctx)
		noErr(t, "tag ids", err)
		if len(ids) != 0 {
			t.Errorf("cached tag ids of deleted post 7: %v", ids)
		}
	})
}

// Writes to a composite-key row invalidate that row's lookups only.
func TestCompositeKeyWrites(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		runs := map[[2]uint]int{}
		vote := depcache.Memoize2(func(ctx context.Context, postID, userID uint) (Vote, error) {
			runs[[2]uint{postID, userID}]++
			return lookupVote(conn(ctx, e.db), postID, userID)
		}, depcache.Using(e.m), depcache.KeyName("vote"))
		check := func(step string, postID, userID uint, wantRuns int) {
			t.Helper()
			got, err := vote(e.ctx, postID, userID)
			noErr(t, "vote", err)
			want, err := lookupVote(e.raw, postID, userID)
			noErr(t, "vote (truth)", err)
			sameJSON(t, step, got, want)
			if n := runs[[2]uint{postID, userID}]; n != wantRuns {
				t.Errorf("%s: vote(%d, %d) ran %d times, want %d", step, postID, userID, n, wantRuns)
			}
		}
		for range 2 {
			check("seed", 7, bob, 1)
			check("seed", 7, carol, 1)
		}
		noErr(t, "update", e.db.Model(&Vote{PostID: 7, UserID: bob}).Update("value", 5).Error)
		check("after update of (7, bob)", 7, bob, 2)
		check("after update of (7, bob)", 7, carol, 1)
		noErr(t, "delete", e.db.Delete(&Vote{PostID: 7, UserID: bob}).Error)
		check("after delete of (7, bob)", 7, bob, 3)
		check("after delete of (7, bob)", 7, carol, 1)
		check("before create of (8, bob)", 8, bob, 1)
		noErr(t, "create", e.db.Create(&Vote{PostID: 8, UserID: bob, Value: 1}).Error)
		check("after create of (8, bob)", 8, bob, 2)
		check("after create of (8, bob)", 7, carol, 1)
	})
}

// Writes to a row of a custom-named table with a string key invalidate
// that row's lookups, and on every database but MariaDB only those.
func TestStringKeyWrites(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		runs := map[string]int{}
		setting := depcache.Memoize(func(ctx context.Context, name string) (Setting, error) {
			runs[name]++
			return lookupSetting(conn(ctx, e.db), name)
		}, depcache.Using(e.m), depcache.KeyName("setting"))
		check := func(step, name string, wantRuns int) {
			t.Helper()
			got, err := setting(e.ctx, name)
			noErr(t, "setting", err)
			want, err := lookupSetting(e.raw, name)
			noErr(t, "setting (truth)", err)
			sameJSON(t, step, got, want)
			// MariaDB lookups by string key also depend on the list tag,
			// which every write invalidates.
			if n := runs[name]; n != wantRuns && !(e.dialect == "mysql" && n > wantRuns) {
				t.Errorf("%s: setting(%q) ran %d times, want %d", step, name, n, wantRuns)
			}
		}
		for range 2 {
			check("seed", "site:title", 1)
			check("seed", "theme", 1)
		}
		noErr(t, "update", e.db.Model(&Setting{Name: "site:title"}).Update("value", "My blog").Error)
		check("after update", "site:title", 2)
		check("after update", "theme", 1)
		noErr(t, "save", e.db.Save(&Setting{Name: "site:title", Value: "Saved blog"}).Error)
		check("after save", "site:title", 3)
		check("after save", "theme", 1)
		noErr(t, "delete", e.db.Delete(&Setting{Name: "site:title"}).Error)
		check("after delete", "site:title", 4)
		check("after delete", "theme", 1)
	})
}

// A DryRun write (also ToSQL) builds SQL and runs nothing: it invalidates
// nothing and is not refused inside a foreign transaction.
func TestDryRunWritesInvalidateNothing(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		b := newBlog(e)
		b.warm(t)
		dry := e.db.Session(&gorm.Session{DryRun: true})
		noErr(t, "dry Update", dry.Model(&Post{ID: 7}).Update("title", "Dry").Error)
		noErr(t, "dry mass Update", dry.Model(&Post{}).Where("author_id = ?", alice).Update("title", "Dry").Error)
		noErr(t, "dry Exec", dry.Exec("UPDATE "+e.table(&Post{})+" SET title = ?", "Dry").Error)
		e.db.ToSQL(func(tx *gorm.DB) *gorm.DB { return tx.Model(&Post{}).Where("id = ?", 7).Delete(&Post{}) })
		if !exists(t, e, b.key("page/1")) || !exists(t, e, b.key("post/7")) {
			t.Errorf("a DryRun write invalidated")
		}
		b.checkFresh(t)
	})
}
