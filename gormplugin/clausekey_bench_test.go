package gormplugin

import (
	"path/filepath"
	"testing"

	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/callbacks"
	"gorm.io/gorm/logger"
)

type keyBenchArticle struct {
	ID       int
	AuthorID int
	Title    string
	Body     string
}

// BenchmarkClauseKey measures the key of a First(&a, 7) read from its
// clauses, against the SQL key (building the SQL included), on the same
// statement.
func BenchmarkClauseKey(b *testing.B) {
	db, err := gorm.Open(sqlite.Open(filepath.Join(b.TempDir(), "k.db")), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		b.Fatal(err)
	}
	sqlDB, _ := db.DB()
	b.Cleanup(func() { sqlDB.Close() })
	run := func(name string, key func(*gorm.DB)) {
		b.Run(name, func(b *testing.B) {
			db.Callback().Query().Replace("gorm:query", func(tx *gorm.DB) {
				b.ReportAllocs()
				for b.Loop() {
					key(tx)
				}
			})
			var a keyBenchArticle
			db.Session(&gorm.Session{}).First(&a, 7)
		})
	}
	run("clauses", func(tx *gorm.DB) {
		if _, ok := clauseKey(tx, ""); !ok {
			b.Fatal("not keyed by its clauses")
		}
	})
	run("sql", func(tx *gorm.DB) {
		tx.Statement.SQL.Reset()
		tx.Statement.Vars = tx.Statement.Vars[:0]
		delete(tx.Statement.Clauses, "SELECT")
		delete(tx.Statement.Clauses, "FROM")
		callbacks.BuildQuerySQL(tx)
		if _, err := queryKey(tx, ""); err != nil {
			b.Fatal(err)
		}
	})
}
