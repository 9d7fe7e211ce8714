package depcache

import (
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
)

// TestTierRefusesAValueReadBeforeAChange is the local fill race: a value
// read from the backend before a change was applied must not enter the
// tier after it, and one that entered before is dropped by it.
func TestTierRefusesAValueReadBeforeAChange(t *testing.T) {
	b := memory.New()
	defer b.Close()
	m := New(b, WithName(t.Name()), WithLocalCache(10))
	defer m.Close()
	tr := m.tier

	seq := tr.begin() // before the backend read
	tr.Changed(backends.Change{NS: m.ns, Tags: []string{"t"}})
	tr.keep(seq, "k", "old", []string{"t"}, backends.Epoch{})
	if _, ok := tr.get("k"); ok {
		t.Fatal("a value read before a change entered the tier after it")
	}

	seq = tr.begin()
	tr.keep(seq, "k", "v", []string{"t"}, backends.Epoch{})
	if _, ok := tr.get("k"); !ok {
		t.Fatal("a value read with no change since was not kept")
	}
	tr.Changed(backends.Change{NS: m.ns, Tags: []string{"t"}})
	if _, ok := tr.get("k"); ok {
		t.Fatal("a change did not drop a value depending on its tag")
	}

	// Unrelated tags stay; a foreign dependency is dropped by its own
	// namespace's change; a reset drops everything.
	seq = tr.begin()
	tr.keep(seq, "a", 1, []string{"u"}, backends.Epoch{})
	tr.keep(seq, "b", 2, []string{backends.ForeignDep("other", "x")}, backends.Epoch{})
	tr.keep(seq, "c", 3, []string{backends.CarriedDep("lbl", "x")}, backends.Epoch{})
	tr.Changed(backends.Change{NS: m.ns, Tags: []string{"x"}})
	for _, k := range []string{"a", "b", "c"} {
		if _, ok := tr.get(k); !ok {
			t.Fatalf("%s dropped by a change of a tag it does not depend on", k)
		}
	}
	tr.Changed(backends.Change{NS: "other", Tags: []string{"x"}})
	if _, ok := tr.get("b"); ok {
		t.Fatal("a change of a foreign tag did not drop its dependent")
	}
	tr.Changed(backends.Change{NS: "other", Clear: true})
	tr.Reset()
	if _, ok := tr.get("a"); ok {
		t.Fatal("Reset kept a value")
	}

	// A lease that ran out stops serving.
	seq = tr.begin()
	tr.keep(seq, "k", "v", nil, backends.Epoch{})
	tr.lease.Revoke()
	if _, ok := tr.get("k"); ok {
		t.Fatal("served without a lease")
	}
}

// TestTierIndexForgetsEvicted: entries the cache lets go leave the index,
// so it stays bounded by the cache.
func TestTierIndexForgetsEvicted(t *testing.T) {
	b := memory.New()
	defer b.Close()
	m := New(b, WithName(t.Name()), WithLocalCache(10))
	defer m.Close()
	tr := m.tier
	for i := range 1000 {
		tr.keep(tr.begin(), string(rune('a'+i%26))+string(rune(i)), i, []string{"t" + string(rune(i))}, backends.Epoch{})
	}
	tr.cache.CleanUp()
	deadline := 1000
	for {
		tr.mu.Lock()
		tr.drain() // as the next insertion or change does
		n := len(tr.index)
		tr.mu.Unlock()
		if n <= 10 {
			break
		}
		if deadline--; deadline == 0 {
			t.Fatalf("index holds %d tags for a tier of 10 entries", n)
		}
		tr.cache.CleanUp()
		waitABit()
	}
}

// waitABit yields to the cache's deletion goroutines.
func waitABit() { time.Sleep(time.Millisecond) }

// BenchmarkTierGet is the tier's own hit: the lease, the cache, the
// entry's expiry.
func BenchmarkTierGet(b *testing.B) {
	mb := memory.New()
	defer mb.Close()
	m := New(mb, WithName(b.Name()), WithLocalCache(1000))
	defer m.Close()
	m.tier.keep(m.tier.begin(), "k", 42, []string{"t"}, backends.Epoch{})
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := m.tier.get("k"); !ok {
			b.Fatal("miss")
		}
	}
}

func BenchmarkLeaseClock(b *testing.B) {
	for b.Loop() {
		backends.LeaseClock()
	}
}
