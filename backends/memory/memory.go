package memory

import (
	"container/heap"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/depcache/go-depcache/backends"
)

// DefaultMaxFillAge is the longest fill a Backend allows unless
// WithMaxFillAge says otherwise.
const DefaultMaxFillAge = time.Minute

// sweepBudget bounds the expired entries one call removes in its sweep, so
// that a mass expiry is spread over many calls; each fill adds at most one.
const sweepBudget = 256

// Option configures a Backend.
type Option func(*config)

type config struct {
	now        func() time.Time
	maxEntries int
	maxFillAge time.Duration
}

// WithClock makes the Backend read the time from now instead of time.Now.
// Tests inject a clock they move by hand, so that expiry needs no sleeping.
// now is called concurrently (under a read lock).
func WithClock(now func() time.Time) Option {
	if now == nil {
		panic("memory: WithClock(nil)")
	}
	return func(c *config) { c.now = now }
}

// WithMaxEntries bounds the number of entries the Backend holds, across all
// namespaces. A fill of a new key into a full Backend evicts the least
// recently used entry (filled or looked up), with its registrations. Zero,
// the default, means unbounded.
func WithMaxEntries(n int) Option {
	if n < 0 {
		panic(fmt.Sprintf("memory: WithMaxEntries(%d): negative", n))
	}
	return func(c *config) { c.maxEntries = n }
}

// WithMaxFillAge sets the longest fill the Backend allows (default
// DefaultMaxFillAge): a fill whose Age is beyond it is refused as stale, and
// stamps older than it are pruned.
func WithMaxFillAge(d time.Duration) Option {
	if d <= 0 {
		panic(fmt.Sprintf("memory: WithMaxFillAge(%v): not positive", d))
	}
	return func(c *config) { c.maxFillAge = d }
}

// Backend is the in-process store. Create it with New; it is safe for
// concurrent use.
type Backend struct {
	now        func() time.Time
	maxEntries int
	maxFillAge time.Duration
	era        string

	n      atomic.Uint64 // the epoch; written under mu
	closed atomic.Bool   // written under mu

	mu       sync.RWMutex
	spaces   map[string]*space
	count    int        // entries in all spaces, expired ones not yet removed included
	lru      entry      // sentinel of the recency list (only with maxEntries): lru.next is the newest
	expiries expiryHeap // entries with an expiry, soonest first
	stamps   []stampRef // stamps in the order they were written, for pruning
	stampsAt int        // index of the oldest stamp not yet pruned

	// fillQueued, if set, runs in Fill before it takes the lock: tests
	// hold a fill there, as if it waited for the lock behind other calls.
	fillQueued func()

	hub hub // in-process tiers (notify.go)

	sets map[setKey]map[string]struct{} // backends.Sets (sets.go), under mu
}

var _ backends.Backend = (*Backend)(nil)

// space is one namespace.
type space struct {
	name    string
	entries map[string]*entry
	tags    map[string]*tagState
	// cleared is the namespace's stamp: the epoch of its last Clear (0:
	// none kept). Every fill that stores into the namespace or depends on
	// one of its tags is checked against it, as against a tag's stamp, so
	// that Clear is as strong as the invalidations it may stand for. It
	// is pruned like a tag's stamp; it is never in tags.
	cleared tagState
}

// tagState is what a space knows about a tag: the entries registered under
// it and its stamp, the epoch of its last invalidation (0: none kept).
type tagState struct {
	regs    map[*entry]struct{}
	stamp   uint64
	stamped time.Time
}

type entry struct {
	sp      *space
	key     string
	value   []byte
	deps    []string
	since   backends.Epoch
	expires time.Time // zero: never
	heapIdx int       // index in Backend.expiries, -1 if not there

	prev, next *entry // recency list, with maxEntries only
}

func (e *entry) expired(now time.Time) bool {
	return !e.expires.IsZero() && !now.Before(e.expires)
}

// stampRef queues a stamped tag, or a space's cleared stamp (ts is
// &sp.cleared), for pruning. Every tagState with a stamp
// has exactly one, and a tagState with a stamp is never dropped, so ts is
// the one its space holds under tag.
type stampRef struct {
	sp      *space
	tag     string
	ts      *tagState
	stamped time.Time // when the ref was queued: the queue is (nearly) in this order
}

// New returns an empty Backend, with an era of its own.
func New(opts ...Option) *Backend {
	c := config{now: time.Now, maxFillAge: DefaultMaxFillAge}
	for _, o := range opts {
		if o != nil { // an option built conditionally
			o(&c)
		}
	}
	var p [8]byte
	if _, err := rand.Read(p[:]); err != nil {
		panic(fmt.Sprintf("memory: random era: %v", err)) // crypto/rand never fails on supported platforms
	}
	b := &Backend{
		now:        c.now,
		maxEntries: c.maxEntries,
		maxFillAge: c.maxFillAge,
		era:        "mem" + hex.EncodeToString(p[:]),
		spaces:     map[string]*space{},
	}
	b.lru.next, b.lru.prev = &b.lru, &b.lru
	return b
}

// Lookup returns the entry under key, or a miss with the current epoch.
// The returned Value and Deps are the caller's own copies.
func (b *Backend) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	if b.maxEntries == 0 {
		// Fast path: a read lock, unless the entry has expired.
		b.mu.RLock()
		if b.closed.Load() {
			b.mu.RUnlock()
			return backends.Lookup{}, backends.ErrClosed
		}
		en := b.get(ns, key)
		if en == nil {
			l := backends.Lookup{Epoch: b.epoch()}
			b.mu.RUnlock()
			return l, nil
		}
		if en.expires.IsZero() || !en.expired(b.now()) {
			l := backends.Lookup{Found: true, Entry: en.copy()}
			b.mu.RUnlock()
			return l, nil
		}
		b.mu.RUnlock()
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return backends.Lookup{}, backends.ErrClosed
	}
	en := b.get(ns, key)
	if en != nil && en.expired(b.now()) {
		b.remove(en)
		en = nil
	}
	if en == nil {
		return backends.Lookup{Epoch: b.epoch()}, nil
	}
	b.touch(en)
	return backends.Lookup{Found: true, Entry: en.copy()}, nil
}

// copy returns the entry with its own copies of the value and deps.
func (e *entry) copy() backends.Entry {
	out := backends.Entry{Value: make([]byte, len(e.value)), Since: e.since}
	copy(out.Value, e.value)
	if len(e.deps) > 0 {
		out.Deps = append([]string(nil), e.deps...)
	}
	return out
}

// Fill stores f.Entry under f.Key unless f.Since is of another era, f.Age is
// beyond the longest allowed fill, or one of the entry's tags was
// invalidated after f.Since; then it returns an error wrapping
// backends.ErrStale and stores nothing.
func (b *Backend) Fill(ctx context.Context, ns string, f backends.Fill) error {
	if f.TTL < 0 && f.TTL != backends.NoExpiry {
		return fmt.Errorf("memory: fill %q: negative TTL %v", f.Key, f.TTL)
	}
	// The fill's age is counted up to the moment it holds the lock, by the
	// store's own clock: a fill may wait for the lock behind other calls,
	// and the first of them to run maintain after a stamp is due prunes it.
	arrived := b.now()
	if b.fillQueued != nil {
		b.fillQueued()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return backends.ErrClosed
	}
	now := b.now()
	age := f.Age + max(now.Sub(arrived), 0)
	if f.Current {
		f.Since, age = b.epoch(), 0
		f.Entry.Since = f.Since
	}

	// Every check runs before maintain, which prunes stamps: a fill must
	// never prune the stamp it is to be checked against. Within the bound
	// no such stamp can be pruned yet (it was written after Since, and is
	// pruned only once older than the bound).
	switch {
	case f.Since.Era != b.era:
		return fmt.Errorf("memory: fill %q: %w (epoch %v is not of era %s)", f.Key, backends.ErrStale, f.Since, b.era)
	case f.Since.N > b.n.Load():
		return fmt.Errorf("memory: fill %q: %w (epoch %v is not reached yet)", f.Key, backends.ErrStale, f.Since)
	case age > b.maxFillAge:
		return fmt.Errorf("memory: fill %q: %w (it ran %v, longer than %v)", f.Key, backends.ErrStale, age, b.maxFillAge)
	}
	if err := b.checkCleared(ns, f); err != nil {
		return err
	}
	for _, d := range f.Entry.Deps {
		dep := backends.ParseDep(ns, d)
		if dep.Carried {
			continue
		}
		if err := b.checkCleared(dep.NS, f); err != nil {
			return err
		}
		if sp := b.spaces[dep.NS]; sp != nil {
			if ts := sp.tags[dep.Tag]; ts != nil && ts.stamp > f.Since.N {
				return fmt.Errorf("memory: fill %q: %w (tag %q invalidated at %d, after %d)",
					f.Key, backends.ErrStale, d, ts.stamp, f.Since.N)
			}
		}
	}
	b.maintain(now)

	if old := b.get(ns, f.Key); old != nil {
		b.refill(old, f, now)
		return nil
	}
	if b.maxEntries > 0 && b.count >= b.maxEntries {
		b.remove(b.lru.prev) // the least recently used
	}

	sp := b.space(ns)
	en := &entry{
		sp:      sp,
		key:     f.Key,
		value:   append(make([]byte, 0, len(f.Entry.Value)), f.Entry.Value...),
		since:   f.Entry.Since,
		heapIdx: -1,
	}
	if len(f.Entry.Deps) > 0 {
		en.deps = append([]string(nil), f.Entry.Deps...)
	}
	sp.entries[f.Key] = en
	b.count++
	for _, d := range en.deps {
		b.register(en, d)
	}
	b.setExpiry(en, f.TTL, now)
	if b.maxEntries > 0 {
		b.pushFront(en)
	}
	return nil
}

// checkCleared refuses f if namespace ns was cleared after f.Since.
func (b *Backend) checkCleared(ns string, f backends.Fill) error {
	if sp := b.spaces[ns]; sp != nil && sp.cleared.stamp > f.Since.N {
		return fmt.Errorf("memory: fill %q: %w (namespace %q cleared at %d, after %d)",
			f.Key, backends.ErrStale, ns, sp.cleared.stamp, f.Since.N)
	}
	return nil
}

// refill stores f over the existing entry en in place: its registrations
// change only where the deps do.
func (b *Backend) refill(en *entry, f backends.Fill, now time.Time) {
	if !slices.Equal(en.deps, f.Entry.Deps) {
		for _, d := range en.deps {
			if !slices.Contains(f.Entry.Deps, d) {
				b.unregister(en, d)
			}
		}
		for _, d := range f.Entry.Deps {
			b.register(en, d)
		}
		en.deps = nil
		if len(f.Entry.Deps) > 0 {
			en.deps = append([]string(nil), f.Entry.Deps...)
		}
	}
	// No caller holds en.value: Lookup hands out copies.
	en.value = append(en.value[:0], f.Entry.Value...)
	en.since = f.Entry.Since
	b.setExpiry(en, f.TTL, now)
	b.touch(en)
}

// register records en under its dependency d, in the namespace d names
// (backends.ParseDep): a tag of another namespace registers it there, so
// that invalidating that tag removes it. A carried tag registers nothing.
func (b *Backend) register(en *entry, d string) {
	dep := backends.ParseDep(en.sp.name, d)
	if dep.Carried {
		return
	}
	sp := b.space(dep.NS)
	ts := sp.tags[dep.Tag]
	if ts == nil {
		ts = &tagState{}
		sp.tags[dep.Tag] = ts
	}
	if ts.regs == nil {
		ts.regs = map[*entry]struct{}{}
	}
	ts.regs[en] = struct{}{}
}

// unregister undoes register, dropping what becomes empty in another
// namespace (en's own is dropped by the caller, once).
func (b *Backend) unregister(en *entry, d string) {
	dep := backends.ParseDep(en.sp.name, d)
	if dep.Carried {
		return
	}
	sp := b.spaces[dep.NS]
	if sp == nil {
		return
	}
	if ts := sp.tags[dep.Tag]; ts != nil {
		delete(ts.regs, en)
		b.dropTagIfEmpty(sp, dep.Tag, ts)
	}
	if sp != en.sp {
		b.dropSpaceIfEmpty(sp)
	}
}

// setExpiry gives en the lifetime ttl from now (none for 0 or NoExpiry).
func (b *Backend) setExpiry(en *entry, ttl time.Duration, now time.Time) {
	switch {
	case ttl <= 0:
		en.expires = time.Time{}
		if en.heapIdx >= 0 {
			heap.Remove(&b.expiries, en.heapIdx)
		}
	case en.heapIdx >= 0:
		en.expires = now.Add(ttl)
		heap.Fix(&b.expiries, en.heapIdx)
	default:
		en.expires = now.Add(ttl)
		heap.Push(&b.expiries, en)
	}
}

// Epoch returns the current epoch.
func (b *Backend) Epoch(ctx context.Context) (backends.Epoch, error) {
	if b.closed.Load() {
		return backends.Epoch{}, backends.ErrClosed
	}
	return b.epoch(), nil
}

func (b *Backend) epoch() backends.Epoch {
	return backends.Epoch{Era: b.era, N: b.n.Load()}
}

// Invalidate advances the epoch, stamps each tag with it and removes every
// entry registered under any of them. It returns the number of distinct
// live entries removed. Without tags it does nothing.
func (b *Backend) Invalidate(ctx context.Context, ns string, tags ...string) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return 0, backends.ErrClosed
	}
	if len(tags) == 0 {
		return 0, nil
	}
	now := b.now()
	b.maintain(now)
	n := b.n.Add(1)
	sp := b.space(ns)
	removed := 0
	for _, t := range tags {
		ts := sp.tags[t]
		if ts == nil {
			ts = &tagState{}
			sp.tags[t] = ts
		}
		// Stamp first: with a stamp, remove keeps the tag's state. A tag
		// already stamped is queued for pruning already.
		if ts.stamp == 0 {
			b.stamps = append(b.stamps, stampRef{sp: sp, tag: t, ts: ts, stamped: now})
		}
		ts.stamp, ts.stamped = n, now
		regs := ts.regs
		ts.regs = nil // so that remove need not delete from it, one by one
		for en := range regs {
			if !en.expired(now) {
				removed++
			}
			b.remove(en)
		}
	}
	return removed, nil
}

// Delete removes the entries under keys and returns how many existed.
func (b *Backend) Delete(ctx context.Context, ns string, keys ...string) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return 0, backends.ErrClosed
	}
	now := b.now()
	b.maintain(now)
	removed := 0
	for _, k := range keys {
		if en := b.get(ns, k); en != nil {
			if !en.expired(now) {
				removed++
			}
			b.remove(en)
		}
	}
	return removed, nil
}

// TTL reports the remaining lifetime of the entry under key.
func (b *Backend) TTL(ctx context.Context, ns, key string) (time.Duration, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed.Load() {
		return 0, backends.ErrClosed
	}
	en := b.get(ns, key)
	if en == nil {
		return 0, fmt.Errorf("memory: %q: %w", key, backends.ErrNotFound)
	}
	if en.expires.IsZero() {
		return backends.NoExpiry, nil
	}
	left := en.expires.Sub(b.now())
	if left <= 0 {
		return 0, fmt.Errorf("memory: %q: %w", key, backends.ErrNotFound)
	}
	return left, nil
}

// Clear advances the epoch and stamps the namespace with it, so that every
// fill that started before it and stores into the namespace, or depends on
// one of its tags, is refused; then it removes every entry of the
// namespace, and every entry of another namespace registered under one of
// its tags (backends.ForeignDep), with their registrations: so it is as
// strong as invalidating every tag of the namespace. It returns the number
// of live entries of the namespace removed. Stamps stay until they are
// older than the longest allowed fill.
func (b *Backend) Clear(ctx context.Context, ns string) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return 0, backends.ErrClosed
	}
	now := b.now()
	b.maintain(now)
	n := b.n.Add(1)
	sp := b.space(ns)
	if sp.cleared.stamp == 0 {
		b.stamps = append(b.stamps, stampRef{sp: sp, ts: &sp.cleared, stamped: now})
	}
	sp.cleared.stamp, sp.cleared.stamped = n, now
	removed := 0
	for _, en := range sp.entries {
		if !en.expired(now) {
			removed++
		}
		b.remove(en)
	}
	// What is still registered under its tags belongs to other namespaces
	// (backends.ForeignDep): an invalidation of those tags would remove it.
	for _, ts := range sp.tags {
		for en := range ts.regs {
			b.remove(en)
		}
	}
	return removed, nil
}

// Close drops every entry; later calls of the other methods return
// backends.ErrClosed. Closing twice is harmless.
func (b *Backend) Close() error {
	// Tiers stop serving what a closed store no longer holds, as they do
	// on a Redis Backend that closes.
	defer b.hub.close()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed.Store(true)
	b.spaces = nil
	b.count = 0
	b.lru.next, b.lru.prev = &b.lru, &b.lru
	b.expiries = nil
	b.stamps, b.stampsAt = nil, 0
	b.sets = nil
	return nil
}

// get returns the entry under (ns, key), expired or not.
func (b *Backend) get(ns, key string) *entry {
	if sp := b.spaces[ns]; sp != nil {
		return sp.entries[key]
	}
	return nil
}

// space returns ns's space, creating it.
func (b *Backend) space(ns string) *space {
	sp := b.spaces[ns]
	if sp == nil {
		sp = &space{name: ns, entries: map[string]*entry{}, tags: map[string]*tagState{}}
		b.spaces[ns] = sp
	}
	return sp
}

// remove drops en and its registrations, and whatever becomes empty.
func (b *Backend) remove(en *entry) {
	sp := en.sp
	delete(sp.entries, en.key)
	b.count--
	for _, d := range en.deps {
		b.unregister(en, d)
	}
	if en.heapIdx >= 0 {
		heap.Remove(&b.expiries, en.heapIdx)
	}
	if en.next != nil {
		en.prev.next, en.next.prev = en.next, en.prev
		en.prev, en.next = nil, nil
	}
	b.dropSpaceIfEmpty(sp)
}

func (b *Backend) dropTagIfEmpty(sp *space, tag string, ts *tagState) {
	if len(ts.regs) == 0 && ts.stamp == 0 && sp.tags[tag] == ts { // not sp.cleared
		delete(sp.tags, tag)
	}
}

func (b *Backend) dropSpaceIfEmpty(sp *space) {
	if len(sp.entries) == 0 && len(sp.tags) == 0 && sp.cleared.stamp == 0 && b.spaces[sp.name] == sp {
		delete(b.spaces, sp.name)
	}
}

// pushFront puts en at the front of the recency list.
func (b *Backend) pushFront(en *entry) {
	en.prev, en.next = &b.lru, b.lru.next
	b.lru.next.prev = en
	b.lru.next = en
}

// touch marks en as just used.
func (b *Backend) touch(en *entry) {
	if en.next == nil || b.lru.next == en {
		return
	}
	en.prev.next, en.next.prev = en.next, en.prev
	b.pushFront(en)
}

// maintain is the amortised sweep run by every call that writes: it prunes
// the stamps older than the longest allowed fill (a tag is queued once per
// stamp it gets after having none, and requeued at most once per
// maxFillAge while it keeps being stamped) and removes up to sweepBudget
// expired entries (each fill adds at most one).
func (b *Backend) maintain(now time.Time) {
	for b.stampsAt < len(b.stamps) {
		ref := b.stamps[b.stampsAt]
		if now.Sub(ref.stamped) <= b.maxFillAge {
			break
		}
		b.stamps[b.stampsAt] = stampRef{}
		b.stampsAt++
		if ts := ref.ts; now.Sub(ts.stamped) <= b.maxFillAge {
			// Stamped again since it was queued: queue it for then. This
			// can put it behind younger refs, which only delays its pruning.
			ref.stamped = ts.stamped
			b.stamps = append(b.stamps, ref)
		} else {
			// A fill that started before this stamp was written has run
			// longer than the longest allowed fill: nothing needs it.
			ts.stamp, ts.stamped = 0, time.Time{}
			b.dropTagIfEmpty(ref.sp, ref.tag, ts)
			b.dropSpaceIfEmpty(ref.sp)
		}
	}
	if b.stampsAt > 64 && b.stampsAt*2 >= len(b.stamps) {
		n := copy(b.stamps, b.stamps[b.stampsAt:])
		clear(b.stamps[n:])
		b.stamps, b.stampsAt = b.stamps[:n], 0
	}

	for i := 0; i < sweepBudget && len(b.expiries) > 0 && b.expiries[0].expired(now); i++ {
		b.remove(b.expiries[0])
	}
}

// expiryHeap orders entries by expiry, soonest first (container/heap).
type expiryHeap []*entry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expires.Before(h[j].expires) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}

func (h *expiryHeap) Push(x any) {
	en := x.(*entry)
	en.heapIdx = len(*h)
	*h = append(*h, en)
}

func (h *expiryHeap) Pop() any {
	old := *h
	en := old[len(old)-1]
	old[len(old)-1] = nil
	en.heapIdx = -1
	*h = old[:len(old)-1]
	return en
}
