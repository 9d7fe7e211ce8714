package gormplugin_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/depcache/go-depcache/gormplugin"
)

// The tests below hold a Cached() hit to the rule of DESIGN.md: it leaves
// the destination, RowsAffected, Error and the hooks exactly as the
// uncached query would. Each runs the query on e.raw (no plugin) for the
// truth, then twice through Cached(): the fill and the hit.

func cachedDB(e *env) *gorm.DB { return e.db.Scopes(gormplugin.Cached(time.Minute)) }

// sameValue compares with reflect.DeepEqual, so that types count: a map
// value that was a uint must still be one.
func sameValue(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got  %s\n want %s", what, typed(got), typed(want))
	}
}

// typed prints a value with the dynamic types of map values, which %v
// hides.
func typed(v any) string {
	switch x := v.(type) {
	case map[string]any:
		s := "map["
		for _, k := range sortedKeys(x) {
			s += fmt.Sprintf("%s:%T(%v) ", k, x[k], x[k])
		}
		return s + "]"
	case []map[string]any:
		s := "["
		for _, m := range x {
			s += typed(m) + " "
		}
		return s + "]"
	}
	return fmt.Sprintf("%T %+v", v, v)
}

func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	for i := 1; i < len(ks); i++ {
		for j := i; j > 0 && ks[j] < ks[j-1]; j-- {
			ks[j], ks[j-1] = ks[j-1], ks[j]
		}
	}
	return ks
}

// A4: one SQL, two destinations held in interface{} values of different
// types (GORM's TestScan does this with Table and Select). Each must get
// its own type, on a fill and on a hit, never the other one's shape.
func TestCachedInterfaceHeldDestinations(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		query := func(db *gorm.DB) *gorm.DB {
			return db.Table(e.table(&User{})).Select("id, name").Where("id = ?", bob)
		}
		var wantOne any = &User{}
		noErr(t, "truth *User", query(e.raw).Find(&wantOne).Error)
		var wantMany any = []User{}
		noErr(t, "truth []User", query(e.raw).Find(&wantMany).Error)
		for _, pass := range []string{"fill", "hit"} {
			var one any = &User{}
			noErr(t, "Find into interface holding *User", query(cachedDB(e)).Find(&one).Error)
			if _, ok := one.(*User); !ok {
				t.Fatalf("%s: interface holding *User now holds %s", pass, typed(one))
			}
			sameValue(t, pass+" *User", one, wantOne)

			var many any = []User{}
			r := query(cachedDB(e)).Find(&many)
			noErr(t, "Find into interface holding []User", r.Error)
			if _, ok := many.([]User); !ok {
				t.Fatalf("%s: interface holding []User now holds %s", pass, typed(many))
			}
			sameValue(t, pass+" []User", many, wantMany)
			if r.RowsAffected != 1 {
				t.Errorf("%s: RowsAffected = %d, want 1", pass, r.RowsAffected)
			}
		}
	})
}

// A5: a DryRun session builds SQL and runs nothing; it must neither store
// an (empty) result nor read one.
func TestCachedDryRunNotCached(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		sets := e.m.Stats().Sets
		var dry []User
		r := cachedDB(e).Session(&gorm.Session{DryRun: true}).Where("name <> ?", "nobody").Order("id").Find(&dry)
		noErr(t, "DryRun Find", r.Error)
		if len(dry) != 0 || r.Statement.SQL.Len() == 0 {
			t.Fatalf("DryRun: %d rows, SQL %q", len(dry), r.Statement.SQL.String())
		}
		if s := e.m.Stats().Sets; s != sets {
			t.Errorf("DryRun stored %d entries", s-sets)
		}
		var real []User
		r = cachedDB(e).Where("name <> ?", "nobody").Order("id").Find(&real)
		noErr(t, "Find", r.Error)
		if len(real) != 3 || r.RowsAffected != 3 {
			t.Fatalf("Find after a DryRun: %d rows, RowsAffected %d; want 3", len(real), r.RowsAffected)
		}
		// And a DryRun after a fill reads nothing either.
		var dry2 []User
		r = cachedDB(e).Session(&gorm.Session{DryRun: true}).Where("name <> ?", "nobody").Order("id").Find(&dry2)
		noErr(t, "second DryRun", r.Error)
		if len(dry2) != 0 || r.RowsAffected != 0 {
			t.Errorf("DryRun after a fill: %d rows, RowsAffected %d; want none", len(dry2), r.RowsAffected)
		}
	})
}

// A6: Select("id") into a pre-filled struct keeps the caller's other
// fields; the next caller's struct must keep its own, never the first's.
func TestCachedSelectKeepsCallersFields(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		read := func(u User) User {
			t.Helper()
			noErr(t, "Select Find", cachedDB(e).Select("id").Where("id = ?", bob).Find(&u).Error)
			return u
		}
		truth := func(u User) User {
			t.Helper()
			noErr(t, "truth", e.raw.Select("id").Where("id = ?", bob).Find(&u).Error)
			return u
		}
		for _, u := range []User{
			{Name: "first caller's", Email: "first@example.com"},
			{},
			{Name: "third caller's"},
		} {
			sameValue(t, fmt.Sprintf("Select(id) into %+v", u), read(u), truth(u))
		}
	})
}

// A7: a map destination gets the types the driver and the model give it
// (a uint stays a uint), on a hit as on a miss.
func TestCachedMapDestinations(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		queries := map[string]func(db *gorm.DB) (any, *gorm.DB){
			"Model map": func(db *gorm.DB) (any, *gorm.DB) {
				m := map[string]any{}
				r := db.Model(&User{}).Where("id = ?", bob).Find(&m)
				return m, r
			},
			"Model []map": func(db *gorm.DB) (any, *gorm.DB) {
				var ms []map[string]any
				r := db.Model(&Post{}).Where("author_id = ?", alice).Order("id").Find(&ms)
				return ms, r
			},
			"Table []map": func(db *gorm.DB) (any, *gorm.DB) {
				var ms []map[string]any
				r := db.Table(e.table(&Post{})).Where("author_id = ?", bob).Order("id").Find(&ms)
				return ms, r
			},
			"Table map Take": func(db *gorm.DB) (any, *gorm.DB) {
				m := map[string]any{}
				r := db.Table(e.table(&User{})).Where("id = ?", carol).Take(&m)
				return m, r
			},
		}
		for name, q := range queries {
			want, wr := q(e.raw)
			noErr(t, name+" truth", wr.Error)
			for _, pass := range []string{"fill", "hit"} {
				got, r := q(cachedDB(e))
				noErr(t, name+" "+pass, r.Error)
				sameValue(t, name+" "+pass, got, want)
				if r.RowsAffected != wr.RowsAffected {
					t.Errorf("%s %s: RowsAffected %d, want %d", name, pass, r.RowsAffected, wr.RowsAffected)
				}
			}
		}
	})
}

// Account has fields a JSON round trip drops.
type Account struct {
	ID           uint   `gorm:"primaryKey"`
	Name         string `gorm:"size:64"`
	PasswordHash string `gorm:"size:128" json:"-"`
}

// A7: a field tagged json:"-" (a password hash) comes back on a hit.
func TestCachedJSONDashField(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		noErr(t, "migrate", e.raw.AutoMigrate(&Account{}))
		t.Cleanup(func() { e.raw.Migrator().DropTable(&Account{}) })
		noErr(t, "create", e.raw.Create(&Account{ID: 1, Name: "alice", PasswordHash: "$2a$10$hash"}).Error)
		for _, pass := range []string{"fill", "hit"} {
			var a Account
			noErr(t, pass, cachedDB(e).First(&a, 1).Error)
			if a.PasswordHash != "$2a$10$hash" {
				t.Errorf("%s: PasswordHash = %q", pass, a.PasswordHash)
			}
		}
	})
}

// The family: whatever the destination and the query's shape, fill and hit
// give what the query gives without the plugin — destination, RowsAffected
// and error.
func TestCachedHitEqualsUncached(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		posts := e.table(&Post{})
		queries := map[string]func(db *gorm.DB, caller string) (any, *gorm.DB){
			"Omit into pre-filled": func(db *gorm.DB, caller string) (any, *gorm.DB) {
				u := User{Email: caller}
				r := db.Omit("email").Where("id = ?", carol).Find(&u)
				return u, r
			},
			"Select into pre-filled slice": func(db *gorm.DB, caller string) (any, *gorm.DB) {
				us := []User{{Name: caller}, {Name: caller}, {Name: caller}}
				r := db.Select("id").Order("id").Find(&us)
				return us, r
			},
			"Preload tree": func(db *gorm.DB, caller string) (any, *gorm.DB) {
				var ps []Post
				r := db.Preload("Author").Preload("Comments", "body <> ?", caller).Preload("Tags").
					Where("author_id = ?", alice).Order("id").Find(&ps)
				return ps, r
			},
			"Preload not found": func(db *gorm.DB, caller string) (any, *gorm.DB) {
				var p Post
				r := db.Preload("Comments").First(&p, 99)
				return p, r
			},
			"Joins": func(db *gorm.DB, caller string) (any, *gorm.DB) {
				var ps []Post
				r := db.Joins("Author").Where(posts+".author_id = ?", bob).Order(posts + ".id").Find(&ps)
				return ps, r
			},
			"Count": func(db *gorm.DB, caller string) (any, *gorm.DB) {
				var n int64
				r := db.Model(&Post{}).Where("author_id = ?", alice).Count(&n)
				return n, r
			},
			"Pluck": func(db *gorm.DB, caller string) (any, *gorm.DB) {
				var titles []string
				r := db.Model(&Post{}).Where("author_id = ?", bob).Order("id").Pluck("title", &titles)
				return titles, r
			},
			"Last not found": func(db *gorm.DB, caller string) (any, *gorm.DB) {
				var p Post
				r := db.Where("title = ?", "none").Last(&p)
				return p, r
			},
			"Find into array": func(db *gorm.DB, caller string) (any, *gorm.DB) {
				var us [2]User
				r := db.Order("id").Find(&us)
				return us, r
			},
			"Find into []*User": func(db *gorm.DB, caller string) (any, *gorm.DB) {
				var us []*User
				r := db.Order("id").Find(&us)
				return us, r
			},
			"Take into DTO": func(db *gorm.DB, caller string) (any, *gorm.DB) {
				var dto struct {
					Name  string
					Count int
				}
				r := db.Model(&User{}).Select("name, 7 AS count").Where("id = ?", bob).Take(&dto)
				return dto, r
			},
			"Raw": func(db *gorm.DB, caller string) (any, *gorm.DB) {
				var us []User
				r := db.Raw("SELECT * FROM "+e.table(&User{})+" WHERE id > ? ORDER BY id", alice).Find(&us)
				return us, r
			},
		}
		for name, q := range queries {
			for _, pass := range []string{"fill", "hit"} {
				// Each call's pre-filled fields are its own.
				want, wr := q(e.raw, pass+"'s value")
				got, r := q(cachedDB(e), pass+"'s value")
				if fmt.Sprint(r.Error) != fmt.Sprint(wr.Error) {
					t.Errorf("%s %s: error %v, want %v", name, pass, r.Error, wr.Error)
				}
				sameValue(t, name+" "+pass, got, want)
				if r.RowsAffected != wr.RowsAffected {
					t.Errorf("%s %s: RowsAffected %d, want %d", name, pass, r.RowsAffected, wr.RowsAffected)
				}
			}
		}
	})
}

// Loaded counts AfterFind calls.
type Loaded struct {
	ID    uint   `gorm:"primaryKey"`
	Name  string `gorm:"size:64"`
	Calls int    `gorm:"-"`
}

func (l *Loaded) AfterFind(*gorm.DB) error {
	l.Calls++
	return nil
}

// AfterFind runs on a hit as on a miss, once per row.
func TestCachedHitRunsAfterFind(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		noErr(t, "migrate", e.raw.AutoMigrate(&Loaded{}))
		t.Cleanup(func() { e.raw.Migrator().DropTable(&Loaded{}) })
		noErr(t, "create", e.raw.Create(&[]Loaded{{Name: "a"}, {Name: "b"}}).Error)
		for _, pass := range []string{"fill", "hit"} {
			var ls []Loaded
			noErr(t, pass, cachedDB(e).Order("id").Find(&ls).Error)
			if len(ls) != 2 || ls[0].Calls != 1 || ls[1].Calls != 1 {
				t.Errorf("%s: %+v, want two rows with one AfterFind call each", pass, ls)
			}
		}
	})
}

// A statement that already carries an error runs nothing: it neither
// stores nor reads an entry.
func TestCachedStatementWithErrorNotCached(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		boom := errors.New("boom")
		stats := e.m.Stats()
		var us []User
		db := cachedDB(e)
		db.AddError(boom)
		if err := db.Find(&us).Error; !errors.Is(err, boom) || len(us) != 0 {
			t.Fatalf("Find on an errored statement: %d rows, %v", len(us), err)
		}
		if s := e.m.Stats(); s.Sets != stats.Sets || s.Hits != stats.Hits || s.Misses != stats.Misses {
			t.Errorf("the errored statement used the cache: %+v, before %+v", s, stats)
		}
	})
}

// Shelf and Book: a Book's AfterFind runs a query of its own, whose
// variables change on every call.
type Shelf struct {
	ID    uint   `gorm:"primaryKey"`
	Books []Book `gorm:"constraint:OnDelete:CASCADE"`
}

type Book struct {
	ID      uint `gorm:"primaryKey"`
	ShelfID uint
	Later   int64 `gorm:"-"` // books after this one, counted by AfterFind
}

var bookCalls atomic.Int64

func (b *Book) AfterFind(tx *gorm.DB) error {
	k := bookCalls.Add(1)
	return tx.Model(&Book{}).Where("id > ? AND ? > 0", b.ID, k).Count(&b.Later).Error
}

// A preload's hook that queries differently on a hit than on the fill
// cannot be replayed: that query, and the rest, run for real.
func TestCachedPreloadHookDiverges(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		noErr(t, "migrate", e.raw.AutoMigrate(&Shelf{}, &Book{}))
		t.Cleanup(func() { e.raw.Migrator().DropTable(&Book{}, &Shelf{}) })
		noErr(t, "create", e.raw.Create(&Shelf{ID: 1, Books: []Book{{ID: 1}, {ID: 2}}}).Error)
		read := func() Shelf {
			t.Helper()
			var s Shelf
			noErr(t, "First with Preload", cachedDB(e).Preload("Books").First(&s, 1).Error)
			return s
		}
		if s := read(); len(s.Books) != 2 || s.Books[0].Later != 1 || s.Books[1].Later != 0 {
			t.Fatalf("fill: %+v", s)
		}
		// Behind the plugin's back: the hit keeps the cached books, but the
		// hooks' counts are fresh.
		noErr(t, "insert", e.raw.Create(&Shelf{ID: 2, Books: []Book{{ID: 3}}}).Error)
		hits := e.m.Stats().Hits
		s := read()
		if e.m.Stats().Hits == hits {
			t.Fatal("the second read was not a hit")
		}
		if len(s.Books) != 2 || s.Books[0].Later != 2 || s.Books[1].Later != 1 {
			t.Errorf("hit: %+v, want the cached books with fresh counts 2 and 1", s)
		}
	})
}

// Cached() cannot serve Row, Rows or Scan, and says so with an error. Row
// has no error result: it used to return a nil *sql.Row, whose Scan
// panicked in the caller. It now returns a Row whose Scan returns the
// error, and so does a Row whose statement already failed.
func TestCachedRowReturnsErrorNotNil(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		var name string
		row := cachedDB(e).WithContext(e.ctx).Model(&User{}).Select("name").Where("id = ?", bob).Row()
		if row == nil {
			t.Fatal("Cached Row() returned a nil *sql.Row")
		}
		if err := row.Scan(&name); err == nil || !strings.Contains(err.Error(), "Cached() cannot serve") {
			t.Fatalf("Cached Row().Scan: %v, want the plugin's error", err)
		}
		rows, err := cachedDB(e).WithContext(e.ctx).Model(&User{}).Select("name").Rows()
		if rows != nil || err == nil {
			t.Fatalf("Cached Rows(): rows=%v err=%v, want the plugin's error", rows, err)
		}
		if err := cachedDB(e).WithContext(e.ctx).Model(&User{}).Select("name").Where("id = ?", bob).Scan(&name).Error; err == nil {
			t.Fatal("Cached Scan: no error")
		}

		failed := e.db.WithContext(e.ctx).Model(&User{}).Select("name")
		errEarlier := errors.New("an error before Row")
		failed.AddError(errEarlier)
		row = failed.Row()
		if row == nil {
			t.Fatal("Row() after an error returned a nil *sql.Row")
		}
		if err := row.Scan(&name); !errors.Is(err, errEarlier) {
			t.Fatalf("Row().Scan after an error: %v, want %v", err, errEarlier)
		}

		// Uncached, Row still reads.
		noErr(t, "Row", e.db.WithContext(e.ctx).Model(&User{}).Select("name").Where("id = ?", bob).Row().Scan(&name))
		if name != "bob" {
			t.Fatalf("Row read %q, want bob", name)
		}
	})
}
