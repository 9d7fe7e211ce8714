package depcache

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/depcache/go-depcache/backends"
)

// Concurrent misses of one key in one process run the function once: the
// first caller leads a flight, the others wait for it. A waiter is handed
// the leader's result only if the leader stored it — a stored value passed
// the stale-fill guard — and otherwise computes for itself. The leader
// leaves the flight table before it stores, so a caller arriving after the
// store looks the cache up instead of joining a flight whose value an
// invalidation may already have condemned.

type flightKey struct {
	key    string
	noFill bool // a caller that may not fill (a transaction) never shares
}

type flight struct {
	done    chan struct{}
	waiters atomic.Int32
	stored  bool // the leader stored its result: waiters may use it
	val     any
	err     error
	deps    []string
	since   backends.Epoch
}

type flightGroup struct {
	mu sync.Mutex
	m  map[flightKey]*flight
}

// join returns the flight for k and whether the caller leads it.
func (g *flightGroup) join(k flightKey) (*flight, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.m[k]; ok {
		f.waiters.Add(1)
		return f, false
	}
	if g.m == nil {
		g.m = map[flightKey]*flight{}
	}
	f := &flight{done: make(chan struct{})}
	g.m[k] = f
	return f, true
}

// leave removes the flight, so that later callers look the cache up.
func (g *flightGroup) leave(k flightKey, f *flight) {
	g.mu.Lock()
	if g.m[k] == f {
		delete(g.m, k)
	}
	g.mu.Unlock()
}

// heldLease is the store's fill lease (Redis Cluster, or a Redis with its
// fill lock) that a miss took. Until a fill stores under it, no other
// process can fill the key, so every way out of a memoized call that does
// not store — a cancelled wait on a flight, a panic, SkipFill, an encode
// error, a closed manager, a strict error — must give it back; a leaked
// lease keeps the key uncached for the lease's whole TTL.
type heldLease struct {
	m     *Manager
	key   string
	token string
}

func (m *Manager) holdLease(key, token string) *heldLease {
	return &heldLease{m: m, key: key, token: token}
}

// used records that a fill stored under the lease: the entry replaced it.
func (h *heldLease) used() { h.token = "" }

// abandon leaves the lease to expire (backends.Fill's lease lifetime):
// the backend just failed, and a release would wait on it again.
func (h *heldLease) abandon() { h.token = "" }

// giveBack releases the lease unless a fill used it. It is safe to call
// more than once, and with a ctx that has ended.
func (h *heldLease) giveBack(ctx context.Context) {
	if h.token == "" {
		return
	}
	token := h.token
	h.token = ""
	h.m.releaseLease(ctx, h.key, token)
}
