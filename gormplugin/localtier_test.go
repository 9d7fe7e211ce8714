package gormplugin_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

// Cached queries served by the manager's in-process tier (whose entries
// the plugin decodes once, entrymemo.go) return what the database holds,
// hit after hit and after the plugin's own writes.
func TestCachedWithLocalCache(t *testing.T) {
	ctx := context.Background()
	db, err := gorm.Open(sqlite.Open(filepath.Join(t.TempDir(), "tier.db")), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	backend := memory.New()
	m := depcache.New(backend, depcache.WithName(t.Name()), depcache.WithLocalCache(100))
	plugin := gormplugin.New(m)
	t.Cleanup(func() {
		plugin.Close()
		m.Close()
		backend.Close()
	})
	noErr(t, "Use", db.Use(plugin))
	noErr(t, "migrate", db.AutoMigrate(&benchArticle{}))
	for i := 1; i <= 5; i++ {
		noErr(t, "create", db.Create(&benchArticle{ID: i, AuthorID: i % 2, Title: fmt.Sprint("title ", i)}).Error)
	}
	cached := db.WithContext(ctx).Scopes(gormplugin.Cached(time.Minute)).Session(&gorm.Session{})
	first := func(id int) benchArticle {
		t.Helper()
		var a benchArticle
		noErr(t, fmt.Sprint("First ", id), cached.First(&a, id).Error)
		return a
	}
	list := func(author int) []string {
		t.Helper()
		var as []benchArticle
		noErr(t, "Find", cached.Where("author_id = ?", author).Order("id").Find(&as).Error)
		titles := make([]string, len(as))
		for i, a := range as {
			titles[i] = a.Title
		}
		return titles
	}
	local := m.Stats().LocalHits
	for round := range 3 {
		for id := 1; id <= 5; id++ {
			if a := first(id); a.ID != id || a.Title != fmt.Sprint("title ", id) {
				t.Fatalf("round %d: First(%d) = %+v", round, id, a)
			}
		}
		if got := fmt.Sprint(list(1)); got != "[title 1 title 3 title 5]" {
			t.Fatalf("round %d: list = %s", round, got)
		}
	}
	if m.Stats().LocalHits-local < 10 {
		t.Fatalf("%d hits from the tier, want at least 10", m.Stats().LocalHits-local)
	}
	// A write through the plugin: the next reads see it, then hit again.
	noErr(t, "update", db.Model(&benchArticle{ID: 3}).Update("title", "new three").Error)
	for range 3 {
		if a := first(3); a.Title != "new three" {
			t.Fatalf("First(3) after the update = %+v", a)
		}
		if a := first(2); a.Title != "title 2" {
			t.Fatalf("First(2) after the update = %+v", a)
		}
		if got := fmt.Sprint(list(1)); got != "[title 1 new three title 5]" {
			t.Fatalf("list after the update = %s", got)
		}
	}
}
