package gormplugin

import (
	"context"
	"database/sql"

	"gorm.io/gorm"
)

// GORM runs no callback after an explicit transaction's real COMMIT
// (go-gorm/gorm#7367), so the plugin owns the commit: it wraps the
// connection pool, and the transactions it begins queue their invalidations
// and run them once Commit has returned.

// pluginPool wraps the *gorm.DB's connection pool so that transactions begun
// through it are *txPool.
type pluginPool struct {
	gorm.ConnPool
	p *Plugin
}

var (
	_ gorm.ConnPoolBeginner = (*pluginPool)(nil)
	_ gorm.GetDBConnector   = (*pluginPool)(nil)
)

func (outer *pluginPool) BeginTx(ctx context.Context, opts *sql.TxOptions) (gorm.ConnPool, error) {
	outer.p.beforePoolUse()
	var (
		inner gorm.ConnPool
		err   error
	)
	switch b := outer.ConnPool.(type) {
	case gorm.TxBeginner:
		inner, err = b.BeginTx(ctx, opts)
	case gorm.ConnPoolBeginner:
		inner, err = b.BeginTx(ctx, opts)
	default:
		return nil, gorm.ErrInvalidTransaction
	}
	if err != nil {
		return nil, err
	}
	return &txPool{ConnPool: inner, p: outer.p, parent: outer, ctx: ctx}, nil
}

// GetDBConn keeps db.DB() working.
func (outer *pluginPool) GetDBConn() (*sql.DB, error) {
	switch inner := outer.ConnPool.(type) {
	case *sql.DB:
		return inner, nil
	case gorm.GetDBConnector:
		return inner.GetDBConn()
	}
	return nil, gorm.ErrInvalidDB
}

// wrapPool puts the plugin's pool under db: directly where db's pool is a
// plain connection pool, and inside GORM's own PreparedStmtDB where
// PrepareStmt is on, so that db.ConnPool keeps the type GORM, dbresolver
// and users type-assert (*gorm.PreparedStmtDB), and prepared statements
// and their transactions still go through the plugin. The shared
// PreparedStmtDB is changed in place, so sessions that reuse it
// (Session{PrepareStmt: true}) get the plugin too. A pool that is already
// a transaction (GORM opened on a *sql.Tx) is left alone: wrapping would
// hide its Commit, and it is a transaction the plugin did not begin.
func (p *Plugin) wrapPool(db *gorm.DB) {
	switch outer := db.ConnPool.(type) {
	case *pluginPool, gorm.TxCommitter:
	case *gorm.PreparedStmtDB:
		_, wrapped := outer.ConnPool.(*pluginPool)
		if _, inTx := outer.ConnPool.(gorm.TxCommitter); !wrapped && !inTx {
			outer.ConnPool = &pluginPool{ConnPool: outer.ConnPool, p: p}
		}
	default:
		db.ConnPool = &pluginPool{ConnPool: db.ConnPool, p: p}
	}
	if db.Statement != nil {
		db.Statement.ConnPool = db.ConnPool
	}
}

// beginOwnTx begins a transaction the plugin owns on a statement's pool
// (the plugin's pool, or a PreparedStmtDB around it), for a write that
// needs one the user did not open. It returns the pool to run on and the
// transaction to end, or false where the pool is not the plugin's.
func beginOwnTx(ctx context.Context, connPool gorm.ConnPool) (gorm.ConnPool, *txPool, bool) {
	switch outer := connPool.(type) {
	case *pluginPool:
		tx, err := outer.BeginTx(ctx, nil)
		if err != nil {
			return nil, nil, false
		}
		return tx, tx.(*txPool), true
	case *gorm.PreparedStmtDB:
		if _, ours := outer.ConnPool.(*pluginPool); !ours {
			return nil, nil, false
		}
		tx, err := outer.BeginTx(ctx, nil)
		if err != nil {
			return nil, nil, false
		}
		if prepared, ok := tx.(*gorm.PreparedStmtTX); ok {
			if own, ok := prepared.Tx.(*txPool); ok {
				return tx, own, true
			}
		}
		if committer, ok := tx.(gorm.TxCommitter); ok {
			committer.Rollback()
		}
	}
	return nil, nil, false
}

// The statements of the application outside a transaction, and its
// BEGINs, run a due outbox poll first (outbox.polledByApp): on the
// connection they are about to take, rather than on one the flusher would
// take from under them.

func (outer *pluginPool) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	outer.p.beforePoolUse()
	return outer.ConnPool.PrepareContext(ctx, query)
}

func (outer *pluginPool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	outer.p.beforePoolUse()
	return outer.ConnPool.ExecContext(ctx, query, args...)
}

func (outer *pluginPool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	outer.p.beforePoolUse()
	return outer.ConnPool.QueryContext(ctx, query, args...)
}

func (outer *pluginPool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	outer.p.beforePoolUse()
	return outer.ConnPool.QueryRowContext(ctx, query, args...)
}

func (p *Plugin) beforePoolUse() {
	if p.ob != nil {
		p.ob.polledByApp()
	}
}

// Statements inside a transaction only tell the flusher that the
// application is busy: a poll there would read in the transaction's
// snapshot, or wait for its connection.

func (t *txPool) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	t.p.poolBusy()
	return t.ConnPool.PrepareContext(ctx, query)
}

func (t *txPool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	t.p.poolBusy()
	return t.ConnPool.ExecContext(ctx, query, args...)
}

func (t *txPool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	t.p.poolBusy()
	return t.ConnPool.QueryContext(ctx, query, args...)
}

func (t *txPool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	t.p.poolBusy()
	return t.ConnPool.QueryRowContext(ctx, query, args...)
}

func (p *Plugin) poolBusy() {
	if o := p.ob; o != nil && !o.active.Load() {
		o.active.Store(true)
	}
}
