package gormplugin

import (
	"context"
	"database/sql"
	"errors"
	"reflect"
	"sync"
	"sync/atomic"

	"gorm.io/gorm"

	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/internal/pluginapi"
)

// txPool is a transaction begun through the plugin's pool.
type txPool struct {
	gorm.ConnPool
	p *Plugin

	parent  gorm.GetDBConnector // the pool it was begun on, for GetDBConn; nil for GORM's statement transactions the plugin adopted
	ctx     context.Context     // the transaction's: bounds the wait for the invalidation after COMMIT; nil is none
	written atomic.Bool         // a write ran: reads bypass the cache

	mu        sync.Mutex
	queue     []string // tags to invalidate after COMMIT
	committed bool     // Commit was called: a later Rollback keeps the queue
	done      bool     // the queue ran or was dropped
}

var (
	_ gorm.Tx             = (*txPool)(nil)
	_ gorm.GetDBConnector = (*txPool)(nil)
)

// GetDBConn keeps tx.DB() working inside a transaction, as it does on a
// bare *sql.Tx.
func (t *txPool) GetDBConn() (*sql.DB, error) {
	if t.parent != nil {
		return t.parent.GetDBConn()
	}
	switch inner := t.ConnPool.(type) {
	case gorm.GetDBConnector:
		return inner.GetDBConn()
	case *sql.Tx:
		// As gorm.DB.DB does for a *sql.Tx: database/sql does not export it.
		return (*sql.DB)(reflect.ValueOf(inner).Elem().FieldByName("db").UnsafePointer()), nil
	}
	return nil, gorm.ErrInvalidDB
}

// enqueue holds tags until the transaction ends.
func (t *txPool) enqueue(tags []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		// The transaction already ended: a statement that ran on it after
		// COMMIT failed in the database, but be safe.
		t.mu.Unlock()
		t.p.invalidate(context.Background(), tags)
		t.mu.Lock()
		return
	}
	t.queue = append(t.queue, tags...)
}

// Commit commits, then runs the queued invalidations — also when COMMIT
// returned an error, since the commit may have happened.
func (t *txPool) Commit() error {
	t.p.poolBusy()
	committer, ok := t.ConnPool.(gorm.TxCommitter)
	if !ok {
		return gorm.ErrInvalidTransaction
	}
	// The outbox row (WithOutbox) commits with the transaction, or the
	// transaction does not commit.
	t.mu.Lock()
	queued := t.queue
	t.mu.Unlock()
	ids, err := t.p.recordInTx(t.ConnPool, queued)
	if err != nil {
		committer.Rollback()
		t.mu.Lock()
		t.queue, t.done = nil, true
		t.mu.Unlock()
		return err
	}
	t.mu.Lock()
	t.committed = true
	t.mu.Unlock()
	err = committer.Commit()
	t.flush(ids)
	return err
}

// Rollback drops the queued invalidations, unless Commit was called before
// (GORM's Transaction rolls back after a failed Commit).
func (t *txPool) Rollback() error {
	t.p.poolBusy()
	committer, ok := t.ConnPool.(gorm.TxCommitter)
	if !ok {
		return gorm.ErrInvalidTransaction
	}
	err := committer.Rollback()
	t.mu.Lock()
	if !t.committed {
		t.queue, t.done = nil, true
	}
	t.mu.Unlock()
	return err
}

func (t *txPool) flush(ids []string) {
	t.mu.Lock()
	tags := t.queue
	t.queue, t.done = nil, true
	t.mu.Unlock()
	if len(tags) > 0 {
		ctx := t.ctx
		if ctx == nil {
			ctx = context.Background()
		}
		t.p.invalidateRecorded(ctx, tags, ids)
	}
}

// StmtContext lets PreparedStmtDB use the transaction.
func (t *txPool) StmtContext(ctx context.Context, stmt *sql.Stmt) *sql.Stmt {
	if s, ok := t.ConnPool.(interface {
		StmtContext(context.Context, *sql.Stmt) *sql.Stmt
	}); ok {
		return s.StmtContext(ctx, stmt)
	}
	return stmt
}

// txState says how the statement's connection relates to transactions:
// not in one, in one the plugin owns, or in one it cannot see the end of.
type txState int

const (
	noTx txState = iota
	ownTx
	foreignTx
)

func txOf(db *gorm.DB) (txState, *txPool) {
	switch connPool := db.Statement.ConnPool.(type) {
	case *txPool:
		return ownTx, connPool
	case *gorm.PreparedStmtTX:
		if t, ok := connPool.Tx.(*txPool); ok {
			return ownTx, t
		}
		return foreignTx, nil
	case *pluginPool, *sql.DB, *sql.Conn, *gorm.PreparedStmtDB:
		return noTx, nil
	case gorm.TxCommitter:
		return foreignTx, nil
	}
	return noTx, nil
}

// txKey carries the transaction TxContext was given.
type txKey struct{}

// DB returns what a function given ctx should query through: the
// transaction carried by ctx when ctx comes from TxContext(tx) (or was
// derived from one, as the ctx of a memoized function called with it is)
// and tx is a transaction on db's database, else db. Either way with ctx,
// so that the plugin sees the cached computation ctx belongs to:
//
//	article := depcache.Memoize(func(ctx context.Context, id int) (Article, error) {
//		var a Article
//		err := gormplugin.DB(ctx, db).First(&a, id).Error
//		return a, err
//	}, …)
//
//	db.Transaction(func(tx *gorm.DB) error {
//		…write through tx…
//		a, err := article(gormplugin.TxContext(tx), 1) // sees the write
//	})
//
// Without it, a function called inside a transaction queries outside it
// and misses the transaction's own writes.
func DB(ctx context.Context, db *gorm.DB) *gorm.DB {
	ctx = orBackground(ctx)
	if tx, ok := ctx.Value(txKey{}).(*gorm.DB); ok && tx != nil && sameDatabase(tx, db) {
		return tx.WithContext(ctx)
	}
	return db.WithContext(ctx)
}

// orBackground is ctx, or context.Background() for a nil ctx: the plugin's
// functions take a nil ctx as depcache's do, where it would otherwise panic.
func orBackground(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return ctx
}

// sameDatabase reports whether two *gorm.DB come from one gorm.Open: their
// sessions and transactions share its dialector.
func sameDatabase(a, b *gorm.DB) bool {
	if a.Config == b.Config {
		return true
	}
	da, db := a.Dialector, b.Dialector
	if da == nil || db == nil || reflect.TypeOf(da) != reflect.TypeOf(db) || !reflect.TypeOf(da).Comparable() {
		return false
	}
	return da == db
}

// TxContext returns the context to give Memoize and Fetch inside the
// transaction tx. Under it a memoized call never fills the cache (the
// transaction's snapshot may predate a committed invalidation, and its own
// writes are uncommitted); once tx has written, calls do not read it either,
// so that the transaction sees its own writes. Query through tx inside.
//
// The returned context carries tx: a memoized function reaches it with
// DB(ctx, db), which it should use for every query.
//
// A nil tx (or one without a Statement) gives a context under which
// memoized calls neither read nor fill the cache: which transaction the
// caller is in cannot be known, so nothing it reads may be cached.
func TxContext(tx *gorm.DB) context.Context {
	if tx == nil || tx.Statement == nil {
		return depcache.Bypass(context.Background())
	}
	ctx := tx.Statement.Context
	if ctx == nil {
		ctx = context.Background()
	}
	ctx = context.WithValue(ctx, txKey{}, tx)
	state, own := txOf(tx)
	switch state {
	case ownTx:
		return pluginapi.Restrict(ctx, func() (bool, bool) { return !own.written.Load(), false })
	case foreignTx:
		return depcache.Bypass(ctx)
	}
	return ctx
}

// ErrForeignTransaction is the error a write gets, with WithForeignTxError,
// inside a transaction the plugin did not begin: it cannot invalidate after
// that transaction commits.
var ErrForeignTransaction = errors.New("gormplugin: write inside a transaction the plugin did not begin (db.Connection, a *sql.Tx handed to GORM, or another plugin's pool): its invalidation cannot wait for the commit")
