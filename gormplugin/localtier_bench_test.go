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

// BenchmarkLocalCacheFirst measures a Cached() First by primary key served
// from the manager's in-process tier (depcache.WithLocalCache), against the
// same query uncached on SQLite, in one run.
func BenchmarkLocalCacheFirst(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "tier.db") + "?_txlock=immediate"
	plain, err := gorm.Open(sqlite.Open(path), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		b.Fatal(err)
	}
	db, err := gorm.Open(sqlite.Open(path), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range []*gorm.DB{plain, db} {
		sqlDB, _ := d.DB()
		b.Cleanup(func() { sqlDB.Close() })
	}
	backend := memory.New()
	m := depcache.New(backend, depcache.WithName(b.Name()), depcache.WithLocalCache(1000))
	b.Cleanup(func() {
		m.Close()
		backend.Close()
	})
	if err := db.Use(gormplugin.New(m)); err != nil {
		b.Fatal(err)
	}
	plain.AutoMigrate(&benchAuthor{}, &benchArticle{})
	for i := 1; i <= 200; i++ {
		plain.Create(&benchArticle{ID: i, AuthorID: i%10 + 1, Title: fmt.Sprint("title ", i), Body: "body of the article"})
	}
	cached := db.WithContext(ctx).Scopes(gormplugin.Cached(time.Minute)).Session(&gorm.Session{})
	first := func(db *gorm.DB) {
		var a benchArticle
		if err := db.First(&a, 7).Error; err != nil || a.ID != 7 {
			b.Fatalf("First: %+v %v", a, err)
		}
	}
	b.Run("uncached/sqlite", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			first(plain.WithContext(ctx))
		}
	})
	memoFirst := depcache.Memoize(func(ctx context.Context, id int) (benchArticle, error) {
		var a benchArticle
		err := db.WithContext(ctx).First(&a, id).Error
		return a, err
	}, depcache.Using(m), depcache.KeyName("first"))
	b.Run("tier/Memoize", func(b *testing.B) {
		memoFirst(ctx, 7)
		b.ReportAllocs()
		for b.Loop() {
			if a, err := memoFirst(ctx, 7); err != nil || a.ID != 7 {
				b.Fatalf("First: %+v %v", a, err)
			}
		}
	})
	b.Run("tier/Cached", func(b *testing.B) {
		first(cached)
		local := m.Stats().LocalHits
		b.ReportAllocs()
		for b.Loop() {
			first(cached)
		}
		if m.Stats().LocalHits == local {
			b.Fatal("no hit came from the tier")
		}
	})
}
