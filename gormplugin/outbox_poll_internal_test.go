package gormplugin

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
)

// A poll that finds a row left behind (seen by the previous poll too)
// holds the manager at once: until then the process may serve entries
// that predate the row's write ("until its next two polls find the row"),
// from then on it may not. The hold was taken only by the flusher, on its
// own goroutine, once it got round to the delivery: a statement's poll
// signalled it and went on, and the process served the condemned entry
// meanwhile (for a flusher busy deleting rows or polling by itself, a
// database round trip or more). Here the flusher is stopped, so that only
// the poll itself can hold the manager.
func TestOutboxPollThatFindsARowLeftBehindHoldsAtOnce(t *testing.T) {
	db, err := gorm.Open(sqlite.Open(filepath.Join(t.TempDir(), "outbox.db")), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	defer sqlDB.Close()
	m := depcache.New(memory.New(), depcache.WithLogger(quietLogger))
	defer m.Close()
	p := New(m, WithOutbox(), WithOutboxPoll(time.Hour), WithLogger(quietLogger))
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	o := p.ob
	// Stop the flusher; Close finds it stopped.
	close(o.quit)
	<-o.done
	o.quit = make(chan struct{})

	ctx := context.Background()
	tag := RowTag("items", 1)
	if err := m.Set(ctx, "k", "old", 0, tag); err != nil {
		t.Fatal(err)
	}
	// A dead writer's row: its write committed, its invalidation never ran.
	if err := db.Exec("INSERT INTO "+DefaultOutboxTable+" (prefix, id, tags, created_at) VALUES (?, ?, ?, 0)",
		m.Prefix(), "dead-writer", `["`+tag+`"]`).Error; err != nil {
		t.Fatal(err)
	}
	poll := func() {
		o.pollDue.Store(true)
		var one int
		if err := db.Raw("SELECT 1").Scan(&one).Error; err != nil { // polls first
			t.Fatal(err)
		}
	}
	before := o.polls.Load()
	poll() // the first sighting: the row may be in flight
	var v string
	if found, err := m.Get(ctx, "k", &v); err != nil || !found {
		t.Fatalf("Get after one poll: found=%v err=%v, want the entry (the row may be in flight)", found, err)
	}
	poll() // the second: left behind
	if n := o.polls.Load() - before; n != 2 {
		t.Fatalf("%d polls, want 2", n)
	}
	if found, err := m.Get(ctx, "k", &v); err != nil || found {
		t.Fatalf("Get after the second poll found the row left behind: found=%v %q err=%v, want a miss (held)", found, v, err)
	}
	// Its delivery ends the hold.
	if err := p.FlushOutbox(ctx); err != nil {
		t.Fatal(err)
	}
	if m.Held() {
		t.Fatal("held after FlushOutbox delivered the row")
	}
}

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))
