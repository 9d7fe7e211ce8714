package gormplugin

import (
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

// writeTags returns the tags a write invalidates.
func (p *Plugin) writeTags(db *gorm.DB, op writeOp, capture *returningCapture) []string {
	stmt := db.Statement
	table, named := writtenTable(stmt)
	if !named || stmt.Schema == nil {
		// No model (Table("…") alone) or a table expression: the tables
		// the built SQL names, as for raw SQL.
		if tags, _ := p.rawWriteTags(stmt.SQL.String()); len(tags) > 0 {
			return tags
		}
		return p.everyTable(stmt.Table)
	}
	s := stmt.Schema
	tags := append([]string{ListTag(table)}, p.cascadeTags(op, stmt)...)
	whole := func() []string { return append(tags, TableTag(table)) }
	if db.Error != nil && !(capture != nil && capture.ran) {
		// The statement may or may not have changed rows.
		return whole()
	}
	if capture != nil && capture.fellBack {
		p.logOnce("returning-fallback:"+table, "gormplugin: a write could not capture its rows with RETURNING and ran as written; it invalidates the table tag", "table", table)
		return whole()
	}
	switch op {
	case opCreate:
		if insertReplaces(stmt) {
			return whole() // it deleted rows of other keys, unnamed
		}
		if _, upsert := stmt.Clauses["ON CONFLICT"]; upsert && !returningDialect(db) {
			return whole() // the model may hold the wrong ids
		}
		n := len(tags)
		tags = appendRowTags(tags, stmt, stmt.ReflectValue)
		if len(tags) == n && db.RowsAffected > 0 {
			return whole()
		}
		if exact, why := insertIDsExact(db); !exact {
			p.logOnce("insert-ids:"+table, "gormplugin: a multi-row insert's keys are GORM's arithmetic from LastInsertId, which may not be the database's; it invalidates the table tag", "table", table, "why", why)
			return whole()
		}
		return tags
	case opUpdate:
		if assignsKey(stmt) {
			return whole()
		}
	}
	var selected [][]any
	if v, ok := db.InstanceGet(settingSelected); ok {
		selected, _ = v.([][]any)
	}
	switch {
	case capture != nil && capture.ran:
		for _, k := range capture.keys {
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

// cascadeTags returns the tags of the tables the database changes through
// foreign keys when this write runs: a delete's, an update's of the columns
// it sets, and an upsert's of the columns it sets on a conflict.
func (p *Plugin) cascadeTags(op writeOp, stmt *gorm.Statement) []string {
	switch op {
	case opDelete:
		return p.deleteCascades(stmt.Schema)
	case opUpdate:
		return p.updateCascades(stmt.Schema, assignedColumns(stmt))
	}
	if insertReplaces(stmt) {
		return append(p.deleteCascades(stmt.Schema), p.updateCascades(stmt.Schema, nil)...)
	}
	c, ok := stmt.Clauses["ON CONFLICT"]
	if !ok {
		return nil
	}
	onConflict, ok := c.Expression.(clause.OnConflict)
	if !ok {
		return p.updateCascades(stmt.Schema, nil)
	}
	if onConflict.DoNothing && len(onConflict.DoUpdates) == 0 {
		return nil
	}
	if onConflict.UpdateAll {
		return p.updateCascades(stmt.Schema, nil)
	}
	columns := columnSet{}
	for _, a := range onConflict.DoUpdates {
		columns[a.Column.Name] = true
	}
	return p.updateCascades(stmt.Schema, columns)
}

// insertReplaces reports an INSERT whose modifier replaces conflicting rows
// (SQLite's INSERT OR REPLACE): it deletes rows of keys other than the one
// inserted, on any unique column, and their deletes cascade.
func insertReplaces(stmt *gorm.Statement) bool {
	c, ok := stmt.Clauses["INSERT"]
	if !ok {
		return false
	}
	insert, ok := c.Expression.(clause.Insert)
	return ok && strings.Contains(strings.ToUpper(insert.Modifier), "REPLACE")
}

// writtenTable names the table a write changes: the statement's table,
// or the one its table expression names (Table("posts AS p") leaves the
// alias "p" in Statement.Table). False where that is not one plain table.
func writtenTable(stmt *gorm.Statement) (string, bool) {
	if stmt.TableExpr != nil {
		tables, err := sqlTables("UPDATE " + stmt.TableExpr.SQL)
		if err != nil || len(tables) != 1 {
			return "", false
		}
		return tables[0], true
	}
	if stmt.Table == "" || !plainTable(stmt.Table) {
		return "", false
	}
	return tableName(stmt.Table), true
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

// assignments returns the SET clause of an UPDATE, if GORM built one the
// plugin can read.
func assignments(stmt *gorm.Statement) (clause.Set, bool) {
	setClause, ok := stmt.Clauses["SET"]
	if !ok {
		return nil, false
	}
	set, ok := setClause.Expression.(clause.Set)
	return set, ok
}

// assignedColumns returns the columns an UPDATE sets, or nil (every
// column) where the plugin cannot read its assignments.
func assignedColumns(stmt *gorm.Statement) columnSet {
	set, ok := assignments(stmt)
	if !ok {
		return nil
	}
	columns := columnSet{}
	for _, a := range set {
		name := a.Column.Name
		if name == clause.PrimaryKey {
			if stmt.Schema == nil || stmt.Schema.PrioritizedPrimaryField == nil {
				return nil
			}
			name = stmt.Schema.PrioritizedPrimaryField.DBName
		}
		columns[name] = true
	}
	return columns
}

// assignsKey reports an UPDATE that sets a primary-key column: RETURNING
// and the WHERE see only one side of the move.
func assignsKey(stmt *gorm.Statement) bool {
	set, _ := assignments(stmt)
	for _, a := range set {
		for _, f := range stmt.Schema.PrimaryFields {
			if a.Column.Name == f.DBName || a.Column.Name == clause.PrimaryKey {
				return true
			}
		}
	}
	return false
}

// everyTable is the answer for a write whose table the plugin cannot name:
// every table it has seen.
func (p *Plugin) everyTable(hint string) []string {
	p.logOnce("unknown-table:"+hint, "gormplugin: cannot tell which table a write changed; invalidating every table seen", "table", hint)
	var tags []string
	p.schemas.Range(func(_, v any) bool {
		tags = append(tags, ListTag(v.(string)), TableTag(v.(string)))
		return true
	})
	return dedupe(tags)
}
