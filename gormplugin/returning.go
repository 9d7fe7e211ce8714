package gormplugin

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// Capture by RETURNING: where the database has UPDATE and DELETE …
// RETURNING, the plugin runs GORM's built statement with RETURNING <pk>
// into its own destination and learns exactly which rows it changed.
//
// The variant is the plugin's, not the user's, so it must never be why a
// write fails: the key columns are qualified with the written table (or
// its alias), since UPDATE … FROM and DELETE … USING name other tables
// with the same columns; where the variant cannot be built the statement
// runs as written; and where it fails the statement runs again as written
// (inside a savepoint where PostgreSQL would otherwise abort the
// transaction), and the write invalidates the table tag.

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
	fellBack  bool    // the variant failed and the statement ran as written
}

const returningSavepoint = "depcache_returning"

func (capture *returningCapture) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	target, ok := returningTarget(query)
	if !ok {
		return capture.ConnPool.ExecContext(ctx, query, args...)
	}
	cols := make([]string, len(capture.keyFields))
	for i, f := range capture.keyFields {
		var b strings.Builder
		b.WriteString(target)
		b.WriteByte('.')
		capture.statement.QuoteTo(&b, f.DBName)
		cols[i] = b.String()
	}
	// A newline, so that a trailing "-- comment" cannot swallow RETURNING.
	variant := strings.TrimRight(strings.TrimSpace(query), ";") + "\nRETURNING " + strings.Join(cols, ",")

	guarded := capture.needsSavepoint(query, target)
	if guarded {
		if _, err := capture.ConnPool.ExecContext(ctx, "SAVEPOINT "+returningSavepoint); err != nil {
			return capture.runAsWritten(ctx, query, args)
		}
	}
	n, keys, err := capture.queryKeys(ctx, variant, args)
	if err == nil {
		if guarded {
			if _, err := capture.ConnPool.ExecContext(ctx, "RELEASE SAVEPOINT "+returningSavepoint); err != nil {
				return nil, err
			}
		}
		capture.keys, capture.ran = keys, true
		return rowsResult(n), nil
	}
	if guarded {
		if _, rbErr := capture.ConnPool.ExecContext(ctx, "ROLLBACK TO SAVEPOINT "+returningSavepoint); rbErr != nil {
			return nil, err
		}
		capture.ConnPool.ExecContext(ctx, "RELEASE SAVEPOINT "+returningSavepoint)
	}
	if !capture.mayBeTheVariant(err) || !guarded && !capture.canRunAgain(ctx, err) {
		return nil, err // the user's statement fails as it would without the plugin
	}
	return capture.runAsWritten(ctx, query, args)
}

// mayBeTheVariant reports an error that the RETURNING the plugin added can
// cause — a column or name it cannot resolve, a syntax it does not accept
// — rather than one of the user's statement (a constraint, a lock), which
// running it again would only repeat.
func (capture *returningCapture) mayBeTheVariant(err error) bool {
	var coded interface{ SQLState() string }
	if errors.As(err, &coded) {
		return strings.HasPrefix(coded.SQLState(), "42") // syntax error or access rule violation
	}
	msg := strings.ToLower(err.Error())
	for _, s := range []string{"no such column", "ambiguous", "syntax error", "returning"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// runAsWritten runs the user's statement unchanged: its rows are unknown,
// so the write invalidates the table tag.
func (capture *returningCapture) runAsWritten(ctx context.Context, query string, args []any) (sql.Result, error) {
	capture.fellBack = true
	return capture.ConnPool.ExecContext(ctx, query, args...)
}

func (capture *returningCapture) queryKeys(ctx context.Context, variant string, args []any) (int64, [][]any, error) {
	rows, err := capture.ConnPool.QueryContext(ctx, variant, args...)
	if err != nil {
		return 0, nil, err
	}
	defer rows.Close()
	var (
		n    int64
		keys [][]any
	)
	for rows.Next() {
		vals := make([]any, len(capture.keyFields))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return 0, nil, err
		}
		keys = append(keys, vals)
		n++
	}
	return n, keys, rows.Err()
}

// needsSavepoint reports a PostgreSQL transaction (where a failed
// statement aborts the whole transaction, so the statement could not run
// again) and a statement whose variant the plugin is not sure of: one that
// names other tables or an alias, or writes a table that is not the
// model's (whose key column may not exist there).
func (capture *returningCapture) needsSavepoint(query, target string) bool {
	if capture.statement.Dialector.Name() != "postgres" {
		return false
	}
	if _, inTx := capture.ConnPool.(gorm.TxCommitter); !inTx {
		return false
	}
	tables, err := sqlTables(query)
	if err != nil || len(tables) != 1 {
		return true
	}
	s := capture.statement.Schema
	return s == nil || tableName(target) != tableName(s.Table) || tables[0] != tableName(s.Table)
}

// canRunAgain reports whether the statement certainly did not happen, so
// running it as written cannot apply it twice, and whether the connection
// can still run it: the server rejected it (PostgreSQL reports an
// SQLSTATE; SQLite statements are atomic and in process), and — outside a
// savepoint — a failed statement leaves the transaction usable (not so on
// PostgreSQL).
func (capture *returningCapture) canRunAgain(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	switch capture.statement.Dialector.Name() {
	case "sqlite":
		return true
	case "postgres":
		var rejected interface{ SQLState() string }
		if !errors.As(err, &rejected) {
			return false
		}
		_, inTx := capture.ConnPool.(gorm.TxCommitter)
		return !inTx
	}
	return false
}

// returningTarget names the table an UPDATE or DELETE writes as the
// statement spells it — its alias when it has one — to qualify the key
// columns with. False for anything else (the statement then runs as
// written).
func returningTarget(query string) (string, bool) {
	toks := tokenize(query)
	i := 0
	switch {
	case len(toks) > 1 && strings.EqualFold(toks[0], "update"):
		i = 1
		if i+1 < len(toks) && strings.EqualFold(toks[i], "or") { // SQLite: UPDATE OR REPLACE
			i += 2
		}
	case len(toks) > 2 && strings.EqualFold(toks[0], "delete") && strings.EqualFold(toks[1], "from"):
		i = 2
	default:
		return "", false
	}
	if i < len(toks) && strings.EqualFold(toks[i], "only") {
		i++
	}
	if i >= len(toks) || !isIdent(toks[i]) || isKeyword(toks[i]) {
		return "", false
	}
	target := toks[i]
	j := i + 1
	if j < len(toks) && strings.EqualFold(toks[j], "as") {
		j++
	}
	if j < len(toks) && isIdent(toks[j]) && !isKeyword(toks[j]) {
		target = toks[j]
	}
	if j < len(toks) && toks[j] == "*" { // PostgreSQL: the table and its descendants
		return "", false
	}
	return target, true
}

// rowsResult is the sql.Result of a statement the plugin ran as a query.
type rowsResult int64

func (r rowsResult) LastInsertId() (int64, error) { return 0, nil }
func (r rowsResult) RowsAffected() (int64, error) { return int64(r), nil }
