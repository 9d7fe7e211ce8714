package gormplugin_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

// stuckInvalidations holds every Invalidate, while stuck, until release
// is closed or its context ends: a Redis that accepts and never answers.
type stuckInvalidations struct {
	backends.Backend
	stuck    atomic.Bool
	entered  chan struct{}
	release  chan struct{}
	returned atomic.Bool
}

func (s *stuckInvalidations) Invalidate(ctx context.Context, ns string, tags ...string) (int, error) {
	if s.stuck.Load() {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		select {
		case <-s.release:
		case <-ctx.Done():
			s.returned.Store(true)
			return 0, ctx.Err()
		}
		defer s.returned.Store(true)
	}
	return s.Backend.Invalidate(ctx, ns, tags...)
}

// DESIGN.md: a GORM write waits for its invalidation at most its own
// context and the invalidation timeout, then returns with the invalidation
// pending. The write's context ends while its invalidation hangs: the write
// returns (before the invalidation), the invalidation goes on and lands.
func TestWriteWaitsForItsInvalidationAtMostItsContext(t *testing.T) {
	writes := map[string]func(db *gorm.DB) error{
		"implicit transaction": func(db *gorm.DB) error {
			return db.Model(&Item{ID: 1}).Update("title", "v1").Error
		},
		"Transaction": func(db *gorm.DB) error {
			return db.Transaction(func(tx *gorm.DB) error {
				return tx.Model(&Item{ID: 1}).Update("title", "v1").Error
			})
		},
		"SkipDefaultTransaction": func(db *gorm.DB) error {
			return db.Session(&gorm.Session{SkipDefaultTransaction: true}).Model(&Item{ID: 1}).Update("title", "v1").Error
		},
	}
	for name, write := range writes {
		t.Run(name, func(t *testing.T) {
			b := &stuckInvalidations{Backend: memory.New(), entered: make(chan struct{}, 1), release: make(chan struct{})}
			// A minute: were the write to wait for the invalidation, the
			// invalidation would have returned before the write.
			m := depcache.New(b, depcache.WithLogger(testLogger()), depcache.WithInvalidationTimeout(time.Minute))
			t.Cleanup(func() { m.Close() })
			db, err := gorm.Open(sqlite.Open(filepath.Join(t.TempDir(), "w.db")+"?_txlock=immediate&_busy_timeout=5000"), &gorm.Config{Logger: logger.Discard})
			noErr(t, "open", err)
			sqlDB, err := db.DB()
			noErr(t, "db", err)
			t.Cleanup(func() { sqlDB.Close() })
			p := gormplugin.New(m, gormplugin.WithLogger(testLogger()))
			noErr(t, "use", db.Use(p))
			noErr(t, "migrate", db.AutoMigrate(&Item{}))
			noErr(t, "seed", db.Create(&Item{ID: 1, Title: "v0"}).Error)
			read := func() string {
				t.Helper()
				title, err := depcache.Fetch(context.Background(), m, "item:1", func(ctx context.Context) (string, error) {
					var it Item
					err := db.WithContext(ctx).First(&it, 1).Error
					return it.Title, err
				})
				noErr(t, "read", err)
				return title
			}
			if got := read(); got != "v0" {
				t.Fatalf("read before: %q", got)
			}

			b.stuck.Store(true)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				<-b.entered
				cancel()
			}()
			if err := write(db.WithContext(ctx)); err != nil {
				t.Fatalf("the write: %v (it committed; its invalidation is not its error)", err)
			}
			if b.returned.Load() {
				t.Fatal("the write returned after its invalidation: it waited past its own context")
			}
			close(b.release)
			noErr(t, "close the plugin (waits for the invalidation)", p.Close())
			if !b.returned.Load() {
				t.Fatal("Close returned before the invalidation it waits for")
			}
			if got := read(); got != "v1" {
				t.Errorf("read after the invalidation landed: %q, want v1", got)
			}
		})
	}
}
