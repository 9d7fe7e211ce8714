package gormplugin

import (
	"database/sql"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// A Cached() query stores what the database returned — column names, the
// type each column scans into, and the driver's values row by row — rather
// than the destination GORM filled. A hit replays those rows through GORM's
// own scan, so the destination, RowsAffected, ErrRecordNotFound and the
// hooks come out exactly as the database would have made them: for any
// destination type, Select, pre-filled structs, and fields a codec would
// drop (json:"-", unexported).

// resultSet is one query's rows as the driver gave them.
type resultSet struct {
	columns   []string
	scanTypes []reflect.Type // per column; nil where the type has no code
	rows      [][]driver.Value
	err       error // what the rows reported after the last one (never stored)
}

// recordRows reads every row of rows as driver values and closes it.
// Scanning into *any hands back the driver's value itself (database/sql
// copies []byte), which is what a later scan of the replay converts.
func recordRows(rows *sql.Rows) (*resultSet, error) {
	cols, err := rows.Columns()
	if err != nil {
		rows.Close()
		return nil, err
	}
	rs := &resultSet{columns: cols, scanTypes: make([]reflect.Type, len(cols))}
	if cts, err := rows.ColumnTypes(); err == nil && len(cts) == len(cols) {
		for i, ct := range cts {
			rs.scanTypes[i] = ct.ScanType()
		}
	}
	ptrs := make([]any, len(cols))
	for rows.Next() {
		row := make([]driver.Value, len(cols))
		for i := range row {
			ptrs[i] = (*any)(&row[i]) // *any, not *driver.Value: database/sql hands *any the value as is
		}
		if err := rows.Scan(ptrs...); err != nil {
			rs.err = err
			break
		}
		rs.rows = append(rs.rows, row)
	}
	if rs.err == nil {
		rs.err = rows.Err()
	}
	return rs, rows.Close()
}

// Scan types get a stable one-byte code: a stored entry names them by
// code, never by Go type name. Append only.
var scanTypeCodes = []reflect.Type{
	nil, // 0: no code (a driver's own type)
	reflect.TypeFor[any](),
	reflect.TypeFor[*any](), // what go-sqlite3 and the MySQL driver report for untyped columns
	reflect.TypeFor[bool](),
	reflect.TypeFor[int](),
	reflect.TypeFor[int8](),
	reflect.TypeFor[int16](),
	reflect.TypeFor[int32](),
	reflect.TypeFor[int64](),
	reflect.TypeFor[uint](),
	reflect.TypeFor[uint8](),
	reflect.TypeFor[uint16](),
	reflect.TypeFor[uint32](),
	reflect.TypeFor[uint64](),
	reflect.TypeFor[float32](),
	reflect.TypeFor[float64](),
	reflect.TypeFor[string](),
	reflect.TypeFor[[]byte](),
	reflect.TypeFor[sql.RawBytes](),
	reflect.TypeFor[time.Time](),
	reflect.TypeFor[sql.NullBool](),
	reflect.TypeFor[sql.NullByte](),
	reflect.TypeFor[sql.NullInt16](),
	reflect.TypeFor[sql.NullInt32](),
	reflect.TypeFor[sql.NullInt64](),
	reflect.TypeFor[sql.NullFloat64](),
	reflect.TypeFor[sql.NullString](),
	reflect.TypeFor[sql.NullTime](),
}

var scanTypeCode = func() map[reflect.Type]byte {
	m := make(map[reflect.Type]byte, len(scanTypeCodes))
	for i, t := range scanTypeCodes {
		if t != nil {
			m[t] = byte(i)
		}
	}
	return m
}()

// hasUncodedTypes reports a column whose scan type a stored entry cannot
// name. GORM reads scan types only for a map destination without a model.
func (rs *resultSet) hasUncodedTypes() bool {
	for _, t := range rs.scanTypes {
		if scanTypeCode[t] == 0 {
			return true
		}
	}
	return false
}

// The encoding: a version byte, the columns (name, scan-type code), then
// the rows, each value a tag byte and its bytes. Every driver value type
// round-trips exactly, []byte(nil) and []byte{} and a time's location
// included.
const resultSetVersion = 1

const (
	tagNil byte = iota
	tagInt64
	tagUint64
	tagFloat64
	tagFloat32
	tagFalse
	tagTrue
	tagBytes
	tagNilBytes
	tagString
	tagTime
)

// Locations of stored times.
const (
	locUTC   byte = iota
	locLocal      // the process's time.Local
	locNamed      // a location loaded by name, with its offset at that time
	locFixed      // a fixed zone: its name (maybe empty) and offset
)

// errUnencodable is a driver value the encoding has no tag for.
var errUnencodable = errors.New("gormplugin: a driver value of a type the cache cannot store")

// errCorruptResult is a stored entry this version cannot read.
var errCorruptResult = errors.New("gormplugin: unreadable cached result")

func (rs *resultSet) encode() ([]byte, error) {
	b := make([]byte, 0, 64)
	b = append(b, resultSetVersion)
	b = binary.AppendUvarint(b, uint64(len(rs.columns)))
	for i, c := range rs.columns {
		b = appendString(b, c)
		b = append(b, scanTypeCode[rs.scanTypes[i]])
	}
	b = binary.AppendUvarint(b, uint64(len(rs.rows)))
	for _, row := range rs.rows {
		for _, v := range row {
			var err error
			if b, err = appendValue(b, v); err != nil {
				return nil, err
			}
		}
	}
	return b, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendValue(b []byte, v driver.Value) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, tagNil), nil
	case int64:
		return binary.AppendVarint(append(b, tagInt64), x), nil
	case uint64:
		return binary.AppendUvarint(append(b, tagUint64), x), nil
	case float64:
		return binary.LittleEndian.AppendUint64(append(b, tagFloat64), math.Float64bits(x)), nil
	case float32:
		return binary.LittleEndian.AppendUint32(append(b, tagFloat32), math.Float32bits(x)), nil
	case bool:
		if x {
			return append(b, tagTrue), nil
		}
		return append(b, tagFalse), nil
	case []byte:
		if x == nil {
			return append(b, tagNilBytes), nil
		}
		b = binary.AppendUvarint(append(b, tagBytes), uint64(len(x)))
		return append(b, x...), nil
	case string:
		return appendString(append(b, tagString), x), nil
	case time.Time:
		return appendTime(append(b, tagTime), x), nil
	}
	return nil, fmt.Errorf("%w: %T", errUnencodable, v)
}

func appendTime(b []byte, t time.Time) []byte {
	b = binary.AppendVarint(b, t.Unix())
	b = binary.AppendUvarint(b, uint64(t.Nanosecond()))
	switch loc := t.Location(); loc {
	case time.UTC:
		return append(b, locUTC)
	case time.Local:
		return append(b, locLocal)
	default:
		name, offset := t.Zone()
		kind := locFixed
		if loc.String() != name {
			// A location with rules (Europe/Paris): its name is not the
			// zone abbreviation.
			kind, name = locNamed, loc.String()
		}
		b = append(b, kind)
		b = appendString(b, name)
		return binary.AppendVarint(b, int64(offset))
	}
}

// decodeResultSet reads what encode wrote. Strings share one allocation
// made from b.
func decodeResultSet(b []byte) (*resultSet, error) {
	d := decoder{b: b, s: string(b)}
	rs := &resultSet{}
	if err := d.resultSet(rs, nil); err != nil {
		return nil, err
	}
	return rs, nil
}

// resultSet reads into rs a resultSet that takes the rest of d's input;
// rows, if long enough, holds its rows.
func (d *decoder) resultSet(rs *resultSet, rows [][]driver.Value) error {
	if v := d.byte(); v != resultSetVersion {
		return fmt.Errorf("%w: version %d", errCorruptResult, v)
	}
	h := d.header()
	if d.err != nil {
		return errCorruptResult
	}
	ncols := len(h.columns)
	rs.columns, rs.scanTypes = h.columns, h.scanTypes
	nrows := d.count()
	if ncols > 0 && nrows > (len(d.b)-d.off)/ncols {
		d.fail() // every value takes a byte at least
	}
	if d.err == nil {
		if nrows <= len(rows) {
			rs.rows = rows[:nrows:nrows]
		} else {
			rs.rows = make([][]driver.Value, nrows)
		}
		var values []driver.Value
		if n := nrows * ncols; n <= cap(d.valBuf) {
			values = d.valBuf[:n:n]
		} else {
			values = make([]driver.Value, n)
		}
		d.cells = len(values)
		for r := range rs.rows {
			rs.rows[r] = values[r*ncols : (r+1)*ncols : (r+1)*ncols]
			for c := range ncols {
				rs.rows[r][c] = d.value()
			}
		}
	}
	if d.err != nil || d.off != len(d.b) {
		return errCorruptResult
	}
	return nil
}

// A header is a result's columns and their scan types. A query's hits
// all read the same one: it is decoded once and shared (read only: GORM
// gets a copy of the columns where it renames them, newHitRows).
type header struct {
	columns   []string
	scanTypes []reflect.Type
}

// headers holds the headers decoded so far, by their encoding; it is
// replaced, never modified, so that a hit reads it without a lock.
var (
	headers   atomic.Pointer[map[string]*header]
	headersMu sync.Mutex // serialises the replacements
)

// maxHeaders bounds headers; past it, headers are decoded for each hit.
const maxHeaders = 4096

// header reads the column count, names and scan-type codes.
func (d *decoder) header() *header {
	start := d.off
	ncols := d.count()
	for range ncols {
		d.off += d.count() // the name
		d.byte()           // its scan type
	}
	if d.err != nil {
		return nil
	}
	enc := d.b[start:d.off]
	if m := headers.Load(); m != nil {
		if h, ok := (*m)[string(enc)]; ok {
			return h
		}
	}
	end := d.off
	d.off = start
	d.count()
	h := &header{columns: make([]string, ncols), scanTypes: make([]reflect.Type, ncols)}
	for i := range ncols {
		// A copy: the decoder's strings share the hit's bytes.
		h.columns[i] = strings.Clone(d.string())
		if c := int(d.byte()); c < len(scanTypeCodes) {
			h.scanTypes[i] = scanTypeCodes[c]
		} else {
			d.fail()
			return nil
		}
	}
	d.off = end
	headersMu.Lock()
	defer headersMu.Unlock()
	old := headers.Load()
	if old != nil && len(*old) >= maxHeaders {
		return h
	}
	m := make(map[string]*header, 1+lenOf(old))
	if old != nil {
		maps.Copy(m, *old)
	}
	m[string(enc)] = h
	headers.Store(&m)
	return h
}

func lenOf(m *map[string]*header) int {
	if m == nil {
		return 0
	}
	return len(*m)
}

type decoder struct {
	b   []byte
	s   string // b as a string, so that decoded strings share it
	off int
	err error

	// Slabs for the values of a result's strings and integers, made on
	// first use with room for cells values: boxing each in a driver.Value
	// would cost an allocation apiece (see boxString).
	cells int
	strs  []string
	ints  []int64

	valBuf []driver.Value // room for the values, if long enough
}

// eface is the layout of an interface value with methods-free type (any).
type eface struct{ typ, data unsafe.Pointer }

// boxString returns s as a driver.Value whose data points into d's slab
// instead of a copy of its own: one allocation for all of a result's
// strings. The slab is never written again once a value points into it.
func (d *decoder) boxString(s string) driver.Value {
	if d.strs == nil {
		if d.cells <= 1 {
			return s
		}
		d.strs = make([]string, 0, d.cells)
	}
	if len(d.strs) == cap(d.strs) {
		return s
	}
	d.strs = append(d.strs, s)
	var v driver.Value = "" // the type word of a string; no allocation
	(*eface)(unsafe.Pointer(&v)).data = unsafe.Pointer(&d.strs[len(d.strs)-1])
	return v
}

// boxInt is boxString for an int64 (Go boxes 0–255 without allocating).
func (d *decoder) boxInt(i int64) driver.Value {
	if 0 <= i && i < 256 {
		return i
	}
	if d.ints == nil {
		if d.cells <= 1 {
			return i
		}
		d.ints = make([]int64, 0, d.cells)
	}
	if len(d.ints) == cap(d.ints) {
		return i
	}
	d.ints = append(d.ints, i)
	var v driver.Value = int64(0)
	(*eface)(unsafe.Pointer(&v)).data = unsafe.Pointer(&d.ints[len(d.ints)-1])
	return v
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCorruptResult
	}
	d.off = len(d.b)
}

func (d *decoder) byte() byte {
	if d.off >= len(d.b) {
		d.fail()
		return 0
	}
	d.off++
	return d.b[d.off-1]
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail()
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		d.fail()
		return 0
	}
	d.off += n
	return v
}

// count reads a length that must fit in what is left of the input.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)-d.off) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) fixed(n int) []byte {
	if len(d.b)-d.off < n {
		d.fail()
		return make([]byte, n)
	}
	d.off += n
	return d.b[d.off-n : d.off]
}

func (d *decoder) string() string {
	n := d.count()
	d.off += n
	return d.s[d.off-n : d.off]
}

func (d *decoder) value() driver.Value {
	switch tag := d.byte(); tag {
	case tagNil:
		return nil
	case tagInt64:
		return d.boxInt(d.varint())
	case tagUint64:
		return d.uvarint()
	case tagFloat64:
		return math.Float64frombits(binary.LittleEndian.Uint64(d.fixed(8)))
	case tagFloat32:
		return math.Float32frombits(binary.LittleEndian.Uint32(d.fixed(4)))
	case tagFalse:
		return false
	case tagTrue:
		return true
	case tagBytes:
		n := d.count()
		// A copy: a Scanner may keep the slice it is given.
		return append([]byte{}, d.fixed(n)...)
	case tagNilBytes:
		return []byte(nil)
	case tagString:
		return d.boxString(d.string())
	case tagTime:
		return d.time()
	}
	d.fail()
	return nil
}

func (d *decoder) time() time.Time {
	sec := d.varint()
	nsec := d.uvarint()
	if nsec >= 1e9 {
		d.fail()
	}
	t := time.Unix(sec, int64(nsec))
	switch kind := d.byte(); kind {
	case locUTC:
		return t.UTC()
	case locLocal:
		return t.Local()
	case locNamed, locFixed:
		name := d.string()
		offset := int(d.varint())
		if kind == locNamed {
			if loc, ok := loadLocation(name); ok {
				if lt := t.In(loc); zoneOffset(lt) == offset {
					return lt
				}
			}
		}
		return t.In(fixedZone(name, offset))
	default:
		d.fail()
		return t
	}
}

func zoneOffset(t time.Time) int {
	_, off := t.Zone()
	return off
}

// Locations are loaded once per name; fixed zones made once per (name,
// offset), so that two replays of one time compare equal.
var (
	locations  sync.Map // name → *time.Location (nil: not loadable)
	fixedZones sync.Map // fixedZoneKey → *time.Location
)

type fixedZoneKey struct {
	name   string
	offset int
}

func loadLocation(name string) (*time.Location, bool) {
	if v, ok := locations.Load(name); ok {
		loc, _ := v.(*time.Location)
		return loc, loc != nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		loc = nil
	}
	locations.Store(name, loc)
	return loc, loc != nil
}

func fixedZone(name string, offset int) *time.Location {
	k := fixedZoneKey{name, offset}
	if v, ok := fixedZones.Load(k); ok {
		return v.(*time.Location)
	}
	v, _ := fixedZones.LoadOrStore(k, time.FixedZone(name, offset))
	return v.(*time.Location)
}
