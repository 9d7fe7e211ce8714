package pgcdc_test

import (
	"slices"
	"sync"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/schema"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
	"github.com/depcache/go-depcache/gormplugin/pgcdc"
)

type Account struct {
	ID   int64
	Name string
}

type Member struct {
	UserID  int `gorm:"primaryKey;autoIncrement:false"`
	GroupID int `gorm:"primaryKey;autoIncrement:false"`
	Role    string
}

// Ledger has a GORM key the database does not declare (no PRIMARY KEY in
// the table): only its model tells the listener which column keys a row.
type Ledger struct {
	Ref  string `gorm:"primaryKey"`
	Note string
}

func (Ledger) TableName() string { return "nokey_ledger" }

// The listener invalidates, for a write GORM makes, the very tags the
// plugin invalidates for it: same table names (under a naming strategy
// with a prefix), same key formatting, composite keys in the model's order.
func TestSameTagsAsThePlugin(t *testing.T) {
	e := newEnv(t, envConfig{noRun: true})
	naming := schema.NamingStrategy{TablePrefix: "app_"}
	db, err := gorm.Open(postgres.Open(e.dsn), &gorm.Config{Logger: logger.Discard, NamingStrategy: naming})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	if err := db.AutoMigrate(&Account{}, &Member{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Exec(`CREATE TABLE nokey_ledger (ref text, note text)`); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var pluginTags []string
	mp := depcache.New(memory.New(), depcache.WithObserver(func(ev depcache.Event) {
		if ev.Kind == depcache.EventInvalidate {
			mu.Lock()
			pluginTags = append(pluginTags, ev.Deps...)
			mu.Unlock()
		}
	}))
	t.Cleanup(func() { mp.Close() })
	if err := db.Use(gormplugin.New(mp)); err != nil {
		t.Fatal(err)
	}
	l := e.listener(pgcdc.WithModels(db, &Account{}, &Member{}, &Ledger{}))
	e.run(l)

	writes := []struct {
		name  string
		write func(*gorm.DB) error
	}{
		{"create", func(db *gorm.DB) error { return db.Create(&Account{ID: 1, Name: "a"}).Error }},
		{"update", func(db *gorm.DB) error { return db.Model(&Account{ID: 1}).Update("name", "b").Error }},
		{"delete", func(db *gorm.DB) error { return db.Delete(&Account{ID: 1}).Error }},
		{"create composite", func(db *gorm.DB) error { return db.Create(&Member{UserID: 1, GroupID: 2}).Error }},
		{"update composite", func(db *gorm.DB) error {
			return db.Model(&Member{UserID: 1, GroupID: 2}).Update("role", "x").Error
		}},
		{"create in a table without a database key", func(db *gorm.DB) error {
			return db.Create(&Ledger{Ref: "r:1", Note: "n"}).Error
		}},
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			mu.Lock()
			pluginTags = nil
			mu.Unlock()
			before := currentLSN(t, e.db)
			if err := w.write(db); err != nil {
				t.Fatal(err)
			}
			lsn := currentLSN(t, e.db)
			sync_(t, l, lsn)
			mu.Lock()
			want := slices.Clone(pluginTags)
			mu.Unlock()
			slices.Sort(want)
			want = slices.Compact(want)
			if len(want) == 0 {
				t.Fatal("the plugin invalidated nothing")
			}
			if got := e.events.tagsAfter(before, lsn); !slices.Equal(got, want) {
				t.Fatalf("listener invalidated %q; the plugin %q", got, want)
			}
		})
	}
}
