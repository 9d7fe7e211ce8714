package gormplugin

import (
	"reflect"
	"slices"

	"gorm.io/gorm"
)

// Where GORM creates without RETURNING (MySQL; MariaDB before 10.5 or
// with the dialector's DisableWithReturning), it gives the rows of a
// multi-row insert their keys by arithmetic: the first row gets
// LastInsertId, each next one the previous plus the primary field's
// autoIncrementIncrement (1 unless tagged). The database may have assigned
// others: a server whose auto_increment_increment differs (Galera sets it
// to the cluster's size), a batch mixing rows with keys of their own and
// rows without (the counter jumps past an explicit key), an INSERT IGNORE
// that skipped a row. Row tags of the rows GORM names would then leave a
// cached "not found" of a row the insert created: such an insert
// invalidates the table tag instead.

const settingInsertIDs = "depcache:insert_ids"

// insertIDs is what prepareInsertIDs saw of a multi-row insert before it
// ran: its rows, and those without a key of their own.
type insertIDs struct {
	rows, auto int
}

// prepareInsertIDs records, before a create runs on a database without
// RETURNING, which of its rows GORM will number from LastInsertId.
func prepareInsertIDs(db *gorm.DB) {
	db.InstanceSet(settingInsertIDs, (*insertIDs)(nil))
	s := db.Statement.Schema
	if s == nil || slices.Contains(db.Callback().Create().Clauses, "RETURNING") {
		return // GORM scans the keys the database returns (PostgreSQL, SQLite, MariaDB ≥ 10.5)
	}
	pk := s.PrioritizedPrimaryField
	if pk == nil || !pk.HasDefaultValue || !pk.Readable {
		return // GORM numbers nothing
	}
	rv := reflect.Indirect(db.Statement.ReflectValue)
	if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array || rv.Len() < 2 {
		return // one row gets LastInsertId itself, which is exact
	}
	st := &insertIDs{rows: rv.Len()}
	for i := range rv.Len() {
		v := reflect.Indirect(rv.Index(i))
		if v.Kind() != reflect.Struct {
			return // not numbered by GORM; without row tags the write takes the table tag
		}
		if _, zero := pk.ValueOf(db.Statement.Context, v); zero {
			st.auto++
		}
	}
	db.InstanceSet(settingInsertIDs, st)
}

// insertIDsExact reports whether the keys GORM gave the rows of a create
// are the ones the database assigned, and if not, why. It asks a MySQL
// server its auto_increment_increment in the statement's own session (in
// GORM's transaction, where there is one): one query per multi-row insert
// of generated keys.
func insertIDsExact(db *gorm.DB) (bool, string) {
	v, _ := db.InstanceGet(settingInsertIDs)
	st, _ := v.(*insertIDs)
	if st == nil || st.auto == 0 {
		return true, "" // one row, or every key given
	}
	if st.auto < st.rows {
		return false, "rows with keys of their own and rows without in one insert"
	}
	if db.RowsAffected != int64(st.rows) {
		return false, "the insert skipped rows"
	}
	if db.Dialector.Name() != "mysql" {
		return false, "the database's auto-increment step is unknown"
	}
	var step int64
	if err := db.Statement.ConnPool.QueryRowContext(db.Statement.Context, "SELECT @@auto_increment_increment").Scan(&step); err != nil {
		return false, "reading auto_increment_increment: " + err.Error()
	}
	if step != db.Statement.Schema.PrioritizedPrimaryField.AutoIncrementIncrement {
		return false, "the server's auto_increment_increment differs from the field's autoIncrementIncrement"
	}
	return true, ""
}
