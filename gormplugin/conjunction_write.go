package gormplugin

import (
	"reflect"
	"slices"

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
		if _, soft := stmt.Clauses["SET"]; !soft {
			return tags // rows only leave lists: their row tags go
		}
		w.Update = true
		w.Rows, w.All = updatedRow(db)
	case opUpdate:
		w.Update = true
		w.Rows, w.All = updatedRow(db)
	}
	if !w.All && len(w.Rows) == 0 {
		return tags
	}
	return append(tags, w.marker())
}

// createdRows returns the column values of the rows an INSERT wrote, from
// the model after the insert (GORM has set keys, defaults it read back and
// hook changes). all=true where they cannot be known: an upsert (which
// may have updated other rows instead), a map or a Select/Omit (the
// database's defaults fill what the model does not say).
func createdRows(db *gorm.DB) (rows []map[string]string, all bool) {
	stmt := db.Statement
	if _, upsert := stmt.Clauses["ON CONFLICT"]; upsert || insertReplaces(stmt) {
		return nil, true
	}
	if len(stmt.Selects) > 0 || len(stmt.Omits) > 0 {
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
	out := make(map[string]string, len(stmt.Schema.DBNames))
	for _, name := range stmt.Schema.DBNames {
		f := stmt.Schema.FieldsByDBName[name]
		if f == nil {
			continue
		}
		val, zero := f.ValueOf(stmt.Context, v)
		if !f.Creatable || zero && f.HasDefaultValue {
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

// updatedRow returns the columns an UPDATE assigns, with their values
// (the same for every row it changed). all=true where its assignments
// cannot be read or name a column the model does not have (a raw name the
// database may resolve to any column).
func updatedRow(db *gorm.DB) (rows []map[string]string, all bool) {
	stmt := db.Statement
	set, ok := assignments(stmt)
	if !ok {
		return nil, true
	}
	dialect := db.Dialector.Name()
	row := make(map[string]string, len(set))
	for _, a := range set {
		if a.Column.Raw || a.Column.Table != "" && a.Column.Table != clause.CurrentTable && tableName(a.Column.Table) != tableName(stmt.Table) {
			return nil, true
		}
		f := stmt.Schema.FieldsByDBName[a.Column.Name]
		if f == nil {
			if a.Column.Name == clause.PrimaryKey {
				continue // assignsKey made the write invalidate the table tag
			}
			return nil, true
		}
		row[f.DBName] = columnValue(stmt, f, classOf(f, dialect), a.Value)
	}
	if len(row) == 0 {
		return nil, false
	}
	return []map[string]string{row}, false
}
