package gormplugin

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"gorm.io/gorm"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/internal/taglist"
)

// The durable outbox (WithOutbox). Without it, an invalidation that cannot
// reach the backend after a commit is retried in memory by the writing
// process only: if that process dies first, or the backend comes back from
// a snapshot that still holds the old entries, other processes serve data
// from before the write until its TTL.
//
// With it, every write transaction that invalidates tags also inserts them
// into the outbox table, in the same transaction; after COMMIT and a
// successful invalidation the rows are deleted (by id, in the background).
// A row left behind — the invalidation failed, or the process died between
// COMMIT and invalidation — is delivered by the flusher of any process on
// the same table and prefix:
//
//   - at start (Initialize): a process that finds rows holds its manager
//     (depcache.Manager.Hold: nothing served, nothing stored) until it has
//     delivered them;
//   - on recovery: the manager's circuit breaker closes only once the
//     outbox has been delivered (depcache.Manager.AddRecoveryCheck), so a
//     process that saw the backend fail serves nothing until then;
//   - by polling (WithOutboxPoll): a row seen by two polls in a row is not
//     in flight, and the process holds its manager from that poll until
//     it has delivered it.
//
// Delivery is idempotent: two processes may deliver one row; each deletes
// only the rows it read, by id, so a later row for the same tag stays.
//
// SQLite has one writer at a time, and a transaction that read before it
// writes gets SQLITE_BUSY at once, without waiting, when another connection
// is committing: a flusher deleting rows on a connection of its own would
// make the application's writes fail. On SQLite the flusher therefore never
// writes while the application runs: the rows delivered are deleted by the
// next write transaction, with the INSERT of its own row (at Close, and by
// FlushOutbox, directly). Until then the process knows them delivered and
// neither its poll nor its drain delivers them again.

// DefaultOutboxTable is the outbox table's name unless WithOutboxTable
// names another.
const DefaultOutboxTable = "depcache_outbox"

// DefaultOutboxPoll is how often the flusher looks for rows left behind,
// unless WithOutboxPoll says otherwise.
const DefaultOutboxPoll = time.Second

// ErrOutbox wraps the error of a write transaction whose outbox row could
// not be written: the transaction was rolled back, nothing was committed.
var ErrOutbox = errors.New("gormplugin: outbox")

// WithOutbox makes invalidations durable: each write transaction records
// the tags it invalidates in an outbox table (DefaultOutboxTable, created
// at Initialize) in the same transaction, and every process delivers what
// is left there before it serves from the cache. It adds one INSERT to
// every write transaction and one batched DELETE after it (see the package
// documentation for the measured cost). Off by default. A plugin with an
// outbox serves one database: installing it on a second is an error
// wrapping ErrOutbox (create a plugin per database).
func WithOutbox() Option { return func(c *config) { c.outbox = true } }

// WithOutboxTable is WithOutbox with an outbox table of the given name: a
// plain identifier, optionally schema-qualified (letters, digits,
// underscores; used unquoted). An empty name is DefaultOutboxTable.
func WithOutboxTable(name string) Option {
	return func(c *config) { c.outbox, c.outboxTable = true, name }
}

// WithOutboxPoll sets how often the outbox flusher looks for rows left
// behind by other processes (default DefaultOutboxPoll, also for 0; a
// negative interval makes db.Use fail with ErrOutbox). A process whose
// breaker never opened during an outage learns of such rows at the latest
// two polls after they were committed.
//
// A due poll runs on the application's next statement outside a
// transaction (or its next BEGIN), just before it and on the connection it
// is about to take: a poll from another goroutine while the application
// holds a connection would make database/sql open one more, without the
// settings the application made per connection with Exec (SQLite's PRAGMA
// foreign_keys, a SET). The flusher polls by itself only while the
// application uses no connection: two looks, a quarter of the interval
// (at least 50ms) apart, found none in use and no statement in between. So
// polls come every interval plus at most half of it (100ms at least); an
// application that starts a statement during such a poll, after that
// quiet, can still get a new connection; and so can one whose connections
// are busy for a whole interval with statements that do not pass through
// the plugin (prepared statements with PrepareStmt, long reads of rows,
// several goroutines): the flusher then polls anyway, once the poll has
// been due for an interval (a second at least).
func WithOutboxPoll(d time.Duration) Option { return func(c *config) { c.outboxPoll = d } }

var outboxTableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

const (
	outboxTagsPerRow = 1000 // tags per row: bounds a row's size
	// outboxQueueMax bounds the delivered rows a single-writer (SQLite)
	// outbox keeps for the next write to delete; past it the oldest are
	// forgotten, and delivered once more if they are still there.
	outboxQueueMax   = 10000
	outboxPage       = 500 // rows read, or deleted, per statement
	outboxDrainLimit = 30 * time.Second
	// outboxDeleteDelay is how long delivered rows wait to be deleted
	// together. Well under a poll interval: other processes must not
	// take them for rows left behind.
	outboxDeleteDelay = 20 * time.Millisecond
)

// outboxSQL is the outbox's SQL for one dialect.
type outboxSQL struct {
	create string
	dollar bool // PostgreSQL placeholders: $1, $2…
}

func newOutboxSQL(dialect, table string) (outboxSQL, error) {
	tagsType := "TEXT"
	q := outboxSQL{}
	switch dialect {
	case "sqlite":
	case "postgres":
		q.dollar = true
	case "mysql":
		tagsType = "LONGTEXT" // TEXT holds 64 KiB
	default:
		return q, fmt.Errorf("%w: WithOutbox supports sqlite, postgres and mysql (MariaDB), not %q", ErrOutbox, dialect)
	}
	q.create = "CREATE TABLE IF NOT EXISTS " + table + " (" +
		"prefix VARCHAR(255) NOT NULL, " +
		"id VARCHAR(32) NOT NULL, " +
		"tags " + tagsType + " NOT NULL, " +
		"created_at BIGINT NOT NULL, " +
		"PRIMARY KEY (prefix, id))"
	return q, nil
}

// args returns n placeholders separated by commas, numbered from first.
func (q outboxSQL) args(first, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		if q.dollar {
			fmt.Fprintf(&b, "$%d", first+i)
		} else {
			b.WriteByte('?')
		}
	}
	return b.String()
}

// execer runs SQL: a *sql.DB, a *sql.Tx, a statement's gorm.ConnPool.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// outbox is one plugin's outbox: its table, and the flusher goroutine
// that deletes delivered rows and delivers those left behind.
type outbox struct {
	p      *Plugin
	db     *sql.DB
	table  string
	prefix string
	q      outboxSQL
	poll   time.Duration
	// singleWriter: the database has one writer at a time (SQLite), so
	// delivered rows are deleted by the application's next write
	// transaction, never by the flusher while the application runs.
	singleWriter bool

	// drainSem holds one delivery at a time in this process; a caller
	// waits for it no longer than its context (FlushOutbox's may be a
	// readiness check's, while the flusher's delivery waits for a Redis
	// that does not answer).
	drainSem chan struct{}

	mu      sync.Mutex
	deletes []string // delivered rows to delete
	failed  bool     // an invalidation failed: deliver what is left
	// start releases the hold taken at start, or by a poll that found
	// rows left behind (holdLeftBehind); nil once released.
	start func()
	// startGen counts the polls that found rows left behind (and the
	// start): a delivery releases start only if none came after it began
	// to read the table, since it may have missed their rows.
	startGen uint64
	closed   bool

	// Polls run on the application's own goroutine where they can: a
	// poll that takes a connection while the application is using one
	// makes database/sql open another, and a setting made per connection
	// with Exec (SQLite's PRAGMA foreign_keys, as GORM's own tests make
	// it) is missing on the one the application may get next. So when a
	// poll is due (pollDue), the application's next statement outside a
	// transaction, or its next BEGIN, runs it first (pluginPool); the
	// flusher polls by itself only when two looks a grace apart found no
	// connection in use and no statement ran in between (active, idle).
	pollDue  atomic.Bool
	active   atomic.Bool
	stuck    chan struct{} // a poll found rows left behind: deliver them
	seenMu   sync.Mutex
	seen     map[string]bool // ids the last poll saw
	polls    atomic.Int64    // polls made, for tests
	lastPoll atomic.Int64    // when the last poll ran, Unix ns
	idle     bool            // the flusher's last look found the pool idle (flusher's own)
	dueSince time.Time       // when pollDue was set (flusher's own)
	appPolls bool            // a plugin's pool runs due polls (not NewSQLOutbox's)

	base        context.Context // ends at close
	stop        context.CancelFunc
	wake        chan struct{}
	quit        chan struct{}
	done        chan struct{}
	removeCheck func()
}

// openOutbox creates the table, takes a hold on the manager if rows are
// left from before, and starts the flusher.
func (p *Plugin) openOutbox(db *gorm.DB) error {
	sqlDB, err := db.DB()
	if err != nil {
		// The flusher reads and delivers the table on its own, outside the
		// application's statements: it needs the *sql.DB, which a
		// gorm.ConnPool of the application's (GORM's Config.Conn) need not give.
		return fmt.Errorf("%w: needs the *sql.DB under GORM (db.DB()), which the connection pool %s does not give: %w", ErrOutbox, poolType(db), err)
	}
	return p.openOutboxOn(sqlDB, db.Dialector.Name(), true)
}

// openOutboxOn is openOutbox on a database/sql handle, of a dialect named
// as GORM names them; appPolls: the plugin's pool is in front of it (its
// statements run due polls).
func (p *Plugin) openOutboxOn(sqlDB *sql.DB, dialect string, appPolls bool) error {
	if p.m == nil {
		return fmt.Errorf("%w: no manager", ErrOutbox)
	}
	table := p.cfg.outboxTable
	if table == "" {
		table = DefaultOutboxTable
	}
	if !outboxTableName.MatchString(table) {
		return fmt.Errorf("%w: table name %q: want an identifier (letters, digits, underscores), optionally schema-qualified", ErrOutbox, table)
	}
	poll := p.cfg.outboxPoll
	if poll == 0 {
		poll = DefaultOutboxPoll
	}
	if poll < 0 {
		return fmt.Errorf("%w: WithOutboxPoll(%v): want a positive interval", ErrOutbox, poll)
	}
	if n := len(p.m.Prefix()); n > 255 {
		return fmt.Errorf("%w: the manager's key prefix is %d bytes; the outbox's prefix column holds 255", ErrOutbox, n)
	}
	q, err := newOutboxSQL(dialect, table)
	if err != nil {
		return err
	}
	o := &outbox{
		p: p, db: sqlDB, table: table, prefix: p.m.Prefix(), q: q, poll: poll,
		singleWriter: dialect == "sqlite", appPolls: appPolls,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
		stuck:    make(chan struct{}, 1),
		drainSem: make(chan struct{}, 1),
	}
	ctx := context.Background()
	if _, err := sqlDB.ExecContext(ctx, q.create); err != nil {
		// Two processes creating it at once: PostgreSQL may refuse the
		// second CREATE TABLE IF NOT EXISTS. It is there all the same.
		if _, rerr := o.read(ctx, "", 1); rerr != nil {
			return fmt.Errorf("%w: create table %s: %w", ErrOutbox, table, err)
		}
	}
	left, err := o.read(ctx, "", 1)
	if err != nil {
		return fmt.Errorf("%w: read table %s: %w", ErrOutbox, table, err)
	}
	if len(left) > 0 {
		// Writes whose invalidation may not have reached the backend:
		// serve nothing until they have.
		o.holdLeftBehind()
		o.failed = true
		p.log.Warn("gormplugin: the outbox holds invalidations not delivered yet; the cache is not used until they are", "table", table)
	}
	o.removeCheck = p.m.AddRecoveryCheck(func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, outboxDrainLimit)
		defer cancel()
		return o.drain(ctx)
	})
	o.base, o.stop = context.WithCancel(context.Background())
	p.ob = o
	go o.run()
	return nil
}

type outboxRow struct {
	id   string
	tags string
}

// read returns up to limit rows of this prefix with ids after after.
func (o *outbox) read(ctx context.Context, after string, limit int) ([]outboxRow, error) {
	query := "SELECT id, tags FROM " + o.table + " WHERE prefix = " + o.q.args(1, 1) +
		" AND id > " + o.q.args(2, 1) + " ORDER BY id LIMIT " + fmt.Sprint(limit)
	rows, err := o.db.QueryContext(ctx, query, o.prefix, after)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.id, &r.tags); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// record inserts tags into the outbox through ex (a transaction, or the
// pool) and returns the ids of the rows.
func (o *outbox) record(ctx context.Context, ex execer, tags []string) ([]string, error) {
	if tags = o.withoutOwnTags(tags); len(tags) == 0 {
		return nil, nil
	}
	var (
		ids  []string
		args []any
	)
	now := time.Now().UnixMilli()
	for chunk := range sliceChunks(tags, outboxTagsPerRow) {
		b, err := encodeOutboxTags(chunk)
		if err != nil {
			return nil, fmt.Errorf("%w: encode tags: %w", ErrOutbox, err)
		}
		id := newOutboxID()
		ids = append(ids, id)
		args = append(args, o.prefix, id, string(b), now)
	}
	var values strings.Builder
	for i := range ids {
		if i > 0 {
			values.WriteString(", ")
		}
		values.WriteString("(" + o.q.args(4*i+1, 4) + ")")
	}
	query := "INSERT INTO " + o.table + " (prefix, id, tags, created_at) VALUES " + values.String()
	if _, err := ex.ExecContext(ctx, query, args...); err != nil {
		return nil, fmt.Errorf("%w: insert into %s: %w", ErrOutbox, o.table, err)
	}
	if o.singleWriter && ex != execer(o.db) {
		o.deleteInTx(ctx, ex)
	}
	return ids, nil
}

// deleteInTx deletes, in a write transaction of the application, rows
// delivered before it (single-writer databases). A failure leaves them
// queued; a rollback leaves them in the table, where a poll finds them and
// delivers them once more.
func (o *outbox) deleteInTx(ctx context.Context, ex execer) {
	o.mu.Lock()
	n := min(len(o.deletes), outboxPage)
	ids := o.deletes[:n:n]
	o.deletes = o.deletes[n:]
	o.mu.Unlock()
	if n == 0 {
		return
	}
	if err := o.removeWith(ctx, ex, ids); err != nil {
		o.queue(ids)
	}
}

// queue adds delivered rows to those waiting to be deleted.
func (o *outbox) queue(ids []string) {
	o.mu.Lock()
	o.queueLocked(ids)
	o.mu.Unlock()
}

func (o *outbox) queueLocked(ids []string) {
	o.deletes = append(o.deletes, ids...)
	if over := len(o.deletes) - outboxQueueMax; over > 0 {
		o.deletes = append(o.deletes[:0:0], o.deletes[over:]...)
	}
}

// queued returns the set of delivered rows waiting to be deleted.
func (o *outbox) queued() map[string]bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	set := make(map[string]bool, len(o.deletes))
	for _, id := range o.deletes {
		set[id] = true
	}
	return set
}

// encodeOutboxTags writes tags as a JSON array of strings, or, when one of
// them is not valid UTF-8 (JSON would replace its bad bytes, and the
// delivered tag would not be the tag), as {"b64": [base64 of each tag]}.
func encodeOutboxTags(tags []string) ([]byte, error) {
	for _, t := range tags {
		if !utf8.ValidString(t) {
			enc := make([]string, len(tags))
			for i, t := range tags {
				enc[i] = base64.StdEncoding.EncodeToString([]byte(t))
			}
			return json.Marshal(map[string][]string{"b64": enc})
		}
	}
	return json.Marshal(tags)
}

func decodeOutboxTags(s string) ([]string, error) {
	if strings.HasPrefix(s, "{") {
		var obj struct {
			B64 []string `json:"b64"`
		}
		if err := json.Unmarshal([]byte(s), &obj); err != nil {
			return nil, err
		}
		tags := make([]string, len(obj.B64))
		for i, e := range obj.B64 {
			b, err := base64.StdEncoding.DecodeString(e)
			if err != nil {
				return nil, err
			}
			tags[i] = string(b)
		}
		return tags, nil
	}
	var tags []string
	err := json.Unmarshal([]byte(s), &tags)
	return tags, err
}

// withoutOwnTags drops the tags of the outbox table itself (a raw write to
// it, DROP TABLE included): no cached read depends on it, and recording
// them would write to the table being written, or dropped.
func (o *outbox) withoutOwnTags(tags []string) []string {
	own := tableName(o.table)
	keep := tags[:0:0]
	for _, t := range tags {
		if t == own || strings.HasPrefix(t, own+"::") {
			continue
		}
		keep = append(keep, t)
	}
	return keep
}

func sliceChunks(s []string, n int) func(func([]string) bool) {
	return func(yield func([]string) bool) {
		for len(s) > 0 {
			k := min(n, len(s))
			if !yield(s[:k]) {
				return
			}
			s = s[k:]
		}
	}
}

func newOutboxID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// delivered hands the rows of an invalidation that succeeded to the
// flusher, which deletes them. A failed one leaves them for delivery.
func (o *outbox) delivered(ids []string, err error) {
	if len(ids) == 0 && err == nil {
		return
	}
	o.mu.Lock()
	closed := o.closed
	if err != nil {
		o.failed = true
	} else if !closed {
		o.queueLocked(ids)
	}
	o.mu.Unlock()
	if closed {
		// No flusher any more: delete now (or leave them for the next
		// process to deliver).
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), outboxDrainLimit)
			defer cancel()
			if rerr := o.remove(ctx, ids); rerr != nil {
				o.p.log.Warn("gormplugin: delivered outbox rows could not be deleted; they will be delivered again", "rows", len(ids), "err", rerr)
			}
		}
		return
	}
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// remove deletes rows by id.
func (o *outbox) remove(ctx context.Context, ids []string) error {
	return o.removeWith(ctx, o.db, ids)
}

// removeWith deletes rows by id through ex.
func (o *outbox) removeWith(ctx context.Context, ex execer, ids []string) error {
	for chunk := range sliceChunks(ids, outboxPage) {
		query := "DELETE FROM " + o.table + " WHERE prefix = " + o.q.args(1, 1) + " AND id IN (" + o.q.args(2, len(chunk)) + ")"
		args := make([]any, 0, len(chunk)+1)
		args = append(args, o.prefix)
		for _, id := range chunk {
			args = append(args, id)
		}
		if _, err := ex.ExecContext(ctx, query, args...); err != nil {
			return fmt.Errorf("%w: delete from %s: %w", ErrOutbox, o.table, err)
		}
	}
	return nil
}

// drain delivers every row of this prefix present when it starts, and
// deletes them: one pass in id order. Rows committed meanwhile are not
// waited for (under steady writes there always are some, in flight): their
// writers invalidate them, and the flusher's poll finds those left behind.
func (o *outbox) drain(ctx context.Context) error {
	select {
	case o.drainSem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for the delivery in progress: %w", ErrOutbox, context.Cause(ctx))
	}
	defer func() { <-o.drainSem }()
	var done map[string]bool // single writer: delivered, not deleted yet
	if o.singleWriter {
		done = o.queued()
	}
	after := ""
	for {
		page, err := o.read(ctx, after, outboxPage)
		if err != nil {
			return fmt.Errorf("%w: read %s: %w", ErrOutbox, o.table, err)
		}
		if len(page) == 0 {
			return nil
		}
		rows := page
		if done != nil {
			rows = make([]outboxRow, 0, len(page))
			for _, r := range page {
				if !done[r.id] {
					rows = append(rows, r)
				}
			}
		}
		var tags []string
		clear := false
		for _, r := range rows {
			ts, err := decodeOutboxTags(r.tags)
			if err != nil {
				clear = true
				o.p.log.Error("gormplugin: an outbox row cannot be read; the manager's namespace is cleared instead", "table", o.table, "id", r.id, "err", err)
				continue
			}
			// A write's conjunction part is recorded as a marker (the
			// schemes it meets are read after COMMIT): it is committed now.
			for _, t := range o.p.resolveConjunctions(ctx, ts) {
				if t == "" || !backends.IsPlainTag(t) {
					clear = true
					o.p.log.Error("gormplugin: an outbox row holds a tag the manager refuses; the manager's namespace is cleared instead", "table", o.table, "id", r.id, "tag", t)
					continue
				}
				tags = append(tags, t)
			}
		}
		if clear {
			if _, err := o.p.m.Clear(ctx); err != nil {
				return err
			}
		}
		if tags = dedupe(tags); len(tags) > 0 {
			if _, err := o.p.m.InvalidateDependency(ctx, tags...); err != nil {
				return err
			}
		}
		ids := make([]string, len(rows))
		for i, r := range rows {
			ids[i] = r.id
		}
		if o.singleWriter {
			o.queue(ids)
		} else if err := o.remove(ctx, ids); err != nil {
			return err
		}
		if len(page) < outboxPage {
			return nil
		}
		after = page[len(page)-1].id
	}
}

// run is the flusher: it deletes delivered rows in batches, delivers
// what is left after a failure (with backoff) and polls for rows that
// other processes left behind.
func (o *outbox) run() {
	defer close(o.done)
	const minWait, maxWait = 50 * time.Millisecond, 5 * time.Second
	backoff := minWait
	// Initialize has just read the table: the first poll waits a period
	// unless rows were left. Polling at once would take a second
	// connection while the application runs its first statements, and
	// a setting made per connection (SQLite's PRAGMA foreign_keys through
	// Exec, as GORM's own tests do) would miss the one they then get.
	o.mu.Lock()
	first := o.poll
	if o.failed {
		first = 0
	}
	o.mu.Unlock()
	timer := time.NewTimer(first)
	defer timer.Stop()
	due := time.Now().Add(first) // when timer fires
	reset := func(d time.Duration) {
		timer.Reset(d)
		due = time.Now().Add(d)
	}
	var batch <-chan time.Time // deletes waiting for company
	for {
		select {
		case <-o.quit:
			o.deleteQueued(context.Background())
			return
		case <-o.wake:
			if batch == nil {
				// One DELETE for the rows of many writes: each is a
				// commit of its own (an fsync).
				batch = time.After(outboxDeleteDelay)
			}
			o.mu.Lock()
			failed := o.failed
			o.mu.Unlock()
			if failed && time.Until(due) > backoff {
				reset(jitter(backoff))
			}
			continue
		case <-batch:
			batch = nil
			if !o.singleWriter {
				o.deleteQueued(context.Background())
			}
			continue
		case <-o.stuck: // the application's statement polled and found rows left behind
		case <-timer.C:
			o.mu.Lock()
			failed := o.failed
			o.mu.Unlock()
			if !failed {
				deliver, next := o.pollByItself()
				if !deliver {
					reset(next)
					continue
				}
			}
		}
		if err := o.deliverHeld(); err != nil {
			if dbClosed(err) {
				o.abandon()
				return
			}
			backoff = min(2*backoff, maxWait)
			reset(jitter(backoff))
			continue
		}
		backoff = minWait
		o.seenMu.Lock()
		o.seen = nil
		o.seenMu.Unlock()
		reset(o.poll)
	}
}

// pollByItself runs when the flusher's timer fires with nothing to
// deliver: it marks a poll due for the application's next statement, or,
// where the application has not used the pool since, polls itself. It
// reports whether the flusher must deliver rows left behind, and else when
// to look again.
func (o *outbox) pollByItself() (bool, time.Duration) {
	if !o.appPolls {
		// NewSQLOutbox: no statement of the application comes through
		// the plugin.
		if o.poll1() {
			return true, 0
		}
		return false, o.poll
	}
	// Idle is two looks a grace apart: at least 50ms, so that an
	// application between two statements is not taken for idle however
	// short the poll.
	grace := max(o.poll/4, 50*time.Millisecond)
	if !o.pollDue.Load() {
		if since := time.Since(time.Unix(0, o.lastPoll.Load())); since < o.poll {
			return false, o.poll - since // the application polled
		}
		o.active.Store(false)
		o.idle = false
		o.dueSince = time.Now()
		o.pollDue.Store(true)
		return false, grace
	}
	// Due for a whole interval (a second at least): the application is
	// busy all along with statements that do not come through the
	// plugin's pool (prepared statements, rows read for long, several
	// goroutines): poll anyway, rather than never.
	overdue := time.Since(o.dueSince) >= max(o.poll, time.Second)
	// Idle: no connection in use at this look and the one before, and no
	// statement in between. A connection in use is the application's
	// (inside a transaction, reading rows); a statement would have polled.
	busy := o.active.Swap(false) || o.db.Stats().InUse > 0
	wasIdle := o.idle
	o.idle = !busy
	if (!overdue && (busy || !wasIdle)) || !o.pollDue.CompareAndSwap(true, false) {
		return false, grace
	}
	if o.poll1() {
		return true, 0
	}
	return false, o.poll
}

// polledByApp runs on the application's goroutine before a statement on
// the pool outside a transaction, and before a BEGIN: the due poll, if
// any, on the connection the statement is about to take.
func (o *outbox) polledByApp() {
	if !o.active.Load() {
		o.active.Store(true)
	}
	// Every statement comes here: the closed check (a context's Err) only
	// when a poll is due.
	if !o.pollDue.Load() || o.base.Err() != nil {
		return // none due, or closed: the flusher has stopped polling
	}
	if o.pollDue.CompareAndSwap(true, false) && o.poll1() {
		select {
		case o.stuck <- struct{}{}:
		default:
		}
	}
}

// poll1 reads the outbox once and reports whether a row was already there
// at the previous poll.
func (o *outbox) poll1() bool {
	o.seenMu.Lock()
	defer o.seenMu.Unlock()
	stuck, now := o.pollStuck(o.seen)
	o.seen = now
	if stuck {
		o.holdLeftBehind()
	}
	o.polls.Add(1)
	o.lastPoll.Store(time.Now().UnixNano())
	return stuck
}

// holdLeftBehind holds the manager from the moment rows left behind were
// found (at start, or by a poll) until a delivery that began after it
// succeeds: the process may
// serve entries from before their writes until its polls find them, not
// once they have (the flusher, which delivers them, may be busy, and the
// poll may be a statement's, on another goroutine).
func (o *outbox) holdLeftBehind() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	if o.start == nil {
		o.start = o.p.m.Hold()
	}
	o.startGen++
}

// endHold releases the hold taken at start (or by a poll) after a
// delivery that succeeded, unless a poll found rows left behind after the
// delivery began (gen, startGen then): the delivery may have missed them,
// and the one that the poll called for releases it.
func (o *outbox) endHold(gen uint64) (released bool) {
	o.mu.Lock()
	var start func()
	if o.startGen == gen {
		start, o.start = o.start, nil
	}
	o.mu.Unlock()
	if start != nil {
		start()
	}
	return start != nil
}

// deliverHeld holds the manager while it drains the outbox, and releases
// the hold taken at start once a drain succeeded.
func (o *outbox) deliverHeld() error {
	o.mu.Lock()
	o.failed = false
	gen := o.startGen
	o.mu.Unlock()
	release := o.p.m.Hold()
	defer release()
	ctx, cancel := o.ctx()
	defer cancel()
	if err := o.drain(ctx); err != nil {
		o.mu.Lock()
		o.failed = true
		o.mu.Unlock()
		return err
	}
	if o.endHold(gen) {
		o.p.log.Info("gormplugin: outbox delivered; the cache is used again", "table", o.table)
	}
	return nil
}

// ctx bounds one delivery and ends when the flusher stops.
func (o *outbox) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(o.base, outboxDrainLimit)
}

// pollStuck reads the ids of this prefix's rows and reports whether one of
// them was already there at the previous poll: its writer is not about to
// delete it.
func (o *outbox) pollStuck(prev map[string]bool) (bool, map[string]bool) {
	ctx, cancel := context.WithTimeout(o.base, o.poll)
	defer cancel()
	rows, err := o.read(ctx, "", outboxPage)
	if err != nil {
		o.p.logOnce("outbox-poll", "gormplugin: outbox poll failed", "table", o.table, "err", err)
		return false, prev
	}
	var done map[string]bool
	if o.singleWriter {
		done = o.queued()
	}
	now := make(map[string]bool, len(rows))
	stuck := false
	for _, r := range rows {
		if done[r.id] {
			continue // delivered; the next write deletes it
		}
		now[r.id] = true
		stuck = stuck || prev[r.id]
	}
	return stuck, now
}

func (o *outbox) deleteQueued(ctx context.Context) {
	o.mu.Lock()
	ids := o.deletes
	o.deletes = nil
	o.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, outboxDrainLimit)
	defer cancel()
	if err := o.remove(ctx, ids); err != nil {
		// Delivered already: a later drain delivers them again, harmlessly.
		o.p.log.Warn("gormplugin: delivered outbox rows could not be deleted; they will be delivered again", "rows", len(ids), "err", err)
	}
}

// dbClosed reports whether err comes from a *sql.DB that was closed
// (database/sql does not export that error).
func dbClosed(err error) bool {
	return err != nil && strings.Contains(err.Error(), "sql: database is closed")
}

// abandon ends the outbox from its flusher once the application closed
// the database under it: nothing can read the rows any more, and the holds
// taken for them would keep the manager (perhaps shared with other
// databases) from serving, for good, without a word. It does what Close
// does, and says so; the rows stay for other processes to deliver.
func (o *outbox) abandon() {
	start, ok := o.markClosed()
	if !ok {
		return
	}
	if start != nil {
		start()
	}
	o.p.log.Error("gormplugin: the database was closed with outbox rows not delivered; the outbox stops as at Close, and the manager is no longer held for them (another process delivers them)", "table", o.table)
}

// markClosed marks the outbox closed, unless it was, and ends its
// recovery check and its deliveries' context; it returns the hold taken
// for rows left, for the caller to release.
func (o *outbox) markClosed() (start func(), ok bool) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil, false
	}
	o.closed = true
	start = o.start
	o.start = nil
	o.mu.Unlock()
	o.removeCheck()
	o.stop()
	return start, true
}

// close stops the flusher after deleting the rows already delivered.
func (o *outbox) close() {
	start, ok := o.markClosed()
	if !ok {
		return
	}
	close(o.quit)
	<-o.done
	if start != nil {
		start()
	}
}

func jitter(d time.Duration) time.Duration {
	half := d / 2
	if half <= 0 {
		return d
	}
	return d - half + mrand.N(half+1)
}

// The outbox hooks of the write path.

// recordInTx writes the tags a transaction queued into the outbox inside
// that transaction, before its COMMIT. Nil ids and no error when the outbox
// is off.
func (p *Plugin) recordInTx(ex execer, tags []string) ([]string, error) {
	if p.ob == nil {
		return nil, nil
	}
	return p.ob.record(context.Background(), ex, dedupe(tags))
}

// invalidateRecorded invalidates after COMMIT and hands the rows to the
// flusher.
func (p *Plugin) invalidateRecorded(ctx context.Context, tags []string, ids []string) {
	p.invalidateThen(ctx, tags, func(err error) {
		if p.ob != nil {
			p.ob.delivered(ids, err)
		}
	})
}

// invalidateDurably is the invalidation of a write that committed on its
// own (no transaction the plugin could open): the outbox row comes after
// the write, not atomically with it, which the docs say.
func (p *Plugin) invalidateDurably(ctx context.Context, tags []string) {
	tags = dedupe(tags)
	if len(tags) == 0 {
		return
	}
	ids, err := p.ob.record(context.WithoutCancel(ctx), p.ob.db, tags)
	if err != nil {
		p.log.Error("gormplugin: outbox row not written for a write outside a transaction; invalidating without it", "tags", taglist.Quote(tags), "err", err)
	}
	p.invalidateRecorded(ctx, tags, ids)
}

// recordInForeignTx writes the outbox row inside a transaction the plugin
// does not own: it becomes visible when that transaction commits, and a
// flusher delivers it then (the invalidations at statement time and after
// WithForeignTxDelay still run).
func (p *Plugin) recordInForeignTx(db *gorm.DB, tags []string) {
	if p.ob == nil {
		return
	}
	if _, err := p.ob.record(context.WithoutCancel(db.Statement.Context), db.Statement.ConnPool, dedupe(tags)); err != nil {
		db.AddError(err)
	}
}

// outboxOwnTx opens the plugin's own transaction around a GORM write that
// runs in none (SkipDefaultTransaction), so that its outbox row commits
// with it; afterWrite ends it.
func (p *Plugin) outboxOwnTx(db *gorm.DB) {
	if p.ob == nil {
		return
	}
	connPool, tx, ok := beginOwnTx(db.Statement.Context, db.Statement.ConnPool)
	if !ok {
		p.logOnce("outbox-no-tx", "gormplugin: a write outside any transaction on a pool the plugin does not own: its outbox row is written after it, not atomically with it")
		return
	}
	db.Statement.ConnPool = connPool
	db.InstanceSet(settingOwnTx, tx)
}

const settingOutboxRawTx = "depcache:outbox_raw_tx"

type rawTx struct {
	tx     *txPool
	before gorm.ConnPool
}

// outboxBeginRaw runs before gorm:raw: a raw write outside a transaction
// runs in one the plugin opens, so that its outbox row commits with it.
// Statements that cannot run in a transaction (… CONCURRENTLY, CALL)
// are left alone and get their row after them.
func (p *Plugin) outboxBeginRaw(db *gorm.DB) {
	db.InstanceSet(settingOutboxRawTx, (*rawTx)(nil))
	if p.ob == nil || db.Error != nil || db.DryRun {
		return
	}
	if state, _ := txOf(db); state != noTx {
		return
	}
	sqlText := db.Statement.SQL.String()
	if tags, write := p.rawWriteTags(sqlText); !write || len(p.ob.withoutOwnTags(tags)) == 0 {
		return
	}
	toks := tokenize(sqlText)
	if len(toks) == 0 || strings.EqualFold(toks[0], "call") || containsWord(toks, "concurrently") {
		return
	}
	before := db.Statement.ConnPool
	connPool, tx, ok := beginOwnTx(db.Statement.Context, before)
	if !ok {
		return
	}
	db.Statement.ConnPool = connPool
	db.InstanceSet(settingOutboxRawTx, &rawTx{tx: tx, before: before})
}

// outboxEndRaw runs after depcache:after_raw has queued the invalidation:
// it commits (which writes the outbox row first) or rolls back.
func (p *Plugin) outboxEndRaw(db *gorm.DB) {
	v, ok := db.InstanceGet(settingOutboxRawTx)
	if !ok {
		return
	}
	rt, _ := v.(*rawTx)
	if rt == nil {
		return
	}
	db.InstanceSet(settingOutboxRawTx, (*rawTx)(nil))
	db.Statement.ConnPool = rt.before
	if db.Error != nil {
		rt.tx.Rollback()
		return
	}
	db.AddError(rt.tx.Commit())
}

// FlushOutbox delivers every invalidation left in the outbox now, and
// deletes the rows: it returns nil once it found the outbox empty, and
// releases the hold a process takes at start when rows were left, or on a
// poll that found rows left behind (unless a poll found more while it
// read the table: the flusher's delivery of them releases it). Without
// WithOutbox it does nothing; before the plugin is installed (db.Use) it
// returns an error wrapping ErrOutbox.
func (p *Plugin) FlushOutbox(ctx context.Context) error {
	ctx = orBackground(ctx)
	if p.ob == nil {
		if p.cfg.outbox {
			return errOutboxNotOpen
		}
		return nil
	}
	o := p.ob
	o.mu.Lock()
	gen := o.startGen
	o.mu.Unlock()
	if err := o.drain(ctx); err != nil {
		return err
	}
	if o.singleWriter {
		o.deleteQueued(ctx) // called by the application: its own time to write
	}
	o.mu.Lock()
	o.failed = false
	o.mu.Unlock()
	o.endHold(gen)
	return nil
}

// errOutboxNotOpen is what the outbox's methods return on a plugin with
// WithOutbox that db.Use has not installed (or whose db.Use failed).
var errOutboxNotOpen = fmt.Errorf("%w: the plugin is not installed on a database (db.Use): its outbox is not open", ErrOutbox)

// InvalidateDependency is the manager's InvalidateDependency made durable
// by the outbox: the tags are recorded in the outbox table first (one
// INSERT on the plugin's database), so that if the invalidation fails and
// this process dies before its retry succeeds, another process delivers
// it. Without WithOutbox it is the manager's InvalidateDependency (retried
// in memory by this process only). With WithOutbox, before the plugin is
// installed (db.Use) it invalidates as the manager does and returns an
// error wrapping ErrOutbox, since nothing was recorded.
func (p *Plugin) InvalidateDependency(ctx context.Context, deps ...string) (int, error) {
	ctx = orBackground(ctx)
	if p.ob == nil {
		n, err := p.m.InvalidateDependency(ctx, deps...)
		if p.cfg.outbox && err == nil {
			// Invalidated, but not durably: say so.
			err = fmt.Errorf("%w; the tags were invalidated, not recorded", errOutboxNotOpen)
		}
		return n, err
	}
	// Only tags the manager takes go into the outbox: a refused one would
	// make every delivery clear the namespace. The manager reports it.
	var valid []string
	for _, d := range dedupe(deps) {
		if backends.IsPlainTag(d) {
			valid = append(valid, d)
		}
	}
	ids, err := p.ob.record(context.WithoutCancel(ctx), p.ob.db, valid)
	if err != nil {
		return 0, err
	}
	n, err := p.m.InvalidateDependency(ctx, deps...)
	var deliveryErr error
	if len(valid) > 0 && err != nil {
		// The manager's error may only be about a refused tag; redelivering
		// the valid ones is harmless.
		deliveryErr = err
	}
	p.ob.delivered(ids, deliveryErr)
	return n, err
}

// poolType names the pool under the plugin's own wrapper.
func poolType(db *gorm.DB) string {
	pool := db.ConnPool
	if pp, ok := pool.(*pluginPool); ok {
		pool = pp.ConnPool
	}
	return fmt.Sprintf("%T", pool)
}
