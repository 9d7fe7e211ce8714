package gormplugin_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
)

type smokeUser struct {
	ID   int
	Name string
}

func smokeDB(t *testing.T, opts ...depcache.Option) (*gorm.DB, *depcache.Manager) {
	db, err := gorm.Open(sqlite.Open(filepath.Join(t.TempDir(), "s.db")+"?_txlock=immediate"), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	m := depcache.New(memory.New(), append([]depcache.Option{depcache.WithName("smoke")}, opts...)...)
	if err := db.Use(gormplugin.New(m)); err != nil {
		t.Fatal(err)
	}
	db.AutoMigrate(&smokeUser{})
	db.Create(&[]smokeUser{{ID: 1, Name: "a"}, {ID: 2, Name: "b"}})
	return db, m
}

func TestSmoke(t *testing.T) {
	ctx := context.Background()
	db, m := smokeDB(t)
	calls := 0
	get := depcache.Memoize(func(ctx context.Context, id int) (smokeUser, error) {
		calls++
		var u smokeUser
		err := db.WithContext(ctx).First(&u, id).Error
		return u, err
	}, depcache.Using(m), depcache.KeyName("get"), depcache.CacheErrors(gorm.ErrRecordNotFound))
	list := depcache.Memoize0(func(ctx context.Context) ([]smokeUser, error) {
		calls++
		var us []smokeUser
		err := db.WithContext(ctx).Order("id").Find(&us).Error
		return us, err
	}, depcache.Using(m), depcache.KeyName("list"))

	get(ctx, 1)
	get(ctx, 2)
	list(ctx)
	get(ctx, 3) // not found, cached
	if calls != 4 {
		t.Fatalf("calls %d", calls)
	}
	get(ctx, 1)
	list(ctx)
	if _, err := get(ctx, 3); !errors.Is(err, gorm.ErrRecordNotFound) || calls != 4 {
		t.Fatalf("cached not found: %v calls %d", err, calls)
	}
	db.Model(&smokeUser{ID: 1}).Update("name", "A")
	u, _ := get(ctx, 1)
	if u.Name != "A" || calls != 5 {
		t.Fatalf("after update: %+v calls %d", u, calls)
	}
	get(ctx, 2)
	if calls != 5 {
		t.Fatalf("update of row 1 invalidated row 2")
	}
	us, _ := list(ctx)
	if us[0].Name != "A" {
		t.Fatalf("list stale: %+v", us)
	}
	db.Create(&smokeUser{ID: 3, Name: "c"})
	if u, err := get(ctx, 3); err != nil || u.Name != "c" {
		t.Fatalf("cached not-found survived the create: %+v %v", u, err)
	}
	// mass update via RETURNING
	before := calls
	db.Model(&smokeUser{}).Where("name = ?", "b").Update("name", "B")
	if u, _ := get(ctx, 2); u.Name != "B" || calls != before+1 {
		t.Fatalf("mass update: %+v", u)
	}
	// transaction
	db.Transaction(func(tx *gorm.DB) error {
		tx.Model(&smokeUser{ID: 2}).Update("name", "bb")
		return errors.New("rollback")
	})
	if u, _ := get(ctx, 2); u.Name != "B" {
		t.Fatalf("rolled back value: %+v", u)
	}
	// Cached scope
	var a, b []smokeUser
	r1 := db.WithContext(ctx).Scopes(gormplugin.Cached(time.Minute)).Where("id > ?", 0).Order("id").Find(&a)
	r2 := db.WithContext(ctx).Scopes(gormplugin.Cached(time.Minute)).Where("id > ?", 0).Order("id").Find(&b)
	if len(a) != 3 || len(b) != 3 || r2.RowsAffected != 3 || r1.RowsAffected != 3 {
		t.Fatalf("cached scope: %v %v %d", a, b, r2.RowsAffected)
	}
	st := m.Stats()
	var none smokeUser
	if err := db.WithContext(ctx).Scopes(gormplugin.Cached(time.Minute)).First(&none, 99).Error; !errors.Is(err, gorm.ErrRecordNotFound) {
		t.Fatal(err)
	}
	if err := db.WithContext(ctx).Scopes(gormplugin.Cached(time.Minute)).First(&none, 99).Error; !errors.Is(err, gorm.ErrRecordNotFound) {
		t.Fatal(err)
	}
	if m.Stats().Hits != st.Hits+1 {
		t.Fatalf("not-found not cached")
	}
	db.Delete(&smokeUser{ID: 1})
	var c []smokeUser
	db.WithContext(ctx).Scopes(gormplugin.Cached(time.Minute)).Where("id > ?", 0).Order("id").Find(&c)
	if len(c) != 2 {
		t.Fatalf("cached list after delete: %v", c)
	}
}

func TestModelRowTag(t *testing.T) {
	db, m := smokeDB(t)
	tag, err := gormplugin.ModelRowTag(db, &smokeUser{ID: 2})
	if err != nil || tag != "smoke_users::2" {
		t.Fatalf("ModelRowTag = %q, %v", tag, err)
	}
	if _, err := gormplugin.ModelRowTag(db, &smokeUser{}); err == nil {
		t.Fatal("a model without its key must be an error")
	}
	if _, err := gormplugin.ModelRowTag(db, []smokeUser{{ID: 1}}); err == nil {
		t.Fatal("a slice must be an error")
	}
	// The tag is the one reads depend on.
	ctx := context.Background()
	calls := 0
	get := depcache.Memoize(func(ctx context.Context, id int) (smokeUser, error) {
		calls++
		var u smokeUser
		return u, db.WithContext(ctx).First(&u, id).Error
	}, depcache.Using(m), depcache.KeyName("mrt"))
	get(ctx, 2)
	if n, _ := m.InvalidateDependency(ctx, tag); n != 1 {
		t.Fatalf("invalidating %s removed %d entries", tag, n)
	}
}

func TestRawJoinTags(t *testing.T) {
	var deps []string
	db, m := smokeDB(t, depcache.WithObserver(func(e depcache.Event) {
		if e.Kind == depcache.EventSet {
			deps = e.Deps
		}
	}))
	type smokeBadge struct {
		ID     int
		UserID int
	}
	db.AutoMigrate(&smokeBadge{})
	for _, join := range []string{
		"JOIN smoke_badges ON smoke_badges.user_id = smoke_users.id",
		"LEFT JOIN smoke_badges ON smoke_badges.user_id = smoke_users.id",
	} {
		ctx := context.Background()
		depcache.Fetch(ctx, m, join, func(ctx context.Context) ([]smokeUser, error) {
			var us []smokeUser
			return us, db.WithContext(ctx).Joins(join).Find(&us).Error
		})
		want := []string{"smoke_badges", "smoke_badges::*", "smoke_users", "smoke_users::*"}
		for _, w := range want {
			if !slices.Contains(deps, w) {
				t.Errorf("%s: deps %q lack %q", join, deps, w)
			}
		}
		for _, d := range deps {
			if strings.HasPrefix(d, "JOIN") || strings.HasPrefix(d, "LEFT") {
				t.Errorf("%s: a keyword became a tag: %q", join, deps)
			}
		}
	}
}

func TestInitializeTwice(t *testing.T) {
	var invalidations atomic.Int32
	db, m := smokeDB(t, depcache.WithObserver(func(e depcache.Event) {
		if e.Kind == depcache.EventInvalidate {
			invalidations.Add(1)
		}
	}))
	p := gormplugin.New(m)
	if err := p.Initialize(db); err != nil {
		t.Fatal(err)
	}
	if err := p.Initialize(db); err != nil {
		t.Fatal(err)
	}
	invalidations.Store(0)
	db.Model(&smokeUser{ID: 1}).Update("name", "x")
	if got := invalidations.Load(); got != 1 {
		t.Fatalf("one write ran %d invalidations; callbacks registered twice?", got)
	}
}
