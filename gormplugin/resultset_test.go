package gormplugin

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"
)

// Every driver value type the supported drivers return comes back from the
// stored bytes with its type and value: pgx (int64, float64, bool, string,
// []byte, time.Time in Local or UTC), go-sqlite3 (the same, times in UTC or
// a fixed zone parsed from text), go-sql-driver/mysql with parseTime (also
// uint64 and float32, times in its loc).
func TestResultSetRoundTrip(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skipf("no tz database: %v", err)
	}
	base := time.Date(2024, 7, 14, 10, 30, 15, 123456789, time.UTC)
	rs := &resultSet{
		columns: []string{"a", "b", "c"},
		scanTypes: []reflect.Type{
			reflect.TypeFor[sql.NullInt64](), reflect.TypeFor[*any](), nil,
		},
		rows: [][]driver.Value{
			{nil, int64(-1 << 62), uint64(math.MaxUint64)},
			{float64(-0.1), float32(3.25), true},
			{false, []byte{}, []byte(nil)},
			{[]byte("raw\x00bytes"), "", "unicode ✓"},
			{base, base.Local(), base.In(paris)},
			{base.In(time.FixedZone("", 2*3600)), base.In(time.FixedZone("XYZ", -5*3600)), time.Unix(-62135596800, 0).UTC()},
			{math.Inf(-1), int64(0), "end"},
		},
	}
	b, err := rs.encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeResultSet(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.columns, rs.columns) {
		t.Errorf("columns %q, want %q", got.columns, rs.columns)
	}
	wantTypes := []reflect.Type{reflect.TypeFor[sql.NullInt64](), reflect.TypeFor[*any](), nil}
	if !reflect.DeepEqual(got.scanTypes, wantTypes) {
		t.Errorf("scan types %v, want %v", got.scanTypes, wantTypes)
	}
	if len(got.rows) != len(rs.rows) {
		t.Fatalf("%d rows, want %d", len(got.rows), len(rs.rows))
	}
	for r, row := range rs.rows {
		for c, want := range row {
			g := got.rows[r][c]
			if reflect.TypeOf(g) != reflect.TypeOf(want) {
				t.Errorf("row %d col %d: %T, want %T", r, c, g, want)
				continue
			}
			switch w := want.(type) {
			case time.Time:
				gt := g.(time.Time)
				gn, go_ := gt.Zone()
				wn, wo := w.Zone()
				if !gt.Equal(w) || gn != wn || go_ != wo || gt.Location().String() != w.Location().String() {
					t.Errorf("row %d col %d: %v (%s), want %v (%s)", r, c, gt, gt.Location(), w, w.Location())
				}
				if (w.Location() == time.Local) != (gt.Location() == time.Local) {
					t.Errorf("row %d col %d: Local lost or gained", r, c)
				}
			case []byte:
				if (w == nil) != (g.([]byte) == nil) || string(w) != string(g.([]byte)) {
					t.Errorf("row %d col %d: %#v, want %#v", r, c, g, w)
				}
			default:
				if g != want {
					t.Errorf("row %d col %d: %#v, want %#v", r, c, g, want)
				}
			}
		}
	}
	if got.rows[4][0].(time.Time).Location() != time.UTC {
		t.Errorf("a UTC time came back in %v", got.rows[4][0].(time.Time).Location())
	}
}

// A value of a type the encoding has no tag for is an error, so that the
// query is served but not stored.
func TestResultSetUnencodable(t *testing.T) {
	rs := &resultSet{columns: []string{"x"}, scanTypes: []reflect.Type{nil}, rows: [][]driver.Value{{int32(1)}}}
	if _, err := rs.encode(); !errors.Is(err, errUnencodable) {
		t.Errorf("encode(int32) = %v, want errUnencodable", err)
	}
}

// Truncated, extended or foreign bytes are an error, never a panic.
func TestResultSetCorrupt(t *testing.T) {
	rs := &resultSet{
		columns:   []string{"id", "name", "at"},
		scanTypes: make([]reflect.Type, 3),
		rows:      [][]driver.Value{{int64(1), "a", time.Unix(1, 2)}, {int64(2), []byte("b"), nil}},
	}
	b, err := rs.encode()
	if err != nil {
		t.Fatal(err)
	}
	for i := range len(b) {
		if _, err := decodeResultSet(b[:i]); err == nil {
			t.Errorf("decode of %d of %d bytes: no error", i, len(b))
		}
	}
	if _, err := decodeResultSet(append(b[:len(b):len(b)], 0)); err == nil {
		t.Error("trailing byte: no error")
	}
	for _, junk := range [][]byte{nil, []byte(`{"d":"x"}`), {resultSetVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}} {
		if _, err := decodeResultSet(junk); err == nil {
			t.Errorf("decode(%q): no error", junk)
		}
	}
	// Every one-byte change decodes or fails; none panics.
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0xff
		decodeResultSet(c)
	}
}

func FuzzDecodeResultSet(f *testing.F) {
	rs := &resultSet{columns: []string{"a"}, scanTypes: []reflect.Type{nil}, rows: [][]driver.Value{{"x"}, {time.Unix(5, 0)}}}
	b, _ := rs.encode()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeResultSet(b)
	})
}

// An entry holds the Cached query's rows and its preloads' rows, in order;
// truncated or extended entries are errors.
func TestEntryRoundTrip(t *testing.T) {
	qs := []recordedQuery{
		{rs: &resultSet{columns: []string{"id"}, scanTypes: []reflect.Type{reflect.TypeFor[int64]()}, rows: [][]driver.Value{{int64(7)}}}},
		{fingerprint: "SELECT * FROM c WHERE post_id = ?\x00[7]", rs: &resultSet{columns: []string{"id", "body"}, scanTypes: make([]reflect.Type, 2), rows: [][]driver.Value{{int64(1), "x"}, {int64(2), []byte("y")}}}},
		{fingerprint: "SELECT * FROM t\x00[]", rs: &resultSet{columns: []string{"id"}, scanTypes: make([]reflect.Type, 1)}},
	}
	b, err := encodeEntry(qs)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeEntry(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(qs) {
		t.Fatalf("%d queries, want %d", len(got), len(qs))
	}
	for i := range qs {
		if got[i].fingerprint != qs[i].fingerprint || !reflect.DeepEqual(got[i].rs.columns, qs[i].rs.columns) || len(got[i].rs.rows) != len(qs[i].rs.rows) {
			t.Errorf("query %d: %+v, want %+v", i, got[i], qs[i])
		}
	}
	if v := got[1].rs.rows[1][1]; string(v.([]byte)) != "y" {
		t.Errorf("bytes: %#v", v)
	}
	for i := range len(b) {
		if _, err := decodeEntry(b[:i]); err == nil {
			t.Errorf("decode of %d of %d bytes: no error", i, len(b))
		}
	}
	if _, err := decodeEntry(append(b[:len(b):len(b)], 0)); err == nil {
		t.Error("trailing byte: no error")
	}
}

func FuzzDecodeEntry(f *testing.F) {
	b, _ := encodeEntry([]recordedQuery{{rs: &resultSet{columns: []string{"a"}, scanTypes: []reflect.Type{nil}, rows: [][]driver.Value{{"x"}}}}, {fingerprint: "q", rs: &resultSet{}}})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeEntry(b)
	})
}
