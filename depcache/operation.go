package depcache

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/internal/pluginapi"
)

// computation is one run of a cached function: it collects the
// dependencies discovered while the function runs, carries the epoch read
// before it started, and closes when the function returns.
//
// A dependency is a pair (manager, tag). deps holds them in the form the
// entry stores them (backends.ParseDep), relative to m's namespace: a plain
// tag is m's own, backends.ForeignDep names a tag of another manager on the
// same backend, and backends.CarriedDep one that AddDependencyTo addressed
// to an enclosing computation of another manager, which this one carries
// up without depending on it.
//
// A transparent computation stores nothing (a disabled or closed manager,
// an unknown ManagerName, an unkeyable function, a context that forbids
// reading): whatever reaches it — dependencies, epochs of cached results —
// passes straight to its parent, as if it were not there.
type computation struct {
	m           *Manager // nil only for a transparent computation with no manager
	key         string
	parent      *computation
	transparent bool
	start       time.Time // monotonic: when since was read
	lease       string    // the store's fill lease from the miss, if any

	mu         sync.Mutex
	deps       map[string]struct{}
	otherStore string // a manager on another backend whose pairs reached this one
	since      backends.Epoch
	ordered    bool // false once since cannot be ordered (foreign era)
	ttl        time.Duration
	ttlSet     bool
	skip       string // non-empty: do not store, and why
	closed     bool
	late       bool   // a dependency arrived after close
	storedAs   string // key stored under, for a late AddDependency to undo
	final      closing
}

// closing is what a computation had gathered when it closed.
type closing struct {
	deps       []string // as the entry stores them
	otherStore string
	since      backends.Epoch
	ttl        time.Duration
	ttlSet     bool
	skip       string
}

// errLateDependency is counted when a goroutine adds a dependency to a
// computation that has already returned.
var errLateDependency = errors.New("depcache: AddDependency after the cached function returned; the entry is deleted")

type traceKey struct{}

func current(ctx context.Context) *computation {
	c, _ := pluginapi.ComputationOf(ctx).(*computation)
	return c
}

// validTags returns tags without those no entry can carry (empty, or
// starting with a byte that marks the stored forms of pairs), reporting
// each one dropped as a usage error of m.
func validTags(m *Manager, key string, tags []string) []string {
	if !slices.ContainsFunc(tags, func(t string) bool { return !backends.IsPlainTag(t) }) {
		return tags
	}
	out := tags[:0:0]
	for _, t := range tags {
		if !backends.IsPlainTag(t) {
			m.usageError(key, fmt.Errorf("depcache: dependency tag %q ignored: empty or starting with a reserved byte", t))
			continue
		}
		out = append(out, t)
	}
	return out
}

// addTags adds tags of the computation's own manager.
func (c *computation) addTags(tags []string) {
	tags = validTags(c.m, c.key, tags)
	if len(tags) == 0 {
		return
	}
	if c.m == nil {
		// Transparent with no manager of its own: the tags are its
		// parent's, as if the function were called directly.
		if c.parent != nil {
			c.parent.addTags(tags)
		}
		return
	}
	c.inherit(c.m, tags)
}

// inherit adds deps, written as entries of manager from store them, to the
// computation: a child's dependencies on its miss or hit, or tags added
// directly. from may be nil when every dep is carried.
func (c *computation) inherit(from *Manager, deps []string) {
	if len(deps) == 0 {
		return
	}
	if c.transparent {
		if c.parent != nil {
			c.parent.inherit(from, deps)
		}
		return
	}
	c.mu.Lock()
	if c.closed {
		c.late = true
		key := c.storedAs
		c.mu.Unlock()
		c.m.lateDependency(key, deps)
		return
	}
	if c.deps == nil {
		c.deps = make(map[string]struct{}, len(deps))
	}
	fromNS := ""
	if from != nil {
		fromNS = from.ns
	}
	registered := false
	for _, d := range deps {
		dep := backends.ParseDep(fromNS, d)
		switch {
		case dep.Carried && dep.NS == c.m.name:
			// Addressed to this computation's manager: from here up
			// an ordinary pair.
			c.deps[dep.Tag] = struct{}{}
			registered = true
		case dep.Carried:
			c.deps[backends.CarriedDep(dep.NS, dep.Tag)] = struct{}{}
		case dep.NS == c.m.ns:
			c.deps[dep.Tag] = struct{}{}
			registered = true
		default:
			c.deps[backends.ForeignDep(dep.NS, dep.Tag)] = struct{}{}
			registered = true
		}
	}
	c.mu.Unlock()
	if registered && from != nil && from != c.m && !sameStore(from.backend, c.m.backend) {
		c.dependOnOtherStore(from.Name())
	}
}

// dependOnOtherStore records that the computation depends on tags of a
// manager on another backend: no store can check and register those pairs
// atomically with the fill, so nothing is stored (logged once per pair of
// managers), and no enclosing computation stores either.
func (c *computation) dependOnOtherStore(manager string) {
	if c.transparent {
		if c.parent != nil {
			c.parent.dependOnOtherStore(manager)
		}
		return
	}
	c.mu.Lock()
	first := c.otherStore == ""
	if first {
		c.otherStore = manager
		if c.skip == "" {
			c.skip = fmt.Sprintf("depends on tags of manager %q, which is on another backend", manager)
		}
	}
	c.mu.Unlock()
	if first {
		c.m.logOnce("other-store:"+manager, "depcache: a computation depends on tags of a manager on another backend; no store can register them with its fill, so it is not stored",
			"dependency_manager", manager, "key", c.key)
	}
}

// sameStore reports whether a and b are one store, where one fill can
// register an entry under tags of both managers.
func sameStore(a, b backends.Backend) (same bool) {
	if a == nil || b == nil {
		return false
	}
	ta := reflect.TypeOf(a)
	if ta != reflect.TypeOf(b) || !ta.Comparable() {
		return false
	}
	defer func() {
		if recover() != nil { // a comparable type holding an uncomparable value
			same = false
		}
	}()
	return a == b
}

// useEntry records that the computation used a cached result computed from
// since: a fill must not claim to be newer than what it used.
func (c *computation) useEntry(since backends.Epoch) {
	if c.transparent {
		if c.parent != nil {
			c.parent.useEntry(since)
		}
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ordered {
		return
	}
	older, ok := backends.Older(c.since, since)
	if !ok {
		c.ordered = false
		if c.skip == "" {
			c.skip = "used a cached result that cannot be ordered against this fill (another backend or era)"
		}
		return
	}
	c.since = older
}

func (c *computation) skipFill(reason string) {
	c.mu.Lock()
	if c.skip == "" {
		c.skip = reason
	}
	c.mu.Unlock()
}

// SkipFillAll skips the fill of c and of every computation enclosing it;
// it implements pluginapi.Computation.
func (c *computation) SkipFillAll(reason string) {
	for ; c != nil; c = c.parent {
		c.skipFill(reason)
	}
}

// computing reports whether c or a computation enclosing it computes key
// of m.
func (c *computation) computing(m *Manager, key string) bool {
	for ; c != nil; c = c.parent {
		if c.m == m && c.key == key {
			return true
		}
	}
	return false
}

// finish closes the computation and hands its dependencies and epoch to
// the enclosing one. It runs once, when the function returns or panics.
func (c *computation) finish() {
	c.mu.Lock()
	c.closed = true
	gathered := closing{since: c.since, ttl: c.ttl, ttlSet: c.ttlSet, skip: c.skip, otherStore: c.otherStore}
	gathered.deps = make([]string, 0, len(c.deps))
	for d := range c.deps {
		gathered.deps = append(gathered.deps, d)
	}
	sort.Strings(gathered.deps)
	c.final = gathered
	ordered := c.ordered
	c.mu.Unlock()

	parent := c.parent
	if parent == nil || c.transparent {
		return // a transparent computation passed everything on already
	}
	parent.inherit(c.m, gathered.deps)
	if gathered.otherStore != "" {
		parent.dependOnOtherStore(gathered.otherStore)
	}
	switch {
	case !ordered:
		parent.skipFill("a nested computation used a cached result that cannot be ordered")
	case !gathered.since.IsZero():
		parent.useEntry(gathered.since)
	}
}

// markStored records the key the fill stored; it reports whether a late
// dependency already arrived, in which case the caller deletes the entry.
func (c *computation) markStored(key string) (late bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.storedAs = key
	return c.late
}

// AddDependency tags the innermost cached computation running under ctx with
// deps, as dependencies of that computation's manager: invalidating any of
// them in that manager deletes the entry it stores. Outside a cached
// computation it does nothing. It is safe to call from goroutines the
// computation started, as long as they finish before the function returns;
// a dependency added later is a logged, counted error, and the entry just
// stored is deleted.
//
// A computation that does not cache (its manager is disabled or closed, its
// ManagerName unknown, its argument unkeyable, or ctx came from Bypass) is
// transparent: what reaches it passes to the computation enclosing it. deps
// added to it are pairs of its manager, or, with no manager, of the
// enclosing computation's.
func AddDependency(ctx context.Context, deps ...string) {
	if c := current(ctx); c != nil {
		c.addTags(deps)
	}
}

// AddDependency tags the innermost cached computation running under ctx,
// whatever its manager, with deps as dependencies of m: m.InvalidateDependency
// of any of them deletes the entry that computation stores, and every entry
// built from it. Where the computation's manager is on another backend than
// m, no store can register the entry under m's tags, so that computation
// and those enclosing it are not filled (logged once). Outside a cached
// computation it does nothing.
//
// Compare the package-level AddDependency, whose tags belong to the
// computation's own manager, and AddDependencyTo, which addresses the
// innermost computation of a named manager. The GORM plugin tags reads with
// its manager's tags this way.
func (m *Manager) AddDependency(ctx context.Context, deps ...string) {
	if c := current(ctx); c != nil {
		if deps = validTags(m, c.key, deps); len(deps) > 0 {
			c.inherit(m, deps)
		}
	}
}

// AddDependencyTo tags the innermost computation of the manager named
// manager (the current one if it is that manager's) with deps, as that
// manager's dependencies. Computations of other managers in between carry
// them up and store them in their entries, without depending on them, so
// that a computation that uses one of those entries later passes them on
// too. If no computation of that manager encloses ctx, the tags reach no
// computation that depends on them.
func AddDependencyTo(ctx context.Context, manager string, deps ...string) {
	c := current(ctx)
	if c == nil {
		return
	}
	deps = validTags(c.m, c.key, deps)
	carried := make([]string, len(deps))
	for i, d := range deps {
		carried[i] = backends.CarriedDep(manager, d)
	}
	c.inherit(nil, carried)
}

// SetTTL sets the lifetime of the entry the innermost computation stores,
// overriding the TTL option. NoExpiry asks for none.
func SetTTL(ctx context.Context, d time.Duration) {
	if c := current(ctx); c != nil {
		c.mu.Lock()
		c.ttl, c.ttlSet = d, true
		c.mu.Unlock()
	}
}

// CurrentKey returns the key of the innermost cached computation, the key
// that Get, Exists, TTL and Delete take; "" outside one.
func CurrentKey(ctx context.Context) string {
	if c := current(ctx); c != nil {
		return c.key
	}
	return ""
}

// CurrentManager returns the manager of the innermost cached computation, or
// nil outside one.
func CurrentManager(ctx context.Context) *Manager {
	if c := current(ctx); c != nil {
		return c.m
	}
	return nil
}

// SkipFill makes the innermost computation return its result without storing
// it. Callers waiting on the same computation compute for themselves.
func SkipFill(ctx context.Context, reason string) {
	if c := current(ctx); c != nil {
		c.skipFill(reason)
	}
}

// Bypass returns a context under which Memoize and Fetch neither read nor
// fill the cache; the functions run, and the dependencies they report still
// reach any computation enclosing ctx.
func Bypass(ctx context.Context) context.Context {
	ctx = orBackground(ctx)
	return pluginapi.Restrict(ctx, func() (bool, bool) { return false, false })
}

// Trace counts the memoized calls made under a context returned by Track.
type Trace struct{ hits, misses atomic.Int64 }

// Hits is the number of calls served from the cache.
func (t *Trace) Hits() int { return int(t.hits.Load()) }

// Misses is the number of calls that ran their function.
func (t *Trace) Misses() int { return int(t.misses.Load()) }

// String is "hit" when every call hit, "miss" when any missed, "" when none
// was made: the value of an X-Cache header.
func (t *Trace) String() string {
	switch {
	case t.misses.Load() > 0:
		return "miss"
	case t.hits.Load() > 0:
		return "hit"
	}
	return ""
}

// Track returns a context that records every memoized call made under it.
func Track(ctx context.Context) (context.Context, *Trace) {
	t := new(Trace)
	return context.WithValue(orBackground(ctx), traceKey{}, t), t
}

func traceOf(ctx context.Context) *Trace {
	t, _ := ctx.Value(traceKey{}).(*Trace)
	return t
}

func (c *computation) String() string { return fmt.Sprintf("computation(%s %q)", c.m.Name(), c.key) }
