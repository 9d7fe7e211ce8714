package gormplugin_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/schema"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

// The suite runs on SQLite always, and on PostgreSQL and MariaDB when
// DEPCACHE_POSTGRES_DSN and DEPCACHE_MYSQL_DSN name a database:
//
//	DEPCACHE_POSTGRES_DSN='host=127.0.0.1 user=postgres dbname=test sslmode=disable'
//	DEPCACHE_MYSQL_DSN='root@tcp(127.0.0.1:3306)/test?parseTime=true'
//
// Every test gets its own tables (a random prefix, dropped at the end), its
// own manager on a fresh memory backend, and the seeded blog below.
// DEPCACHE_TEST_LOG=1 shows what the manager and the plugin log;
// DEPCACHE_CONJUNCTION=1 runs every test with WithConjunctionTags.

func TestMain(m *testing.M) {
	if os.Getenv(childVar) != "" {
		// A child process of TestOutboxProcesses: an application that
		// lived through an outage, checked for stale reads by its parent
		// (the race detector still fails it). Its leaks are the unit
		// tests' to find; on a loaded machine the client pools it closes
		// may outlast goleak's retries and fail the parent for nothing.
		os.Exit(m.Run())
	}
	// PrepareStmt sessions start GORM's statement LRU, whose expiry
	// goroutine GORM never stops.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("gorm.io/gorm/internal/lru.NewLRU[...].func1"))
}

// The blog.

type User struct {
	ID    uint   `gorm:"primaryKey"`
	Name  string `gorm:"size:64"`
	Email string `gorm:"size:128"`
}

type Post struct {
	ID        uint `gorm:"primaryKey"`
	AuthorID  uint
	Author    User
	Title     string    `gorm:"size:200"`
	Body      string    `gorm:"size:2000"`
	Comments  []Comment `gorm:"constraint:OnDelete:CASCADE"`
	Tags      []Tag     `gorm:"many2many:post_tags;constraint:OnDelete:CASCADE"`
	DeletedAt gorm.DeletedAt
}

type Comment struct {
	ID     uint `gorm:"primaryKey"`
	PostID uint
	Body   string `gorm:"size:200"`
}

type Tag struct {
	ID   uint   `gorm:"primaryKey"`
	Name string `gorm:"size:64"`
}

// Vote has a composite primary key, (PostID, UserID) in that order.
type Vote struct {
	PostID uint `gorm:"primaryKey;autoIncrement:false"`
	UserID uint `gorm:"primaryKey;autoIncrement:false"`
	Value  int
}

// Setting has a string primary key and a table name of its own, which the
// naming strategy's prefix does not apply to (GORM uses TableName as is).
type Setting struct {
	Name  string `gorm:"primaryKey;size:64"`
	Value string `gorm:"size:200"`
}

// settingsTable is random per process so that two test runs on one server
// do not share it.
var settingsTable = "kv_settings_" + randomHex(4)

func (Setting) TableName() string { return settingsTable }

// The seed. IDs are assigned by the database in insertion order and checked.
const (
	alice = 1
	bob   = 2
	carol = 3
)

var (
	seedUsers = []User{{Name: "alice", Email: "alice@example.com"}, {Name: "bob", Email: "bob@example.com"}, {Name: "carol", Email: "carol@example.com"}}
	// post i+1 is written by seedAuthors[i]: alice has 1, 2, 3, 6, 7, 10.
	seedAuthors  = []uint{alice, alice, alice, bob, bob, alice, alice, bob, carol, alice}
	seedTitles   = []string{"One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten"}
	seedTags     = []Tag{{Name: "go"}, {Name: "sql"}, {Name: "cache"}} // 1, 2, 3
	seedPostTags = map[uint][]uint{1: {1, 3}, 7: {1, 2}, 8: {2}}
	seedComments = []Comment{{PostID: 7, Body: "first on seven"}, {PostID: 7, Body: "second on seven"}, {PostID: 1, Body: "on one"}, {PostID: 8, Body: "on eight"}}
	seedVotes    = []Vote{{PostID: 7, UserID: bob, Value: 1}, {PostID: 7, UserID: carol, Value: 1}, {PostID: 8, UserID: alice, Value: -1}}
	seedSettings = []Setting{{Name: "site:title", Value: "Blog"}, {Name: "theme", Value: "dark"}}
)

// env is one test's database and cache.
type env struct {
	dialect string // "sqlite", "postgres" or "mysql"
	db      *gorm.DB
	raw     *gorm.DB // same database and tables, no plugin: the truth, and writes the plugin does not see
	m       *depcache.Manager
	ctx     context.Context
}

type dbCase struct {
	dialect string
	dsn     func(t *testing.T) string
	open    func(dsn string) gorm.Dialector
}

func dbCases() []dbCase {
	cases := []dbCase{{
		dialect: "sqlite",
		dsn: func(t *testing.T) string {
			// Foreign keys on, so that ON DELETE CASCADE behaves as on the servers.
			return filepath.Join(t.TempDir(), "blog.db") + "?_txlock=immediate&_busy_timeout=5000&_foreign_keys=1"
		},
		open: sqlite.Open,
	}}
	if dsn := os.Getenv("DEPCACHE_POSTGRES_DSN"); dsn != "" {
		cases = append(cases, dbCase{dialect: "postgres", dsn: func(*testing.T) string { return dsn }, open: postgres.Open})
	}
	if dsn := os.Getenv("DEPCACHE_MYSQL_DSN"); dsn != "" {
		open := mysql.Open
		if os.Getenv("DEPCACHE_MYSQL_NO_RETURNING") != "" {
			// MySQL proper (and MariaDB before 10.5) has no RETURNING:
			// GORM then numbers created rows from LastInsertId.
			open = func(dsn string) gorm.Dialector {
				return mysql.New(mysql.Config{DSN: dsn, DisableWithReturning: true})
			}
		}
		cases = append(cases, dbCase{dialect: "mysql", dsn: func(*testing.T) string { return dsn }, open: open})
	}
	return cases
}

// forEachDB runs fn once per configured database, each in a fresh env.
func forEachDB(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Helper()
	forEachDBWith(t, envSetup{}, fn)
}

// envSetup changes how an env's db is opened and its plugin made.
type envSetup struct {
	gorm   func(*gorm.Config) // applied before the db opens (PrepareStmt…)
	plugin []gormplugin.Option
}

// forEachDBWith is forEachDB with the env's db and plugin set up by setup.
func forEachDBWith(t *testing.T, setup envSetup, fn func(t *testing.T, e *env)) {
	t.Helper()
	for _, c := range dbCases() {
		t.Run(c.dialect, func(t *testing.T) {
			fn(t, newEnv(t, c, setup))
		})
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("DEPCACHE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newEnv(t *testing.T, c dbCase, setup envSetup) *env {
	t.Helper()
	dsn := c.dsn(t)
	prefix := "t" + randomHex(4) + "_"
	cfg := func() *gorm.Config {
		return &gorm.Config{
			NamingStrategy: schema.NamingStrategy{TablePrefix: prefix},
			Logger:         logger.Default.LogMode(logger.Silent),
		}
	}
	backend := memory.New()
	m := depcache.New(backend, depcache.WithName("gormplugin-test"), depcache.WithLogger(testLogger()))
	opts := []gormplugin.Option{gormplugin.WithLogger(testLogger())}
	if conjunctionMode() {
		// The whole suite again with conjunction tags: every freshness
		// check holds with them too.
		opts = append(opts, gormplugin.WithConjunctionTags(0))
	}
	plugin := gormplugin.New(m, append(opts, setup.plugin...)...)

	dbCfg := cfg()
	if setup.gorm != nil {
		setup.gorm(dbCfg)
	}
	db, err := gorm.Open(c.open(dsn), dbCfg)
	if err != nil {
		t.Fatalf("open %s: %v", c.dialect, err)
	}
	raw, err := gorm.Open(c.open(dsn), cfg())
	if err != nil {
		t.Fatalf("open %s: %v", c.dialect, err)
	}
	e := &env{dialect: c.dialect, db: db, raw: raw, m: m, ctx: context.Background()}
	t.Cleanup(func() {
		if c.dialect != "sqlite" { // the SQLite file goes with t.TempDir
			if err := raw.Migrator().DropTable(e.table("post_tags"), &Comment{}, &Vote{}, &Setting{}, &Post{}, &Tag{}, &User{}); err != nil {
				t.Errorf("drop tables: %v", err)
			}
		}
		for _, g := range []*gorm.DB{db, raw} {
			if sqlDB, err := g.DB(); err == nil {
				sqlDB.Close()
			}
		}
		plugin.Close()
		m.Close()
		backend.Close()
	})

	if err := db.Use(plugin); err != nil {
		t.Fatalf("db.Use(gormplugin.New(m)): %v", err)
	}
	if err := db.AutoMigrate(&User{}, &Tag{}, &Post{}, &Comment{}, &Vote{}, &Setting{}); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	e.seed(t)
	return e
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func (e *env) seed(t *testing.T) {
	t.Helper()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("seed %s: %v", what, err)
		}
	}
	users := append([]User(nil), seedUsers...)
	must("users", e.db.Create(&users).Error)
	tags := append([]Tag(nil), seedTags...)
	must("tags", e.db.Create(&tags).Error)
	posts := make([]Post, len(seedAuthors))
	for i := range posts {
		posts[i] = Post{AuthorID: seedAuthors[i], Title: seedTitles[i], Body: "body of " + seedTitles[i]}
	}
	must("posts", e.db.Create(&posts).Error)
	for i, p := range posts {
		if p.ID != uint(i+1) {
			t.Fatalf("seed: post %d got id %d", i+1, p.ID)
		}
	}
	for i, u := range users {
		if u.ID != uint(i+1) {
			t.Fatalf("seed: user %d got id %d", i+1, u.ID)
		}
	}
	for pid, tids := range seedPostTags {
		var ts []Tag
		for _, id := range tids {
			ts = append(ts, Tag{ID: id})
		}
		must("post_tags", e.db.Model(&Post{ID: pid}).Association("Tags").Append(ts))
	}
	comments := append([]Comment(nil), seedComments...)
	must("comments", e.db.Create(&comments).Error)
	votes := append([]Vote(nil), seedVotes...)
	must("votes", e.db.Create(&votes).Error)
	settings := append([]Setting(nil), seedSettings...)
	must("settings", e.db.Create(&settings).Error)

	// The join rows went through Association; check they are all there.
	var n int64
	must("count post_tags", e.raw.Table(e.table("post_tags")).Count(&n).Error)
	if n != 5 {
		t.Fatalf("seed: %d post_tags rows, want 5", n)
	}
}

// table returns the table name GORM uses for a model, or prefixes a bare
// join-table name ("post_tags") the way the naming strategy does.
func (e *env) table(model any) string {
	if name, ok := model.(string); ok {
		return e.db.NamingStrategy.JoinTableName(name)
	}
	stmt := &gorm.Statement{DB: e.db}
	if err := stmt.Parse(model); err != nil {
		panic(err)
	}
	return stmt.Schema.Table
}

// Transactions: a memoized function runs its queries through the *gorm.DB
// the caller put in its ctx, else through the env's db.

type txKey struct{}

func withTx(ctx context.Context, tx *gorm.DB) context.Context {
	return context.WithValue(ctx, txKey{}, tx)
}

// conn is what a cached computation queries through: the transaction in ctx
// if there is one, else db; either way with ctx, so the plugin sees the
// computation.
func conn(ctx context.Context, db *gorm.DB) *gorm.DB {
	if tx, ok := ctx.Value(txKey{}).(*gorm.DB); ok {
		db = tx
	}
	return db.WithContext(ctx)
}

// Assertions.

// asJSON is how results are compared: a cache round trip keeps every
// exported field but not, for instance, the *time.Location of a time.
func asJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %T: %v", v, err)
	}
	return string(b)
}

func sameJSON(t *testing.T, what string, got, want any) {
	t.Helper()
	if g, w := asJSON(t, got), asJSON(t, want); g != w {
		t.Errorf("%s:\n got  %s\n want %s", what, g, w)
	}
}

func exists(t *testing.T, e *env, key string) bool {
	t.Helper()
	if key == "" {
		t.Fatal("no cache key captured: the cached function never ran")
	}
	ok, err := e.m.Exists(e.ctx, key)
	if err != nil {
		t.Fatalf("Exists(%q): %v", key, err)
	}
	return ok
}

func noErr(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// conjunctionMode reports DEPCACHE_CONJUNCTION: the suite runs with
// WithConjunctionTags, and conjunctive lists depend on conjunction tags
// instead of the list tag.
func conjunctionMode() bool { return os.Getenv("DEPCACHE_CONJUNCTION") != "" }
