package gormplugin_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/internal/testenv"
)

// The hit ratio of lists by author under a mix of reads and writes, with
// conjunction tags and with the list tag alone: the same seeded sequence
// of operations on both, so the counts are exact, not timings.
//
//	DEPCACHE_LONG=1 go test ./gormplugin -run TestConjunctionHitRatio -v
//
// (1% and 20% writes run only with DEPCACHE_LONG.)
func TestConjunctionHitRatio(t *testing.T) {
	if conjunctionMode() {
		t.Skip("DEPCACHE_CONJUNCTION turns the option on for the baseline too")
	}
	const (
		authors = 20
		ops     = 3000
	)
	mixes := []int{5}
	if testenv.Long() {
		mixes = []int{1, 5, 20}
	}
	for _, writePct := range mixes {
		var misses [2]int64
		for i, conj := range []bool{false, true} {
			setup := envSetup{}
			if conj {
				setup = withConjunctions
			}
			e := newEnv(t, dbCases()[0], setup)
			misses[i] = hitRatioRun(t, e, authors, ops, writePct)
		}
		t.Logf("%2d%% writes, %d lists by author, %d operations: misses with ListTag %d, with conjunction tags %d (%.1f× fewer)",
			writePct, authors, ops, misses[0], misses[1], float64(misses[0])/float64(max(misses[1], 1)))
		if writePct == 5 && misses[0] < 3*misses[1] {
			t.Errorf("at 5%% writes conjunction tags missed %d times, ListTag %d: want at least 3× fewer", misses[1], misses[0])
		}
	}
}

// hitRatioRun runs the mix on e and returns how many times a list ran.
func hitRatioRun(t *testing.T, e *env, authors, ops, writePct int) int64 {
	t.Helper()
	for a := len(seedUsers) + 1; a <= authors; a++ {
		noErr(t, "author", e.db.Create(&User{ID: uint(a), Name: fmt.Sprint("user", a)}).Error)
	}
	var posts []Post
	for a := 1; a <= authors; a++ {
		for range 5 {
			posts = append(posts, Post{AuthorID: uint(a), Title: "seed"})
		}
	}
	noErr(t, "posts", e.db.Create(&posts).Error)
	var runs atomic.Int64
	list := depcache.Memoize(func(ctx context.Context, author uint) ([]Post, error) {
		runs.Add(1)
		var ps []Post
		err := e.db.WithContext(ctx).Where("author_id = ?", author).Find(&ps).Error
		return ps, err
	}, depcache.Using(e.m), depcache.KeyName("hitratio.list"))
	rng := rand.New(rand.NewPCG(1, uint64(writePct)))
	maxID := uint(len(seedAuthors) + len(posts))
	for range ops {
		author := uint(1 + rng.IntN(authors))
		if rng.IntN(100) >= writePct {
			_, err := list(e.ctx, author)
			noErr(t, "list", err)
			continue
		}
		id := uint(1 + rng.IntN(int(maxID)))
		switch rng.IntN(3) {
		case 0: // a new post
			p := Post{AuthorID: author, Title: "new"}
			noErr(t, "create", e.db.Create(&p).Error)
			maxID = max(maxID, p.ID)
		case 1: // an edit
			noErr(t, "edit", e.db.Model(&Post{ID: id}).Update("title", fmt.Sprint("edit ", rng.Int())).Error)
		case 2: // a post changes author
			noErr(t, "move", e.db.Model(&Post{ID: id}).Update("author_id", author).Error)
		}
	}
	// The lists are right at the end.
	for a := uint(1); a <= uint(authors); a++ {
		got, err := list(e.ctx, a)
		noErr(t, "list", err)
		var want []Post
		noErr(t, "true list", e.raw.Where("author_id = ?", a).Find(&want).Error)
		sameJSON(t, fmt.Sprint("posts of ", a), got, want)
	}
	return runs.Load()
}
