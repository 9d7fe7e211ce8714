package gormplugin

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// A Cached hit should cost GORM's statement and one cache read. Building
// the SQL to key the query (callbacks.BuildQuerySQL) cost a hit served by
// the in-process tier a quarter of its time, so the plugin keys what GORM
// would build the SQL from instead — where it can be sure that what it
// reads decides the SQL and its variables completely:
//
//   - the statement has no SQL and no variables yet, a model, a plain
//     table name (no TableExpr), no Joins, Select, Omit, no
//     Config.QueryFields, and a destination that GORM reads with
//     SELECT * (the model, a slice of it or of pointers to it, or
//     anything it does not look into);
//   - its clauses are WHERE, ORDER BY and LIMIT only (and the markers of
//     Cached and of soft delete), each a bare expression of the clause
//     package's own types: Expr, Eq, Neq, Gt, Gte, Lt, Lte, Like, IN, And,
//     Or, Not, OrderBy without an expression, Limit;
//   - every value in them is nil or of a predeclared scalar type (bool,
//     integers, floats, string, []byte), time.Time, or a slice of those
//     ([]any nested at most twice); columns are names or clause.Column;
//   - the model's query clauses are GORM's own soft delete at most;
//   - no clause builder replaces GORM's for SELECT, FROM, WHERE, ORDER BY
//     and LIMIT, except the SQLite driver's for LIMIT (which writes the
//     limit and offset it is given as numbers).
//
// Everything GORM's builders read is then written, tagged by exact Go
// type and length-prefixed, into what is hashed: the dialect, the table,
// the clauses to build, each clause with every field of every expression,
// the values with their types, the primary-key column GORM substitutes,
// the soft-delete column, its zero value and Unscoped, the destination's
// own primary-key values (GORM adds them to the WHERE), plus what the SQL
// key holds besides the SQL (destination types, preload tree). Equal keys
// therefore mean equal SQL and variables; anything else (a custom
// expression, a Valuer, a named type, a subquery) keeps the SQL key.
// DEPCACHE_GORM_CHECK_KEYS=1 (the plugin's tests and the gormsuite harness
// set it) builds the SQL on every such query as well and panics if one
// key of this kind ever stands for two SQL keys.
//
// What a hit then skips besides building the SQL: GORM's logger traces no
// SQL for it (there is none), and the statement does not get the SELECT,
// FROM and implicit WHERE clauses GORM adds while building, which only a
// statement reused after the call (see GORM's "method chain safety")
// could observe.

// clauseKeyVersion separates keys of this kind from SQL keys and from
// older encodings.
const clauseKeyVersion = "rows2/clauses2"

// checkClauseKeys is DEPCACHE_GORM_CHECK_KEYS.
var checkClauseKeys = os.Getenv("DEPCACHE_GORM_CHECK_KEYS") == "1"

// clauseKeyChecks maps each clause key seen to the SQL key it stood for
// (checkClauseKeys only).
var clauseKeyChecks sync.Map

// checkClauseKey panics if clauseKey once stood for another SQL key.
func checkClauseKey(clauseKey, sqlKey, sql string) {
	type seen struct{ key, sql string }
	if prev, loaded := clauseKeyChecks.LoadOrStore(clauseKey, seen{sqlKey, sql}); loaded {
		if p := prev.(seen); p.key != sqlKey {
			panic("gormplugin: clause key " + clauseKey + " stands for two queries:\n  " + p.sql + "\n  " + sql)
		}
	}
}

// clauseKey returns the key of a Cached query read from its statement
// before GORM builds the SQL, or false where the SQL key must be used.
func clauseKey(db *gorm.DB, dbID string) (string, bool) {
	stmt := db.Statement
	s := stmt.Schema
	if stmt.SQL.Len() > 0 || len(stmt.Vars) > 0 || s == nil || stmt.Table == "" || stmt.TableExpr != nil ||
		len(stmt.Joins) > 0 || len(stmt.Selects) > 0 || len(stmt.Omits) > 0 || db.QueryFields {
		return "", false
	}
	rv := stmt.ReflectValue
	var destStruct bool // GORM adds the destination's primary key to the WHERE
	switch rv.Kind() {
	case reflect.Struct:
		if rv.Type() != s.ModelType {
			return "", false // a smaller struct: GORM selects its columns
		}
		destStruct = true
	case reflect.Slice:
		if t := rv.Type().Elem(); t != s.ModelType && (t.Kind() != reflect.Pointer || t.Elem() != s.ModelType) {
			return "", false
		}
	}

	bp := keyBuffers.Get().(*[]byte)
	defer keyBuffers.Put(bp)
	e := keyEncoder{b: (*bp)[:0]}
	e.str(clauseKeyVersion)
	e.str(db.Dialector.Name())
	e.str(dbID)
	e.str(stmt.Table)
	if slices.Equal(stmt.BuildClauses, gormQueryClauses[:]) {
		e.b = append(e.b, 'D') // GORM's own list, as almost always
	} else {
		e.b = append(e.b, 'L')
		e.num(uint64(len(stmt.BuildClauses)))
		for _, name := range stmt.BuildClauses {
			e.str(name)
		}
	}
	e.flag(stmt.Distinct)
	e.flag(stmt.Unscoped)
	// The column GORM writes for clause.PrimaryKey.
	switch {
	case s.PrioritizedPrimaryField != nil:
		e.b = append(e.b, 'p')
		e.str(s.PrioritizedPrimaryField.DBName)
	case len(s.DBNames) > 0:
		e.b = append(e.b, 'f')
		e.str(s.DBNames[0])
	default:
		e.b = append(e.b, 'n')
	}
	// Soft delete: its clause adds deleted_at = <zero> to the WHERE unless
	// Unscoped or already added.
	e.num(uint64(len(s.QueryClauses)))
	for _, qc := range s.QueryClauses {
		sd, ok := qc.(gorm.SoftDeleteQueryClause)
		if !ok || sd.Field == nil {
			return "", false
		}
		e.str(sd.Field.DBName)
		e.flag(sd.ZeroValue.Valid)
		e.str(sd.ZeroValue.String)
	}
	if destStruct {
		e.num(uint64(len(s.PrimaryFields)))
		for _, f := range s.PrimaryFields {
			e.str(f.DBName)
			if len(f.StructField.Index) == 1 {
				// What f.ValueOf reads for a field of the struct itself,
				// without boxing a zero key.
				if fv := rv.Field(f.StructField.Index[0]); fv.IsZero() {
					e.flag(true)
				} else if e.flag(false); !e.value(fv.Interface(), 0) {
					return "", false
				}
				continue
			}
			v, zero := f.ValueOf(stmt.Context, rv)
			e.flag(zero)
			if !zero && !e.value(v, 0) {
				return "", false
			}
		}
	}

	// The clauses, in a fixed order; any other clause keeps the SQL key.
	var keyed [len(keyedClauses)]clause.Clause
	var present [len(keyedClauses)]bool
	for name, c := range stmt.Clauses {
		i := keyedClause(name)
		if i < 0 {
			return "", false
		}
		keyed[i], present[i] = c, true
	}
	for i, name := range keyedClauses {
		e.flag(present[i])
		if !present[i] || name == settingCached || name == "soft_delete_enabled" {
			continue // absent, or a marker GORM does not build
		}
		c := keyed[i]
		if c.BeforeExpression != nil || c.AfterNameExpression != nil || c.AfterExpression != nil || c.Builder != nil {
			return "", false
		}
		if c.Name == name {
			e.b = append(e.b, 'N') // the name written is the clause's own
		} else {
			e.b = append(e.b, 'n')
			e.str(c.Name)
		}
		if !e.clause(name, c.Expression) {
			return "", false
		}
	}
	// The builders of the clauses the SQL will have (a dialect registers
	// a few, for other clauses mostly).
	for name, b := range db.ClauseBuilders {
		switch name {
		case "SELECT", "FROM", "WHERE", "ORDER BY":
			return "", false
		case "LIMIT":
			if !sqliteLimitBuilder(b) {
				return "", false
			}
			e.b = append(e.b, 'S') // the SQLite driver's LIMIT
		}
	}

	e.b = append(e.b, 0)
	e.b = appendDestTypeIDs(e.b, stmt)
	if len(stmt.Preloads) > 0 {
		var err error
		if e.b, err = appendPreloads(e.b, stmt); err != nil {
			return "", false
		}
	}
	if cap(e.b) <= 64<<10 {
		*bp = e.b
	}
	return hashedKey(stmt.Table, e.b), true
}

// keyedClauses are the clauses clauseKey reads, in the order it writes
// them.
var keyedClauses = [...]string{"WHERE", "ORDER BY", "LIMIT", settingCached, "soft_delete_enabled"}

// gormQueryClauses is the clauses GORM's query callbacks build
// (callbacks.Config's default QueryClauses).
var gormQueryClauses = [...]string{"SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "LIMIT", "FOR"}

// keyedClause is name's index in keyedClauses, or -1.
func keyedClause(name string) int {
	switch name {
	case "WHERE":
		return 0
	case "ORDER BY":
		return 1
	case "LIMIT":
		return 2
	case settingCached:
		return 3
	case "soft_delete_enabled":
		return 4
	}
	return -1
}

// appendDestTypeIDs writes what appendDestTypes writes, each type as the
// digest of its name (typeID): fewer bytes to hash.
func appendDestTypeIDs(b []byte, stmt *gorm.Statement) []byte {
	if t := reflect.TypeOf(stmt.Dest); t != nil {
		b = append(b, 'd')
		b = append(b, typeID(t)...)
	}
	v := reflect.ValueOf(stmt.Dest)
	for v.Kind() == reflect.Pointer && !v.IsNil() {
		v = v.Elem()
	}
	if v.Kind() == reflect.Interface && !v.IsNil() {
		b = append(b, 'i')
		b = append(b, typeID(v.Elem().Type())...)
	}
	if stmt.Schema != nil {
		b = append(b, 'm')
		b = append(b, typeID(stmt.Schema.ModelType)...)
	}
	return b
}

// typeID is the first 16 bytes of the SHA-256 of t's name as appendType
// writes it (with the import path of what it is made of), computed once
// per type.
func typeID(t reflect.Type) string {
	if id, ok := typeIDs.Load(t); ok {
		return id.(string)
	}
	sum := sha256.Sum256(appendType(nil, t))
	id := string(sum[:16])
	typeIDs.Store(t, id)
	return id
}

var typeIDs sync.Map // reflect.Type → typeID

// hashedKey is the cache key of a query on table whose identity is b.
func hashedKey(table string, b []byte) string {
	sum := sha256.Sum256(b)
	if table == "" {
		table = "raw"
	}
	t := tableName(table)
	var buf [128]byte // the key's one allocation is its string
	out := append(append(append(buf[:0], "gorm:"...), t...), ':')
	out = hex.AppendEncode(out, sum[:16])
	return string(out)
}

// sqliteLimitBuilder reports whether b is the LIMIT builder of GORM's
// SQLite driver, which writes LIMIT and OFFSET from the clause alone.
func sqliteLimitBuilder(b clause.ClauseBuilder) bool {
	pc := reflect.ValueOf(b).Pointer()
	if pc == lastSQLiteLimit.Load() {
		return true
	}
	if v, ok := knownBuilders.Load(pc); ok {
		if v.(bool) {
			lastSQLiteLimit.Store(pc)
		}
		return v.(bool)
	}
	ok := false
	if f := runtime.FuncForPC(pc); f != nil {
		// "….Dialector.ClauseBuilders.func2", or with Initialize in
		// front where the compiler inlined ClauseBuilders.
		name := f.Name()
		ok = strings.HasPrefix(name, "gorm.io/driver/sqlite.Dialector.") && strings.Contains(name, ".ClauseBuilders.func")
	}
	knownBuilders.Store(pc, ok)
	return ok
}

var (
	knownBuilders   sync.Map       // code pointer → sqliteLimitBuilder's answer
	lastSQLiteLimit atomic.Uintptr // the last code pointer found to be it
)

// keyEncoder writes a statement's parts unambiguously: every item starts
// with a tag byte, strings and lists with their length.
type keyEncoder struct{ b []byte }

func (e *keyEncoder) num(n uint64) { e.b = binary.AppendUvarint(e.b, n) }

func (e *keyEncoder) str(s string) {
	e.num(uint64(len(s)))
	e.b = append(e.b, s...)
}

func (e *keyEncoder) flag(v bool) bool {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
	return v
}

// Tags of keyed items.
const (
	tagWhere byte = 'A' + iota
	tagOrderBy
	tagLimit
	tagExpr
	tagEq
	tagNeq
	tagGt
	tagGte
	tagLt
	tagLte
	tagLike
	tagIN
	tagAnd
	tagOr
	tagNot
	tagColumnName
	tagColumn
	tagColumns
)

// clause writes the expression of the clause called name.
func (e *keyEncoder) clause(name string, x clause.Expression) bool {
	switch name {
	case "WHERE":
		w, ok := x.(clause.Where)
		if !ok {
			return false
		}
		e.b = append(e.b, tagWhere)
		return e.exprs(w.Exprs)
	case "ORDER BY":
		o, ok := x.(clause.OrderBy)
		if !ok || o.Expression != nil {
			return false
		}
		e.b = append(e.b, tagOrderBy)
		e.num(uint64(len(o.Columns)))
		for _, c := range o.Columns {
			e.column(c.Column)
			e.flag(c.Desc)
			e.flag(c.Reorder)
		}
		return true
	case "LIMIT":
		l, ok := x.(clause.Limit)
		if !ok {
			return false
		}
		e.b = append(e.b, tagLimit)
		e.flag(l.Limit != nil)
		if l.Limit != nil {
			e.b = binary.AppendVarint(e.b, int64(*l.Limit))
		}
		e.b = binary.AppendVarint(e.b, int64(l.Offset))
		return true
	}
	return false
}

func (e *keyEncoder) exprs(xs []clause.Expression) bool {
	e.num(uint64(len(xs)))
	for _, x := range xs {
		if !e.expr(x, 0) {
			return false
		}
	}
	return true
}

// maxExprDepth bounds nested And/Or/Not.
const maxExprDepth = 8

func (e *keyEncoder) expr(x clause.Expression, depth int) bool {
	if depth > maxExprDepth {
		return false
	}
	switch v := x.(type) {
	case clause.Expr:
		e.b = append(e.b, tagExpr)
		e.str(v.SQL)
		e.flag(v.WithoutParentheses)
		e.num(uint64(len(v.Vars)))
		for _, x := range v.Vars {
			if !e.value(x, 0) {
				return false
			}
		}
		return true
	case clause.Eq:
		return e.comparison(tagEq, v.Column, v.Value)
	case clause.Neq:
		return e.comparison(tagNeq, v.Column, v.Value)
	case clause.Gt:
		return e.comparison(tagGt, v.Column, v.Value)
	case clause.Gte:
		return e.comparison(tagGte, v.Column, v.Value)
	case clause.Lt:
		return e.comparison(tagLt, v.Column, v.Value)
	case clause.Lte:
		return e.comparison(tagLte, v.Column, v.Value)
	case clause.Like:
		return e.comparison(tagLike, v.Column, v.Value)
	case clause.IN:
		e.b = append(e.b, tagIN)
		if !e.columnAny(v.Column) {
			return false
		}
		e.flag(v.Values == nil)
		e.num(uint64(len(v.Values)))
		for _, x := range v.Values {
			if !e.value(x, 0) {
				return false
			}
		}
		return true
	case clause.AndConditions:
		return e.conditions(tagAnd, v.Exprs, depth)
	case clause.OrConditions:
		return e.conditions(tagOr, v.Exprs, depth)
	case clause.NotConditions:
		return e.conditions(tagNot, v.Exprs, depth)
	}
	return false
}

func (e *keyEncoder) conditions(tag byte, xs []clause.Expression, depth int) bool {
	e.b = append(e.b, tag)
	e.num(uint64(len(xs)))
	for _, x := range xs {
		if !e.expr(x, depth+1) {
			return false
		}
	}
	return true
}

func (e *keyEncoder) comparison(tag byte, col, val any) bool {
	e.b = append(e.b, tag)
	return e.columnAny(col) && e.value(val, 0)
}

// columnAny writes what WriteQuoted is given as a column.
func (e *keyEncoder) columnAny(c any) bool {
	switch v := c.(type) {
	case string:
		e.b = append(e.b, tagColumnName)
		e.str(v)
	case clause.Column:
		e.column(v)
	case []clause.Column:
		e.b = append(e.b, tagColumns)
		e.num(uint64(len(v)))
		for _, c := range v {
			e.column(c)
		}
	default:
		return false
	}
	return true
}

func (e *keyEncoder) column(c clause.Column) {
	e.b = append(e.b, tagColumn)
	// GORM's placeholders for the statement's table and key column
	// take a byte each.
	if c.Table == clause.CurrentTable {
		e.b = append(e.b, 'T')
	} else {
		e.b = append(e.b, 't')
		e.str(c.Table)
	}
	if c.Name == clause.PrimaryKey {
		e.b = append(e.b, 'P')
	} else {
		e.b = append(e.b, 'p')
		e.str(c.Name)
	}
	e.str(c.Alias)
	e.flag(c.Raw)
}

// Tags of values: one per Go type, so that values GORM would bind or
// expand differently never meet.
const (
	valNil byte = 'a' + iota
	valString
	valBytes
	valBool
	valInt
	valInt8
	valInt16
	valInt32
	valInt64
	valUint
	valUint8
	valUint16
	valUint32
	valUint64
	valFloat32
	valFloat64
	valTime
	valAnys // []any
	valStrings
	valInts
	valInt32s
	valInt64s
	valUints
	valUint32s
	valUint64s
)

// maxValueDepth bounds []any nested in []any (a list of tuples).
const maxValueDepth = 2

// value writes a value GORM binds or expands: false for any type it
// does not know exactly what GORM makes of.
func (e *keyEncoder) value(x any, depth int) bool {
	switch v := x.(type) {
	case nil:
		e.b = append(e.b, valNil)
	case string:
		e.b = append(e.b, valString)
		e.str(v)
	case []byte:
		e.b = append(e.b, valBytes)
		e.flag(v == nil)
		e.num(uint64(len(v)))
		e.b = append(e.b, v...)
	case bool:
		e.b = append(e.b, valBool)
		e.flag(v)
	case int:
		e.int(valInt, int64(v))
	case int8:
		e.int(valInt8, int64(v))
	case int16:
		e.int(valInt16, int64(v))
	case int32:
		e.int(valInt32, int64(v))
	case int64:
		e.int(valInt64, v)
	case uint:
		e.uint(valUint, uint64(v))
	case uint8:
		e.uint(valUint8, uint64(v))
	case uint16:
		e.uint(valUint16, uint64(v))
	case uint32:
		e.uint(valUint32, uint64(v))
	case uint64:
		e.uint(valUint64, v)
	case float32:
		e.uint(valFloat32, uint64(math.Float32bits(v)))
	case float64:
		e.uint(valFloat64, math.Float64bits(v))
	case time.Time:
		// The instant, and the zone drivers format it in.
		name, offset := v.Zone()
		e.b = append(e.b, valTime)
		e.b = binary.AppendVarint(e.b, v.Unix())
		e.num(uint64(v.Nanosecond()))
		e.b = binary.AppendVarint(e.b, int64(offset))
		e.str(name)
		e.str(v.Location().String())
	case []any:
		if depth >= maxValueDepth {
			return false
		}
		e.b = append(e.b, valAnys)
		e.flag(v == nil)
		e.num(uint64(len(v)))
		for _, x := range v {
			if !e.value(x, depth+1) {
				return false
			}
		}
	case []string:
		e.b = append(e.b, valStrings)
		e.flag(v == nil)
		e.num(uint64(len(v)))
		for _, s := range v {
			e.str(s)
		}
	case []int:
		return ints(e, valInts, v)
	case []int32:
		return ints(e, valInt32s, v)
	case []int64:
		return ints(e, valInt64s, v)
	case []uint:
		return uints(e, valUints, v)
	case []uint32:
		return uints(e, valUint32s, v)
	case []uint64:
		return uints(e, valUint64s, v)
	default:
		return false
	}
	return true
}

func (e *keyEncoder) int(tag byte, v int64) {
	e.b = append(e.b, tag)
	e.b = binary.AppendVarint(e.b, v)
}

func (e *keyEncoder) uint(tag byte, v uint64) {
	e.b = append(e.b, tag)
	e.b = binary.AppendUvarint(e.b, v)
}

func ints[T int | int32 | int64](e *keyEncoder, tag byte, v []T) bool {
	e.b = append(e.b, tag)
	e.flag(v == nil)
	e.num(uint64(len(v)))
	for _, x := range v {
		e.b = binary.AppendVarint(e.b, int64(x))
	}
	return true
}

func uints[T uint | uint32 | uint64](e *keyEncoder, tag byte, v []T) bool {
	e.b = append(e.b, tag)
	e.flag(v == nil)
	e.num(uint64(len(v)))
	for _, x := range v {
		e.b = binary.AppendUvarint(e.b, uint64(x))
	}
	return true
}
