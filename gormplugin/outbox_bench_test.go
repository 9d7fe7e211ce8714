package gormplugin_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/schema"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

// BenchmarkOutboxWrite measures what WithOutbox adds to a write
// transaction: one Update by primary key in GORM's implicit transaction,
// invalidating on the memory backend, without and with the outbox. With
// it the transaction also runs the outbox INSERT, and the flusher deletes
// the delivered rows in batches (its work is inside the timing: the
// benchmark closes the plugin, which waits for the last deletes, before it
// stops the clock). SQLite on a file; PostgreSQL too when
// DEPCACHE_POSTGRES_DSN is set; SQLite on tmpfs (/dev/shm) where there is
// one, where no fsync hides the CPU and statement cost.
//
//	go test -run '^$' -bench BenchmarkOutboxWrite -benchmem ./gormplugin/
func BenchmarkOutboxWrite(b *testing.B) {
	type target struct {
		dialect string
		open    func(dsn string) gorm.Dialector
		dsn     func(b *testing.B) string
	}
	targets := []target{{"sqlite", sqlite.Open, func(b *testing.B) string {
		return filepath.Join(b.TempDir(), "bench.db") + "?_txlock=immediate&_busy_timeout=5000"
	}}}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		// Without fsync (tmpfs): what the outbox costs in CPU and
		// statements, which the disk's noise hides above.
		targets = append(targets, target{"sqlite-tmpfs", sqlite.Open, func(b *testing.B) string {
			dir, err := os.MkdirTemp("/dev/shm", "depcache-bench")
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { os.RemoveAll(dir) })
			return filepath.Join(dir, "bench.db") + "?_txlock=immediate&_busy_timeout=5000"
		}})
	}
	if dsn := os.Getenv("DEPCACHE_POSTGRES_DSN"); dsn != "" {
		targets = append(targets, target{"postgres", postgres.Open, func(*testing.B) string { return dsn }})
	}
	for _, tg := range targets {
		for _, on := range []bool{false, true} {
			name := tg.dialect + "/without"
			if on {
				name = tg.dialect + "/outbox"
			}
			b.Run(name, func(b *testing.B) {
				prefix := "ob" + randomHex(4) + "_"
				cfg := &gorm.Config{NamingStrategy: schema.NamingStrategy{TablePrefix: prefix}, Logger: logger.Discard}
				db, err := gorm.Open(tg.open(tg.dsn(b)), cfg)
				if err != nil {
					b.Fatal(err)
				}
				mem := memory.New()
				m := depcache.New(mem, depcache.WithLogger(testLogger()))
				opts := []gormplugin.Option{gormplugin.WithLogger(testLogger())}
				if on {
					opts = append(opts, gormplugin.WithOutboxTable(prefix+"outbox"))
				}
				p := gormplugin.New(m, opts...)
				if err := db.Use(p); err != nil {
					b.Fatal(err)
				}
				defer func() {
					if sqlDB, err := db.DB(); err == nil {
						if tg.dialect == "postgres" { // not through the plugin
							sqlDB.Exec("DROP TABLE IF EXISTS " + prefix + "items, " + prefix + "outbox")
						}
						sqlDB.Close()
					}
					m.Close()
					mem.Close()
				}()
				if err := db.AutoMigrate(&Item{}); err != nil {
					b.Fatal(err)
				}
				if err := db.Create(&Item{Title: "v"}).Error; err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					if err := db.Model(&Item{ID: 1}).Update("title", strconv.Itoa(i)).Error; err != nil {
						b.Fatal(err)
					}
				}
				p.Close() // the flusher's last deletes
				b.StopTimer()
			})
		}
	}
}
