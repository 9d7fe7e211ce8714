package gormplugin

import (
	"bytes"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"sync"
	"time"
)

// hitRows hands a resultSet to gorm.Scan without database/sql, whose
// replay (replayRows) costs a hit about ten allocations and a few locks.
// It converts a value itself only where the conversion is one of those
// database/sql's convertAssign makes for the pair of types at hand, and
// makes it the same way (hitrows_test.go compares the two over every pair
// of a driver value and a destination GORM passes). Any other row — a
// conversion it does not make, one that would fail, sql.RawBytes,
// ColumnTypes (a map destination) — and everything after it goes through
// a real *sql.Rows replaying the same result from the same position, so
// that errors and odd conversions are database/sql's own.
type hitRows struct {
	rs   *resultSet
	cols []string       // what Columns returned (GORM renames in it)
	cur  []driver.Value // the current row; nil before Next or after the end
	next int            // rows Next has returned
	done bool           // Next has returned false
	slow *sql.Rows      // once set, every call goes to it
	err  error          // opening slow failed
}

// newHitRows returns rs as gorm.Rows for a statement that renames columns
// (ColumnMapping) or not: GORM renames in the slice Columns returns, so it
// gets a copy only when it will write to it.
func newHitRows(rs *resultSet, renames bool) *hitRows {
	cols := rs.columns
	if renames {
		cols = append(make([]string, 0, len(cols)), cols...)
	}
	r := hitRowsPool.Get().(*hitRows)
	*r = hitRows{rs: rs, cols: cols}
	return r
}

// hitRowsPool recycles hitRows: gorm.Scan keeps none.
var hitRowsPool = sync.Pool{New: func() any { return new(hitRows) }}

// release closes r and gives it back; r must not be used afterwards.
func (r *hitRows) release() error {
	err := r.Close()
	*r = hitRows{}
	hitRowsPool.Put(r)
	return err
}

// toSlow replays rs through database/sql from where the fast path is.
func (r *hitRows) toSlow() *sql.Rows {
	if r.slow != nil || r.err != nil {
		return r.slow
	}
	// The column names GORM may have renamed: database/sql's errors name
	// the columns as the slice it handed out holds them.
	rs := &resultSet{columns: r.cols, scanTypes: r.rs.scanTypes, rows: r.rs.rows, err: r.rs.err}
	rows, err := replayRows(rs)
	if err != nil {
		r.err = err
		return nil
	}
	for i := 0; i < r.next && rows.Next(); i++ {
	}
	r.slow = rows
	return rows
}

func (r *hitRows) Columns() ([]string, error) { return r.cols, nil }

func (r *hitRows) ColumnTypes() ([]*sql.ColumnType, error) {
	if s := r.toSlow(); s != nil {
		return s.ColumnTypes()
	}
	return nil, r.err
}

func (r *hitRows) Next() bool {
	if r.slow != nil {
		return r.slow.Next()
	}
	if r.err != nil || r.done || r.next >= len(r.rs.rows) {
		r.done, r.cur = true, nil
		return false
	}
	r.cur = r.rs.rows[r.next]
	r.next++
	return true
}

func (r *hitRows) Scan(dest ...any) error {
	if r.slow == nil && r.err == nil && r.cur != nil && len(dest) == len(r.cur) && assignableRow(dest, r.cur) {
		for i, d := range dest {
			if err := assign(d, r.cur[i]); err != nil {
				return fmt.Errorf(`sql: Scan error on column index %d, name %q: %w`, i, r.cols[i], err)
			}
		}
		return nil
	}
	if s := r.toSlow(); s != nil {
		return s.Scan(dest...)
	}
	return r.err
}

// Err is what database/sql's Rows.Err reports for replayDriverRows: the
// rows' error once they are done, unless it is driver.ErrBadConn (replay
// adds that one itself).
func (r *hitRows) Err() error {
	if r.slow != nil {
		return r.slow.Err()
	}
	if r.err != nil {
		return r.err
	}
	if r.done && r.rs.err != nil && !errors.Is(r.rs.err, driver.ErrBadConn) && r.rs.err != io.EOF {
		return r.rs.err
	}
	return nil
}

func (r *hitRows) Close() error {
	if r.slow != nil {
		return r.slow.Close()
	}
	return nil
}

func assignableRow(dest []any, row []driver.Value) bool {
	for i, d := range dest {
		if !assignable(d, row[i]) {
			return false
		}
	}
	return true
}

var (
	typString   = reflect.TypeFor[*string]()
	typBytes    = reflect.TypeFor[*[]byte]()
	typRawBytes = reflect.TypeFor[*sql.RawBytes]()
	typTime     = reflect.TypeFor[*time.Time]()
	typAny      = reflect.TypeFor[*any]()
	typBool     = reflect.TypeFor[*bool]()
	typScanner  = reflect.TypeFor[sql.Scanner]()
)

// assignable reports whether assign converts src into dest, as
// convertAssign would, without failing.
func assignable(dest any, src driver.Value) bool {
	// What GORM scans model fields into most: a value of the field's own
	// type (schema.Field.NewValuePool), decided without reflection.
	switch d := dest.(type) {
	case *int:
		_, ok := src.(int64)
		return ok && d != nil && strconv.IntSize == 64
	case *int64:
		_, ok := src.(int64)
		return ok && d != nil
	case *float64:
		_, ok := src.(float64)
		return ok && d != nil
	case **int:
		_, ok := src.(int64)
		return (ok || src == nil) && d != nil && strconv.IntSize == 64
	case **int64:
		_, ok := src.(int64)
		return (ok || src == nil) && d != nil
	case **float64:
		_, ok := src.(float64)
		return (ok || src == nil) && d != nil
	case **time.Time:
		_, ok := src.(time.Time)
		return (ok || src == nil) && d != nil
	case **string:
		switch src.(type) {
		case nil, int64, float64, bool, []byte, string, time.Time:
			return d != nil
		}
		return false
	}
	switch src.(type) {
	case nil, int64, float64, bool, []byte, string, time.Time:
	default:
		return false
	}
	dv := reflect.ValueOf(dest)
	if dv.Kind() != reflect.Pointer || dv.IsNil() {
		return false
	}
	return assignableTo(dv.Type(), src)
}

// assignableTo decides for a non-nil destination of pointer type pt,
// following convertAssignRows case by case.
func assignableTo(pt reflect.Type, src driver.Value) bool {
	switch pt {
	case typString:
		return src != nil
	case typBytes:
		switch src.(type) {
		case string, []byte, time.Time, nil:
			return true
		}
		return false
	case typRawBytes:
		return false
	case typTime:
		_, ok := src.(time.Time)
		return ok
	case typAny:
		return true
	case typBool:
		_, err := driver.Bool.ConvertValue(src)
		return err == nil
	}
	if pt.Implements(typScanner) {
		return true
	}
	dt := pt.Elem()
	if src == nil {
		return dt.Kind() == reflect.Pointer // set to nil
	}
	st := reflect.TypeOf(src)
	if st.AssignableTo(dt) || dt.Kind() == st.Kind() && st.ConvertibleTo(dt) {
		return true
	}
	switch dt.Kind() {
	case reflect.Pointer:
		return assignableTo(dt, src) // into a new value
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, ok := src.(int64)
		return ok && i == i<<(64-dt.Bits())>>(64-dt.Bits())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		i, ok := src.(int64)
		return ok && i >= 0 && uint64(i) == uint64(i)<<(64-dt.Bits())>>(64-dt.Bits())
	case reflect.String:
		switch src.(type) {
		case string, []byte:
			return true
		}
	}
	return false
}

// assign converts src into dest where assignable said it can; an error
// comes only from a Scanner.
func assign(dest any, src driver.Value) error {
	switch d := dest.(type) {
	case *int:
		// convertAssign parses the int64's decimal form into int's size:
		// on 64-bit platforms (where assignableTo agrees) it always fits.
		if s, ok := src.(int64); ok && strconv.IntSize == 64 {
			*d = int(s)
			return nil
		}
	case *int64:
		if s, ok := src.(int64); ok {
			*d = s
			return nil
		}
	case *float64:
		if s, ok := src.(float64); ok {
			*d = s
			return nil
		}
	// A nullable field's holder: NULL is nil, anything else a new value
	// (convertAssign allocates one too, and a pooled holder's old value
	// may be a pointer GORM put into the caller's struct).
	case **int:
		if src == nil {
			*d = nil
			return nil
		}
		if s, ok := src.(int64); ok && strconv.IntSize == 64 {
			v := int(s)
			*d = &v
			return nil
		}
	case **int64:
		if src == nil {
			*d = nil
			return nil
		}
		if s, ok := src.(int64); ok {
			*d = &s
			return nil
		}
	case **float64:
		if src == nil {
			*d = nil
			return nil
		}
		if s, ok := src.(float64); ok {
			*d = &s
			return nil
		}
	case **time.Time:
		if src == nil {
			*d = nil
			return nil
		}
		if s, ok := src.(time.Time); ok {
			*d = &s
			return nil
		}
	case **string:
		if src == nil {
			*d = nil
			return nil
		}
		v := new(string)
		*d = v
		return assign(v, src)
	case *string:
		switch s := src.(type) {
		case string:
			*d = s
		case []byte:
			*d = string(s)
		case time.Time:
			*d = s.Format(time.RFC3339Nano)
		case int64:
			*d = strconv.FormatInt(s, 10)
		case float64:
			*d = strconv.FormatFloat(s, 'g', -1, 64)
		case bool:
			*d = strconv.FormatBool(s)
		}
		return nil
	case *[]byte:
		switch s := src.(type) {
		case string:
			*d = []byte(s)
		case []byte:
			*d = bytes.Clone(s)
		case time.Time:
			*d = s.AppendFormat(make([]byte, 0, len(time.RFC3339Nano)), time.RFC3339Nano)
		case nil:
			*d = nil
		}
		return nil
	case *time.Time:
		*d = src.(time.Time)
		return nil
	case *any:
		if b, ok := src.([]byte); ok {
			*d = bytes.Clone(b)
		} else {
			*d = src
		}
		return nil
	case *bool:
		v, _ := driver.Bool.ConvertValue(src)
		*d, _ = v.(bool)
		return nil
	case sql.Scanner:
		return d.Scan(src)
	}
	dv := reflect.ValueOf(dest).Elem()
	if src == nil {
		dv.SetZero()
		return nil
	}
	sv := reflect.ValueOf(src)
	if sv.Type().AssignableTo(dv.Type()) {
		if b, ok := src.([]byte); ok {
			dv.Set(reflect.ValueOf(bytes.Clone(b)))
		} else {
			dv.Set(sv)
		}
		return nil
	}
	if dv.Kind() == sv.Kind() && sv.Type().ConvertibleTo(dv.Type()) {
		dv.Set(sv.Convert(dv.Type()))
		return nil
	}
	switch dv.Kind() {
	case reflect.Pointer:
		p := reflect.New(dv.Type().Elem())
		dv.Set(p)
		return assign(p.Interface(), src)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		dv.SetInt(src.(int64))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		dv.SetUint(uint64(src.(int64)))
	case reflect.String:
		switch s := src.(type) {
		case string:
			dv.SetString(s)
		case []byte:
			dv.SetString(string(s))
		}
	}
	return nil
}
