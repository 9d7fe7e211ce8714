package depcache

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/internal/pluginapi"
	"github.com/depcache/go-depcache/keys"
)

// MemoOption configures Memoize and Fetch.
type MemoOption func(*memoSpec)

// Result describes one memoized call, for OnResult.
type Result struct {
	Func    string // the function identity used in keys
	Key     string
	Manager string
	Args    []any
	Hit     bool
	Value   any
	Err     error
}

type memoSpec struct {
	manager     *Manager
	managerName string
	registry    *Registry
	ttl         time.Duration
	ttlSet      bool
	deps        []string
	errRules    []errorMatcher
	onResult    func(Result)
	keyName     string

	result  atomic.Pointer[resultCheck] // can the codec round-trip the result type
	perCall bool                        // Fetch's: result types vary, the verdict is not kept in result
	id      string                      // function identity
	idErr   error                       // why the function cannot be keyed
	nilFn   bool                        // Memoize was given a nil function: every call returns errNilFunc
	fn      any                         // the function, when id is its symbol (see closures.go)
	logOnce sync.Once
}

// Using makes the function cache in m.
func Using(m *Manager) MemoOption {
	return func(s *memoSpec) {
		if m == nil {
			s.invalid("Using(nil)")
			return
		}
		s.manager = m
	}
}

// ManagerName makes the function cache in the manager registered under
// name, looked up on every call; an unknown name is a logged error and the
// call runs uncached.
func ManagerName(name string) MemoOption {
	return func(s *memoSpec) {
		if name == "" {
			s.invalid("ManagerName: empty name")
			return
		}
		s.managerName = name
	}
}

// InRegistry makes ManagerName and the default manager resolve in r instead
// of DefaultRegistry.
func InRegistry(r *Registry) MemoOption {
	return func(s *memoSpec) {
		if r == nil {
			s.invalid("InRegistry(nil)")
			return
		}
		s.registry = r
	}
}

// TTL sets the lifetime of the entries the function stores (0: the
// manager's default). SetTTL inside the function overrides it.
func TTL(d time.Duration) MemoOption {
	return func(s *memoSpec) {
		if d < 0 && d != NoExpiry {
			s.invalid(fmt.Sprintf("TTL(%v): negative; use NoExpiry or 0 for the default", d))
			return
		}
		s.ttl, s.ttlSet = d, true
	}
}

// Deps adds dependencies every entry of the function carries.
func Deps(static ...string) MemoOption {
	return func(s *memoSpec) {
		if err := checkTags(static); err != nil {
			s.invalid("Deps: " + err.Error())
			return
		}
		s.deps = append(s.deps, static...)
	}
}

// CacheErrors caches errors that match one of targets by errors.Is. A cached
// error comes back with its message and still matches its target. Errors
// that match nothing are never cached.
func CacheErrors(targets ...error) MemoOption {
	return func(s *memoSpec) {
		for i, t := range targets {
			if t == nil {
				s.invalid(fmt.Sprintf("CacheErrors: target %d of %d is nil", i+1, len(targets)))
				continue
			}
			s.errRules = append(s.errRules, isMatcher(t))
		}
	}
}

// CacheErrorsAs caches errors that errors.As finds an E in. The E is encoded
// with the manager's codec, so its exported fields survive; a cached error
// comes back with its message and errors.As finds the decoded E in it. E
// must be a concrete type (a struct or a pointer to one).
func CacheErrorsAs[E error]() MemoOption {
	return func(s *memoSpec) {
		if reflect.TypeFor[E]().Kind() == reflect.Interface {
			s.invalid(fmt.Sprintf("CacheErrorsAs[%v]: an interface type cannot be decoded; name a concrete error type", reflect.TypeFor[E]()))
			return
		}
		s.errRules = append(s.errRules, asMatcher[E]())
	}
}

// OnResult calls fn after every call, hit or miss. A panic in fn is
// recovered and logged.
func OnResult(fn func(Result)) MemoOption { return func(s *memoSpec) { s.onResult = fn } }

// KeyName sets the function's identity in keys. Without it the identity is
// the function's symbol name and signature, which shifts when code moves;
// method values and generic functions have no usable symbol and need it.
// So do closures that a factory makes from one literal with different
// captured values (Memoize(multiplier(2)), Memoize(multiplier(3))): captured
// variables are not part of keys, so without KeyName the first closure
// value a manager sees owns the identity, and the others are logged once
// and run uncached. Entries outlive deploys: change the name when the
// result type changes in a way the codec would read old entries into
// without an error (a renamed field comes back zero from JSON).
func KeyName(name string) MemoOption {
	return func(s *memoSpec) {
		if name == "" {
			s.invalid("KeyName: empty name")
			return
		}
		s.keyName = name
	}
}

func newSpec(fn any, opts []MemoOption) *memoSpec {
	s := &memoSpec{}
	if v := reflect.ValueOf(fn); v.Kind() == reflect.Func && v.IsNil() {
		// Reported by each call: running it uncached, as other unusable
		// functions are, would panic on the nil function.
		s.nilFn = true
	}
	for _, o := range opts {
		if o != nil { // an option built conditionally
			o(s)
		}
	}
	if s.idErr != nil {
		return s
	}
	if s.keyName != "" {
		s.id = s.keyName
		return s
	}
	s.id, s.idErr = funcIdentity(fn)
	if s.idErr == nil {
		s.fn = fn
	}
	return s
}

// funcIdentity names fn by its symbol plus a hash of its signature.
func funcIdentity(fn any) (string, error) {
	v := reflect.ValueOf(fn)
	if v.Kind() != reflect.Func || v.IsNil() {
		return "", errNilFunc
	}
	f := runtime.FuncForPC(v.Pointer())
	if f == nil {
		return "", errors.New("depcache: function has no symbol; give it a KeyName")
	}
	name := f.Name()
	switch {
	case strings.HasSuffix(name, "-fm"):
		return "", fmt.Errorf("depcache: %s is a method value, and every receiver shares its symbol; give it a KeyName", name)
	case strings.Contains(name, "[...]"):
		return "", fmt.Errorf("depcache: %s is generic, and every instantiation shares its symbol; give it a KeyName", name)
	}
	h := fnv.New32a()
	h.Write([]byte(v.Type().String()))
	return name + "#" + strconv.FormatUint(uint64(h.Sum32()), 36), nil
}

// resolve picks the manager for one call; nil means run uncached.
func (s *memoSpec) resolve() *Manager {
	if s.manager != nil {
		return s.manager
	}
	r := s.registry
	if r == nil {
		r = defaultRegistry
	}
	if s.managerName != "" {
		if m, ok := r.Lookup(s.managerName); ok {
			return m
		}
		s.logOnce.Do(func() { slogError(fmt.Errorf("depcache: no manager named %q; %s runs uncached", s.managerName, s.id)) })
		return nil
	}
	m, err := r.Default()
	if err != nil {
		s.logOnce.Do(func() { slogError(fmt.Errorf("depcache: %s runs uncached: %w", s.id, err)) })
		return nil
	}
	return m
}

// Memoize returns fn cached by its argument. Calls with equal arguments (by
// keys.Of) share an entry; the dependencies fn adds with AddDependency, or
// that cached functions it calls report, tag the entry. If fn is nil, every
// call returns an error wrapping ErrInvalidOption.
func Memoize[A, R any](fn func(context.Context, A) (R, error), opts ...MemoOption) func(context.Context, A) (R, error) {
	s := newSpec(fn, opts)
	return func(ctx context.Context, a A) (R, error) {
		return call(ctx, s, "", []any{a}, func(ctx context.Context) (R, error) { return fn(ctx, a) })
	}
}

// Memoize0 is Memoize for a function of no argument.
func Memoize0[R any](fn func(context.Context) (R, error), opts ...MemoOption) func(context.Context) (R, error) {
	s := newSpec(fn, opts)
	return func(ctx context.Context) (R, error) {
		return call(ctx, s, "", nil, fn)
	}
}

// Memoize2 is Memoize for a function of two arguments.
func Memoize2[A, B, R any](fn func(context.Context, A, B) (R, error), opts ...MemoOption) func(context.Context, A, B) (R, error) {
	s := newSpec(fn, opts)
	return func(ctx context.Context, a A, b B) (R, error) {
		return call(ctx, s, "", []any{a, b}, func(ctx context.Context) (R, error) { return fn(ctx, a, b) })
	}
}

// Memoize3 is Memoize for a function of three arguments.
func Memoize3[A, B, C, R any](fn func(context.Context, A, B, C) (R, error), opts ...MemoOption) func(context.Context, A, B, C) (R, error) {
	s := newSpec(fn, opts)
	return func(ctx context.Context, a A, b B, c C) (R, error) {
		return call(ctx, s, "", []any{a, b, c}, func(ctx context.Context) (R, error) { return fn(ctx, a, b, c) })
	}
}

// Fetch returns the value cached under key in m, or runs fn and caches its
// result, with the same rules as Memoize. A nil m resolves as Memoize does
// (Using, ManagerName, else Default).
func Fetch[R any](ctx context.Context, m *Manager, key string, fn func(context.Context) (R, error), opts ...MemoOption) (R, error) {
	if fn == nil {
		var zero R
		return zero, errNilFunc
	}
	if len(opts) == 0 && m != nil && key != "" {
		// Nothing to build: the manager's own spec, shared by all its
		// Fetch calls without options.
		return call(ctx, m.fetchSpec, key, nil, fn)
	}
	s := fetchSpecs.Get().(*memoSpec)
	defer func() {
		*s = memoSpec{}
		fetchSpecs.Put(s)
	}()
	s.id, s.perCall = "fetch", true
	for _, o := range opts {
		if o != nil { // an option built conditionally
			o(s)
		}
	}
	if m != nil {
		s.manager = m
	}
	if key == "" && s.idErr == nil {
		s.idErr = checkKey("Fetch", key)
	}
	return call(ctx, s, key, nil, fn)
}

// errNilFunc is returned by every call of a function that Memoize (or
// Fetch) was given as nil.
var errNilFunc = fmt.Errorf("%w: Memoize or Fetch of a nil function", ErrInvalidOption)

// fetchSpecs recycles Fetch's specs, made from each call's options: the
// options see the spec (so it would escape), and nothing keeps it once call
// returns.
var fetchSpecs = sync.Pool{New: func() any { return new(memoSpec) }}

// call runs one memoized call. key is empty for Memoize, which derives it.
func call[R any](ctx context.Context, s *memoSpec, key string, args []any, fn func(context.Context) (R, error)) (R, error) {
	if s.nilFn {
		var zero R
		return zero, errNilFunc
	}
	ctx = orBackground(ctx)
	parent := current(ctx)
	m := s.resolve()
	if s.idErr != nil {
		s.logOnce.Do(func() {
			if s.perCall && m != nil {
				// Fetch makes a spec per call: once per manager and error,
				// as Memoize reports once per function, not once a call.
				if _, seen := m.logged.LoadOrStore("option:"+s.idErr.Error(), true); seen {
					return
				}
			}
			m.errorEvent(key, s.idErr)
			slogErrorIf(m == nil, s.idErr)
		})
		return runUncached(ctx, s, m, parent, key, args, fn)
	}
	if key == "" {
		var err error
		if key, err = memoKey(s.id, args); err != nil {
			// Two such arguments could share a key and be served each
			// other's results.
			m.usageErrorOnce("unkeyable:"+s.id, key, fmt.Errorf("depcache: %s runs uncached: %w", s.id, err))
			return runUncached(ctx, s, m, parent, s.id, args, fn)
		}
	}
	read, fill := pluginapi.Allowed(ctx)
	if m != nil && m.closed.Load() {
		m.logOnce("closed", "depcache: a memoized call on a closed manager runs uncached", "func", s.id)
		return runUncached(ctx, s, m, parent, key, args, fn)
	}
	if m == nil || !read || !m.Enabled() || !m.ownsIdentity(s) {
		return runUncached(ctx, s, m, parent, key, args, fn)
	}
	rc := s.checkResult(m, key, m.cfg.codec, reflect.TypeFor[R]())
	if rc.err != nil {
		return runUncached(ctx, s, m, parent, key, args, fn)
	}
	if parent.computing(m, key) {
		// Its flight (and its fill lease) is our own: waiting for it
		// would wait for ourselves, computing again recurse without end.
		var zero R
		err := fmt.Errorf("%w: %q, from inside its own computation", ErrCycle, key)
		m.usageError(key, err)
		return zero, err
	}

	if v, ok := tierHit[R](ctx, m, key, parent); ok {
		reportTo(s, m, key, args, true, v, nil)
		return v, nil
	}
	seq := m.tier.begin()
	l, reached, err := m.lookup(ctx, key)
	if err == nil && reached && l.Found {
		if v, cached, ok := serveEntry[R](ctx, s, m, parent, key, args, seq, &l); ok {
			return v, cached
		}
		l.Found = false // corrupt, and dropped
	}
	return callPastLookup(ctx, s, m, parent, key, args, fn, rc, fill, seq, l, reached, err)
}

// serveEntry decodes the entry a lookup found and serves it as a hit, or
// if it is unreadable deletes it and counts a miss (ok false).
func serveEntry[R any](ctx context.Context, s *memoSpec, m *Manager, parent *computation, key string, args []any, seq uint64, l *backends.Lookup) (v R, cached error, ok bool) {
	v, cached, derr := decodeResult[R](m.cfg.codec, s.errRules, l.Entry.Value)
	if derr != nil {
		m.dropCorrupt(ctx, key, derr)
		m.miss(key)
		return v, nil, false
	}
	if cached == nil {
		keepDecoded[R](m, s, seq, key, l.Entry.Value, l.Entry.Deps, l.Entry.Since)
	}
	m.hit(key, l.Entry.Deps)
	if t := traceOf(ctx); t != nil {
		t.hits.Add(1)
	}
	if parent != nil {
		parent.inherit(m, l.Entry.Deps)
		parent.useEntry(l.Entry.Since)
	}
	reportTo(s, m, key, args, true, v, cached)
	return v, cached, true
}

// callPastLookup is the rest of call after its first lookup (l, reached,
// err) did not serve a hit: waiting on a fill another process leads,
// looking up again, then computing and filling. It is a function of its
// own so that a hit, the common call, runs in call's small frame and
// touches none of this.
func callPastLookup[R any](ctx context.Context, s *memoSpec, m *Manager, parent *computation, key string, args []any, fn func(context.Context) (R, error), rc *resultCheck, fill bool, seq uint64, l backends.Lookup, reached bool, err error) (R, error) {
	var (
		deadline time.Time
		backoff  = time.Millisecond
	)
	for first := true; ; first = false {
		if !first {
			l, reached, err = m.lookup(ctx, key)
		}
		if err != nil { // strict, or ctx is done
			var zero R
			reportTo(s, m, key, args, false, zero, err)
			return zero, err
		}
		if !reached {
			// The backend failed (logged and counted): a miss during an
			// outage costs one timeout, not one per round trip.
			return runUncached(ctx, s, m, parent, key, args, fn)
		}
		if l.Found {
			if v, cached, ok := serveEntry[R](ctx, s, m, parent, key, args, seq, &l); ok {
				return v, cached
			}
		}
		if !l.Busy || m.cfg.fillWait <= 0 {
			break
		}
		// Another process is filling this key: wait for its value a
		// little (no more than half the caller's remaining time, as for
		// any cache operation), then compute without filling.
		if deadline.IsZero() {
			deadline = time.Now().Add(cacheBudget(ctx, m.cfg.fillWait))
		}
		wait := min(backoff, time.Until(deadline))
		if wait <= 0 {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			var zero R
			return zero, ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, 50*time.Millisecond)
	}
	lease := m.holdLease(key, l.Lease)
	defer lease.giveBack(ctx)
	since := l.Epoch
	if since.IsZero() {
		// The entry was unusable (corrupt, or tagged with a pending
		// invalidation): read the epoch now, before the computation.
		ectx, cancel := m.opContext(ctx)
		err = m.brk.do(ctx, func() (err error) {
			since, err = m.backend.Epoch(ectx)
			return err
		})
		cancel()
		if err != nil {
			// Releasing the lease would wait on the backend that just
			// failed; it expires on its own.
			lease.abandon()
			if err := m.failOpen("epoch", key, err); err != nil {
				var zero R
				return zero, err
			}
			return runUncached(ctx, s, m, parent, key, args, fn)
		}
	}
	fk := flightKey{key: key, noFill: !fill}
	f, leader := m.flights.join(fk)
	if !leader {
		select {
		case <-f.done:
		case <-ctx.Done():
			var zero R
			return zero, ctx.Err()
		}
		if v, ok := f.val.(R); ok && f.stored {
			m.stats.sharedFlights.Add(1)
			if t := traceOf(ctx); t != nil {
				t.hits.Add(1)
			}
			if parent != nil {
				parent.inherit(m, f.deps)
				parent.useEntry(f.since)
			}
			reportTo(s, m, key, args, true, v, f.err)
			return v, f.err
		}
		// The leader stored nothing: its value may be one an invalidation
		// condemned. Compute for ourselves, outside any flight.
		f = nil
	}
	c := &computation{m: m, key: key, parent: parent, start: time.Now(), since: since, ordered: true, lease: l.Lease}
	switch {
	case !fill:
		c.skip = "filling is not allowed under this context"
	case l.Busy:
		c.skip = "another caller holds the fill lease"
	}
	if f != nil {
		defer func() {
			// Also on a panic in fn: waiters compute for themselves.
			m.flights.leave(fk, f)
			close(f.done)
		}()
	}
	v, fnErr := compute(ctx, c, s, fn)
	if f != nil {
		m.flights.leave(fk, f)
	}
	seq = m.tier.begin()
	stored, payload, fillErr := m.store(ctx, s, c, encodable(rc, &v), fnErr)
	if stored {
		lease.used()
		if fnErr == nil {
			keepDecoded[R](m, s, seq, key, payload, c.final.deps, c.final.since)
		}
	}
	if fillErr != nil {
		// As for the epoch read: the lease expires on its own rather than
		// cost the call a second timeout.
		lease.abandon()
		fillErr = m.failOpen("fill", key, fillErr)
	}
	if f != nil && stored {
		f.stored, f.val, f.err, f.deps, f.since = true, v, fnErr, c.final.deps, c.final.since
	}
	if fillErr != nil {
		reportTo(s, m, key, args, false, v, fillErr)
		return v, fillErr
	}
	reportTo(s, m, key, args, false, v, fnErr)
	return v, fnErr
}

// memoKey is a memoized call's key, id + ":" + keys.Of(args...), made as
// one string.
func memoKey(id string, args []any) (string, error) {
	var buf [128]byte
	b := append(buf[:0], id...)
	b = append(b, ':')
	b, err := keys.AppendOf(b, args...)
	return string(b), err
}

// compute runs fn as computation c. However fn ends, c is closed and what
// it discovered reaches the enclosing computation.
func compute[R any](ctx context.Context, c *computation, s *memoSpec, fn func(context.Context) (R, error)) (R, error) {
	c.addTags(s.deps)
	if t := traceOf(ctx); t != nil {
		t.misses.Add(1)
	}
	defer c.finish()
	return fn(pluginapi.WithComputation(ctx, c))
}

// runUncached runs fn as a transparent computation: it stores nothing, and
// its dependencies and the epochs of the cached results it used pass to the
// enclosing computation, whose entry depends on what fn read.
func runUncached[R any](ctx context.Context, s *memoSpec, m *Manager, parent *computation, key string, args []any, fn func(context.Context) (R, error)) (R, error) {
	c := &computation{m: m, key: key, parent: parent, transparent: true, start: time.Now(), skip: "uncached"}
	v, err := compute(ctx, c, s, fn)
	reportTo(s, m, key, args, false, v, err)
	return v, err
}

// store fills the cache with what computation c returned, if it may. err
// is the backend's failure, not yet reported.
func (m *Manager) store(ctx context.Context, s *memoSpec, c *computation, v any, fnErr error) (stored bool, payload []byte, err error) {
	f := c.final
	if fnErr == nil {
		payload, err = encodeValue(m.cfg.codec, v)
	} else {
		var ok bool
		if payload, ok, err = encodeError(m.cfg.codec, s.errRules, fnErr); !ok {
			return false, nil, nil // errors not listed are never cached
		}
	}
	if err != nil {
		m.stats.skippedFills.Add(1)
		m.errorEvent(c.key, fmt.Errorf("depcache: %q returned uncached: encode with %s: %w", c.key, m.cfg.codec.Name(), err))
		return false, nil, nil
	}
	if m.tooLarge(s.id, c.key, len(payload)) != nil {
		m.stats.skippedFills.Add(1)
		return false, nil, nil
	}
	switch {
	case m.closed.Load():
		// Closed while the function ran: a closed manager fills nothing.
		m.skipped(c.key, ErrClosed)
		return false, nil, nil
	case f.skip != "":
		m.skipped(c.key, fmt.Errorf("depcache: not stored: %s", f.skip))
		return false, nil, nil
	case m.pendingAffects(f.deps):
		m.skipped(c.key, errPendingSkip)
		return false, nil, nil
	}
	ttl := s.ttl
	if f.ttlSet {
		ttl = f.ttl
	}
	if ttl, err = m.resolveTTL(ttl); err != nil {
		m.usageError(c.key, err)
		return false, nil, nil
	}
	if len(f.deps) == 0 {
		m.stats.noDepFills.Add(1)
		if _, seen := m.noDepLog.LoadOrStore(s.id, true); !seen {
			m.log.Warn("depcache: storing an entry with no dependency; nothing but its TTL will remove it (a query without WithContext(ctx)?)", "func", s.id, "key", c.key)
		}
	}
	// The value is good for every later reader even if this caller has
	// gone: store it under the fill's own timeout, not the caller's ctx.
	fctx, cancel := m.opContext(context.WithoutCancel(ctx))
	defer cancel()
	stored, err = m.fill(context.Background(), fctx, c.key, payload, f.deps, f.since, time.Since(c.start), ttl, c.lease, false)
	if err != nil {
		return false, nil, err
	}
	if stored && c.markStored(c.key) {
		m.lateDependency(c.key, nil)
		return false, nil, nil
	}
	return stored, payload, nil
}

// reportTo is report for a result of type R: it boxes v into the Result
// only when an OnResult callback is set, so that a call without one (the
// common case, and every hit) pays no allocation for it.
func reportTo[R any](s *memoSpec, m *Manager, key string, args []any, hit bool, v R, err error) {
	if s.onResult == nil {
		return
	}
	s.report(m, key, args, hit, v, err)
}

func (s *memoSpec) report(m *Manager, key string, args []any, hit bool, v any, err error) {
	if s.onResult == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			slogError(fmt.Errorf("depcache: OnResult callback panicked: %v", r))
		}
	}()
	// args is the caller's (a Memoize wrapper's stack array): the callback
	// may keep its Result.
	s.onResult(Result{Func: s.id, Key: key, Manager: m.Name(), Args: slices.Clone(args), Hit: hit, Value: v, Err: err})
}

// keepDecoded keeps in m's tier a value decoded from payload, the bytes
// the store holds, rather than the one the caller got: a caller whose call
// did not hit the tier owns its value (and a function may change what it
// returned), so the tier must not share it.
func keepDecoded[R any](m *Manager, s *memoSpec, seq uint64, key string, payload []byte, deps []string, since backends.Epoch) {
	if m.tier == nil {
		return
	}
	v, cached, err := decodeResult[R](m.cfg.codec, s.errRules, payload)
	if err != nil || cached != nil {
		return
	}
	m.tier.keep(seq, key, v, deps, since)
}
