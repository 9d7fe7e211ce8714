package backendtest

import (
	"testing"

	"github.com/depcache/go-depcache/backends"
)

// testClearRefusesOlderFill: a fill that began before Clear is refused.
// Clear stands in for invalidations it replaces (depcache's pending queue
// turns its overflow into a Clear), so it must be as strong as they are:
// a computation that read its data before Clear, in any process, may not
// store it after Clear, whether it stores into the cleared namespace or
// depends on one of its tags from another namespace. A computation that
// began after Clear fills as usual, and other namespaces are untouched.
func testClearRefusesOlderFill(t *testing.T, e *env) {
	other := e.in(e.ns + "-other")
	before := e.wantMiss("k")
	otherBefore := other.wantMiss("page")

	e.wantClear(0)
	e.wantStale(e.tryFill("k", []byte("before Clear"), before, "t"), "Fill with tags that began before Clear")
	e.wantMiss("k")
	e.wantStale(e.tryFill("k", []byte("before Clear"), before), "Fill without tags that began before Clear")
	e.wantMiss("k")
	e.wantStale(other.tryFill("page", []byte("before Clear"), before, backends.ForeignDep(e.ns, "t")),
		"Fill of another namespace, depending on a tag of the cleared one, that began before Clear")
	other.wantMiss("page")

	// Other namespaces are not cleared.
	if err := other.tryFill("page", []byte("v"), otherBefore, "t"); err != nil {
		t.Errorf("Fill of another namespace that began before Clear: %v", err)
	}
	other.wantHit("page", "v")

	// A computation that began after Clear fills.
	after := e.wantMiss("k")
	if err := e.tryFill("k", []byte("after Clear"), after, "t"); err != nil {
		t.Errorf("Fill that began after Clear: %v", err)
	}
	e.wantHit("k", "after Clear")

	// Every Clear stamps anew, and stamps in time: a fill that began
	// between two Clears is refused by the second.
	between := e.wantMiss("k2")
	e.wantClear(1)
	e.wantStale(e.tryFill("k2", []byte("v"), between, "t"), "Fill that began between two Clears")
	e.wantMiss("k2")
}
