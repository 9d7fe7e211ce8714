package gormplugin_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

// The queries the blog caches. Each takes the *gorm.DB to run on: the
// cached functions pass conn(ctx, e.db), the truth passes e.raw (no plugin).

// pageQuery is a page of an author's posts with everything a page shows.
func pageQuery(db *gorm.DB, authorID uint) ([]Post, error) {
	var posts []Post
	err := db.Preload("Author").
		Preload("Tags", byID).
		Preload("Comments", byID).
		Where("author_id = ?", authorID).Order("id").Limit(10).Find(&posts).Error
	return posts, err
}

func byID(db *gorm.DB) *gorm.DB { return db.Order("id") }

// lookupPost is First(&post, id); a post that is not there is a zero Post.
func lookupPost(db *gorm.DB, id uint) (Post, error) {
	var p Post
	err := db.First(&p, id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Post{}, nil
	}
	return p, err
}

func lookupUser(db *gorm.DB, id uint) (User, error) {
	var u User
	err := db.First(&u, id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return User{}, nil
	}
	return u, err
}

func lookupVote(db *gorm.DB, postID, userID uint) (Vote, error) {
	v := Vote{PostID: postID, UserID: userID}
	err := db.First(&v).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Vote{}, nil
	}
	return v, err
}

func lookupSetting(db *gorm.DB, name string) (Setting, error) {
	s := Setting{Name: name}
	err := db.First(&s).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Setting{}, nil
	}
	return s, err
}

// blog holds memoized versions of the queries above on one env, and counts
// how often each cached function actually ran, per argument.
type blog struct {
	e *env

	mu    sync.Mutex
	calls map[string]int    // "page/1" → runs
	keys  map[string]string // "page/1" → cache key

	page func(context.Context, uint) ([]Post, error)
	post func(context.Context, uint) (Post, error)
	user func(context.Context, uint) (User, error)
}

func newBlog(e *env) *blog {
	b := &blog{e: e, calls: map[string]int{}, keys: map[string]string{}}
	b.page = depcache.Memoize(func(ctx context.Context, author uint) ([]Post, error) {
		b.ran(ctx, fmt.Sprint("page/", author))
		return pageQuery(conn(ctx, e.db), author)
	}, depcache.Using(e.m), depcache.KeyName("blog.page"))
	b.post = depcache.Memoize(func(ctx context.Context, id uint) (Post, error) {
		b.ran(ctx, fmt.Sprint("post/", id))
		return lookupPost(conn(ctx, e.db), id)
	}, depcache.Using(e.m), depcache.KeyName("blog.post"))
	b.user = depcache.Memoize(func(ctx context.Context, id uint) (User, error) {
		b.ran(ctx, fmt.Sprint("user/", id))
		return lookupUser(conn(ctx, e.db), id)
	}, depcache.Using(e.m), depcache.KeyName("blog.user"))
	return b
}

func (b *blog) ran(ctx context.Context, what string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls[what]++
	b.keys[what] = depcache.CurrentKey(ctx)
}

func (b *blog) runs(what string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[what]
}

func (b *blog) key(what string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.keys[what]
}

// warm fills the page of alice's posts, the lookups of posts 6, 7, 8 and of
// user 2, and checks that a second call of each is served from the cache.
func (b *blog) warm(t *testing.T) {
	t.Helper()
	ctx := b.e.ctx
	for range 2 {
		_, err := b.page(ctx, alice)
		noErr(t, "page", err)
		for _, id := range []uint{6, 7, 8} {
			_, err := b.post(ctx, id)
			noErr(t, "post", err)
		}
		_, err = b.user(ctx, bob)
		noErr(t, "user", err)
	}
	for _, what := range []string{"page/1", "post/6", "post/7", "post/8", "user/2"} {
		if n := b.runs(what); n != 1 {
			t.Fatalf("%s ran %d times in two calls; want 1 (the second call should hit the cache)", what, n)
		}
	}
}

// truePage is alice's page read without the plugin.
func (b *blog) truePage(t *testing.T) []Post {
	t.Helper()
	p, err := pageQuery(b.e.raw, alice)
	noErr(t, "page (truth)", err)
	return p
}

// checkFresh checks that every cached function warm filled now returns what
// the database holds.
func (b *blog) checkFresh(t *testing.T) {
	t.Helper()
	ctx := b.e.ctx
	got, err := b.page(ctx, alice)
	noErr(t, "page", err)
	sameJSON(t, "cached page", got, b.truePage(t))
	for _, id := range []uint{6, 7, 8} {
		got, err := b.post(ctx, id)
		noErr(t, "post", err)
		want, err := lookupPost(b.e.raw, id)
		noErr(t, "post (truth)", err)
		sameJSON(t, fmt.Sprintf("cached First(&post, %d)", id), got, want)
	}
	u, err := b.user(ctx, bob)
	noErr(t, "user", err)
	wantU, err := lookupUser(b.e.raw, bob)
	noErr(t, "user (truth)", err)
	sameJSON(t, "cached First(&user, 2)", u, wantU)
}

// probe fills one cached computation that runs read, then reports whether
// invalidating tag removed it. The entry is deleted afterwards, so probes
// do not see each other.
func probe(t *testing.T, e *env, read func(db *gorm.DB) error, tag string) bool {
	t.Helper()
	var key string
	_, err := depcache.Fetch(e.ctx, e.m, "probe", func(ctx context.Context) (int, error) {
		key = depcache.CurrentKey(ctx)
		return 0, read(e.db.WithContext(ctx))
	})
	noErr(t, "probe read", err)
	if !exists(t, e, key) {
		t.Fatalf("the read was not cached (so it has no tags to check)")
	}
	n, err := e.m.InvalidateDependency(e.ctx, tag)
	noErr(t, "InvalidateDependency", err)
	still := exists(t, e, key)
	if n > 0 == still {
		t.Fatalf("InvalidateDependency(%q) counted %d but the entry exists=%v", tag, n, still)
	}
	if _, err := e.m.Delete(e.ctx, key); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	return n > 0
}

// expectTags checks, tag by tag, whether the entry that read fills depends
// on it.
func expectTags(t *testing.T, e *env, what string, read func(db *gorm.DB) error, want map[string]bool) {
	t.Helper()
	tags := make([]string, 0, len(want))
	for tag := range want {
		tags = append(tags, tag)
	}
	slices.Sort(tags)
	for _, tag := range tags {
		if got := probe(t, e, read, tag); got != want[tag] {
			if want[tag] {
				t.Errorf("%s: invalidating %q removed nothing; the read depends on it", what, tag)
			} else {
				t.Errorf("%s: invalidating %q removed the entry; the read does not depend on it", what, tag)
			}
		}
	}
}

// A page of posts is served from the cache until something on it changes.
func TestBlogPageServedFromCache(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		b := newBlog(e)
		before := e.m.Stats()
		for range 3 {
			got, err := b.page(e.ctx, alice)
			noErr(t, "page", err)
			sameJSON(t, "page", got, b.truePage(t))
		}
		if n := b.runs("page/1"); n != 1 {
			t.Errorf("page ran %d times in 3 calls, want 1", n)
		}
		after := e.m.Stats()
		if after.Hits-before.Hits != 2 || after.Sets-before.Sets != 1 {
			t.Errorf("stats: %d hits, %d sets; want 2 hits, 1 set", after.Hits-before.Hits, after.Sets-before.Sets)
		}
		got, _ := b.page(e.ctx, alice)
		if len(got) != 6 || got[0].Author.Name != "alice" || len(got[0].Tags) != 2 || len(got[4].Comments) != 2 {
			t.Errorf("the cached page lost its preloads: %s", asJSON(t, got))
		}
	})
}

// A write to post 7 refreshes what depends on post 7 and leaves a cached
// First(&post, 8) and First(&user, 2) alone.
func TestWriteToOneRowLeavesOtherRowLookups(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		b := newBlog(e)
		b.warm(t)
		noErr(t, "update", e.db.Model(&Post{ID: 7}).Update("title", "Seven, revised").Error)
		b.checkFresh(t)
		if p, _ := b.post(e.ctx, 7); p.Title != "Seven, revised" {
			t.Errorf("First(&post, 7) = %q after the update", p.Title)
		}
		for what, want := range map[string]int{"post/7": 2, "page/1": 2, "post/8": 1, "post/6": 1, "user/2": 1} {
			if got := b.runs(what); got != want {
				t.Errorf("%s ran %d times, want %d", what, got, want)
			}
		}
	})
}

// The tags a lookup by primary key depends on: its row and its table, not
// the list tag (so that inserts and writes to other rows leave it alone).
func TestTagsPrimaryKeyLookup(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		users, posts := e.table(&User{}), e.table(&Post{})
		want := map[string]bool{
			gormplugin.RowTag(users, bob):   true,
			gormplugin.TableTag(users):      true,
			gormplugin.ListTag(users):       false,
			gormplugin.RowTag(users, alice): false,
			gormplugin.RowTag("users", bob): false, // the table name carries the naming strategy's prefix
		}
		expectTags(t, e, "First(&u, 2)", func(db *gorm.DB) error {
			var u User
			return db.First(&u, bob).Error
		}, want)
		expectTags(t, e, "First(&User{ID: 2})", func(db *gorm.DB) error {
			return db.First(&User{ID: bob}).Error
		}, want)
		expectTags(t, e, "First(&post, 8) on a soft-deletable model", func(db *gorm.DB) error {
			var p Post
			return db.First(&p, 8).Error
		}, map[string]bool{
			gormplugin.RowTag(posts, 8): true,
			gormplugin.TableTag(posts):  true,
			gormplugin.ListTag(posts):   false,
			gormplugin.RowTag(posts, 7): false,
		})
		expectTags(t, e, `First(&post, "007"): the key is converted to the field's type`, func(db *gorm.DB) error {
			var p Post
			return db.First(&p, "007").Error
		}, map[string]bool{
			gormplugin.RowTag(posts, 7):     true,
			gormplugin.RowTag(posts, "007"): false,
			gormplugin.ListTag(posts):       false,
		})
		expectTags(t, e, "First(&u, 99), not found", func(db *gorm.DB) error {
			var u User
			if err := db.First(&u, 99).Error; !errors.Is(err, gorm.ErrRecordNotFound) {
				return fmt.Errorf("First(&u, 99) = %v, want ErrRecordNotFound", err)
			}
			return nil
		}, map[string]bool{
			gormplugin.RowTag(users, 99): true,
			gormplugin.TableTag(users):   true,
		})
	})
}

func TestTagsCompositeKey(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		votes := e.table(&Vote{})
		expectTags(t, e, "First(&Vote{PostID: 7, UserID: 2})", func(db *gorm.DB) error {
			return db.First(&Vote{PostID: 7, UserID: bob}).Error
		}, map[string]bool{
			gormplugin.RowTag(votes, 7, bob):   true, // primary-key order: post_id, user_id
			gormplugin.RowTag(votes, bob, 7):   false,
			gormplugin.RowTag(votes, 7, carol): false,
			gormplugin.TableTag(votes):         true,
			gormplugin.ListTag(votes):          false,
		})
		expectTags(t, e, "votes on post 7", func(db *gorm.DB) error {
			var vs []Vote
			return db.Where("post_id = ?", 7).Find(&vs).Error
		}, map[string]bool{
			gormplugin.ListTag(votes):          !conjunctionMode(),
			gormplugin.RowTag(votes, 7, bob):   true,
			gormplugin.RowTag(votes, 7, carol): true,
			gormplugin.RowTag(votes, 8, alice): false,
		})
	})
}

// Setting's table is named by its TableName method (no prefix) and keyed
// by a string that needs escaping in a tag.
func TestTagsCustomTableNameAndStringKey(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		if got := e.table(&Setting{}); got != settingsTable {
			t.Fatalf("Setting's table is %q, want %q", got, settingsTable)
		}
		expectTags(t, e, `First(&Setting{Name: "site:title"})`, func(db *gorm.DB) error {
			return db.First(&Setting{Name: "site:title"}).Error
		}, map[string]bool{
			gormplugin.RowTag(settingsTable, "site:title"): true,
			gormplugin.RowTag(settingsTable, "theme"):      false,
			gormplugin.TableTag(settingsTable):             true,
			// MariaDB compares strings case- and trailing-space-insensitively,
			// so there a string key lookup also depends on the list tag.
			gormplugin.ListTag(settingsTable): e.dialect == "mysql",
		})
		expectTags(t, e, "all settings", func(db *gorm.DB) error {
			var all []Setting
			return db.Order("name").Find(&all).Error
		}, map[string]bool{
			gormplugin.ListTag(settingsTable):              !conjunctionMode(),
			gormplugin.RowTag(settingsTable, "site:title"): true,
			gormplugin.RowTag(settingsTable, "theme"):      true,
		})
	})
}

// A query that is not a primary-key lookup depends on the list tag, the
// table tag and the row tag of every row it returned.
func TestTagsListQuery(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		users, posts := e.table(&User{}), e.table(&Post{})
		expectTags(t, e, "posts by alice", func(db *gorm.DB) error {
			var ps []Post
			return db.Where("author_id = ?", alice).Find(&ps).Error
		}, map[string]bool{
			gormplugin.ListTag(posts):   !conjunctionMode(),
			gormplugin.TableTag(posts):  true,
			gormplugin.RowTag(posts, 7): true,
			gormplugin.RowTag(posts, 8): false,
			gormplugin.ListTag(users):   false,
			gormplugin.TableTag(users):  false,
		})
		for _, c := range []struct {
			name string
			read func(db *gorm.DB) error
		}{
			{"Count", func(db *gorm.DB) error {
				var n int64
				return db.Model(&Post{}).Where("author_id = ?", alice).Count(&n).Error
			}},
			{"Pluck", func(db *gorm.DB) error {
				var titles []string
				return db.Model(&Post{}).Where("author_id = ?", alice).Pluck("title", &titles).Error
			}},
		} {
			expectTags(t, e, c.name, c.read, map[string]bool{
				gormplugin.ListTag(posts):  true,
				gormplugin.TableTag(posts): true,
				gormplugin.ListTag(users):  false,
			})
		}
	})
}

// Preloads and joins depend on the list and table tags of every table they
// read, and preloads on the rows they loaded.
func TestTagsPreloadAndJoins(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		users, posts, tags, comments := e.table(&User{}), e.table(&Post{}), e.table(&Tag{}), e.table(&Comment{})
		postTags, votes := e.table("post_tags"), e.table(&Vote{})
		expectTags(t, e, "the page (Preload Author, Tags, Comments)", func(db *gorm.DB) error {
			_, err := pageQuery(db, alice)
			return err
		}, map[string]bool{
			gormplugin.ListTag(posts):       !conjunctionMode(),
			gormplugin.RowTag(posts, 7):     true,
			gormplugin.ListTag(users):       !conjunctionMode(),
			gormplugin.TableTag(users):      true,
			gormplugin.RowTag(users, alice): true,
			gormplugin.ListTag(postTags):    !conjunctionMode(),
			gormplugin.TableTag(postTags):   true,
			gormplugin.ListTag(tags):        !conjunctionMode(),
			gormplugin.RowTag(tags, 2):      true, // post 7's "sql"
			gormplugin.ListTag(comments):    !conjunctionMode(),
			gormplugin.RowTag(comments, 1):  true,
			gormplugin.ListTag(votes):       false,
			gormplugin.TableTag(votes):      false,
		})
		expectTags(t, e, `Joins("Author")`, func(db *gorm.DB) error {
			var ps []Post
			return db.Joins("Author").Where(posts+".author_id = ?", alice).Find(&ps).Error
		}, map[string]bool{
			gormplugin.ListTag(posts):  true,
			gormplugin.TableTag(posts): true,
			gormplugin.ListTag(users):  true,
			gormplugin.TableTag(users): true,
			gormplugin.ListTag(tags):   false,
		})
	})
}

// Raw selects depend on the list and table tags of each table they name.
func TestTagsRaw(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		users, posts, comments := e.table(&User{}), e.table(&Post{}), e.table(&Comment{})
		want := map[string]bool{
			gormplugin.ListTag(posts):     true,
			gormplugin.TableTag(posts):    true,
			gormplugin.ListTag(users):     true,
			gormplugin.TableTag(users):    true,
			gormplugin.ListTag(comments):  false,
			gormplugin.TableTag(comments): false,
		}
		q := "SELECT p.* FROM " + posts + " p JOIN " + users + " u ON u.id = p.author_id WHERE u.name = ? ORDER BY p.id"
		expectTags(t, e, "Raw(...).Scan", func(db *gorm.DB) error {
			var titles []string
			return db.Raw("SELECT p.title FROM "+posts+" p JOIN "+users+" u ON u.id = p.author_id WHERE u.name = ?", "alice").Scan(&titles).Error
		}, want)
		expectTags(t, e, "Raw(...).Find", func(db *gorm.DB) error {
			var ps []Post
			return db.Raw(q, "alice").Find(&ps).Error
		}, want)
	})
}

// Reads that join or run raw SQL are fresh after a write to any table they
// read, whether or not it is the main one.
func TestJoinsAndRawFreshAfterWrites(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		users, posts := e.table(&User{}), e.table(&Post{})
		type row struct {
			Title string
			Name  string
		}
		joined := func(db *gorm.DB) ([]Post, error) {
			var ps []Post
			err := db.Joins("Author").Where(posts+".author_id = ?", alice).Order(posts + ".id").Find(&ps).Error
			return ps, err
		}
		rawRows := func(db *gorm.DB) ([]row, error) {
			var rs []row
			err := db.Raw("SELECT p.title, u.name FROM " + posts + " p JOIN " + users + " u ON u.id = p.author_id WHERE p.deleted_at IS NULL ORDER BY p.id").Scan(&rs).Error
			return rs, err
		}
		runs := map[string]int{}
		cachedJoined := depcache.Memoize0(func(ctx context.Context) ([]Post, error) {
			runs["joined"]++
			return joined(conn(ctx, e.db))
		}, depcache.Using(e.m), depcache.KeyName("joined"))
		cachedRaw := depcache.Memoize0(func(ctx context.Context) ([]row, error) {
			runs["raw"]++
			return rawRows(conn(ctx, e.db))
		}, depcache.Using(e.m), depcache.KeyName("raw"))
		check := func(step string, wantRuns int) {
			t.Helper()
			for range 2 {
				gotJ, err := cachedJoined(e.ctx)
				noErr(t, "joined", err)
				wantJ, err := joined(e.raw)
				noErr(t, "joined (truth)", err)
				sameJSON(t, step+": Joins", gotJ, wantJ)
				gotR, err := cachedRaw(e.ctx)
				noErr(t, "raw", err)
				wantR, err := rawRows(e.raw)
				noErr(t, "raw (truth)", err)
				sameJSON(t, step+": Raw", gotR, wantR)
			}
			if runs["joined"] != wantRuns || runs["raw"] != wantRuns {
				t.Errorf("%s: Joins ran %d times, Raw %d; want %d each", step, runs["joined"], runs["raw"], wantRuns)
			}
		}
		check("first", 1)
		noErr(t, "rename alice", e.db.Model(&User{ID: alice}).Update("name", "alicia").Error)
		check("after a write to the joined table", 2)
		noErr(t, "create post", e.db.Create(&Post{AuthorID: alice, Title: "Eleven"}).Error)
		check("after an insert into the main table", 3)
	})
}

// A raw read whose tables the plugin cannot name is not cached.
func TestRawUnparseableNotCached(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		posts := e.table(&Post{})
		// Each database's JSON table function: the tables are in an argument.
		var q string
		switch e.dialect {
		case "sqlite":
			q = "SELECT count(*) FROM json_each(?) j JOIN " + posts + " p ON p.id = j.value"
		case "postgres":
			q = "SELECT count(*) FROM json_array_elements_text(?::json) j JOIN " + posts + " p ON p.id = j.value::int"
		case "mysql":
			q = "SELECT count(*) FROM JSON_TABLE(?, '$[*]' COLUMNS (v INT PATH '$')) j JOIN " + posts + " p ON p.id = j.v"
		}
		count := func(db *gorm.DB) (int64, error) {
			var n int64
			err := db.Raw(q, "[1, 7, 8]").Scan(&n).Error
			return n, err
		}
		runs := 0
		cached := depcache.Memoize0(func(ctx context.Context) (int64, error) {
			runs++
			return count(conn(ctx, e.db))
		}, depcache.Using(e.m), depcache.KeyName("json"))
		sets := e.m.Stats().Sets
		for i := range 2 {
			n, err := cached(e.ctx)
			noErr(t, "cached count", err)
			if n != 3 {
				t.Fatalf("count = %d, want 3", n)
			}
			if runs != i+1 {
				t.Errorf("call %d: the function ran %d times; a read the plugin cannot parse must not be cached", i+1, runs)
			}
		}
		if d := e.m.Stats().Sets - sets; d != 0 {
			t.Errorf("%d entries stored for an unparseable raw read", d)
		}
	})
}

// Count and Pluck through a cached function follow inserts, deletes and
// updates.
func TestCountAndPluckFresh(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		count := func(db *gorm.DB) (int64, error) {
			var n int64
			err := db.Model(&Post{}).Where("author_id = ?", alice).Count(&n).Error
			return n, err
		}
		pluck := func(db *gorm.DB) ([]string, error) {
			var titles []string
			err := db.Model(&Post{}).Where("author_id = ?", alice).Order("id").Pluck("title", &titles).Error
			return titles, err
		}
		cachedCount := depcache.Memoize0(func(ctx context.Context) (int64, error) { return count(conn(ctx, e.db)) },
			depcache.Using(e.m), depcache.KeyName("count"))
		cachedPluck := depcache.Memoize0(func(ctx context.Context) ([]string, error) { return pluck(conn(ctx, e.db)) },
			depcache.Using(e.m), depcache.KeyName("pluck"))
		check := func(step string, wantCount int64) {
			t.Helper()
			n, err := cachedCount(e.ctx)
			noErr(t, "count", err)
			if n != wantCount {
				t.Errorf("%s: cached count = %d, want %d", step, n, wantCount)
			}
			got, err := cachedPluck(e.ctx)
			noErr(t, "pluck", err)
			want, err := pluck(e.raw)
			noErr(t, "pluck (truth)", err)
			sameJSON(t, step+": cached Pluck", got, want)
		}
		check("seed", 6)
		noErr(t, "create", e.db.Create(&Post{AuthorID: alice, Title: "Eleven"}).Error)
		check("after create", 7)
		noErr(t, "soft delete", e.db.Delete(&Post{}, 2).Error)
		check("after soft delete", 6)
		noErr(t, "update", e.db.Model(&Post{ID: 3}).Update("title", "Three!").Error)
		check("after update", 6)
		noErr(t, "unscoped delete", e.db.Unscoped().Delete(&Post{ID: 10}).Error)
		check("after unscoped delete", 5)
	})
}

// Cached() on a query: a hit fills the destination as the query would,
// RowsAffected included.
func TestCachedScopeHit(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		cached := func() *gorm.DB { return e.db.Scopes(gormplugin.Cached(time.Minute)) }
		var first []Post
		r := cached().Where("author_id = ?", alice).Order("id").Find(&first)
		noErr(t, "first Find", r.Error)
		if r.RowsAffected != 6 || len(first) != 6 {
			t.Fatalf("first Find: RowsAffected %d, %d rows; want 6", r.RowsAffected, len(first))
		}
		var one Post
		r1 := cached().First(&one, 7)
		noErr(t, "first First", r1.Error)

		// Change the database behind the plugin's back: a hit still shows
		// the old title, which proves it came from the cache.
		noErr(t, "out-of-band update", e.raw.Model(&Post{ID: 7}).Update("title", "changed behind the cache").Error)
		hits := e.m.Stats().Hits

		var second []Post
		r = cached().Where("author_id = ?", alice).Order("id").Find(&second)
		noErr(t, "second Find", r.Error)
		if r.RowsAffected != 6 {
			t.Errorf("hit: RowsAffected = %d, want 6", r.RowsAffected)
		}
		sameJSON(t, "hit", second, first)
		var again Post
		r1 = cached().First(&again, 7)
		noErr(t, "second First", r1.Error)
		if r1.RowsAffected != 1 {
			t.Errorf("First hit: RowsAffected = %d, want 1", r1.RowsAffected)
		}
		sameJSON(t, "First hit", again, one)
		if d := e.m.Stats().Hits - hits; d != 2 {
			t.Errorf("%d hits, want 2", d)
		}

		// A write through GORM makes both fresh.
		noErr(t, "update", e.db.Model(&Post{ID: 7}).Update("title", "Seven, revised").Error)
		var third []Post
		noErr(t, "third Find", cached().Where("author_id = ?", alice).Order("id").Find(&third).Error)
		var want []Post
		noErr(t, "truth", e.raw.Where("author_id = ?", alice).Order("id").Find(&want).Error)
		sameJSON(t, "after the update", third, want)
		var fresh Post
		noErr(t, "third First", cached().First(&fresh, 7).Error)
		if fresh.Title != "Seven, revised" {
			t.Errorf("cached First(&post, 7) after the update: %q", fresh.Title)
		}
	})
}

// Cached() with Preload: a hit carries the associations.
func TestCachedScopePreload(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		query := func(db *gorm.DB) ([]Post, *gorm.DB) {
			var ps []Post
			r := db.Preload("Author").Preload("Tags").Where("author_id = ?", alice).Order("id").Find(&ps)
			return ps, r
		}
		read := func() ([]Post, *gorm.DB) { return query(e.db.Scopes(gormplugin.Cached(time.Minute))) }
		want := func() []Post {
			ps, r := query(e.raw)
			noErr(t, "truth", r.Error)
			return ps
		}
		first, r := read()
		noErr(t, "fill", r.Error)
		sameJSON(t, "fill", first, want())
		hits := e.m.Stats().Hits
		second, r := read()
		noErr(t, "hit", r.Error)
		if e.m.Stats().Hits-hits != 1 {
			t.Errorf("the second read was not a hit")
		}
		if r.RowsAffected != 6 {
			t.Errorf("hit: RowsAffected = %d, want 6", r.RowsAffected)
		}
		sameJSON(t, "hit", second, want())

		noErr(t, "rename", e.db.Model(&User{ID: alice}).Update("name", "alicia").Error)
		third, r := read()
		noErr(t, "after rename", r.Error)
		sameJSON(t, "after renaming the author", third, want())
		noErr(t, "untag", e.db.Model(&Post{ID: 7}).Association("Tags").Clear())
		fourth, r := read()
		noErr(t, "after untag", r.Error)
		sameJSON(t, "after clearing post 7's tags", fourth, want())
	})
}

// Two Cached queries that differ only in a preload's conditions do not
// share an entry.
func TestCachedScopePreloadConditionsInKey(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		read := func(body string) Post {
			t.Helper()
			var p Post
			noErr(t, "Cached First", e.db.Scopes(gormplugin.Cached(time.Minute)).
				Preload("Comments", "body = ?", body).First(&p, 7).Error)
			return p
		}
		for range 2 {
			for _, body := range []string{"first on seven", "second on seven"} {
				p := read(body)
				if len(p.Comments) != 1 || p.Comments[0].Body != body {
					t.Errorf("preload of comments with body %q: %s", body, asJSON(t, p.Comments))
				}
			}
		}
	})
}

// First on a cached "not found" says gorm.ErrRecordNotFound again.
func TestCachedScopeFirstNotFound(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		first := func() *gorm.DB {
			var p Post
			return e.db.Scopes(gormplugin.Cached(time.Minute)).Where("title = ?", "no such post").First(&p)
		}
		r := first()
		if !errors.Is(r.Error, gorm.ErrRecordNotFound) {
			t.Fatalf("miss: err = %v, want ErrRecordNotFound", r.Error)
		}
		hits := e.m.Stats().Hits
		r = first()
		if !errors.Is(r.Error, gorm.ErrRecordNotFound) {
			t.Errorf("hit: err = %v, want ErrRecordNotFound", r.Error)
		}
		if r.RowsAffected != 0 {
			t.Errorf("hit: RowsAffected = %d, want 0", r.RowsAffected)
		}
		if e.m.Stats().Hits-hits != 1 {
			t.Errorf("the not-found result was not served from the cache")
		}
		noErr(t, "create", e.db.Create(&Post{AuthorID: bob, Title: "no such post"}).Error)
		if r := first(); r.Error != nil {
			t.Errorf("after the post was created: err = %v", r.Error)
		}
	})
}

// A cached "not found" by primary key depends on its row tag, so creating
// the row ends it.
func TestCachedScopeNotFoundByPKDiesOnCreate(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		first := func() (User, error) {
			var u User
			err := e.db.Scopes(gormplugin.Cached(time.Minute)).First(&u, 99).Error
			return u, err
		}
		sets := e.m.Stats().Sets
		if _, err := first(); !errors.Is(err, gorm.ErrRecordNotFound) {
			t.Fatalf("First(&u, 99) = %v, want ErrRecordNotFound", err)
		}
		if e.m.Stats().Sets == sets {
			t.Fatalf("the not-found result was not stored")
		}
		if _, err := first(); !errors.Is(err, gorm.ErrRecordNotFound) {
			t.Fatalf("cached First(&u, 99) = %v, want ErrRecordNotFound", err)
		}
		noErr(t, "create", e.db.Create(&User{ID: 99, Name: "zed"}).Error)
		u, err := first()
		if err != nil || u.Name != "zed" {
			t.Errorf("after creating user 99: %+v, %v", u, err)
		}
	})
}

// Cached() needs a result it can store: with Scan, whose rows GORM reads
// after the callbacks have run, it is an error rather than a silent no-op.
func TestCachedScopeScanIsError(t *testing.T) {
	forEachDB(t, func(t *testing.T, e *env) {
		var titles []string
		err := e.db.Scopes(gormplugin.Cached(time.Minute)).Table(e.table(&Post{})).Select("title").Scan(&titles).Error
		if err == nil {
			t.Errorf("Cached() with Scan: no error (got %d titles)", len(titles))
		}
	})
}
