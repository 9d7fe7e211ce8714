package depcache

import (
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/depcache/go-depcache/backends"
)

// Managers of one key prefix on one backend (depcache.New called twice
// with the same prefix, a plugin's manager beside an application's) read
// and fill the same entries: a Hold, an invalidation pending retry or an
// open breaker of one must keep the others from serving them too. They
// share a peerGroup: its count of members, read on every hit, keeps the
// usual case (a manager alone on its prefix) at one atomic load, and its
// changes count is the one lookups sample across their round trip.

type peerGroup struct {
	members atomic.Int32
	changes atomic.Uint64 // any member's hold, delivery or breaker change
}

type peerKey struct {
	backend backends.Backend
	ns      string
}

var peerGroups struct {
	mu sync.Mutex
	m  map[peerKey]*peerGroup
}

// joinPeers returns the group of b's prefix ns, with m counted in it. A
// backend that cannot be a map key (an uncomparable value) gets a group of
// its own: sameStore cannot match it with another manager's either.
func joinPeers(b backends.Backend, ns string) (g *peerGroup, shared bool) {
	if b == nil || !comparableValue(b) {
		g = &peerGroup{}
		g.members.Store(1)
		return g, false
	}
	k := peerKey{b, ns}
	peerGroups.mu.Lock()
	defer peerGroups.mu.Unlock()
	if peerGroups.m == nil {
		peerGroups.m = map[peerKey]*peerGroup{}
	}
	g = peerGroups.m[k]
	if g == nil {
		g = &peerGroup{}
		peerGroups.m[k] = g
	}
	g.members.Add(1)
	return g, true
}

// leavePeers takes a closed manager out of its group.
func (m *Manager) leavePeers() {
	if !m.peersShared {
		return
	}
	peerGroups.mu.Lock()
	defer peerGroups.mu.Unlock()
	if m.peers.members.Add(-1) == 0 {
		delete(peerGroups.m, peerKey{m.backend, m.ns})
	}
}

// comparableValue reports whether v can be compared with == without a
// panic (a comparable type holding an uncomparable value panics).
func comparableValue(v any) (ok bool) {
	if !reflect.TypeOf(v).Comparable() {
		return false
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return v == v
}

// peersAffect reports whether another manager of m's prefix and backend
// is held, has its breaker open, or has one of deps' own-prefix tags
// pending retry. Only managers in the pending index can be.
func (m *Manager) peersAffect(deps []string) bool {
	var own []string // deps' own-prefix tags, made once a peer has some pending
	for _, o := range pendingManagers(m.ns) {
		if o == m || o.peers != m.peers {
			continue
		}
		if own == nil && o.pending.len() > 0 {
			own = make([]string, 0, len(deps))
			for _, d := range deps {
				if dep := backends.ParseDep(m.ns, d); !dep.Carried && dep.NS == m.ns {
					own = append(own, dep.Tag)
				}
			}
		}
		if o.blocks(own) {
			return true
		}
	}
	return false
}
