package gormplugin_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

// lineCounter counts log records whose message starts with prefix.
type lineCounter struct {
	mu     sync.Mutex
	prefix string
	n      int
}

func (h *lineCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *lineCounter) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, h.prefix) {
		h.mu.Lock()
		h.n++
		h.mu.Unlock()
	}
	return nil
}
func (h *lineCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *lineCounter) WithGroup(string) slog.Handler      { return h }
func (h *lineCounter) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// With conjunction tags and Redis down, a write's failed read of its
// table's schemes is logged once per outage, not once per write: the blog
// example against an unreachable REDIS_URL printed one ERROR line per
// write of its seed.
func TestConjunctionSchemeReadFailureLoggedOncePerOutage(t *testing.T) {
	w := newOutboxWorld(t, dbCases()[0])
	lines := &lineCounter{prefix: "gormplugin: cannot read the table's conjunction schemes"}
	db, err := gorm.Open(w.c.open(w.dsn), w.gormConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
	})
	m := depcache.New(w.backend, depcache.WithPrefix(w.ns), depcache.WithLogger(testLogger()),
		depcache.WithRetryBackoff(time.Millisecond, 10*time.Millisecond))
	t.Cleanup(func() { m.Close() })
	p := gormplugin.New(m, gormplugin.WithConjunctionTags(0), gormplugin.WithLogger(slog.New(lines)))
	t.Cleanup(func() { p.Close() })
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	write := func(title string) {
		t.Helper()
		if err := db.Model(&Item{ID: 1}).Update("title", title).Error; err != nil {
			t.Fatal(err)
		}
	}
	write("up")
	for outage := 1; outage <= 2; outage++ {
		w.backend.down.Store(true)
		for i := 0; i < 3; i++ {
			write("down")
		}
		if got := lines.count(); got != outage {
			t.Errorf("after outage %d of 3 writes each: %d lines about the schemes read, want %d", outage, got, outage)
		}
		w.backend.down.Store(false)
		write("up")
	}
}
