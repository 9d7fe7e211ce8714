package gormplugin

import (
	"context"
	"database/sql"
	"reflect"
	"slices"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

// withConjunction adds to a write's tags the marker of the rows it may
// have put into lists with conjunction tags (schemes.go), resolved after
// the commit. A write that invalidates its table tag needs none: every
// read depends on that.
func (p *Plugin) withConjunction(db *gorm.DB, op writeOp, tags []string) []string {
	if p.conj == nil || db.DryRun {
		return tags
	}
	stmt := db.Statement
	table, named := writtenTable(stmt)
	if !named || stmt.Schema == nil || slices.Contains(tags, TableTag(table)) {
		return tags
	}
	w := conjWrite{Table: table}
	switch op {
	case opCreate:
		w.Rows, w.All = createdRows(db)
	case opDelete:
		_, soft := stmt.Clauses["SET"]
		if v, ok := db.InstanceGet(settingSetSnapshot); ok {
			if snap, _ := v.(*setSnapshot); snap != nil && snap.ran && snap.ok {
				soft = true // a soft delete is an UPDATE
			}
		}
		if !soft {
			return tags // rows only leave lists: their row tags go
		}
		w.Set, w.Where, w.All = updatedColumns(db)
	case opUpdate:
		w.Set, w.Where, w.All = updatedColumns(db)
	}
	if !w.All && len(w.Rows) == 0 && len(w.Set) == 0 {
		return tags
	}
	return append(tags, w.marker())
}

// createdRows returns the column values of the rows an INSERT wrote, from
// the model after the insert (GORM has set keys, defaults it read back and
// hook changes). all=true where they cannot be known: an upsert (which
// may have updated other rows instead) or a map.
func createdRows(db *gorm.DB) (rows []map[string]string, all bool) {
	stmt := db.Statement
	if _, upsert := stmt.Clauses["ON CONFLICT"]; upsert || insertReplaces(stmt) {
		return nil, true
	}
	rv := reflect.Indirect(stmt.ReflectValue)
	row := func(v reflect.Value) bool {
		v = reflect.Indirect(v)
		if v.Kind() != reflect.Struct || v.Type() != stmt.Schema.ModelType {
			return false
		}
		rows = append(rows, modelColumns(db, v))
		return true
	}
	switch rv.Kind() {
	case reflect.Struct:
		if !row(rv) {
			return nil, true
		}
	case reflect.Slice, reflect.Array:
		for i := range rv.Len() {
			if !row(rv.Index(i)) {
				return nil, true
			}
		}
	default:
		return nil, true
	}
	return rows, false
}

// modelColumns formats every column of a model value the plugin can name.
// A zero value in a column with a database default is unknown: the
// database may have put its default there without GORM reading it back.
func modelColumns(db *gorm.DB, v reflect.Value) map[string]string {
	stmt := db.Statement
	dialect := db.Dialector.Name()
	// The columns the INSERT names, as gorm:create chooses them: the
	// database fills the others, whatever the model says.
	selected, restricted := stmt.SelectAndOmitColumns(true, false)
	out := make(map[string]string, len(stmt.Schema.DBNames))
	for _, name := range stmt.Schema.DBNames {
		f := stmt.Schema.FieldsByDBName[name]
		if f == nil {
			continue
		}
		sel, named := selected[name]
		inserted := named && sel || !named && (!restricted || f.AutoCreateTime > 0 || f.AutoUpdateTime > 0)
		val, zero := f.ValueOf(stmt.Context, v)
		if !inserted || !f.Creatable || zero && f.HasDefaultValue {
			out[name] = "?"
			continue
		}
		out[name] = columnValue(stmt, f, classOf(f, dialect), val)
	}
	return out
}

// columnValue is fieldValue as a conjWrite carries it.
func columnValue(stmt *gorm.Statement, f *schema.Field, class columnClass, v any) string {
	s, gone, ok := fieldValue(stmt, f, class, v)
	switch {
	case ok:
		return "=" + s
	case gone:
		return "!"
	}
	return "?"
}

// updatedColumns returns the columns an UPDATE assigns, with their values
// (the same for every row it changed), and the values its WHERE confines
// other columns to. all=true where its assignments cannot be read or name
// a column the model does not have (a raw name the database may resolve
// to any column).
func updatedColumns(db *gorm.DB) (set map[string]string, where map[string][]string, all bool) {
	stmt := db.Statement
	assigned, ok := assignments(stmt)
	if v, snap := db.InstanceGet(settingSetSnapshot); snap {
		// GORM removes the SET it built when gorm:update returns: the one
		// the statement ran with was kept at execution.
		if s, _ := v.(*setSnapshot); s != nil && s.ran {
			assigned, ok = s.set, s.ok
		}
	}
	if !ok {
		return nil, nil, true
	}
	dialect := db.Dialector.Name()
	set = make(map[string]string, len(assigned))
	for _, a := range assigned {
		if a.Column.Raw || a.Column.Table != "" && a.Column.Table != clause.CurrentTable && tableName(a.Column.Table) != tableName(stmt.Table) {
			return nil, nil, true
		}
		f := stmt.Schema.FieldsByDBName[a.Column.Name]
		if f == nil {
			if a.Column.Name == clause.PrimaryKey {
				continue // assignsKey made the write invalidate the table tag
			}
			return nil, nil, true
		}
		set[f.DBName] = columnValue(stmt, f, classOf(f, dialect), a.Value)
	}
	if len(set) == 0 {
		return nil, nil, false
	}
	return set, whereColumns(db, set), false
}

// whereColumns returns, for columns not in set, the values an UPDATE's
// WHERE confines them to, from the conditions it understands among those
// ANDed at the top (any OR at the top, and it uses none).
func whereColumns(db *gorm.DB, set map[string]string) map[string][]string {
	stmt := db.Statement
	c, ok := stmt.Clauses["WHERE"]
	if !ok {
		return nil
	}
	w, ok := c.Expression.(clause.Where)
	if !ok {
		return nil
	}
	for _, e := range w.Exprs {
		switch x := e.(type) {
		case clause.OrConditions:
			return nil
		case clause.Expr:
			if hasOrOrPipes(x.SQL) {
				return nil
			}
		case clause.NamedExpr:
			if hasOrOrPipes(x.SQL) {
				return nil
			}
		}
	}
	conds := map[string][][]any{}
	for _, e := range w.Exprs {
		one := map[string][][]any{}
		if !collectConds(stmt, []clause.Expression{e}, one) {
			continue // not understood: it narrows the rows, and says nothing
		}
		for col, sets := range one {
			conds[col] = append(conds[col], sets...)
		}
	}
	dialect := db.Dialector.Name()
	out := map[string][]string{}
	for col, sets := range conds {
		if _, assigned := set[col]; assigned {
			continue
		}
		f := stmt.Schema.FieldsByDBName[col]
		if f == nil {
			continue
		}
		class := classOf(f, dialect)
		if class == nullOnly {
			// Lists know only NULL: the rows hold NULL if every condition
			// allows only NULL, else none of them is in a list with it.
			out[col] = []string{"!"}
			if vals, ok := formatValues(stmt, f, class, sets); ok && len(vals) == 1 {
				out[col] = []string{"=" + vals[0]}
			}
			continue
		}
		vals, ok := formatValues(stmt, f, class, sets)
		if !ok || len(vals) > maxConjTags {
			continue
		}
		for i, v := range vals {
			vals[i] = "=" + v
		}
		out[col] = vals
	}
	return out
}

// hasOrOrPipes reports SQL with an OR (or MySQL's ||) among its tokens:
// GORM puts parentheses around a condition only when it sees " OR ".
func hasOrOrPipes(sql string) bool {
	for _, t := range tokenize(sql) {
		if t == "|" || strings.EqualFold(t, "or") {
			return true
		}
	}
	return false
}

const settingSetSnapshot = "depcache:set_snapshot"

// setSnapshot is the connection pool an UPDATE runs on with conjunction
// tags: it keeps the statement's SET clause as it was when the statement
// ran (gorm:update builds it, runs it and deletes it).
type setSnapshot struct {
	gorm.ConnPool
	stmt *gorm.Statement
	ran  bool
	set  clause.Set
	ok   bool
}

func (s *setSnapshot) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	s.keep()
	return s.ConnPool.ExecContext(ctx, query, args...)
}

func (s *setSnapshot) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	s.keep() // UPDATE … RETURNING that the user asked for runs as a query
	return s.ConnPool.QueryContext(ctx, query, args...)
}

func (s *setSnapshot) keep() {
	if !s.ran {
		s.ran = true
		if set, ok := assignments(s.stmt); ok {
			s.set, s.ok = slices.Clone(set), true
		}
	}
}

// snapshotSet installs a setSnapshot for an UPDATE (or a soft delete),
// right before gorm:update runs it.
func (p *Plugin) snapshotSet(db *gorm.DB, op writeOp) {
	db.InstanceSet(settingSetSnapshot, (*setSnapshot)(nil))
	if p.conj == nil || op == opCreate || db.Error != nil || db.DryRun || db.Statement.Schema == nil {
		return
	}
	s := &setSnapshot{ConnPool: db.Statement.ConnPool, stmt: db.Statement}
	db.Statement.ConnPool = s
	db.InstanceSet(settingSetSnapshot, s)
}

// unsnapshotSet puts back the pool snapshotSet replaced, first thing
// after the write.
func unsnapshotSet(db *gorm.DB) {
	v, ok := db.InstanceGet(settingSetSnapshot)
	if !ok {
		return
	}
	if s, _ := v.(*setSnapshot); s != nil && db.Statement.ConnPool == gorm.ConnPool(s) {
		db.Statement.ConnPool = s.ConnPool
	}
}
