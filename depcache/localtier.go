package depcache

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/depcache/go-depcache/backends"
)

// DefaultLocalCacheTTL is how long a value stays in the in-process tier
// (WithLocalCacheTTL) at most.
const DefaultLocalCacheTTL = 10 * time.Second

// WithLocalCache keeps up to maxEntries decoded values in process, in front
// of the backend (off by default, and for maxEntries ≤ 0). A hit there
// costs no round trip and no decoding. It keeps the manager's guarantee
// across processes: the backend must implement backends.Notifier (the
// memory backend, and the Redis backend on a single Redis or Sentinel);
// elsewhere, Redis Cluster included, the tier stays off and the manager
// logs why. Values are shared between callers: see the package
// documentation, "The in-process tier".
func WithLocalCache(maxEntries int) Option {
	return func(c *config) {
		if maxEntries < 0 {
			c.invalid(fmt.Sprintf("WithLocalCache(%d): negative", maxEntries))
			return
		}
		c.localMax = maxEntries
	}
}

// WithLocalCacheTTL bounds how long a value stays in the in-process tier
// (default DefaultLocalCacheTTL): a value outlives its backend entry by at
// most this. It must be positive.
func WithLocalCacheTTL(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.invalid(fmt.Sprintf("WithLocalCacheTTL(%v): must be positive", d))
			return
		}
		c.localTTL = d
	}
}

// tier is a manager's in-process tier: decoded values by key, dropped by
// the changes its backend's notifier delivers (it is a backends.Listener).
//
// Reads are lock-free (the lease, then the cache). Insertions and changes
// take mu: a change bumps seq and drops what it condemns; an insertion is
// refused if seq moved since the caller read it, before its backend read,
// so that a value read before a change was applied never enters after it.
type tier struct {
	m     *Manager
	cache *otter.Cache[string, *tierEntry]
	lease *backends.Lease
	stop  func()

	seq   atomic.Uint64
	mu    sync.Mutex
	index map[depRef]map[string]*tierEntry // dependency -> keys holding it

	// Entries the cache let go, for the index: otter reports each one
	// under its own locks, so forget only queues it and whoever next
	// holds mu takes it out of the index (drain).
	deadMu sync.Mutex
	dead   []deadEntry
}

type deadEntry struct {
	key string
	e   *tierEntry
}

type tierEntry struct {
	expires int64 // backends.LeaseClock
	val     any
	deps    []string
	since   backends.Epoch
	refs    []depRef
	rv      reflect.Value // val, for Manager.Get
	ptr     reflect.Type  // *T for val's T; nil for a nil val
}

// depRef is one dependency (namespace, tag) of an entry.
type depRef struct{ ns, tag string }

var errNoNotifier = errors.New("depcache: WithLocalCache needs a backend that notifies other processes (backends.Notifier); the in-process tier is off")

// newTier starts m's tier, or returns nil if it is off or cannot be on.
func newTier(m *Manager) *tier {
	if m.cfg.localMax <= 0 || m.backend == nil || m.cfg.configErr != nil {
		return nil
	}
	nb, ok := m.backend.(backends.Notifier)
	if !ok {
		m.log.Error(errNoNotifier.Error(), "backend", fmt.Sprintf("%T", m.backend))
		return nil
	}
	t := &tier{m: m, index: map[depRef]map[string]*tierEntry{}}
	t.cache = otter.Must(&otter.Options[string, *tierEntry]{
		MaximumSize: m.cfg.localMax,
		// Atomic: on the goroutine that deletes, with no goroutine per
		// entry (OnDeletion's default executor starts one for each, which
		// for a reset of a full tier of 100,000 entries was 100,000
		// goroutines and 200 MB of stacks at once).
		OnAtomicDeletion: t.forget,
		// Entries expire by the clock reading get makes for the lease
		// anyway (one reading per hit, not two): otter needs none.
		Clock: noClock{},
	})
	lease, stop, err := nb.Listen(t)
	if err != nil {
		m.log.Error("depcache: the in-process tier is off", "err", err)
		t.cache.StopAllGoroutines()
		return nil
	}
	t.lease, t.stop = lease, stop
	return t
}

func (t *tier) close() {
	if t == nil {
		return
	}
	t.stop()
	t.mu.Lock()
	t.seq.Add(1)
	t.cache.InvalidateAll()
	t.resetIndex()
	t.mu.Unlock()
	t.cache.StopAllGoroutines()
}

// LocalCacheEnabled reports whether the manager has an in-process tier
// (WithLocalCache on a backend that can keep it coherent).
func (m *Manager) LocalCacheEnabled() bool { return m.tier != nil }

// LocalCacheServing reports whether the manager's in-process tier
// (WithLocalCache) is on and may serve now: off, or while its
// notifications are not confirmed (its lease has run out), every read goes
// to the backend.
func (m *Manager) LocalCacheServing() bool { return m.tier != nil && m.tier.lease.Valid() }

// get returns the entry under key if the tier may serve it.
func (t *tier) get(key string) (*tierEntry, bool) {
	// The lease's end is loaded before the entry is read and the clock
	// after: the lease held through the read (Lease.Until).
	until := t.lease.Until()
	if until == 0 {
		return nil, false
	}
	e, ok := t.cache.GetIfPresent(key)
	now := backends.LeaseClock()
	if now >= until {
		return nil, false
	}
	// Nothing is served while the breaker is open: the tier's lease can
	// outlast its opening, and values kept before the outage may predate
	// writes whose invalidation the recovery checks have not delivered.
	if !ok || now >= e.expires || t.m.pendingAffects(e.deps) || t.m.brk.open() {
		return nil, false
	}
	return e, true
}

// noClock is otter's clock for a cache without expiry: it is never read
// for anything that matters, so it costs nothing.
type noClock struct{}

func (noClock) NowNano() int64                      { return 0 }
func (noClock) Tick(time.Duration) <-chan time.Time { return nil }

// begin returns the sequence to present to keep: read it before the
// backend read whose value is kept.
func (t *tier) begin() uint64 {
	if t == nil {
		return 0
	}
	return t.seq.Load()
}

// keep inserts a value read from the backend (or stored there) after begin
// returned seq, unless a change came in between.
func (t *tier) keep(seq uint64, key string, val any, deps []string, since backends.Epoch) {
	if t == nil {
		return
	}
	// The local TTL bounds how long a value outlives its backend entry.
	e := &tierEntry{val: val, deps: deps, since: since, expires: backends.LeaseClock() + int64(t.m.cfg.localTTL)}
	if e.rv = reflect.ValueOf(val); e.rv.IsValid() {
		e.ptr = reflect.PointerTo(e.rv.Type())
	}
	for _, d := range deps {
		if dep := backends.ParseDep(t.m.ns, d); !dep.Carried {
			e.refs = append(e.refs, depRef{dep.NS, dep.Tag})
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.drain()
	if t.seq.Load() != seq {
		return
	}
	t.cache.Set(key, e)
	for _, r := range e.refs {
		keys := t.index[r]
		if keys == nil {
			keys = map[string]*tierEntry{}
			t.index[r] = keys
		}
		keys[key] = e
	}
}

// forget queues an entry the cache let go (evicted, replaced or dropped)
// for drain. It runs under the cache's locks: it takes only deadMu.
func (t *tier) forget(ev otter.DeletionEvent[string, *tierEntry]) {
	t.deadMu.Lock()
	t.dead = append(t.dead, deadEntry{ev.Key, ev.Value})
	t.deadMu.Unlock()
}

// drain removes the entries forget queued from the index, unless their
// key now holds another entry. t.mu is held.
func (t *tier) drain() {
	t.deadMu.Lock()
	dead := t.dead
	t.dead = nil
	t.deadMu.Unlock()
	for _, d := range dead {
		for _, r := range d.e.refs {
			if keys := t.index[r]; keys != nil && keys[d.key] == d.e {
				delete(keys, d.key)
				if len(keys) == 0 {
					delete(t.index, r)
				}
			}
		}
	}
}

// resetIndex empties the index after the cache was emptied: what forget
// queued until then is in no index. t.mu is held.
func (t *tier) resetIndex() {
	t.index = map[depRef]map[string]*tierEntry{}
	t.deadMu.Lock()
	t.dead = nil
	t.deadMu.Unlock()
}

// Changed drops what c condemns (backends.Listener).
func (t *tier) Changed(c backends.Change) {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.drain()
	t.seq.Add(1)
	for _, tag := range c.Tags {
		t.dropRef(depRef{c.NS, tag})
	}
	if c.NS == t.m.ns {
		for _, k := range c.Keys {
			t.cache.Invalidate(k)
		}
	}
	if !c.Clear {
		return
	}
	if c.NS == t.m.ns {
		t.cache.InvalidateAll()
		t.resetIndex()
		return
	}
	for r := range t.index {
		if r.ns == c.NS {
			t.dropRef(r)
		}
	}
}

func (t *tier) dropRef(r depRef) {
	for k := range t.index[r] {
		t.cache.Invalidate(k)
	}
	delete(t.index, r)
}

// Reset drops everything (backends.Listener).
func (t *tier) Reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seq.Add(1)
	t.cache.InvalidateAll()
	t.resetIndex()
}

// tierHit serves a memoized call from the tier: the hit's accounting is a
// backend hit's (stats, trace, the parent inherits the entry's tags and
// start).
func tierHit[R any](ctx context.Context, m *Manager, key string, parent *computation) (R, bool) {
	var zero R
	if m.tier == nil {
		return zero, false
	}
	e, ok := m.tier.get(key)
	if !ok {
		return zero, false
	}
	v, ok := e.val.(R)
	if !ok {
		return zero, false
	}
	m.localHit(key, e.deps)
	if t := traceOf(ctx); t != nil {
		t.hits.Add(1)
	}
	if parent != nil {
		parent.inherit(m, e.deps)
		parent.useEntry(e.since)
	}
	return v, true
}

// localHit is hit for a hit from the tier: one counter (Stats adds it to
// Hits), the same event.
func (m *Manager) localHit(key string, deps []string) {
	m.stats.localHits.Add(1)
	m.emit(Event{Kind: EventHit, Key: key, Deps: deps})
}

// tierGet serves Manager.Get from the tier: it sets *dst to the value if
// the value has dst's element type.
func (m *Manager) tierGet(key string, dst any) bool {
	if m.tier == nil {
		return false
	}
	e, ok := m.tier.get(key)
	if !ok {
		return false
	}
	// dst must be a *T for the value's T: compared by the pointer type
	// kept with the entry, which costs no reflection on the value.
	if e.ptr == nil || reflect.TypeOf(dst) != e.ptr {
		return false
	}
	dv := reflect.ValueOf(dst)
	if dv.IsNil() {
		return false
	}
	dv.Elem().Set(e.rv)
	m.localHit(key, e.deps)
	return true
}

// getKeep decodes a Get's backend hit twice: for the caller, into a fresh
// value that then replaces *dst (so that *dst reads as it would from the
// tier), and for the tier, into another, never into the caller's (a
// pre-filled dst, or the caller changing what it got, would leak into
// other callers' reads).
func (m *Manager) getKeep(seq uint64, key string, b []byte, dst any, entry backends.Entry) (handled bool, cached, err error) {
	dv := reflect.ValueOf(dst)
	if m.tier == nil || dv.Kind() != reflect.Pointer || dv.IsNil() {
		return false, nil, nil
	}
	fresh := reflect.New(dv.Type().Elem())
	cached, err = decodePayload(m.cfg.codec, nil, b, fresh.Interface())
	if err != nil {
		return true, nil, err
	}
	dv.Elem().Set(fresh.Elem())
	if cached != nil {
		return true, cached, nil
	}
	kept := reflect.New(dv.Type().Elem())
	if _, err := decodePayload(m.cfg.codec, nil, b, kept.Interface()); err == nil {
		m.tier.keep(seq, key, kept.Elem().Interface(), entry.Deps, entry.Since)
	}
	return true, nil, nil
}

// notifyChange applies c to this manager's tier and then tells every tier
// sharing the backend, in every process, waiting until each has dropped
// what c condemns (or stopped serving). Without a notifying backend there
// is no tier to tell.
func (m *Manager) notifyChange(ctx context.Context, c backends.Change) error {
	if m.tier != nil {
		m.tier.Changed(c) // at once, whatever becomes of the message
	}
	nb, ok := m.backend.(backends.Notifier)
	if !ok {
		return nil
	}
	if err := nb.Notify(ctx, c); err != nil {
		return fmt.Errorf("depcache: notify in-process tiers: %w", err)
	}
	return nil
}

// notifyClear is notifyChange for a Clear of the manager's namespace.
func (m *Manager) notifyClear(ctx context.Context) error {
	return m.notifyChange(ctx, backends.Change{NS: m.ns, Clear: true})
}
