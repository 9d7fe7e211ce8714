package gormplugin

import (
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

// FuzzSQLTables: the raw-SQL scanner never panics on any text, answers the
// same twice, and names no empty table; rawWriteTags, which the plugin runs
// on every Exec, never panics either.
func FuzzSQLTables(f *testing.F) {
	for _, s := range []string{
		"SELECT * FROM users u JOIN posts p ON p.user_id = u.id",
		"UPDATE ONLY Users SET name = 'it''s' WHERE id = 1",
		"INSERT INTO \"public\".\"my.table\" (a) VALUES ($1) ON CONFLICT DO UPDATE SET a = 1",
		"DELETE FROM `db`.`t` WHERE x IN (SELECT y FROM [z])",
		"WITH d AS (DELETE FROM a RETURNING id) INSERT INTO b SELECT id FROM d",
		"SELECT * FROM generate_series(1, 3)",
		"SELECT 1 -- FROM hidden\n FROM /* c */ t",
		"UPDATE a, b SET a.x = b.y",
		"SELECT * FROM \"unterminated",
		"SELECT 'unterminated FROM t",
		"FROM", "INTO (", "UPDATE LATERAL", "DROP TABLE IF EXISTS",
		"\x00FROM\x00t", "FROM t\x00", "",
	} {
		f.Add(s)
	}
	p := New(nil, WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	f.Fuzz(func(t *testing.T, sql string) {
		toks := tokenize(sql)
		if !slices.Equal(toks, tokenize(sql)) {
			t.Fatalf("tokenize not deterministic on %q", sql)
		}
		tables, err := sqlTables(sql)
		again, err2 := sqlTables(sql)
		if !slices.Equal(tables, again) || (err == nil) != (err2 == nil) {
			t.Fatalf("sqlTables not deterministic on %q", sql)
		}
		for _, tb := range tables {
			if tb == "" {
				t.Fatalf("sqlTables(%q) names an empty table: %q", sql, tables)
			}
		}
		p.rawWriteTags(sql)
	})
}

// FuzzRawWriteNamesTable: a raw INSERT, UPDATE or DELETE of any plain or
// quoted table name invalidates that table's list and table tags, whatever
// the name and however it is spelled.
func FuzzRawWriteNamesTable(f *testing.F) {
	f.Add("users", uint8(0))
	f.Add("Users", uint8(1))
	f.Add("my table", uint8(2))
	f.Add("t$1", uint8(3))
	f.Add("café", uint8(4))
	p := New(nil, WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	f.Fuzz(func(t *testing.T, name string, form uint8) {
		plain := name != "" && isIdent(name) && !isKeyword(name) && !strings.ContainsAny(name, ".\"`[]")
		for i := 0; i < len(name) && plain; i++ {
			plain = isIdentByte(name[i])
		}
		quotable := name != "" && !strings.ContainsAny(name, "\"`[]\x00") && strings.TrimSpace(name) == name && !strings.Contains(name, ".")
		var spelled string
		switch {
		case plain && form%2 == 0:
			spelled = name
		case quotable:
			spelled = `"` + name + `"`
		default:
			t.Skip()
		}
		if form%3 == 0 {
			spelled = "public." + spelled
		}
		var sql string
		switch form % 5 {
		case 0:
			sql = "INSERT INTO " + spelled + " (a) VALUES (1)"
		case 1:
			sql = "UPDATE " + spelled + " SET a = 1 WHERE id = 2"
		case 2:
			sql = "DELETE FROM " + spelled + " WHERE id = 3"
		case 3:
			sql = "UPDATE " + spelled + " AS x SET a = 'b' WHERE x.id IN (SELECT id FROM other)"
		case 4:
			sql = "DELETE FROM " + spelled
		}
		tags, write := p.rawWriteTags(sql)
		if !write {
			t.Fatalf("%s: not seen as a write", sql)
		}
		for _, want := range []string{ListTag(name), TableTag(name)} {
			if !slices.Contains(tags, want) {
				t.Fatalf("%s: tags %q lack %q", sql, tags, want)
			}
		}
	})
}

// FuzzRowTag: row tags of one table never collide for different keys of
// one or two string values, and never read as the list tag.
func FuzzRowTag(f *testing.F) {
	f.Add("42", "7", "")
	f.Add("*", "", ":")
	f.Add(`\`, `\*`, `:`)
	f.Add("a:b", "a", "b")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		if RowTag("t", a) == ListTag("t") {
			t.Fatalf("RowTag(t, %q) is the list tag", a)
		}
		if a != b && RowTag("t", a) == RowTag("t", b) {
			t.Fatalf("RowTag(t, %q) == RowTag(t, %q)", a, b)
		}
		if RowTag("t", a) == RowTag("t", b, c) {
			t.Fatalf("RowTag(t, %q) == RowTag(t, %q, %q)", a, b, c)
		}
		if (a != b || b != c) && RowTag("t", a, b) == RowTag("t", b, c) {
			t.Fatalf("RowTag(t, %q, %q) == RowTag(t, %q, %q)", a, b, b, c)
		}
	})
}
