package depcache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/depcache/go-depcache/backends"
)

// Recovery: what must happen before a manager serves from the cache again
// after the backend was unreachable, or before it serves at all. A durable
// outbox (gormplugin.WithOutbox) holds invalidations that were committed in
// the database but never reached the backend; until they are delivered,
// the backend may hold entries that predate those writes (a Redis restarted
// from an older snapshot brings them back), so no entry may be served.
//
// Two hooks give an outbox that: Hold stops serving until released (a
// process that starts while its outbox is not known to be empty), and
// AddRecoveryCheck makes the circuit breaker close only once the check
// succeeds (delivering the outbox) after the backend answers again.

type recovery struct {
	holds atomic.Int64

	mu     sync.Mutex
	checks map[uint64]func(context.Context) error
	next   uint64
}

// Hold stops the manager from serving cached values and from storing new
// ones until release is called: lookups count as misses and memoized
// functions run, as while an invalidation of every tag were pending.
// Invalidations are sent as usual. Holds nest; release may be called more
// than once (only the first call counts).
//
// It is for a caller that knows the backend may hold entries whose
// invalidation has not been delivered yet, such as a durable outbox not yet
// flushed at start.
func (m *Manager) Hold() (release func()) {
	m.rec.holds.Add(1)
	// Entries of other managers carrying this one's tags (pairs) are
	// held too: the index makes their lookups look here.
	notePending(m)
	m.servingChanged()
	var once sync.Once
	return func() {
		once.Do(func() {
			// The count first: a lookup's reply checks the hold, then
			// the count (Manager.lookup), and one checked between a
			// release's two steps in the other order would find neither
			// the hold nor its end, and serve an entry read during it.
			m.servingChanged()
			m.rec.holds.Add(-1)
		})
	}
}

// servingMark is what a lookup samples before its round trip: the counts
// of the events after which an entry read before them may no longer be
// served, this manager's (its Holds, its pending invalidations delivered,
// its breaker's changes) and every manager's (pendingIndex.changes: those
// of other managers matter only to entries carrying their tags).
type servingMark struct{ own, any uint64 }

// servingChanged moves the counts a lookup samples (servingMark): a hold
// taken or released, a pending invalidation delivered, a change of the
// breaker's state. A hit checked against those states only when its reply
// arrives would serve an entry read before the delivery that ended one.
func (m *Manager) servingChanged() {
	m.peers.changes.Add(1)
	pendingIndex.changes.Add(1)
}

func (m *Manager) servingState() servingMark {
	return servingMark{m.peers.changes.Load(), pendingIndex.changes.Load()}
}

// movedSince reports whether an entry with deps, read after mark was
// taken, may predate a delivery that has ended a hold or a pending
// invalidation since (or an opening of the breaker): the own count
// moved, or the count of all managers moved and deps name a tag of
// another manager.
func (m *Manager) movedSince(mark servingMark, deps []string) bool {
	if m.peers.changes.Load() != mark.own {
		return true
	}
	if pendingIndex.changes.Load() == mark.any {
		return false
	}
	for _, d := range deps {
		if dep := backends.ParseDep(m.ns, d); !dep.Carried && dep.NS != m.ns {
			return true
		}
	}
	return false
}

// Held reports whether a Hold is in force.
func (m *Manager) Held() bool { return m.rec.holds.Load() > 0 }

// AddRecoveryCheck registers check with the manager's circuit breaker
// (WithBreaker): once the breaker has opened, its probe closes it only when
// the backend answers and every check then returns nil. A check that fails
// keeps the breaker open until the next probe. ctx ends when the manager
// closes; the check bounds its own work. Without a breaker
// (WithoutBreaker) checks never run. remove unregisters check.
func (m *Manager) AddRecoveryCheck(check func(ctx context.Context) error) (remove func()) {
	m.rec.mu.Lock()
	defer m.rec.mu.Unlock()
	if m.rec.checks == nil {
		m.rec.checks = map[uint64]func(context.Context) error{}
	}
	id := m.rec.next
	m.rec.next++
	m.rec.checks[id] = check
	return func() {
		m.rec.mu.Lock()
		defer m.rec.mu.Unlock()
		delete(m.rec.checks, id)
	}
}

// errRecoveryCheck is what a probe reports when the backend answered but a
// recovery check failed: the breaker stays open.
var errRecoveryCheck = errors.New("depcache: the backend answers, but a recovery check failed")

// runRecoveryChecks runs every registered check. Its error never carries
// the check's own error chain (which may hold a backend's reply, which the
// breaker would take for an answer): the breaker must count it as down.
func (m *Manager) runRecoveryChecks(ctx context.Context) error {
	m.rec.mu.Lock()
	checks := make([]func(context.Context) error, 0, len(m.rec.checks))
	for _, c := range m.rec.checks {
		checks = append(checks, c)
	}
	m.rec.mu.Unlock()
	for _, c := range checks {
		if err := c(ctx); err != nil {
			return fmt.Errorf("%w: %v", errRecoveryCheck, err)
		}
	}
	return nil
}
