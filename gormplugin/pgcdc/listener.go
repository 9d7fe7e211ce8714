package pgcdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm/schema"

	"github.com/depcache/go-depcache/depcache"
)

// LSN is a position in PostgreSQL's write-ahead log.
type LSN = pglogrepl.LSN

// ParseLSN parses an LSN as PostgreSQL prints it ("16/B374D848").
func ParseLSN(s string) (LSN, error) { return pglogrepl.ParseLSN(s) }

var (
	// ErrBadOption reports an option New cannot use; the message names it.
	ErrBadOption = errors.New("pgcdc: bad option")
	// ErrRunning is returned by Run while the same Listener runs.
	ErrRunning = errors.New("pgcdc: listener already running")
	// ErrNotLogical is returned by Run when the server's wal_level is not
	// logical: logical replication is off, and turning it on needs a
	// restart of the server.
	ErrNotLogical = errors.New("pgcdc: the server's wal_level is not logical")
	// ErrSlotLost is returned by Run (and Setup) when the slot the
	// listener streamed from was dropped meanwhile: the changes committed
	// since cannot be recovered, and the cache prefix must be cleared.
	ErrSlotLost = errors.New("pgcdc: the replication slot was lost")
	// ErrTableNotFound is returned by Setup and Run when a table of
	// WithTables does not exist in the database; the message names it.
	// Waiting cannot fix it, and a publication without the table would
	// never send its changes.
	ErrTableNotFound = errors.New("pgcdc: a table of WithTables does not exist")
	// ErrPublication is returned by Setup and Run when the publication
	// exists but would not send every change the listener must see: it
	// leaves out an operation (insert, update, delete, truncate) or a table
	// of WithTables — or was dropped while the slot had changes to decode,
	// which PostgreSQL cannot decode past. The message names what is
	// missing and what to do.
	ErrPublication = errors.New("pgcdc: the publication does not publish what the listener needs")
)

// EventKind says what an Event reports.
type EventKind uint8

const (
	// EventStreaming: the listener holds the slot and streams from LSN,
	// the slot's confirmed position.
	EventStreaming EventKind = iota + 1
	// EventInvalidated: a committed transaction's Tags were invalidated;
	// LSN is the end of its commit record, CommitTime its commit time.
	EventInvalidated
	// EventInvalidationFailed: an attempt failed with Err; it is retried
	// after a backoff and nothing past it is confirmed until it succeeds.
	EventInvalidationFailed
	// EventSlotBusy: another listener holds the slot (Err); this one waits
	// and tries again, taking over when the other one ends.
	EventSlotBusy
	// EventDisconnected: the session ended with Err; the listener
	// reconnects and resumes from the slot's confirmed position.
	EventDisconnected
	// EventConfirmed: the listener told PostgreSQL that everything up to
	// LSN is done; the slot may release the WAL before it.
	EventConfirmed
	// EventOverBound: invalidations failed while the slot held more WAL
	// than WithMaxRetainedWAL; a Clear of the manager's prefix is owed
	// (recorded in PostgreSQL) and commits are confirmed without their own
	// invalidations until it succeeds.
	EventOverBound
	// EventCleared: the owed Clear succeeded.
	EventCleared
)

func (k EventKind) String() string {
	switch k {
	case EventStreaming:
		return "streaming"
	case EventInvalidated:
		return "invalidated"
	case EventInvalidationFailed:
		return "invalidation-failed"
	case EventSlotBusy:
		return "slot-busy"
	case EventDisconnected:
		return "disconnected"
	case EventConfirmed:
		return "confirmed"
	case EventOverBound:
		return "over-bound"
	case EventCleared:
		return "cleared"
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// Event is what WithObserver sees.
type Event struct {
	Kind       EventKind
	LSN        LSN
	CommitTime time.Time
	Tags       []string
	Attempt    int
	Err        error
}

// Listener turns committed PostgreSQL changes into invalidations of the
// GORM plugin's tags. Its methods are safe for concurrent use; Run runs
// once at a time.
type Listener struct {
	m           *depcache.Manager
	cfg         config
	log         *slog.Logger
	replCfg     *pgconn.Config
	plainCfg    *pgconn.Config
	models      map[string]*schema.Schema // of WithModels, by table
	running     atomic.Bool
	advances    atomic.Uint64 // how often processed grew
	hasStreamed atomic.Bool   // from the slot, once: it must not be created again
	unkeyedSeen sync.Map      // relation names logged as unkeyed

	emitMu sync.Mutex // one observer call at a time

	// debtRelease ends the Hold on m taken while a Clear is owed (nil: none).
	debtMu      sync.Mutex
	debtRelease func()

	mu        sync.Mutex
	processed LSN
	advanced  chan struct{} // closed and replaced whenever processed grows, and when Run stops on an error
	stopErr   error         // the error the last Run stopped with, until the next Run starts
	failure   error         // what keeps the running listener from its work (no connection, a failing invalidation), nil while it works
}

// New returns a listener that invalidates in m (the manager the GORM
// plugin invalidates in) the changes streamed from the database of dsn, a
// libpq connection string or URL of a user with the privileges the package
// documentation lists. It connects to nothing: Run does.
func New(m *depcache.Manager, dsn string, opts ...Option) (*Listener, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: New needs a manager", ErrBadOption)
	}
	cfg := defaults()
	for _, o := range opts {
		if o != nil { // an option built conditionally
			o(&cfg)
		}
	}
	if cfg.err != nil {
		return nil, cfg.err
	}
	plain, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: dsn: %v", ErrBadOption, err)
	}
	if v, ok := plain.RuntimeParams["replication"]; ok {
		if v != "database" {
			return nil, fmt.Errorf("%w: dsn has replication=%s; the listener needs (and adds) replication=database", ErrBadOption, v)
		}
		delete(plain.RuntimeParams, "replication")
	}
	// The session's settings fix the text form of the values decode reads.
	plain.RuntimeParams["TimeZone"] = "UTC"
	plain.RuntimeParams["DateStyle"] = "ISO, YMD"
	plain.RuntimeParams["bytea_output"] = "hex"
	plain.RuntimeParams["extra_float_digits"] = "1" // shortest exact floats, whatever the server's default
	if plain.ConnectTimeout == 0 {
		plain.ConnectTimeout = connectTimeout
	}
	if plain.RuntimeParams["application_name"] == "" {
		// The manager's prefix, so that a listener finding the slot busy
		// can tell a standby of its own cache from another cache's
		// listener on the same slot name.
		plain.RuntimeParams["application_name"] = appPrefix + m.Prefix()
	}
	repl := plain.Copy()
	repl.RuntimeParams["replication"] = "database"
	models, err := loadModels(cfg.models)
	if err != nil {
		return nil, err
	}
	log := cfg.logger
	if log == nil {
		log = slog.Default()
	}
	return &Listener{
		m: m, cfg: cfg, log: log.With("depcache", "pgcdc", "slot", cfg.slot),
		replCfg: repl, plainCfg: plain, models: models,
		advanced: make(chan struct{}),
	}, nil
}

// queryTimeout bounds each of the listener's queries (catalogue reads,
// pg_current_snapshot, the debt table), none of which takes long on a
// server that answers; connectTimeout bounds each connection attempt when
// the DSN sets no connect_timeout: a server that accepts connections and
// never answers held Run in its first attempt, without a retry or a log
// line, until its context ended. Variables so that tests can shorten them.
var (
	queryTimeout   = 30 * time.Second
	connectTimeout = 10 * time.Second
)

// appPrefix begins the application_name of the listener's sessions
// (unless the DSN sets one); the manager's prefix follows it.
const appPrefix = "depcache-pgcdc:"

// Processed returns the position up to which every committed change has
// been invalidated: a read that begins after Processed passed a commit's
// LSN never returns data from before that commit. Zero until Run has
// streamed. The exception is a debt past WithMaxRetainedWAL: commits it
// covers count as processed before the owed Clear has run.
func (l *Listener) Processed() LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.processed
}

// WaitFor blocks until Processed reaches lsn (for a commit: the value of
// pg_current_wal_lsn() read after it) or ctx ends. Once Run has stopped on
// an error (wal_level, privileges, a closed manager…), WaitFor returns an
// error wrapping it until Run is called again.
func (l *Listener) WaitFor(ctx context.Context, lsn LSN) error {
	for {
		l.mu.Lock()
		done, ch, stopErr, processed := l.processed >= lsn, l.advanced, l.stopErr, l.processed
		l.mu.Unlock()
		if done {
			return nil
		}
		if stopErr != nil {
			// Nothing will advance until Run is called again.
			return fmt.Errorf("pgcdc: waiting for %s (processed %s): the listener stopped: %w", lsn, processed, stopErr)
		}
		select {
		case <-ctx.Done():
			if f := l.currentFailure(); f != nil {
				// Why it did not get there, more useful than the deadline.
				return fmt.Errorf("pgcdc: waiting for %s (processed %s): %w; the listener is failing: %w", lsn, l.Processed(), ctx.Err(), f)
			}
			return fmt.Errorf("pgcdc: waiting for %s (processed %s): %w", lsn, l.Processed(), ctx.Err())
		case <-ch:
		}
	}
}

// setFailure records what keeps the running listener from its work, or
// nil once it works again.
func (l *Listener) setFailure(err error) {
	l.mu.Lock()
	l.failure = err
	l.mu.Unlock()
}

func (l *Listener) currentFailure() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failure
}

// managerErr reports a manager that can invalidate nothing, ever: closed,
// or made without a backend. An invalidation of no tags checks exactly
// that, without a round trip.
func (l *Listener) managerErr() error {
	if _, err := l.m.InvalidateDependency(context.Background()); err != nil {
		if errors.Is(err, depcache.ErrClosed) {
			return fmt.Errorf("pgcdc: %w", err)
		}
		return fmt.Errorf("%w: the manager cannot invalidate: %w", ErrBadOption, err)
	}
	return nil
}

func (l *Listener) advance(lsn LSN) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lsn <= l.processed {
		return
	}
	l.processed = lsn
	l.advances.Add(1)
	close(l.advanced)
	l.advanced = make(chan struct{})
}

func (l *Listener) emit(e Event) {
	if l.cfg.observer != nil {
		l.emitMu.Lock()
		defer l.emitMu.Unlock()
		l.cfg.observer(e)
	}
}

// Run streams changes until ctx ends. Each committed transaction's tags
// are invalidated at its commit, retried with backoff while the backend
// fails, and its position is confirmed to PostgreSQL only after that
// invalidation and every one before it returned: a crash, a Redis outage
// or a restart replays from the slot. While another listener holds the
// slot, Run waits for it.
//
// Run returns at once, with an error it also logs at Error (for a Run
// started with "go l.Run(ctx)"), for what waiting cannot fix: a closed
// manager (ErrClosed), a bad DSN or password, missing privileges, an
// unknown database, wal_level not logical (ErrNotLogical), a table of
// WithTables that does not exist (ErrTableNotFound), a publication that
// leaves out changes or was dropped (ErrPublication), a slot dropped after
// this listener streamed from it (ErrSlotLost). A manager closed while Run streams
// ends it within the status interval (WithStatusInterval).
//
// What waiting can fix — a server that does not answer or refuses
// connections, a lost connection, a failing invalidation — Run retries
// with backoff (WithBackoff), logging each attempt (the first of a Run
// that has not streamed yet at Error) and emitting EventDisconnected or
// EventInvalidationFailed; nothing is lost meanwhile, since the slot
// keeps every change not confirmed. When ctx ends, Run returns nil if the
// listener was working (streaming, or waiting as a standby for a slot
// another listener holds), and otherwise an error wrapping both ctx.Err()
// and the failure it was retrying: so "Run(ctx with a deadline)" on an
// unreachable server ends in an error naming why. To fail fast at start
// instead, call Setup (no retries) before Run.
func (l *Listener) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer l.running.Store(false)
	// A Clear still owed when Run stops is left to the next Run (it is
	// recorded in PostgreSQL); this process stops holding its manager for it.
	defer l.holdForDebt(false)
	l.mu.Lock()
	l.stopErr, l.failure = nil, nil
	l.mu.Unlock()
	backoff := l.cfg.minBackoff
	everStreamed := false
	for {
		var streamed bool
		start, advances := time.Now(), l.advances.Load()
		err := l.managerErr()
		if err == nil {
			streamed, err = l.session(ctx)
			everStreamed = everStreamed || streamed
		}
		if ctx.Err() != nil {
			return l.stopped(ctx, streamed, err)
		}
		if fatal(err) {
			return l.stop(err)
		}
		// Only a session that did some work, or lasted, starts the backoff
		// again: one that streams and fails at once (a connection refused
		// right after the stream started, a stream error on the first
		// change) reconnected every minimum backoff, for ever.
		if streamed && (l.advances.Load() > advances || time.Since(start) >= l.cfg.maxBackoff) {
			backoff = l.cfg.minBackoff
		}
		if slotBusy(err) {
			// A standby: waiting is its work, not a failure.
			l.setFailure(nil)
			l.log.Debug("pgcdc: the slot is held by another listener; waiting", "err", err)
			l.emit(Event{Kind: EventSlotBusy, Err: err})
		} else {
			first := l.currentFailure() == nil
			l.setFailure(err)
			if first && !everStreamed {
				l.log.Error("pgcdc: cannot start streaming; retrying until the context ends", "err", err, "retry_in", backoff)
			} else {
				l.log.Warn("pgcdc: replication session ended; reconnecting", "err", err, "retry_in", backoff)
			}
			l.emit(Event{Kind: EventDisconnected, Err: err})
		}
		if !sleep(ctx, backoff) {
			return l.stopped(ctx, false, nil)
		}
		backoff = min(2*backoff, l.cfg.maxBackoff)
	}
}

// stop ends Run on an error waiting cannot fix.
func (l *Listener) stop(err error) error {
	// Logged as well as returned: "go l.Run(ctx)" drops what Run
	// returns, and the listener would then do nothing, silently.
	l.log.Error("pgcdc: listener stopped; Run returns the error", "err", err)
	l.mu.Lock()
	l.stopErr, l.failure = err, nil
	close(l.advanced) // wakes WaitFor, which returns err
	l.advanced = make(chan struct{})
	l.mu.Unlock()
	return err
}

// stopped is what Run returns once ctx ended: nil if the listener was
// working, else an error wrapping ctx's and the failure it was retrying.
// last is the final session's outcome: a session that ended with ctx
// before it streamed (a connection attempt that hangs until the deadline)
// is a failure of its own.
func (l *Listener) stopped(ctx context.Context, streamed bool, last error) error {
	cause, what := l.currentFailure(), "while failing"
	if cause == nil && !streamed && last != nil && !slotBusy(last) {
		cause, what = last, "before it streamed"
	}
	l.setFailure(nil)
	if cause == nil {
		return nil
	}
	err := fmt.Errorf("pgcdc: Run stopped (%w) %s: %w", context.Cause(ctx), what, cause)
	l.log.Warn("pgcdc: listener stopped while failing; the slot keeps what was not confirmed", "err", err)
	return err
}

// Setup creates the publication and the slot when they are missing, as Run
// does. Changes committed before the slot exists are never seen: call
// Setup (or let Run get that far) before the writes that must be.
func (l *Listener) Setup(ctx context.Context) error {
	plain, repl, err := l.connect(ctx)
	if err != nil {
		return err
	}
	defer closeConn(plain)
	defer closeConn(repl)
	_, err = l.setup(ctx, plain, repl)
	return err
}

func (l *Listener) connect(ctx context.Context) (plain, repl *pgconn.PgConn, err error) {
	plain, err = pgconn.ConnectConfig(ctx, l.plainCfg)
	if err != nil {
		return nil, nil, fmt.Errorf("pgcdc: connect: %w", err)
	}
	repl, err = pgconn.ConnectConfig(ctx, l.replCfg)
	if err != nil {
		closeConn(plain)
		return nil, nil, fmt.Errorf("pgcdc: connect for replication: %w", err)
	}
	return plain, repl, nil
}

func closeConn(c *pgconn.PgConn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.Close(ctx)
}

// setup checks wal_level, creates what is missing and returns the slot's
// confirmed position.
func (l *Listener) setup(ctx context.Context, plain, repl *pgconn.PgConn) (LSN, error) {
	rows, err := query(ctx, plain, "SELECT current_setting('wal_level')")
	if err != nil {
		return 0, err
	}
	if rows[0][0] != "logical" {
		return 0, fmt.Errorf("%w: it is %q; set wal_level=logical and restart the server", ErrNotLogical, rows[0][0])
	}
	if err := l.checkTables(ctx, plain); err != nil {
		return 0, err
	}
	rows, err = query(ctx, plain, "SELECT 1 FROM pg_publication WHERE pubname = $1", l.cfg.publication)
	if err != nil {
		return 0, err
	}
	if len(rows) > 0 {
		if err := l.checkPublication(ctx, plain); err != nil {
			return 0, err
		}
	} else {
		sql := "CREATE PUBLICATION " + quoteIdent(l.cfg.publication) + " FOR ALL TABLES"
		if len(l.cfg.tables) > 0 {
			sql = "CREATE PUBLICATION " + quoteIdent(l.cfg.publication) + " FOR TABLE "
			for i, t := range l.cfg.tables {
				if i > 0 {
					sql += ", "
				}
				sql += quoteTable(t)
			}
		}
		// A partitioned table's changes come under its own name, the one
		// its model and the plugin's tags use, not its partitions'.
		sql += " WITH (publish_via_partition_root = true)"
		switch _, err := plain.Exec(ctx, sql).ReadAll(); {
		case err == nil:
			l.log.Info("pgcdc: created publication", "publication", l.cfg.publication)
		case isCode(err, "42710"): // another listener, or Setup, created it meanwhile
		case isClass(err, "22") || isClass(err, "42"):
			// A table of WithTables that cannot be published (a view, a
			// temporary or unlogged table: 22023), or no right to (42501):
			// waiting cannot fix it.
			return 0, fmt.Errorf("%w: create publication %s (%s): %w", ErrBadOption, l.cfg.publication, sql, err)
		default:
			return 0, fmt.Errorf("pgcdc: create publication %s: %w", l.cfg.publication, err)
		}
	}
	// Slot names are server-wide: one of another database or kind is a
	// configuration error, not something to wait for.
	const slotSQL = `SELECT coalesce(plugin, ''), coalesce(database, ''), database = current_database(),
		coalesce(confirmed_flush_lsn::text, '0/0') FROM pg_replication_slots WHERE slot_name = $1`
	rows, err = query(ctx, plain, slotSQL, l.cfg.slot)
	if err != nil {
		return 0, err
	}
	if len(rows) == 0 && l.hasStreamed.Load() {
		// Dropped since this listener streamed from it: a new slot would
		// start from now, and the changes in between would never be
		// invalidated.
		return 0, fmt.Errorf("%w: replication slot %s was dropped after this listener streamed from it at %s; changes committed since may never be invalidated: clear the cache prefix %q, then run a new Listener (it creates the slot)",
			ErrSlotLost, l.cfg.slot, l.Processed(), l.m.Prefix())
	}
	if len(rows) == 0 {
		_, err := pglogrepl.CreateReplicationSlot(ctx, repl, l.cfg.slot, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
		switch {
		case err == nil:
			l.log.Info("pgcdc: created replication slot")
		case !isCode(err, "42710"): // 42710: another listener created it meanwhile
			return 0, fmt.Errorf("pgcdc: create replication slot %s: %w", l.cfg.slot, err)
		}
		if rows, err = query(ctx, plain, slotSQL, l.cfg.slot); err != nil {
			return 0, err
		}
		if len(rows) == 0 {
			return 0, fmt.Errorf("pgcdc: replication slot %s was dropped as it was created", l.cfg.slot)
		}
	}
	if rows[0][0] != "pgoutput" || rows[0][2] != "t" {
		return 0, fmt.Errorf("%w: replication slot %s exists with plugin %q in database %q; this listener needs a pgoutput slot of its own database",
			ErrBadOption, l.cfg.slot, rows[0][0], rows[0][1])
	}
	return ParseLSN(rows[0][3])
}

// checkTables returns an error naming the tables of WithTables that do
// not exist: CREATE PUBLICATION would fail on the first of them, and an
// existing publication would never send their changes.
func (l *Listener) checkTables(ctx context.Context, plain *pgconn.PgConn) error {
	var missing []string
	for _, t := range l.cfg.tables {
		// to_regclass resolves the quoted name as CREATE PUBLICATION does,
		// with the session's search_path.
		rows, err := query(ctx, plain, "SELECT to_regclass($1) IS NOT NULL", quoteTable(t))
		if err != nil {
			return err
		}
		if rows[0][0] != "t" {
			missing = append(missing, strconv.Quote(t))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	rows, err := query(ctx, plain, "SELECT current_database(), current_setting('search_path')")
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: %s in database %s (search_path %s; names are case-sensitive, as written, \"schema.table\" for another schema)",
		ErrTableNotFound, strings.Join(missing, ", "), rows[0][0], rows[0][1])
}

// checkPublication returns an error wrapping ErrPublication when the
// existing publication would leave out changes the listener must
// invalidate: an operation it does not publish, or a table of WithTables
// it does not cover. Used as it is, it would drop those invalidations
// without a word.
func (l *Listener) checkPublication(ctx context.Context, plain *pgconn.PgConn) error {
	pub := l.cfg.publication
	rows, err := query(ctx, plain, `SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot
		FROM pg_publication WHERE pubname = $1`, pub)
	if err != nil || len(rows) == 0 {
		return err // dropped meanwhile: the next session sees it missing
	}
	r := rows[0]
	var ops []string
	for i, op := range []string{"insert", "update", "delete", "truncate"} {
		if r[1+i] != "t" {
			ops = append(ops, op)
		}
	}
	if len(ops) > 0 {
		return fmt.Errorf("%w: publication %s does not publish %s; ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate')",
			ErrPublication, pub, strings.Join(ops, ", "), quoteIdent(pub))
	}
	if r[5] != "t" {
		// Changes of a partition would come under its own name, not the
		// partitioned table's that the plugin's tags use.
		l.log.Warn("pgcdc: the publication was created without publish_via_partition_root: changes of partitioned tables are tagged with their partitions' names",
			"publication", pub)
	}
	if r[0] == "t" {
		return nil
	}
	var missing []string
	for _, t := range l.cfg.tables {
		rows, err := query(ctx, plain, `SELECT 1 FROM pg_publication_tables
			WHERE pubname = $1 AND (quote_ident(schemaname) || '.' || quote_ident(tablename))::regclass = to_regclass($2)`, pub, quoteTable(t))
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			missing = append(missing, quoteTable(t))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: publication %s exists without %s, so their changes would never arrive; ALTER PUBLICATION %s ADD TABLE %s",
			ErrPublication, pub, strings.Join(missing, ", "), quoteIdent(pub), strings.Join(missing, ", "))
	}
	return nil
}

// session runs one replication connection until it fails or ctx ends.
// streamed reports whether it got as far as streaming.
func (l *Listener) session(ctx context.Context) (streamed bool, err error) {
	plain, repl, err := l.connect(ctx)
	if err != nil {
		return false, err
	}
	defer closeConn(plain)
	defer closeConn(repl)
	confirmed, err := l.setup(ctx, plain, repl)
	if err != nil {
		return false, err
	}
	err = pglogrepl.StartReplication(ctx, repl, l.cfg.slot, 0, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names '" + strings.ReplaceAll(l.cfg.publication, "'", "''") + "'"},
	})
	if err != nil {
		if slotBusy(err) {
			if clash := l.checkHolder(ctx, plain); clash != nil {
				return false, clash
			}
		}
		return false, fmt.Errorf("pgcdc: start replication from slot %s: %w", l.cfg.slot, err)
	}
	// The slot's position: every commit before it has been invalidated by
	// this listener or a predecessor.
	l.advance(confirmed)
	l.hasStreamed.Store(true)
	l.setFailure(nil)
	l.log.Info("pgcdc: streaming", "from", confirmed)
	l.emit(Event{Kind: EventStreaming, LSN: confirmed})
	// The invalidator's own connection, for its visibility checks.
	vis, err := pgconn.ConnectConfig(ctx, l.plainCfg)
	if err != nil {
		return true, fmt.Errorf("pgcdc: connect: %w", err)
	}
	defer closeConn(vis)
	s := &stream{l: l, repl: repl, plain: plain, vis: vis, rels: map[uint32]*relation{}, confirmed: confirmed}
	if err := s.loadDebt(ctx); err != nil {
		return true, err
	}
	return true, s.run(ctx)
}

// checkHolder returns an error when the listener holding the slot feeds
// another cache prefix: slot names are per database, not per cache, so
// two services on one database with the default slot name would otherwise
// make the second wait, as a standby, forever, its cache never
// invalidated. The holder is known by its session's application_name.
func (l *Listener) checkHolder(ctx context.Context, plain *pgconn.PgConn) error {
	ours := l.plainCfg.RuntimeParams["application_name"]
	if !strings.HasPrefix(ours, appPrefix) {
		return nil // the DSN names the sessions: nothing to compare
	}
	rows, err := query(ctx, plain, `SELECT a.application_name FROM pg_replication_slots s
		JOIN pg_stat_activity a ON a.pid = s.active_pid WHERE s.slot_name = $1`, l.cfg.slot)
	if err != nil || len(rows) == 0 {
		return nil // released meanwhile, or not visible: wait as before
	}
	holder := rows[0][0]
	// The server keeps 63 bytes of an application_name.
	same := holder == ours || len(holder) >= 60 && strings.HasPrefix(ours, holder)
	if !strings.HasPrefix(holder, appPrefix) || same {
		return nil
	}
	return fmt.Errorf("%w: replication slot %s is held by the listener of cache prefix %q, and this listener's is %q: a slot feeds one prefix; give each its own (WithSlot)",
		ErrBadOption, l.cfg.slot, strings.TrimPrefix(holder, appPrefix), l.m.Prefix())
}

// query runs sql with text arguments and returns its rows as text.
// Each is bounded by queryTimeout: a connection that went silent without
// closing would otherwise hold the session for good.
func query(ctx context.Context, c *pgconn.PgConn, sql string, args ...string) ([][]string, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	params := make([][]byte, len(args))
	for i, a := range args {
		params[i] = []byte(a)
	}
	res := c.ExecParams(ctx, sql, params, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, fmt.Errorf("pgcdc: %s: %w", sql, res.Err)
	}
	out := make([][]string, len(res.Rows))
	for i, r := range res.Rows {
		out[i] = make([]string, len(r))
		for j, v := range r {
			out[i][j] = string(v)
		}
	}
	return out, nil
}

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

// isClass reports a PostgreSQL error of the SQLSTATE class (its first two
// characters).
func isClass(err error, class string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, class)
}

// slotBusy reports PostgreSQL's "replication slot … is active for PID …".
func slotBusy(err error) bool { return isCode(err, "55006") }

// fatal reports errors that waiting and reconnecting cannot fix.
func fatal(err error) bool {
	if errors.Is(err, ErrBadOption) || errors.Is(err, ErrNotLogical) || errors.Is(err, depcache.ErrClosed) ||
		errors.Is(err, ErrTableNotFound) || errors.Is(err, ErrPublication) || errors.Is(err, ErrSlotLost) {
		return true
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch {
	case pgErr.Code == "42501": // insufficient_privilege
		return true
	case len(pgErr.Code) == 5 && pgErr.Code[:2] == "28": // invalid authorization
		return true
	case pgErr.Code == "3D000": // the database does not exist
		return true
	case pgErr.Code == "55000": // object_not_in_prerequisite_state: a lost slot, logical decoding off
		return true
	}
	return false
}

// sleep waits d or until ctx ends; false if ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// holdForDebt holds the manager (depcache.Manager.Hold: nothing served,
// nothing stored) while a Clear is owed, or releases it. Commits confirmed
// under a debt were not invalidated: until the Clear has run, the cache
// may hold entries they condemned, and this process at least serves none.
func (l *Listener) holdForDebt(owed bool) {
	l.debtMu.Lock()
	defer l.debtMu.Unlock()
	switch {
	case owed && l.debtRelease == nil:
		l.debtRelease = l.m.Hold()
	case !owed && l.debtRelease != nil:
		l.debtRelease()
		l.debtRelease = nil
	}
}
