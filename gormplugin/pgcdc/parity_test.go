package pgcdc_test

import (
	"fmt"
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

// Models whose keys are of the types GORM maps to numeric, floating-point,
// smallint and bytea columns.
type (
	DecimalKey struct { // GORM's column for float64: decimal (numeric)
		ID float64 `gorm:"primaryKey;autoIncrement:false"`
		N  int
	}
	ScaledKey struct { // numeric(10,2): PostgreSQL prints 100 as 100.00
		ID float64 `gorm:"primaryKey;autoIncrement:false;type:numeric(10,2)"`
		N  int
	}
	RealKey struct {
		ID float32 `gorm:"primaryKey;autoIncrement:false;type:real"`
		N  int
	}
	DoubleKey struct {
		ID float64 `gorm:"primaryKey;autoIncrement:false;type:double precision"`
		N  int
	}
	SmallKey struct {
		ID int16 `gorm:"primaryKey;autoIncrement:false"`
		N  int
	}
	BytesKey struct {
		ID []byte `gorm:"primaryKey"`
		N  int
	}
)

// Without WithModels the listener keys rows by the column types, and must
// format each key as the plugin formats the Go type GORM maps that column
// type to: a float64 key of 1000000 is "1e+06" in the plugin's tags, not
// PostgreSQL's "1000000"; numeric(10,2) prints 100 as "100.00", the plugin
// formats the float64 100 as "100". With WithModels the model's fields
// convert the values; the tags must match as well.
func TestSameTagsWithoutModels(t *testing.T) {
	t.Run("column types", func(t *testing.T) { testNumericKeys(t, false) })
	t.Run("models", func(t *testing.T) { testNumericKeys(t, true) })
}

func testNumericKeys(t *testing.T, withModels bool) {
	e := newEnv(t, envConfig{noRun: true})
	db, err := gorm.Open(postgres.Open(e.dsn), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	if err := db.AutoMigrate(&DecimalKey{}, &ScaledKey{}, &RealKey{}, &DoubleKey{}, &SmallKey{}, &BytesKey{}); err != nil {
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
	var opts []pgcdc.Option
	if withModels {
		opts = append(opts, pgcdc.WithModels(db, &DecimalKey{}, &ScaledKey{}, &RealKey{}, &DoubleKey{}, &SmallKey{}, &BytesKey{}))
	}
	l := e.listener(opts...)
	e.run(l)

	type write struct {
		name  string
		write func(*gorm.DB) error
	}
	var writes []write
	for _, k := range []float64{1.5, 1e6, 0.1, 100, -2.25, 123456789012} {
		writes = append(writes,
			write{fmt.Sprintf("decimal %v", k), func(db *gorm.DB) error { return db.Create(&DecimalKey{ID: k}).Error }},
			write{fmt.Sprintf("double %v", k), func(db *gorm.DB) error { return db.Create(&DoubleKey{ID: k}).Error }},
			write{fmt.Sprintf("real %v", k), func(db *gorm.DB) error { return db.Create(&RealKey{ID: float32(k)}).Error }},
		)
	}
	for _, k := range []float64{100, 1.5, 0.1, 1e6} {
		writes = append(writes, write{fmt.Sprintf("numeric(10,2) %v", k), func(db *gorm.DB) error { return db.Create(&ScaledKey{ID: k}).Error }})
	}
	writes = append(writes,
		write{"update decimal", func(db *gorm.DB) error { return db.Model(&DecimalKey{ID: 1e6}).Update("n", 2).Error }},
		write{"delete numeric(10,2)", func(db *gorm.DB) error { return db.Delete(&ScaledKey{ID: 100}).Error }},
		write{"smallint", func(db *gorm.DB) error { return db.Create(&SmallKey{ID: -7}).Error }},
		write{"bytea", func(db *gorm.DB) error { return db.Create(&BytesKey{ID: []byte("a:b\x00\xff")}).Error }},
		write{"update bytea", func(db *gorm.DB) error {
			return db.Model(&BytesKey{ID: []byte("a:b\x00\xff")}).Update("n", 3).Error
		}},
	)
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
