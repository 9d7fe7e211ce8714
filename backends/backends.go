package backends

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Backend is a store that carries depcache's fill protocol. Every method
// takes a namespace (the manager's key prefix, such as "cache:users"); one
// Backend may serve many namespaces, and operations in one namespace never
// touch another. Keys and tags are the caller's strings, unprefixed.
//
// Implementations must be safe for concurrent use.
type Backend interface {
	// Lookup returns the entry stored under key. On a miss it returns the
	// current epoch, which the caller must present to Fill as Fill.Since:
	// it is read before the computation starts, which is what lets Fill
	// refuse a value computed from data that a later invalidation replaced.
	// The caller reads the returned Entry.Value and never modifies it: a
	// store may hand out memory it shares with its reply (an immutable
	// string, for redisbackend) rather than a copy.
	Lookup(ctx context.Context, ns, key string) (Lookup, error)

	// Fill stores f.Entry under f.Key and registers it under each of
	// f.Entry.Deps, atomically with a check that none of those tags was
	// invalidated after f.Since. If one was, or f.Since belongs to an era
	// the store no longer has, it stores nothing and returns an error
	// wrapping ErrStale.
	Fill(ctx context.Context, ns string, f Fill) error

	// Epoch returns the current epoch, for a fill that did not start with a
	// Lookup (Manager.Set).
	Epoch(ctx context.Context) (Epoch, error)

	// Invalidate stamps each tag with a new epoch and deletes every entry
	// registered under any of them, returning only once all of them are
	// gone. It returns the number of distinct entries removed.
	Invalidate(ctx context.Context, ns string, tags ...string) (int, error)

	// Delete removes the entries stored under keys and returns how many
	// existed.
	Delete(ctx context.Context, ns string, keys ...string) (int, error)

	// TTL reports the remaining lifetime of the entry under key: NoExpiry if
	// it has none, an error wrapping ErrNotFound if there is no entry.
	TTL(ctx context.Context, ns, key string) (time.Duration, error)

	// Clear advances the epoch and stamps the namespace with it, then
	// removes every entry of the namespace, and its registrations, and
	// returns the number of entries removed. Every later fill that stores
	// into the namespace, or depends on one of its tags (ForeignDep), is
	// refused with ErrStale if its Since is older than that stamp, as if
	// every tag of the namespace had been invalidated: Clear may stand for
	// invalidations that were never delivered (depcache's pending queue
	// overflows into a Clear); so it also removes the entries of other
	// namespaces registered under its tags. Stamps younger than the longest
	// allowed fill survive, so that a fill still running cannot store what a
	// recent invalidation condemned.
	Clear(ctx context.Context, ns string) (int, error)

	// Close releases what the Backend opened itself.
	Close() error
}

// NoExpiry is the TTL of an entry that never expires, as TTL reports it.
const NoExpiry time.Duration = -1

var (
	// ErrNotFound reports that no entry exists under a key.
	ErrNotFound = errors.New("depcache: entry not found")
	// ErrStale reports a fill refused because one of its tags was
	// invalidated after the fill's epoch was read (or the epoch's era is
	// gone): the value may predate a committed write.
	ErrStale = errors.New("depcache: fill refused: a dependency was invalidated after the computation started")
	// ErrClosed reports an operation on a closed Backend.
	ErrClosed = errors.New("depcache: backend closed")
	// ErrCorrupt reports stored bytes that are not an entry envelope.
	ErrCorrupt = errors.New("depcache: corrupt cache entry")
)

// Lookup is the result of Backend.Lookup.
type Lookup struct {
	// Found reports a hit; Entry is valid only then.
	Found bool
	Entry Entry
	// Epoch is the current epoch on a miss: present it to Fill as Since.
	Epoch Epoch
	// Corrupt reports that the stored bytes could not be decoded; the store
	// has deleted them and reports a miss.
	Corrupt bool
	// Lease is set on a miss by stores that take a fill lease (Redis
	// Cluster, where a fill cannot be one script): present it to Fill. An
	// invalidation revokes it, so the fill fails. A caller that will not
	// fill gives it back with Releaser.Release if the store implements it.
	Lease string
	// Busy reports a miss on a key whose fill lease another caller holds:
	// a fill from this caller would be refused. The caller may wait for
	// that fill (look the key up again) or compute without filling.
	Busy bool
}

// NamespaceChecker is implemented by stores that cannot use every
// namespace (a key layout a namespace could collide with): a manager
// asks at New, so that an unusable prefix is a configuration error
// (Manager.Err) instead of a failure of every later call.
type NamespaceChecker interface {
	CheckNamespace(ns string) error
}

// Releaser is implemented by stores that take fill leases, to give one back
// when a miss will not be followed by a fill.
type Releaser interface {
	Release(ctx context.Context, ns, key, lease string) error
}

// Fill describes one conditional store.
type Fill struct {
	Key   string
	Entry Entry
	// TTL is the entry's lifetime; 0 or NoExpiry store it without expiry
	// (a store may cap it, and then TTL reports the cap).
	TTL time.Duration
	// Since is the epoch read before the computation (Lookup.Epoch).
	Since Epoch
	// Age is how long ago, by the caller's monotonic clock, Since was read.
	// A store refuses fills older than its longest allowed fill, since it
	// prunes stamps after that long.
	Age time.Duration
	// Lease is Lookup.Lease of the miss this fill follows, if any.
	Lease string
	// Current stores the value as of the store's current epoch, ignoring
	// Since and Age: the caller vouches that the value is current when
	// stored (Manager.Set), so no invalidation can make it stale, and the
	// entry's Since becomes that epoch (a computation that hits it takes
	// it). A store does it in one step where it can (a single Redis: one
	// script); a store that ignores Current refuses the fill for its zero
	// Since, which backendtest reports.
	Current bool
}

// Entry is what a store keeps under a key: the value's bytes, the tags it
// was computed from (so that a computation that uses a cached result
// inherits them) and the epoch its computation started at (so that such a
// computation can lower its own Since to it).
type Entry struct {
	Value []byte
	Deps  []string
	Since Epoch
}

// Epoch orders invalidations. N grows by one with every invalidation in a
// store; Era names the store's life and changes when the epoch is lost
// (eviction, a restart without persistence, a failover). Epochs of
// different eras cannot be ordered.
type Epoch struct {
	Era string
	N   uint64
}

// IsZero reports whether e is the zero Epoch (no epoch read).
func (e Epoch) IsZero() bool { return e.Era == "" && e.N == 0 }

// String formats e as "era:n", the form stores write.
func (e Epoch) String() string { return e.Era + ":" + strconv.FormatUint(e.N, 10) }

// ParseEpoch parses the "era:n" form of String.
func ParseEpoch(s string) (Epoch, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return Epoch{}, fmt.Errorf("depcache: malformed epoch %q", s)
	}
	n, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil {
		return Epoch{}, fmt.Errorf("depcache: malformed epoch %q: %w", s, err)
	}
	return Epoch{Era: s[:i], N: n}, nil
}

// Older returns the older of a and b, and false if they belong to
// different eras and cannot be ordered.
func Older(a, b Epoch) (Epoch, bool) {
	if a.Era != b.Era {
		return Epoch{}, false
	}
	if b.N < a.N {
		return b, true
	}
	return a, true
}

// registry of named backend openers, for DEP_CACHE_BACKEND.
var (
	regMu   sync.RWMutex
	openers = map[string]func() (Backend, error){}
)

// Register makes a backend available under name to DEP_CACHE_BACKEND.
// Registering a name again replaces the opener. The names "memory" and
// "redis" are built in (depcache registers them) and may be replaced too.
func Register(name string, open func() (Backend, error)) {
	if name == "" || open == nil {
		panic("backends: Register needs a name and an opener")
	}
	regMu.Lock()
	defer regMu.Unlock()
	openers[name] = open
}

// Unregister removes name; it returns whether it was registered. Tests use
// it to undo a Register.
func Unregister(name string) bool {
	regMu.Lock()
	defer regMu.Unlock()
	_, ok := openers[name]
	delete(openers, name)
	return ok
}

// Opener returns the opener registered under name.
func Opener(name string) (func() (Backend, error), bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	open, ok := openers[name]
	return open, ok
}

// Names lists the registered backend names, sorted.
func Names() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	names := make([]string, 0, len(openers))
	for n := range openers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
