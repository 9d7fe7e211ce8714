package gormplugin

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"gorm.io/gorm"

	"github.com/depcache/go-depcache/keys"
)

// RowTag is the tag of one row: "users::42". Composite keys join their
// values in primary-key order: "memberships::3:7". Values are formatted by
// keys.FormatValue, so pass them in their field's Go type (an int key as an
// int, not "42"): the plugin converts to the field's type before formatting,
// RowTag has no schema to convert with.
func RowTag(table string, pk ...any) string {
	return tableName(table) + "::" + keys.FormatKey(pk...)
}

// ListTag is the tag every query on table depends on except lookups by
// primary key: "users::*". Every insert, update and delete invalidates it.
func ListTag(table string) string { return tableName(table) + "::*" }

// TableTag is the tag every query that read table depends on: "users".
// Writes whose rows cannot be identified, and raw SQL writes, invalidate it.
func TableTag(table string) string { return tableName(table) }

// ModelRowTag returns the row tag of a model value, such as a *User with its
// primary key set, using db's naming strategy for the table name. Use it to
// invalidate by hand a row written outside GORM.
func ModelRowTag(db *gorm.DB, model any) (string, error) {
	if db == nil {
		return "", errors.New("gormplugin: ModelRowTag needs a *gorm.DB (nil) for its naming strategy")
	}
	stmt := &gorm.Statement{DB: db}
	if err := stmt.Parse(model); err != nil {
		return "", fmt.Errorf("gormplugin: %T: %w", model, err)
	}
	s := stmt.Schema
	if len(s.PrimaryFields) == 0 {
		return "", fmt.Errorf("gormplugin: %s has no primary key", s.Name)
	}
	rv := reflect.Indirect(reflect.ValueOf(model))
	if rv.Kind() != reflect.Struct {
		return "", fmt.Errorf("gormplugin: ModelRowTag needs one struct value, got %T", model)
	}
	vals := make([]any, len(s.PrimaryFields))
	for i, f := range s.PrimaryFields {
		v, zero := f.ValueOf(db.Statement.Context, rv)
		if zero {
			return "", fmt.Errorf("gormplugin: %s.%s is zero: the row has no key yet", s.Name, f.Name)
		}
		vals[i] = v
	}
	return RowTag(stmt.Table, vals...), nil
}

// tableName normalises a table name as SQL may spell it: quotes are dropped
// and a schema qualifier removed, so that `public."users"` written in raw SQL
// and the model's users tag the same thing.
func tableName(t string) string {
	t = strings.TrimSpace(t)
	if i := lastDotOutsideQuotes(t); i >= 0 {
		t = t[i+1:]
	}
	return strings.Trim(t, "`\"[]")
}

// lastDotOutsideQuotes finds the dot before the table in schema.table,
// skipping dots inside a quoted name ("my.table").
func lastDotOutsideQuotes(t string) int {
	last := -1
	var quote byte
	for i := 0; i < len(t); i++ {
		switch c := t[i]; {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '`':
			quote = c
		case c == '[':
			quote = ']'
		case c == '.':
			last = i
		}
	}
	return last
}

// errUnparseable reports SQL whose tables the plugin cannot name for sure.
var errUnparseable = errors.New("gormplugin: cannot tell which tables this SQL reads or writes")

// sqlTables returns the tables a statement names after FROM, JOIN, UPDATE,
// INTO and in FROM and multi-table UPDATE lists. It is conservative: a
// table function, or anything it cannot read with certainty, is an error,
// and an unquoted name that is not all lower case is returned in both
// spellings (PostgreSQL folds it to lower case; MySQL's table names follow
// lower_case_table_names), so that a raw write never misses the model's
// tags and a raw read depends on both.
func sqlTables(sql string) ([]string, error) {
	toks := tokenize(sql)
	var out []string
	seen := map[string]bool{}
	add := func(t string) {
		name := tableName(t)
		for _, n := range []string{name, foldedName(t, name)} {
			if n != "" && !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	for i := 0; i < len(toks); i++ {
		keyword := strings.ToLower(toks[i])
		switch keyword {
		case "from", "join", "into":
		case "update":
			// FOR UPDATE, DO UPDATE SET, ON DUPLICATE KEY UPDATE and
			// MERGE's THEN UPDATE SET name no table.
			if i > 0 {
				switch strings.ToLower(toks[i-1]) {
				case "for", "do", "key", "then":
					continue
				}
			}
		default:
			continue
		}
		j := skipTableModifiers(toks, i+1)
		for ; j < len(toks); j++ {
			t := toks[j]
			if t == "(" { // a subquery: its own FROM is scanned in turn
				break
			}
			if !isIdent(t) {
				return nil, fmt.Errorf("%w: %q after %s", errUnparseable, t, keyword)
			}
			if isKeyword(t) {
				if strings.EqualFold(t, "lateral") && (j+1 >= len(toks) || toks[j+1] != "(") {
					return nil, fmt.Errorf("%w: LATERAL %s", errUnparseable, toks[min(j+1, len(toks)-1)])
				}
				break // no table here: FROM LATERAL (…), a keyword after a modifier
			}
			if j+1 < len(toks) && toks[j+1] == "(" && keyword != "into" {
				return nil, fmt.Errorf("%w: table function %s", errUnparseable, t)
			}
			add(t)
			// An alias may follow; then a comma continues a FROM list or a
			// multi-table UPDATE.
			k := j + 1
			if k < len(toks) && strings.EqualFold(toks[k], "as") {
				k++
			}
			if k < len(toks) && isIdent(toks[k]) && !isKeyword(toks[k]) {
				k++
			}
			if (keyword == "from" || keyword == "update") && k < len(toks) && toks[k] == "," {
				j = skipTableModifiers(toks, k+1) - 1
				continue
			}
			break
		}
	}
	return out, nil
}

// skipTableModifiers skips the words that may stand between a keyword and
// its table: ONLY (PostgreSQL), LOW_PRIORITY, IGNORE, QUICK, DELAYED,
// HIGH_PRIORITY (MySQL), OR REPLACE/IGNORE/… (SQLite).
func skipTableModifiers(toks []string, i int) int {
	for i < len(toks) {
		switch strings.ToLower(toks[i]) {
		case "only", "low_priority", "high_priority", "ignore", "quick", "delayed":
			i++
		case "or":
			i += 2
		default:
			return i
		}
	}
	return i
}

// foldedName is the lower-case spelling of an unquoted table name that is
// not all lower case, else "".
func foldedName(token, name string) string {
	if strings.ContainsAny(token, "`\"[") {
		return ""
	}
	if lower := strings.ToLower(name); lower != name {
		return lower
	}
	return ""
}

// tokenize splits SQL into identifiers (with their quotes and dots),
// punctuation and literals; string literals become one token "'".
func tokenize(sql string) []string {
	var toks []string
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '\'':
			j := i + 1
			for j < len(sql) && !(sql[j] == '\'' && (j+1 >= len(sql) || sql[j+1] != '\'')) {
				if sql[j] == '\'' {
					j++
				}
				j++
			}
			toks = append(toks, "'")
			i = j + 1
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			if k := strings.Index(sql[i+2:], "*/"); k >= 0 {
				i += k + 4
			} else {
				i = len(sql)
			}
		case isIdentByte(c) || c == '"' || c == '`' || c == '[':
			j := i
			for j < len(sql) {
				switch q := sql[j]; {
				case q == '"' || q == '`' || q == '[':
					end := byte(q)
					if q == '[' {
						end = ']'
					}
					k := strings.IndexByte(sql[j+1:], end)
					if k < 0 {
						j = len(sql)
					} else {
						j += k + 2
					}
				case isIdentByte(q) || q == '.':
					j++
				default:
					goto done
				}
			}
		done:
			toks = append(toks, sql[i:j])
			i = j
		default:
			toks = append(toks, sql[i:i+1])
			i++
		}
	}
	return toks
}

func isIdentByte(c byte) bool {
	return c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

func isIdent(t string) bool {
	if t == "" || t == "'" {
		return false
	}
	c := t[0]
	return isIdentByte(c) && !(c >= '0' && c <= '9') || c == '"' || c == '`' || c == '['
}

var sqlKeywords = map[string]bool{
	"where": true, "join": true, "inner": true, "left": true, "right": true, "full": true,
	"cross": true, "outer": true, "on": true, "using": true, "group": true, "order": true,
	"limit": true, "offset": true, "having": true, "union": true, "set": true, "values": true,
	"natural": true, "returning": true, "for": true, "window": true, "select": true,
	"when": true, "then": true, "matched": true,
	"except": true, "intersect": true, "lateral": true, "default": true,
}

func isKeyword(t string) bool { return sqlKeywords[strings.ToLower(t)] }
