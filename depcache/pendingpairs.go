package depcache

import (
	"sync"
	"sync/atomic"

	"github.com/depcache/go-depcache/backends"
)

// An entry may depend on tags of other managers (pairs, operation.go). While
// one of those managers has an invalidation pending retry, is held (Hold:
// as if every tag of it were pending) or has its breaker open (it serves
// nothing until its recovery checks pass), this process must not serve
// or store an entry carrying such a tag either, whatever the entry's own
// manager. Managers with a failed invalidation, a Hold or a breaker that
// opened are indexed by key prefix here, so that a lookup can find them;
// the index is read only when an entry names a tag of another prefix and
// some manager has ever been so.

var pendingIndex struct {
	any atomic.Bool
	// changes moves when any manager delivers a pending invalidation,
	// takes or releases a Hold, or its breaker changes state: an entry
	// read before it may carry that manager's tag (servingMark).
	changes atomic.Uint64
	mu      sync.Mutex
	byNS    map[string]map[*Manager]struct{}
}

// notePending records that m has an invalidation pending retry, a Hold
// or an open breaker.
func notePending(m *Manager) {
	pendingIndex.mu.Lock()
	defer pendingIndex.mu.Unlock()
	if m.closed.Load() {
		// Close has removed it (forgetPending, under this lock, after
		// closed was set), or is about to: a failure or a breaker change
		// that comes after must not bring it back, for good.
		return
	}
	if pendingIndex.byNS == nil {
		pendingIndex.byNS = map[string]map[*Manager]struct{}{}
	}
	set := pendingIndex.byNS[m.ns]
	if set == nil {
		set = map[*Manager]struct{}{}
		pendingIndex.byNS[m.ns] = set
	}
	set[m] = struct{}{}
	pendingIndex.any.Store(true)
}

// forgetPending removes a closed manager from the index.
func forgetPending(m *Manager) {
	pendingIndex.mu.Lock()
	defer pendingIndex.mu.Unlock()
	if set := pendingIndex.byNS[m.ns]; set != nil {
		delete(set, m)
		if len(set) == 0 {
			delete(pendingIndex.byNS, m.ns)
		}
	}
}

// pendingAffects reports whether an entry of m with deps (as entries store
// them) must not be served or stored: one of its tags, of m or of another
// manager on m's backend, has an invalidation pending retry, or its
// manager is held or has its breaker open.
func (m *Manager) pendingAffects(deps []string) bool {
	if m.rec.holds.Load() > 0 || m.pending.affects(deps) {
		return true
	}
	if !pendingIndex.any.Load() {
		return false
	}
	if m.peers.members.Load() > 1 && m.peersAffect(deps) {
		return true
	}
	for _, d := range deps {
		dep := backends.ParseDep(m.ns, d)
		if dep.Carried || dep.NS == m.ns {
			continue
		}
		for _, other := range pendingManagers(dep.NS) {
			if sameStore(other.backend, m.backend) && other.blocks([]string{dep.Tag}) {
				return true
			}
		}
	}
	return false
}

// blocks reports whether o keeps entries carrying its tags (of tags,
// given as o's own) from being served or stored by any manager: it is
// held, its breaker is open (a read of such an entry starts o's probe,
// for o may read nothing more itself), or one of tags is pending retry.
func (o *Manager) blocks(tags []string) bool {
	if o.brk.open() {
		o.brk.probeIfDue()
		return true
	}
	return o.rec.holds.Load() > 0 || o.pending.affects(tags)
}

func pendingManagers(ns string) []*Manager {
	pendingIndex.mu.Lock()
	defer pendingIndex.mu.Unlock()
	set := pendingIndex.byNS[ns]
	out := make([]*Manager, 0, len(set))
	for m := range set {
		out = append(out, m)
	}
	return out
}
