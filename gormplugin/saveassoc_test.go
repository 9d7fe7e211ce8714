package gormplugin_test

import (
	"sort"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/depcache/go-depcache/gormplugin"
)

// GORM's TestUpdateMany2ManyAssociations, on the blog: Save of a row with
// many2many associations writes the row, upserts the associated rows
// (ON DUPLICATE KEY UPDATE on MySQL, no RETURNING on MariaDB) and the join
// rows. A cached Preload read after each Save shows what the database holds.
func TestSaveManyToManyRefreshesCachedPreload(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		p := Post{AuthorID: alice, Title: "Assoc", Tags: []Tag{{Name: "t-a"}, {Name: "t-b"}}}
		noErr(t, "create", e.db.Create(&p).Error)

		view := func(db *gorm.DB) string {
			t.Helper()
			var got Post
			noErr(t, "preload", db.Preload("Tags").First(&got, p.ID).Error)
			sort.Slice(got.Tags, func(i, j int) bool { return got.Tags[i].ID < got.Tags[j].ID })
			return asJSON(t, got)
		}
		cached := func() string { return view(e.db.Scopes(gormplugin.Cached(time.Minute))) }
		check := func(step string) {
			t.Helper()
			if got, want := cached(), view(e.raw); got != want {
				t.Fatalf("%s: cached read\n%s\nwant (database)\n%s", step, got, want)
			}
		}
		check("after Create")

		// The associated rows exist: a plain Save leaves their names (DoNothing
		// upsert) but changes the post and adds a tag link.
		p.Title = "Assoc saved"
		for i := range p.Tags {
			p.Tags[i].Name += "-new"
		}
		p.Tags = append(p.Tags, Tag{Name: "t-c"})
		noErr(t, "save", e.db.Save(&p).Error)
		check("after Save")

		// FullSaveAssociations updates the associated rows' names.
		noErr(t, "full save", e.db.Session(&gorm.Session{FullSaveAssociations: true}).Save(&p).Error)
		check("after Save with FullSaveAssociations")
		var names []string
		noErr(t, "tag names", e.raw.Model(&Tag{}).Where("id IN ?", []uint{p.Tags[0].ID, p.Tags[1].ID}).Order("id").Pluck("name", &names).Error)
		if len(names) != 2 || names[0] != "t-a-new" || names[1] != "t-b-new" {
			t.Fatalf("test bug: FullSaveAssociations left the names %v", names)
		}
	})
}
