package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	mysqldriver "github.com/go-sql-driver/mysql"
	"go.uber.org/goleak"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const seedPath = "../../testdata/blog/seed.json"

// blog is a seeded blog on a database of its own (SQLite, or a fresh
// database on the server of DEPCACHE_POSTGRES_DSN or DEPCACHE_MYSQL_DSN) and
// miniredis (or REDIS_URL), served on a loopback port.
type blog struct {
	t   *testing.T
	app *app
	url string
	c   *http.Client
}

func startBlog(t *testing.T, dsn string) *blog {
	t.Helper()
	ctx := context.Background()
	in, err := openInfra(dsn, "redis")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := in.Close(); err != nil {
			t.Error(err)
		}
	})
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// A name of its own, so that tests sharing a real Redis never meet.
	a, err := newApp(in, fmt.Sprintf("blogtest-%s-%d", t.Name(), time.Now().UnixNano()), true, log)
	if err != nil {
		t.Fatal(err)
	}
	if url := os.Getenv("REDIS_URL"); url != "" {
		redistest.RemoveNamespaceAtEnd(t, url, a.m.Prefix()) // runs after the manager has closed
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := a.prepare(ctx, seedPath); err != nil {
		t.Fatal(err)
	}
	srv, err := startServer("127.0.0.1:0", a.handler)
	if err != nil {
		t.Fatal(err)
	}
	b := &blog{t: t, app: a, url: srv.URL, c: &http.Client{Timeout: time.Minute}}
	t.Cleanup(func() {
		b.c.CloseIdleConnections()
		if err := srv.Shutdown(); err != nil {
			t.Error(err)
		}
	})
	return b
}

// testWriter sends the libraries' warnings to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

type response struct {
	status int
	cache  string
	body   []byte
}

func (b *blog) do(method, path string, body any) response {
	b.t.Helper()
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			b.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, b.url+path, rd)
	if err != nil {
		b.t.Fatal(err)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return response{status: resp.StatusCode, cache: resp.Header.Get("X-Cache"), body: raw}
}

// get reads path, expecting status 200 and the X-Cache value want, and
// decodes the body into dst.
func (b *blog) get(path, want string, dst any) {
	b.t.Helper()
	b.getStatus(path, http.StatusOK, want, dst)
}

func (b *blog) getStatus(path string, status int, want string, dst any) {
	b.t.Helper()
	r := b.do("GET", path, nil)
	if r.status != status {
		b.t.Fatalf("GET %s: status %d, want %d: %s", path, r.status, status, r.body)
	}
	if r.cache != want {
		b.t.Fatalf("GET %s: X-Cache %q, want %q", path, r.cache, want)
	}
	if dst != nil {
		if err := json.Unmarshal(r.body, dst); err != nil {
			b.t.Fatalf("GET %s: %v", path, err)
		}
	}
}

// warm reads each path twice, the second time from the cache.
func (b *blog) warm(paths ...string) {
	b.t.Helper()
	for _, p := range paths {
		b.do("GET", p, nil)
		b.get(p, "hit", nil)
	}
}

// write sends a write, expecting status, and decodes the reply into dst.
func (b *blog) write(method, path string, body any, status int, dst any) {
	b.t.Helper()
	r := b.do(method, path, body)
	if r.status != status {
		b.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, status, r.body)
	}
	if r.cache != "miss" {
		b.t.Errorf("%s %s: X-Cache %q, want miss", method, path, r.cache)
	}
	if dst != nil {
		if err := json.Unmarshal(r.body, dst); err != nil {
			b.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

func (b *blog) stats() CacheStats {
	b.t.Helper()
	var st CacheStats
	b.get("/debug/cache", "miss", &st)
	return st
}

// seeded returns a seeded post with comments and tags, and another post.
func (b *blog) seeded() (post, other Post) {
	b.t.Helper()
	var pg PostPage
	b.get("/posts", "miss", &pg)
	for _, p := range pg.Posts {
		if len(p.Tags) == 0 {
			continue
		}
		var full Post
		b.get(fmt.Sprintf("/posts/%d", p.ID), "miss", &full)
		if len(full.Comments) > 0 && post.ID == 0 {
			post = full
		} else if other.ID == 0 {
			other = full
		}
	}
	if post.ID == 0 || other.ID == 0 {
		b.t.Fatal("the seed has no two tagged posts, one of them with comments")
	}
	return post, other
}

func hasPost(posts []Post, id uint) bool {
	return slices.ContainsFunc(posts, func(p Post) bool { return p.ID == id })
}

func TestReadsAreCached(t *testing.T) {
	eachDB(t, func(t *testing.T, b *blog) {
		paths := []string{"/posts", "/posts?page=2", "/posts/1", "/posts?tag=caching", "/posts?author=2", "/users/1", "/posts/999"}
		for _, p := range paths {
			first, second := b.do("GET", p, nil), b.do("GET", p, nil)
			if first.cache != "miss" || second.cache != "hit" {
				t.Errorf("GET %s twice: X-Cache %q then %q, want miss then hit", p, first.cache, second.cache)
			}
			if first.status != second.status || !bytes.Equal(first.body, second.body) {
				t.Errorf("GET %s: the cached reply differs:\n%d %s\n%d %s", p, first.status, first.body, second.status, second.body)
			}
		}
		// The HTML page and ?page=1 read the front page's cached list.
		for _, p := range []string{"/", "/posts?page=1"} {
			r := b.do("GET", p, nil)
			if r.status != http.StatusOK || r.cache != "hit" {
				t.Errorf("GET %s: %d X-Cache %q, want 200 hit", p, r.status, r.cache)
			}
		}
		if r := b.do("GET", "/", nil); !strings.Contains(string(r.body), "Caching by dependency") {
			t.Errorf("GET /: the page does not list the seeded posts:\n%s", r.body)
		}

		var pg PostPage
		b.get("/posts?tag=caching", "hit", &pg)
		for _, p := range pg.Posts {
			if !slices.Contains(tagNames(p.Tags), "caching") {
				t.Errorf("/posts?tag=caching lists post %d tagged %v", p.ID, tagNames(p.Tags))
			}
		}
		b.get("/posts?author=2", "hit", &pg)
		for _, p := range pg.Posts {
			if p.AuthorID != 2 || p.Author == nil || p.Author.ID != 2 {
				t.Errorf("/posts?author=2 lists post %d by %d", p.ID, p.AuthorID)
			}
		}

		st := b.stats()
		n := uint64(len(paths))
		// One more miss and set than paths: the user page's nested list.
		if st.Hits != n+5 || st.Misses != n+1 || st.Sets != n+1 || st.Errors != 0 || st.HitRatio != float64(n+5)/float64(2*n+6) {
			t.Errorf("/debug/cache = %+v after %d paths read twice", st, n)
		}
		if st.Invalidations != 0 {
			t.Errorf("/debug/cache counts %d invalidations, and nothing was written", st.Invalidations)
		}
	})
}

func TestCreatePost(t *testing.T) {
	eachDB(t, func(t *testing.T, b *blog) {
		post, other := b.seeded()
		var pg PostPage
		b.get("/posts", "hit", &pg)
		next := fmt.Sprintf("/posts/%d", pg.Posts[0].ID+1)
		b.getStatus(next, http.StatusNotFound, "miss", nil)
		b.getStatus(next, http.StatusNotFound, "hit", nil)
		author := post.AuthorID
		byAuthor := fmt.Sprintf("/posts?author=%d", author)
		user := fmt.Sprintf("/users/%d", author)
		otherPath := fmt.Sprintf("/posts/%d", other.ID)
		b.warm("/posts", byAuthor, user, otherPath)

		var created Post
		b.write("POST", "/posts", PostInput{AuthorID: author, Title: ptr("Fresh"), Body: ptr("New.")}, http.StatusCreated, &created)
		if fmt.Sprintf("/posts/%d", created.ID) != next {
			t.Fatalf("created post %d, want %s", created.ID, next)
		}
		b.get("/posts", "miss", &pg)
		if pg.Posts[0].ID != created.ID || pg.Posts[0].Title != "Fresh" {
			t.Errorf("/posts does not start with the new post: %+v", pg.Posts[0])
		}
		b.get(byAuthor, "miss", &pg)
		if !hasPost(pg.Posts, created.ID) {
			t.Errorf("%s does not list the new post", byAuthor)
		}
		var up UserPage
		b.get(user, "miss", &up)
		if !hasPost(up.Posts, created.ID) {
			t.Errorf("%s does not list the new post", user)
		}
		var p Post
		b.get(next, "miss", &p) // the cached 404 is gone
		if p.Title != "Fresh" || p.Author == nil || p.Author.ID != author {
			t.Errorf("GET %s = %+v", next, p)
		}
		b.get(otherPath, "hit", nil) // another post's page read its own row only

		// A tagged post joins its tag's list.
		b.warm("/posts?tag=fresh")
		b.write("POST", "/posts", PostInput{AuthorID: author, Title: ptr("Tagged"), Tags: []string{"Fresh", "go"}}, http.StatusCreated, &created)
		if got := tagNames(created.Tags); !slices.Equal(got, []string{"fresh", "go"}) {
			t.Errorf("created post has tags %v", got)
		}
		b.get("/posts?tag=fresh", "miss", &pg)
		if pg.Total != 1 || pg.Posts[0].ID != created.ID {
			t.Errorf("/posts?tag=fresh = %+v", pg)
		}
	})
}

func TestEditPost(t *testing.T) {
	eachDB(t, func(t *testing.T, b *blog) {
		post, other := b.seeded()
		tag := post.Tags[0].Name
		postPath, otherPath := fmt.Sprintf("/posts/%d", post.ID), fmt.Sprintf("/posts/%d", other.ID)
		byTag := "/posts?tag=" + tag
		b.warm(postPath, "/posts", byTag, otherPath, "/posts?tag=edited")

		var edited Post
		b.write("PUT", postPath, PostInput{Title: ptr("Edited title")}, http.StatusOK, &edited)
		if edited.Title != "Edited title" || edited.Body != post.Body {
			t.Errorf("PUT returned %+v", edited)
		}
		var p Post
		b.get(postPath, "miss", &p)
		if p.Title != "Edited title" || len(p.Comments) != len(post.Comments) {
			t.Errorf("GET %s after the edit = %q with %d comments", postPath, p.Title, len(p.Comments))
		}
		var pg PostPage
		for _, path := range []string{"/posts", byTag} {
			b.get(path, "miss", &pg)
			i := slices.IndexFunc(pg.Posts, func(q Post) bool { return q.ID == post.ID })
			if i < 0 || pg.Posts[i].Title != "Edited title" {
				t.Errorf("%s does not show the new title", path)
			}
		}
		b.get(otherPath, "hit", nil)

		// Retagging moves the post from one tag's list to the other's.
		b.warm(postPath, byTag)
		b.write("PUT", postPath, PostInput{Tags: []string{"edited"}}, http.StatusOK, &edited)
		b.get(postPath, "miss", &p)
		if got := tagNames(p.Tags); !slices.Equal(got, []string{"edited"}) || p.Title != "Edited title" {
			t.Errorf("GET %s after retagging: %q tagged %v", postPath, p.Title, got)
		}
		b.get(byTag, "miss", &pg)
		if hasPost(pg.Posts, post.ID) {
			t.Errorf("%s still lists post %d", byTag, post.ID)
		}
		b.get("/posts?tag=edited", "miss", &pg)
		if pg.Total != 1 || pg.Posts[0].ID != post.ID {
			t.Errorf("/posts?tag=edited = %+v", pg)
		}
	})
}

func TestDeletePost(t *testing.T) {
	eachDB(t, func(t *testing.T, b *blog) {
		post, _ := b.seeded()
		postPath := fmt.Sprintf("/posts/%d", post.ID)
		user := fmt.Sprintf("/users/%d", post.AuthorID)
		byTag := "/posts?tag=" + post.Tags[0].Name
		b.warm(postPath, "/posts", user, byTag)

		b.write("DELETE", postPath, nil, http.StatusNoContent, nil)
		b.getStatus(postPath, http.StatusNotFound, "miss", nil)
		b.getStatus(postPath, http.StatusNotFound, "hit", nil)
		var pg PostPage
		for _, path := range []string{"/posts", byTag} {
			b.get(path, "miss", &pg)
			if hasPost(pg.Posts, post.ID) {
				t.Errorf("%s still lists the deleted post", path)
			}
		}
		var up UserPage
		b.get(user, "miss", &up)
		if hasPost(up.Posts, post.ID) {
			t.Errorf("%s still lists the deleted post", user)
		}
		// The database deleted its comments with it.
		r := b.do("DELETE", fmt.Sprintf("/comments/%d", post.Comments[0].ID), nil)
		if r.status != http.StatusNotFound {
			t.Errorf("the deleted post's comment: DELETE gave %d, want 404", r.status)
		}
		b.write("DELETE", postPath, nil, http.StatusNotFound, nil)
	})
}

func TestAddAndDeleteComment(t *testing.T) {
	eachDB(t, func(t *testing.T, b *blog) {
		post, _ := b.seeded()
		postPath := fmt.Sprintf("/posts/%d", post.ID)
		b.warm(postPath, "/posts", fmt.Sprintf("/users/%d", post.AuthorID))

		var c Comment
		b.write("POST", postPath+"/comments", CommentInput{AuthorID: 1, Body: "First!"}, http.StatusCreated, &c)
		if c.PostID != post.ID || c.Author == nil || c.Author.ID != 1 {
			t.Errorf("POST comment returned %+v", c)
		}
		var p Post
		b.get(postPath, "miss", &p)
		if len(p.Comments) != len(post.Comments)+1 || p.Comments[len(p.Comments)-1].Body != "First!" {
			t.Errorf("GET %s after the comment: %d comments", postPath, len(p.Comments))
		}
		// Neither the front page nor the user page read comments.
		b.get("/posts", "hit", nil)
		b.get(fmt.Sprintf("/users/%d", post.AuthorID), "hit", nil)

		b.warm(postPath)
		b.write("DELETE", fmt.Sprintf("/comments/%d", c.ID), nil, http.StatusNoContent, nil)
		b.get(postPath, "miss", &p)
		if len(p.Comments) != len(post.Comments) || slices.ContainsFunc(p.Comments, func(x Comment) bool { return x.ID == c.ID }) {
			t.Errorf("GET %s still shows the deleted comment", postPath)
		}
		b.get("/posts", "hit", nil)
		b.write("DELETE", fmt.Sprintf("/comments/%d", c.ID), nil, http.StatusNotFound, nil)

		st := b.stats()
		if st.Invalidations < 2 || st.Errors != 0 {
			t.Errorf("/debug/cache = %+v after two writes", st)
		}
	})
}

func TestBadRequests(t *testing.T) {
	eachDB(t, func(t *testing.T, b *blog) {
		for _, tc := range []struct {
			method, path string
			body         any
			status       int
		}{
			{"GET", "/posts/x", nil, http.StatusBadRequest},
			{"GET", "/posts?page=0", nil, http.StatusBadRequest},
			{"GET", "/posts?author=-1", nil, http.StatusBadRequest},
			{"GET", "/users/999", nil, http.StatusNotFound},
			{"GET", "/nowhere", nil, http.StatusNotFound},
			{"POST", "/posts", PostInput{AuthorID: 1}, http.StatusBadRequest},
			{"POST", "/posts", PostInput{AuthorID: 999, Title: ptr("t")}, http.StatusBadRequest},
			{"POST", "/posts", map[string]any{"title": "t", "extra": 1}, http.StatusBadRequest},
			{"PUT", "/posts/999", PostInput{Title: ptr("t")}, http.StatusNotFound},
			{"PUT", "/posts/1", PostInput{Title: ptr(" ")}, http.StatusBadRequest},
			{"POST", "/posts/999/comments", CommentInput{AuthorID: 1, Body: "b"}, http.StatusNotFound},
			{"POST", "/posts/1/comments", CommentInput{AuthorID: 1}, http.StatusBadRequest},
			{"DELETE", "/comments/999", nil, http.StatusNotFound},
			{"PATCH", "/posts/1", nil, http.StatusMethodNotAllowed},
		} {
			r := b.do(tc.method, tc.path, tc.body)
			if r.status != tc.status || r.cache == "" {
				t.Errorf("%s %s: %d X-Cache %q, want %d and a header: %s", tc.method, tc.path, r.status, r.cache, tc.status, r.body)
			}
		}
		if st := b.stats(); st.Errors != 0 {
			t.Errorf("/debug/cache = %+v", st)
		}
	})
}

func TestDemo(t *testing.T) {
	eachDB(t, func(t *testing.T, b *blog) {
		var out bytes.Buffer
		if err := runDemo(context.Background(), b.url, &out); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), "Every step behaved") {
			t.Errorf("demo output:\n%s", out.String())
		}
	})
}

// TestRunDemo runs the command as `-demo` does: flags, its own database,
// Redis and server, and their shutdown.
func TestRunDemo(t *testing.T) {
	// The command names its manager "blog": a prefix of the test's own
	// keeps a shared Redis apart and lets the test remove what it wrote.
	prefix := fmt.Sprintf("dctest-blogdemo-%d", time.Now().UnixNano())
	t.Setenv("DEP_CACHE_PREFIX", prefix)
	if url := os.Getenv("REDIS_URL"); url != "" {
		redistest.RemoveNamespaceAtEnd(t, url, prefix+":blog")
	}
	var out, errs bytes.Buffer
	if err := run(context.Background(), []string{"-demo", "-seed", seedPath}, &out, &errs); err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errs.String())
	}
	if !strings.Contains(out.String(), "Every step behaved") {
		t.Errorf("stdout:\n%s", out.String())
	}
}

func TestHelp(t *testing.T) {
	var out, errs bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, &out, &errs); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"-addr", "-db", "-cdc", "-store", "-seed", "-demo", "-load", "-duration", "-readers", "-writers", "-write-interval"} {
		if !strings.Contains(errs.String(), f+" ") && !strings.Contains(errs.String(), f+"\n") {
			t.Errorf("-h does not document %s:\n%s", f, errs.String())
		}
	}
	if err := run(context.Background(), []string{"-demo", "-load"}, &out, &errs); err == nil {
		t.Error("-demo -load: no error")
	}
}

// TestDrive runs the load generator briefly against the seeded blog.
func TestDrive(t *testing.T) {
	eachDB(t, func(t *testing.T, b *blog) {
		tg, err := loadTargets(context.Background(), b.app)
		if err != nil {
			t.Fatal(err)
		}
		o := options{duration: 300 * time.Millisecond, readers: 2, writers: 1, interval: 10 * time.Millisecond,
			minReads: 60, minWrites: 2}
		res := drive(context.Background(), b.url, b.app.m, tg, o)
		if res.errors != 0 || res.reads == 0 || res.writes == 0 || res.p50 <= 0 || res.p99 < res.p50 {
			t.Errorf("drive = %+v", res)
		}
		if res.stats.Hits == 0 {
			t.Errorf("no hits in %d reads", res.reads)
		}
	})
}

func ptr[T any](v T) *T { return &v }

// eachDB runs fn on a blog on SQLite, and on PostgreSQL and MySQL when
// DEPCACHE_POSTGRES_DSN and DEPCACHE_MYSQL_DSN name a server, each in a
// database created for the test and dropped after it.
func eachDB(t *testing.T, fn func(t *testing.T, b *blog)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, startBlog(t, "")) })
	if dsn := os.Getenv("DEPCACHE_POSTGRES_DSN"); dsn != "" {
		t.Run("postgres", func(t *testing.T) { fn(t, startBlog(t, scratchDatabase(t, "postgres", dsn))) })
	}
	if dsn := os.Getenv("DEPCACHE_MYSQL_DSN"); dsn != "" {
		t.Run("mysql", func(t *testing.T) { fn(t, startBlog(t, scratchDatabase(t, "mysql", dsn))) })
	}
}

// scratchDatabase creates a database on the server of dsn and returns a
// DSN for it; the database is dropped when the test ends.
func scratchDatabase(t *testing.T, kind, dsn string) string {
	t.Helper()
	name := fmt.Sprintf("depcache_blog_%d", time.Now().UnixNano())
	var (
		dial    gorm.Dialector
		scratch string
		drop    = "DROP DATABASE " + name
	)
	switch kind {
	case "postgres":
		dial = postgres.Open(dsn)
		if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
			u.Path = "/" + name
			scratch = u.String()
		} else {
			scratch = dsn + " dbname=" + name // the last setting wins
		}
		drop += " WITH (FORCE)"
	case "mysql":
		dial = mysql.Open(dsn)
		cfg, err := mysqldriver.ParseDSN(dsn)
		if err != nil {
			t.Fatalf("DEPCACHE_MYSQL_DSN: %v", err)
		}
		cfg.DBName = name
		scratch = cfg.FormatDSN()
	}
	admin, err := gorm.Open(dial, &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatalf("%s: %v", kind, err)
	}
	sqlDB, err := admin.DB()
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.Exec("CREATE DATABASE " + name).Error; err != nil {
		sqlDB.Close()
		t.Fatalf("%s: %v", kind, err)
	}
	t.Cleanup(func() {
		if err := admin.Exec(drop).Error; err != nil {
			t.Errorf("%s: %v", kind, err)
		}
		sqlDB.Close()
	})
	return scratch
}

// A REDIS_URL that nothing answers on is an error before anything is
// seeded: it was found only after every seed write had waited for its
// invalidation to fail (35 s, an error logged per write).
func TestUnreachableRedisURLFailsAtOnce(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // a port nothing listens on
	t.Setenv("REDIS_URL", "redis://"+addr+"/0")
	in, err := openInfra("", "redis")
	if err == nil {
		in.Close()
		t.Fatal("openInfra with an unreachable REDIS_URL: no error")
	}
	if !strings.Contains(err.Error(), "REDIS_URL") || !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name REDIS_URL and %s", err, addr)
	}
	// A REDIS_URL that does not parse is an error too (it panicked: the
	// cleanup after an error closed the nil *infra it returned).
	t.Setenv("REDIS_URL", "redis://127.0.0.1:notaport/0")
	if in, err := openInfra("", "redis"); err == nil || !strings.Contains(err.Error(), "REDIS_URL") {
		if in != nil {
			in.Close()
		}
		t.Errorf("openInfra with a malformed REDIS_URL: %v, want an error naming REDIS_URL", err)
	}
}
