package gormplugin_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

type tenantItem struct {
	ID   uint
	Name string
}

// openTenant opens dialector with the plugin p, migrates tenantItem and
// stores row 1 named name.
func openTenant(t *testing.T, d gorm.Dialector, p *gormplugin.Plugin, name string) *gorm.DB {
	t.Helper()
	db, err := gorm.Open(d, &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s, err := db.DB(); err == nil {
			s.Close()
		}
	})
	noErr(t, "Use", db.Use(p))
	noErr(t, "migrate", db.AutoMigrate(&tenantItem{}))
	noErr(t, "seed", db.Create(&tenantItem{ID: 1, Name: name}).Error)
	return db
}

func cachedName(t *testing.T, db *gorm.DB) string {
	t.Helper()
	var it tenantItem
	noErr(t, "cached First", db.Scopes(gormplugin.Cached(time.Minute)).First(&it, 1).Error)
	return it.Name
}

// checkTenants reads row 1 of each database twice (a miss, then a hit)
// and wants each database's own row.
func checkTenants(t *testing.T, m *depcache.Manager, dbs map[string]*gorm.DB) {
	t.Helper()
	for round := range 2 {
		for want, db := range dbs {
			if got := cachedName(t, db); got != want {
				t.Errorf("round %d: the database holding %q read %q: another database's entry", round, want, got)
			}
		}
	}
	if m.Stats().Hits == 0 {
		t.Error("nothing was served from the cache")
	}
}

// Two databases with the same tables whose plugins share a manager (a
// tenant each) keep their Cached() entries apart: keys name the database.
// Before, tenant B was served tenant A's row (found by a new-user check).
func TestCachedEntriesOfTwoDatabasesStayApart(t *testing.T) {
	dir := t.TempDir()
	file := func(name string) gorm.Dialector { return sqlite.Open(filepath.Join(dir, name)) }
	t.Run("a plugin each", func(t *testing.T) {
		m := depcache.New(memory.New(), depcache.WithPrefix("tenants-a"))
		defer m.Close()
		checkTenants(t, m, map[string]*gorm.DB{
			"A": openTenant(t, file("a1.db"), gormplugin.New(m), "A"),
			"B": openTenant(t, file("b1.db"), gormplugin.New(m), "B"),
		})
	})
	t.Run("one plugin on both", func(t *testing.T) {
		m := depcache.New(memory.New(), depcache.WithPrefix("tenants-b"))
		defer m.Close()
		p := gormplugin.New(m)
		checkTenants(t, m, map[string]*gorm.DB{
			"A": openTenant(t, file("a2.db"), p, "A"),
			"B": openTenant(t, file("b2.db"), p, "B"),
		})
	})
	t.Run("in memory", func(t *testing.T) {
		m := depcache.New(memory.New(), depcache.WithPrefix("tenants-c"))
		defer m.Close()
		checkTenants(t, m, map[string]*gorm.DB{
			"A": openTenant(t, sqlite.Open("file:tenant_a?mode=memory&cache=shared"), gormplugin.New(m), "A"),
			"B": openTenant(t, sqlite.Open("file:tenant_b?mode=memory&cache=shared"), gormplugin.New(m), "B"),
		})
	})
	if dsn := os.Getenv("DEPCACHE_POSTGRES_DSN"); dsn != "" {
		t.Run("postgres schemas", func(t *testing.T) {
			admin, err := gorm.Open(postgres.Open(dsn), &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { // last: after the schemas are dropped
				if s, err := admin.DB(); err == nil {
					s.Close()
				}
			})
			suffix := randomHex(4)
			var dbs = map[string]*gorm.DB{}
			m := depcache.New(memory.New(), depcache.WithPrefix("tenants-pg"))
			defer m.Close()
			for _, tenant := range []string{"A", "B"} {
				schema := fmt.Sprintf("tenant_%s_%s", tenant, suffix)
				noErr(t, "create schema", admin.Exec("CREATE SCHEMA "+schema).Error)
				t.Cleanup(func() { admin.Exec("DROP SCHEMA " + schema + " CASCADE") })
				dbs[tenant] = openTenant(t, postgres.Open(dsn+" search_path="+schema), gormplugin.New(m), tenant)
			}
			checkTenants(t, m, dbs)
		})
	}
}

// WithDatabaseName names the database instead of asking it: plugins
// given one name share entries (the name is the database's identity).
func TestWithDatabaseNameNamesTheDatabase(t *testing.T) {
	dir := t.TempDir()
	m := depcache.New(memory.New(), depcache.WithPrefix("dbname"))
	defer m.Close()
	a := openTenant(t, sqlite.Open(filepath.Join(dir, "a.db")), gormplugin.New(m, gormplugin.WithDatabaseName("shop")), "A")
	b := openTenant(t, sqlite.Open(filepath.Join(dir, "b.db")), gormplugin.New(m, gormplugin.WithDatabaseName("shop")), "B")
	if got := cachedName(t, a); got != "A" {
		t.Fatalf("A read %q", got)
	}
	if got := cachedName(t, b); got != "A" {
		t.Fatalf("B, named as A, read %q: want A's entry (one name, one database)", got)
	}
}
