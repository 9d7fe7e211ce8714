package gormplugin

import (
	"reflect"

	"gorm.io/gorm"
)

// GORM wraps every Create, Update and Delete in a transaction of its own
// (gorm:begin_transaction … gorm:commit_or_rollback_transaction). On the
// plugin's pool that transaction is already the plugin's. On any other pool
// — db.Connection's *sql.Conn, the source pool dbresolver swaps in — GORM
// begins a raw *sql.Tx, which would look like a transaction the plugin
// cannot see the end of. It can: the plugin records the statement's pool
// just before gorm:begin_transaction, and a pool that changed there is the
// statement's own transaction, which it then wraps so that GORM's commit
// runs the queued invalidations. The gorm:started_transaction flag cannot
// tell this, since it survives on statements that are reused.

const settingPoolBeforeBegin = "depcache:pool_before_begin"

// recordPoolBeforeBegin runs right before gorm:begin_transaction.
func recordPoolBeforeBegin(db *gorm.DB) {
	db.InstanceSet(settingPoolBeforeBegin, poolHolder{db.Statement.ConnPool})
}

// poolHolder keeps a nil pool distinguishable from "not recorded".
type poolHolder struct{ pool gorm.ConnPool }

// adoptStatementTx runs right after gorm:begin_transaction, before hooks
// and associations write anything: it makes the transaction GORM began for
// this statement the plugin's own, where it is not already.
func (p *Plugin) adoptStatementTx(db *gorm.DB) {
	v, ok := db.InstanceGet(settingPoolBeforeBegin)
	if !ok {
		return
	}
	db.InstanceSet(settingPoolBeforeBegin, nil)
	before, ok := v.(poolHolder)
	if !ok || samePool(before.pool, db.Statement.ConnPool) {
		return // GORM began nothing: no transaction, or one already open
	}
	switch tx := db.Statement.ConnPool.(type) {
	case *txPool:
	case *gorm.PreparedStmtTX:
		if _, own := tx.Tx.(*txPool); !own && tx.Tx != nil {
			tx.Tx = &txPool{ConnPool: tx.Tx, p: p, ctx: db.Statement.Context}
		}
	case gorm.Tx:
		db.Statement.ConnPool = &txPool{ConnPool: tx, p: p, ctx: db.Statement.Context}
	}
}

func samePool(a, b gorm.ConnPool) bool {
	if a == nil || b == nil {
		return a == b
	}
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	if ta != tb {
		return false
	}
	if !ta.Comparable() {
		return false
	}
	return a == b
}
