package gormplugin_test

import (
	"context"
	"testing"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
)

// The plugin tags a read as pairs of its own manager, whatever the
// manager of the computation it runs in: a function cached in another
// manager on the same backend is filled, and the plugin's invalidations
// reach it; on another backend it is not filled.
func TestReadInAComputationOfAnotherManager(t *testing.T) {
	ctx := context.Background()
	db, m := smokeDB(t)
	pages := depcache.New(m.Backend(), depcache.WithName("pages"), depcache.WithLogger(testLogger()))
	elsewhere := memory.New()
	remote := depcache.New(elsewhere, depcache.WithName("remote"), depcache.WithLogger(testLogger()))
	t.Cleanup(func() { pages.Close(); remote.Close(); elsewhere.Close() })

	var calls int
	read := func(ctx context.Context, id int) (string, error) {
		calls++
		var u smokeUser
		err := db.WithContext(ctx).First(&u, id).Error
		return u.Name, err
	}
	page := depcache.Memoize(read, depcache.Using(pages), depcache.KeyName("page"))
	remotePage := depcache.Memoize(read, depcache.Using(remote), depcache.KeyName("page"))

	page(ctx, 1)
	if name, _ := page(ctx, 1); name != "a" || calls != 1 {
		t.Fatalf("page(1) = %q after %d calls; want a cached \"a\"", name, calls)
	}
	// The plugin's manager's own tag of that name is not pages' tag.
	if n, _ := pages.InvalidateDependency(ctx, "smoke_users::1"); n != 0 {
		t.Fatalf("pages' own tag removed %d entries", n)
	}
	db.Model(&smokeUser{ID: 1}).Update("name", "A")
	if name, _ := page(ctx, 1); name != "A" || calls != 2 {
		t.Fatalf("after the update page(1) = %q after %d calls; want \"A\" recomputed", name, calls)
	}

	remotePage(ctx, 1)
	remotePage(ctx, 1)
	if calls != 4 || remote.Stats().Sets != 0 {
		t.Fatalf("on another backend: %d calls, %d sets; want 4 and none", calls, remote.Stats().Sets)
	}
}
