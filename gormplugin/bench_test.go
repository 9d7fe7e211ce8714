package gormplugin_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
	"github.com/depcache/go-depcache/internal/redistest"
)

type benchAuthor struct {
	ID   int
	Name string
}

type benchArticle struct {
	ID       int
	AuthorID int
	Author   benchAuthor
	Title    string
	Body     string
	Remarks  []benchRemark `gorm:"foreignKey:ArticleID"`
}

type benchRemark struct {
	ID        int
	ArticleID int
	Body      string
}

// benchRedis returns the Redis the benchmarks cache in: the real one when
// REDIS_URL is set, else miniredis.
func benchRedis(b *testing.B) (string, backends.Backend) {
	if url := os.Getenv("REDIS_URL"); url != "" {
		opt, err := redis.ParseURL(url)
		if err != nil {
			b.Fatal(err)
		}
		opt.ContextTimeoutEnabled = true
		c := redis.NewClient(opt)
		b.Cleanup(func() { c.Close() })
		return "redis", redisbackend.New(c)
	}
	mr := miniredis.RunT(b)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	b.Cleanup(func() { c.Close() })
	return "miniredis", redisbackend.New(c)
}

// benchSetup opens a seeded SQLite database (10 authors, 200 articles with
// two remarks each) with the plugin installed, on a manager of the
// benchmark's own in the Redis of benchRedis (removed when it ends).
func benchSetup(b *testing.B) (*gorm.DB, *depcache.Manager, string) {
	db, err := gorm.Open(sqlite.Open(filepath.Join(b.TempDir(), "bench.db")+"?_txlock=immediate"), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		b.Fatal(err)
	}
	sqlDB, _ := db.DB()
	b.Cleanup(func() { sqlDB.Close() })
	store, backend := benchRedis(b)
	prefix := fmt.Sprintf("bench:%d", time.Now().UnixNano())
	if url := os.Getenv("REDIS_URL"); url != "" {
		redistest.RemoveNamespaceAtEnd(b, url, prefix)
	}
	m := depcache.New(backend, depcache.WithPrefix(prefix))
	b.Cleanup(func() { m.Close() })
	if err := db.Use(gormplugin.New(m)); err != nil {
		b.Fatal(err)
	}
	db.AutoMigrate(&benchAuthor{}, &benchArticle{}, &benchRemark{})
	for a := 1; a <= 10; a++ {
		db.Create(&benchAuthor{ID: a, Name: fmt.Sprint("author ", a)})
	}
	for i := 1; i <= 200; i++ {
		db.Create(&benchArticle{ID: i, AuthorID: i%10 + 1, Title: fmt.Sprint("title ", i), Body: "body of the article"})
		db.Create(&[]benchRemark{{ArticleID: i, Body: "first"}, {ArticleID: i, Body: "second"}})
	}
	return db, m, store
}

// BenchmarkPlugin compares, on SQLite, a memoized First by primary key and a
// memoized Find with two Preloads — hit and miss — against the same query
// uncached, in one run.
func BenchmarkPlugin(b *testing.B) {
	ctx := context.Background()
	db, m, store := benchSetup(b)

	first := func(ctx context.Context, id int) (benchArticle, error) {
		var a benchArticle
		err := db.WithContext(ctx).First(&a, id).Error
		return a, err
	}
	page := func(ctx context.Context, author int) ([]benchArticle, error) {
		var as []benchArticle
		err := db.WithContext(ctx).Preload("Author").Preload("Remarks").
			Where("author_id = ?", author).Order("id").Limit(10).Find(&as).Error
		return as, err
	}
	cachedFirst := depcache.Memoize(first, depcache.Using(m), depcache.KeyName("first"))
	cachedPage := depcache.Memoize(page, depcache.Using(m), depcache.KeyName("page"))

	b.Run("First/uncached/sqlite", func(b *testing.B) {
		for b.Loop() {
			first(ctx, 7)
		}
	})
	b.Run("First/hit/"+store, func(b *testing.B) {
		cachedFirst(ctx, 7)
		for b.Loop() {
			cachedFirst(ctx, 7)
		}
	})
	b.Run("First/miss/"+store, func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			m.InvalidateDependency(ctx, gormplugin.RowTag("bench_articles", 7))
			b.StartTimer()
			cachedFirst(ctx, 7)
		}
	})
	b.Run("FindPreload/uncached/sqlite", func(b *testing.B) {
		for b.Loop() {
			page(ctx, 3)
		}
	})
	b.Run("FindPreload/hit/"+store, func(b *testing.B) {
		cachedPage(ctx, 3)
		for b.Loop() {
			cachedPage(ctx, 3)
		}
	})
	b.Run("FindPreload/miss/"+store, func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			m.InvalidateDependency(ctx, gormplugin.ListTag("bench_articles"))
			b.StartTimer()
			cachedPage(ctx, 3)
		}
	})
	if s := m.Stats(); s.Errors > 0 {
		b.Fatalf("cache errors during the benchmark: %+v", s)
	}
}
