package backendtest

import (
	"testing"

	"github.com/depcache/go-depcache/backends"
)

// testForeignDeps checks the pair rule: an entry of namespace A that
// depends on tag T of namespace B (backends.ForeignDep) is removed by B's
// invalidation of T and refused by B's stamp of T, never by A's own T; a
// carried tag is stored with the entry but neither checked nor registered.
// Clear of B removes A's entry too.
func testForeignDeps(t *testing.T, e *env) {
	a, b := e, e.in(e.ns+"-b")
	foreign := backends.ForeignDep(b.ns, "post:1")
	carried := backends.CarriedDep("someone", "post:1")

	a.fill("page", "v", "own", foreign, carried)
	got := a.wantHit("page", "v")
	if len(got.Deps) != 3 || got.Deps[1] != foreign || got.Deps[2] != carried {
		t.Errorf("stored deps %q, want [own %q %q]", shortAll(got.Deps), foreign, carried)
	}

	// A's own post:1 is another tag; the carried one registered nothing.
	a.wantInvalidate(0, "post:1")
	a.wantHit("page", "v")
	a.wantInvalidate(0, "someone")

	// B's post:1 removes A's entry.
	b.wantInvalidate(1, "post:1")
	a.wantMiss("page")

	// B's stamp refuses a fill of A that read before it.
	before := a.wantMiss("page")
	b.invalidate("post:1")
	a.wantStale(a.tryFill("page", []byte("v"), before, foreign), "Fill after the foreign tag's invalidation")
	a.wantMiss("page")
	// An invalidation of the carried tag's label refuses nothing.
	before = a.wantMiss("page")
	if err := a.tryFill("page", []byte("v"), before, carried); err != nil {
		t.Errorf("Fill with a carried tag only: %v", err)
	}
	a.wantHit("page", "v")

	// Refill moves the registration; Clear of B removes A's entry too, as
	// an invalidation of B's tags would (a Clear may stand for
	// invalidations never delivered), and counts only B's own entries.
	a.fill("page", "v2", foreign)
	b.fill("post", "p", "post:1")
	b.wantClear(1)
	a.wantMiss("page")
	b.wantInvalidate(0, "post:1")

	// Clear of A removes its entries; B's tag then finds nothing.
	a.fill("page", "v3", foreign)
	a.wantClear(1)
	b.wantInvalidate(0, "post:1")
}
