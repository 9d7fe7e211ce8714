package pgcdc

import (
	"context"
	"encoding/hex"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"gorm.io/gorm"
	"gorm.io/gorm/schema"

	"github.com/depcache/go-depcache/gormplugin"
)

// Op is the kind of a row change.
type Op uint8

const (
	OpInsert Op = iota + 1
	OpUpdate
	OpDelete
)

func (o Op) String() string {
	switch o {
	case OpInsert:
		return "insert"
	case OpUpdate:
		return "update"
	case OpDelete:
		return "delete"
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// Change is one row change as WithChangeTags sees it. Old holds what the
// table's replica identity provides (the key columns by default, every
// column with REPLICA IDENTITY FULL; nil for an insert, and for an update
// that kept its key under the default identity). Values are PostgreSQL's
// text output, nil for NULL; a column missing from New is an unchanged
// TOASTed value PostgreSQL did not send.
type Change struct {
	Op     Op
	Schema string
	Table  string
	Old    map[string]*string
	New    map[string]*string
}

// relation is a table as the stream describes it, with how its rows map to
// tags.
type relation struct {
	msg   *pglogrepl.RelationMessage
	table string // as the plugin names it: gormplugin's functions drop the schema
	// keyCols are the indexes in msg.Columns of the key, in the order the
	// plugin joins them; nil when rows cannot be identified (no primary
	// key, or a model key column the table lacks).
	keyCols []int
	model   *schema.Schema // of WithModels, or nil
}

// newRelation maps a relation message to tags: keys from the model's
// primary key if a model names the table, else from pk, the table's
// primary-key columns in the database.
func newRelation(msg *pglogrepl.RelationMessage, models map[string]*schema.Schema, pk []string) (*relation, string) {
	r := &relation{msg: msg, table: gormplugin.TableTag(msg.Namespace + "." + msg.RelationName)}
	cols := pk
	if m, ok := models[r.table]; ok {
		r.model = m
		cols = m.PrimaryFieldDBNames
	}
	if len(cols) == 0 {
		return r, "no primary key: its changes invalidate the table tag"
	}
	for _, name := range cols {
		i := columnIndex(msg, name)
		if i < 0 {
			return &relation{msg: msg, table: r.table}, fmt.Sprintf("the key column %q is not in the stream: its changes invalidate the table tag", name)
		}
		r.keyCols = append(r.keyCols, i)
	}
	return r, ""
}

func columnIndex(msg *pglogrepl.RelationMessage, name string) int {
	for i, c := range msg.Columns {
		if c.Name == name {
			return i
		}
	}
	return -1
}

// rowTag is the row tag of the key in tuple, false where the tuple does not
// hold it (an unchanged TOASTed key, a NULL).
func (r *relation) rowTag(ctx context.Context, tuple *pglogrepl.TupleData) (string, bool) {
	if tuple == nil || len(r.keyCols) == 0 {
		return "", false
	}
	vals := make([]any, len(r.keyCols))
	for i, ci := range r.keyCols {
		if ci >= len(tuple.Columns) {
			return "", false
		}
		col := tuple.Columns[ci]
		if col.DataType != pglogrepl.TupleDataTypeText {
			return "", false
		}
		v, err := decode(r.msg.Columns[ci].DataType, string(col.Data), r.model != nil)
		if err != nil {
			return "", false
		}
		if r.model != nil {
			if cv, ok := convert(ctx, r.model.PrimaryFields[i], v); ok {
				v = cv
			}
		}
		vals[i] = v
	}
	return gormplugin.RowTag(r.table, vals...), true
}

// convert gives v the Go type of the model's field, as the plugin does
// before it formats a key.
func convert(ctx context.Context, f *schema.Field, v any) (any, bool) {
	holder := reflect.New(f.Schema.ModelType).Elem()
	if err := f.Set(ctx, holder, v); err != nil {
		return nil, false
	}
	out, _ := f.ValueOf(ctx, holder)
	return out, true
}

// PostgreSQL type OIDs whose text output the listener decodes to the Go
// type GORM models use for them.
const (
	oidBool        = 16
	oidBytea       = 17
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidOID         = 26
	oidFloat4      = 700
	oidFloat8      = 701
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidNumeric     = 1700
)

// decode turns a column's text output into the value the plugin would
// format for a model field of the column's natural Go type — the type GORM
// maps to the column type: integers as int64, real as float32, double
// precision and numeric (GORM's column for float64 fields) as float64,
// booleans, bytea as []byte, times as time.Time in UTC, anything else
// (text, varchar, uuid, enums) as its text. With a model (withModel) a
// numeric stays text: the model's field converts it, and a decimal type's
// field must not see it rounded to a float64 first. The replication
// session runs with TimeZone=UTC and DateStyle=ISO, so the text is in one
// known form.
func decode(oid uint32, s string, withModel bool) (any, error) {
	switch oid {
	case oidInt2, oidInt4, oidInt8, oidOID:
		return strconv.ParseInt(s, 10, 64)
	case oidFloat4:
		f, err := strconv.ParseFloat(s, 32)
		return float32(f), err
	case oidFloat8:
		return strconv.ParseFloat(s, 64)
	case oidNumeric:
		if withModel {
			return s, nil
		}
		return strconv.ParseFloat(s, 64)
	case oidBool:
		return s == "t", nil
	case oidBytea:
		h, ok := strings.CutPrefix(s, `\x`)
		if !ok {
			return nil, fmt.Errorf("bytea %q: not in hex format", s)
		}
		return hex.DecodeString(h)
	case oidDate:
		return time.ParseInLocation("2006-01-02", s, time.UTC)
	case oidTimestamp:
		return time.ParseInLocation("2006-01-02 15:04:05.999999999", s, time.UTC)
	case oidTimestamptz:
		t, err := time.Parse("2006-01-02 15:04:05.999999999Z07", s)
		if err != nil {
			t, err = time.Parse("2006-01-02 15:04:05.999999999Z07:00", s)
		}
		return t.UTC(), err
	}
	return s, nil
}

// loadModels parses the models of WithModels with their db's naming
// strategy, keyed by the table name the plugin's tags use.
func loadModels(sets []modelSet) (map[string]*schema.Schema, error) {
	out := map[string]*schema.Schema{}
	for _, set := range sets {
		for _, m := range set.models {
			stmt := &gorm.Statement{DB: set.db}
			if err := stmt.Parse(m); err != nil {
				return nil, fmt.Errorf("%w: model %T: %v", ErrBadOption, m, err)
			}
			name := gormplugin.TableTag(stmt.Schema.Table)
			out[name] = stmt.Schema
		}
	}
	return out, nil
}

// tupleValues is a tuple as Change shows it.
func tupleValues(msg *pglogrepl.RelationMessage, t *pglogrepl.TupleData) map[string]*string {
	if t == nil {
		return nil
	}
	out := make(map[string]*string, len(t.Columns))
	for i, c := range t.Columns {
		if i >= len(msg.Columns) {
			break
		}
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
			out[msg.Columns[i].Name] = nil
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			s := string(c.Data)
			out[msg.Columns[i].Name] = &s
		}
	}
	return out
}

// quoteIdent quotes an SQL identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// quoteTable quotes "schema.table" or "table" as written by WithTables.
func quoteTable(s string) string {
	if i := strings.IndexByte(s, '.'); i >= 0 {
		return quoteIdent(s[:i]) + "." + quoteIdent(s[i+1:])
	}
	return quoteIdent(s)
}
