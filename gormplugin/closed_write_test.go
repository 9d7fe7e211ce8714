package gormplugin_test

import (
	"errors"
	"testing"
	"time"

	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

// A write through a plugin whose manager is closed (a shutdown that closed
// the manager before the *gorm.DB's last writer) is refused before it runs,
// with an error wrapping depcache.ErrClosed: it would commit with no
// invalidation, and every process would serve what it replaced until the
// TTL. Before, it committed, returned nil and logged the invalidation lost
// (found by a new-user check).
func TestWriteAfterTheManagerClosedIsRefused(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		var u User
		noErr(t, "cached read", e.db.Scopes(gormplugin.Cached(time.Minute)).First(&u, alice).Error)
		e.m.Close()
		writes := map[string]error{
			"update": e.db.Model(&User{ID: alice}).Update("name", "changed").Error,
			"create": e.db.Create(&User{Name: "new"}).Error,
			"delete": e.db.Delete(&User{ID: carol}).Error,
			"exec":   e.db.Exec("UPDATE "+e.table(&User{})+" SET name = ? WHERE id = ?", "changed", bob).Error,
		}
		for name, err := range writes {
			if !errors.Is(err, depcache.ErrClosed) {
				t.Errorf("%s after the manager closed: %v, want an error wrapping depcache.ErrClosed", name, err)
			}
		}
		var names []string
		noErr(t, "read the truth", e.raw.Model(&User{}).Order("id").Pluck("name", &names).Error)
		if len(names) != 3 || names[0] != "alice" || names[1] != "bob" || names[2] != "carol" {
			t.Errorf("the database after refused writes: %q, want it unchanged", names)
		}
	})
}
