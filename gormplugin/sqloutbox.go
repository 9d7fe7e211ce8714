package gormplugin

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/depcache/go-depcache/depcache"
)

// SQLOutbox is the durable outbox of WithOutbox on a database/sql handle,
// for invalidations made outside GORM: by hand (InvalidateDependency), or
// for writes made with database/sql (InvalidateInTx). It shares the table,
// the flusher and the guarantees of the plugin's outbox: a process that
// uses one also delivers what the others left, before its manager serves
// from the cache (see the package documentation). Close stops its flusher.
type SQLOutbox struct{ p *Plugin }

// NewSQLOutbox creates the outbox table on db if it does not exist and
// starts the flusher. dialect is "sqlite", "postgres" or "mysql" (for
// MariaDB too); opts are the plugin's (WithOutboxTable, WithOutboxPoll,
// WithLogger; WithOutbox is implied). Where an application also installs
// the GORM plugin with WithOutbox on the same database and manager, the
// plugin's own Plugin.InvalidateDependency does the same.
func NewSQLOutbox(m *depcache.Manager, db *sql.DB, dialect string, opts ...Option) (*SQLOutbox, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: NewSQLOutbox needs a *sql.DB", ErrOutbox)
	}
	p := New(m, append(opts, WithOutbox())...)
	if err := p.openOutboxOn(db, dialect, false); err != nil {
		return nil, err
	}
	return &SQLOutbox{p: p}, nil
}

// InvalidateDependency records deps in the outbox, then invalidates them
// in the manager: if the invalidation fails and this process dies before
// its retry succeeds, another process delivers it.
func (o *SQLOutbox) InvalidateDependency(ctx context.Context, deps ...string) (int, error) {
	return o.p.InvalidateDependency(ctx, deps...)
}

// InvalidateInTx records deps in the outbox inside tx, a write transaction
// of the caller's, so that they commit with it; call the returned function
// once tx.Commit has returned (also when it returned an error: the commit
// may have happened), and not after a Rollback. It invalidates and, once
// that has succeeded, deletes the rows; if the process dies before, a
// flusher delivers them. It waits for the invalidation at most until ctx
// ends, as a GORM write does; the invalidation then goes on in the
// background, and Close waits for it.
//
//	tx, _ := db.BeginTx(ctx, nil)
//	tx.ExecContext(ctx, "UPDATE users SET name = $1 WHERE id = $2", name, id)
//	after, err := outbox.InvalidateInTx(ctx, tx, gormplugin.RowTag("users", id), gormplugin.ListTag("users"))
//	if err != nil { tx.Rollback(); return err }
//	err = tx.Commit()
//	after()
func (o *SQLOutbox) InvalidateInTx(ctx context.Context, tx *sql.Tx, deps ...string) (after func(), err error) {
	if tx == nil {
		return nil, fmt.Errorf("%w: InvalidateInTx needs a transaction", ErrOutbox)
	}
	deps = dedupe(deps)
	ids, err := o.p.ob.record(ctx, tx, deps)
	if err != nil {
		return nil, err
	}
	// After COMMIT the rows are there: the wait ends with ctx, and the
	// invalidation goes on in the background (Close waits for it).
	return func() { o.p.invalidateRecorded(ctx, deps, ids) }, nil
}

// FlushOutbox delivers what the outbox holds now (Plugin.FlushOutbox).
func (o *SQLOutbox) FlushOutbox(ctx context.Context) error { return o.p.FlushOutbox(ctx) }

// Close stops the flusher, after deleting the rows already delivered.
func (o *SQLOutbox) Close() error { return o.p.Close() }
