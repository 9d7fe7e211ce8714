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

// With WithOutbox, each write transaction also records its tags in the
// outbox table, which the plugin creates; once the invalidation has
// returned, the row is deleted. Close the plugin to stop its flusher.
func ExampleWithOutbox() {
	dir, _ := os.MkdirTemp("", "gormplugin")
	defer os.RemoveAll(dir)
	db, _ := gorm.Open(sqlite.Open(filepath.Join(dir, "blog.db")), &gorm.Config{Logger: logger.Discard})
	sqlDB, _ := db.DB()
	defer sqlDB.Close()
	backend := memory.New()
	defer backend.Close()
	m := depcache.New(backend, depcache.WithName("blog"))
	defer m.Close()
	plugin := gormplugin.New(m, gormplugin.WithOutbox())
	if err := db.Use(plugin); err != nil {
		fmt.Println(err)
		return
	}
	db.AutoMigrate(&Article{})

	db.Create(&Article{ID: 1, Title: "Hello"}) // INSERT INTO articles…; INSERT INTO depcache_outbox…; COMMIT

	// An invalidation by hand, durable too.
	_, err := plugin.InvalidateDependency(context.Background(), gormplugin.TableTag("articles"))
	fmt.Println(err)

	plugin.Close() // the flusher deletes the delivered rows and stops
	var rows int64
	db.Table(gormplugin.DefaultOutboxTable).Count(&rows)
	fmt.Println("rows left in the outbox:", rows)
	// Output:
	// <nil>
	// rows left in the outbox: 0
}
