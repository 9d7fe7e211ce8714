package gormplugin

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

type (
	myInt    int32
	myString string
	myBytes  []byte
)

// failScanner is a Scanner that refuses strings.
type failScanner struct{ got any }

func (f *failScanner) Scan(src any) error {
	if _, ok := src.(string); ok {
		return errors.New("no strings")
	}
	f.got = src
	return nil
}

// hitRowsSources are driver values of every type a resultSet holds, and
// values at the edges of the conversions hitRows makes itself.
func hitRowsSources() []driver.Value {
	paris := time.FixedZone("CET", 3600)
	return []driver.Value{
		nil, int64(0), int64(7), int64(-1), int64(200), int64(300), int64(1 << 40), int64(-1 << 63),
		float64(1.5), float64(3), float32(2.5), uint64(9),
		true, false,
		[]byte("12"), []byte(nil), []byte{}, []byte("true"), []byte("x"),
		"abc", "42", "", "true", "-5", "1",
		time.Date(2024, 5, 6, 7, 8, 9, 10, time.UTC), time.Date(2024, 5, 6, 7, 8, 9, 0, paris),
	}
}

// hitRowsDests are the destination types GORM passes to Scan (a pool's
// **T for a struct field, *T for Pluck and Count, *any for an unknown
// column) and others at the edges of convertAssign.
func hitRowsDests() []reflect.Type {
	return []reflect.Type{
		reflect.TypeFor[*string](), reflect.TypeFor[*[]byte](), reflect.TypeFor[*sql.RawBytes](),
		reflect.TypeFor[*time.Time](), reflect.TypeFor[*any](), reflect.TypeFor[*bool](),
		reflect.TypeFor[*int](), reflect.TypeFor[*int8](), reflect.TypeFor[*int16](), reflect.TypeFor[*int32](), reflect.TypeFor[*int64](),
		reflect.TypeFor[*uint](), reflect.TypeFor[*uint8](), reflect.TypeFor[*uint32](), reflect.TypeFor[*uint64](),
		reflect.TypeFor[*float32](), reflect.TypeFor[*float64](),
		reflect.TypeFor[**int](), reflect.TypeFor[**int64](), reflect.TypeFor[**uint8](), reflect.TypeFor[**string](),
		reflect.TypeFor[**[]byte](), reflect.TypeFor[**time.Time](), reflect.TypeFor[**bool](), reflect.TypeFor[**float64](),
		reflect.TypeFor[***int](), reflect.TypeFor[**any](),
		reflect.TypeFor[*sql.NullString](), reflect.TypeFor[*sql.NullInt64](), reflect.TypeFor[*sql.NullTime](),
		reflect.TypeFor[*sql.NullBool](), reflect.TypeFor[**sql.NullString](), reflect.TypeFor[**sql.NullInt32](),
		reflect.TypeFor[*myInt](), reflect.TypeFor[*myString](), reflect.TypeFor[*myBytes](), reflect.TypeFor[**myInt](),
		reflect.TypeFor[**myString](), reflect.TypeFor[*fmt.Stringer](), reflect.TypeFor[*[]int](), reflect.TypeFor[*struct{}](),
		reflect.TypeFor[*failScanner](), reflect.TypeFor[**failScanner](),
	}
}

// scanOne scans one value of one row through rows into a new value of
// type t (a pointer type), and returns what it points to and the error.
func scanOne(t *testing.T, rows interface {
	Next() bool
	Scan(...any) error
}, dest any) error {
	t.Helper()
	if !rows.Next() {
		t.Fatal("no row")
	}
	return rows.Scan(dest)
}

// TestHitRowsConvertsAsDatabaseSQL scans every driver value into every
// destination type through hitRows and through database/sql's *sql.Rows:
// the destinations and the errors must be the same.
func TestHitRowsConvertsAsDatabaseSQL(t *testing.T) {
	fast := 0
	for _, src := range hitRowsSources() {
		for _, dt := range hitRowsDests() {
			rs := &resultSet{columns: []string{"c"}, scanTypes: []reflect.Type{nil}, rows: [][]driver.Value{{src}}}
			want := reflect.New(dt.Elem())
			sqlRows, err := replayRows(rs)
			if err != nil {
				t.Fatal(err)
			}
			wantErr := scanOne(t, sqlRows, want.Interface())
			sqlRows.Close()

			got := reflect.New(dt.Elem())
			hr := newHitRows(rs, false)
			if assignable(got.Interface(), src) {
				fast++
			}
			gotErr := scanOne(t, hr, got.Interface())
			hr.Close()

			name := fmt.Sprintf("%T(%#v) into %v", src, src, dt)
			if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
				t.Errorf("%s: error %v, database/sql %v", name, gotErr, wantErr)
				continue
			}
			if !reflect.DeepEqual(got.Elem().Interface(), want.Elem().Interface()) {
				t.Errorf("%s: %#v, database/sql %#v", name, got.Elem().Interface(), want.Elem().Interface())
			}
			if b, ok := src.([]byte); ok && len(b) > 0 {
				// A destination must not share the cached bytes.
				if v, ok := got.Elem().Interface().([]byte); ok && len(v) > 0 && &v[0] == &b[0] {
					t.Errorf("%s: the destination shares the source's bytes", name)
				}
			}
		}
	}
	// The comparison means something only if hitRows converted most pairs
	// itself.
	if total := len(hitRowsSources()) * len(hitRowsDests()); fast < total/3 {
		t.Errorf("hitRows converted %d of %d pairs itself", fast, total)
	}
}

// TestHitRowsFallsBackMidway: a row hitRows cannot convert goes through
// database/sql from that row on, and the rows before and after it come out
// as database/sql's would.
func TestHitRowsFallsBackMidway(t *testing.T) {
	rs := &resultSet{
		columns:   []string{"id", "n"},
		scanTypes: []reflect.Type{nil, nil},
		rows:      [][]driver.Value{{int64(1), int64(5)}, {int64(2), "x"}, {int64(3), int64(7)}},
		err:       errors.New("rows broke"),
	}
	hr := newHitRows(rs, false)
	var ids, ns []int
	var errs []string
	for hr.Next() {
		var id, n int
		err := hr.Scan(&id, &n)
		ids, ns, errs = append(ids, id), append(ns, n), append(errs, fmt.Sprint(err))
	}
	if !reflect.DeepEqual(ids, []int{1, 2, 3}) || !reflect.DeepEqual(ns, []int{5, 0, 7}) {
		t.Errorf("ids %v, ns %v", ids, ns)
	}
	if hr.slow == nil {
		t.Error("the string into an int did not go through database/sql")
	}
	if want := `sql: Scan error on column index 1, name "n": converting driver.Value type string ("x") to a int: invalid syntax`; errs[1] != want {
		t.Errorf("error %q, want %q", errs[1], want)
	}
	if err := hr.Err(); err == nil || err.Error() != "rows broke" {
		t.Errorf("Err() = %v, want the rows' error", err)
	}
	if errs[0] != "<nil>" || errs[2] != "<nil>" {
		t.Errorf("errors %q", errs)
	}
}

// TestHitRowsColumnTypes: ColumnTypes (a map destination) come from
// database/sql, with the rows still in step.
func TestHitRowsColumnTypes(t *testing.T) {
	rs := &resultSet{
		columns:   []string{"a"},
		scanTypes: []reflect.Type{reflect.TypeFor[int64]()},
		rows:      [][]driver.Value{{int64(1)}, {int64(2)}},
	}
	hr := newHitRows(rs, false)
	if !hr.Next() {
		t.Fatal("no row")
	}
	cts, err := hr.ColumnTypes()
	if err != nil || len(cts) != 1 || cts[0].ScanType() != reflect.TypeFor[int64]() {
		t.Fatalf("ColumnTypes: %v %v", cts, err)
	}
	var got []int64
	for {
		var v int64
		if err := hr.Scan(&v); err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
		if !hr.Next() {
			break
		}
	}
	if !reflect.DeepEqual(got, []int64{1, 2}) {
		t.Errorf("rows %v, want [1 2]", got)
	}
}

// TestHitRowsColumnsCopiedForRenames: GORM renames in the slice Columns
// returns when the statement maps columns; the cached result must not
// change.
func TestHitRowsColumnsCopiedForRenames(t *testing.T) {
	rs := &resultSet{columns: []string{"a"}, scanTypes: []reflect.Type{nil}}
	cols, _ := newHitRows(rs, true).Columns()
	cols[0] = "b"
	if rs.columns[0] != "a" {
		t.Errorf("renaming changed the cached columns: %v", rs.columns)
	}
}
