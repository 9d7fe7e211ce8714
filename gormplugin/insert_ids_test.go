package gormplugin_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/schema"

	"github.com/depcache/go-depcache/gormplugin"
)

// creators returns the databases a create can go through in e: e.db, and
// on MySQL also one whose dialector creates without RETURNING (as on MySQL
// proper, and MariaDB before 10.5), where GORM numbers the rows of a
// multi-row insert from LastInsertId. Both on e's manager and tables.
func creators(t *testing.T, e *env) map[string]*gorm.DB {
	t.Helper()
	dbs := map[string]*gorm.DB{"default": e.db}
	if e.dialect != "mysql" {
		return dbs
	}
	prefix := strings.TrimSuffix(e.table(&User{}), "users")
	db, err := gorm.Open(mysql.New(mysql.Config{DSN: os.Getenv("DEPCACHE_MYSQL_DSN"), DisableWithReturning: true}), &gorm.Config{
		NamingStrategy: schema.NamingStrategy{TablePrefix: prefix},
		Logger:         logger.Default.LogMode(logger.Silent),
	})
	if err != nil {
		t.Fatalf("open mysql without RETURNING: %v", err)
	}
	plugin := gormplugin.New(e.m, gormplugin.WithLogger(testLogger()))
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
		plugin.Close()
	})
	if err := db.Use(plugin); err != nil {
		t.Fatal(err)
	}
	dbs["without RETURNING"] = db
	return dbs
}

// notFoundAhead caches "not found" for the n user ids after the highest
// one, as readers of rows about to be created would, and returns the
// highest id.
func notFoundAhead(t *testing.T, e *env, n int) uint {
	t.Helper()
	var top uint
	noErr(t, "highest id", e.raw.Model(&User{}).Select("COALESCE(MAX(id), 0)").Scan(&top).Error)
	for id := top + 1; id <= top+uint(n); id++ {
		var u User
		if err := e.db.Scopes(gormplugin.Cached(time.Minute)).First(&u, id).Error; !errors.Is(err, gorm.ErrRecordNotFound) {
			t.Fatalf("First(&u, %d) before the insert = %v, want ErrRecordNotFound", id, err)
		}
	}
	return top
}

// everyRowFound checks that a cached First finds each row the database
// holds above top, by the id the database gave it.
func everyRowFound(t *testing.T, e *env, top uint, want int) {
	t.Helper()
	var rows []User
	noErr(t, "rows created", e.raw.Where("id > ?", top).Order("id").Find(&rows).Error)
	if len(rows) != want {
		t.Fatalf("the database holds %d rows above %d, want %d", len(rows), top, want)
	}
	for _, r := range rows {
		var u User
		if err := e.db.Scopes(gormplugin.Cached(time.Minute)).First(&u, r.ID).Error; err != nil || u.Name != r.Name {
			t.Errorf("cached First(&u, %d) after the insert = %+v, %v; the database holds %q (a stale \"not found\")", r.ID, u, err, r.Name)
		}
	}
}

// A multi-row insert mixing rows with keys of their own and rows without:
// MySQL continues its counter past an explicit key, where GORM, without
// RETURNING, numbers the rows from LastInsertId one by one. The row tags
// of GORM's numbers would miss the rows created, whose cached "not found"
// would then outlive them.
func TestMultiRowInsertWithExplicitKeysEndsNotFound(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		for name, db := range creators(t, e) {
			t.Run(name, func(t *testing.T) {
				top := notFoundAhead(t, e, 8)
				users := []User{{Name: "auto1"}, {ID: top + 4, Name: "explicit"}, {Name: "auto2"}}
				noErr(t, "create", db.Create(&users).Error)
				everyRowFound(t, e, top, len(users))
			})
		}
	})
}

// A MySQL server whose auto_increment_increment is not 1 (Galera sets it
// to the cluster's size) numbers the rows of a multi-row insert in steps
// GORM does not know; the plugin asks the server in the insert's session.
func TestMultiRowInsertWithAServerIncrementEndsNotFound(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		if e.dialect != "mysql" {
			t.Skip("auto_increment_increment is MySQL's")
		}
		for name, db := range creators(t, e) {
			t.Run(name, func(t *testing.T) {
				top := notFoundAhead(t, e, 8)
				users := []User{{Name: "a"}, {Name: "b"}, {Name: "c"}}
				err := db.Transaction(func(tx *gorm.DB) error {
					// On the transaction's own connection, past the plugin:
					// a SET through GORM would be a raw write.
					pool := tx.Statement.ConnPool
					if _, err := pool.ExecContext(e.ctx, "SET SESSION auto_increment_increment = 2"); err != nil {
						return err
					}
					if err := tx.Create(&users).Error; err != nil {
						return err
					}
					_, err := pool.ExecContext(e.ctx, "SET SESSION auto_increment_increment = 1")
					return err
				})
				noErr(t, "create with auto_increment_increment = 2", err)
				everyRowFound(t, e, top, len(users))
			})
		}
	})
}

// The check costs no invalidation where GORM's numbers are the database's:
// an all-generated multi-row insert at the server's default step leaves
// another row's cached entry in place.
func TestMultiRowInsertAtTheDefaultStepKeepsOtherRows(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		for name, db := range creators(t, e) {
			t.Run(name, func(t *testing.T) {
				first := func() {
					var u User
					noErr(t, fmt.Sprintf("First(&u, %d)", alice), e.db.Scopes(gormplugin.Cached(time.Minute)).First(&u, alice).Error)
				}
				first()
				top := notFoundAhead(t, e, 4)
				noErr(t, "create", db.Create(&[]User{{Name: "x"}, {Name: "y"}}).Error)
				hits := e.m.Stats().Hits
				first()
				if e.m.Stats().Hits == hits {
					t.Errorf("a multi-row insert of generated keys invalidated an unrelated row (the table tag)")
				}
				everyRowFound(t, e, top, 2)
			})
		}
	})
}
