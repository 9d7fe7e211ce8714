package pgcdc_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
	"github.com/depcache/go-depcache/gormplugin/pgcdc"
	"github.com/depcache/go-depcache/internal/pgtest"
)

// Each kind of raw write invalidates exactly the plugin's tags for it, and
// entries depending on other tags stay.
func TestChangesInvalidateTheirTags(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.exec(`INSERT INTO users VALUES (1, 'a'), (2, 'b')`,
		`INSERT INTO memberships VALUES (1, 10, 'x')`, `INSERT INTO codes VALUES ('a:b', 1)`)
	row := func(table string, pk ...any) string { return gormplugin.RowTag(table, pk...) }
	cases := []struct {
		name string
		sql  []string
		want []string
	}{
		{"insert", []string{`INSERT INTO users VALUES (3, 'c')`},
			[]string{row("users", 3), gormplugin.ListTag("users")}},
		{"update", []string{`UPDATE users SET name = 'z' WHERE id = 2`},
			[]string{row("users", 2), gormplugin.ListTag("users")}},
		{"delete", []string{`DELETE FROM users WHERE id = 1`},
			[]string{row("users", 1), gormplugin.ListTag("users")}},
		{"key update", []string{`UPDATE users SET id = 20 WHERE id = 2`},
			[]string{row("users", 2), row("users", 20), gormplugin.ListTag("users")}},
		{"composite key", []string{`UPDATE memberships SET role = 'y' WHERE user_id = 1`},
			[]string{row("memberships", 1, 10), gormplugin.ListTag("memberships")}},
		{"escaped string key", []string{`UPDATE codes SET n = 2 WHERE code = 'a:b'`},
			[]string{row("codes", "a:b"), gormplugin.ListTag("codes")}},
		{"timestamptz key", []string{`INSERT INTO events VALUES ('2026-01-02 03:04:05.123456+02', 1)`},
			[]string{row("events", time.Date(2026, 1, 2, 1, 4, 5, 123456000, time.UTC)), gormplugin.ListTag("events")}},
		{"timestamp key", []string{`INSERT INTO stamps VALUES ('2026-01-02 03:04:05', 1)`},
			[]string{row("stamps", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), gormplugin.ListTag("stamps")}},
		{"uuid key", []string{`INSERT INTO docs VALUES ('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 1)`},
			[]string{row("docs", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"), gormplugin.ListTag("docs")}},
		{"date and boolean key", []string{`INSERT INTO days VALUES ('2026-03-04', true)`},
			[]string{row("days", time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC), true), gormplugin.ListTag("days")}},
		{"key update under REPLICA IDENTITY FULL", []string{`UPDATE fulls SET id = 2 WHERE id = 1`},
			[]string{row("fulls", 1), row("fulls", 2), gormplugin.ListTag("fulls")}},
		{"partitioned table, under the root's name", []string{`INSERT INTO parts VALUES (1, 5)`},
			[]string{row("parts", 1, 5), gormplugin.ListTag("parts")}},
		{"truncate", []string{`TRUNCATE codes`},
			[]string{gormplugin.ListTag("codes"), gormplugin.TableTag("codes")}},
		{"no primary key", []string{`INSERT INTO nokey VALUES (1, 'a')`},
			[]string{gormplugin.ListTag("nokey"), gormplugin.TableTag("nokey")}},
		{"one transaction, two tables", []string{`BEGIN`, `INSERT INTO users VALUES (4, 'd')`,
			`DELETE FROM memberships WHERE user_id = 1`, `COMMIT`},
			[]string{row("users", 4), gormplugin.ListTag("users"), row("memberships", 1, 10), gormplugin.ListTag("memberships")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			before := currentLSN(t, e.db)
			// One entry per wanted tag, and one on the table tag.
			for _, tag := range c.want {
				e.cache("on "+tag, tag)
			}
			table := "on table " + c.want[0]
			e.cache(table, gormplugin.TableTag(tableOf(c.want[0])))
			var lsn pgcdc.LSN
			if c.sql[0] == "BEGIN" {
				tx, err := e.db.Begin()
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range c.sql[1 : len(c.sql)-1] {
					if _, err := tx.Exec(s); err != nil {
						t.Fatal(err)
					}
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
				lsn = currentLSN(t, e.db)
			} else {
				lsn = e.exec(c.sql...)
			}
			sync_(t, e.l, lsn)
			got := e.events.tagsAfter(before, lsn)
			want := slices.Clone(c.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("invalidated %q, want %q", got, want)
			}
			for _, tag := range c.want {
				if e.present("on " + tag) {
					t.Errorf("the entry on %q is still cached", tag)
				}
			}
			if !slices.Contains(c.want, gormplugin.TableTag(tableOf(c.want[0]))) && !e.present(table) {
				t.Errorf("the entry on the table tag went, but the write named its rows")
			}
		})
	}
}

func tableOf(tag string) string {
	for i := 0; i+1 < len(tag); i++ {
		if tag[i] == ':' && tag[i+1] == ':' {
			return tag[:i]
		}
	}
	return tag
}

// A rolled-back transaction reaches no one: pgoutput sends committed
// transactions only.
func TestRollbackInvalidatesNothing(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.cache("u5", gormplugin.RowTag("users", 5))
	e.cache("list", gormplugin.ListTag("users"))
	before := currentLSN(t, e.db)
	tx, err := e.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO users VALUES (5, 'e')`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	// A committed write after it, so that the listener is known to have
	// streamed past the rolled-back one.
	lsn := e.exec(`INSERT INTO codes VALUES ('x', 1)`)
	sync_(t, e.l, lsn)
	if got := e.events.tagsAfter(before, lsn); !slices.Equal(got, []string{gormplugin.ListTag("codes"), gormplugin.RowTag("codes", "x")}) {
		t.Fatalf("invalidated %q, want only the codes insert's tags", got)
	}
	if !e.present("u5") || !e.present("list") {
		t.Fatal("a rolled-back insert invalidated entries")
	}
}

// A listener stopped and started again resumes from the slot: what was
// committed while it was down is invalidated, what it had confirmed is not
// sent again.
func TestRestartResumesFromSlot(t *testing.T) {
	e := newEnv(t, envConfig{noRun: true})
	stop := e.run(e.l)
	first := e.exec(`INSERT INTO users VALUES (1, 'a')`)
	sync_(t, e.l, first)
	stop()

	e.cache("u2", gormplugin.RowTag("users", 2))
	down := e.exec(`INSERT INTO users VALUES (2, 'b')`)

	rec := &recorder{}
	l2 := e.listenerFor(e.m, rec)
	e.run(l2)
	sync_(t, l2, down)
	if e.present("u2") {
		t.Fatal("a write committed while the listener was down was not invalidated after its restart")
	}
	start := rec.waitFor(t, "streaming", func(ev pgcdc.Event) bool { return ev.Kind == pgcdc.EventStreaming })
	if start.LSN < first {
		t.Fatalf("the restarted listener streamed from %s, before %s which the first one confirmed", start.LSN, first)
	}
	if got := rec.tagsAfter(0, down); slices.Contains(got, gormplugin.RowTag("users", 1)) {
		t.Fatalf("the confirmed insert of users::1 was sent again: %q", got)
	}
}

// While the backend fails, the listener retries the invalidation and
// confirms nothing past it; when the backend is back, the change is
// invalidated.
func TestBackendFailureRetriesAndConfirmsNothing(t *testing.T) {
	mr := startMiniredis(t)
	m := redisManager(t, mr.Addr(), "cdc")
	e := newEnv(t, envConfig{manager: m})
	e.cache("u7", gormplugin.RowTag("users", 7))
	before := e.exec(`SELECT 1`)
	sync_(t, e.l, before)

	mr.SetError("ERR injected outage")
	lsn := e.exec(`INSERT INTO users VALUES (7, 'g')`)
	e.events.waitFor(t, "failed invalidation", func(ev pgcdc.Event) bool {
		return ev.Kind == pgcdc.EventInvalidationFailed && ev.Attempt >= 3
	})
	if p := e.l.Processed(); p >= lsn {
		t.Fatalf("processed %s passed the failed commit at %s", p, lsn)
	}
	if c := confirmedFlush(t, e); c >= lsn {
		t.Fatalf("the slot was confirmed to %s, past the failed commit at %s", c, lsn)
	}
	mr.SetError("")
	sync_(t, e.l, lsn)
	if e.present("u7") {
		t.Fatal("the entry survived the retried invalidation")
	}
}

// A listener that dies while the backend fails leaves the change in the
// slot: the next one, on another manager (no in-process retry survives),
// invalidates it after the backend recovers.
func TestBackendFailureThenRestartReplays(t *testing.T) {
	mr := startMiniredis(t)
	m1 := depcache.New(redisBackend(t, mr.Addr()), depcache.WithPrefix("cdc"))
	e := newEnv(t, envConfig{manager: m1, noRun: true})
	stop := e.start(e.l)
	sync_(t, e.l, e.exec(`SELECT 1`))

	mr.SetError("ERR injected outage")
	lsn := e.exec(`INSERT INTO users VALUES (8, 'h')`)
	e.events.waitFor(t, "failed invalidation", func(ev pgcdc.Event) bool { return ev.Kind == pgcdc.EventInvalidationFailed })
	// Stopped with an invalidation failing, Run says so, and why.
	if err := stop(); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "injected outage") {
		t.Errorf("Run stopped during the outage = %v, want an error wrapping context.Canceled and the failure", err)
	}
	m1.Close()
	if c := confirmedFlush(t, e); c >= lsn {
		t.Fatalf("the slot was confirmed to %s, past the failed commit at %s", c, lsn)
	}

	mr.SetError("")
	m2 := redisManager(t, mr.Addr(), "cdc")
	// An entry filled during the outage from the old row.
	if err := m2.Set(context.Background(), "u8", "old", 0, gormplugin.RowTag("users", 8)); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	l2 := e.listenerFor(m2, rec)
	e.run(l2)
	sync_(t, l2, lsn)
	if ok, _ := m2.Exists(context.Background(), "u8"); ok {
		t.Fatal("the change was not replayed from the slot")
	}
	if got := rec.tagsAfter(0, lsn); !slices.Contains(got, gormplugin.RowTag("users", 8)) {
		t.Fatalf("the new listener did not replay users::8: %q", got)
	}
}

func confirmedFlush(t testing.TB, e *env) pgcdc.LSN {
	t.Helper()
	var s string
	if err := e.db.QueryRow(`SELECT coalesce(confirmed_flush_lsn::text, '0/0') FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&s); err != nil {
		t.Fatal(err)
	}
	lsn, err := pgcdc.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// Bad options are errors that name them.
func TestNewRejectsBadOptions(t *testing.T) {
	m := depcache.New(nil)
	defer m.Close()
	for name, opts := range map[string][]pgcdc.Option{
		"slot":    {pgcdc.WithSlot("Bad-Name")},
		"backoff": {pgcdc.WithBackoff(0, 1)},
		"models":  {pgcdc.WithModels(nil)},
		// An empty name passed New and made Run retry its CREATE
		// PUBLICATION, failing, forever.
		"empty table": {pgcdc.WithTables("users", "")},
	} {
		if _, err := pgcdc.New(m, "host=127.0.0.1", opts...); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := pgcdc.New(nil, "host=127.0.0.1"); err == nil {
		t.Error("nil manager: no error")
	}
	if _, err := pgcdc.New(m, "host=127.0.0.1 replication=true"); err == nil {
		t.Error("physical replication DSN: no error")
	}
}

// WithTables makes a publication of those tables only; WithChangeTags adds
// tags computed from the row's values to its transaction's.
func TestTablesAndChangeTags(t *testing.T) {
	e := newEnv(t, envConfig{opts: []pgcdc.Option{
		pgcdc.WithPublication("only_users"),
		pgcdc.WithTables("public.users"),
		pgcdc.WithChangeTags(func(c pgcdc.Change) []string {
			if c.Table != "users" || c.New == nil || c.New["name"] == nil {
				return nil
			}
			return []string{"users:name=" + *c.New["name"]}
		}),
	}})
	before := currentLSN(t, e.db)
	lsn := e.exec(`INSERT INTO codes VALUES ('q', 1)`, `INSERT INTO users VALUES (9, 'ann')`)
	sync_(t, e.l, lsn)
	want := []string{gormplugin.RowTag("users", 9), "users:name=ann", gormplugin.ListTag("users")}
	slices.Sort(want)
	if got := e.events.tagsAfter(before, lsn); !slices.Equal(got, want) {
		t.Fatalf("invalidated %q, want %q (codes is not published)", got, want)
	}
}

// Run stops with ErrNotLogical on a server whose wal_level is not logical,
// instead of retrying what only a restart of the server can fix. It also
// logs it: Run is started with "go l.Run(ctx)", where a returned error
// alone is easily dropped and the listener would do nothing, silently.
func TestRunRefusesWithoutLogicalWAL(t *testing.T) {
	s := pgtest.Start(t, "wal_level=replica")
	m := depcache.New(memory.New())
	defer m.Close()
	var logs bytes.Buffer
	l, err := pgcdc.New(m, s.DSN("postgres"), pgcdc.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	// A WaitFor waiting when Run stops, and one called after, return
	// Run's error: before, they waited for their ctx (forever, under
	// context.Background) for a listener that would never advance.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waited := make(chan error, 1)
	go func() { waited <- l.WaitFor(ctx, 1) }()
	if err := l.Run(context.Background()); !errors.Is(err, pgcdc.ErrNotLogical) {
		t.Fatalf("Run = %v, want ErrNotLogical", err)
	}
	if err := <-waited; !errors.Is(err, pgcdc.ErrNotLogical) {
		t.Errorf("WaitFor while Run stopped = %v, want an error wrapping ErrNotLogical", err)
	}
	if err := l.WaitFor(ctx, 1); !errors.Is(err, pgcdc.ErrNotLogical) {
		t.Errorf("WaitFor after Run stopped = %v, want an error wrapping ErrNotLogical", err)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "wal_level") {
		t.Errorf("Run returned ErrNotLogical without logging it at Error; logs:\n%s", logs.String())
	}
}

// A replication connection the server ends (a restart, a failover,
// pg_terminate_backend) is reconnected at once. The reader cancelled its
// wait before asking whether the wait had been cancelled, so it took every
// receive error for a wake-up and spun on the closed connection, using a
// core, until its next status message failed: after a PostgreSQL restart,
// raw writes were invalidated 10 s (WithStatusInterval) late.
func TestLostConnectionReconnectsAtOnce(t *testing.T) {
	e := newEnv(t, envConfig{opts: []pgcdc.Option{pgcdc.WithStatusInterval(time.Hour)}})
	e.events.waitFor(t, "streaming", func(ev pgcdc.Event) bool { return ev.Kind == pgcdc.EventStreaming })
	var n int
	if err := e.db.QueryRow(`SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots WHERE slot_name = $1 AND active`, e.slot).Scan(&n); err != nil || n != 1 {
		t.Fatalf("terminate the listener's WAL sender: %d terminated, %v", n, err)
	}
	e.events.waitFor(t, "disconnected", func(ev pgcdc.Event) bool { return ev.Kind == pgcdc.EventDisconnected })
	e.cache("u1", gormplugin.RowTag("users", 1))
	sync_(t, e.l, e.exec(`INSERT INTO users VALUES (1, 'a')`))
	if e.present("u1") {
		t.Fatal("a write after the reconnection was not invalidated")
	}
}
