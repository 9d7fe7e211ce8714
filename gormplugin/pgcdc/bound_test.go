package pgcdc_test

import (
	"context"
	"errors"
	"testing"

	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
	"github.com/depcache/go-depcache/gormplugin/pgcdc"
)

// Past the WAL bound, while Redis is down, the listener confirms the
// failed commits (the slot lets their WAL go) against a debt recorded in
// PostgreSQL, and clears the whole prefix once Redis is back.
func TestWALBoundClearsInsteadOfHoldingWAL(t *testing.T) {
	mr := startMiniredis(t)
	m := redisManager(t, mr.Addr(), "cdc")
	e := newEnv(t, envConfig{manager: m, opts: []pgcdc.Option{pgcdc.WithMaxRetainedWAL(1)}})
	e.cache("u1", gormplugin.RowTag("users", 1))
	e.cache("unrelated", "something-else")
	sync_(t, e.l, e.exec(`SELECT 1`))

	mr.SetError("ERR injected outage")
	lsn := e.exec(`INSERT INTO users VALUES (1, 'a')`)
	e.events.waitFor(t, "over bound", func(ev pgcdc.Event) bool { return ev.Kind == pgcdc.EventOverBound })
	e.events.waitFor(t, "confirmed past the failed commit", func(ev pgcdc.Event) bool {
		return ev.Kind == pgcdc.EventConfirmed && ev.LSN >= lsn
	})
	if n := debtRows(t, e); n != 1 {
		t.Fatalf("%d debt rows while the Clear is owed, want 1", n)
	}
	// Commits confirmed without their invalidation: the listener's own
	// process serves nothing from the cache until the Clear ran.
	if !e.m.Held() {
		t.Error("the manager serves from the cache while a Clear is owed")
	}

	mr.SetError("")
	e.events.waitFor(t, "cleared", func(ev pgcdc.Event) bool { return ev.Kind == pgcdc.EventCleared })
	if e.m.Held() {
		t.Error("the manager is still held after the owed Clear ran")
	}
	if e.present("u1") || e.present("unrelated") {
		t.Fatal("entries survived the owed Clear")
	}
	if n := debtRows(t, e); n != 0 {
		t.Fatalf("%d debt rows after the Clear, want 0", n)
	}
}

// A listener that dies owing a Clear leaves the debt in PostgreSQL; the
// next one clears before anything else.
func TestDebtOutlivesTheListener(t *testing.T) {
	mr := startMiniredis(t)
	m1 := depcache.New(redisBackend(t, mr.Addr()), depcache.WithPrefix("cdc"))
	e := newEnv(t, envConfig{manager: m1, noRun: true, opts: []pgcdc.Option{pgcdc.WithMaxRetainedWAL(1)}})
	stop := e.start(e.l)
	sync_(t, e.l, e.exec(`SELECT 1`))
	mr.SetError("ERR injected outage")
	e.exec(`INSERT INTO users VALUES (1, 'a')`)
	e.events.waitFor(t, "over bound", func(ev pgcdc.Event) bool { return ev.Kind == pgcdc.EventOverBound })
	// Stopped while Redis fails, Run says so.
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run stopped while owing a Clear = %v, want an error wrapping context.Canceled and the failure", err)
	}
	m1.Close()

	mr.SetError("")
	m2 := redisManager(t, mr.Addr(), "cdc")
	if err := m2.Set(context.Background(), "stale", "v", 0, "t"); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	e.run(e.listenerFor(m2, rec, pgcdc.WithMaxRetainedWAL(1)))
	rec.waitFor(t, "cleared", func(ev pgcdc.Event) bool { return ev.Kind == pgcdc.EventCleared })
	if ok, _ := m2.Exists(context.Background(), "stale"); ok {
		t.Fatal("the next listener did not clear the prefix it owed")
	}
}

func debtRows(t testing.TB, e *env) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow(`SELECT count(*) FROM depcache_pgcdc_debt`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
