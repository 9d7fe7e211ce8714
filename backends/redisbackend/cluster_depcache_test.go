package redisbackend_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
)

// TestClusterThroughDepcache runs memoized functions and Manager calls on
// the Redis Cluster through depcache, which passes the fill leases through:
// a miss fills, a hit serves, an invalidation removes, and two processes
// missing on one key at once both get the right value.
func TestClusterThroughDepcache(t *testing.T) {
	c := redisbackend.SharedClusterClient(t)
	var p [6]byte
	_, _ = rand.Read(p[:])
	prefix := "dcc" + hex.EncodeToString(p[:])
	newManager := func() *depcache.Manager {
		// Strict errors turn any cache error into a failure, and the
		// default 250 ms per operation is a production budget, not what
		// this test checks: under -race on a loaded machine a Backend's
		// first use (INFO and SCRIPT LOAD on every master) or a 3-round-
		// trip fill can take longer, which failed the test once. The
		// timeout here only bounds a stuck server.
		m := depcache.New(redisbackend.New(c), depcache.WithPrefix(prefix), depcache.WithStrictErrors(),
			depcache.WithTimeout(30*time.Second))
		t.Cleanup(func() { _ = m.Close() })
		return m
	}
	m1, m2 := newManager(), newManager()
	t.Cleanup(func() { _, _ = m1.Clear(context.Background()) })
	ctx := t.Context()

	var calls atomic.Int64
	row := func(ctx context.Context, id int) (string, error) {
		calls.Add(1)
		depcache.AddDependency(ctx, fmt.Sprint("rows::", id))
		return fmt.Sprint("row ", id, " v", calls.Load()), nil
	}
	get1 := depcache.Memoize(row, depcache.Using(m1), depcache.KeyName("row"))
	get2 := depcache.Memoize(row, depcache.Using(m2), depcache.KeyName("row"))

	v1, err := get1(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := get2(ctx, 1); err != nil || v != v1 || calls.Load() != 1 {
		t.Fatalf("second call from another manager = %q, %v after %d calls; want the cached %q", v, err, calls.Load(), v1)
	}
	if n, err := m1.InvalidateDependency(ctx, "rows::1"); err != nil || n != 1 {
		t.Fatalf("InvalidateDependency = %d, %v; want 1", n, err)
	}
	if v, err := get2(ctx, 1); err != nil || v == v1 || calls.Load() != 2 {
		t.Fatalf("call after the invalidation = %q, %v after %d calls; want a recomputed value", v, err, calls.Load())
	}

	// Set, Get, TTL.
	if err := m1.Set(ctx, "k", "v", 0, "d"); err != nil {
		t.Fatal(err)
	}
	var s string
	if found, err := m2.Get(ctx, "k", &s); err != nil || !found || s != "v" {
		t.Fatalf("Get = %v, %q, %v", found, s, err)
	}

	// Two "processes" missing on one key at once: one holds the lease, the
	// other computes without filling; both return the value.
	var wg sync.WaitGroup
	for i := range 16 {
		get := get1
		if i%2 == 1 {
			get = get2
		}
		wg.Go(func() {
			if v, err := get(ctx, 7); err != nil || v[:6] != "row 7 " {
				t.Errorf("concurrent call = %q, %v", v, err)
			}
		})
	}
	wg.Wait()
	before := calls.Load()
	if _, err := get1(ctx, 7); err != nil || calls.Load() != before {
		t.Errorf("call after the concurrent ones computed again (%d calls, %d before): nothing was stored", calls.Load(), before)
	}
	for _, m := range []*depcache.Manager{m1, m2} {
		if st := m.Stats(); st.Errors != 0 {
			t.Errorf("manager stats: %+v, want no errors", st)
		}
	}
}
