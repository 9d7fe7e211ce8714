package stalecheck

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"gorm.io/gorm"

	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin/pgcdc"
)

// CDC adds writers that bypass GORM, and a pgcdc listener that
// invalidates their writes, to a run on PostgreSQL (with wal_level=logical).
type CDC struct {
	// DSN is the database of Config.DB, for the raw writers' own
	// connections and the listener (its user needs REPLICATION, and
	// ownership of the table for the publication).
	DSN string
	// Writers write with plain SQL on their own connections, beside
	// Config.Writers (default 2). A raw write is acknowledged once the
	// listener's Processed has passed pg_current_wal_lsn() read after its
	// commit: check (a) then holds the listener to its guarantee.
	Writers int
	// AckAtCommit acknowledges raw writes at their commit, without waiting
	// for the listener: a broken setup, to show that the harness bites.
	AckAtCommit bool
}

// cdcRun is the listener of a run and the raw writers' pool.
type cdcRun struct {
	cfg   *CDC
	db    *sql.DB
	l     *pgcdc.Listener
	table string
	slot  string
	stop  func() error
}

// startCDC sets up the listener on m (slot and publication of the run's
// own, dropped by stop) and runs it.
func startCDC(ctx context.Context, cfg *CDC, m *depcache.Manager, gdb *gorm.DB) (*cdcRun, error) {
	if cfg.Writers == 0 {
		cfg.Writers = 2
	}
	stmt := &gorm.Statement{DB: gdb}
	if err := stmt.Parse(&HotRow{}); err != nil {
		return nil, err
	}
	db, err := sql.Open("pgx", cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("stalecheck: CDC.DSN: %w", err)
	}
	c := &cdcRun{cfg: cfg, db: db, table: stmt.Schema.Table, slot: fmt.Sprintf("depcache_stalecheck_%x", rand.Uint32())}
	l, err := pgcdc.New(m, cfg.DSN, pgcdc.WithSlot(c.slot), pgcdc.WithPublication(c.slot),
		pgcdc.WithTables(c.table), pgcdc.WithModels(gdb, &HotRow{}),
		pgcdc.WithBackoff(10*time.Millisecond, 200*time.Millisecond),
		pgcdc.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		db.Close()
		return nil, err
	}
	c.l = l
	if err := l.Setup(ctx); err != nil {
		db.Close()
		return nil, errors.Join(err, c.drop(context.WithoutCancel(ctx)))
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(runCtx) }()
	c.stop = func() error {
		cancel()
		err := <-done
		err = errors.Join(err, c.drop(context.WithoutCancel(ctx)))
		return errors.Join(err, db.Close())
	}
	return c, nil
}

// drop removes the run's slot, once the listener's connection has gone,
// and its publication.
func (c *cdcRun) drop(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var n int
		err := c.db.QueryRowContext(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active", c.slot).Scan(&n)
		if err != nil {
			return fmt.Errorf("stalecheck: drop slot %s: %w", c.slot, err)
		}
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stalecheck: drop slot %s: still active: %w", c.slot, ctx.Err())
		case <-time.After(20 * time.Millisecond): // the server notices the connection's end
		}
	}
	_, err := c.db.ExecContext(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", c.slot)
	if err == nil {
		_, err = c.db.ExecContext(ctx, "DROP PUBLICATION IF EXISTS "+c.slot)
	}
	return err
}

// lsn is the WAL position now: after the caller's last commit.
func (c *cdcRun) lsn(ctx context.Context) (pgcdc.LSN, error) {
	var s string
	if err := c.db.QueryRowContext(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		return 0, err
	}
	return pgcdc.ParseLSN(s)
}

// settle waits until the listener has processed every commit so far.
func (c *cdcRun) settle(ctx context.Context) error {
	lsn, err := c.lsn(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return c.l.WaitFor(ctx, lsn)
}

// ack waits for the listener to pass the caller's last commit (unless
// AckAtCommit).
func (c *cdcRun) ack(ctx context.Context) error {
	if c.cfg.AckAtCommit {
		return nil
	}
	if err := c.settle(ctx); err != nil {
		return fmt.Errorf("wait for the listener: %w", err)
	}
	return nil
}

// rawWrite makes one random write with plain SQL, as another service
// would — the writes write makes through GORM, moves included — and
// acknowledges it once the listener has invalidated it.
func (c *cdcRun) rawWrite(ctx context.Context, cfg Config, rng *rand.Rand, led *ledger, seq *atomic.Int64) error {
	t := quoteIdent(c.table)
	kind := rng.IntN(10)
	if kind == 9 { // a mass UPDATE … WHERE grp = ? on a non-key column
		grp := rng.IntN(3)
		// Every row's lock: with Moves, which rows are in grp changes.
		for i := range cfg.Rows {
			led.locks[i].Lock()
		}
		defer func() {
			for i := range cfg.Rows {
				led.locks[i].Unlock()
			}
		}()
		v := seq.Add(1)
		newGrp := -1
		if cfg.Moves && rng.IntN(2) == 0 {
			newGrp = (grp + 1 + rng.IntN(2)) % 3 // moves the group's rows
		}
		changed, err := c.massUpdate(ctx, t, grp, newGrp, v, led)
		if err != nil {
			return fmt.Errorf("raw mass update: %w", err)
		}
		if err := c.ack(ctx); err != nil {
			return err
		}
		for _, s := range changed {
			led.ack(s.row, s.state)
		}
		return nil
	}

	i := rng.IntN(cfg.Rows)
	led.locks[i].Lock()
	defer led.locks[i].Unlock()
	id := i + 1
	grp, exists := i%3, true
	switch err := c.db.QueryRowContext(ctx, "SELECT grp FROM "+t+" WHERE id = $1", id).Scan(&grp); {
	case errors.Is(err, sql.ErrNoRows):
		exists = false
	case err != nil:
		return err
	}
	v := seq.Add(1)
	if kind == 8 { // poison, rolled back: the stream never carries it
		if !exists {
			return nil
		}
		tx, err := c.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE "+t+" SET val = $1 WHERE id = $2", poison, id); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Rollback()
	}
	move := cfg.Moves && kind >= 5 // an update by key that moves the row
	if cfg.Moves && (move || !exists) {
		grp = (grp + 1 + rng.IntN(2)) % 3
	}
	next := state{v, true, grp}
	var (
		query string
		args  []any
	)
	switch {
	case !exists:
		query, args = "INSERT INTO "+t+" (id, ver, grp, val) VALUES ($1, $2, $3, 'ok')", []any{id, v, grp}
	case kind < 2:
		next = state{v, false, grp}
		query, args = "DELETE FROM "+t+" WHERE id = $1", []any{id}
	case move:
		query, args = "UPDATE "+t+" SET ver = $1, grp = $2 WHERE id = $3", []any{v, grp, id}
	default:
		query, args = "UPDATE "+t+" SET ver = $1 WHERE id = $2", []any{v, id}
	}
	// Recorded before COMMIT: a reader may see it as soon as the database
	// has it.
	led.commit(i, next)
	if _, err := c.db.ExecContext(ctx, query, args...); err != nil {
		return fmt.Errorf("raw write row %d: %w", id, err)
	}
	if err := c.ack(ctx); err != nil {
		return err
	}
	led.ack(i, next)
	return nil
}

type rowState struct {
	row   int
	state state
}

// massUpdate sets ver (and grp, unless newGrp < 0) of the rows of group
// grp in one transaction, recording their new states before COMMIT.
func (c *cdcRun) massUpdate(ctx context.Context, t string, grp, newGrp int, v int64, led *ledger) ([]rowState, error) {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, "SELECT id FROM "+t+" WHERE grp = $1", grp)
	if err != nil {
		return nil, err
	}
	var changed []rowState
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		g := grp
		if newGrp >= 0 {
			g = newGrp
		}
		changed = append(changed, rowState{id - 1, state{v, true, g}})
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	for _, s := range changed {
		led.commit(s.row, s.state)
	}
	if newGrp >= 0 {
		_, err = tx.ExecContext(ctx, "UPDATE "+t+" SET ver = $1, grp = $2 WHERE grp = $3", v, newGrp, grp)
	} else {
		_, err = tx.ExecContext(ctx, "UPDATE "+t+" SET ver = $1 WHERE grp = $2", v, grp)
	}
	if err != nil {
		return nil, err
	}
	return changed, tx.Commit()
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
