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
// would, and acknowledges it once the listener has invalidated it.
func (c *cdcRun) rawWrite(ctx context.Context, cfg Config, rng *rand.Rand, led *ledger, seq *atomic.Int64) error {
	t := quoteIdent(c.table)
	kind := rng.IntN(10)
	if kind == 9 { // a mass UPDATE … WHERE grp = ? on a non-key column
		grp := rng.IntN(3)
		var rows []int
		for i := range cfg.Rows {
			if i%3 == grp {
				rows = append(rows, i)
			}
		}
		for _, i := range rows {
			led.locks[i].Lock()
		}
		defer func() {
			for _, i := range rows {
				led.locks[i].Unlock()
			}
		}()
		v := seq.Add(1)
		res, err := c.db.QueryContext(ctx, "UPDATE "+t+" SET ver = $1 WHERE grp = $2 RETURNING id", v, grp)
		if err != nil {
			return fmt.Errorf("raw mass update: %w", err)
		}
		var changed []int
		for res.Next() {
			var id int
			if err := res.Scan(&id); err != nil {
				res.Close()
				return err
			}
			changed = append(changed, id)
		}
		if err := errors.Join(res.Err(), res.Close()); err != nil {
			return fmt.Errorf("raw mass update: %w", err)
		}
		if err := c.ack(ctx); err != nil {
			return err
		}
		for _, id := range changed {
			led.ack(id-1, state{v, true})
		}
		return nil
	}

	i := rng.IntN(cfg.Rows)
	led.locks[i].Lock()
	defer led.locks[i].Unlock()
	id := i + 1
	var exists int
	if err := c.db.QueryRowContext(ctx, "SELECT count(*) FROM "+t+" WHERE id = $1", id).Scan(&exists); err != nil {
		return err
	}
	v := seq.Add(1)
	if kind == 8 { // poison, rolled back: the stream never carries it
		if exists == 0 {
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
	next := state{v, true}
	var err error
	switch {
	case exists == 0:
		led.commit(i, next)
		_, err = c.db.ExecContext(ctx, "INSERT INTO "+t+" (id, ver, grp, val) VALUES ($1, $2, $3, 'ok')", id, v, i%3)
	case kind < 2:
		next = state{v, false}
		led.commit(i, next)
		_, err = c.db.ExecContext(ctx, "DELETE FROM "+t+" WHERE id = $1", id)
	default:
		led.commit(i, next)
		_, err = c.db.ExecContext(ctx, "UPDATE "+t+" SET ver = $1 WHERE id = $2", v, id)
	}
	if err != nil {
		return fmt.Errorf("raw write row %d: %w", id, err)
	}
	if err := c.ack(ctx); err != nil {
		return err
	}
	led.ack(i, next)
	return nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
