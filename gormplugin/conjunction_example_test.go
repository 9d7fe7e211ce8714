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

type Memo struct {
	ID       int
	AuthorID int
	Text     string
}

// With conjunction tags, a new memo of author 2 leaves author 1's cached
// list alone; moving a memo from author 1 to author 2 refreshes both.
func ExampleWithConjunctionTags() {
	dir, _ := os.MkdirTemp("", "gormplugin")
	defer os.RemoveAll(dir)
	db, _ := gorm.Open(sqlite.Open(filepath.Join(dir, "memos.db")), &gorm.Config{Logger: logger.Discard})
	sqlDB, _ := db.DB()
	defer sqlDB.Close()
	m := depcache.New(memory.New(), depcache.WithName("memos"))
	defer m.Close()
	db.Use(gormplugin.New(m, gormplugin.WithConjunctionTags(0)))
	db.AutoMigrate(&Memo{})
	db.Create(&[]Memo{{ID: 1, AuthorID: 1, Text: "a"}, {ID: 2, AuthorID: 2, Text: "b"}})

	ctx := context.Background()
	notesOf := depcache.Memoize(func(ctx context.Context, author int) ([]Memo, error) {
		fmt.Println("query author", author)
		var ns []Memo
		err := db.WithContext(ctx).Where("author_id = ?", author).Find(&ns).Error // tagged memos:author_id=<author>
		return ns, err
	}, depcache.Using(m), depcache.KeyName("notesOf"))

	notesOf(ctx, 1)
	notesOf(ctx, 2)
	db.Create(&Memo{ID: 3, AuthorID: 2, Text: "c"}) // invalidates memos:author_id=2, not author 1's list
	notesOf(ctx, 1)
	notesOf(ctx, 2)
	db.Model(&Memo{ID: 1}).Update("author_id", 2) // memos::1 (author 1's list holds it) and memos:author_id=2
	a, _ := notesOf(ctx, 1)
	b, _ := notesOf(ctx, 2)
	fmt.Println(len(a), len(b))
	// Output:
	// query author 1
	// query author 2
	// query author 2
	// query author 1
	// query author 2
	// 0 3
}
