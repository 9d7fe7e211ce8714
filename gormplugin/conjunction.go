package gormplugin

import (
	"database/sql"
	"database/sql/driver"
	"reflect"
	"slices"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"

	"github.com/depcache/go-depcache/keys"
)

// Conjunction tags (WithConjunctionTags): a read whose WHERE is a
// conjunction of equalities and IN lists on columns of its own table
// depends on one tag per combination of the values it asks for —
// "posts:author_id=1&published=true" — instead of the list tag. The
// derivation here is deliberately narrow: whatever it does not fully
// understand returns ok=false, and the read keeps ListTag. See doc.go for
// the rules and schemes.go for why the column sets live in the backend.

// conjunction is what a read's WHERE confines it to: for each column (in
// sorted order), the formatted values it may hold.
type conjunction struct {
	table   string
	columns []string   // sorted DB names
	values  [][]string // per column, formatted values (keys.FormatValue, '&' escaped)
}

// scheme names the column set: the columns joined with '&'; "" for a
// query with no condition at all.
func (c *conjunction) scheme() string { return strings.Join(c.columns, "&") }

// tags returns one tag per combination of values, or false if there are
// more than limit.
func (c *conjunction) tags(limit int) ([]string, bool) {
	n := 1
	for _, vs := range c.values {
		n *= len(vs)
		if n > limit {
			return nil, false
		}
	}
	out := make([]string, 0, n)
	idx := make([]int, len(c.columns))
	for range n {
		var b strings.Builder
		b.WriteString(c.table)
		b.WriteByte(':')
		for i, col := range c.columns {
			if i > 0 {
				b.WriteByte('&')
			}
			b.WriteString(col)
			b.WriteByte('=')
			b.WriteString(c.values[i][idx[i]])
		}
		out = append(out, b.String())
		for i := len(idx) - 1; i >= 0; i-- {
			if idx[i]++; idx[i] < len(c.values[i]) {
				break
			}
			idx[i] = 0
		}
	}
	return out, true
}

// ConjunctionTag returns the tag of the rows of table whose columns hold
// the given values, as the plugin names it with WithConjunctionTags:
// ConjunctionTag("posts", map[string]any{"author_id": 1}) is
// "posts:author_id=1". Pass values in their field's Go type, as for
// RowTag. Use it to invalidate by hand after a write that bypassed GORM
// (or invalidate TableTag).
func ConjunctionTag(table string, values map[string]any) string {
	cols := make([]string, 0, len(values))
	for c := range values {
		cols = append(cols, c)
	}
	slices.Sort(cols)
	var b strings.Builder
	b.WriteString(tableName(table))
	b.WriteByte(':')
	for i, c := range cols {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(c)
		b.WriteByte('=')
		b.WriteString(formatConjValue(values[c]))
	}
	return b.String()
}

// SchemeTag returns the tag every read of table with conjunction tags on
// exactly these columns also depends on: "posts:?author_id&published". A
// write that cannot tell which of those tags it affects invalidates it.
func SchemeTag(table string, columns ...string) string {
	cols := slices.Clone(columns)
	slices.Sort(cols)
	return tableName(table) + ":?" + strings.Join(cols, "&")
}

// formatConjValue formats a column value for a conjunction tag: as
// keys.FormatValue does (which escapes '\'), with '&' escaped too, so that
// no value can end a column's part of the tag early.
func formatConjValue(v any) string {
	s := keys.FormatValue(v)
	if strings.IndexByte(s, '&') >= 0 {
		s = strings.ReplaceAll(s, "&", `\&`)
	}
	return s
}

// columnClass says how precisely the plugin can name a column's values.
type columnClass int

const (
	// nullOnly: only IS NULL is understood (times compare more loosely in
	// some databases than Go formats them; floats, custom types, MySQL's
	// collated strings likewise). A row holding any other value is in no
	// list of a scheme with the column.
	nullOnly columnClass = iota
	// exact: integers, booleans and (outside MySQL) strings, compared by
	// the database exactly as keys.FormatValue tells them apart.
	exact
	// unnamed: a column GORM never writes (read-only "->", such as one
	// the database generates from other columns): its value may change
	// with no write naming it, so no tag names it.
	unnamed
)

func classOf(f *schema.Field, dialect string) columnClass {
	if !f.Creatable && !f.Updatable {
		return unnamed
	}
	t := f.FieldType
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Implements(valuerType) || reflect.PointerTo(t).Implements(valuerType) {
		return nullOnly // a custom type: its Value decides what the database sees
	}
	switch f.DataType {
	case schema.Bool:
		if t.Kind() == reflect.Bool {
			return exact
		}
	case schema.Int:
		switch t.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			return exact
		}
	case schema.Uint:
		switch t.Kind() {
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			return exact
		}
	case schema.String:
		// MariaDB's default collations ignore case and trailing spaces.
		if t.Kind() == reflect.String && dialect != "mysql" {
			return exact
		}
	}
	return nullOnly
}

var valuerType = reflect.TypeFor[driver.Valuer]()

// fieldValue formats v, a value meant for column f, as the tags carry it:
// converted to the field's Go type first (as reads and writes both do), so
// that the int64 1 of a WHERE and the uint 1 of a model name the same tag.
// It returns ok=false where the value is not one the plugin can name: a
// SQL expression, a value of another kind than the field's, a non-NULL
// value of a nullOnly column (gone=true then: no list can hold the row).
func fieldValue(stmt *gorm.Statement, f *schema.Field, class columnClass, v any) (s string, gone, ok bool) {
	if class == unnamed {
		return "", false, false
	}
	if isNil(v) {
		return keys.NilValue, false, true
	}
	if class == nullOnly {
		if _, expr := v.(clause.Expression); expr {
			return "", false, false
		}
		if _, sub := v.(*gorm.DB); sub {
			return "", false, false
		}
		return "", true, false
	}
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	ft := f.FieldType
	for ft.Kind() == reflect.Pointer {
		ft = ft.Elem()
	}
	if !sameKindClass(rv.Kind(), ft.Kind()) {
		return "", false, false
	}
	holder := reflect.New(f.Schema.ModelType).Elem()
	if err := f.Set(stmt.Context, holder, rv.Interface()); err != nil {
		return "", false, false
	}
	out, _ := f.ValueOf(stmt.Context, holder)
	if isNil(out) {
		return keys.NilValue, false, true
	}
	s = formatConjValue(out)
	if len(s) > maxConjValue {
		return "", false, false // no list names it: a write carrying it stays small
	}
	return s, false, true
}

// maxConjValue bounds a value in a conjunction tag, in bytes: a read
// asking for a longer one keeps the list tag, and a write with one names
// its scheme's tag instead (so a batch insert of long texts does not carry
// them all to its invalidation).
const maxConjValue = 128

func isNil(v any) bool {
	if v == nil {
		return true
	}
	if dv, ok := v.(driver.Valuer); ok {
		if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && rv.IsNil() {
			return true
		}
		x, err := dv.Value()
		return err == nil && x == nil
	}
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

func sameKindClass(a, b reflect.Kind) bool {
	return kindClass(a) != 0 && kindClass(a) == kindClass(b)
}

func kindClass(k reflect.Kind) int {
	switch k {
	case reflect.Bool:
		return 1
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return 2
	case reflect.String:
		return 3
	}
	return 0
}

// readClauses are the clauses a query may have and still be understood
// (settingCached is Cached's: it writes no SQL).
var readClauses = map[string]bool{"SELECT": true, "FROM": true, "WHERE": true, "ORDER BY": true, "LIMIT": true, "FOR": true, "soft_delete_enabled": true, settingCached: true}

// deriveConjunction reads a built query's clauses. It returns ok=false for
// anything it does not fully understand: the read then keeps ListTag.
func deriveConjunction(db *gorm.DB) (*conjunction, bool) {
	stmt := db.Statement
	s := stmt.Schema
	if s == nil || stmt.TableExpr != nil || !plainTable(stmt.Table) || stmt.Distinct || !destIsModel(stmt) {
		return nil, false
	}
	if _, ok := stmt.Clauses["FROM"]; !ok {
		return nil, false // raw SQL: no clauses were built
	}
	for name := range stmt.Clauses {
		if !readClauses[name] {
			return nil, false
		}
	}
	if c, ok := stmt.Clauses["FROM"]; ok && c.Expression != nil {
		from, ok := c.Expression.(clause.From)
		if !ok || len(from.Joins) > 0 {
			return nil, false
		}
		for _, t := range from.Tables {
			if t.Raw || t.Name != clause.CurrentTable && t.Name != stmt.Table {
				return nil, false
			}
		}
	}
	if c, ok := stmt.Clauses["SELECT"]; ok && c.Expression != nil {
		sel, ok := c.Expression.(clause.Select)
		if !ok || sel.Expression != nil {
			return nil, false
		}
		for _, col := range sel.Columns {
			if col.Raw {
				return nil, false
			}
		}
	}
	if !pageOrderedByKey(stmt) {
		return nil, false
	}
	table := tableName(stmt.Table)
	conds := map[string][][]any{}
	if c, ok := stmt.Clauses["WHERE"]; ok && c.Expression != nil {
		where, ok := c.Expression.(clause.Where)
		if !ok || !collectConds(stmt, where.Exprs, conds) {
			return nil, false
		}
	}
	dialect := db.Dialector.Name()
	out := &conjunction{table: table}
	for col := range conds {
		out.columns = append(out.columns, col)
	}
	slices.Sort(out.columns)
	for _, col := range out.columns {
		f := s.FieldsByDBName[col]
		if f == nil {
			return nil, false
		}
		vals, ok := formatValues(stmt, f, classOf(f, dialect), conds[col])
		if !ok {
			return nil, false
		}
		out.values = append(out.values, vals)
	}
	return out, true
}

// formatValues formats the values each condition on column f allows and
// returns those every condition allows (the database compares an exact
// column as the formatted values tell them apart, so the intersection of
// the formatted sets is the set of values a row can hold). False if a
// value cannot be named.
func formatValues(stmt *gorm.Statement, f *schema.Field, class columnClass, sets [][]any) ([]string, bool) {
	var out []string
	for i, set := range sets {
		var vals []string
		for _, v := range set {
			fv, _, ok := fieldValue(stmt, f, class, v)
			if !ok {
				return nil, false
			}
			if !slices.Contains(vals, fv) {
				vals = append(vals, fv)
			}
		}
		if i == 0 {
			out = vals
			continue
		}
		out = slices.DeleteFunc(out, func(v string) bool { return !slices.Contains(vals, v) })
	}
	if out == nil {
		out = []string{}
	}
	return out, true
}

// pageOrderedByKey reports a query whose rows do not depend on rows it
// did not return: no LIMIT, or a LIMIT without OFFSET, ordered by nothing
// or by the primary key only. (A page ordered by another column changes
// when a row outside it is updated in that column; an OFFSET page when a
// row before it leaves.)
func pageOrderedByKey(stmt *gorm.Statement) bool {
	c, ok := stmt.Clauses["LIMIT"]
	if !ok || c.Expression == nil {
		return true
	}
	l, ok := c.Expression.(clause.Limit)
	if !ok || l.Offset != 0 {
		return false
	}
	if l.Limit == nil {
		return true
	}
	oc, ok := stmt.Clauses["ORDER BY"]
	if !ok || oc.Expression == nil {
		return true
	}
	order, ok := oc.Expression.(clause.OrderBy)
	if !ok || order.Expression != nil {
		return false
	}
	for _, col := range order.Columns {
		c := col.Column
		if c.Raw { // Order("id"), Order("posts.id DESC")
			toks := tokenize(c.Name)
			if len(toks) == 2 && (strings.EqualFold(toks[1], "asc") || strings.EqualFold(toks[1], "desc")) {
				toks = toks[:1]
			}
			if len(toks) != 1 || !isIdent(toks[0]) || isKeyword(toks[0]) {
				return false
			}
			name := unquoteIdent(toks[0])
			c = clause.Column{Name: name}
			if i := strings.LastIndexByte(name, '.'); i >= 0 {
				c = clause.Column{Table: name[:i], Name: name[i+1:]}
			}
		}
		name, ok := ownColumn(stmt, c)
		if !ok {
			return false
		}
		if name != clause.PrimaryKey && !slices.ContainsFunc(stmt.Schema.PrimaryFields, func(f *schema.Field) bool { return f.DBName == name }) {
			return false
		}
	}
	return true
}

// collectConds adds the equalities and IN lists of exprs to conds (column
// → for each condition on it, the values it allows; formatValues
// intersects them). False for anything else.
func collectConds(stmt *gorm.Statement, exprs []clause.Expression, conds map[string][][]any) bool {
	add := func(col string, vals []any) {
		if vals == nil {
			vals = []any{}
		}
		conds[col] = append(conds[col], vals)
	}
	for _, e := range exprs {
		switch x := e.(type) {
		case clause.AndConditions:
			if !collectConds(stmt, x.Exprs, conds) {
				return false
			}
		case clause.Eq:
			col, ok := condColumn(stmt, x.Column)
			if !ok {
				return false
			}
			switch x.Value.(type) {
			case []string, []int, []int32, []int64, []uint, []uint32, []uint64, []interface{}:
				add(col, flatten(x.Value)) // Eq builds these as IN
			default:
				if isSlice(x.Value) {
					return false
				}
				add(col, []any{x.Value})
			}
		case clause.IN:
			col, ok := condColumn(stmt, x.Column)
			if !ok {
				return false
			}
			for _, v := range x.Values {
				if isSlice(v) || isNil(v) {
					return false // GORM expands a slice in place; NULL never matches IN
				}
			}
			add(col, slices.Clone(x.Values))
		case clause.Expr:
			parsed, ok := parseCondSQL(stmt, x)
			if !ok {
				return false
			}
			for _, c := range parsed {
				add(c.col, c.vals)
			}
		default:
			return false
		}
	}
	return true
}

func isSlice(v any) bool {
	if v == nil {
		return false
	}
	if _, ok := v.(driver.Valuer); ok {
		return false
	}
	if _, ok := v.([]byte); ok {
		return false
	}
	k := reflect.TypeOf(v).Kind()
	return k == reflect.Slice || k == reflect.Array
}

// condColumn names the column of a condition: a column of the statement's
// own table, unquoted; false for anything else (a raw column, another
// table or alias).
func condColumn(stmt *gorm.Statement, col any) (string, bool) {
	var c clause.Column
	switch x := col.(type) {
	case clause.Column:
		c = x
	case string:
		if i := strings.LastIndexByte(x, '.'); i >= 0 {
			c = clause.Column{Table: x[:i], Name: x[i+1:]}
		} else {
			c = clause.Column{Name: x}
		}
	default:
		return "", false
	}
	name, ok := ownColumn(stmt, c)
	if !ok {
		return "", false
	}
	if name == clause.PrimaryKey {
		if pf := stmt.Schema.PrioritizedPrimaryField; pf != nil {
			return pf.DBName, true
		}
		return "", false
	}
	return name, true
}

func ownColumn(stmt *gorm.Statement, c clause.Column) (string, bool) {
	if c.Raw {
		return "", false
	}
	switch c.Table {
	case "", clause.CurrentTable, stmt.Table:
	default:
		if tableName(c.Table) != tableName(stmt.Table) {
			return "", false
		}
	}
	name := c.Name
	if name == clause.PrimaryKey {
		return name, true
	}
	if strings.ContainsAny(name, " ()'\"`[]") {
		return "", false
	}
	if stmt.Schema.FieldsByDBName[name] == nil {
		return "", false
	}
	return name, true
}

type parsedCond struct {
	col  string
	vals []any
}

// parseCondSQL reads the SQL of a Where string: conditions joined by AND,
// each "col = ?", "col IN ?", "col IN (?)" or "col IS NULL", with the
// column optionally qualified by the table and quoted. Anything else
// (literals, OR, other operators, parentheses around conditions) is false.
func parseCondSQL(stmt *gorm.Statement, e clause.Expr) ([]parsedCond, bool) {
	toks := tokenize(e.SQL)
	vars := e.Vars
	var out []parsedCond
	next := func() (any, bool) {
		if len(vars) == 0 {
			return nil, false
		}
		v := vars[0]
		vars = vars[1:]
		switch v.(type) {
		case clause.Expression, *gorm.DB, sql.NamedArg, *sql.NamedArg:
			return nil, false
		}
		return v, true
	}
	for i := 0; i < len(toks); {
		if len(out) > 0 {
			if !strings.EqualFold(toks[i], "and") {
				return nil, false
			}
			i++
		}
		if i >= len(toks) || !isIdent(toks[i]) || isKeyword(toks[i]) {
			return nil, false
		}
		col, ok := condColumn(stmt, unquoteIdent(toks[i]))
		if !ok {
			return nil, false
		}
		i++
		rest := toks[i:]
		switch {
		case len(rest) >= 2 && rest[0] == "=" && rest[1] == "?":
			v, ok := next()
			if !ok || isSlice(v) || isNil(v) {
				return nil, false
			}
			out = append(out, parsedCond{col, []any{v}})
			i += 2
		case len(rest) >= 2 && strings.EqualFold(rest[0], "in") && rest[1] == "?",
			len(rest) >= 4 && strings.EqualFold(rest[0], "in") && rest[1] == "(" && rest[2] == "?" && rest[3] == ")":
			v, ok := next()
			if !ok {
				return nil, false
			}
			vals := []any{v}
			if isSlice(v) {
				vals = flatten(v)
			}
			for _, x := range vals {
				if isNil(x) || isSlice(x) {
					return nil, false
				}
			}
			out = append(out, parsedCond{col, vals})
			if rest[1] == "?" {
				i += 2
			} else {
				i += 4
			}
		case len(rest) >= 2 && strings.EqualFold(rest[0], "is") && strings.EqualFold(rest[1], "null"):
			out = append(out, parsedCond{col, []any{nil}})
			i += 2
		default:
			return nil, false
		}
	}
	if len(vars) != 0 || len(out) == 0 {
		return nil, false
	}
	return out, true
}

// unquoteIdent turns `"posts"."author_id"` into posts.author_id.
func unquoteIdent(t string) string {
	return strings.NewReplacer(`"`, "", "`", "", "[", "", "]", "").Replace(t)
}
