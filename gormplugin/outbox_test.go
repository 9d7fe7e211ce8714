package gormplugin_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/schema"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

// flakyBackend fails every call with a network error while down, and keeps
// what it held: a Redis restarted from a snapshot taken before the writes.
type flakyBackend struct {
	backends.Backend
	down            atomic.Bool
	afterInvalidate atomic.Pointer[func()] // runs (once) after the next Invalidate

	watch        string // a tag whose invalidations are counted once watching
	watching     atomic.Bool
	watchedCalls atomic.Int64

	// stalled, when set, makes Invalidate report on it (buffered: without
	// blocking) and then wait for release or its context: a Redis that
	// stopped answering.
	stalled, release chan struct{}
}

// processBackend is one simulated process's view of the world's store.
type processBackend struct{ *flakyBackend }

var errDown = &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}

func (f *flakyBackend) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	if f.down.Load() {
		return backends.Lookup{}, errDown
	}
	return f.Backend.Lookup(ctx, ns, key)
}

func (f *flakyBackend) Fill(ctx context.Context, ns string, fl backends.Fill) error {
	if f.down.Load() {
		return errDown
	}
	return f.Backend.Fill(ctx, ns, fl)
}

func (f *flakyBackend) Epoch(ctx context.Context) (backends.Epoch, error) {
	if f.down.Load() {
		return backends.Epoch{}, errDown
	}
	return f.Backend.Epoch(ctx)
}

func (f *flakyBackend) Invalidate(ctx context.Context, ns string, tags ...string) (int, error) {
	if f.down.Load() {
		return 0, errDown
	}
	if f.stalled != nil {
		select {
		case f.stalled <- struct{}{}:
		default:
		}
		select {
		case <-f.release:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if f.watching.Load() && slices.Contains(tags, f.watch) {
		f.watchedCalls.Add(1)
	}
	n, err := f.Backend.Invalidate(ctx, ns, tags...)
	if hook := f.afterInvalidate.Swap(nil); hook != nil {
		(*hook)()
	}
	return n, err
}

func (f *flakyBackend) Clear(ctx context.Context, ns string) (int, error) {
	if f.down.Load() {
		return 0, errDown
	}
	return f.Backend.Clear(ctx, ns)
}

// The Sets of the backend, for conjunction tags (down like the rest).
func (f *flakyBackend) AddMember(ctx context.Context, ns, name, member string, limit int) (bool, error) {
	if f.down.Load() {
		return false, errDown
	}
	return f.Backend.(backends.Sets).AddMember(ctx, ns, name, member, limit)
}

func (f *flakyBackend) Members(ctx context.Context, ns, name string) ([]string, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.Backend.(backends.Sets).Members(ctx, ns, name)
}

func (f *flakyBackend) RemoveSet(ctx context.Context, ns, name string) error {
	if f.down.Load() {
		return errDown
	}
	return f.Backend.(backends.Sets).RemoveSet(ctx, ns, name)
}

// Item is the outbox tests' model, in a table of the test's own.
type Item struct {
	ID    uint `gorm:"primaryKey"`
	Title string
}

// outboxWorld is one database and one backend shared by several "processes"
// (a manager and a plugin each, on a *gorm.DB of their own).
type outboxWorld struct {
	t       *testing.T
	c       dbCase
	dsn     string
	prefix  string // table prefix
	outbox  string // outbox table
	ns      string // the managers' key prefix
	backend *flakyBackend
	truth   *gorm.DB            // no plugin
	opts    []gormplugin.Option // every process's, beside the outbox's
}

type outboxProc struct {
	db     *gorm.DB
	m      *depcache.Manager
	plugin *gormplugin.Plugin
	closed bool
}

func newOutboxWorld(t *testing.T, c dbCase) *outboxWorld {
	t.Helper()
	w := &outboxWorld{t: t, c: c, dsn: c.dsn(t), prefix: "ob" + randomHex(4) + "_", ns: "obtest:" + randomHex(4)}
	w.outbox = w.prefix + "outbox"
	mem := memory.New()
	w.backend = &flakyBackend{Backend: mem}
	truth, err := gorm.Open(c.open(w.dsn), w.gormConfig())
	if err != nil {
		t.Fatalf("open %s: %v", c.dialect, err)
	}
	w.truth = truth
	if err := truth.AutoMigrate(&Item{}); err != nil {
		t.Fatal(err)
	}
	if err := truth.Create(&Item{Title: "v0"}).Error; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.dialect != "sqlite" {
			// Migrator.DropTable skips a table given by name on PostgreSQL.
			if err := truth.Exec("DROP TABLE IF EXISTS " + w.outbox).Error; err != nil {
				t.Errorf("drop the outbox table: %v", err)
			}
			if err := truth.Migrator().DropTable(&Item{}); err != nil {
				t.Errorf("drop tables: %v", err)
			}
		}
		if sqlDB, err := truth.DB(); err == nil {
			sqlDB.Close()
		}
		mem.Close()
	})
	return w
}

func (w *outboxWorld) gormConfig() *gorm.Config {
	return &gorm.Config{
		NamingStrategy: schema.NamingStrategy{TablePrefix: w.prefix},
		Logger:         logger.Default.LogMode(logger.Silent),
	}
}

// start starts a process: with the outbox or without.
func (w *outboxWorld) start(outbox bool, gormOpts ...func(*gorm.Config)) *outboxProc {
	w.t.Helper()
	cfg := w.gormConfig()
	for _, o := range gormOpts {
		o(cfg)
	}
	db, err := gorm.Open(w.c.open(w.dsn), cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	// The breaker opens at the first failure and probes at once, so that
	// what the test sees does not depend on how many reads it makes.
	// A backend value of its own: managers of one prefix on one backend
	// value cover each other's holds and outages, as in one process; these
	// stand for processes of their own.
	m := depcache.New(&processBackend{w.backend}, depcache.WithPrefix(w.ns), depcache.WithLogger(testLogger()),
		depcache.WithBreaker(1, time.Millisecond), depcache.WithRetryBackoff(time.Millisecond, 10*time.Millisecond))
	opts := []gormplugin.Option{gormplugin.WithLogger(testLogger()), gormplugin.WithOutboxPoll(20 * time.Millisecond)}
	if outbox {
		opts = append(opts, gormplugin.WithOutboxTable(w.outbox))
	}
	opts = append(opts, w.opts...)
	p := gormplugin.New(m, opts...)
	if err := db.Use(p); err != nil {
		w.t.Fatalf("db.Use: %v", err)
	}
	proc := &outboxProc{db: db, m: m, plugin: p}
	w.t.Cleanup(proc.stop)
	return proc
}

// stop ends a process as a crash would for what matters here: its
// in-memory retries are lost, its outbox rows stay.
func (p *outboxProc) stop() {
	if p.closed {
		return
	}
	p.closed = true
	p.plugin.Close()
	p.m.Close()
	if sqlDB, err := p.db.DB(); err == nil {
		sqlDB.Close()
	}
}

// read returns item 1's title through the cache, and whether it was a hit.
func (p *outboxProc) read(t *testing.T) (string, bool) {
	t.Helper()
	ctx, trace := depcache.Track(context.Background())
	title, err := depcache.Fetch(ctx, p.m, "item:1", func(ctx context.Context) (string, error) {
		var it Item
		err := p.db.WithContext(ctx).First(&it, 1).Error
		return it.Title, err
	})
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return title, trace.Hits() > 0
}

func (w *outboxWorld) rows() int64 {
	w.t.Helper()
	var n int64
	if err := w.truth.Table(w.outbox).Count(&n).Error; err != nil {
		w.t.Fatalf("count outbox rows: %v", err)
	}
	return n
}

// readUntilHit reads until a read is a hit (the process caches again),
// counting reads that were not want. It fails the test if no read hits
// within 10s.
func readUntilHit(t *testing.T, p *outboxProc, want string) (stale int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		title, hit := p.read(t)
		if title != want {
			stale++
		}
		if hit {
			return stale
		}
		if time.Now().After(deadline) {
			t.Fatalf("no cache hit within 10s (stale reads: %d)", stale)
		}
		time.Sleep(time.Millisecond) // let the breaker's probe run
	}
}

// outage runs the scenario of issue 15: a reader B has item 1 cached; the
// backend goes down; B reads during the outage; a writer A commits an
// update and dies before the backend returns; a process C starts during
// the outage; the backend comes back with the old entry. It returns the
// stale reads of B and C once the backend is back.
func outage(t *testing.T, w *outboxWorld, outbox bool) (staleB, staleC int) {
	b := w.start(outbox)
	if title, _ := b.read(t); title != "v0" {
		t.Fatalf("first read: %q", title)
	}
	if title, hit := b.read(t); title != "v0" || !hit {
		t.Fatalf("second read: %q hit=%v, want a hit on v0", title, hit)
	}

	w.backend.down.Store(true)
	for range 3 {
		if title, hit := b.read(t); title != "v0" || hit {
			t.Fatalf("read during the outage: %q hit=%v", title, hit)
		}
	}
	a := w.start(outbox)
	if err := a.db.Model(&Item{ID: 1}).Update("title", "v1").Error; err != nil {
		t.Fatalf("update during the outage: %v", err)
	}
	if outbox {
		if n := w.rows(); n != 1 {
			t.Fatalf("outbox rows after the write: %d, want 1", n)
		}
	}
	a.stop() // dies before the backend returns
	if outbox {
		if n := w.rows(); n != 1 {
			t.Fatalf("outbox rows after the writer died: %d, want 1", n)
		}
	}
	c := w.start(outbox) // started during the outage
	if title, hit := c.read(t); title != "v1" || hit {
		t.Fatalf("C's read during the outage: %q hit=%v", title, hit)
	}

	w.backend.down.Store(false)
	staleB = readUntilHit(t, b, "v1")
	staleC = readUntilHit(t, c, "v1")
	return staleB, staleC
}

func TestOutboxDeliversWhatADeadWriterLeft(t *testing.T) {
	for _, c := range dbCases() {
		t.Run(c.dialect, func(t *testing.T) {
			w := newOutboxWorld(t, c)
			staleB, staleC := outage(t, w, true)
			if staleB != 0 || staleC != 0 {
				t.Errorf("stale reads after recovery: reader alive during the outage %d, process started during it %d; want 0", staleB, staleC)
			}
			w.expectDelivered(t, c.dialect)
		})
	}
}

// expectDelivered checks that the outbox rows present now are deleted: at
// once on the servers; on SQLite by the next write transaction of a process
// that delivered them (the flusher never writes there while the
// application runs), and that write leaves only its own row.
func (w *outboxWorld) expectDelivered(t *testing.T, dialect string) {
	t.Helper()
	if dialect != "sqlite" {
		if n := w.rows(); n != 0 {
			t.Errorf("outbox rows after recovery: %d, want 0", n)
		}
		return
	}
	var before []string
	if err := w.truth.Table(w.outbox).Pluck("id", &before).Error; err != nil {
		t.Fatal(err)
	}
	p := w.start(true)
	if err := p.plugin.FlushOutbox(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.db.Model(&Item{ID: 1}).Update("title", "after").Error; err != nil {
		t.Fatal(err)
	}
	var after []string
	if err := w.truth.Table(w.outbox).Pluck("id", &after).Error; err != nil {
		t.Fatal(err)
	}
	for _, id := range before {
		if slices.Contains(after, id) {
			t.Errorf("outbox row %s still there after recovery and a write (rows: %v)", id, after)
		}
	}
}

// The control: without the outbox the same scenario serves stale data, so
// the test above can fail.
func TestOutboxControlWithoutIt(t *testing.T) {
	w := newOutboxWorld(t, dbCases()[0])
	staleB, staleC := outage(t, w, false)
	t.Logf("without the outbox: %d stale reads by the reader alive during the outage, %d by the process started during it", staleB, staleC)
	if staleB == 0 || staleC == 0 {
		t.Errorf("stale reads without the outbox: B %d, C %d; want both > 0 (the scenario no longer shows what the outbox fixes)", staleB, staleC)
	}
}

// Every write path records its tags in the outbox in the write's own
// transaction: with the backend down, each leaves a row; once it is back,
// FlushOutbox delivers them and the rows are gone.
func TestOutboxEveryWritePath(t *testing.T) {
	for _, c := range dbCases() {
		t.Run(c.dialect, func(t *testing.T) {
			w := newOutboxWorld(t, c)
			p := w.start(true)
			skip := w.start(true, func(cfg *gorm.Config) { cfg.SkipDefaultTransaction = true })
			table := p.db.NamingStrategy.TableName("Item")
			writes := []struct {
				name  string
				write func() error
			}{
				{"implicit transaction", func() error { return p.db.Model(&Item{ID: 1}).Update("title", "a").Error }},
				{"Transaction", func() error {
					return p.db.Transaction(func(tx *gorm.DB) error {
						return tx.Model(&Item{ID: 1}).Update("title", "b").Error
					})
				}},
				{"Begin/Commit", func() error {
					tx := p.db.Begin()
					if err := tx.Create(&Item{Title: "c"}).Error; err != nil {
						tx.Rollback()
						return err
					}
					return tx.Commit().Error
				}},
				{"SkipDefaultTransaction", func() error { return skip.db.Model(&Item{ID: 1}).Update("title", "d").Error }},
				{"SkipDefaultTransaction mass update", func() error {
					return skip.db.Model(&Item{}).Where("title <> ?", "zzz").Update("title", "e").Error
				}},
				{"raw Exec", func() error { return p.db.Exec("UPDATE "+table+" SET title = ? WHERE id = ?", "f", 1).Error }},
				{"raw Exec, SkipDefaultTransaction", func() error {
					return skip.db.Exec("DELETE FROM "+table+" WHERE title = ?", "nothing").Error
				}},
				{"a transaction the plugin did not begin", func() error {
					return p.db.Connection(func(conn *gorm.DB) error {
						return conn.Transaction(func(tx *gorm.DB) error {
							return tx.Model(&Item{ID: 1}).Update("title", "g").Error
						})
					})
				}},
			}
			w.backend.down.Store(true)
			for i, wr := range writes {
				if err := wr.write(); err != nil {
					t.Fatalf("%s: %v", wr.name, err)
				}
				if n := w.rows(); n != int64(i+1) {
					t.Fatalf("after %s: %d outbox rows, want %d", wr.name, n, i+1)
				}
			}
			var tags []string
			if err := w.truth.Table(w.outbox).Pluck("tags", &tags).Error; err != nil {
				t.Fatal(err)
			}
			all := strings.Join(tags, " ")
			for _, want := range []string{gormplugin.RowTag(table, 1), gormplugin.ListTag(table), gormplugin.TableTag(table)} {
				if !strings.Contains(all, `"`+want+`"`) {
					t.Errorf("outbox tags %s lack %q", all, want)
				}
			}

			// A transaction that rolls back leaves no row.
			rolled := errors.New("rolled back")
			err := p.db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Model(&Item{ID: 1}).Update("title", "never").Error; err != nil {
					return err
				}
				return rolled
			})
			if !errors.Is(err, rolled) {
				t.Fatalf("Transaction: %v", err)
			}
			if n := w.rows(); n != int64(len(writes)) {
				t.Errorf("after a rollback: %d rows, want %d", n, len(writes))
			}

			w.backend.down.Store(false)
			if err := p.plugin.FlushOutbox(context.Background()); err != nil {
				t.Fatalf("FlushOutbox: %v", err)
			}
			if n := w.rows(); n != 0 {
				t.Errorf("after FlushOutbox: %d rows, want 0", n)
			}
		})
	}
}

// With the backend up, a write's rows are deleted once its invalidation
// returned, by the writing process.
func TestOutboxDeletesDeliveredRows(t *testing.T) {
	w := newOutboxWorld(t, dbCases()[0])
	p := w.start(true)
	for i := range 5 {
		if err := p.db.Model(&Item{ID: 1}).Update("title", "v"+string(rune('a'+i))).Error; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.plugin.InvalidateDependency(context.Background(), "manual:1"); err != nil {
		t.Fatal(err)
	}
	p.stop() // Close deletes what was delivered and not yet deleted
	if n := w.rows(); n != 0 {
		t.Errorf("outbox rows after delivered writes: %d, want 0", n)
	}
}

// A write whose outbox row cannot be written is not committed.
func TestOutboxInsertFailureRollsBack(t *testing.T) {
	for _, c := range dbCases() {
		t.Run(c.dialect, func(t *testing.T) {
			w := newOutboxWorld(t, c)
			p := w.start(true)
			if err := w.truth.Exec("DROP TABLE " + w.outbox).Error; err != nil {
				t.Fatal(err)
			}
			err := p.db.Model(&Item{ID: 1}).Update("title", "lost").Error
			if !errors.Is(err, gormplugin.ErrOutbox) {
				t.Fatalf("update without an outbox table: %v, want ErrOutbox", err)
			}
			var it Item
			if err := w.truth.First(&it, 1).Error; err != nil {
				t.Fatal(err)
			}
			if it.Title != "v0" {
				t.Errorf("title %q after a failed outbox insert, want v0 (rolled back)", it.Title)
			}
		})
	}
}

// A process started while rows are left holds its manager: it serves
// nothing from the cache until it has delivered them.
func TestOutboxHoldsAtStart(t *testing.T) {
	w := newOutboxWorld(t, dbCases()[0])
	b := w.start(true)
	if title, _ := b.read(t); title != "v0" {
		t.Fatal(title)
	}
	w.backend.down.Store(true)
	a := w.start(true)
	if err := a.db.Model(&Item{ID: 1}).Update("title", "v1").Error; err != nil {
		t.Fatal(err)
	}
	a.stop()
	c := w.start(true)
	if !c.m.Held() {
		t.Fatal("a process started with rows left in the outbox does not hold its manager")
	}
	w.backend.down.Store(false)
	if err := c.plugin.FlushOutbox(context.Background()); err != nil {
		t.Fatal(err)
	}
	if stale := readUntilHit(t, c, "v1"); stale != 0 {
		t.Errorf("%d stale reads after FlushOutbox", stale)
	}
}

// A process whose database is closed while it holds its manager for rows
// left behind stops its outbox as Close would, and says so: the hold was
// kept for good (nothing could read the rows any more), and the manager,
// perhaps shared with other databases, served nothing from then on,
// silently (GORM's TestTransactionOnClosedConn did that to every later test
// of the suite's cached run).
func TestOutboxOfAClosedDatabaseReleasesItsHold(t *testing.T) {
	w := newOutboxWorld(t, dbCases()[0])
	w.backend.down.Store(true)
	a := w.start(true)
	if err := a.db.Model(&Item{ID: 1}).Update("title", "v1").Error; err != nil {
		t.Fatal(err)
	}
	a.stop()
	c := w.start(true)
	if !c.m.Held() {
		t.Fatal("a process started with rows left in the outbox does not hold its manager")
	}
	sqlDB, err := c.db.DB()
	if err != nil {
		t.Fatal(err)
	}
	sqlDB.Close()
	// The flusher retries its failed delivery within 5 s (its longest
	// backoff); polling for the outcome, not ordering with it.
	deadline := time.Now().Add(30 * time.Second)
	for c.m.Held() {
		if time.Now().After(deadline) {
			t.Fatal("the manager is still held 30 s after its outbox's database was closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// FlushOutbox returns when its context ends, also while the flusher's own
// delivery waits for a Redis that does not answer: a readiness check under
// a 300 ms context took 3.4 s against a stopped redis-server, and failed
// with "read depcache_outbox: context deadline exceeded", blaming the table.
func TestFlushOutboxEndsWithItsContext(t *testing.T) {
	w := newOutboxWorld(t, dbCases()[0])
	w.backend.down.Store(true)
	a := w.start(true)
	if err := a.db.Model(&Item{ID: 1}).Update("title", "v1").Error; err != nil {
		t.Fatal(err)
	}
	a.stop()
	w.backend.down.Store(false)
	w.backend.stalled, w.backend.release = make(chan struct{}, 1), make(chan struct{})
	c := w.start(true) // rows left: its flusher delivers them at once
	<-w.backend.stalled
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- c.plugin.FlushOutbox(ctx) }()
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) || !errors.Is(err, gormplugin.ErrOutbox) || strings.Contains(err.Error(), "read ") {
			t.Errorf("FlushOutbox after its context ended, a delivery running: %v; want ErrOutbox and context.Canceled, not a failed read", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("FlushOutbox did not return once its context ended: it waits for the delivery already running")
		<-res
	}
	close(w.backend.release)
	if err := c.plugin.FlushOutbox(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := w.rows(); n != 0 {
		t.Errorf("%d outbox rows after FlushOutbox", n)
	}
	if stale := readUntilHit(t, c, "v1"); stale != 0 {
		t.Errorf("%d stale reads after FlushOutbox", stale)
	}
}

// A plugin with WithOutbox that is not installed (db.Use not called, or
// failed) says that its outbox is not open: its InvalidateDependency
// returned nil, durable in appearance only, and FlushOutbox nil as if it
// had found the outbox empty.
func TestOutboxBeforeUse(t *testing.T) {
	ctx := context.Background()
	m := depcache.New(memory.New(), depcache.WithLogger(testLogger()))
	defer m.Close()
	p := gormplugin.New(m, gormplugin.WithOutbox())
	defer p.Close()
	if err := m.Set(ctx, "k", "v", time.Hour, "users::1"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.InvalidateDependency(ctx, "users::1"); !errors.Is(err, gormplugin.ErrOutbox) {
		t.Errorf("InvalidateDependency before db.Use: %v, want an error wrapping ErrOutbox", err)
	}
	if ok, err := m.Exists(ctx, "k"); err != nil || ok {
		t.Errorf("InvalidateDependency before db.Use did not invalidate: exists %v, %v", ok, err)
	}
	if err := p.FlushOutbox(ctx); !errors.Is(err, gormplugin.ErrOutbox) {
		t.Errorf("FlushOutbox before db.Use: %v, want an error wrapping ErrOutbox", err)
	}
	plain := gormplugin.New(m)
	if _, err := plain.InvalidateDependency(ctx, "users::1"); err != nil {
		t.Errorf("InvalidateDependency without WithOutbox: %v", err)
	}
	if err := plain.FlushOutbox(ctx); err != nil {
		t.Errorf("FlushOutbox without WithOutbox: %v", err)
	}
}

func TestOutboxBadTableName(t *testing.T) {
	w := newOutboxWorld(t, dbCases()[0])
	db, err := gorm.Open(w.c.open(w.dsn), w.gormConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
	}()
	m := depcache.New(memory.New(), depcache.WithLogger(testLogger()))
	defer m.Close()
	p := gormplugin.New(m, gormplugin.WithOutboxTable("x; DROP TABLE y"))
	defer p.Close()
	if err := db.Use(p); !errors.Is(err, gormplugin.ErrOutbox) || !strings.Contains(err.Error(), "x; DROP TABLE y") {
		t.Errorf("db.Use with a bad outbox table name: %v", err)
	}
}

// A delivery deletes the rows it read, by id: a row committed for the same
// tag after its invalidation (another process's write, whose own
// invalidation failed) is not deleted until it has been delivered.
func TestOutboxDeliveryKeepsALaterRowForTheSameTag(t *testing.T) {
	for _, c := range dbCases() {
		t.Run(c.dialect, func(t *testing.T) {
			w := newOutboxWorld(t, c)
			a := w.start(true)
			tag := gormplugin.RowTag(a.db.NamingStrategy.TableName("Item"), 1)
			w.backend.down.Store(true)
			if err := a.db.Model(&Item{ID: 1}).Update("title", "v1").Error; err != nil {
				t.Fatal(err)
			}
			a.stop() // its retry is lost: only the outbox delivers
			w.backend.down.Store(false)
			w.backend.watch = tag
			later := func() {
				// Right after a delivery's invalidation, another process's
				// write to the same row commits, and its invalidation fails.
				if err := w.truth.Table(w.outbox).Create(map[string]any{
					"prefix": w.ns, "id": "zzzz-later", "tags": `["` + tag + `"]`, "created_at": 0,
				}).Error; err != nil {
					t.Error(err)
				}
				w.backend.watching.Store(true)
			}
			w.backend.afterInvalidate.Store(&later)
			c := w.start(true) // delivers at start, and so does FlushOutbox
			if err := c.plugin.FlushOutbox(context.Background()); err != nil {
				t.Fatal(err)
			}
			var ids []string
			if err := w.truth.Table(w.outbox).Pluck("id", &ids).Error; err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(ids, "zzzz-later") && w.backend.watchedCalls.Load() == 0 {
				t.Errorf("the later row was deleted without being delivered (rows left: %v)", ids)
			}
			if err := c.plugin.FlushOutbox(context.Background()); err != nil {
				t.Fatal(err)
			}
			if n := w.rows(); n != 0 {
				t.Errorf("%d rows after the second delivery, want 0", n)
			}
		})
	}
}

// A process whose breaker never opened (it read nothing during the outage)
// learns of the rows a dead writer left from its polls, and delivers them.
func TestOutboxPollDeliversRowsLeftBehind(t *testing.T) {
	w := newOutboxWorld(t, dbCases()[0])
	b := w.start(true)
	if title, _ := b.read(t); title != "v0" {
		t.Fatal(title)
	}
	w.backend.down.Store(true)
	a := w.start(true)
	if err := a.db.Model(&Item{ID: 1}).Update("title", "v1").Error; err != nil {
		t.Fatal(err)
	}
	a.stop()
	w.backend.down.Store(false)
	// SQLite: the flusher never deletes while the application runs; the
	// delivery shows in b's reads. A hit of v1, not v1 alone: while the
	// flusher delivers, it holds the manager and reads return the
	// database's v1 before the row is queued for b's next write to delete.
	deadline := time.Now().Add(10 * time.Second)
	for {
		title, hit := b.read(t)
		if title == "v1" && hit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the row a dead writer left was not delivered by the other process's polls within 10s")
		}
		time.Sleep(5 * time.Millisecond) // polls run every 20ms
	}
	var left []string
	if err := w.truth.Table(w.outbox).Pluck("id", &left).Error; err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 {
		t.Fatalf("outbox rows before b writes: %v, want the dead writer's one", left)
	}
	// b's next write deletes the row it delivered.
	if err := b.db.Model(&Item{ID: 1}).Update("title", "v2").Error; err != nil {
		t.Fatal(err)
	}
	var after []string
	if err := w.truth.Table(w.outbox).Pluck("id", &after).Error; err != nil {
		t.Fatal(err)
	}
	if slices.Contains(after, left[0]) {
		t.Errorf("the delivered row %s is still there after b's write (rows: %v)", left[0], after)
	}
}

// A tag that is not valid UTF-8 reaches the backend as it is (JSON alone
// would replace its bad bytes).
func TestOutboxKeepsTagBytes(t *testing.T) {
	w := newOutboxWorld(t, dbCases()[0])
	a := w.start(true)
	ctx := context.Background()
	tag := "bin::\xff\x00\xfe"
	if err := a.m.Set(ctx, "k", "v", 0, tag); err != nil {
		t.Fatal(err)
	}
	w.backend.down.Store(true)
	if _, err := a.plugin.InvalidateDependency(ctx, tag); err == nil {
		t.Fatal("InvalidateDependency with the backend down: no error")
	}
	a.stop() // its retry is lost: only the outbox row can deliver it
	w.backend.down.Store(false)
	c := w.start(true)
	if err := c.plugin.FlushOutbox(ctx); err != nil {
		t.Fatal(err)
	}
	if n := w.rows(); n != 0 {
		t.Fatalf("%d rows after FlushOutbox", n)
	}
	if ok, err := c.m.Exists(ctx, "k"); err != nil || ok {
		t.Errorf("entry tagged %q still there after its durable invalidation (err %v)", tag, err)
	}
}

// The function InvalidateInTx returns waits for the invalidation at most
// the context InvalidateInTx was given, as a GORM write does (the row is in
// the outbox; the invalidation goes on in the background, and Close waits
// for it): under a 300 ms context it took 3.3 s against a stopped
// redis-server, up to the 5 s invalidation timeout against a frozen one.
func TestSQLOutboxAfterWaitsAtMostItsContext(t *testing.T) {
	w := newOutboxWorld(t, dbCases()[0])
	sqlDB, err := w.truth.DB()
	if err != nil {
		t.Fatal(err)
	}
	// The stalled invalidation ends only when released.
	m := depcache.New(w.backend, depcache.WithPrefix(w.ns), depcache.WithLogger(testLogger()), depcache.WithInvalidationTimeout(time.Hour))
	defer m.Close()
	o, err := gormplugin.NewSQLOutbox(m, sqlDB, "sqlite", gormplugin.WithOutboxTable(w.outbox), gormplugin.WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Set(context.Background(), "k", "v", 0, "users::1"); err != nil {
		t.Fatal(err)
	}
	w.backend.stalled, w.backend.release = make(chan struct{}, 1), make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	tx, err := sqlDB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	after, err := o.InvalidateInTx(ctx, tx, "users::1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	returned := make(chan struct{})
	go func() {
		after()
		close(returned)
	}()
	<-w.backend.stalled
	cancel()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Error("after() did not return once InvalidateInTx's context ended: it waits for the invalidation")
	}
	close(w.backend.release)
	<-returned
	o.Close() // waits for the invalidation going on
	if ok, err := m.Exists(context.Background(), "k"); err != nil || ok {
		t.Errorf("entry still there after the invalidation went on in the background: %v, %v", ok, err)
	}
	if n := w.rows(); n != 0 {
		t.Errorf("%d outbox rows after the invalidation and Close", n)
	}
}

// SQLOutbox gives writes made with database/sql, and invalidations by
// hand, the same durability.
func TestSQLOutbox(t *testing.T) {
	for _, c := range dbCases() {
		t.Run(c.dialect, func(t *testing.T) {
			w := newOutboxWorld(t, c)
			sqlDB, err := w.truth.DB()
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			open := func() (*gormplugin.SQLOutbox, *depcache.Manager) {
				m := depcache.New(w.backend, depcache.WithPrefix(w.ns), depcache.WithLogger(testLogger()),
					depcache.WithRetryBackoff(time.Hour, time.Hour)) // only the outbox delivers
				o, err := gormplugin.NewSQLOutbox(m, sqlDB, c.dialect, gormplugin.WithOutboxTable(w.outbox), gormplugin.WithLogger(testLogger()))
				if err != nil {
					t.Fatal(err)
				}
				return o, m
			}
			a, am := open()
			for _, tag := range []string{"users::1", "users::2"} {
				if err := am.Set(ctx, tag, "v", 0, tag); err != nil {
					t.Fatal(err)
				}
			}
			w.backend.down.Store(true)

			tx, err := sqlDB.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			after, err := a.InvalidateInTx(ctx, tx, "users::1")
			if err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			after()
			if _, err := a.InvalidateDependency(ctx, "users::2"); err == nil {
				t.Fatal("InvalidateDependency with the backend down: no error")
			}
			rolled, err := sqlDB.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.InvalidateInTx(ctx, rolled, "users::3"); err != nil {
				t.Fatal(err)
			}
			rolled.Rollback()
			if n := w.rows(); n != 2 {
				t.Fatalf("%d outbox rows, want 2 (the rolled-back one left none)", n)
			}
			a.Close()
			am.Close() // dies with its invalidations undelivered

			w.backend.down.Store(false)
			b, bm := open()
			defer bm.Close()
			defer b.Close()
			if err := b.FlushOutbox(ctx); err != nil {
				t.Fatal(err)
			}
			for _, key := range []string{"users::1", "users::2"} {
				if ok, err := bm.Exists(ctx, key); err != nil || ok {
					t.Errorf("entry %s still there after the outbox was delivered (err %v)", key, err)
				}
			}
			if n := w.rows(); n != 0 {
				t.Errorf("%d rows left", n)
			}
		})
	}
}

// Raw writes to the outbox table itself record nothing (no cached read
// depends on it), so that dropping it through the plugin works.
func TestOutboxOwnTable(t *testing.T) {
	w := newOutboxWorld(t, dbCases()[0])
	p := w.start(true)
	if err := p.db.Exec("DELETE FROM " + w.outbox).Error; err != nil {
		t.Fatal(err)
	}
	if n := w.rows(); n != 0 {
		t.Errorf("a write to the outbox table left %d rows in it", n)
	}
	if err := p.db.Exec("DROP TABLE " + w.outbox).Error; err != nil {
		t.Fatalf("DROP TABLE of the outbox through the plugin: %v", err)
	}
	if p.db.Migrator().HasTable(w.outbox) {
		t.Error("the outbox table is still there")
	}
}

// With conjunction tags, a write records the lists its rows enter as a
// marker that is resolved after COMMIT (the schemes it meets are read
// then). An outbox row delivered by another process must resolve it too:
// delivered as a plain tag, the list the new row entered stayed cached.
func TestOutboxResolvesConjunctionMarkers(t *testing.T) {
	for _, c := range dbCases() {
		if c.dialect == "mysql" {
			continue // strings are never precise there (loose collations)
		}
		t.Run(c.dialect, func(t *testing.T) {
			w := newOutboxWorld(t, c)
			w.opts = []gormplugin.Option{gormplugin.WithConjunctionTags(8)}
			b := w.start(true)
			list := func() (int, bool) {
				t.Helper()
				ctx, trace := depcache.Track(context.Background())
				n, err := depcache.Fetch(ctx, b.m, "titled-v0", func(ctx context.Context) (int, error) {
					var items []Item
					err := b.db.WithContext(ctx).Where("title = ?", "v0").Find(&items).Error
					return len(items), err
				})
				if err != nil {
					t.Fatalf("list: %v", err)
				}
				return n, trace.Hits() > 0
			}
			if n, _ := list(); n != 1 {
				t.Fatalf("list before: %d items, want 1", n)
			}
			if _, hit := list(); !hit {
				t.Fatal("the list is not cached")
			}
			w.backend.down.Store(true)
			a := w.start(true)
			if err := a.db.Create(&Item{ID: 2, Title: "v0"}).Error; err != nil {
				t.Fatalf("insert during the outage: %v", err)
			}
			a.stop() // dies before the backend returns: only the outbox knows
			w.backend.down.Store(false)
			c := w.start(true) // delivers at start
			if err := c.plugin.FlushOutbox(context.Background()); err != nil {
				t.Fatal(err)
			}
			if n, _ := list(); n != 2 {
				t.Errorf("list after the outbox was delivered: %d items, want 2 (the entered list's tag was not invalidated)", n)
			}
		})
	}
}

// One plugin installed on a second database with WithOutbox: its outbox
// lives on the first, so the second's writes would record their tags in a
// table no flusher of the plugin reads (or fail on a missing one). db.Use
// must say so instead of succeeding.
func TestOutboxRefusesASecondDatabase(t *testing.T) {
	dir := t.TempDir()
	open := func(name string) *gorm.DB {
		db, err := gorm.Open(sqlite.Open(filepath.Join(dir, name)), &gorm.Config{Logger: logger.Discard})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if sqlDB, err := db.DB(); err == nil {
				sqlDB.Close()
			}
		})
		return db
	}
	m := depcache.New(memory.New(), depcache.WithLogger(testLogger()))
	defer m.Close()
	p := gormplugin.New(m, gormplugin.WithOutbox())
	defer p.Close()
	first, second := open("first.db"), open("second.db")
	if err := first.Use(p); err != nil {
		t.Fatal(err)
	}
	if err := first.Session(&gorm.Session{}).Use(p); err != nil && !errors.Is(err, gorm.ErrRegistered) {
		t.Errorf("the same database again: %v", err)
	}
	err := second.Use(p)
	if !errors.Is(err, gormplugin.ErrOutbox) || !strings.Contains(err.Error(), "gormplugin.New") {
		t.Fatalf("db.Use of one outbox plugin on a second database: %v, want an error wrapping ErrOutbox that says to create a plugin per database", err)
	}
}

// onlyConnPool is a gorm.ConnPool over a *sql.DB that does not give the
// *sql.DB back (no GetDBConn), like the wrapper of GORM's TestConnPoolWrapper.
type onlyConnPool struct{ gorm.ConnPool }

// The outbox's flusher needs the database handle under GORM: on a pool
// that gives none, db.Use fails with an error that says so, and nothing is
// installed. (GORM's suite on MySQL, TestConnPoolWrapper with WithOutbox.)
func TestOutboxOnAPoolWithoutDatabaseHandle(t *testing.T) {
	w := newOutboxWorld(t, dbCases()[0])
	under, err := gorm.Open(w.c.open(w.dsn), w.gormConfig())
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, err := under.DB()
	if err != nil {
		t.Fatal(err)
	}
	defer sqlDB.Close()
	db, err := gorm.Open(sqlite.New(sqlite.Config{Conn: onlyConnPool{sqlDB}}), w.gormConfig())
	if err != nil {
		t.Fatal(err)
	}
	m := depcache.New(memory.New(), depcache.WithLogger(testLogger()))
	defer m.Close()
	p := gormplugin.New(m, gormplugin.WithOutbox())
	defer p.Close()
	err = db.Use(p)
	if !errors.Is(err, gormplugin.ErrOutbox) || !errors.Is(err, gorm.ErrInvalidDB) || !strings.Contains(err.Error(), "onlyConnPool") {
		t.Fatalf("db.Use of an outbox plugin on a pool without *sql.DB: %v; want ErrOutbox and gorm.ErrInvalidDB, naming the pool's type", err)
	}
	// Not installed: a raw write invalidates nothing.
	noErr(t, "create table", db.Exec("CREATE TABLE pool_only (id INTEGER PRIMARY KEY)").Error)
	noErr(t, "insert", db.Exec("INSERT INTO pool_only (id) VALUES (1)").Error)
	if s := m.Stats(); s.Invalidations != 0 {
		t.Errorf("after a failed db.Use, a raw write invalidated: %+v", s)
	}
}
