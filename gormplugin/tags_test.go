package gormplugin

import (
	"slices"
	"testing"
)

func TestSQLTables(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want []string
		bad  bool
	}{
		{sql: "SELECT * FROM users WHERE id = 1", want: []string{"users"}},
		{sql: `select p.* from "posts" p join users u on u.id = p.author_id`, want: []string{"posts", "users"}},
		{sql: "SELECT * FROM a, b AS bb, public.c WHERE x", want: []string{"a", "b", "c"}},
		{sql: "SELECT * FROM `t` LEFT OUTER JOIN s ON 1", want: []string{"t", "s"}},
		{sql: "SELECT count(*) FROM (SELECT id FROM posts) x", want: []string{"posts"}},
		{sql: "SELECT 'from nowhere' FROM users", want: []string{"users"}},
		{sql: "UPDATE users SET name = 'x' WHERE id IN (SELECT user_id FROM bans)", want: []string{"users", "bans"}},
		{sql: "INSERT INTO post_tags (post_id, tag_id) VALUES (1, 2)", want: []string{"post_tags"}},
		{sql: "DELETE FROM comments WHERE post_id = ?", want: []string{"comments"}},
		// Modifiers before the table name are not tables.
		{sql: "UPDATE ONLY users SET name = 'x'", want: []string{"users"}},
		{sql: "UPDATE LOW_PRIORITY IGNORE users SET name = 'x'", want: []string{"users"}},
		{sql: "UPDATE OR REPLACE users SET name = 'x'", want: []string{"users"}},
		{sql: "DELETE FROM ONLY users WHERE id = 1", want: []string{"users"}},
		{sql: "DELETE LOW_PRIORITY QUICK IGNORE FROM users WHERE id = 1", want: []string{"users"}},
		{sql: "INSERT OR REPLACE INTO users (id) VALUES (1)", want: []string{"users"}},
		{sql: "REPLACE INTO users (id) VALUES (1)", want: []string{"users"}},
		{sql: "INSERT INTO users (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET name = 'x'", want: []string{"users"}},
		{sql: "INSERT INTO users (id) VALUES (1) ON DUPLICATE KEY UPDATE name = 'x'", want: []string{"users"}},
		{sql: "SELECT id FROM users FOR UPDATE NOWAIT", want: []string{"users"}},
		{sql: "SELECT id FROM users FOR UPDATE OF users SKIP LOCKED", want: []string{"users"}},
		// Unquoted names fold (PostgreSQL to lower case; MySQL per
		// lower_case_table_names): both spellings.
		{sql: "UPDATE Users SET name = 'x'", want: []string{"Users", "users"}},
		{sql: `UPDATE "Users" SET name = 'x'`, want: []string{"Users"}},
		// Several tables written, comments, CTEs, MERGE, schemas.
		{sql: "UPDATE a, b SET a.x = b.x WHERE a.id = b.id", want: []string{"a", "b"}},
		{sql: "/* hint */ UPDATE /* more */ users SET name = 'x' -- why\n", want: []string{"users"}},
		{sql: "WITH old AS (SELECT id FROM posts) UPDATE users SET name = 'x' WHERE id IN (SELECT id FROM old)", want: []string{"posts", "users", "old"}},
		{sql: "MERGE INTO users u USING staged s ON u.id = s.id WHEN MATCHED THEN UPDATE SET name = s.name", want: []string{"users"}},
		{sql: `UPDATE public."users" SET name = 'x'`, want: []string{"users"}},
		{sql: `UPDATE "app"."my.users" SET name = 'x'`, want: []string{"my.users"}},
		{sql: "SELECT * FROM json_each(?)", bad: true},
		{sql: "SELECT * FROM ?", bad: true},
	} {
		got, err := sqlTables(tc.sql)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: want an error, got %q", tc.sql, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %q, %v; want %q", tc.sql, got, err, tc.want)
		}
	}
}

func TestTagFormats(t *testing.T) {
	if got := RowTag("users", 42); got != "users::42" {
		t.Errorf("RowTag = %q", got)
	}
	if got := RowTag("memberships", 3, "a:b"); got != `memberships::3:a\:b` {
		t.Errorf("composite RowTag = %q", got)
	}
	if got := RowTag("users", "*"); got == ListTag("users") {
		t.Errorf("a row keyed * collides with the list tag: %q", got)
	}
	if ListTag(`public."users"`) != "users::*" || TableTag("`users`") != "users" {
		t.Errorf("qualified or quoted names are not normalised: %q %q", ListTag(`public."users"`), TableTag("`users`"))
	}
}
