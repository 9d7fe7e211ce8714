package gormplugin

import (
	"context"
	"reflect"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

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
		connPool, tx, ok := beginOwnTx(stmt.Context, stmt.ConnPool)
		if !ok {
			return
		}
		stmt.ConnPool = connPool
		db.InstanceSet(settingOwnTx, tx)
	}
	if rv := stmt.ReflectValue; rv.IsValid() && rv.Kind() == reflect.Struct {
		if _, zero := s.PrimaryFields[0].ValueOf(stmt.Context, rv); !zero {
			return // GORM adds the model's key to the WHERE
		}
	}
	whereClause, ok := stmt.Clauses["WHERE"]
	if !ok {
		return
	}
	where, ok := whereClause.Expression.(clause.Where)
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
