package gormplugin_test

import (
	"context"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/depcache/go-depcache/gormplugin"
)

// BenchmarkPluginCached measures Cached() queries on SQLite: a hit replays
// the stored rows through GORM's scan, against the same query uncached.
func BenchmarkPluginCached(b *testing.B) {
	ctx := context.Background()
	db, m, store := benchSetup(b)
	cached := db.WithContext(ctx).Scopes(gormplugin.Cached(time.Minute)).Session(&gorm.Session{})

	first := func(db *gorm.DB) {
		var a benchArticle
		if err := db.First(&a, 7).Error; err != nil || a.ID != 7 {
			b.Fatalf("First: %+v %v", a, err)
		}
	}
	page := func(db *gorm.DB) {
		var as []benchArticle
		if err := db.Where("author_id = ?", 3).Order("id").Limit(10).Find(&as).Error; err != nil || len(as) != 10 {
			b.Fatalf("Find: %d rows, %v", len(as), err)
		}
	}
	preload := func(db *gorm.DB) {
		var as []benchArticle
		if err := db.Preload("Author").Preload("Remarks").Where("author_id = ?", 3).Order("id").Limit(10).Find(&as).Error; err != nil || len(as) != 10 {
			b.Fatalf("Find with Preload: %d rows, %v", len(as), err)
		}
	}
	for _, q := range []struct {
		name string
		run  func(*gorm.DB)
	}{{"First", first}, {"Find10", page}, {"FindPreload", preload}} {
		b.Run(q.name+"/uncached/sqlite", func(b *testing.B) {
			for b.Loop() {
				q.run(db)
			}
		})
		b.Run(q.name+"/hit/"+store, func(b *testing.B) {
			q.run(cached)
			misses := m.Stats().Misses
			for b.Loop() {
				q.run(cached)
			}
			if m.Stats().Misses != misses {
				b.Fatal("a hit benchmark missed")
			}
		})
	}
	if s := m.Stats(); s.Errors > 0 {
		b.Fatalf("cache errors during the benchmark: %+v", s)
	}
}
