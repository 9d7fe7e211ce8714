package depcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/internal/taglist"
)

// ErrNotFound is the error TTL returns for a missing key.
var ErrNotFound = backends.ErrNotFound

// NoExpiry asks for an entry that never expires, whatever the default TTL;
// TTL reports it for such entries.
const NoExpiry = backends.NoExpiry

// ErrClosed is returned by a closed Manager.
var ErrClosed = errors.New("depcache: manager closed")

// ErrInvalidTTL reports a negative TTL other than NoExpiry.
var ErrInvalidTTL = errors.New("depcache: invalid TTL")

// A Manager caches values in one backend namespace and invalidates them by
// dependency. It is safe for concurrent use. Create one with New or
// GetOrCreate; the zero value is not usable. Its methods, like Memoize and
// Fetch, take a nil ctx as context.Background().
type Manager struct {
	cfg      config
	name     string
	ns       string
	backend  backends.Backend
	log      *slog.Logger
	release  func() error // closes what this manager opened itself
	registry *Registry

	stats       counters
	pending     *pendingSet
	closed      atomic.Bool
	flights     flightGroup
	noDepLog    sync.Map    // function identities already logged for a fill with no dependency
	logged      sync.Map    // ids of messages logOnce has logged
	closures    sync.Map    // function identity -> *closureOwner (closures.go)
	results     sync.Map    // result type -> *resultCheck under cfg.codec (roundtrip.go)
	fetchSpec   *memoSpec   // the spec of Fetch calls without options (memoize.go)
	deadlines   opDeadlines // shared operation deadlines (opdeadline.go)
	tier        *tier       // WithLocalCache (localtier.go); nil when off
	brk         *breaker    // WithBreaker (breaker.go); nil when off
	rec         recovery    // Hold, AddRecoveryCheck (recovery.go)
	peers       *peerGroup  // managers of the same prefix and backend (peers.go)
	peersShared bool        // peers is in peerGroups (a comparable backend)
	invLog      outageLog   // failed invalidations, logged once per outage
}

// New returns a manager storing in b. It does not register the manager (see
// GetOrCreate). DEP_CACHE_ENABLED, DEP_CACHE_PREFIX and DEP_CACHE_SERIALIZER
// apply beneath explicit options; if one cannot be parsed, every operation of
// the manager returns that error and memoized functions run uncached.
func New(b backends.Backend, opts ...Option) *Manager {
	cfg := buildConfig(opts)
	if b == nil && cfg.configErr == nil {
		cfg.configErr = fmt.Errorf("%w: New needs a backend (nil)", ErrInvalidOption)
	}
	return newManager(cfg, b, nil)
}

func newManager(cfg config, b backends.Backend, release func() error) *Manager {
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	if cfg.codec == nil {
		cfg.codec = JSON
	}
	if cfg.name == "" {
		cfg.name = "default"
	}
	ns := cfg.prefix
	if !cfg.prefixSet {
		root := cfg.envPrefix
		if root == "" {
			root = "cache"
		}
		ns = root + ":" + cfg.name
	}
	if ns == "" && cfg.configErr == nil {
		cfg.configErr = errors.New("depcache: empty key prefix")
	}
	if cfg.defaultTTL < 0 && cfg.defaultTTL != NoExpiry && cfg.configErr == nil {
		cfg.configErr = fmt.Errorf("%w: default TTL %v", ErrInvalidTTL, cfg.defaultTTL)
	}
	if c, ok := b.(backends.NamespaceChecker); ok && cfg.configErr == nil {
		if err := c.CheckNamespace(ns); err != nil {
			cfg.configErr = fmt.Errorf("depcache: key prefix %q: %w", ns, err)
		}
	}
	m := &Manager{
		cfg:     cfg,
		name:    cfg.name,
		ns:      ns,
		backend: b,
		log:     cfg.logger.With("depcache", cfg.name),
		release: release,
	}
	m.peers, m.peersShared = joinPeers(b, ns)
	m.pending = newPendingSet(m)
	m.tier = newTier(m)
	m.brk = newBreaker(m)
	m.fetchSpec = &memoSpec{id: "fetch", manager: m, perCall: true}
	if cfg.configErr != nil {
		m.log.Error("depcache: manager misconfigured; it caches nothing", "err", cfg.configErr)
	}
	return m
}

// Name returns the manager's name.
func (m *Manager) Name() string {
	if m == nil {
		return ""
	}
	return m.name
}

// Prefix returns the key prefix of everything the manager stores.
func (m *Manager) Prefix() string { return m.ns }

// Backend returns the store the manager runs on.
func (m *Manager) Backend() backends.Backend { return m.backend }

// Enabled reports whether the manager reads and fills the cache.
func (m *Manager) Enabled() bool { return m.cfg.enabled && m.cfg.configErr == nil }

// usable reports an error that makes every operation fail.
func (m *Manager) usable() error {
	if m.closed.Load() {
		return ErrClosed
	}
	return m.cfg.configErr
}

// orBackground is ctx, or context.Background() for a nil ctx: the
// Manager's methods take a nil ctx as Memoize and Fetch do, where it would
// otherwise panic inside a backend call.
func orBackground(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return ctx
}

// ErrCycle is returned by a memoized call (or Fetch) that reaches itself:
// made, with the same key, from inside its own computation. Waiting for
// its result would wait for itself.
var ErrCycle = errors.New("depcache: a memoized call reaches itself")

// ErrEmptyKey is returned by Get, Set, Exists, TTL, Delete and Fetch
// given an empty key. No key of depcache's own is empty: one is a key
// built from a value not set yet, and entries stored under it would be
// shared by every caller making the same mistake.
var ErrEmptyKey = errors.New("depcache: empty key")

func checkKey(op, key string) error {
	if key == "" {
		return fmt.Errorf("%w given to %s", ErrEmptyKey, op)
	}
	return nil
}

// checkDst reports a Get destination that no entry can be decoded into. It
// is the caller's mistake, not the entry's: without this check the decode
// would fail, and the entry be deleted as corrupt.
func checkDst(key string, dst any) error {
	if dst == nil {
		return fmt.Errorf("depcache: Get %q: dst is nil; pass a non-nil pointer", key)
	}
	if v := reflect.ValueOf(dst); v.Kind() != reflect.Pointer || v.IsNil() {
		return fmt.Errorf("depcache: Get %q: dst is a %T; pass a non-nil pointer", key, dst)
	}
	return nil
}

// cacheBudget is d, or half of what remains of ctx's deadline if that is
// shorter.
func cacheBudget(ctx context.Context, d time.Duration) time.Duration {
	if deadline, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(deadline)/2)
	}
	return d
}

// resolveTTL applies the rules: 0 is the default, a default of 0 or
// NoExpiry is none.
func (m *Manager) resolveTTL(d time.Duration) (time.Duration, error) {
	switch {
	case d == 0:
		d = m.cfg.defaultTTL
	case d < 0 && d != NoExpiry:
		return 0, fmt.Errorf("%w: %v", ErrInvalidTTL, d)
	}
	if d == NoExpiry {
		d = 0
	}
	return d, nil
}

// Get decodes the entry under key into dst, a non-nil pointer (anything
// else is an error, and the entry is left alone). If the entry holds a
// cached error, Get reports found and returns that error. Backend errors
// are a miss unless the manager is strict. After a miss dst holds nothing
// to rely on: an unreadable entry (a miss) may have been decoded into it
// in part.
func (m *Manager) Get(ctx context.Context, key string, dst any) (found bool, err error) {
	if err := m.usable(); err != nil {
		return false, err
	}
	if err := checkKey("Get", key); err != nil {
		return false, err
	}
	if err := checkDst(key, dst); err != nil {
		return false, err
	}
	ctx = orBackground(ctx)
	if !m.cfg.enabled {
		return false, nil
	}
	if m.tierGet(key, dst) {
		return true, nil
	}
	seq := m.tier.begin()
	result, _, err := m.lookup(ctx, key)
	if err != nil {
		return false, err
	}
	if !result.Found {
		// A read that will not fill gives back the lease its miss took
		// (Redis Cluster), or memoized calls of the key could not fill
		// until it expired.
		m.releaseLease(ctx, key, result.Lease)
		return false, nil
	}
	handled, cached, derr := m.getKeep(seq, key, result.Entry.Value, dst, result.Entry)
	if !handled {
		cached, derr = decodePayload(m.cfg.codec, nil, result.Entry.Value, dst)
	}
	if derr != nil {
		if v := result.Entry.Value; len(v) > 0 && v[0] == kindValue && m.cfg.codec.Unmarshal(v[1:], new(any)) == nil {
			// The bytes are sound; dst does not fit them (the caller's
			// type, not the entry, is wrong): the entry stays.
			err := fmt.Errorf("depcache: get %q: the cached value does not decode into %T: %w", key, dst, m.cfg.codec.Unmarshal(v[1:], dst))
			m.usageError(key, err)
			return false, err
		}
		m.dropCorrupt(ctx, key, derr)
		m.miss(key)
		return false, nil
	}
	m.hit(key, result.Entry.Deps)
	return true, cached
}

// lookup reads key, turning unusable hits (corrupt bytes, tags pending
// invalidation) into misses. reached is false when the backend failed: the
// rest of the call skips the cache rather than pay another timeout (or
// round trip) to a backend that just failed. Errors are returned only when
// strict, or when ctx is done.
func (m *Manager) lookup(ctx context.Context, key string) (result backends.Lookup, reached bool, err error) {
	state := m.servingState()
	opCtx, cancel := m.opContext(ctx)
	err = m.brk.do(ctx, func() (err error) {
		result, err = m.backend.Lookup(opCtx, m.ns, key)
		return err
	})
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			// The caller left; not the backend's failure.
			return backends.Lookup{}, false, ctx.Err()
		}
		m.backendError("lookup", key, err)
		if m.cfg.strict {
			return result, false, fmt.Errorf("depcache: lookup %q: %w", key, err)
		}
		return backends.Lookup{}, false, nil
	}
	if result.Corrupt {
		m.errorEvent(key, fmt.Errorf("depcache: %q: %w (deleted)", key, backends.ErrCorrupt))
	}
	// The entry was read at some point of the round trip: if a hold or a
	// pending invalidation ended meanwhile, possibly after it was read, it
	// may predate the delivery that ended it; if the breaker opened
	// meanwhile, it may predate writes whose invalidation failed in the
	// outage, which the recovery checks deliver before it closes.
	if result.Found && (m.pendingAffects(result.Entry.Deps) || m.brk.open() || m.movedSince(state, result.Entry.Deps)) {
		result.Found = false
		result.Epoch = backends.Epoch{}
	}
	if !result.Found {
		m.miss(key)
	}
	return result, true, nil
}

// Exists reports whether a value entry is stored under key.
func (m *Manager) Exists(ctx context.Context, key string) (bool, error) {
	if err := m.usable(); err != nil {
		return false, err
	}
	if err := checkKey("Exists", key); err != nil {
		return false, err
	}
	ctx = orBackground(ctx)
	opCtx, cancel := m.opContext(ctx)
	defer cancel()
	var result backends.Lookup
	err := m.brk.do(ctx, func() (err error) {
		result, err = m.backend.Lookup(opCtx, m.ns, key)
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err() // the caller left; not the backend's failure
		}
		return false, m.failOpen("exists", key, err)
	}
	if !result.Found {
		m.releaseLease(ctx, key, result.Lease)
	}
	return result.Found, nil
}

// TTL reports the remaining lifetime of the entry under key: NoExpiry for
// none, ErrNotFound if there is no entry.
func (m *Manager) TTL(ctx context.Context, key string) (time.Duration, error) {
	if err := m.usable(); err != nil {
		return 0, err
	}
	if err := checkKey("TTL", key); err != nil {
		return 0, err
	}
	ctx = orBackground(ctx)
	opCtx, cancel := m.opContext(ctx)
	defer cancel()
	var d time.Duration
	err := m.brk.do(ctx, func() (err error) {
		d, err = m.backend.TTL(opCtx, m.ns, key)
		return err
	})
	if err != nil && ctx.Err() != nil {
		return 0, ctx.Err() // the caller left; not the backend's failure
	}
	if err != nil && !errors.Is(err, backends.ErrNotFound) {
		m.backendError("ttl", key, err)
		return 0, fmt.Errorf("depcache: ttl %q: %w", key, err)
	}
	return d, err
}

// Set stores v under key with deps. A ttl of 0 means the default TTL. The
// value is taken as current when the store receives it (one round trip on
// a single Redis): Set cannot know when v was computed, so an invalidation
// that ran meanwhile does not refuse it. A value computed from data that
// concurrent writes change should be filled through Memoize or Fetch,
// whose fills are refused when a dependency was invalidated after the
// computation began. A nil from Set means that no read returns the value
// it replaced: it stored v or, where storing failed or was refused (a
// backend error or timeout, logged and counted; a pending invalidation of
// one of deps), it deleted the key, so that reads miss. Set fails open in
// that sense only: if the key cannot be deleted either, or the breaker is
// open (ErrBreakerOpen: the store is known down), it returns the error, as
// it does a storing failure on a strict manager (WithStrictErrors). Also
// returned: ctx's error if it ended first, a failure to tell in-process
// tiers (WithLocalCache) that the value changed, encoding errors, a value
// over WithMaxValueSize and invalid arguments.
func (m *Manager) Set(ctx context.Context, key string, v any, ttl time.Duration, deps ...string) error {
	if err := m.usable(); err != nil {
		return err
	}
	if err := checkKey("Set", key); err != nil {
		return err
	}
	ctx = orBackground(ctx)
	if !m.cfg.enabled {
		return nil
	}
	ttl, err := m.resolveTTL(ttl)
	if err != nil {
		return err
	}
	if err := checkTags(deps); err != nil {
		return err
	}
	payload, err := encodeValue(m.cfg.codec, v)
	if err != nil {
		err = fmt.Errorf("depcache: set %q: encode with %s: %w", key, m.cfg.codec.Name(), err)
		m.errorEvent(key, err)
		return err
	}
	if err := m.tooLarge("Set", key, len(payload)); err != nil {
		return fmt.Errorf("depcache: set %q: %w", key, err)
	}
	if m.pendingAffects(deps) {
		m.skipped(key, errPendingSkip)
		return m.replaceUnstored(ctx, key, nil)
	}
	opCtx, cancel := m.opContext(ctx)
	defer cancel()
	// At the store's current epoch, in one step (Fill.Current).
	stored, err := m.fill(ctx, opCtx, key, payload, deps, backends.Epoch{}, 0, ttl, "", true)
	if err != nil {
		if ctx.Err() != nil {
			// The caller left, perhaps before the value was stored: a nil
			// would say it was. Not the backend's failure either.
			return ctx.Err()
		}
		if errors.Is(err, ErrBreakerOpen) {
			// The store is known down: nothing to delete the replaced
			// value with, and no timeout to pay for learning it again.
			return fmt.Errorf("depcache: set %q: not stored: %w", key, err)
		}
		return m.replaceUnstored(ctx, key, m.failOpen("fill", key, err))
	}
	if !stored {
		return m.replaceUnstored(ctx, key, nil)
	}
	// Tiers that hold the value Set replaced drop it (waiting, bounded,
	// as an invalidation does).
	nctx, ncancel := context.WithTimeout(ctx, m.cfg.invTimeout)
	defer ncancel()
	if err := m.notifyChange(nctx, backends.Change{NS: m.ns, Keys: []string{key}}); err != nil {
		// The value is stored, and tiers that hold the one it replaced
		// were not told: not a fill to fail open on, but a change that
		// did not complete, returned as Delete returns it.
		if ctx.Err() == nil {
			m.backendError("set", key, err)
		}
		return fmt.Errorf("depcache: set %q: %w", key, err)
	}
	return nil
}

// replaceUnstored is Set's way out when its value was not stored (a
// backend failure, a fill refused or skipped): the value it was to replace
// must not be served any more, so the key is deleted, here and in every
// tier; if that fails too, Set returns the error, since a nil would say no
// read returns the old value. failed is what Set returns otherwise (nil
// unless the manager is strict).
func (m *Manager) replaceUnstored(ctx context.Context, key string, failed error) error {
	dctx, cancel := context.WithTimeout(ctx, m.cfg.invTimeout)
	defer cancel()
	if _, err := m.Delete(dctx, key); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("depcache: set %q: the value was not stored, and the one it replaces could not be deleted: %w", key, err)
	}
	return failed
}

// fill stores a payload, handling the outcomes the same way for Set and
// memoized functions. A fill the backend refused as stale is not an error;
// a backend failure is returned for the caller to report with failOpen.
// current stores at the store's current epoch (Set: since is ignored).
// ctx is the caller's, opCtx bounds the fill. A fill the breaker skips
// sends nothing (no half-written entry) and returns ErrBreakerOpen; a
// lease its lookup took is left to expire.
func (m *Manager) fill(ctx, opCtx context.Context, key string, payload []byte, deps []string, since backends.Epoch, age, ttl time.Duration, lease string, current bool) (stored bool, err error) {
	err = m.brk.do(ctx, func() error {
		return m.backend.Fill(opCtx, m.ns, backends.Fill{
			Key:     key,
			Entry:   backends.Entry{Value: payload, Deps: deps, Since: since},
			TTL:     ttl,
			Since:   since,
			Age:     age,
			Lease:   lease,
			Current: current,
		})
	})
	switch {
	case errors.Is(err, ErrBreakerOpen):
		m.skipped(key, ErrBreakerOpen)
		return false, err
	case errors.Is(err, backends.ErrStale):
		m.stats.staleFills.Add(1)
		m.emit(Event{Kind: EventSkip, Key: key, Deps: deps, Err: err})
		return false, nil
	case err != nil:
		return false, err
	}
	m.stats.sets.Add(1)
	m.emit(Event{Kind: EventSet, Key: key, Deps: deps, TTL: ttl})
	return true, nil
}

// releaseLease gives back a fill lease that no fill will use.
func (m *Manager) releaseLease(ctx context.Context, key, lease string) {
	r, ok := m.backend.(backends.Releaser)
	if !ok || lease == "" {
		return
	}
	opCtx, cancel := m.opContext(context.WithoutCancel(ctx))
	defer cancel()
	// While the breaker is open the lease is left to expire (its
	// lifetime is bounded by the backend), as after a failed fill.
	if err := m.brk.do(context.Background(), func() error { return r.Release(opCtx, m.ns, key, lease) }); err != nil {
		m.backendError("release", key, err)
	}
}

// Delete removes the entries under keys and returns how many existed.
func (m *Manager) Delete(ctx context.Context, keys ...string) (int, error) {
	if err := m.usable(); err != nil {
		return 0, err
	}
	ctx = orBackground(ctx)
	if len(keys) == 0 {
		return 0, nil
	}
	for i, k := range keys {
		if k == "" {
			return 0, fmt.Errorf("%w given to Delete (key %d of %d); nothing was deleted", ErrEmptyKey, i+1, len(keys))
		}
	}
	n, err := m.backend.Delete(ctx, m.ns, keys...)
	if err == nil {
		err = m.notifyChange(ctx, backends.Change{NS: m.ns, Keys: keys})
	}
	if err != nil {
		if ctx.Err() == nil {
			m.backendError("delete", "", err)
		}
		return n, fmt.Errorf("depcache: delete: %w", err)
	}
	m.stats.deletes.Add(uint64(n))
	m.emit(Event{Kind: EventDelete, Count: n})
	return n, nil
}

// InvalidateDependency deletes every entry tagged with any of deps, here and
// in every process sharing the backend, and returns the number of distinct
// entries removed. Once it returns nil, no read returns a value computed
// before it was called. If the backend cannot be reached the error is
// returned and the invalidation is retried in the background until it
// succeeds; meanwhile this process serves no entry carrying those tags. A
// disabled manager still invalidates.
func (m *Manager) InvalidateDependency(ctx context.Context, deps ...string) (int, error) {
	ctx = orBackground(ctx)
	if m.closed.Load() {
		return 0, ErrClosed
	}
	if m.backend == nil {
		return 0, m.cfg.configErr
	}
	tagErr := checkTags(deps)
	deps = nonEmpty(deps)
	if len(deps) == 0 {
		return 0, tagErr
	}
	n, err := m.invalidate(ctx, deps)
	if err != nil {
		m.pending.add(deps)
		notePending(m)
		return n, errors.Join(err, tagErr)
	}
	return n, tagErr
}

func (m *Manager) invalidate(ctx context.Context, deps []string) (int, error) {
	opCtx, cancel := context.WithTimeout(ctx, m.cfg.invTimeout)
	defer cancel()
	n, err := m.backend.Invalidate(opCtx, m.ns, deps...)
	if err == nil {
		err = m.notifyChange(opCtx, backends.Change{NS: m.ns, Tags: deps})
	}
	if err != nil {
		m.stats.errors.Add(1)
		err = fmt.Errorf("depcache: invalidate %s: %w", taglist.Quote(deps), err)
		m.invLog.failed(m.log, "depcache: invalidation failed; retrying in the background", "deps", taglist.Quote(deps), "err", err)
		m.emit(Event{Kind: EventError, Deps: deps, Err: err})
		return n, err
	}
	m.invLog.succeeded(m.log)
	m.stats.invalidations.Add(uint64(n))
	m.emit(Event{Kind: EventInvalidate, Deps: deps, Count: n})
	return n, nil
}

// Clear removes every entry under the manager's prefix, with its tag
// registrations, and returns the number of entries removed.
func (m *Manager) Clear(ctx context.Context) (int, error) {
	ctx = orBackground(ctx)
	if m.closed.Load() {
		return 0, ErrClosed
	}
	if m.backend == nil {
		return 0, m.cfg.configErr
	}
	n, err := m.backend.Clear(ctx, m.ns)
	if err == nil {
		err = m.notifyClear(ctx)
	}
	if err != nil {
		if ctx.Err() == nil {
			m.backendError("clear", "", err)
		}
		return n, fmt.Errorf("depcache: clear %q: %w", m.ns, err)
	}
	m.stats.invalidations.Add(uint64(n))
	m.emit(Event{Kind: EventClear, Count: n})
	return n, nil
}

// Stats returns the manager's counters.
func (m *Manager) Stats() Stats {
	return Stats{
		Hits:                 m.stats.hits.Load() + m.stats.localHits.Load(),
		Misses:               m.stats.misses.Load(),
		Sets:                 m.stats.sets.Load(),
		Deletes:              m.stats.deletes.Load(),
		Invalidations:        m.stats.invalidations.Load(),
		Errors:               m.stats.errors.Load(),
		StaleFills:           m.stats.staleFills.Load(),
		SkippedFills:         m.stats.skippedFills.Load(),
		NoDepFills:           m.stats.noDepFills.Load(),
		SharedFlights:        m.stats.sharedFlights.Load(),
		LocalHits:            m.stats.localHits.Load(),
		PendingInvalidations: uint64(m.pending.len()),
		TooLarge:             m.stats.tooLarge.Load(),
		BreakerSkips:         m.brk.skipCount(),
		BreakerOpens:         m.brk.openCount(),
	}
}

// Closed reports whether Close has been called: what a caller about to
// change data the manager caches (a GORM plugin before a write) checks, so
// that the change is not made with no invalidation to follow it.
func (m *Manager) Closed() bool { return m.closed.Load() }

// Close stops the manager's background retries, removes it from its
// registry and closes what it opened itself (a backend it was given stays
// open). Invalidations still pending are logged as lost. A closed manager
// fills nothing and reads nothing: memoized calls on it run their function
// (logged once), a computation running when it closes stores nothing, and
// its methods return ErrClosed.
func (m *Manager) Close() error {
	if !m.closed.CompareAndSwap(false, true) {
		return nil
	}
	forgetPending(m)
	m.leavePeers()
	m.tier.close()
	m.brk.close()
	if lost := m.pending.stop(); lost > 0 {
		m.log.Error("depcache: manager closed with invalidations still failing", "tags", lost)
	}
	if m.registry != nil {
		m.registry.forget(m)
	}
	if m.release != nil {
		return m.release()
	}
	return nil
}

func checkTags(deps []string) error {
	for i, d := range deps {
		if d == "" {
			return fmt.Errorf("depcache: dependency %d of %d is an empty tag", i+1, len(deps))
		}
		if !backends.IsPlainTag(d) {
			// Entries store pairs of other managers in marked forms.
			return fmt.Errorf("depcache: dependency %d of %d, %q, starts with a reserved byte", i+1, len(deps), d)
		}
	}
	return nil
}

func nonEmpty(deps []string) []string {
	out := deps[:0:0]
	for _, d := range deps {
		if d != "" {
			out = append(out, d)
		}
	}
	return out
}

// The reporting helpers below count, log and emit in one place.

func (m *Manager) hit(key string, deps []string) {
	m.stats.hits.Add(1)
	m.emit(Event{Kind: EventHit, Key: key, Deps: deps})
}

func (m *Manager) miss(key string) {
	m.stats.misses.Add(1)
	m.emit(Event{Kind: EventMiss, Key: key})
}

var errPendingSkip = errors.New("depcache: not stored: a dependency's invalidation is pending retry")

func (m *Manager) skipped(key string, why error) {
	m.stats.skippedFills.Add(1)
	m.emit(Event{Kind: EventSkip, Key: key, Err: why})
}

func (m *Manager) backendError(op, key string, err error) {
	if errors.Is(err, ErrBreakerOpen) {
		// Counted in Stats.BreakerSkips; the opening was logged once.
		return
	}
	m.stats.errors.Add(1)
	switch {
	case permanentError(err):
		// Every call would fail the same way: say so once.
		m.logOnce("permanent:"+err.Error(), "depcache: backend misconfigured; reads and fills run uncached", "op", op, "err", err)
	case m.brk.quiet():
		// The breaker logged the outage when it opened.
	default:
		m.log.Warn("depcache: backend error", "op", op, "key", key, "err", err)
	}
	m.emit(Event{Kind: EventError, Key: key, Err: err})
}

// failOpen reports err and returns it only for a strict manager.
func (m *Manager) failOpen(op, key string, err error) error {
	m.backendError(op, key, err)
	if m.cfg.strict {
		return fmt.Errorf("depcache: %s %q: %w", op, key, err)
	}
	return nil
}

func (m *Manager) errorEvent(key string, err error) {
	if m == nil {
		return
	}
	m.stats.errors.Add(1)
	m.log.Error(err.Error(), "key", key)
	m.emit(Event{Kind: EventError, Key: key, Err: err})
}

func (m *Manager) usageError(key string, err error) { m.errorEvent(key, err) }

// usageErrorOnce is usageError logged once per id: a mistake that repeats
// on every call (an argument that cannot be keyed) is counted and observed
// every time, and logged the first.
func (m *Manager) usageErrorOnce(id, key string, err error) {
	if m == nil {
		return
	}
	if _, seen := m.logged.LoadOrStore(id, true); !seen {
		m.errorEvent(key, err)
		return
	}
	m.stats.errors.Add(1)
	m.emit(Event{Kind: EventError, Key: key, Err: err})
}

func (m *Manager) dropCorrupt(ctx context.Context, key string, err error) {
	m.errorEvent(key, fmt.Errorf("depcache: %q: %w (deleted)", key, err))
	opCtx, cancel := m.opContext(context.WithoutCancel(ctx))
	defer cancel()
	if _, derr := m.backend.Delete(opCtx, m.ns, key); derr != nil {
		m.backendError("delete", key, derr)
	}
}

// lateDependency handles a dependency added after its computation returned:
// the entry stored without it could outlive an invalidation of it.
func (m *Manager) lateDependency(key string, deps []string) {
	if m == nil {
		return
	}
	m.errorEvent(key, fmt.Errorf("%w (deps %q)", errLateDependency, deps))
	if key == "" || m.backend == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.invTimeout)
	defer cancel()
	_, err := m.backend.Delete(ctx, m.ns, key)
	if err == nil {
		err = m.notifyChange(ctx, backends.Change{NS: m.ns, Keys: []string{key}})
	}
	if err != nil {
		m.backendError("delete", key, err)
	}
}

func (m *Manager) emit(e Event) {
	fn := m.cfg.observer
	if fn == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			m.log.Error("depcache: observer panicked", "panic", r, "event", e.Kind.String())
		}
	}()
	fn(e)
}

// slogError logs where no manager is at hand (an unresolvable manager).
func slogError(err error) { slog.Default().Error(err.Error()) }

func slogErrorIf(cond bool, err error) {
	if cond {
		slogError(err)
	}
}

// logOnce logs msg at error level the first time it is called with id.
func (m *Manager) logOnce(id, msg string, args ...any) {
	if _, seen := m.logged.LoadOrStore(id, true); !seen {
		m.log.Error(msg, args...)
	}
}
