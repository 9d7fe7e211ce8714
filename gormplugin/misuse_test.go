package gormplugin_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

// A nil ctx is context.Background() for the plugin's functions, as for
// depcache's, and a nil manager or *gorm.DB is an error naming it: each of
// these panicked.
func TestNilArgumentsAreNotPanics(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		var nilCtx context.Context
		var users []User
		noErr(t, "DB(nil ctx).Find", gormplugin.DB(nilCtx, e.db).Find(&users).Error)
		if len(users) != len(seedUsers) {
			t.Fatalf("DB(nil ctx).Find read %d users, want %d", len(users), len(seedUsers))
		}
		p := gormplugin.New(e.m)
		if _, err := p.InvalidateDependency(nilCtx, gormplugin.ListTag("users")); err != nil {
			t.Fatalf("Plugin.InvalidateDependency(nil ctx): %v", err)
		}
		if err := p.FlushOutbox(nilCtx); err != nil {
			t.Fatalf("Plugin.FlushOutbox(nil ctx): %v", err)
		}
		if _, err := gormplugin.SchemeTags(nilCtx, e.m, "users"); err != nil {
			t.Fatalf("SchemeTags(nil ctx): %v", err)
		}
		if _, err := gormplugin.SchemeTags(context.Background(), nil, "users"); err == nil || !strings.Contains(err.Error(), "manager") {
			t.Fatalf("SchemeTags(nil manager): %v, want an error naming the manager", err)
		}
		if _, err := gormplugin.ModelRowTag(nil, &User{ID: 1}); err == nil || !strings.Contains(err.Error(), "*gorm.DB") {
			t.Fatalf("ModelRowTag(nil db): %v, want an error naming the *gorm.DB", err)
		}
	})
}

// TxContext of a nil transaction (or of a *gorm.DB without a Statement)
// is a context under which memoized calls run but neither read nor fill
// the cache. It panicked.
func TestTxContextOfNilTxBypasses(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	m := depcache.New(mem, depcache.WithLogger(slog.New(slog.DiscardHandler)))
	defer m.Close()
	ctx := context.Background()
	if err := m.Set(ctx, "k", 1, 0, "t"); err != nil {
		t.Fatal(err)
	}
	for name, tx := range map[string]*gorm.DB{"nil": nil, "no Statement": {}} {
		calls := 0
		fn := func(context.Context) (int, error) { calls++; return 2, nil }
		for range 2 {
			if v, err := depcache.Fetch(gormplugin.TxContext(tx), m, "k", fn); v != 2 || err != nil {
				t.Fatalf("Fetch under TxContext(%s): %d, %v; want the function's 2 (the cached 1 must not be read)", name, v, err)
			}
		}
		if calls != 2 {
			t.Errorf("TxContext(%s): the function ran %d times for 2 calls, want 2 (nothing filled)", name, calls)
		}
	}
}

// logBuffer collects log lines from any goroutine.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A write whose manager closes before its invalidation runs (here between
// the write and the COMMIT of its transaction; a write that starts after
// the close is refused, TestWriteAfterTheManagerClosedIsRefused) cannot be
// invalidated, and nothing retries it: the log says it is lost. It used to
// say "the manager retries it", which a closed manager never does.
func TestWriteAfterManagerCloseLogsLoss(t *testing.T) {
	ctx := context.Background()
	b := memory.New()
	defer b.Close()
	m := depcache.New(b, depcache.WithLogger(testLogger()))
	var log logBuffer
	p := gormplugin.New(m, gormplugin.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	db, err := gorm.Open(sqlite.Open(filepath.Join(t.TempDir(), "closed.db")), &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
		p.Close()
	}()
	noErr(t, "Use", db.Use(p))
	noErr(t, "migrate", db.AutoMigrate(&User{}))
	tx := db.WithContext(ctx).Begin()
	noErr(t, "Create in a transaction", tx.Create(&User{Name: "late"}).Error)
	m.Close()
	noErr(t, "Commit after Close", tx.Commit().Error)
	got := log.String()
	if !strings.Contains(got, "lost") || strings.Contains(got, "retries it") {
		t.Fatalf("log after a write on a closed manager:\n%s\nwant it to say the invalidation is lost", got)
	}
}

// A nil Option is no option.
func TestNilPluginOptionIsIgnored(t *testing.T) {
	m := depcache.New(memory.New(), depcache.WithPrefix("nil-plugin-option"))
	defer m.Close()
	p := gormplugin.New(m, nil, gormplugin.WithLogger(testLogger()))
	defer p.Close()
}

// Cached() on a *gorm.DB the plugin is not installed on runs uncached (no
// callback reads it) and says so once, where it said nothing (found by a
// new-user check).
func TestCachedWithoutThePluginSaysSo(t *testing.T) {
	var log logBuffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&log, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })
	gormplugin.ResetWithoutPluginLog()
	db, err := gorm.Open(sqlite.Open(filepath.Join(t.TempDir(), "plain.db")), &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
	}()
	noErr(t, "migrate", db.AutoMigrate(&User{}))
	for range 3 {
		var users []User
		noErr(t, "Cached Find without the plugin", db.Scopes(gormplugin.Cached(time.Minute)).Find(&users).Error)
	}
	if n := strings.Count(log.String(), "without the plugin"); n != 1 {
		t.Errorf("%d log lines for Cached() without the plugin, want 1:\n%s", n, log.String())
	}
}
