package gormplugin

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"gorm.io/gorm"
	"gorm.io/gorm/callbacks"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"

	"github.com/depcache/go-depcache/depcache"
)

// query replaces gorm:query: it serves Cached() queries, and tags every
// read done inside a computation, right after the query and before
// Preload runs its own (nested) queries.
func (p *Plugin) query(db *gorm.DB) {
	raw := db.Statement.SQL.Len() > 0
	if ttl, ok := cachedTTL(db); ok {
		p.cachedQuery(db, ttl, raw)
		return
	}
	callbacks.Query(db)
	p.tagRead(db, raw, false)
}

// row replaces gorm:row (Scan, Row, Rows): rows are scanned after the
// callbacks return, so such reads get list and table tags only, and cannot
// be served from the cache.
func (p *Plugin) row(db *gorm.DB) {
	if _, ok := cachedTTL(db); ok {
		db.AddError(errCachedRows)
		return
	}
	raw := db.Statement.SQL.Len() > 0
	callbacks.RowQuery(db)
	p.tagRead(db, raw, true)
}

var errCachedRows = errors.New("gormplugin: Cached() cannot serve Scan, Row or Rows (they scan after GORM's callbacks); use Find")

// tagRead gives the read's tags to the innermost computation of the
// plugin's manager under the statement's context.
func (p *Plugin) tagRead(db *gorm.DB, raw, rowsOnly bool) {
	ctx := db.Statement.Context
	cur := depcache.CurrentManager(ctx)
	if cur == nil {
		return
	}
	if state, _ := txOf(db); state != noTx {
		// Its snapshot may predate a committed invalidation, and it may
		// have read its own uncommitted writes.
		depcache.SkipFillAll(ctx, "a GORM read inside a database transaction")
		return
	}
	if cur != p.m {
		p.logOnce("foreign:"+cur.Name(), "gormplugin: a GORM read inside a computation of another manager is not cached (the plugin's invalidations would never reach it)", "manager", cur.Name())
		depcache.SkipFillAll(ctx, "a GORM read inside a computation of manager "+cur.Name())
	}
	if db.Error != nil && !errors.Is(db.Error, gorm.ErrRecordNotFound) {
		return
	}
	tags, err := p.readTags(db, raw, rowsOnly)
	if err != nil {
		p.logOnce("read:"+err.Error(), "gormplugin: read not cached", "err", err)
		depcache.SkipFillAll(ctx, err.Error())
		return
	}
	depcache.AddDependencyTo(ctx, p.m.Name(), tags...)
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
	if !rowsOnly && isModel && len(joined) == 0 {
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
	tags = append(tags, ListTag(table))
	if !rowsOnly && isModel {
		tags = appendRowTags(tags, stmt, stmt.ReflectValue)
	}
	return tags, nil
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
		tables, err := sqlTables("JOIN " + text)
		if err != nil {
			tables, err = sqlTables(text)
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

// pkSet returns the primary-key values the statement's WHERE confines it
// to, converted to the key fields' types, or false if it does not (an OR,
// a composite key, a condition the plugin cannot read).
func pkSet(stmt *gorm.Statement) ([][]any, bool) {
	s := stmt.Schema
	if s == nil || len(s.PrimaryFields) != 1 {
		return nil, false
	}
	pk := s.PrimaryFields[0]
	c, ok := stmt.Clauses["WHERE"]
	if !ok {
		return nil, false
	}
	where, ok := c.Expression.(clause.Where)
	if !ok {
		return nil, false
	}
	var found []any
	have := false
	for _, e := range where.Exprs {
		switch x := e.(type) {
		case clause.OrConditions, clause.NotConditions:
			return nil, false
		case clause.Eq:
			if isPKColumn(stmt, x.Column, pk) && !have {
				found, have = flatten(x.Value), true
			}
		case clause.IN:
			if isPKColumn(stmt, x.Column, pk) && !have {
				found, have = x.Values, true
			}
		case clause.AndConditions:
			// further restrictions
		case clause.Expr:
			if hasOr(x.SQL) && len(where.Exprs) > 1 {
				return nil, false
			}
		}
	}
	if !have {
		return nil, false
	}
	out := make([][]any, 0, len(found))
	for _, v := range found {
		cv, ok := convertKey(stmt, pk, v)
		if !ok {
			return nil, false
		}
		out = append(out, []any{cv})
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

func isPKColumn(stmt *gorm.Statement, col any, pk *schema.Field) bool {
	switch c := col.(type) {
	case clause.Column:
		if c.Raw {
			return false
		}
		if c.Table != "" && c.Table != clause.CurrentTable && c.Table != stmt.Table {
			return false
		}
		return c.Name == clause.PrimaryKey || c.Name == pk.DBName
	case string:
		return c == pk.DBName
	}
	return false
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

// looseKeys reports a database that compares the model's string or time
// keys more loosely than Go does (case, trailing spaces, precision): a
// lookup by such a key may find a row written under another spelling, so
// it depends on the list tag too.
func looseKeys(db *gorm.DB, s *schema.Schema) bool {
	switch db.Dialector.Name() {
	case "mysql", "postgres":
	default:
		return false
	}
	for _, f := range s.PrimaryFields {
		switch f.DataType {
		case schema.String, schema.Time:
			return true
		}
	}
	return false
}

var _ = context.Background
