package backends

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"sync/atomic"
	"time"
)

// Notifier is implemented by stores that can keep in-process tiers of
// decoded values (depcache.WithLocalCache) coherent across every process
// that shares the store. A store without it cannot carry a tier.
//
// The contract is the store's guarantee carried one level up: once Notify
// has returned nil, every tier listening on the store, in every process,
// has either dropped what the change condemns or stopped serving (its
// Lease has run out). Listeners get changes in the order the store applied
// them, from one goroutine.
type Notifier interface {
	// Listen starts delivering changes to l. The tier may serve from
	// memory only while the returned Lease is valid, and must take every
	// value it keeps through a Listener sequence check (see Listener).
	// stop ends the delivery.
	Listen(l Listener) (lease *Lease, stop func(), err error)

	// Notify tells every listening tier of c, after the store has applied
	// it, and waits (bounded) until each has dropped what c condemns or its
	// lease has run out. An error means some tier may still serve older
	// data: the caller retries as it retries a failed invalidation.
	Notify(ctx context.Context, c Change) error
}

// Change is what a tier must drop: the entries of namespace NS that depend
// on one of Tags (a ForeignDep of NS in another namespace too), the entries
// under Keys, or with Clear everything of NS and everything that depends on
// one of its tags.
type Change struct {
	NS    string
	Tags  []string
	Keys  []string
	Clear bool
}

// Listener receives changes. Changed and Reset are called from one
// goroutine, in order, and must return quickly (no I/O).
type Listener interface {
	// Changed drops what c condemns.
	Changed(c Change)
	// Reset drops everything: changes may have been lost (a subscription
	// dropped and came back). Only values read from the store after Reset
	// returned may be kept.
	Reset()
}

// Lease says until when a tier may serve from memory: a notifier extends
// it each time it has confirmed that every change published before a
// recent moment has been delivered, and lets it run out when it cannot.
// The zero Lease is expired. It is safe for concurrent use.
type Lease struct {
	until atomic.Int64 // LeaseClock time
}

// leaseBase anchors LeaseClock on the monotonic clock.
var leaseBase = time.Now()

// LeaseClock is the monotonic time leases are measured in.
func LeaseClock() int64 { return int64(time.Since(leaseBase)) }

// Valid reports whether the lease has not run out.
func (l *Lease) Valid() bool { return l.ValidAt(LeaseClock()) }

// ValidAt reports whether the lease has not run out at now, a LeaseClock
// reading.
func (l *Lease) ValidAt(now int64) bool { return now < l.until.Load() }

// Until is when the lease runs out, a LeaseClock time (0: revoked). A
// reader that loads it before reading what the lease covers, and checks a
// LeaseClock reading taken after against it, knows the lease held through
// the whole read: a check before the read alone lets a reader stalled
// between them serve what an invalidation that gave up on the lease has
// since condemned.
func (l *Lease) Until() int64 { return l.until.Load() }

// ExtendTo moves the end of the lease to until (a LeaseClock time), never
// back.
func (l *Lease) ExtendTo(until int64) {
	for {
		cur := l.until.Load()
		if until <= cur || l.until.CompareAndSwap(cur, until) {
			return
		}
	}
}

// Forever makes the lease never run out, for stores whose changes are
// delivered before Notify returns (in-process stores).
func (l *Lease) Forever() { l.until.Store(math.MaxInt64) }

// Revoke ends the lease now.
func (l *Lease) Revoke() { l.until.Store(0) }

// AppendChange appends the wire form of c to b, for stores that carry
// changes between processes. Tags and keys are any bytes.
func AppendChange(b []byte, c Change) []byte {
	flags := byte(0)
	if c.Clear {
		flags = 1
	}
	b = append(b, flags)
	b = appendString(b, c.NS)
	b = binary.AppendUvarint(b, uint64(len(c.Tags)))
	for _, t := range c.Tags {
		b = appendString(b, t)
	}
	b = binary.AppendUvarint(b, uint64(len(c.Keys)))
	for _, k := range c.Keys {
		b = appendString(b, k)
	}
	return b
}

var errBadChange = errors.New("backends: malformed change")

// ParseChange reads the wire form of AppendChange.
func ParseChange(b []byte) (Change, error) {
	if len(b) == 0 {
		return Change{}, errBadChange
	}
	c := Change{Clear: b[0]&1 != 0}
	r := reader{b: b[1:]}
	c.NS = r.str()
	c.Tags = r.strs()
	c.Keys = r.strs()
	if r.bad || len(r.b) != 0 {
		return Change{}, errBadChange
	}
	return c, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

type reader struct {
	b   []byte
	bad bool
}

func (r *reader) uvarint() uint64 {
	n, k := binary.Uvarint(r.b)
	if k <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[k:]
	return n
}

func (r *reader) str() string {
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)) {
		r.bad = true
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) strs() []string {
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)) { // each element takes at least a byte
		r.bad = true
		return nil
	}
	var out []string
	for range n {
		out = append(out, r.str())
	}
	return out
}
