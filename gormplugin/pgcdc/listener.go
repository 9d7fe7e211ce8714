package pgcdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	unkeyedSeen sync.Map // relation names logged as unkeyed

	emitMu sync.Mutex // one observer call at a time

	mu        sync.Mutex
	processed LSN
	advanced  chan struct{} // closed and replaced whenever processed grows, and when Run stops on an error
	stopErr   error         // the error the last Run stopped with, until the next Run starts
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
		o(&cfg)
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
	if plain.RuntimeParams["application_name"] == "" {
		plain.RuntimeParams["application_name"] = "depcache-pgcdc"
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
			return fmt.Errorf("pgcdc: waiting for %s (processed %s): %w", lsn, l.Processed(), ctx.Err())
		case <-ch:
		}
	}
}

func (l *Listener) advance(lsn LSN) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lsn <= l.processed {
		return
	}
	l.processed = lsn
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

// Run streams changes until ctx ends, then returns nil. Each committed
// transaction's tags are invalidated at its commit, retried with backoff
// while the backend fails, and its position is confirmed to PostgreSQL only
// after that invalidation and every one before it returned: a crash, a
// Redis outage or a restart replays from the slot. A lost connection is
// reconnected; while another listener holds the slot, Run waits for it.
// Run returns an error for what waiting cannot fix: a bad DSN or password,
// missing privileges, wal_level not logical, a closed manager; it also logs
// it at Error, for a Run started with "go l.Run(ctx)".
func (l *Listener) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer l.running.Store(false)
	l.mu.Lock()
	l.stopErr = nil
	l.mu.Unlock()
	backoff := l.cfg.minBackoff
	for {
		streamed, err := l.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if fatal(err) {
			// Logged as well as returned: "go l.Run(ctx)" drops what Run
			// returns, and the listener would then do nothing, silently.
			l.log.Error("pgcdc: listener stopped; Run returns the error", "err", err)
			l.mu.Lock()
			l.stopErr = err
			close(l.advanced) // wakes WaitFor, which returns err
			l.advanced = make(chan struct{})
			l.mu.Unlock()
			return err
		}
		if streamed {
			backoff = l.cfg.minBackoff
		}
		if slotBusy(err) {
			l.log.Debug("pgcdc: the slot is held by another listener; waiting", "err", err)
			l.emit(Event{Kind: EventSlotBusy, Err: err})
		} else {
			l.log.Warn("pgcdc: replication session ended; reconnecting", "err", err, "retry_in", backoff)
			l.emit(Event{Kind: EventDisconnected, Err: err})
		}
		if !sleep(ctx, backoff) {
			return nil
		}
		backoff = min(2*backoff, l.cfg.maxBackoff)
	}
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
	rows, err = query(ctx, plain, "SELECT 1 FROM pg_publication WHERE pubname = $1", l.cfg.publication)
	if err != nil {
		return 0, err
	}
	if len(rows) == 0 {
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
		case !isCode(err, "42710"): // 42710: another listener, or Setup, created it meanwhile
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
		return false, fmt.Errorf("pgcdc: start replication from slot %s: %w", l.cfg.slot, err)
	}
	// The slot's position: every commit before it has been invalidated by
	// this listener or a predecessor.
	l.advance(confirmed)
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

// query runs sql with text arguments and returns its rows as text.
func query(ctx context.Context, c *pgconn.PgConn, sql string, args ...string) ([][]string, error) {
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

// slotBusy reports PostgreSQL's "replication slot … is active for PID …".
func slotBusy(err error) bool { return isCode(err, "55006") }

// fatal reports errors that waiting and reconnecting cannot fix.
func fatal(err error) bool {
	if errors.Is(err, ErrBadOption) || errors.Is(err, ErrNotLogical) || errors.Is(err, depcache.ErrClosed) {
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
