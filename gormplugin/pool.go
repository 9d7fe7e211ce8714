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
