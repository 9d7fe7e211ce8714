package gormplugin

import (
	"errors"
	"fmt"

	"gorm.io/gorm"

	"github.com/depcache/go-depcache/depcache"
)

// The write side: callbacks around GORM's create, update and delete that
// find what a write changed and invalidate it after it commits. Rows are
// captured by RETURNING (returning.go) or selected FOR UPDATE
// (select_keys.go); the tags are computed in write_tags.go and cascade.go;
// raw Exec is in raw_write.go.

type writeOp int

const (
	opCreate writeOp = iota
	opUpdate
	opDelete
)

const (
	settingCapture  = "depcache:returning"
	settingSelected = "depcache:selected_keys"
	settingOwnTx    = "depcache:own_tx"
)

// beforeWrite marks the transaction as written and, where the database has
// UPDATE/DELETE … RETURNING, swaps in a pool that appends RETURNING <pk> to
// the statement GORM built and collects the keys of the rows it changed.
func (p *Plugin) beforeWrite(op writeOp) func(*gorm.DB) {
	return func(db *gorm.DB) {
		p.prepareWrite(db, op)
		p.snapshotSet(db, op)
	}
}

func (p *Plugin) prepareWrite(db *gorm.DB, op writeOp) {
	db.InstanceSet(settingCapture, (*returningCapture)(nil))
	db.InstanceSet(settingSelected, [][]any(nil))
	db.InstanceSet(settingOwnTx, (*txPool)(nil))
	if db.Error != nil || db.DryRun { // DryRun builds SQL and runs nothing
		return
	}
	if p.refuseClosed(db) {
		return
	}
	switch state, tx := txOf(db); state {
	case ownTx:
		tx.written.Store(true)
	case foreignTx:
		if p.cfg.foreignError {
			db.AddError(ErrForeignTransaction)
			return
		}
	case noTx:
		p.outboxOwnTx(db) // WithOutbox: the outbox row commits with the write
	}
	if op == opCreate {
		prepareInsertIDs(db)
		return
	}
	s := db.Statement.Schema
	if s == nil || len(s.PrimaryFields) == 0 {
		return
	}
	if !returningDialect(db) {
		p.selectForUpdate(db)
		return
	}
	if _, user := db.Statement.Clauses["RETURNING"]; user {
		return // GORM scans RETURNING into the model itself
	}
	if db.Statement.ReflectValue.Kind() == 0 {
		return
	}
	capture := &returningCapture{ConnPool: db.Statement.ConnPool, statement: db.Statement, keyFields: s.PrimaryFields}
	db.Statement.ConnPool = capture
	db.InstanceSet(settingCapture, capture)
}

// afterWrite computes what a write changed and invalidates it: queued
// until COMMIT inside a transaction the plugin owns (the implicit one GORM
// begins per statement, or an explicit one), at once otherwise.
func (p *Plugin) afterWrite(op writeOp) func(*gorm.DB) {
	return func(db *gorm.DB) {
		unsnapshotSet(db)
		var capture *returningCapture
		if v, ok := db.InstanceGet(settingCapture); ok {
			capture, _ = v.(*returningCapture)
		}
		if capture != nil {
			db.Statement.ConnPool = capture.ConnPool
			db.InstanceSet(settingCapture, (*returningCapture)(nil))
		}
		if db.DryRun || refusedBefore(db) {
			return // nothing ran
		}
		p.remember(db.Statement.Schema)
		p.dispatch(db, p.withConjunction(db, op, p.writeTags(db, op, capture)))
		if v, ok := db.InstanceGet(settingOwnTx); ok {
			if tx, _ := v.(*txPool); tx != nil {
				// The transaction selectForUpdate opened: end it, which
				// runs the write's invalidations after COMMIT.
				db.InstanceSet(settingOwnTx, (*txPool)(nil))
				if db.Error != nil {
					tx.Rollback()
				} else {
					db.AddError(tx.Commit())
				}
				db.Statement.ConnPool = db.ConnPool
			}
		}
	}
}

// dispatch queues tags on the statement's transaction, or invalidates now.
func (p *Plugin) dispatch(db *gorm.DB, tags []string) {
	if len(tags) == 0 {
		return
	}
	switch state, tx := txOf(db); state {
	case ownTx:
		tx.enqueue(tags)
	case foreignTx:
		// The commit is out of sight: invalidate now and once more later.
		p.recordInForeignTx(db, tags)
		p.invalidate(db.Statement.Context, tags)
		p.invalidateLater(tags)
	default:
		if p.ob != nil {
			p.invalidateDurably(db.Statement.Context, tags)
			return
		}
		p.invalidate(db.Statement.Context, tags)
	}
}

// refuseClosed fails a write before it runs when the plugin's manager is
// closed (a shutdown that closed the manager before the *gorm.DB's last
// users): it would commit with no invalidation, and every process would
// serve what it replaced until the TTL. With WithOutbox the write's outbox
// row is delivered by any process's flusher, so the write goes ahead.
func (p *Plugin) refuseClosed(db *gorm.DB) bool {
	if p.cfg.outbox || !p.m.Closed() {
		return false
	}
	db.AddError(fmt.Errorf("gormplugin: write refused: %w (it would commit with no invalidation; close the manager after the *gorm.DB's last writer)", depcache.ErrClosed))
	return true
}

// refusedBefore reports a statement the plugin refused before it ran
// (ErrForeignTransaction, refuseClosed): there is nothing to invalidate.
func refusedBefore(db *gorm.DB) bool {
	return errors.Is(db.Error, ErrForeignTransaction) || errors.Is(db.Error, depcache.ErrClosed)
}
