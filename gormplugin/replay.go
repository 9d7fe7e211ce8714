package gormplugin

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
)

// A hit is replayed through a real *sql.Rows, from a database/sql driver
// of the plugin's own that serves a recorded resultSet: GORM's scan then
// meets database/sql's own conversions (Scanner, RawBytes, strconv between
// kinds, NULL into pointers) and ColumnTypes, exactly as on a miss.
//
// database/sql gives *sql.Rows only from a *sql.DB, and a *sql.DB runs a
// goroutine until it is closed. The plugin takes a few *sql.Conn from one
// and closes the DB at once: a Conn keeps its connection after its DB is
// closed, and the replay connections hold no resource at all, so nothing
// runs in the background.

// replayRows returns rs as *sql.Rows.
func replayRows(rs *resultSet) (*sql.Rows, error) {
	conns, err := replayConns()
	if err != nil {
		return nil, err
	}
	c := conns[replayNext.Add(1)%uint32(len(conns))]
	// Background: the rows are in memory, and a cancellable context would
	// make database/sql start a goroutine per query to watch it.
	return c.QueryContext(context.Background(), "", rs)
}

var replayNext atomic.Uint32

// replayConns are the connections replays run on: several, so that hits
// on many goroutines do not queue on one connection's lock.
var replayConns = sync.OnceValues(func() ([]*sql.Conn, error) {
	db := sql.OpenDB(replayConnector{})
	defer db.Close()
	n := min(max(runtime.GOMAXPROCS(0), 1), 16)
	db.SetMaxIdleConns(n)
	conns := make([]*sql.Conn, n)
	for i := range conns {
		c, err := db.Conn(context.Background())
		if err != nil {
			return nil, err
		}
		conns[i] = c
	}
	return conns, nil
})

var errReplayStatement = errors.New("gormplugin: the replay connection runs no statements")

// errorRow returns a *sql.Row whose Scan returns err. database/sql makes
// a Row only from a query: the replay connection answers a query whose one
// argument is a rowError with its error.
func errorRow(err error) *sql.Row {
	conns, cerr := replayConns()
	if cerr != nil {
		return nil
	}
	return conns[0].QueryRowContext(context.Background(), "", rowError{err})
}

type rowError struct{ err error }

type replayConnector struct{}

func (replayConnector) Connect(context.Context) (driver.Conn, error) { return replayConn{}, nil }
func (replayConnector) Driver() driver.Driver                        { return replayDriver{} }

type replayDriver struct{}

func (replayDriver) Open(string) (driver.Conn, error) { return replayConn{}, nil }

// replayConn answers a query whose one argument is the *resultSet to
// serve.
type replayConn struct{}

var (
	_ driver.QueryerContext    = replayConn{}
	_ driver.NamedValueChecker = replayConn{}
)

func (replayConn) Prepare(string) (driver.Stmt, error) { return nil, errReplayStatement }
func (replayConn) Close() error                        { return nil }
func (replayConn) Begin() (driver.Tx, error)           { return nil, errReplayStatement }

// CheckNamedValue passes the *resultSet through unconverted.
func (replayConn) CheckNamedValue(*driver.NamedValue) error { return nil }

func (replayConn) QueryContext(_ context.Context, _ string, args []driver.NamedValue) (driver.Rows, error) {
	if len(args) != 1 {
		return nil, errReplayStatement
	}
	if e, ok := args[0].Value.(rowError); ok {
		return nil, e.err
	}
	rs, ok := args[0].Value.(*resultSet)
	if !ok {
		return nil, errReplayStatement
	}
	return &replayDriverRows{rs: rs}, nil
}

// replayDriverRows walks a resultSet as driver rows.
type replayDriverRows struct {
	rs   *resultSet
	cols []string
	next int
}

var _ driver.RowsColumnTypeScanType = (*replayDriverRows)(nil)

// Columns returns a copy: GORM renames columns in the slice it is given
// (Statement.ColumnMapping), and the resultSet may be replayed again.
func (r *replayDriverRows) Columns() []string {
	if r.cols == nil {
		r.cols = append(make([]string, 0, len(r.rs.columns)), r.rs.columns...)
	}
	return r.cols
}

func (r *replayDriverRows) Close() error { return nil }

func (r *replayDriverRows) Next(dest []driver.Value) error {
	if r.next >= len(r.rs.rows) {
		// database/sql closes a connection that reports ErrBadConn; the
		// caller adds such an error itself (replay).
		if r.rs.err != nil && !errors.Is(r.rs.err, driver.ErrBadConn) {
			return r.rs.err
		}
		return io.EOF
	}
	copy(dest, r.rs.rows[r.next])
	r.next++
	return nil
}

// ColumnTypeScanType reports the type the original driver reported; a
// type without a code (see scanTypeCodes) reads as any, as for a driver
// that reports none.
func (r *replayDriverRows) ColumnTypeScanType(i int) reflect.Type {
	if t := r.rs.scanTypes[i]; t != nil {
		return t
	}
	return reflect.TypeFor[any]()
}
