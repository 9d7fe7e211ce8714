package gormplugin

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"

	"gorm.io/gorm"
	"gorm.io/gorm/callbacks"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"

	"github.com/depcache/go-depcache/internal/pluginapi"
)

// query replaces gorm:query: it serves Cached() queries, and tags every
// read done inside a computation, right after the query and before
// Preload runs its own (nested) queries.
func (p *Plugin) query(db *gorm.DB) {
	raw := db.Statement.SQL.Len() > 0
	if raw && p.runRawWrite(db, callbacks.Query) {
		return
	}
	if s := sessionOf(db.Statement.Context); s != nil {
		p.sessionQuery(db, s, raw)
		return
	}
	if cached, ok := cachedTTL(db); ok {
		p.cachedQuery(db, cached, raw)
		return
	}
	if !raw && p.conj != nil && db.Error == nil {
		callbacks.BuildQuerySQL(db) // the conjunction is read from the built clauses
		p.prepareConjunction(db)
	}
	callbacks.Query(db)
	p.tagRead(db, raw, false)
}

// row replaces gorm:row (Scan, Row, Rows): rows are scanned after the
// callbacks return, so such reads get list and table tags only, and cannot
// be served from the cache.
func (p *Plugin) row(db *gorm.DB) {
	if rows, _ := db.Get("rows"); rows != true {
		defer rowCarriesError(db) // Row, not Rows (GORM deletes the setting)
	}
	if db.Statement.SQL.Len() > 0 && p.runRawWrite(db, callbacks.RowQuery) {
		return
	}
	if _, ok := cachedTTL(db); ok {
		db.AddError(errCachedRows)
		return
	}
	raw := db.Statement.SQL.Len() > 0
	callbacks.RowQuery(db)
	p.tagRead(db, raw, true)
}

// rowCarriesError makes a Row whose statement failed (Cached, a write the
// plugin refused, an error from before) return a *sql.Row whose Scan
// returns the error. Row has no error result: GORM returns Dest, which
// RowQuery leaves nil after an error, and a nil *sql.Row panics in the
// caller's Scan.
func rowCarriesError(db *gorm.DB) {
	if db.Error == nil {
		return
	}
	if _, ok := db.Statement.Dest.(*sql.Row); !ok {
		db.Statement.Dest = errorRow(db.Error)
	}
}

var errCachedRows = errors.New("gormplugin: Cached() cannot serve Scan, Row or Rows (they scan after GORM's callbacks); use Find")

// tagRead gives the read's tags, as pairs of the plugin's manager, to the
// innermost computation under the statement's context, whatever its
// manager.
func (p *Plugin) tagRead(db *gorm.DB, raw, rowsOnly bool) {
	ctx := db.Statement.Context
	if !pluginapi.InComputation(ctx) {
		return
	}
	if state, _ := txOf(db); state != noTx {
		// Its snapshot may predate a committed invalidation, and it may
		// have read its own uncommitted writes.
		pluginapi.SkipFillAll(ctx, "a GORM read inside a database transaction")
		return
	}
	if db.Error != nil && !errors.Is(db.Error, gorm.ErrRecordNotFound) {
		return
	}
	tags, err := p.readTags(db, raw, rowsOnly)
	if err != nil {
		p.logOnce("read:"+err.Error(), "gormplugin: read not cached", "err", err)
		pluginapi.SkipFillAll(ctx, err.Error())
		return
	}
	// Pairs of the plugin's manager, whatever the computation's manager.
	p.m.AddDependency(ctx, tags...)
}

// readTags returns the tags a read depends on.
func (p *Plugin) readTags(db *gorm.DB, raw, rowsOnly bool) ([]string, error) {
	stmt := db.Statement
	p.remember(stmt.Schema)
	if raw || stmt.Schema == nil || !plainTable(stmt.Table) {
		return rawReadTags(stmt)
	}
	table := stmt.Table
	tags := []string{TableTag(table)}
	joined, err := joinedTables(stmt)
	if err != nil {
		return nil, err
	}
	for _, t := range joined {
		tags = append(tags, ListTag(t), TableTag(t))
	}
	isModel := destIsModel(stmt)
	if !rowsOnly && isModel && len(joined) == 0 && !inPreload(stmt.Context) {
		if pks, ok := pkSet(stmt); ok {
			for _, pk := range pks {
				tags = append(tags, RowTag(table, pk...))
			}
			if looseKeys(db, stmt.Schema) {
				tags = append(tags, ListTag(table))
			}
			return tags, nil
		}
	}
	if !rowsOnly && isModel {
		n := len(tags)
		tags = appendRowTags(tags, stmt, stmt.ReflectValue)
		if conj := p.conjunctionTags(db, len(tags)-n); conj != nil && len(joined) == 0 {
			return append(tags, conj...), nil
		}
	}
	return append(tags, ListTag(table)), nil
}

// rawReadTags tags a read whose tables come from SQL text.
func rawReadTags(stmt *gorm.Statement) ([]string, error) {
	text := stmt.SQL.String()
	if text == "" {
		text = stmt.Table
	}
	tables, err := sqlTables(text)
	if err != nil {
		return nil, err
	}
	if len(tables) == 0 {
		return nil, fmt.Errorf("%w: no table in %q", errUnparseable, text)
	}
	tags := make([]string, 0, 2*len(tables))
	for _, t := range tables {
		tags = append(tags, ListTag(t), TableTag(t))
	}
	return tags, nil
}

// joinedTables names the tables a built query joins.
func joinedTables(stmt *gorm.Statement) ([]string, error) {
	c, ok := stmt.Clauses["FROM"]
	if !ok {
		return nil, nil
	}
	from, ok := c.Expression.(clause.From)
	if !ok {
		return nil, nil
	}
	var out []string
	for _, t := range from.Tables {
		if t.Name != stmt.Table && t.Name != clause.CurrentTable {
			out = append(out, t.Name)
		}
	}
	for _, j := range from.Joins {
		if j.Expression == nil {
			out = append(out, j.Table.Name)
			continue
		}
		text, err := exprSQL(stmt, j.Expression)
		if err != nil {
			return nil, err
		}
		// GORM passes a join that is not a relationship as written:
		// usually "[LEFT] JOIN t ON …", sometimes just "t ON …".
		tables, err := sqlTables(text)
		if err != nil || len(tables) == 0 {
			tables, err = sqlTables("JOIN " + text)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, tables...)
	}
	return out, nil
}

func exprSQL(stmt *gorm.Statement, e clause.Expression) (string, error) {
	switch x := e.(type) {
	case clause.Expr:
		return x.SQL, nil
	case clause.NamedExpr:
		return x.SQL, nil
	case clause.Join:
		return x.Table.Name, nil
	}
	return "", fmt.Errorf("%w: join %T", errUnparseable, e)
}

// plainTable reports whether a statement's table is a name, not an
// expression (Table("a, b"), a subquery).
func plainTable(t string) bool {
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; !(isIdentByte(c) || c == '.' || c == '"' || c == '`') {
			return false
		}
	}
	return true
}

// destIsModel reports whether the statement scans rows of its model, so
// that their keys are the rows read.
func destIsModel(stmt *gorm.Statement) bool {
	if stmt.Schema == nil || stmt.Dest == nil {
		return false
	}
	t := reflect.TypeOf(stmt.Dest)
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
		t = t.Elem()
	}
	return t == stmt.Schema.ModelType
}

// appendRowTags adds the row tag of every model value in rv.
func appendRowTags(tags []string, stmt *gorm.Statement, rv reflect.Value) []string {
	s := stmt.Schema
	if len(s.PrimaryFields) == 0 {
		return tags
	}
	rv = reflect.Indirect(rv)
	each := func(v reflect.Value) {
		v = reflect.Indirect(v)
		if v.Kind() != reflect.Struct {
			return
		}
		vals := make([]any, len(s.PrimaryFields))
		for i, f := range s.PrimaryFields {
			x, zero := f.ValueOf(stmt.Context, v)
			if zero {
				return
			}
			vals[i] = x
		}
		tags = append(tags, RowTag(stmt.Table, vals...))
	}
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		for i := range rv.Len() {
			each(rv.Index(i))
		}
	case reflect.Struct:
		each(rv)
	}
	return tags
}

// maxKeySet bounds the key tuples a WHERE may stand for (a product of
// per-column sets on a composite key) before the plugin gives up on it.
const maxKeySet = 1000

// pkSet returns the primary-key tuples the statement's WHERE confines it
// to, converted to the key fields' types, or false if it does not (an OR,
// a key column left free, a condition the plugin cannot read).
func pkSet(stmt *gorm.Statement) ([][]any, bool) {
	s := stmt.Schema
	if s == nil || len(s.PrimaryFields) == 0 {
		return nil, false
	}
	c, ok := stmt.Clauses["WHERE"]
	if !ok {
		return nil, false
	}
	where, ok := c.Expression.(clause.Where)
	if !ok {
		return nil, false
	}
	pks := s.PrimaryFields
	perColumn := make([][]any, len(pks)) // values each key column is confined to
	var tuples [][]any                   // from an IN on all key columns at once
	for _, e := range where.Exprs {
		switch x := e.(type) {
		case clause.OrConditions, clause.NotConditions:
			return nil, false
		case clause.Eq:
			if i := pkColumn(stmt, x.Column, pks); i >= 0 && perColumn[i] == nil {
				perColumn[i] = flatten(x.Value)
			}
		case clause.IN:
			if cols, ok := x.Column.([]clause.Column); ok {
				if t, ok := tupleIN(stmt, cols, x.Values, pks); ok && tuples == nil {
					tuples = t
				}
			} else if i := pkColumn(stmt, x.Column, pks); i >= 0 && perColumn[i] == nil {
				perColumn[i] = x.Values
				if perColumn[i] == nil {
					perColumn[i] = []any{}
				}
			}
		case clause.Expr:
			if hasOr(x.SQL) && len(where.Exprs) > 1 {
				return nil, false
			}
		}
	}
	if tuples == nil {
		tuples = [][]any{{}}
		for _, vals := range perColumn {
			if vals == nil || len(tuples)*len(vals) > maxKeySet {
				return nil, false
			}
			next := make([][]any, 0, len(tuples)*len(vals))
			for _, t := range tuples {
				for _, v := range vals {
					next = append(next, append(t[:len(t):len(t)], v))
				}
			}
			tuples = next
		}
	}
	out := make([][]any, 0, len(tuples))
	for _, t := range tuples {
		key := make([]any, len(pks))
		for i, v := range t {
			cv, ok := convertKey(stmt, pks[i], v)
			if !ok {
				return nil, false
			}
			key[i] = cv
		}
		out = append(out, key)
	}
	return out, true
}

// tupleIN reads (a, b) IN ((1, 2), …) on exactly the key columns.
func tupleIN(stmt *gorm.Statement, cols []clause.Column, values []any, pks []*schema.Field) ([][]any, bool) {
	if len(cols) != len(pks) || len(values) > maxKeySet {
		return nil, false
	}
	order := make([]int, len(cols)) // key position of each column
	seen := make([]bool, len(pks))
	for i, c := range cols {
		k := pkColumn(stmt, c, pks)
		if k < 0 || seen[k] {
			return nil, false
		}
		order[i], seen[k] = k, true
	}
	out := make([][]any, 0, len(values))
	for _, v := range values {
		row, ok := v.([]any)
		if !ok || len(row) != len(cols) {
			return nil, false
		}
		t := make([]any, len(pks))
		for i, x := range row {
			t[order[i]] = x
		}
		out = append(out, t)
	}
	return out, true
}

func hasOr(sql string) bool {
	for _, t := range tokenize(sql) {
		if len(t) == 2 && (t[0] == 'o' || t[0] == 'O') && (t[1] == 'r' || t[1] == 'R') {
			return true
		}
	}
	return false
}

// pkColumn returns the key position of a WHERE column, or -1.
func pkColumn(stmt *gorm.Statement, col any, pks []*schema.Field) int {
	name := ""
	switch c := col.(type) {
	case clause.Column:
		if c.Raw || c.Table != "" && c.Table != clause.CurrentTable && c.Table != stmt.Table {
			return -1
		}
		name = c.Name
	case string:
		name = c
	default:
		return -1
	}
	for i, f := range pks {
		if name == f.DBName || name == clause.PrimaryKey && len(pks) == 1 {
			return i
		}
	}
	return -1
}

func flatten(v any) []any {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() != reflect.Uint8 {
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = rv.Index(i).Interface()
		}
		return out
	}
	return []any{v}
}

// convertKey converts a WHERE value to the key field's Go type, as the
// database compares it ("007" for an integer key is 7).
func convertKey(stmt *gorm.Statement, f *schema.Field, v any) (any, bool) {
	switch v.(type) {
	case nil, clause.Expression, *gorm.DB:
		return nil, false
	}
	holder := reflect.New(f.Schema.ModelType).Elem()
	if err := f.Set(stmt.Context, holder, v); err != nil {
		return nil, false
	}
	out, _ := f.ValueOf(stmt.Context, holder)
	return out, true
}

// looseKeys reports a database that compares the model's keys more loosely
// than Go does: MariaDB's default collations ignore case and trailing
// spaces in strings, and PostgreSQL keeps times to the microsecond. A
// lookup by such a key may find a row written under another spelling, so
// it depends on the list tag too.
func looseKeys(db *gorm.DB, s *schema.Schema) bool {
	dialect := db.Dialector.Name()
	for _, f := range s.PrimaryFields {
		switch {
		case f.DataType == schema.Time && (dialect == "mysql" || dialect == "postgres"):
			return true
		case f.DataType == schema.String && dialect == "mysql":
			return true
		}
	}
	return false
}

// Preload's queries select the associated rows by key, but the set of keys
// comes from the parent rows: DESIGN.md has them depend on the list tag, as
// a join does. The plugin marks the context gorm:preload runs under; its
// queries inherit it.
type preloadKey struct{}

func inPreload(ctx context.Context) bool {
	v, _ := ctx.Value(preloadKey{}).(bool)
	return v
}

const settingPreloadCtx = "depcache:preload_ctx"

func beforePreload(db *gorm.DB) {
	if len(db.Statement.Preloads) == 0 || db.Statement.Context == nil {
		return
	}
	db.InstanceSet(settingPreloadCtx, db.Statement.Context)
	db.Statement.Context = context.WithValue(db.Statement.Context, preloadKey{}, true)
}

func afterPreload(db *gorm.DB) {
	if len(db.Statement.Preloads) == 0 {
		return // beforePreload set nothing (and InstanceGet costs an allocation)
	}
	if v, ok := db.InstanceGet(settingPreloadCtx); ok {
		if ctx, ok := v.(context.Context); ok && ctx != nil {
			db.Statement.Context = ctx
			db.InstanceSet(settingPreloadCtx, context.Context(nil))
		}
	}
}
