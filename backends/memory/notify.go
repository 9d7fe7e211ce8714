package memory

import (
	"context"
	"sync"

	"github.com/depcache/go-depcache/backends"
)

var _ backends.Notifier = (*Backend)(nil)

// hub delivers changes to the tiers listening on a Backend. Every tier of a
// memory Backend lives in its process, so a change reaches each of them
// before Notify returns and their leases never run out.
type hub struct {
	mu        sync.Mutex // held while delivering, so that changes arrive in order
	listeners map[*listening]struct{}
}

type listening struct {
	l     backends.Listener
	lease backends.Lease
}

// Listen delivers every later Notify to l, synchronously.
func (b *Backend) Listen(l backends.Listener) (*backends.Lease, func(), error) {
	if b.closed.Load() {
		return nil, nil, backends.ErrClosed
	}
	r := &listening{l: l}
	r.lease.Forever()
	b.hub.mu.Lock()
	if b.hub.listeners == nil {
		b.hub.listeners = map[*listening]struct{}{}
	}
	b.hub.listeners[r] = struct{}{}
	b.hub.mu.Unlock()
	stop := func() {
		b.hub.mu.Lock()
		delete(b.hub.listeners, r)
		b.hub.mu.Unlock()
		r.lease.Revoke()
	}
	return &r.lease, stop, nil
}

// Notify hands c to every listening tier and returns once each has dropped
// what it condemns.
func (b *Backend) Notify(_ context.Context, c backends.Change) error {
	b.hub.mu.Lock()
	defer b.hub.mu.Unlock()
	for r := range b.hub.listeners {
		r.l.Changed(c)
	}
	return nil
}

// close ends every listener's lease: the Backend closed.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for r := range h.listeners {
		r.lease.Revoke()
	}
	h.listeners = nil
}
