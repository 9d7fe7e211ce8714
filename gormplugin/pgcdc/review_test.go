package pgcdc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/depcache/go-depcache/gormplugin"
	"github.com/depcache/go-depcache/gormplugin/pgcdc"
)

// A table in another schema, with a name that needs quoting, named to
// WithTables as the catalogue spells it: its changes carry the table's
// name without the schema, as the plugin's tags do; TRUNCATE too.
func TestQuotedNameInAnotherSchema(t *testing.T) {
	dsn, db := bareDatabase(t)
	if _, err := db.Exec(`CREATE SCHEMA "App Schema"; CREATE TABLE "App Schema"."Mixed Case" (id int PRIMARY KEY, v text)`); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dsn: dsn, db: db, m: memoryManager(t), events: &recorder{}, slot: slotFor(dsn)}
	e.l = e.listener(pgcdc.WithPublication("mixed"), pgcdc.WithTables("App Schema.Mixed Case", "users"))
	if err := e.l.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.run(e.l)
	const table = "Mixed Case"
	before := currentLSN(t, db)
	lsn := e.exec(`INSERT INTO "App Schema"."Mixed Case" VALUES (1, 'a')`)
	sync_(t, e.l, lsn)
	want := []string{gormplugin.ListTag(table), gormplugin.RowTag(table, 1)}
	slices.Sort(want)
	if got := e.events.tagsAfter(before, lsn); !slices.Equal(got, want) {
		t.Fatalf("insert invalidated %q, want %q", got, want)
	}
	before = lsn
	lsn = e.exec(`TRUNCATE "App Schema"."Mixed Case"`)
	sync_(t, e.l, lsn)
	want = []string{gormplugin.ListTag(table), gormplugin.TableTag(table)}
	slices.Sort(want)
	if got := e.events.tagsAfter(before, lsn); !slices.Equal(got, want) {
		t.Fatalf("truncate invalidated %q, want %q", got, want)
	}
}

// A user without the REPLICATION attribute, and one that may replicate
// but not create a FOR ALL TABLES publication: errors that say so, from
// Run at once, not retries.
func TestMissingPrivilegesAreErrors(t *testing.T) {
	dsn, db := bareDatabase(t)
	if _, err := db.Exec(`CREATE ROLE cdc_norepl LOGIN; CREATE ROLE cdc_repl LOGIN REPLICATION`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Exec(`DROP ROLE cdc_norepl; DROP ROLE cdc_repl`) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []struct{ user, want string }{
		{"cdc_norepl", "replication"},
		{"cdc_repl", "publication"},
	} {
		l, err := pgcdc.New(memoryManager(t), strings.Replace(dsn, "user=postgres", "user="+c.user, 1), pgcdc.WithSlot(slotFor(dsn)))
		if err != nil {
			t.Fatal(err)
		}
		err = l.Run(ctx)
		if err == nil || ctx.Err() != nil || !strings.Contains(strings.ToLower(err.Error()), c.want) {
			t.Errorf("%s: Run = %v, want an error about %s before its context ends", c.user, err, c.want)
		}
	}
}

// Every session of the listener ended by the server at once (the
// replication connection and the two others): it reconnects, and a
// write made after is invalidated.
func TestAllSessionsTerminated(t *testing.T) {
	e := newEnv(t, envConfig{opts: []pgcdc.Option{pgcdc.WithStatusInterval(time.Hour)}})
	e.events.waitFor(t, "streaming", func(ev pgcdc.Event) bool { return ev.Kind == pgcdc.EventStreaming })
	sync_(t, e.l, e.exec(`INSERT INTO users VALUES (1, 'a')`)) // the invalidator's connection is open
	var n int
	if err := e.db.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name LIKE 'depcache-pgcdc:%' AND datname = current_database()`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("terminate the listener's sessions: %d terminated, want 3; %v", n, err)
	}
	e.events.waitFor(t, "disconnected", func(ev pgcdc.Event) bool { return ev.Kind == pgcdc.EventDisconnected })
	e.cache("u2", gormplugin.RowTag("users", 2))
	sync_(t, e.l, e.exec(`INSERT INTO users VALUES (2, 'b')`))
	if e.present("u2") {
		t.Fatal("a write after the reconnection was not invalidated")
	}
}

// freezer is a TCP proxy to a server whose connections can be frozen: no
// byte, no close, passes either way any more — a network partition, or a
// server host gone, seen from the client. New connections pass.
type freezer struct {
	ln     net.Listener
	target string
	done   chan struct{}
	mu     sync.Mutex
	conns  []*frozenPair
	wg     sync.WaitGroup
}

type frozenPair struct {
	frozen     atomic.Bool
	client, up net.Conn
}

func newFreezer(t *testing.T, target string) *freezer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target, done: make(chan struct{})}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

func (f *freezer) port() int { return f.ln.Addr().(*net.TCPAddr).Port }

func (f *freezer) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", f.target)
		if err != nil {
			c.Close()
			continue
		}
		p := &frozenPair{client: c, up: up}
		f.mu.Lock()
		f.conns = append(f.conns, p)
		f.mu.Unlock()
		f.wg.Add(2)
		go f.pipe(p, up, c)
		go f.pipe(p, c, up)
	}
}

func (f *freezer) pipe(p *frozenPair, dst, src net.Conn) {
	defer f.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if p.frozen.Load() {
			<-f.done // drop it, and keep the other side open
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			p.client.Close()
			p.up.Close()
			return
		}
	}
}

// freezeConn freezes the i-th connection the proxy accepted.
func (f *freezer) freezeConn(i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conns[i].frozen.Store(true)
}

// freeze freezes every connection open now.
func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.conns {
		p.frozen.Store(true)
	}
}

func (f *freezer) close() {
	f.ln.Close()
	close(f.done)
	f.mu.Lock()
	for _, p := range f.conns {
		p.client.Close()
		p.up.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// A connection that goes silent without closing (a partition, a server
// host that died): the server ends its side (wal_sender_timeout; here
// pg_terminate_backend), the client learns nothing from TCP for many
// minutes. The listener asks the server for a reply with its periodic
// status and takes a connection that stays silent past twice the status
// interval (at least 2 s) for lost. It used to wait on it for good, every
// later change uninvalidated.
func TestSilentConnectionIsReplaced(t *testing.T) {
	e, f := proxiedEnv(t)
	l, db := e.l, e.db

	f.freeze()
	var n int
	if err := db.QueryRow(`SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots WHERE slot_name = $1 AND active`, e.slot).Scan(&n); err != nil || n != 1 {
		t.Fatalf("end the server's side of the replication connection: %d, %v", n, err)
	}
	e.cache("u2", gormplugin.RowTag("users", 2))
	e.syncOrReport(l, e.exec(`INSERT INTO users VALUES (2, 'b')`))
	if e.present("u2") {
		t.Fatal("a write after the connection went silent was not invalidated")
	}
	ev := e.events.waitFor(t, "disconnected", func(ev pgcdc.Event) bool { return ev.Kind == pgcdc.EventDisconnected })
	t.Logf("the listener gave the silent connection up: %v", ev.Err)
}

// proxiedEnv is an env whose listener reaches the server through a
// freezer (its connections, in order: the session's plain and replication
// ones, then the invalidator's), with a write already invalidated.
func proxiedEnv(t *testing.T) (*env, *freezer) {
	s := server(t)
	dsn, db := bareDatabase(t)
	f := newFreezer(t, fmt.Sprintf("127.0.0.1:%d", s.Port))
	proxied := strings.Replace(dsn, fmt.Sprintf("port=%d", s.Port), fmt.Sprintf("port=%d", f.port()), 1)
	e := &env{t: t, dsn: dsn, db: db, m: memoryManager(t), events: &recorder{}, slot: slotFor(dsn)}
	// The slot exists before the first write (else Processed starts past
	// it, and the sync below returns before the session is complete); made
	// by a listener on the server itself, so that the proxy's connections
	// are the session's only.
	if err := e.listener().Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	l, err := pgcdc.New(e.m, proxied, pgcdc.WithSlot(e.slot), pgcdc.WithObserver(e.events.add),
		pgcdc.WithBackoff(10*time.Millisecond, 200*time.Millisecond), pgcdc.WithStatusInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	e.l = l
	e.run(l)
	sync_(t, l, e.exec(`INSERT INTO users VALUES (1, 'a')`))
	return e, f
}

// syncOrReport is sync_, reporting the listener's events when it fails.
func (e *env) syncOrReport(l *pgcdc.Listener, lsn pgcdc.LSN) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := l.WaitFor(ctx, lsn); err != nil {
		e.events.mu.Lock()
		for _, ev := range e.events.events {
			if ev.Kind != pgcdc.EventConfirmed && ev.Kind != pgcdc.EventInvalidated {
				e.t.Logf("event %s %s %v", ev.Kind, ev.LSN, ev.Err)
			}
		}
		e.events.mu.Unlock()
		e.t.Fatal(err)
	}
}

// The session's other connections can go silent too: the invalidator's
// (its visibility check) and the reader's catalogue connection (read when
// a table is first described). Their queries had no bound, and the
// session waited on them for good. They time out (queryTimeout), the
// session ends and the listener reconnects.
func TestSilentQueryConnectionsAreReplaced(t *testing.T) {
	pgcdc.ShortenTimeouts(t, 500*time.Millisecond, 10*time.Second)
	for _, c := range []struct {
		name string
		conn int
		sql  []string
		key  int
	}{
		{"invalidator's", 2, []string{`INSERT INTO users VALUES (2, 'b')`}, 2},
		{"catalogue", 0, []string{`CREATE TABLE later (id int PRIMARY KEY)`, `INSERT INTO later VALUES (3)`}, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, f := proxiedEnv(t)
			f.freezeConn(c.conn)
			table := "users"
			if c.key == 3 {
				table = "later"
			}
			e.cache("row", gormplugin.RowTag(table, c.key))
			e.syncOrReport(e.l, e.exec(c.sql...))
			if e.present("row") {
				t.Fatal("a write after the connection went silent was not invalidated")
			}
		})
	}
}

// A publication dropped while the listener runs: decoding fails at the
// same change on every reconnection, even once Run has created the
// publication again. It used to reconnect for ever (184 times in 6 s);
// it is an error that says what to do.
func TestDroppedPublicationIsAnError(t *testing.T) {
	e := newEnv(t, envConfig{noRun: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.l.Run(ctx) }()
	sync_(t, e.l, e.exec(`INSERT INTO users VALUES (1, 'a')`))
	e.exec(`DROP PUBLICATION depcache_pgcdc`, `INSERT INTO users VALUES (2, 'b')`)
	if err := <-done; !errors.Is(err, pgcdc.ErrPublication) || !strings.Contains(err.Error(), "pg_drop_replication_slot") {
		t.Fatalf("Run after its publication was dropped = %v, want ErrPublication before its context ends", err)
	}
}

// retryLog keeps the retry_in of every "reconnecting" log record.
type retryLog struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (r *retryLog) Enabled(context.Context, slog.Level) bool { return true }
func (r *retryLog) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *retryLog) WithGroup(string) slog.Handler            { return r }
func (r *retryLog) Handle(_ context.Context, rec slog.Record) error {
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "retry_in" {
			r.mu.Lock()
			r.waits = append(r.waits, a.Value.Duration())
			r.mu.Unlock()
		}
		return true
	})
	return nil
}

// A session that starts streaming and fails at once, every time (here its
// third connection is refused: the role's connection limit): the waits
// between attempts grow. They stayed at the minimum, since any session
// that had streamed reset the backoff: 20 ms apart for ever.
func TestFailingSessionsBackOff(t *testing.T) {
	e := newEnv(t, envConfig{noRun: true})
	// Two connections, of which the replication one is not counted: the
	// invalidator's is refused once streaming has begun.
	e.exec(`CREATE ROLE cdc_lim LOGIN REPLICATION CONNECTION LIMIT 1`)
	t.Cleanup(func() { e.db.Exec(`DROP ROLE cdc_lim`) })
	retries := &retryLog{}
	rec := &recorder{}
	const min = 10 * time.Millisecond
	l, err := pgcdc.New(e.m, strings.Replace(e.dsn, "user=postgres", "user=cdc_lim", 1), pgcdc.WithSlot(e.slot),
		pgcdc.WithObserver(rec.add), pgcdc.WithBackoff(min, time.Second), pgcdc.WithLogger(slog.New(retries)))
	if err != nil {
		t.Fatal(err)
	}
	stop := e.start(l)
	n := 0
	rec.waitFor(t, "five disconnections", func(ev pgcdc.Event) bool {
		if ev.Kind == pgcdc.EventDisconnected {
			n++
		}
		return n >= 5
	})
	if err := stop(); err == nil {
		t.Error("Run stopped while failing returned nil")
	}
	retries.mu.Lock()
	defer retries.mu.Unlock()
	if len(retries.waits) < 5 || retries.waits[4] < 8*min {
		t.Fatalf("waits between failing sessions %v: the fifth is not 8 times the minimum", retries.waits)
	}
}

// The slot dropped between two Runs of one listener (an operator, a
// cleanup script): Run created a new slot from the current position and
// streamed on, and the changes committed meanwhile were never
// invalidated. It is ErrSlotLost.
func TestDroppedSlotIsAnError(t *testing.T) {
	e := newEnv(t, envConfig{noRun: true})
	stop := e.run(e.l)
	sync_(t, e.l, e.exec(`INSERT INTO users VALUES (1, 'a')`))
	stop()
	dropSlot(t, e.dsn, e.slot)
	e.cache("u2", gormplugin.RowTag("users", 2))
	e.exec(`INSERT INTO users VALUES (2, 'b')`)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.l.Run(ctx); !errors.Is(err, pgcdc.ErrSlotLost) {
		t.Fatalf("Run after its slot was dropped = %v, want ErrSlotLost before its context ends", err)
	}
}
