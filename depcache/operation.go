package depcache

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/depcache/go-depcache/backends"
)

// computation is one run of a cached function on a miss: it collects the
// dependencies discovered while the function runs, carries the epoch read
// before it started, and closes when the function returns.
type computation struct {
	m      *Manager
	key    string
	parent *computation
	start  time.Time // monotonic: when since was read
	lease  string    // the store's fill lease from the miss, if any

	mu       sync.Mutex
	deps     map[string]struct{}
	since    backends.Epoch
	ordered  bool // false once since cannot be ordered (foreign era)
	ttl      time.Duration
	ttlSet   bool
	skip     string // non-empty: do not store, and why
	closed   bool
	late     bool   // a dependency arrived after close
	storedAs string // key stored under, for a late AddDependency to undo
	final    closing
}

// closing is what a computation had gathered when it closed.
type closing struct {
	deps   []string
	since  backends.Epoch
	ttl    time.Duration
	ttlSet bool
	skip   string
}

// errLateDependency is counted when a goroutine adds a dependency to a
// computation that has already returned.
var errLateDependency = errors.New("depcache: AddDependency after the cached function returned; the entry is deleted")

type computationKey struct{}
type restrictKey struct{}
type traceKey struct{}

func current(ctx context.Context) *computation {
	if ctx == nil {
		return nil
	}
	c, _ := ctx.Value(computationKey{}).(*computation)
	return c
}

func (c *computation) addDeps(deps []string) {
	if len(deps) == 0 {
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
	for _, d := range deps {
		if d == "" {
			c.m.usageError(c.key, errors.New("depcache: empty dependency tag ignored"))
			continue
		}
		c.deps[d] = struct{}{}
	}
	c.mu.Unlock()
}

// useEntry records that the computation used a cached result computed from
// since: a fill must not claim to be newer than what it used.
func (c *computation) useEntry(since backends.Epoch) {
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

// finish closes the computation and hands its dependencies and epoch to
// the enclosing one. It runs once, when the function returns or panics.
func (c *computation) finish() {
	c.mu.Lock()
	c.closed = true
	f := closing{since: c.since, ttl: c.ttl, ttlSet: c.ttlSet, skip: c.skip}
	f.deps = make([]string, 0, len(c.deps))
	for d := range c.deps {
		f.deps = append(f.deps, d)
	}
	sort.Strings(f.deps)
	c.final = f
	ordered := c.ordered
	c.mu.Unlock()

	p := c.parent
	if p == nil {
		return
	}
	p.addDeps(f.deps)
	switch {
	case !ordered:
		p.skipFill("a nested computation used a cached result that cannot be ordered")
	case !f.since.IsZero():
		p.useEntry(f.since)
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
// deps: invalidating any of them deletes the entry it stores. Outside a
// cached computation it does nothing. It is safe to call from goroutines the
// computation started, as long as they finish before the function returns;
// a dependency added later is a logged, counted error, and the entry just
// stored is deleted.
func AddDependency(ctx context.Context, deps ...string) {
	if c := current(ctx); c != nil {
		c.addDeps(deps)
	}
}

// AddDependencyTo tags the innermost computation of the manager named
// manager, which may enclose computations of other managers. If no
// computation of that manager is running under ctx it does nothing.
func AddDependencyTo(ctx context.Context, manager string, deps ...string) {
	for c := current(ctx); c != nil; c = c.parent {
		if c.m.Name() == manager {
			c.addDeps(deps)
			return
		}
	}
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

// SkipFillAll is SkipFill for the innermost computation and every
// computation enclosing it: for a result that must not reach the cache by any
// path, such as one read inside a database transaction.
func SkipFillAll(ctx context.Context, reason string) {
	for c := current(ctx); c != nil; c = c.parent {
		c.skipFill(reason)
	}
}

// Bypass returns a context under which Memoize and Fetch neither read nor
// fill the cache; the functions run, and the dependencies they report still
// reach any computation enclosing ctx.
func Bypass(ctx context.Context) context.Context {
	return Restrict(ctx, func() (bool, bool) { return false, false })
}

// Restrict returns a context under which each memoized call asks allow
// whether it may read the cache and whether it may fill it. A call that may
// not read runs its function; one that may not fill returns its result
// without storing it. The GORM plugin uses it for calls inside a database
// transaction, whose answers change once the transaction writes.
func Restrict(ctx context.Context, allow func() (read, fill bool)) context.Context {
	return context.WithValue(ctx, restrictKey{}, allow)
}

// allowed reports what the innermost Restrict under ctx allows.
func allowed(ctx context.Context) (read, fill bool) {
	if allow, ok := ctx.Value(restrictKey{}).(func() (bool, bool)); ok {
		return allow()
	}
	return true, true
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
	return context.WithValue(ctx, traceKey{}, t), t
}

func traceOf(ctx context.Context) *Trace {
	t, _ := ctx.Value(traceKey{}).(*Trace)
	return t
}

func (c *computation) String() string { return fmt.Sprintf("computation(%s %q)", c.m.Name(), c.key) }
