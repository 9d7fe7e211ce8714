package gormplugin

import "testing"

// The key columns RETURNING appends are qualified with the written table
// as the statement spells it, or its alias: UPDATE … FROM and DELETE …
// USING name other tables with the same columns.
func TestReturningTarget(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want string
		ok   bool
	}{
		{`UPDATE "posts" SET "title"=$1 FROM "users" WHERE posts.author_id = users.id`, `"posts"`, true},
		{`UPDATE posts AS p SET title = $1 FROM users WHERE p.author_id = users.id`, `p`, true},
		{`UPDATE ONLY "posts" "p" SET "title"=$1`, `"p"`, true},
		{`UPDATE OR REPLACE posts SET title = ?`, `posts`, true},
		{`DELETE FROM "comments" USING "posts" WHERE comments.post_id = posts.id`, `"comments"`, true},
		{`DELETE FROM "public"."comments" WHERE id = 1`, `"public"."comments"`, true},
		{`/* hint */ DELETE FROM comments c WHERE c.id = 1`, `c`, true},
		{`DELETE FROM posts * WHERE id = 1`, ``, false},
		{`INSERT INTO posts (id) VALUES (1)`, ``, false},
		{`DELETE posts FROM posts JOIN users ON 1`, ``, false},
	} {
		got, ok := returningTarget(tc.sql)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: got %q, %v; want %q, %v", tc.sql, got, ok, tc.want, tc.ok)
		}
	}
}
