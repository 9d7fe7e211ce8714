package gormplugin_test

import (
	"context"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/depcache/go-depcache/depcache"
)

// UPDATE … FROM another table (PostgreSQL, SQLite): the key the plugin
// captures with RETURNING is the written table's, not an ambiguous "id";
// the write runs, changes the rows the user meant, and the cache is fresh
// after it — also when the written table has an alias.
func TestUpdateFromAnotherTable(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		if e.dialect == "mysql" {
			t.Skip("MySQL has no UPDATE … FROM")
		}
		users, posts := e.table(&User{}), e.table(&Post{})
		fromUsers := clause.From{Tables: []clause.Table{{Name: users}}}
		cases := []struct {
			name  string
			write func() *gorm.DB
		}{
			{"table", func() *gorm.DB {
				return e.db.Model(&Post{}).Clauses(fromUsers).
					Where(posts+".author_id = "+users+".id AND "+users+".name = ?", "alice").
					Update("title", "From users")
			}},
			{"alias", func() *gorm.DB {
				return e.db.Model(&Post{}).Table(posts+" AS p").Clauses(fromUsers).
					Where("p.author_id = "+users+".id AND "+users+".name = ?", "alice").
					Update("title", "From users, aliased")
			}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				_, err := e.m.Clear(e.ctx) // a fresh blog per case
				noErr(t, "Clear", err)
				b := newBlog(e)
				b.warm(t)
				res := c.write()
				noErr(t, "UPDATE … FROM", res.Error)
				if res.RowsAffected != 6 {
					t.Errorf("RowsAffected = %d, want alice's 6 posts", res.RowsAffected)
				}
				b.checkFresh(t)
			})
		}
	})
}

// A write whose RETURNING variant fails for a reason of the plugin's (here:
// the model's key column does not exist in the table the write names) runs
// exactly once as the user wrote it, and invalidates the table tag — in
// GORM's per-statement transaction, in the user's transaction, and with no
// transaction at all.
func TestReturningFallsBackToTheStatementAsWritten(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		if e.dialect == "mysql" {
			t.Skip("MySQL writes have no RETURNING capture")
		}
		archive := e.table("post_archive") // no id column
		noErr(t, "create archive", e.raw.Exec("CREATE TABLE "+archive+" (title VARCHAR(200), author_id INTEGER, hits INTEGER, deleted_at TIMESTAMP)").Error)
		t.Cleanup(func() { e.raw.Exec("DROP TABLE " + archive) })
		noErr(t, "seed archive", e.raw.Exec("INSERT INTO "+archive+" (title, author_id, hits) VALUES ('old', 1, 0), ('old', 2, 0)").Error)

		readArchive := func(db *gorm.DB) (int, error) {
			var hits []int
			err := db.Table(archive).Where("author_id = ?", alice).Pluck("hits", &hits).Error
			if len(hits) != 1 {
				return 0, err
			}
			return hits[0], err
		}
		cachedHits := depcache.Memoize0(func(ctx context.Context) (int, error) {
			return readArchive(e.db.WithContext(ctx))
		}, depcache.Using(e.m), depcache.KeyName("archive.hits"))

		bump := func(db *gorm.DB) error {
			return db.Model(&Post{}).Table(archive).Where("author_id = ?", alice).Update("hits", gorm.Expr("hits + 1")).Error
		}
		ways := []struct {
			name  string
			write func() error
		}{
			{"per-statement transaction", func() error { return bump(e.db) }},
			{"user's transaction", func() error { return e.db.Transaction(func(tx *gorm.DB) error { return bump(tx) }) }},
			{"no transaction", func() error { return bump(e.db.Session(&gorm.Session{SkipDefaultTransaction: true})) }},
		}
		for i, way := range ways {
			got, err := cachedHits(e.ctx)
			noErr(t, "hits", err)
			if got != i {
				t.Fatalf("before %s: cached hits = %d, want %d", way.name, got, i)
			}
			noErr(t, way.name, way.write())
			want, err := readArchive(e.raw)
			noErr(t, "hits (truth)", err)
			if want != i+1 {
				t.Fatalf("%s: hits = %d after one write, want %d (the write ran %d times)", way.name, want, i+1, want-i)
			}
			got, err = cachedHits(e.ctx)
			noErr(t, "hits", err)
			if got != want {
				t.Errorf("%s: cached hits = %d after the write, want %d", way.name, got, want)
			}
		}
	})
}

// A mass update of an aliased table (Table("posts AS p")) runs on every
// database, touches the rows the user meant and leaves the cache fresh:
// RETURNING is qualified with the alias, and where the plugin's key
// selection cannot use the alias (MySQL) it falls back to the table tag.
func TestMassUpdateAliasedTable(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		b := newBlog(e)
		b.warm(t)
		res := e.db.Model(&Post{}).Table(e.table(&Post{})+" AS p").Where("p.author_id = ?", alice).Update("title", "Aliased")
		noErr(t, "aliased update", res.Error)
		if res.RowsAffected != 6 {
			t.Errorf("RowsAffected = %d, want alice's 6 posts", res.RowsAffected)
		}
		b.checkFresh(t)
	})
}
