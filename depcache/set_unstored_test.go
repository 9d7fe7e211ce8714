package depcache_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
)

// failingStore fails the operations whose flag is set, as a Redis that
// stalls writes past WithTimeout does.
type failingStore struct {
	backends.Backend
	fills, deletes, invalidations atomic.Bool
}

var errUnavailable = errors.New("store unavailable")

func (b *failingStore) Fill(ctx context.Context, ns string, f backends.Fill) error {
	if b.fills.Load() {
		return errUnavailable
	}
	return b.Backend.Fill(ctx, ns, f)
}

func (b *failingStore) Delete(ctx context.Context, ns string, keys ...string) (int, error) {
	if b.deletes.Load() {
		return 0, errUnavailable
	}
	return b.Backend.Delete(ctx, ns, keys...)
}

func (b *failingStore) Invalidate(ctx context.Context, ns string, tags ...string) (int, error) {
	if b.invalidations.Load() {
		return 0, errUnavailable
	}
	return b.Backend.Invalidate(ctx, ns, tags...)
}

// A Set over a key that fails to store deletes the key, so that the value
// it was to replace is not served; where the delete fails too, Set returns
// the error. Before, it returned nil and the old value stayed (found by a
// new-user check: CLIENT PAUSE WRITE on a real Redis).
func TestSetThatCannotStoreRemovesTheValueItReplaces(t *testing.T) {
	ctx := context.Background()
	b := &failingStore{Backend: memory.New()}
	m := depcache.New(b, depcache.WithPrefix("set-unstored"))
	defer m.Close()
	get := func() (string, bool) {
		t.Helper()
		var got string
		found, err := m.Get(ctx, "price", &got)
		if err != nil {
			t.Fatal(err)
		}
		return got, found
	}
	if err := m.Set(ctx, "price", "v1", time.Hour); err != nil {
		t.Fatal(err)
	}

	b.fills.Store(true)
	if err := m.Set(ctx, "price", "v2", time.Hour); err != nil {
		t.Fatalf("Set whose fill failed and whose delete worked = %v, want nil (fail open)", err)
	}
	b.fills.Store(false)
	if got, found := get(); found {
		t.Fatalf("after a Set(v2) that returned nil without storing, Get = %q", got)
	}

	if err := m.Set(ctx, "price", "v3", time.Hour); err != nil {
		t.Fatal(err)
	}
	b.fills.Store(true)
	b.deletes.Store(true)
	err := m.Set(ctx, "price", "v4", time.Hour)
	b.fills.Store(false)
	b.deletes.Store(false)
	if err == nil {
		got, found := get()
		t.Fatalf("Set(v4) that neither stored nor deleted returned nil; Get = %q, %v", got, found)
	}
}

// A Set skipped because one of its dependencies has an invalidation
// pending removes the value it replaces too.
func TestSetSkippedForAPendingTagRemovesTheValueItReplaces(t *testing.T) {
	ctx := context.Background()
	b := &failingStore{Backend: memory.New()}
	m := depcache.New(b, depcache.WithPrefix("set-pending"), depcache.WithInvalidationTimeout(50*time.Millisecond))
	defer m.Close()
	if err := m.Set(ctx, "k", "v1", time.Hour); err != nil {
		t.Fatal(err)
	}
	b.invalidations.Store(true)
	if _, err := m.InvalidateDependency(ctx, "t"); err == nil {
		t.Fatal("InvalidateDependency on a failing store returned nil")
	}
	if err := m.Set(ctx, "k", "v2", time.Hour, "t"); err != nil {
		t.Fatalf("Set with a pending dependency = %v", err)
	}
	var got string
	if found, err := m.Get(ctx, "k", &got); err != nil || found {
		t.Fatalf("after a Set skipped for a pending tag, Get = %q, %v, %v; want a miss", got, found, err)
	}
}
