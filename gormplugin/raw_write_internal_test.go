package gormplugin

import (
	"slices"
	"testing"
)

// What raw SQL invalidates, with no model seen: the tables it names (both
// spellings of an unquoted name), views it replaces or refreshes, nothing
// for reads and transaction control.
func TestRawWriteTags(t *testing.T) {
	p := New(nil)
	for _, tc := range []struct {
		sql   string
		write bool
		want  []string // tags that must be among those returned
	}{
		{"UPDATE ONLY Users SET name = 'x'", true, []string{"Users::*", "Users", "users::*", "users"}},
		{"INSERT IGNORE INTO posts (id) VALUES (1)", true, []string{"posts::*", "posts"}},
		{"/* c */ DELETE FROM comments WHERE id = 1", true, []string{"comments::*", "comments"}},
		{"WITH d AS (DELETE FROM a RETURNING id) INSERT INTO b SELECT id FROM d", true, []string{"a", "b"}},
		{"CREATE OR REPLACE VIEW recent AS SELECT * FROM posts", true, []string{"recent::*", "recent"}},
		{"REFRESH MATERIALIZED VIEW CONCURRENTLY recent", true, []string{"recent"}},
		{"DROP VIEW IF EXISTS recent", true, []string{"recent"}},
		{"TRUNCATE TABLE ONLY posts", true, []string{"posts"}},
		{"SELECT * FROM posts", false, nil},
		{"SAVEPOINT sp1", false, nil},
		{"ROLLBACK TO SAVEPOINT sp1", false, nil},
		{"CREATE INDEX idx ON posts (title)", false, nil},
	} {
		tags, write := p.rawWriteTags(tc.sql)
		if write != tc.write {
			t.Errorf("%s: write = %v, want %v", tc.sql, write, tc.write)
		}
		for _, w := range tc.want {
			if !slices.Contains(tags, w) {
				t.Errorf("%s: tags %q lack %q", tc.sql, tags, w)
			}
		}
	}
}
