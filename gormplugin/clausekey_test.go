package gormplugin_test

import (
	"database/sql"
	"fmt"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/depcache/go-depcache/gormplugin"
)

type authorID uint

// smallPost is a smaller struct than Post: GORM selects its columns.
type smallPost struct {
	ID    uint
	Title string
}

// A Cached query keyed by its clauses (clausekey.go) returns what the
// query returns, fill and hit, for every shape the clause key reads —
// and the shapes it does not read keep the SQL key. Every query here runs
// with the package's key check on (checkkeys_test.go): a clause key that
// ever stood for two different SQL keys panics.
func TestCachedClauseKeys(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		// A soft-deleted post, so that Unscoped and the soft-delete
		// clause change results.
		noErr(t, "soft delete post 3", e.db.Delete(&Post{}, 3).Error)

		var lastKey string
		var lastClause bool
		noErr(t, "register", e.db.Callback().Query().Before("gorm:query").Register("test:clause_key", func(db *gorm.DB) {
			lastKey, lastClause = gormplugin.ClauseKey(db)
		}))

		type result struct {
			dest any
			rows int64
			err  error
		}
		run := func(db *gorm.DB, q func(*gorm.DB) (any, *gorm.DB)) result {
			dest, r := q(db)
			return result{dest, r.RowsAffected, r.Error}
		}
		cases := []struct {
			name   string
			clause bool // keyed by its clauses
			q      func(*gorm.DB) (any, *gorm.DB)
		}{
			{"First 7", true, func(db *gorm.DB) (any, *gorm.DB) { var p Post; return &p, db.First(&p, 7) }},
			{"First 8", true, func(db *gorm.DB) (any, *gorm.DB) { var p Post; return &p, db.First(&p, 8) }},
			{"First int64 7", true, func(db *gorm.DB) (any, *gorm.DB) { var p Post; return &p, db.First(&p, int64(7)) }},
			{"First soft-deleted 3", true, func(db *gorm.DB) (any, *gorm.DB) { var p Post; return &p, db.First(&p, 3) }},
			{"Unscoped First 3", true, func(db *gorm.DB) (any, *gorm.DB) { var p Post; return &p, db.Unscoped().First(&p, 3) }},
			{"First missing", true, func(db *gorm.DB) (any, *gorm.DB) { var p Post; return &p, db.First(&p, 99) }},
			{"Take 9", true, func(db *gorm.DB) (any, *gorm.DB) { var p Post; return &p, db.Take(&p, 9) }},
			{"Last", true, func(db *gorm.DB) (any, *gorm.DB) { var p Post; return &p, db.Last(&p) }},
			{"dest key 4", true, func(db *gorm.DB) (any, *gorm.DB) { p := Post{ID: 4}; return &p, db.First(&p) }},
			{"dest key 5", true, func(db *gorm.DB) (any, *gorm.DB) { p := Post{ID: 5}; return &p, db.First(&p) }},
			{"dest key 5 and condition", true, func(db *gorm.DB) (any, *gorm.DB) { p := Post{ID: 5}; return &p, db.First(&p, "author_id = ?", alice) }},
			{"composite dest key", true, func(db *gorm.DB) (any, *gorm.DB) { v := Vote{PostID: 7, UserID: carol}; return &v, db.First(&v) }},
			{"composite dest key other", true, func(db *gorm.DB) (any, *gorm.DB) { v := Vote{PostID: 8, UserID: alice}; return &v, db.First(&v) }},
			{"string key", true, func(db *gorm.DB) (any, *gorm.DB) { var s Setting; return &s, db.First(&s, "name = ?", "theme") }},
			{"string dest key", true, func(db *gorm.DB) (any, *gorm.DB) { s := Setting{Name: "site:title"}; return &s, db.First(&s) }},
			{"Find all", true, func(db *gorm.DB) (any, *gorm.DB) { var ps []Post; return &ps, db.Order("id").Find(&ps) }},
			{"Unscoped Find all", true, func(db *gorm.DB) (any, *gorm.DB) { var ps []Post; return &ps, db.Unscoped().Order("id").Find(&ps) }},
			{"Find pointers", true, func(db *gorm.DB) (any, *gorm.DB) { var ps []*Post; return &ps, db.Order("id").Find(&ps) }},
			{"Where title One", true, func(db *gorm.DB) (any, *gorm.DB) { var ps []Post; return &ps, db.Where("title = ?", "One").Find(&ps) }},
			{"Where title Two", true, func(db *gorm.DB) (any, *gorm.DB) { var ps []Post; return &ps, db.Where("title = ?", "Two").Find(&ps) }},
			{"Where IN 1,2", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Where("id IN ?", []int{1, 2}).Find(&ps)
			}},
			{"Where IN 1,2,4", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Where("id IN ?", []int{1, 2, 4}).Find(&ps)
			}},
			{"Where IN uints", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Where("id IN ?", []uint{5, 6}).Find(&ps)
			}},
			{"Where IN anys", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Where("id IN ?", []any{6, 7}).Find(&ps)
			}},
			{"Where IN empty", true, func(db *gorm.DB) (any, *gorm.DB) { var ps []Post; return &ps, db.Where("id IN ?", []int{}).Find(&ps) }},
			{"Where IN (?) parentheses", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Where("id IN (?)", []int{2, 9}).Find(&ps)
			}},
			{"Where tuples", true, func(db *gorm.DB) (any, *gorm.DB) {
				var vs []Vote
				return &vs, db.Where("(post_id, user_id) IN ?", []any{[]any{7, bob}, []any{8, alice}}).Order("post_id").Find(&vs)
			}},
			{"Where map", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Where(map[string]any{"author_id": bob}).Order("id").Find(&ps)
			}},
			{"Where struct", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Where(&Post{AuthorID: carol}).Find(&ps)
			}},
			{"Where Or", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Where("author_id = ?", bob).Or("author_id = ?", carol).Order("id").Find(&ps)
			}},
			{"Not", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Not("author_id = ?", alice).Order("id").Find(&ps)
			}},
			{"Not map", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Not(map[string]any{"author_id": []uint{alice, bob}}).Order("id").Find(&ps)
			}},
			{"AND in SQL", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Where("author_id = ? AND id > ?", alice, 2).Where("id < ?", 10).Order("id").Find(&ps)
			}},
			{"OR in SQL", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Where("author_id = ? OR id = ?", carol, 4).Where("id < ?", 10).Order("id").Find(&ps)
			}},
			{"LIKE", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Where("title LIKE ?", "T%").Order("id").Find(&ps)
			}},
			{"clause Gt", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Where(clause.Gt{Column: "id", Value: 7}).Order("id").Find(&ps)
			}},
			{"clause Lte", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Where(clause.Lte{Column: clause.Column{Table: clause.CurrentTable, Name: "id"}, Value: 2}).Order("id").Find(&ps)
			}},
			{"clause Neq nil", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Unscoped().Where(clause.Neq{Column: "deleted_at", Value: nil}).Find(&ps)
			}},
			{"time", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Unscoped().Where("deleted_at > ?", time.Unix(0, 0).UTC()).Find(&ps)
			}},
			{"order desc limit offset", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Order("id desc").Limit(3).Offset(1).Find(&ps)
			}},
			{"order limit", true, func(db *gorm.DB) (any, *gorm.DB) { var ps []Post; return &ps, db.Order("id").Limit(3).Find(&ps) }},
			{"order limit 2", true, func(db *gorm.DB) (any, *gorm.DB) { var ps []Post; return &ps, db.Order("id").Limit(2).Find(&ps) }},
			{"order offset", true, func(db *gorm.DB) (any, *gorm.DB) { var ps []Post; return &ps, db.Order("id").Offset(8).Find(&ps) }},
			{"order by two", true, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Order("author_id desc").Order("id").Find(&ps)
			}},
			{"Distinct", true, func(db *gorm.DB) (any, *gorm.DB) { var ps []Post; return &ps, db.Distinct().Order("id").Find(&ps) }},
			{"users", true, func(db *gorm.DB) (any, *gorm.DB) { var us []User; return &us, db.Order("id").Find(&us) }},
			{"Model map", true, func(db *gorm.DB) (any, *gorm.DB) {
				m := map[string]any{}
				return m, db.Model(&User{}).Where("id = ?", bob).Find(&m)
			}},

			{"Select", false, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Select("id", "title").Order("id").Find(&ps)
			}},
			{"Omit", false, func(db *gorm.DB) (any, *gorm.DB) { var ps []Post; return &ps, db.Omit("body").Order("id").Find(&ps) }},
			{"Joins", false, func(db *gorm.DB) (any, *gorm.DB) { var ps []Post; return &ps, db.Joins("Author").Order("id").Find(&ps) }},
			{"smaller struct", false, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []smallPost
				return &ps, db.Model(&Post{}).Order("id").Find(&ps)
			}},
			{"named argument", false, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Where("author_id = @a", sql.Named("a", bob)).Order("id").Find(&ps)
			}},
			{"named type", false, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Where("author_id = ?", authorID(bob)).Order("id").Find(&ps)
			}},
			{"Valuer", false, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Where("title = ?", sql.NullString{String: "Two", Valid: true}).Find(&ps)
			}},
			{"subquery", false, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				sub := db.Session(&gorm.Session{NewDB: true}).Model(&User{}).Select("id").Where("name = ?", "carol")
				return &ps, db.Where("author_id IN (?)", sub).Find(&ps)
			}},
			{"table expression", false, func(db *gorm.DB) (any, *gorm.DB) {
				var ms []map[string]any
				return &ms, db.Table(e.table(&User{})+" u").Where("u.id = ?", alice).Find(&ms)
			}},
			{"locking", false, func(db *gorm.DB) (any, *gorm.DB) {
				var ps []Post
				return &ps, db.Clauses(clause.Locking{Strength: "UPDATE"}).Where("id = ?", 2).Find(&ps)
			}},
		}
		seen := map[string]string{} // clause key → case
		for _, c := range cases {
			want := run(e.raw, c.q)
			for _, pass := range []string{"fill", "hit"} {
				got := run(cachedDB(e), c.q)
				what := fmt.Sprintf("%s (%s)", c.name, pass)
				sameValue(t, what, got.dest, want.dest)
				if got.rows != want.rows || fmt.Sprint(got.err) != fmt.Sprint(want.err) {
					t.Errorf("%s: RowsAffected %d, error %v; want %d, %v", what, got.rows, got.err, want.rows, want.err)
				}
				if lastClause != c.clause {
					t.Errorf("%s: keyed by its clauses: %v, want %v", what, lastClause, c.clause)
				}
			}
			if lastClause {
				if other, ok := seen[lastKey]; ok {
					t.Errorf("%s and %s share the clause key %s", c.name, other, lastKey)
				}
				seen[lastKey] = c.name
			}
		}
	})
}

// A hit keyed by its clauses builds no SQL: the point of the clause key.
func TestCachedClauseKeyHitBuildsNoSQL(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		defer gormplugin.CheckClauseKeys(gormplugin.CheckClauseKeys(false))
		var built []bool
		noErr(t, "register", e.db.Callback().Query().After("gorm:query").Register("test:sql_built", func(db *gorm.DB) {
			built = append(built, db.Statement.SQL.Len() > 0)
		}))
		hits := e.m.Stats().Hits
		for range 2 {
			var p Post
			noErr(t, "First", cachedDB(e).First(&p, 7).Error)
			if p.ID != 7 || p.Title != "Seven" {
				t.Fatalf("First: %+v", p)
			}
		}
		if e.m.Stats().Hits != hits+1 {
			t.Fatalf("hits: %d, want 1", e.m.Stats().Hits-hits)
		}
		if len(built) != 2 || !built[0] || built[1] {
			t.Errorf("SQL built on the fill, on the hit: %v, want [true false]", built)
		}
	})
}

// A clause builder the plugin does not know (here one for WHERE) keeps
// the SQL key: it could write anything.
func TestCachedClauseBuilderKeepsSQLKey(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		var clauseKeyed []bool
		noErr(t, "register", e.db.Callback().Query().Before("gorm:query").Register("test:clause_key", func(db *gorm.DB) {
			_, ok := gormplugin.ClauseKey(db)
			clauseKeyed = append(clauseKeyed, ok)
		}))
		var p Post
		noErr(t, "First", cachedDB(e).First(&p, 7).Error)
		db := e.db.Session(&gorm.Session{})
		prev, had := db.ClauseBuilders["WHERE"]
		db.ClauseBuilders["WHERE"] = func(c clause.Clause, b clause.Builder) { c.Build(b) }
		defer func() {
			if had {
				db.ClauseBuilders["WHERE"] = prev
			} else {
				delete(db.ClauseBuilders, "WHERE")
			}
		}()
		noErr(t, "First", db.Scopes(gormplugin.Cached(time.Minute)).First(&p, 7).Error)
		if len(clauseKeyed) != 2 || !clauseKeyed[0] || clauseKeyed[1] {
			t.Errorf("keyed by clauses without, with a WHERE builder: %v, want [true false]", clauseKeyed)
		}
	})
}
