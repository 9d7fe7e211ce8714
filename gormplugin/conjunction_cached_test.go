package gormplugin_test

import (
	"context"
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

// A Cached query gets conjunction tags as a memoized one does: a new row of
// author 2 leaves author 1's Cached list a hit, and moving a row from
// author 1 to 2 refreshes both. Since Cached became a clause, the clause
// was not among those deriveConjunction understands, and every Cached read
// kept the list tag: every write killed every Cached list of its table.
func TestConjunctionTagsOnCachedQueries(t *testing.T) {
	db, err := gorm.Open(sqlite.Open(filepath.Join(t.TempDir(), "memos.db")), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
	})
	m := depcache.New(memory.New(), depcache.WithLogger(testLogger()))
	t.Cleanup(func() { m.Close() })
	p := gormplugin.New(m, gormplugin.WithConjunctionTags(0), gormplugin.WithLogger(testLogger()))
	t.Cleanup(func() { p.Close() })
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	if err := db.AutoMigrate(&Memo{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Create(&[]Memo{{ID: 1, AuthorID: 1, Text: "a"}, {ID: 2, AuthorID: 2, Text: "b"}}).Error; err != nil {
		t.Fatal(err)
	}
	list := func(author int) (n int, hit bool) {
		t.Helper()
		before := m.Stats().Hits
		var ms []Memo
		if err := db.WithContext(context.Background()).Scopes(gormplugin.Cached(time.Hour)).Where("author_id = ?", author).Find(&ms).Error; err != nil {
			t.Fatal(err)
		}
		return len(ms), m.Stats().Hits > before
	}
	list(1)
	list(2)
	if err := db.Create(&Memo{ID: 3, AuthorID: 2, Text: "c"}).Error; err != nil {
		t.Fatal(err)
	}
	if n, hit := list(1); n != 1 || !hit {
		t.Errorf("author 1's Cached list after a new memo of author 2: %d rows, hit %v; want 1 row, a hit", n, hit)
	}
	if n, hit := list(2); n != 2 || hit {
		t.Errorf("author 2's Cached list after its new memo: %d rows, hit %v; want 2 rows, a miss", n, hit)
	}
	if err := db.Model(&Memo{ID: 1}).Update("author_id", 2).Error; err != nil {
		t.Fatal(err)
	}
	if n, _ := list(1); n != 0 {
		t.Errorf("author 1's Cached list after its memo moved: %d rows, want 0", n)
	}
	if n, _ := list(2); n != 3 {
		t.Errorf("author 2's Cached list after a memo moved in: %d rows, want 3", n)
	}
}
