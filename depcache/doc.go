// Package depcache caches the results of Go functions in Redis or in
// process memory and invalidates them by dependency.
//
// Every cached entry carries tags — "users::42", "posts::*", any string — that
// name what it was computed from. InvalidateDependency deletes every entry
// carrying a tag, in every process sharing the backend:
//
//	getUser := depcache.Memoize(func(ctx context.Context, id int) (User, error) {
//		depcache.AddDependency(ctx, fmt.Sprintf("users::%d", id))
//		return loadUser(ctx, id)
//	}, depcache.Using(m), depcache.KeyName("getUser"))
//
//	u, err := getUser(ctx, 42)                 // miss: runs, stores, tags users::42
//	u, err = getUser(ctx, 42)                  // hit
//	m.InvalidateDependency(ctx, "users::42")   // gone everywhere
//
// # The model
//
// A Manager owns one namespace (key prefix) in one backend. Memoize, Memoize0,
// Memoize2, Memoize3 and Fetch wrap a function: on a miss the function runs as
// a computation carried in its ctx, and AddDependency, AddDependencyTo,
// SetTTL, SkipFill, CurrentKey and CurrentManager act on the innermost
// computation under that ctx. A cached function that calls another inherits
// the callee's tags, whether the callee hit or missed (entries store their
// tags). Outside a computation these functions do nothing.
//
// A dependency is a pair (manager, tag): "post:1" of manager A and "post:1"
// of manager B are different, and invalidating one never touches entries
// that depend only on the other. A parent inherits its children's pairs
// whatever its own manager: a page cached in A built from a post cached in
// B is registered under B's "post:1", so B.InvalidateDependency removes it
// too. Where A and B share a backend this is one fill; where they do not,
// no store can register it atomically, and the parent is not filled (logged
// once). Manager.AddDependency adds pairs of a given manager to the
// innermost computation (what the GORM plugin does); AddDependencyTo
// addresses the innermost computation of a named manager, and computations
// of other managers in between carry the pairs up in their entries without
// depending on them.
//
// A computation that does not cache — its manager disabled or closed, its
// ManagerName unknown, its argument unkeyable, or under Bypass — is
// transparent: its children's pairs and the epochs of the cached results
// they used pass to its parent as if it were not there. A closed manager
// fills nothing and reads nothing; its methods return ErrClosed.
//
// Keys are the function's identity (KeyName, else its symbol and signature)
// and the canonical form of its arguments (package keys): the same logical
// arguments give the same key in every process. Closures that a factory
// makes from one literal share a symbol but not their captured variables:
// without KeyName the first one a manager sees caches, and the others are
// logged once and run uncached.
//
// # No stale reads
//
// Once a write has committed and its InvalidateDependency has returned nil,
// no later read returns a value computed before the write. Backends
// guarantee it with an invalidation epoch: a miss reads the epoch before the
// function runs, every invalidation stamps its tags with a newer one, and the
// fill is refused if one of its tags — including tags discovered while the
// function ran — carries a stamp newer than the computation's start. A
// computation that used a cached result (a nested hit) takes that entry's
// older start, so a stale value cannot be re-stored through a parent. See
// package backends for the argument.
//
// Outside the guarantee: an invalidation that failed (it is retried in the
// background, in this process's memory, and meanwhile this process serves
// nothing carrying its tags, but other processes learn of it only when a
// retry succeeds, and never if this process dies first — the GORM plugin's
// WithOutbox makes it durable, for GORM writes and for invalidations made
// through its Plugin.InvalidateDependency); reads from
// database replicas; a Redis that loses acknowledged writes (use AOF with
// appendfsync always, or WAITAOF).
//
// # Failures
//
// Reads and fills fail open: a backend error or timeout (WithTimeout) is
// logged, counted in Stats and reported to the observer, and the function
// runs; WithStrictErrors returns such errors instead. Once a call's lookup
// has failed, the rest of the call skips the cache, so a miss during an
// outage costs one timeout, and a circuit breaker (on by default;
// WithBreaker, WithoutBreaker) stops paying even that: after
// DefaultBreakerFailures consecutive failures (timeouts, connection errors,
// a misconfigured client — not a refused stale fill or corrupt bytes) reads
// and fills skip the backend with no round trip and no log line per call
// (one line when it opens, one when it closes; Stats.BreakerSkips,
// EventBreakerOpen, EventBreakerClose), and a strict manager returns an
// error wrapping ErrBreakerOpen. Every DefaultBreakerOpenFor a background
// probe, started by a read, tries one lookup; the first answer closes the
// breaker — once every AddRecoveryCheck passes (a durable outbox delivers
// what it holds there). Hold stops serving and storing entirely until
// released. Invalidations never pass through it: they are always sent, and
// one that fails is retried in the background; failed invalidations log one
// error per outage (the rest at debug level, and one line when one
// succeeds again), while Stats and the observer count every one. When the caller's context has a deadline, a
// cache wait takes at most half of what remains of it, leaving the function
// time to run. A value the codec cannot encode is returned uncached; bytes
// it cannot decode are a miss and are deleted. Errors are cached only when
// CacheErrors or CacheErrorsAs name them.
//
// A hit returns exactly what the miss returned, or the function is not
// cached. JSON and msgpack decode into an interface whatever the bytes look
// like (a struct as map[string]any, a number as float64), so with them a
// result type that is or holds an interface (any, error, map[string]any, an
// encoded struct field of interface type) runs uncached, logged once per type
// and codec; types with their own decoder (json.Unmarshaler,
// encoding.TextUnmarshaler, msgpack's) are trusted. Gob carries the concrete
// type of an interface result, given gob.Register. A Codec may implement
// TypeChecker to refuse types itself. "Exactly" covers what the codec
// encodes: what it drops (unexported fields, JSON's json:"-" fields and the
// invalid UTF-8 of strings; see JSON, Msgpack and Gob) comes back as it
// decodes it, with no error.
//
// Options that cannot work (WithTimeout(0), WithRetryBackoff(0, d), an empty
// KeyName, a negative TTL other than NoExpiry, ...) are errors wrapping
// ErrInvalidOption: GetOrCreate returns it; a Manager from New logs it,
// caches nothing and returns it from Err and from every method, while its
// invalidations still run with the defaults; a memoized function given such
// a MemoOption runs uncached, reported once.
//
// # The in-process tier
//
// WithLocalCache(n) keeps up to n decoded values in process, in front of the
// backend (off by default): a hit there costs no round trip, no decoding
// and, for Manager.Get, no allocation. The tier is a bounded cache (otter)
// plus an index from each dependency to the keys holding it.
//
// Shared values: a value in the tier is handed, as it is, to every caller
// that hits it. Slices, maps, pointers and anything they reach are shared
// between those callers and the tier: treat them as read-only. Copy before
// changing one (slices.Clone, maps.Clone), or leave the tier off for such
// a manager. With the tier on, Manager.Get replaces *dst with the cached
// value instead of decoding into it (a pre-filled dst keeps none of its
// fields), and a value is kept only from a decode into a fresh variable,
// never into the caller's. A call that did not hit the tier (its function
// ran, or the backend served it) owns what it got: the tier keeps a decode
// of its own of the stored bytes. Cached errors are not kept in the tier.
//
// Coherence: the tier keeps the guarantee of "No stale reads" across
// processes. Every change (InvalidateDependency, a GORM write's
// invalidation, Delete, Set, Clear, and their retries) drops what it
// condemns from this process's tier and, through the backend's
// backends.Notifier, from every tier sharing the backend before the call
// returns: the memory backend delivers in process; the Redis backend
// publishes the change and waits for an acknowledgement from every
// registered process, and a process that does not acknowledge within
// about its lease has stopped serving from its tier by then (see package
// redisbackend, WithTierLease, default 1 s). A tier serves only while its
// lease is valid: a process whose notifications stall, or whose
// subscription dropped, falls back to the backend; a subscription that
// comes back clears the tier first. A value read from the backend enters
// the tier only if no change was applied to the tier since before that
// read. A tier entry lives at most WithLocalCacheTTL (default 10 s), so it
// outlives its backend entry's TTL by at most that.
//
// Failure model: an invalidation returns only once every process has
// dropped the value or stopped serving; if the notification cannot be
// published (the backend is unreachable after the invalidation), the
// invalidation reports an error and is retried like any failed one. A
// process that starts a tier serves from it only a lease after it
// registered. On Redis Cluster, and on backends without a Notifier, the
// tier stays off and the manager logs why. Each invalidation, Delete, Set
// and Clear costs a Redis process one more round trip while some process
// has a tier, and one per lease while none has.
//
// # Configuration
//
// Default and GetOrCreate read DEP_CACHE_ENABLED, DEP_CACHE_PREFIX,
// DEP_CACHE_SERIALIZER (json, msgpack, gob or a codec given to RegisterCodec)
// and DEP_CACHE_BACKEND (redis, the default; memory; or a name given to
// backends.Register), and the Redis variables REDIS_URL, else REDIS_HOST,
// REDIS_PORT, REDIS_PASSWORD and REDIS_DB. A value that cannot be parsed is an
// error naming the variable. Errors and log lines never quote a password
// from REDIS_URL or REDIS_PASSWORD; TLS (rediss://), AUTH and ACL users are
// described in package redisbackend ("Security").
//
// # Security
//
// Whoever can write to the Redis can make any process read what they
// wrote: the cache trusts its store. What a codec does with bytes it did
// not write is the limit of that trust. The default codec, JSON, decodes
// into the type the caller declared (the memoized function's result, the
// destination of Get), and into an interface only maps, slices, strings,
// numbers and booleans: never a type the bytes name. Its engine is
// github.com/goccy/go-json, which uses unsafe; its panics are recovered
// and whatever it refuses is decoded by encoding/json, whose format and
// errors the codec keeps (fuzzed against encoding/json in
// json_diff_test.go). Msgpack does the
// same (its headers are checked against the bytes' length first) unless
// the application registered extension types (msgpack.RegisterExt),
// which it builds for interface destinations. Gob names the concrete
// types of interface values in its bytes and builds any type given to
// gob.Register: use it for data only the application writes. A cached error (CacheErrorsAs) is rebuilt only by
// the rules of the function reading it. Prefixes keep managers apart: one
// manager never reads, invalidates or clears the entries of another with a
// different prefix (a prefix that is a prefix of another's, or that holds
// glob characters, included); it is not an access control between
// applications sharing a Redis — give each its own ACL user and key
// pattern for that.
//
// Managers, memoized functions and Registries are safe for concurrent use.
package depcache
