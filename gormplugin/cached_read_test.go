package gormplugin_test

import (
	"fmt"
	"reflect"
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
// types. The second must get its own type, never the first one's shape.
func TestCachedInterfaceHeldDestinations(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		var one any = &User{}
		noErr(t, "Find into interface holding *User", cachedDB(e).Where("id = ?", bob).Find(&one).Error)
		u, ok := one.(*User)
		if !ok || u.Name != "bob" {
			t.Fatalf("interface holding *User: %s", typed(one))
		}

		var many any = []User{}
		r := cachedDB(e).Where("id = ?", bob).Find(&many)
		noErr(t, "Find into interface holding []User", r.Error)
		us, ok := many.([]User)
		if !ok {
			t.Fatalf("interface holding []User now holds %s", typed(many))
		}
		var want any = []User{}
		noErr(t, "truth", e.raw.Where("id = ?", bob).Find(&want).Error)
		sameValue(t, "[]User", us, want)
		if r.RowsAffected != 1 {
			t.Errorf("RowsAffected = %d, want 1", r.RowsAffected)
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
