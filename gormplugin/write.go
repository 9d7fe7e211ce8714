package gormplugin

import (
	"context"
	"database/sql"
	"reflect"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

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
	return func(db *gorm.DB) { p.prepareWrite(db, op) }
}

func (p *Plugin) prepareWrite(db *gorm.DB, op writeOp) {
	db.InstanceSet(settingCapture, (*capture)(nil))
	db.InstanceSet(settingSelected, [][]any(nil))
	db.InstanceSet(settingOwnTx, (*txPool)(nil))
	if db.Error != nil {
		return
	}
	switch state, t := txOf(db); state {
	case ownTx:
		t.written.Store(true)
	case foreignTx:
		if p.cfg.foreignError {
			db.AddError(ErrForeignTransaction)
			return
		}
	}
	s := db.Statement.Schema
	if s == nil || len(s.PrimaryFields) == 0 || op == opCreate {
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
	c := &capture{ConnPool: db.Statement.ConnPool, stmt: db.Statement, fields: s.PrimaryFields}
	db.Statement.ConnPool = c
	db.InstanceSet(settingCapture, c)
}

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

// capture runs ExecContext as a query with RETURNING of the primary key.
type capture struct {
	gorm.ConnPool
	stmt   *gorm.Statement
	fields []*schema.Field
	ran    bool
	keys   [][]any
}

func (c *capture) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	q := strings.TrimRight(strings.TrimSpace(query), ";")
	if !strings.HasPrefix(strings.ToUpper(q), "UPDATE") && !strings.HasPrefix(strings.ToUpper(q), "DELETE") {
		return c.ConnPool.ExecContext(ctx, query, args...)
	}
	cols := make([]string, len(c.fields))
	for i, f := range c.fields {
		var b strings.Builder
		c.stmt.QuoteTo(&b, f.DBName)
		cols[i] = b.String()
	}
	rows, err := c.ConnPool.QueryContext(ctx, q+" RETURNING "+strings.Join(cols, ","), args...)
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
		c.keys = append(c.keys, vals)
		n++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	c.ran = true
	return rowsResult(n), nil
}

type rowsResult int64

func (r rowsResult) LastInsertId() (int64, error) { return 0, nil }
func (r rowsResult) RowsAffected() (int64, error) { return int64(r), nil }

// afterWrite computes what a write changed and invalidates it: queued
// until COMMIT inside a transaction the plugin owns (the implicit one GORM
// begins per statement, or an explicit one), at once otherwise.
func (p *Plugin) afterWrite(op writeOp) func(*gorm.DB) {
	return func(db *gorm.DB) {
		var c *capture
		if v, ok := db.InstanceGet(settingCapture); ok {
			c, _ = v.(*capture)
		}
		if c != nil {
			db.Statement.ConnPool = c.ConnPool
			db.InstanceSet(settingCapture, (*capture)(nil))
		}
		if db.Error == ErrForeignTransaction {
			return
		}
		p.remember(db.Statement.Schema)
		p.dispatch(db, p.writeTags(db, op, c))
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

// writeTags returns the tags a write invalidates.
func (p *Plugin) writeTags(db *gorm.DB, op writeOp, c *capture) []string {
	stmt := db.Statement
	table := stmt.Table
	if table == "" || stmt.Schema == nil || !plainTable(table) {
		if tables, err := sqlTables(stmt.SQL.String()); err == nil && len(tables) > 0 {
			var tags []string
			for _, t := range tables[:1] {
				tags = append(tags, ListTag(t), TableTag(t))
			}
			return tags
		}
		return p.everyTable(table)
	}
	tags := []string{ListTag(table)}
	whole := func() []string { return append(tags, TableTag(table)) }
	if db.Error != nil && !(c != nil && c.ran) {
		// The statement may or may not have changed rows.
		return whole()
	}
	s := stmt.Schema
	switch op {
	case opCreate:
		if _, upsert := stmt.Clauses["ON CONFLICT"]; upsert && !returningDialect(db) {
			return whole() // the model may hold the wrong ids
		}
		n := len(tags)
		tags = appendRowTags(tags, stmt, stmt.ReflectValue)
		if len(tags) == n && db.RowsAffected > 0 {
			return whole()
		}
		return tags
	case opUpdate:
		if assignsKey(stmt) {
			tags = append(tags, TableTag(table))
			tags = append(tags, p.cascades(s, true)...)
			return tags
		}
	case opDelete:
		tags = append(tags, p.cascades(s, false)...)
	}
	var selected [][]any
	if v, ok := db.InstanceGet(settingSelected); ok {
		selected, _ = v.([][]any)
	}
	switch {
	case c != nil && c.ran:
		for _, k := range c.keys {
			tags = append(tags, RowTag(table, typedKey(stmt, s, k)...))
		}
	case selected != nil:
		for _, k := range selected {
			tags = append(tags, RowTag(table, typedKey(stmt, s, k)...))
		}
	default:
		pks, ok := pkSet(stmt)
		if !ok {
			return whole()
		}
		for _, pk := range pks {
			tags = append(tags, RowTag(table, pk...))
		}
	}
	return tags
}

// typedKey converts key values scanned from RETURNING (int64, []byte…)
// to the key fields' Go types, so that they format as reads format them.
func typedKey(stmt *gorm.Statement, s *schema.Schema, raw []any) []any {
	out := make([]any, len(raw))
	for i, v := range raw {
		if b, ok := v.([]byte); ok {
			v = string(b)
		}
		out[i] = v
		if i < len(s.PrimaryFields) {
			if cv, ok := convertKey(stmt, s.PrimaryFields[i], v); ok {
				out[i] = cv
			}
		}
	}
	return out
}

// assignsKey reports an UPDATE that sets a primary-key column: RETURNING
// and the WHERE see only one side of the move.
func assignsKey(stmt *gorm.Statement) bool {
	c, ok := stmt.Clauses["SET"]
	if !ok {
		return false
	}
	set, ok := c.Expression.(clause.Set)
	if !ok {
		return false
	}
	for _, a := range set {
		for _, f := range stmt.Schema.PrimaryFields {
			if a.Column.Name == f.DBName || a.Column.Name == clause.PrimaryKey {
				return true
			}
		}
	}
	return false
}

// cascades returns the list and table tags of every table that references
// s's table with ON DELETE (or, for key updates, ON UPDATE) CASCADE, SET
// NULL or SET DEFAULT, through relationships of the models the plugin has
// seen, followed transitively.
func (p *Plugin) cascades(s *schema.Schema, keyUpdate bool) []string {
	var tags []string
	done := map[string]bool{tableName(s.Table): true}
	queue := []*schema.Schema{s}
	for len(queue) > 0 {
		target := queue[0]
		queue = queue[1:]
		p.schemas.Range(func(_, v any) bool {
			for _, rel := range v.(*schema.Schema).Relationships.Relations {
				c := rel.ParseConstraint()
				if c == nil || c.ReferenceSchema == nil || c.Schema == nil || tableName(c.ReferenceSchema.Table) != tableName(target.Table) {
					continue
				}
				action := c.OnDelete
				if keyUpdate {
					action = c.OnUpdate
				}
				switch strings.ToUpper(strings.TrimSpace(action)) {
				case "CASCADE", "SET NULL", "SET DEFAULT":
				default:
					continue
				}
				t := tableName(c.Schema.Table)
				if done[t] {
					continue
				}
				done[t] = true
				tags = append(tags, ListTag(t), TableTag(t))
				queue = append(queue, c.Schema)
			}
			return true
		})
	}
	return tags
}

// everyTable is the answer for a write whose table the plugin cannot name:
// every table it has seen.
func (p *Plugin) everyTable(hint string) []string {
	p.logOnce("unknown-table:"+hint, "gormplugin: cannot tell which table a write changed; invalidating every table seen", "table", hint)
	var tags []string
	p.schemas.Range(func(k, _ any) bool {
		tags = append(tags, ListTag(k.(string)), TableTag(k.(string)))
		return true
	})
	return tags
}

// dispatch queues tags on the statement's transaction, or invalidates now.
func (p *Plugin) dispatch(db *gorm.DB, tags []string) {
	if len(tags) == 0 {
		return
	}
	switch state, t := txOf(db); state {
	case ownTx:
		t.enqueue(tags)
	case foreignTx:
		// The commit is out of sight: invalidate now and once more later.
		p.invalidate(db.Statement.Context, tags)
		p.invalidateLater(tags)
	default:
		p.invalidate(db.Statement.Context, tags)
	}
}

// afterRaw invalidates what a raw Exec wrote.
func (p *Plugin) afterRaw(db *gorm.DB) {
	sqlText := strings.TrimSpace(db.Statement.SQL.String())
	verb := strings.ToUpper(firstWord(sqlText))
	switch verb {
	case "SELECT", "SAVEPOINT", "RELEASE", "SET", "SHOW", "EXPLAIN", "PRAGMA", "":
		return
	case "ROLLBACK":
		if strings.Contains(strings.ToUpper(sqlText), " TO ") {
			return
		}
		fallthrough
	case "BEGIN", "COMMIT", "START", "END":
		p.logOnce("raw-tx", "gormplugin: transactions opened or ended with Exec are invisible to the plugin; use db.Transaction or db.Begin", "sql", sqlText)
		return
	case "CREATE", "COMMENT", "ANALYZE", "VACUUM", "GRANT", "REVOKE":
		return // no cached read can depend on a table or index not there yet
	case "DROP", "ALTER", "TRUNCATE", "RENAME":
		if t, ok := ddlTable(sqlText); ok {
			p.dispatch(db, []string{ListTag(t), TableTag(t)})
			return
		}
		p.dispatch(db, p.everyTable(sqlText))
		return
	}
	tables, err := sqlTables(sqlText)
	if err != nil || len(tables) == 0 {
		p.dispatch(db, p.everyTable(sqlText))
		return
	}
	var tags []string
	for _, t := range tables {
		tags = append(tags, ListTag(t), TableTag(t))
	}
	p.dispatch(db, tags)
}

func firstWord(s string) string {
	if i := strings.IndexAny(s, " \t\n("); i >= 0 {
		return s[:i]
	}
	return s
}

// ddlTable finds the table of DROP/ALTER/TRUNCATE [TABLE] [IF EXISTS] name;
// DDL on anything else (an index, a view) is not a table.
func ddlTable(sqlText string) (string, bool) {
	toks := tokenize(sqlText)
	i := 1
	if i < len(toks) && strings.EqualFold(toks[i], "table") {
		i++
	} else if !strings.EqualFold(toks[0], "truncate") {
		return "", false
	}
	for i < len(toks) && (strings.EqualFold(toks[i], "if") || strings.EqualFold(toks[i], "exists") || strings.EqualFold(toks[i], "only")) {
		i++
	}
	if i < len(toks) && isIdent(toks[i]) {
		return tableName(toks[i]), true
	}
	return "", false
}

// selectForUpdate finds the rows of a mass UPDATE or DELETE where the
// database has no RETURNING for it (MySQL, MariaDB): inside the statement's
// transaction it selects the keys matching the WHERE with FOR UPDATE, and
// restricts the write to AND key IN (those keys), so that the write touches
// exactly the rows selected at any isolation level. Above maxKeySet rows, or
// outside a transaction the plugin owns, it does nothing and the write
// invalidates the table tag.
func (p *Plugin) selectForUpdate(db *gorm.DB) {
	stmt := db.Statement
	s := stmt.Schema
	if len(s.PrimaryFields) != 1 {
		return
	}
	if _, ok := pkSet(stmt); ok {
		return // the WHERE already names the keys
	}
	switch state, _ := txOf(db); state {
	case foreignTx:
		return
	case noTx:
		// SkipDefaultTransaction: the SELECT and the write need one
		// transaction, so the plugin opens it; afterWrite ends it.
		cp, ok := stmt.ConnPool.(*pool)
		if !ok {
			return
		}
		tx, err := cp.BeginTx(stmt.Context, nil)
		if err != nil {
			return
		}
		stmt.ConnPool = tx
		db.InstanceSet(settingOwnTx, tx.(*txPool))
	}
	if rv := stmt.ReflectValue; rv.IsValid() && rv.Kind() == reflect.Struct {
		if _, zero := s.PrimaryFields[0].ValueOf(stmt.Context, rv); !zero {
			return // GORM adds the model's key to the WHERE
		}
	}
	c, ok := stmt.Clauses["WHERE"]
	if !ok {
		return
	}
	where, ok := c.Expression.(clause.Where)
	if !ok || len(where.Exprs) == 0 {
		return
	}
	pk := s.PrimaryFields[0]
	q := db.Session(&gorm.Session{NewDB: true, Context: context.Background()}).
		Model(reflect.New(s.ModelType).Interface()).
		Clauses(clause.Where{Exprs: where.Exprs}, clause.Locking{Strength: "UPDATE"}).
		Limit(maxKeySet + 1)
	if stmt.Unscoped {
		q = q.Unscoped()
	}
	var keys []any
	rows, err := q.Select(pk.DBName).Rows()
	if err != nil {
		return
	}
	for rows.Next() {
		var k any
		if rows.Scan(&k) != nil {
			rows.Close()
			return
		}
		keys = append(keys, k)
	}
	rows.Close()
	if rows.Err() != nil || len(keys) > maxKeySet {
		return
	}
	stmt.AddClause(clause.Where{Exprs: []clause.Expression{
		clause.IN{Column: clause.Column{Table: clause.CurrentTable, Name: pk.DBName}, Values: keys},
	}})
	selected := make([][]any, len(keys))
	for i, k := range keys {
		selected[i] = []any{k}
	}
	db.InstanceSet(settingSelected, selected)
}
