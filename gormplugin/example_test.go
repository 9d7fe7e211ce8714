package gormplugin_test

import (
	"context"
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
