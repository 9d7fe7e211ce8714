package pgcdc_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin/pgcdc"
	"github.com/depcache/go-depcache/internal/pgtest"
)

// One PostgreSQL with wal_level=logical serves the package's tests; each
// test has its own database, so slots and publications never meet.
var shared struct {
	once sync.Once
	s    *pgtest.Server
	err  error
}

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	code := m.Run()
	if shared.s != nil {
		shared.s.Stop()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func server(t testing.TB) *pgtest.Server {
	t.Helper()
	shared.once.Do(func() { shared.s, shared.err = pgtest.New(pgtest.Logical...) })
	if errors.Is(shared.err, pgtest.ErrUnavailable) {
		t.Skipf("no PostgreSQL with wal_level=logical can be started here: %v", shared.err)
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.s
}

const schemaSQL = `
CREATE TABLE users (id bigint PRIMARY KEY, name text);
CREATE TABLE memberships (user_id int, group_id int, role text, PRIMARY KEY (user_id, group_id));
CREATE TABLE codes (code text PRIMARY KEY, n int);
CREATE TABLE nokey (x int, y text);
CREATE TABLE events (at timestamptz PRIMARY KEY, n int);
CREATE TABLE stamps (at timestamp PRIMARY KEY, n int);
CREATE TABLE docs (id uuid PRIMARY KEY, n int);
CREATE TABLE days (d date, flag boolean, PRIMARY KEY (d, flag));
CREATE TABLE fulls (id int PRIMARY KEY, v text);
ALTER TABLE fulls REPLICA IDENTITY FULL;
CREATE TABLE parts (id int, k int, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE parts_low PARTITION OF parts FOR VALUES FROM (0) TO (100);
INSERT INTO fulls VALUES (1, 'a');
`

// env is a database with the test tables, a manager and a listener on it.
type env struct {
	t      testing.TB
	dsn    string
	db     *sql.DB
	m      *depcache.Manager
	l      *pgcdc.Listener
	events *recorder
	slot   string
}

type envConfig struct {
	manager *depcache.Manager
	opts    []pgcdc.Option
	noRun   bool
}

func newEnv(t testing.TB, ec envConfig) *env {
	t.Helper()
	dsn := server(t).CreateDatabase(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(schemaSQL); err != nil {
		t.Fatal(err)
	}
	m := ec.manager
	if m == nil {
		m = depcache.New(memory.New())
		t.Cleanup(func() { m.Close() })
	}
	// Slot names are server-wide: one per database.
	e := &env{t: t, dsn: dsn, db: db, m: m, events: &recorder{}, slot: slotFor(dsn)}
	// Slots are server-wide and few: drop this one when every listener of
	// the test has stopped (cleanups run last-in first-out).
	t.Cleanup(func() { dropSlot(t, dsn, e.slot) })
	e.l = e.listener(ec.opts...)
	if err := e.l.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !ec.noRun {
		e.run(e.l)
	}
	return e
}

// listener makes a listener on the env's database and slot that reports
// to the env's recorder.
func (e *env) listener(opts ...pgcdc.Option) *pgcdc.Listener {
	e.t.Helper()
	return e.listenerFor(e.m, e.events, opts...)
}

func (e *env) listenerFor(m *depcache.Manager, rec *recorder, opts ...pgcdc.Option) *pgcdc.Listener {
	e.t.Helper()
	opts = append([]pgcdc.Option{pgcdc.WithSlot(e.slot), pgcdc.WithObserver(rec.add),
		pgcdc.WithBackoff(10*time.Millisecond, 200*time.Millisecond)}, opts...)
	l, err := pgcdc.New(m, e.dsn, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// run runs l until the returned stop is called or the test ends; Run must
// return nil.
func (e *env) run(l *pgcdc.Listener) (stop func()) {
	stopErr := e.start(l)
	return func() {
		if err := stopErr(); err != nil {
			e.t.Errorf("Run: %v", err)
		}
	}
}

// start runs l until the returned stop is called, which returns what Run
// returned, or the test ends (then Run must return nil).
func (e *env) start(l *pgcdc.Listener) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var (
		once    sync.Once
		err     error
		stopped bool
	)
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		stopped = true
		return err
	}
	e.t.Cleanup(func() {
		if stopped {
			return // the test has what Run returned
		}
		if err := stop(); err != nil {
			e.t.Errorf("Run: %v", err)
		}
	})
	return stop
}

// exec runs raw SQL (bypassing GORM) and returns the WAL position after
// its commit.
func (e *env) exec(sqls ...string) pgcdc.LSN {
	e.t.Helper()
	for _, s := range sqls {
		if _, err := e.db.Exec(s); err != nil {
			e.t.Fatalf("%s: %v", s, err)
		}
	}
	return currentLSN(e.t, e.db)
}

func currentLSN(t testing.TB, db *sql.DB) pgcdc.LSN {
	t.Helper()
	var s string
	if err := db.QueryRow("SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	lsn, err := pgcdc.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// sync waits until l has processed everything up to lsn.
func sync_(t testing.TB, l *pgcdc.Listener, lsn pgcdc.LSN) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := l.WaitFor(ctx, lsn); err != nil {
		t.Fatal(err)
	}
}

// cache stores an entry under key that depends on tags.
func (e *env) cache(key string, tags ...string) {
	e.t.Helper()
	if err := e.m.Set(context.Background(), key, "v", time.Hour, tags...); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) present(key string) bool {
	e.t.Helper()
	ok, err := e.m.Exists(context.Background(), key)
	if err != nil {
		e.t.Fatal(err)
	}
	return ok
}

// recorder keeps a listener's events.
type recorder struct {
	mu     sync.Mutex
	events []pgcdc.Event
	wake   chan struct{}
}

func (r *recorder) add(ev pgcdc.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	if r.wake != nil {
		close(r.wake)
		r.wake = nil
	}
}

// tagsAfter returns the tags invalidated for commits ending after from
// and up to to.
func (r *recorder) tagsAfter(from, to pgcdc.LSN) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, ev := range r.events {
		if ev.Kind == pgcdc.EventInvalidated && ev.LSN > from && ev.LSN <= to {
			out = append(out, ev.Tags...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// waitFor blocks until an event satisfies ok.
func (r *recorder) waitFor(t testing.TB, what string, ok func(pgcdc.Event) bool) pgcdc.Event {
	t.Helper()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	seen := 0
	for {
		r.mu.Lock()
		for ; seen < len(r.events); seen++ {
			if ok(r.events[seen]) {
				ev := r.events[seen]
				r.mu.Unlock()
				return ev
			}
		}
		if r.wake == nil {
			r.wake = make(chan struct{})
		}
		wake := r.wake
		r.mu.Unlock()
		select {
		case <-wake:
		case <-deadline.C:
			t.Fatalf("no %s event within 60s", what)
		}
	}
}

func (r *recorder) count(kind pgcdc.EventKind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.events {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

// redisManager is a manager on a Redis at addr under prefix.
func redisManager(t testing.TB, addr, prefix string) *depcache.Manager {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	m := depcache.New(redisbackend.New(c), depcache.WithPrefix(prefix))
	t.Cleanup(func() {
		m.Close()
		c.Close()
	})
	return m
}

func startMiniredis(t testing.TB) *miniredis.Miniredis {
	t.Helper()
	mr := miniredis.RunT(t)
	return mr
}

func redisBackend(t testing.TB, addr string) *redisbackend.Backend {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return redisbackend.New(c)
}

// slotFor names a slot after the test database of dsn ("dbname=t_x_7 …"
// gives "slot_7").
func slotFor(dsn string) string {
	db := dsn[strings.Index(dsn, "dbname=")+len("dbname="):]
	db = strings.Fields(db)[0]
	return "slot_" + db[strings.LastIndex(db, "_")+1:]
}

// dropSlot drops a slot once no one streams from it (WAIT).
func dropSlot(t testing.TB, dsn, slot string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, dsn+" replication=database")
	if err != nil {
		t.Errorf("drop slot %s: %v", slot, err)
		return
	}
	defer c.Close(context.Background())
	if err := pglogrepl.DropReplicationSlot(ctx, c, slot, pglogrepl.DropReplicationSlotOptions{Wait: true}); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42704" { // never created
			return
		}
		t.Errorf("drop slot %s: %v", slot, err)
	}
}
