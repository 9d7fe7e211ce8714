package depcache

import (
	"runtime"
	"strconv"
	"testing"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
)

// Emptying a full tier (a reset after a resubscription, a Clear, Close)
// must not cost a goroutine per entry: it did, 2 KB of stack each, all
// waiting for the tier's lock at once.
func TestTierDeletionStartsNoGoroutinePerEntry(t *testing.T) {
	b := memory.New()
	defer b.Close()
	const n = 10000
	m := New(b, WithName(t.Name()), WithLocalCache(n))
	defer m.Close()
	tr := m.tier
	for i := range n {
		tr.keep(tr.begin(), "k"+strconv.Itoa(i), i, []string{"t" + strconv.Itoa(i%100)}, backends.Epoch{})
	}
	// Under the tier's lock, as Reset, Changed and close empty the cache.
	tr.mu.Lock()
	base := runtime.NumGoroutine()
	tr.cache.InvalidateAll()
	grew := runtime.NumGoroutine() - base
	tr.mu.Unlock()
	tr.Reset()
	if grew > 100 {
		t.Fatalf("emptying a tier of %d entries started %d goroutines", n, grew)
	}
}

// The index follows evictions: a tier filled many times over, with many
// tags an entry, indexes no more than the entries it holds.
func TestTierIndexFollowsEvictions(t *testing.T) {
	b := memory.New()
	defer b.Close()
	const max, tags = 100, 20
	m := New(b, WithName(t.Name()), WithLocalCache(max))
	defer m.Close()
	tr := m.tier
	deps := func(i int) []string {
		out := make([]string, tags)
		for j := range out {
			out[j] = "t" + strconv.Itoa(i) + ":" + strconv.Itoa(j)
		}
		return out
	}
	for i := range 50 * max {
		tr.keep(tr.begin(), "k"+strconv.Itoa(i), i, deps(i), backends.Epoch{})
	}
	tr.cache.CleanUp()
	tr.keep(tr.begin(), "last", 0, deps(-1), backends.Epoch{}) // drains what CleanUp evicted
	tr.cache.CleanUp()
	tr.mu.Lock()
	tr.drain()
	refs := 0
	for _, keys := range tr.index {
		refs += len(keys)
	}
	tr.mu.Unlock()
	if size := tr.cache.EstimatedSize(); size > max || refs > size*tags {
		t.Fatalf("tier of at most %d holds %d entries and %d index references (want ≤ %d)", max, size, refs, size*tags)
	}
}
