package depcache

import (
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
