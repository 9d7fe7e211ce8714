package gormplugin

import (
	"database/sql"
	"fmt"
	"reflect"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// maxScanStructColumns bounds the columns scanStruct takes (its buffers
// live on the stack).
const maxScanStructColumns = 32

// scanStruct does what gorm.Scan(hitRows, db, 0) does for the commonest
// hit — rows into one struct of the statement's model, every column a
// readable field of it under its own name, each value one hitRows
// converts itself — without what gorm.Scan spends on the general case
// (its slices and maps, and database/sql's Rows protocol): the same
// fields get the same pooled holders, converted as hitRows.Scan converts,
// and GORM's own Field.Set puts them into the struct. It reports false,
// having changed nothing but the holder pools, where gorm.Scan must do it.
func scanStruct(db *gorm.DB, rs *resultSet) bool {
	stmt := db.Statement
	sch := stmt.Schema
	cols := rs.columns
	if sch == nil || len(rs.rows) == 0 || len(cols) < 2 || len(cols) > maxScanStructColumns ||
		len(stmt.ColumnMapping) > 0 || len(stmt.Joins) > 0 {
		return false
	}
	rv := stmt.ReflectValue
	if rv.Kind() != reflect.Struct || rv.Type() != sch.ModelType || reflect.TypeOf(stmt.Dest) != reflect.PointerTo(sch.ModelType) {
		return false
	}
	switch stmt.Dest.(type) {
	case *time.Time, *sql.NullInt32, *sql.NullInt64, *sql.NullFloat64, *sql.NullBool, *sql.NullString, *sql.NullTime:
		return false // gorm.Scan scans these as values
	}
	var fieldBuf [maxScanStructColumns]*schema.Field
	fields := fieldBuf[:len(cols)]
	for i, c := range cols {
		f := sch.LookUpField(c)
		if f == nil || !f.Readable {
			return false // an unknown column, or a joined one
		}
		for _, prev := range cols[:i] {
			if prev == c {
				return false // gorm.Scan matches duplicates its own way
			}
		}
		fields[i] = f
	}
	var valueBuf [maxScanStructColumns]any
	values := valueBuf[:len(cols)]
	for i, f := range fields {
		values[i] = f.NewValuePool.Get()
	}
	row := rs.rows[0]
	if len(row) != len(values) || !assignableRow(values, row) {
		for i, f := range fields {
			f.NewValuePool.Put(values[i])
		}
		return false
	}

	// As gorm.Scan: only the first row, RowsAffected 1, the scan's error
	// (the first conversion that fails, as database/sql reports it), then
	// every field set from its holder whatever the scan's error.
	db.RowsAffected = 1
	for i, d := range values {
		if err := assign(d, row[i]); err != nil {
			db.AddError(fmt.Errorf(`sql: Scan error on column index %d, name %q: %w`, i, cols[i], err))
			break
		}
	}
	for i, f := range fields {
		db.AddError(f.Set(stmt.Context, rv, values[i]))
		f.NewValuePool.Put(values[i])
	}
	return true
}
