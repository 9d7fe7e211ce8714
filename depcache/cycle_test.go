package depcache_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
)

// A memoized call that reaches itself (getUser(1) → postsOf(1) →
// getUser(1)) fails with ErrCycle at once: its flight is its own, and it
// waited for itself until ctx ended, for ever under context.Background()
// (found by a new-user check). The outer calls get the error too.
func TestMemoizedCallReachingItselfIsErrCycle(t *testing.T) {
	m := depcache.New(memory.New(), depcache.WithPrefix("cycle"))
	defer m.Close()
	var getUser func(context.Context, int) (string, error)
	postsOf := depcache.Memoize(func(ctx context.Context, id int) (string, error) {
		author, err := getUser(ctx, id)
		return "posts by " + author, err
	}, depcache.Using(m), depcache.KeyName("postsOf"))
	getUser = depcache.Memoize(func(ctx context.Context, id int) (string, error) {
		p, err := postsOf(ctx, id)
		return "user with " + p, err
	}, depcache.Using(m), depcache.KeyName("getUser"))
	// A deadline only so that a regression fails instead of hanging.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := getUser(ctx, 1); !errors.Is(err, depcache.ErrCycle) {
		t.Fatalf("getUser(1) → postsOf(1) → getUser(1) = %v, want ErrCycle", err)
	}
	self := 0
	var fetch func(ctx context.Context) (int, error)
	fetch = func(ctx context.Context) (int, error) {
		return depcache.Fetch(ctx, m, "self", func(ctx context.Context) (int, error) {
			self++
			return fetch(ctx)
		})
	}
	if _, err := fetch(ctx); !errors.Is(err, depcache.ErrCycle) || self != 1 {
		t.Fatalf("a Fetch of itself = %v after %d runs, want ErrCycle after 1", err, self)
	}
	// Other arguments are other keys: no cycle.
	depth := depcache.Memoize(func(ctx context.Context, n int) (int, error) { return n, nil }, depcache.Using(m), depcache.KeyName("depth"))
	outer := depcache.Memoize(func(ctx context.Context, n int) (int, error) { return depth(ctx, n+1) }, depcache.Using(m), depcache.KeyName("outer"))
	if v, err := outer(ctx, 1); v != 2 || err != nil {
		t.Fatalf("outer(1) = %v, %v", v, err)
	}
}
