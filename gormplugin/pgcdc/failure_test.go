package pgcdc_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
	"github.com/depcache/go-depcache/gormplugin/pgcdc"
	"github.com/depcache/go-depcache/internal/redistest"
)

// bareDatabase is a test database with schemaSQL's tables and no listener
// (newEnv's Setup would fail the test on the errors these tests want).
func bareDatabase(t *testing.T) (dsn string, db *sql.DB) {
	t.Helper()
	dsn = server(t).CreateDatabase(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(schemaSQL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropSlot(t, dsn, slotFor(dsn)) })
	return dsn, db
}

func memoryManager(t *testing.T) *depcache.Manager {
	m := depcache.New(memory.New())
	t.Cleanup(func() { m.Close() })
	return m
}

// A WithTables table that does not exist is an error naming it, from
// Setup and from Run at once: Run used to retry its CREATE PUBLICATION
// forever, with a Warn line per attempt.
func TestMissingTableIsAnError(t *testing.T) {
	dsn, _ := bareDatabase(t)
	l, err := pgcdc.New(memoryManager(t), dsn, pgcdc.WithSlot(slotFor(dsn)), pgcdc.WithPublication("p"),
		pgcdc.WithBackoff(10*time.Millisecond, 50*time.Millisecond),
		pgcdc.WithTables("users", "nosuch", "app.ghost"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = l.Setup(ctx)
	if !errors.Is(err, pgcdc.ErrTableNotFound) || !strings.Contains(err.Error(), `"nosuch"`) || !strings.Contains(err.Error(), `"app.ghost"`) {
		t.Fatalf("Setup = %v, want ErrTableNotFound naming nosuch and app.ghost", err)
	}
	if err := l.Run(ctx); !errors.Is(err, pgcdc.ErrTableNotFound) {
		t.Fatalf("Run = %v, want ErrTableNotFound before its context ends", err)
	}
}

// An existing publication is used as it is, but not when it would leave
// out changes: one that lacks a WithTables table (added to the option
// after the publication was made), or publishes inserts only, dropped
// those invalidations without a word.
func TestPublicationThatLeavesChangesOutIsAnError(t *testing.T) {
	dsn, db := bareDatabase(t)
	if _, err := db.Exec(`CREATE PUBLICATION users_only FOR TABLE users;
		CREATE PUBLICATION inserts_only FOR TABLE users, codes WITH (publish = 'insert')`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []struct {
		pub    string
		tables []string
		want   string
	}{
		{"users_only", []string{"users", "codes"}, `ADD TABLE "codes"`},
		{"inserts_only", []string{"users"}, "does not publish update, delete, truncate"},
	} {
		l, err := pgcdc.New(memoryManager(t), dsn, pgcdc.WithSlot(slotFor(dsn)), pgcdc.WithPublication(c.pub), pgcdc.WithTables(c.tables...))
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Setup(ctx); !errors.Is(err, pgcdc.ErrPublication) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Setup = %v, want ErrPublication saying %q", c.pub, err, c.want)
		}
		if err := l.Run(ctx); !errors.Is(err, pgcdc.ErrPublication) {
			t.Errorf("%s: Run = %v, want ErrPublication", c.pub, err)
		}
	}
	// The tables it does cover, in another spelling of the same table.
	l, err := pgcdc.New(memoryManager(t), dsn, pgcdc.WithSlot(slotFor(dsn)), pgcdc.WithPublication("users_only"), pgcdc.WithTables("public.users"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Setup(ctx); err != nil {
		t.Fatalf("Setup with a publication that covers the tables: %v", err)
	}
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// A server that refuses connections: Setup says so at once; Run retries
// (EventDisconnected), and once its context ends returns an error that
// wraps both the context's and the connection's, where it used to return
// nil as if it had worked; WaitFor's timeout names the failure too.
func TestUnreachableServer(t *testing.T) {
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=test sslmode=disable connect_timeout=5", closedPort(t))
	rec := &recorder{}
	l, err := pgcdc.New(memoryManager(t), dsn, pgcdc.WithObserver(rec.add), pgcdc.WithBackoff(time.Millisecond, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var opErr *net.OpError
	if err := l.Setup(ctx); !errors.As(err, &opErr) {
		t.Fatalf("Setup = %v, want the connection's error", err)
	}

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.Run(rctx) }()
	disconnections := 0
	rec.waitFor(t, "second disconnection", func(ev pgcdc.Event) bool {
		if ev.Kind == pgcdc.EventDisconnected {
			disconnections++
		}
		return disconnections >= 2
	})
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Millisecond)
	werr := l.WaitFor(wctx, 1)
	wcancel()
	if !errors.Is(werr, context.DeadlineExceeded) || !errors.As(werr, &opErr) {
		t.Errorf("WaitFor while the server is unreachable = %v, want the deadline and the connection's error", werr)
	}
	cancel()
	err = <-done
	if !errors.Is(err, context.Canceled) || !errors.As(err, &opErr) {
		t.Fatalf("Run = %v, want an error wrapping context.Canceled and the connection's error", err)
	}
}

// Run on a closed manager returns ErrClosed at once: it used to connect,
// stream, and return only at the first change. A manager with no backend
// is refused as well.
func TestRunOnClosedManager(t *testing.T) {
	dsn, _ := bareDatabase(t)
	m := depcache.New(memory.New())
	m.Close()
	l, err := pgcdc.New(m, dsn, pgcdc.WithSlot(slotFor(dsn)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.Run(ctx); !errors.Is(err, depcache.ErrClosed) {
		t.Fatalf("Run on a closed manager = %v, want ErrClosed before its context ends", err)
	}
	none := depcache.New(nil)
	defer none.Close()
	l, err = pgcdc.New(none, dsn, pgcdc.WithSlot(slotFor(dsn)))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Run(ctx); !errors.Is(err, pgcdc.ErrBadOption) {
		t.Fatalf("Run on a manager without a backend = %v, want ErrBadOption before its context ends", err)
	}
}

// A manager closed while the listener streams, with no change coming,
// ends Run within the status interval.
func TestManagerClosedWhileStreaming(t *testing.T) {
	m := depcache.New(memory.New())
	e := newEnv(t, envConfig{manager: m, noRun: true})
	l := e.listener(pgcdc.WithStatusInterval(20 * time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	e.events.waitFor(t, "streaming", func(ev pgcdc.Event) bool { return ev.Kind == pgcdc.EventStreaming })
	m.Close()
	if err := <-done; !errors.Is(err, depcache.ErrClosed) {
		t.Fatalf("Run after its manager closed = %v, want ErrClosed before its context ends", err)
	}
}

// A transaction that writes many rows invalidates the table tag instead
// of a row tag per row past a bound: one statement made the listener hold,
// and send to Redis in one call, a tag per row (25,001 here; millions for
// an UPDATE of a large table).
func TestLargeTransactionInvalidatesTheTable(t *testing.T) {
	e := newEnv(t, envConfig{})
	const rows = 25_000
	// As the plugin tags a lookup by key: every read depends on the table
	// tag as well.
	e.cache("u1", gormplugin.RowTag("users", 1), gormplugin.TableTag("users"))
	e.cache("u24999", gormplugin.RowTag("users", rows-1), gormplugin.TableTag("users"))
	e.cache("codes", gormplugin.RowTag("codes", "a"), gormplugin.TableTag("codes"))
	before := currentLSN(t, e.db)
	lsn := e.exec(fmt.Sprintf(`INSERT INTO users SELECT g, 'x' FROM generate_series(1, %d) g`, rows))
	sync_(t, e.l, lsn)
	tags := e.events.tagsAfter(before, lsn)
	if len(tags) > rows/2 {
		t.Errorf("one transaction of %d rows invalidated %d tags", rows, len(tags))
	}
	if !slices.Contains(tags, gormplugin.TableTag("users")) {
		t.Errorf("the table tag is not among the %d tags invalidated", len(tags))
	}
	if e.present("u1") || e.present("u24999") {
		t.Error("a row of the large transaction is still cached")
	}
	if !e.present("codes") {
		t.Error("another table's entry went")
	}
}

// A transaction whose WithChangeTags tags exceed the bound clears the
// cache prefix instead: no coarser tag is known to stand for a function's
// tags, and gathering them without a bound held one tag per row in memory
// (millions for an UPDATE of a large table) and sent them in one call.
func TestTooManyChangeTagsClearTheCache(t *testing.T) {
	pgcdc.SetMaxChangeTags(t, 50)
	e := newEnv(t, envConfig{opts: []pgcdc.Option{pgcdc.WithChangeTags(func(c pgcdc.Change) []string {
		if c.Table != "users" || c.New == nil {
			return nil
		}
		return []string{"users:id=" + *c.New["id"]}
	})}})
	e.events.waitFor(t, "streaming", func(ev pgcdc.Event) bool { return ev.Kind == pgcdc.EventStreaming })
	e.cache("late row", "users:id=99")
	e.cache("codes", gormplugin.RowTag("codes", "a"))
	lsn := e.exec(`INSERT INTO users SELECT g, 'x' FROM generate_series(1, 100) g`)
	sync_(t, e.l, lsn)
	if e.present("late row") {
		t.Error("an entry depending on the change tag of a row past the bound is still cached")
	}
	if e.present("codes") {
		t.Error("an unrelated entry is still cached: the prefix was not cleared")
	}
	e.events.waitFor(t, "cleared", func(ev pgcdc.Event) bool { return ev.Kind == pgcdc.EventCleared })
	// Below the bound, change tags are invalidated as before, without a
	// Clear.
	e.cache("codes", gormplugin.RowTag("codes", "a"))
	e.cache("row 200", "users:id=200")
	lsn = e.exec(`INSERT INTO users VALUES (200, 'y')`)
	sync_(t, e.l, lsn)
	if e.present("row 200") {
		t.Error("the change tag of a small transaction was not invalidated")
	}
	if !e.present("codes") {
		t.Error("a small transaction cleared the prefix")
	}
}

// Two caches (two manager prefixes) on one database with the same slot
// name: the second listener used to wait as a standby for ever, its cache
// never invalidated, with a Debug line per attempt. It is an error naming
// both prefixes; a standby of the same prefix still waits.
func TestSlotOfAnotherPrefixIsAnError(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.events.waitFor(t, "streaming", func(ev pgcdc.Event) bool { return ev.Kind == pgcdc.EventStreaming })
	other := depcache.New(memory.New(), depcache.WithPrefix("othercache"))
	defer other.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := e.listenerFor(other, &recorder{}).Run(ctx)
	if !errors.Is(err, pgcdc.ErrBadOption) || !strings.Contains(err.Error(), `"othercache"`) || !strings.Contains(err.Error(), fmt.Sprintf("%q", e.m.Prefix())) {
		t.Fatalf("Run on a slot another prefix's listener holds = %v, want ErrBadOption naming both prefixes", err)
	}
	rec := &recorder{}
	e.run(e.listenerFor(e.m, rec))
	rec.waitFor(t, "slot busy", func(ev pgcdc.Event) bool { return ev.Kind == pgcdc.EventSlotBusy })
}

// A server that accepts connections and never answers (a wedged host):
// the first connection attempt lasts until Run's context ends, and Run
// returned nil, as if it had streamed. It returns an error wrapping the
// deadline, saying it never streamed.
func TestServerThatNeverAnswers(t *testing.T) {
	addr, accepted := redistest.Frozen(t)
	host, port, _ := net.SplitHostPort(addr)
	l, err := pgcdc.New(memoryManager(t), fmt.Sprintf("host=%s port=%s user=postgres dbname=test sslmode=disable", host, port))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = l.Run(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "before it streamed") {
		t.Fatalf("Run = %v, want an error wrapping the deadline, saying it never streamed", err)
	}
	if accepted() == 0 {
		t.Fatal("the listener never connected to the frozen server")
	}
}

// A server that accepts connections and never answers, with a DSN that
// sets no connect_timeout: the first attempt lasted until Run's context
// ended, with no retry and no log line. Each attempt is bounded
// (connectTimeout, shortened here), failed and retried.
func TestServerThatNeverAnswersIsRetried(t *testing.T) {
	pgcdc.ShortenTimeouts(t, 30*time.Second, 100*time.Millisecond)
	addr, _ := redistest.Frozen(t)
	host, port, _ := net.SplitHostPort(addr)
	rec := &recorder{}
	l, err := pgcdc.New(memoryManager(t), fmt.Sprintf("host=%s port=%s user=postgres dbname=test sslmode=disable", host, port),
		pgcdc.WithObserver(rec.add), pgcdc.WithBackoff(time.Millisecond, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	n := 0
	rec.waitFor(t, "two failed attempts", func(ev pgcdc.Event) bool {
		if ev.Kind == pgcdc.EventDisconnected {
			n++
		}
		return n >= 2
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "while failing") {
		t.Fatalf("Run = %v, want an error wrapping context.Canceled and the failed attempts", err)
	}
}

// A table of WithTables that exists but cannot be published (a view):
// CREATE PUBLICATION failed with "cannot add relation" (22023), retried
// for ever. It is an error from Setup and Run, naming the statement.
func TestUnpublishableTableIsAnError(t *testing.T) {
	dsn, db := bareDatabase(t)
	if _, err := db.Exec(`CREATE VIEW user_names AS SELECT name FROM users`); err != nil {
		t.Fatal(err)
	}
	l, err := pgcdc.New(memoryManager(t), dsn, pgcdc.WithSlot(slotFor(dsn)), pgcdc.WithPublication("p"), pgcdc.WithTables("user_names"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.Setup(ctx); !errors.Is(err, pgcdc.ErrBadOption) || !strings.Contains(err.Error(), "user_names") {
		t.Fatalf("Setup = %v, want ErrBadOption naming user_names", err)
	}
	if err := l.Run(ctx); !errors.Is(err, pgcdc.ErrBadOption) {
		t.Fatalf("Run = %v, want ErrBadOption before its context ends", err)
	}
}
