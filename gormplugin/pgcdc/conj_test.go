package pgcdc_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
	"github.com/depcache/go-depcache/gormplugin/pgcdc"
)

type Pet struct {
	ID    int64 `gorm:"autoIncrement:false"`
	Owner string
}

// With the plugin's conjunction tags a list read by Where("owner = ?")
// does not depend on the list tag: a row that a raw INSERT or UPDATE puts
// into it must still leave the cache, through the table's scheme tags.
func TestConjunctionLists(t *testing.T) {
	e := newEnv(t, envConfig{noRun: true})
	db, err := gorm.Open(postgres.Open(e.dsn), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	if err := db.AutoMigrate(&Pet{}); err != nil {
		t.Fatal(err)
	}
	p := gormplugin.New(e.m, gormplugin.WithConjunctionTags(0))
	t.Cleanup(func() { p.Close() })
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		tags []string
	)
	byOwner := depcache.Memoize(func(ctx context.Context, owner string) ([]int64, error) {
		var pets []Pet
		err := db.WithContext(ctx).Where("owner = ?", owner).Order("id").Find(&pets).Error
		ids := make([]int64, len(pets))
		for i, p := range pets {
			ids[i] = p.ID
		}
		return ids, err
	}, depcache.Using(e.m), depcache.KeyName("pets.byOwner"))
	ctx := context.Background()
	read := func() []int64 {
		t.Helper()
		ids, err := byOwner(ctx, "ann")
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if err := db.Create(&[]Pet{{ID: 1, Owner: "ann"}, {ID: 2, Owner: "bob"}}).Error; err != nil {
		t.Fatal(err)
	}
	l := e.listener(pgcdc.WithObserver(func(ev pgcdc.Event) {
		if ev.Kind == pgcdc.EventInvalidated {
			mu.Lock()
			tags = append(tags, ev.Tags...)
			mu.Unlock()
		}
	}))
	e.run(l)

	sync_(t, l, currentLSN(t, e.db)) // past the rows above

	steps := []struct {
		sql  string
		want []int64
	}{
		{`INSERT INTO pets (id, owner) VALUES (3, 'ann')`, []int64{1, 3}},
		{`UPDATE pets SET owner = 'ann' WHERE id = 2`, []int64{1, 2, 3}},
		{`UPDATE pets SET owner = 'bob' WHERE id = 1`, []int64{2, 3}},
	}
	for _, st := range steps {
		read()
		hits := e.m.Stats().Hits
		read()
		if e.m.Stats().Hits == hits {
			t.Fatalf("before %s: ann's list is not cached", st.sql)
		}
		sync_(t, l, e.exec(st.sql))
		if got := read(); !slices.Equal(got, st.want) {
			t.Fatalf("after %s: ann's pets %v, want %v", st.sql, got, st.want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(tags, gormplugin.SchemeTag("pets", "owner")) {
		t.Errorf("the listener never invalidated the scheme tag %q: %q", gormplugin.SchemeTag("pets", "owner"), tags)
	}
}
