package gormplugin_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

type Article struct {
	ID    int
	Title string
}

func Example() {
	dir, _ := os.MkdirTemp("", "gormplugin")
	defer os.RemoveAll(dir)
	db, _ := gorm.Open(sqlite.Open(filepath.Join(dir, "blog.db")), &gorm.Config{Logger: logger.Discard})
	sqlDB, _ := db.DB()
	defer sqlDB.Close()
	m := depcache.New(memory.New(), depcache.WithName("blog"))
	defer m.Close()
	db.Use(gormplugin.New(m))
	db.AutoMigrate(&Article{})
	db.Create(&Article{ID: 1, Title: "Hello"})

	ctx := context.Background()
	article := depcache.Memoize(func(ctx context.Context, id int) (Article, error) {
		fmt.Println("query", id)
		var a Article
		err := db.WithContext(ctx).First(&a, id).Error // tagged articles::1
		return a, err
	}, depcache.Using(m), depcache.KeyName("article"))

	a, _ := article(ctx, 1)
	a, _ = article(ctx, 1) // cached
	fmt.Println(a.Title)

	db.Model(&Article{ID: 1}).Update("title", "Hello, world") // invalidates articles::1
	a, _ = article(ctx, 1)
	fmt.Println(a.Title)
	// Output:
	// query 1
	// Hello
	// query 1
	// Hello, world
}

// A memoized function queries through gormplugin.DB(ctx, db): called with
// TxContext(tx) inside a transaction, it runs on tx and sees the
// transaction's own writes (and stores nothing); called with any other
// ctx, it runs on db and is cached as usual.
func ExampleDB() {
	dir, _ := os.MkdirTemp("", "gormplugin")
	defer os.RemoveAll(dir)
	db, _ := gorm.Open(sqlite.Open(filepath.Join(dir, "blog.db")), &gorm.Config{Logger: logger.Discard})
	sqlDB, _ := db.DB()
	defer sqlDB.Close()
	m := depcache.New(memory.New(), depcache.WithName("blog"))
	defer m.Close()
	db.Use(gormplugin.New(m))
	db.AutoMigrate(&Article{})
	db.Create(&Article{ID: 1, Title: "Hello"})

	article := depcache.Memoize(func(ctx context.Context, id int) (Article, error) {
		var a Article
		err := gormplugin.DB(ctx, db).First(&a, id).Error
		return a, err
	}, depcache.Using(m), depcache.KeyName("article"))

	ctx := context.Background()
	a, _ := article(ctx, 1) // cached
	fmt.Println("before:", a.Title)

	db.Transaction(func(tx *gorm.DB) error {
		tx.Model(&Article{ID: 1}).Update("title", "Draft")
		a, _ := article(gormplugin.TxContext(tx), 1) // through tx: its own write
		fmt.Println("inside:", a.Title)
		return errors.New("discard the draft") // roll back
	})

	a, _ = article(ctx, 1) // the cached value: the draft never committed
	fmt.Println("after:", a.Title)
	// Output:
	// before: Hello
	// inside: Draft
	// after: Hello
}
