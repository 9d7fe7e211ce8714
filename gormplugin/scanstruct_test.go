package gormplugin_test

import (
	"context"
	"database/sql"
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

// richRow has the field kinds a struct hit fills (scanstruct.go):
// nullable pointers, Scanners, a serializer, times, a field that is no
// column (its caller's value stays).
type richRow struct {
	ID    uint
	Name  *string
	Score sql.NullInt64
	Tags  []string `gorm:"serializer:json"`
	When  time.Time
	Ratio float64
	Flag  bool
	Count int
	Note  string `gorm:"-"`
}

// A hit into a model struct leaves it, RowsAffected and the error as the
// query does: values, NULLs, a serializer, a field that is no column, and
// a value the field cannot take.
func TestCachedStructHit(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "rich.db")
	open := func() *gorm.DB {
		db, err := gorm.Open(sqlite.Open(path), &gorm.Config{Logger: logger.Discard})
		if err != nil {
			t.Fatal(err)
		}
		sqlDB, _ := db.DB()
		t.Cleanup(func() { sqlDB.Close() })
		return db
	}
	raw, db := open(), open()
	backend := memory.New()
	m := depcache.New(backend, depcache.WithName(t.Name()))
	plugin := gormplugin.New(m)
	t.Cleanup(func() {
		plugin.Close()
		m.Close()
		backend.Close()
	})
	noErr(t, "Use", db.Use(plugin))
	noErr(t, "migrate", raw.AutoMigrate(&richRow{}))
	name := "ann"
	noErr(t, "create 1", raw.Create(&richRow{ID: 1, Name: &name, Score: sql.NullInt64{Int64: 9, Valid: true}, Tags: []string{"a", "b"},
		When: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC), Ratio: 0.5, Flag: true, Count: 3}).Error)
	noErr(t, "create 2", raw.Exec("INSERT INTO rich_rows (id, name, score, tags, `when`, ratio, flag, count) VALUES (2, NULL, NULL, NULL, ?, 0, 0, 0)", time.Unix(0, 0).UTC()).Error)
	noErr(t, "create 3", raw.Exec("INSERT INTO rich_rows (id, name, score, tags, `when`, ratio, flag, count) VALUES (3, 'x', 1, '[]', ?, 1, 1, 'not a number')", time.Unix(0, 0).UTC()).Error)

	cached := db.WithContext(ctx).Scopes(gormplugin.Cached(time.Minute)).Session(&gorm.Session{})
	for _, id := range []int{1, 2, 3, 4} {
		read := func(db *gorm.DB) (richRow, int64, string) {
			r := richRow{Note: "the caller's", Count: 77}
			res := db.First(&r, id)
			return r, res.RowsAffected, fmt.Sprint(res.Error)
		}
		want, wantRows, wantErr := read(raw)
		for _, pass := range []string{"fill", "hit"} {
			got, rows, err := read(cached)
			what := fmt.Sprintf("First %d (%s)", id, pass)
			sameValue(t, what, got, want)
			if rows != wantRows || err != wantErr {
				t.Errorf("%s: RowsAffected %d, error %s; want %d, %s", what, rows, err, wantRows, wantErr)
			}
		}
	}
	if m.Stats().Hits == 0 {
		t.Fatal("no hit")
	}
}
