package gormplugin_test

import (
	"context"
	"testing"

	"gorm.io/gorm/clause"

	"github.com/depcache/go-depcache/depcache"
)

// A member is referenced by its Refer column, not its key: its profile's
// MemberRefer follows it ON UPDATE CASCADE, and the profile's notes follow
// the profile's MemberRefer in turn.
type Member struct {
	ID      uint    `gorm:"primaryKey"`
	Refer   uint    `gorm:"uniqueIndex"`
	Name    string  `gorm:"size:64"`
	Profile Profile `gorm:"foreignKey:MemberRefer;references:Refer;constraint:OnUpdate:CASCADE,OnDelete:CASCADE"`
}

type Profile struct {
	ID          uint   `gorm:"primaryKey"`
	MemberRefer uint   `gorm:"uniqueIndex"`
	Bio         string `gorm:"size:64"`
	Notes       []Note `gorm:"foreignKey:ProfileRefer;references:MemberRefer;constraint:OnUpdate:CASCADE,OnDelete:CASCADE"`
}

type Note struct {
	ID           uint `gorm:"primaryKey"`
	ProfileRefer uint
	Text         string `gorm:"size:64"`
}

// Updating a column that a relationship references with ON UPDATE CASCADE
// changes the referencing rows in the database; cached reads of them, and
// of the rows referencing those, are fresh after it.
func TestCascadeUpdateThroughReferencedColumn(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		noErr(t, "migrate", e.raw.AutoMigrate(&Member{}, &Profile{}, &Note{}))
		t.Cleanup(func() {
			if err := e.raw.Migrator().DropTable(&Note{}, &Profile{}, &Member{}); err != nil {
				t.Errorf("drop: %v", err)
			}
		})
		func() {
			// Other model types on the same tables, seen first and with no
			// relationships (GORM's own tests declare such local types):
			// its schema must not hide the relationships of the next one.
			type Member struct {
				ID    uint
				Refer uint
				Name  string
			}
			type Profile struct {
				ID          uint
				MemberRefer uint
				Bio         string
			}
			noErr(t, "write through another Member type", e.db.Model(&Member{}).Where("refer = ?", 0).Update("name", "none").Error)
			noErr(t, "write through another Profile type", e.db.Model(&Profile{}).Where("member_refer = ?", 0).Update("bio", "none").Error)
		}()
		member := Member{Refer: 100, Name: "m", Profile: Profile{Bio: "bio", Notes: []Note{{Text: "a"}, {Text: "b"}}}}
		noErr(t, "create", e.db.Create(&member).Error)

		profileOf := depcache.Memoize(func(ctx context.Context, refer uint) (int64, error) {
			var n int64
			err := e.db.WithContext(ctx).Model(&Profile{}).Where("member_refer = ?", refer).Count(&n).Error
			return n, err
		}, depcache.Using(e.m), depcache.KeyName("profileOf"))
		notesOf := depcache.Memoize(func(ctx context.Context, refer uint) (int64, error) {
			var n int64
			err := e.db.WithContext(ctx).Model(&Note{}).Where("profile_refer = ?", refer).Count(&n).Error
			return n, err
		}, depcache.Using(e.m), depcache.KeyName("notesOf"))
		check := func(step string, refer uint, wantProfiles, wantNotes int64) {
			t.Helper()
			if n, err := profileOf(e.ctx, refer); err != nil || n != wantProfiles {
				t.Errorf("%s: cached profiles of %d = %d (%v), want %d", step, refer, n, err, wantProfiles)
			}
			if n, err := notesOf(e.ctx, refer); err != nil || n != wantNotes {
				t.Errorf("%s: cached notes of %d = %d (%v), want %d", step, refer, n, err, wantNotes)
			}
		}
		check("before", 100, 1, 2)

		noErr(t, "update refer", e.db.Model(&Member{ID: member.ID}).Update("refer", 200).Error)
		var moved int64
		noErr(t, "truth", e.raw.Model(&Note{}).Where("profile_refer = ?", 200).Count(&moved).Error)
		if moved != 2 {
			t.Fatalf("test bug: the database did not cascade (%d notes moved)", moved)
		}
		check("after the update", 100, 0, 0)
		check("after the update", 200, 1, 2)

		// An upsert that sets the referenced column on a conflict cascades too.
		moveOnConflict := clause.OnConflict{Columns: []clause.Column{{Name: "id"}}, DoUpdates: clause.AssignmentColumns([]string{"refer"})}
		noErr(t, "upsert refer", e.db.Clauses(moveOnConflict).Create(&Member{ID: member.ID, Refer: 300, Name: "m"}).Error)
		check("after the upsert", 200, 0, 0)
		check("after the upsert", 300, 1, 2)
	})
}

// Category references itself: deleting a parent deletes its children.
type Category struct {
	ID       uint       `gorm:"primaryKey"`
	ParentID *uint      `gorm:"index"`
	Name     string     `gorm:"size:64"`
	Children []Category `gorm:"foreignKey:ParentID;constraint:OnDelete:CASCADE"`
}

// A delete that cascades to other rows of its own table (a tree) leaves no
// cached lookup of those rows behind.
func TestCascadeDeleteSelfReference(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		noErr(t, "migrate", e.raw.AutoMigrate(&Category{}))
		t.Cleanup(func() {
			if err := e.raw.Migrator().DropTable(&Category{}); err != nil {
				t.Errorf("drop: %v", err)
			}
		})
		root := Category{Name: "root", Children: []Category{{Name: "child"}}}
		noErr(t, "create", e.db.Create(&root).Error)
		childID := root.Children[0].ID

		category := depcache.Memoize(func(ctx context.Context, id uint) (string, error) {
			var c Category
			err := e.db.WithContext(ctx).Limit(1).Find(&c, id).Error
			return c.Name, err
		}, depcache.Using(e.m), depcache.KeyName("category"))
		if name, err := category(e.ctx, childID); err != nil || name != "child" {
			t.Fatalf("child before: %q, %v", name, err)
		}
		noErr(t, "delete root", e.db.Delete(&Category{ID: root.ID}).Error)
		var left int64
		noErr(t, "truth", e.raw.Model(&Category{}).Count(&left).Error)
		if left != 0 {
			t.Fatalf("test bug: the database did not cascade (%d categories left)", left)
		}
		if name, err := category(e.ctx, childID); err != nil || name != "" {
			t.Errorf("cached child after its parent's delete cascaded: %q, %v", name, err)
		}
	})
}

// INSERT OR REPLACE (SQLite, clause.Insert{Modifier: "OR REPLACE"}) deletes
// the row it conflicts with on any unique column — another key than the
// one inserted — and that delete cascades: lookups of the replaced row and
// of its referencing rows are fresh after it.
func TestInsertOrReplaceDeletesTheConflictingRow(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		if e.dialect != "sqlite" {
			t.Skip("INSERT OR REPLACE is SQLite's")
		}
		noErr(t, "migrate", e.raw.AutoMigrate(&Member{}, &Profile{}, &Note{}))
		first := Member{Refer: 100, Name: "first", Profile: Profile{Bio: "bio"}}
		noErr(t, "create", e.db.Create(&first).Error)

		member := depcache.Memoize(func(ctx context.Context, id uint) (string, error) {
			var m Member
			err := e.db.WithContext(ctx).Limit(1).Find(&m, id).Error
			return m.Name, err
		}, depcache.Using(e.m), depcache.KeyName("member"))
		if name, err := member(e.ctx, first.ID); err != nil || name != "first" {
			t.Fatalf("member before: %q, %v", name, err)
		}
		replace := clause.Insert{Modifier: "OR REPLACE"}
		noErr(t, "insert or replace", e.db.Clauses(replace).Create(&Member{ID: first.ID + 1, Refer: 100, Name: "second"}).Error)
		if name, err := member(e.ctx, first.ID); err != nil || name != "" {
			t.Errorf("cached member %d after INSERT OR REPLACE deleted it: %q, %v", first.ID, name, err)
		}
	})
}
