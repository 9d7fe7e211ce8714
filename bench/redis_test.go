package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/go-gorm/caches/v4"
)

// testClient is a client on REDIS_URL under a random prefix that is removed
// when the test ends; without REDIS_URL the test is skipped.
func testClient(t *testing.T) (*Client, string) {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		t.Skip("REDIS_URL is not set")
	}
	c, err := NewClient(url, "bench test", 0)
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("bench:test:%x", rand.Uint64())
	t.Cleanup(func() {
		ctx := context.Background()
		for it := c.Scan(ctx, 0, prefix+"*", 1000).Iterator(); it.Next(ctx); {
			c.Unlink(ctx, it.Val())
		}
		c.Close()
	})
	return c, prefix
}

func TestNaiveInvalidateRemovesDependents(t *testing.T) {
	ctx := context.Background()
	c, prefix := testClient(t)
	n := &Naive{C: c.Client, Prefix: prefix}
	n.Set(ctx, "a", []byte("1"), time.Minute, "users::1", "users::*")
	n.Set(ctx, "b", []byte("2"), time.Minute, "users::1")
	n.Set(ctx, "c", []byte("3"), time.Minute, "users::2")
	trips := c.Trips.Load()
	removed, err := n.Invalidate(ctx, "users::1")
	if err != nil || removed != 2 {
		t.Fatalf("Invalidate = %d, %v; want 2, nil", removed, err)
	}
	if got := c.Trips.Load() - trips; got != 2 {
		t.Fatalf("invalidation took %d round trips, want 2 (SMEMBERS, DEL)", got)
	}
	for _, k := range []string{"a", "b"} {
		if _, err := n.Get(ctx, k); !errors.Is(err, ErrMiss) {
			t.Fatalf("Get(%s) after invalidation: %v, want ErrMiss", k, err)
		}
	}
	if v, err := n.Get(ctx, "c"); err != nil || string(v) != "3" {
		t.Fatalf("Get(c) = %q, %v; an unrelated entry must survive", v, err)
	}
}

func TestGormCacherInvalidateFlushesOnlyItsPrefix(t *testing.T) {
	ctx := context.Background()
	c, prefix := testClient(t)
	g := &GormCacher{C: c.Client, Prefix: prefix + ":gc:", TTL: time.Minute}
	other := &GormCacher{C: c.Client, Prefix: prefix + ":other:", TTL: time.Minute}
	for i := range 2500 { // more than one SCAN page
		g.Store(ctx, fmt.Sprint(i), &caches.Query[any]{Dest: i, RowsAffected: 1})
	}
	other.Store(ctx, "kept", &caches.Query[any]{Dest: "x", RowsAffected: 1})
	if err := g.Invalidate(ctx); err != nil {
		t.Fatal(err)
	}
	if it := c.Scan(ctx, 0, g.Prefix+"*", 1000).Iterator(); it.Next(ctx) {
		t.Fatalf("%s left after Invalidate", it.Val())
	}
	var dst string
	got, err := other.Get(ctx, "kept", &caches.Query[any]{Dest: &dst})
	if err != nil || got == nil || dst != "x" {
		t.Fatalf("other prefix's entry: %v, %v, %q", got, err, dst)
	}
	if g.Hits.Load() != 0 || other.Hits.Load() != 1 {
		t.Fatalf("hits counted %d / %d, want 0 / 1", g.Hits.Load(), other.Hits.Load())
	}
}
