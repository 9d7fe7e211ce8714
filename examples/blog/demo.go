package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// runDemo tours the blog at base over HTTP: each step makes requests,
// prints what X-Cache said and what came back, and checks both. It returns
// an error naming the first step that misbehaved.
func runDemo(ctx context.Context, base string, out io.Writer) error {
	t := &tour{ctx: ctx, base: base, out: out, client: &http.Client{Timeout: 30 * time.Second}}
	defer t.client.CloseIdleConnections()

	var (
		list    PostPage // the front page, before any write
		post    Post     // the newest seeded post: the "other post" of later steps
		tag     string   // a tag of a seeded post
		author  uint     // who writes in the demo
		created Post     // the demo's own post
		comment Comment
	)
	steps := []struct {
		title string
		run   func() error
	}{
		{"Reads are cached: the first runs its queries (miss), the next comes from Redis (hit)", func() error {
			if err := t.missThenHit("/posts", &list, describePage); err != nil {
				return err
			}
			if len(list.Posts) == 0 {
				return fmt.Errorf("the blog has no posts: seed it (-seed)")
			}
			post, author = list.Posts[0], list.Posts[0].AuthorID
			for _, p := range list.Posts {
				if len(p.Tags) > 0 {
					tag = p.Tags[0].Name
					break
				}
			}
			if tag == "" {
				return fmt.Errorf("no post on the front page has a tag")
			}
			if err := t.missThenHit(fmt.Sprintf("/posts/%d", post.ID), new(Post), describePost); err != nil {
				return err
			}
			if err := t.missThenHit("/posts?tag="+tag, new(PostPage), describePage); err != nil {
				return err
			}
			t.note("the user page calls the cached list of the user's posts and inherits its dependencies")
			return t.missThenHit(fmt.Sprintf("/users/%d", author), new(UserPage), describeUser)
		}},
		{"Create a post: every list it belongs to is invalidated, another post's page is not", func() error {
			in := map[string]any{"author_id": author, "title": "Hello from the demo", "body": "Written by -demo."}
			if err := t.write("POST", "/posts", in, http.StatusCreated, &created, describePost); err != nil {
				return err
			}
			var pg PostPage
			if err := t.get("/posts", "miss", &pg, describePage); err != nil {
				return err
			}
			if pg.Total != list.Total+1 || pg.Posts[0].ID != created.ID {
				return fmt.Errorf("the front page does not start with post %d (total %d, was %d)", created.ID, pg.Total, list.Total)
			}
			var up UserPage
			if err := t.get(fmt.Sprintf("/users/%d", author), "miss", &up, describeUser); err != nil {
				return err
			}
			if len(up.Posts) == 0 || up.Posts[0].ID != created.ID {
				return fmt.Errorf("the user page does not list post %d first", created.ID)
			}
			t.note("post %d's page read its own row, not the posts list: still cached", post.ID)
			if err := t.get(fmt.Sprintf("/posts/%d", post.ID), "hit", new(Post), describePost); err != nil {
				return err
			}
			return t.missThenHit(fmt.Sprintf("/posts/%d", created.ID), new(Post), describePost)
		}},
		{"Edit the post's title: its page and the front page are misses with the new title", func() error {
			in := map[string]any{"title": "Hello again from the demo"}
			if err := t.write("PUT", fmt.Sprintf("/posts/%d", created.ID), in, http.StatusOK, &created, describePost); err != nil {
				return err
			}
			var p Post
			if err := t.get(fmt.Sprintf("/posts/%d", created.ID), "miss", &p, describePost); err != nil {
				return err
			}
			if p.Title != "Hello again from the demo" {
				return fmt.Errorf("post %d still has title %q", p.ID, p.Title)
			}
			var pg PostPage
			if err := t.get("/posts", "miss", &pg, describePage); err != nil {
				return err
			}
			if pg.Posts[0].Title != p.Title {
				return fmt.Errorf("the front page shows title %q", pg.Posts[0].Title)
			}
			return t.get(fmt.Sprintf("/posts/%d", post.ID), "hit", new(Post), describePost)
		}},
		{"Tag the post: the tag's list is a miss that now includes it", func() error {
			in := map[string]any{"tags": []string{tag}}
			if err := t.write("PUT", fmt.Sprintf("/posts/%d", created.ID), in, http.StatusOK, &created, describePost); err != nil {
				return err
			}
			var pg PostPage
			if err := t.get("/posts?tag="+tag, "miss", &pg, describePage); err != nil {
				return err
			}
			if !slices.ContainsFunc(pg.Posts, func(p Post) bool { return p.ID == created.ID }) {
				return fmt.Errorf("/posts?tag=%s does not list post %d", tag, created.ID)
			}
			var p Post
			if err := t.get(fmt.Sprintf("/posts/%d", created.ID), "miss", &p, describePost); err != nil {
				return err
			}
			if len(p.Tags) != 1 || p.Tags[0].Name != tag {
				return fmt.Errorf("post %d has tags %v", p.ID, tagNames(p.Tags))
			}
			return nil
		}},
		{"Comment on a post: its page is a miss with the comment; the front page, which read no comments, stays a hit", func() error {
			t.note("cache both first")
			var before Post
			if err := t.get(fmt.Sprintf("/posts/%d", post.ID), "", &before, describePost); err != nil {
				return err
			}
			if err := t.get("/posts", "", new(PostPage), describePage); err != nil {
				return err
			}
			in := map[string]any{"author_id": author, "body": "A comment from the demo."}
			if err := t.write("POST", fmt.Sprintf("/posts/%d/comments", post.ID), in, http.StatusCreated, &comment, describeComment); err != nil {
				return err
			}
			var p Post
			if err := t.get(fmt.Sprintf("/posts/%d", post.ID), "miss", &p, describePost); err != nil {
				return err
			}
			if len(p.Comments) != len(before.Comments)+1 || p.Comments[len(p.Comments)-1].ID != comment.ID {
				return fmt.Errorf("post %d does not show comment %d", post.ID, comment.ID)
			}
			return t.get("/posts", "hit", new(PostPage), describePage)
		}},
		{"Delete the comment: the post's page is a miss without it", func() error {
			if err := t.write("DELETE", fmt.Sprintf("/comments/%d", comment.ID), nil, http.StatusNoContent, nil, nil); err != nil {
				return err
			}
			var p Post
			if err := t.get(fmt.Sprintf("/posts/%d", post.ID), "miss", &p, describePost); err != nil {
				return err
			}
			if slices.ContainsFunc(p.Comments, func(c Comment) bool { return c.ID == comment.ID }) {
				return fmt.Errorf("post %d still shows comment %d", post.ID, comment.ID)
			}
			return t.get("/posts", "hit", new(PostPage), describePage)
		}},
		{"Delete the post: its page becomes a cached 404, and every list drops it", func() error {
			if err := t.write("DELETE", fmt.Sprintf("/posts/%d", created.ID), nil, http.StatusNoContent, nil, nil); err != nil {
				return err
			}
			path := fmt.Sprintf("/posts/%d", created.ID)
			if err := t.expect(path, http.StatusNotFound, "miss", nil, nil); err != nil {
				return err
			}
			t.note("a lookup by key that found nothing is cached too; creating the row would invalidate it")
			if err := t.expect(path, http.StatusNotFound, "hit", nil, nil); err != nil {
				return err
			}
			has := func(pg PostPage) bool {
				return slices.ContainsFunc(pg.Posts, func(p Post) bool { return p.ID == created.ID })
			}
			var pg PostPage
			if err := t.get("/posts", "miss", &pg, describePage); err != nil {
				return err
			}
			if has(pg) || pg.Total != list.Total {
				return fmt.Errorf("the front page still has post %d (total %d)", created.ID, pg.Total)
			}
			if err := t.get("/posts?tag="+tag, "miss", &pg, describePage); err != nil {
				return err
			}
			if has(pg) {
				return fmt.Errorf("/posts?tag=%s still lists post %d", tag, created.ID)
			}
			var up UserPage
			if err := t.get(fmt.Sprintf("/users/%d", author), "miss", &up, describeUser); err != nil {
				return err
			}
			if slices.ContainsFunc(up.Posts, func(p Post) bool { return p.ID == created.ID }) {
				return fmt.Errorf("the user page still lists post %d", created.ID)
			}
			return nil
		}},
		{"The manager's counters", func() error {
			var st CacheStats
			if err := t.expect("/debug/cache", http.StatusOK, "", &st, nil); err != nil {
				return err
			}
			fmt.Fprintf(t.out, "   hits %d, misses %d, sets %d, invalidations %d, errors %d, hit ratio %.2f\n",
				st.Hits, st.Misses, st.Sets, st.Invalidations, st.Errors, st.HitRatio)
			if st.Hits == 0 || st.Misses == 0 || st.Sets == 0 || st.Invalidations == 0 || st.Errors != 0 {
				return fmt.Errorf("unexpected counters %+v", st)
			}
			return nil
		}},
	}
	for i, s := range steps {
		fmt.Fprintf(out, "\n%d. %s\n", i+1, s.title)
		if err := s.run(); err != nil {
			fmt.Fprintf(out, "   FAILED: %v\n", err)
			return fmt.Errorf("demo step %d (%s): %w", i+1, s.title, err)
		}
	}
	fmt.Fprintf(out, "\nEvery step behaved: %d steps.\n", len(steps))
	return nil
}

// tour makes the demo's requests.
type tour struct {
	ctx    context.Context
	base   string
	out    io.Writer
	client *http.Client
}

type reply struct {
	status int
	cache  string
	body   []byte
}

func (t *tour) do(method, path string, body any) (reply, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return reply{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.ctx, method, t.base+path, rd)
	if err != nil {
		return reply{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{status: resp.StatusCode, cache: resp.Header.Get("X-Cache"), body: b}, nil
}

// expect GETs path and checks the status and X-Cache (any when want is
// ""), decodes the body into dst and prints a line.
func (t *tour) expect(path string, status int, want string, dst any, describe func(any) string) error {
	r, err := t.do("GET", path, nil)
	if err != nil {
		return err
	}
	if r.status != status {
		return fmt.Errorf("GET %s: status %d, want %d: %s", path, r.status, status, strings.TrimSpace(string(r.body)))
	}
	if want != "" && r.cache != want {
		return fmt.Errorf("GET %s: X-Cache %q, want %q", path, r.cache, want)
	}
	if dst != nil {
		if err := json.Unmarshal(r.body, dst); err != nil {
			return fmt.Errorf("GET %s: %w", path, err)
		}
	}
	what := http.StatusText(r.status)
	if describe != nil {
		what = describe(dst)
	}
	fmt.Fprintf(t.out, "   GET    %-22s %d %-4s  %s\n", path, r.status, r.cache, what)
	return nil
}

func (t *tour) get(path, want string, dst any, describe func(any) string) error {
	return t.expect(path, http.StatusOK, want, dst, describe)
}

func (t *tour) missThenHit(path string, dst any, describe func(any) string) error {
	if err := t.get(path, "miss", dst, describe); err != nil {
		return err
	}
	return t.get(path, "hit", dst, describe)
}

// write sends a write and checks its status.
func (t *tour) write(method, path string, body any, status int, dst any, describe func(any) string) error {
	r, err := t.do(method, path, body)
	if err != nil {
		return err
	}
	if r.status != status {
		return fmt.Errorf("%s %s: status %d, want %d: %s", method, path, r.status, status, strings.TrimSpace(string(r.body)))
	}
	what := http.StatusText(r.status)
	if dst != nil {
		if err := json.Unmarshal(r.body, dst); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		what = describe(dst)
	}
	fmt.Fprintf(t.out, "   %-6s %-22s %d       %s\n", method, path, r.status, what)
	return nil
}

func (t *tour) note(format string, args ...any) {
	fmt.Fprintf(t.out, "   (%s)\n", fmt.Sprintf(format, args...))
}

func describePost(v any) string {
	p := v.(*Post)
	by := "?"
	if p.Author != nil {
		by = p.Author.Name
	}
	return fmt.Sprintf("post %d %q by %s, %d comments, tags %v", p.ID, p.Title, by, len(p.Comments), tagNames(p.Tags))
}

func describePage(v any) string {
	pg := v.(*PostPage)
	if len(pg.Posts) == 0 {
		return fmt.Sprintf("%d posts", pg.Total)
	}
	return fmt.Sprintf("%d posts, newest: %d %q", pg.Total, pg.Posts[0].ID, pg.Posts[0].Title)
}

func describeUser(v any) string {
	u := v.(*UserPage)
	s := fmt.Sprintf("%s, %d posts", u.User.Name, u.TotalPosts)
	if len(u.Posts) > 0 {
		s += fmt.Sprintf(", latest: %d %q", u.Posts[0].ID, u.Posts[0].Title)
	}
	return s
}

func describeComment(v any) string {
	c := v.(*Comment)
	return fmt.Sprintf("comment %d on post %d", c.ID, c.PostID)
}

func tagNames(tags []Tag) []string {
	names := make([]string, len(tags))
	for i, t := range tags {
		names[i] = t.Name
	}
	return names
}
