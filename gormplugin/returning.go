package gormplugin

import (
	"context"
	"database/sql"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// Capture by RETURNING: where the database has UPDATE and DELETE …
// RETURNING, the plugin runs GORM's built statement with RETURNING <pk>
// into its own destination and learns exactly which rows it changed.

// returningDialect reports a database with UPDATE and DELETE … RETURNING.
// MariaDB has DELETE … RETURNING but not UPDATE, whatever GORM's mysql
// dialector claims, so MySQL-family databases are left out.
func returningDialect(db *gorm.DB) bool {
	switch db.Dialector.Name() {
	case "postgres", "sqlite":
		return true
	}
	return false
}

// returningCapture is the connection pool a mass write runs on: its
// ExecContext runs the statement as a query with RETURNING of the primary
// key, collects the keys and reports their count as RowsAffected.
type returningCapture struct {
	gorm.ConnPool
	statement *gorm.Statement
	keyFields []*schema.Field
	ran       bool    // the statement ran with RETURNING: keys is exact
	keys      [][]any // one tuple per changed row, in key-field order
}

func (capture *returningCapture) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	q := strings.TrimRight(strings.TrimSpace(query), ";")
	if !strings.HasPrefix(strings.ToUpper(q), "UPDATE") && !strings.HasPrefix(strings.ToUpper(q), "DELETE") {
		return capture.ConnPool.ExecContext(ctx, query, args...)
	}
	cols := make([]string, len(capture.keyFields))
	for i, f := range capture.keyFields {
		var b strings.Builder
		capture.statement.QuoteTo(&b, f.DBName)
		cols[i] = b.String()
	}
	rows, err := capture.ConnPool.QueryContext(ctx, q+" RETURNING "+strings.Join(cols, ","), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var n int64
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		capture.keys = append(capture.keys, vals)
		n++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	capture.ran = true
	return rowsResult(n), nil
}

// rowsResult is the sql.Result of a statement the plugin ran as a query.
type rowsResult int64

func (r rowsResult) LastInsertId() (int64, error) { return 0, nil }
func (r rowsResult) RowsAffected() (int64, error) { return int64(r), nil }
