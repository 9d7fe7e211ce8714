package redisbackend

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
)

var (
	// ErrUnsafePolicy reports that the server's maxmemory-policy
	// (allkeys-*, or one this package does not know) may evict tag
	// registrations and stamps, which would leave entries that no
	// invalidation can find. Lookup and Fill fail with it; Invalidate,
	// Delete, TTL and Clear still work. Use noeviction or a volatile-*
	// policy.
	ErrUnsafePolicy = errors.New("redisbackend: maxmemory-policy may evict dependency metadata; cache reads and fills are disabled")

	// ErrNotReplicated reports an invalidation that no replica acknowledged
	// within the wait timeout: it was applied on the master, but a failover
	// could undo it. Retry it.
	ErrNotReplicated = errors.New("redisbackend: invalidation not acknowledged by any replica")

	// ErrNamespace reports a namespace (a manager's prefix) that holds
	// ":e:{" or ":t:{", the separators of the key layout: its keys could be
	// those of a shorter namespace (namespace "a:e:{x" and key "k" make the
	// key of namespace "a" and key "x:e:{k"), which that namespace's Clear
	// and Prune would take as its own. Every call on such a namespace fails
	// with it.
	ErrNamespace = errors.New(`redisbackend: a namespace must not hold ":e:{" or ":t:{"`)
)

// CheckNamespace returns an error wrapping ErrNamespace if ns cannot be
// used (backends.NamespaceChecker): depcache.New reports it as the
// manager's configuration error.
func (b *Backend) CheckNamespace(ns string) error { return checkNS(ns) }

// checkNS returns an error wrapping ErrNamespace if ns cannot be used.
func checkNS(ns string) error {
	if strings.IndexByte(ns, '{') >= 0 && (strings.Contains(ns, ":e:{") || strings.Contains(ns, ":t:{")) {
		return fmt.Errorf("%w: %q", ErrNamespace, ns)
	}
	return nil
}

// Backend is a backends.Backend on a go-redis client. It is safe for
// concurrent use. Build one with New or FromEnv.
//
// The Backend does what every topology shares (first-use checks, argument
// checks, TTL capping, error context) and hands the rest to its topology:
// a single Redis (single.go), a single Redis with fill leases
// (single_filllock.go) or Redis Cluster (cluster.go), chosen once by New.
type Backend struct {
	c     redis.UniversalClient
	owned bool
	cfg   config
	log   *slog.Logger
	topo  topology

	closed    atomic.Bool
	clientErr error // the client cannot honour deadlines (deadlines.go)

	// connecting is held by the one caller learning the server; a channel,
	// not a mutex, so that the others wait no longer than their context.
	connecting chan struct{}
	srv        atomic.Pointer[server]

	notify notifyState // in-process tiers (notify.go)
}

var (
	_ backends.Backend          = (*Backend)(nil)
	_ backends.Releaser         = (*Backend)(nil)
	_ backends.NamespaceChecker = (*Backend)(nil)
)

// topology is how one deployment carries the fill protocol. Each method
// gets what the Backend learnt at first use; the Backend has already
// checked its arguments (deduplicated tags, a TTL in ms, a fill young
// enough).
type topology interface {
	// connect learns the server (policy, version, replicas) and loads the
	// scripts. A network error is returned, to be retried at the next
	// call; a permanent one is kept in server.err.
	connect(ctx context.Context) (*server, error)
	// lookup and fill return errors that name the key; the other methods
	// return the bare cause and the Backend adds the context.
	lookup(ctx context.Context, srv *server, ns, key string) (backends.Lookup, error)
	fill(ctx context.Context, srv *server, ns string, f backends.Fill, ttlMS int64) error
	invalidate(ctx context.Context, srv *server, ns string, tags []string) (int, error)
	delete(ctx context.Context, srv *server, ns string, keys []string) (int, error)
	// entryTTL is PTTL of a value entry: -2 for no entry (or a lease), -1
	// for no expiry.
	entryTTL(ctx context.Context, srv *server, entryKey string) (int64, error)
	release(ctx context.Context, srv *server, entryKey, lease string) error
	clear(ctx context.Context, srv *server, ns string) (int, error)
	prune(ctx context.Context, srv *server, ns string) error
}

// server is what the Backend learns from the server at first use.
type server struct {
	err      error  // a permanent failure (unsupported server)
	policy   string // maxmemory-policy, read or assumed
	unsafe   bool   // policy may evict metadata
	volatile bool   // volatile-*: cap entries without expiry
	replicas int    // connected replicas (on Cluster, of the master that has most): invalidations WAIT for one
	// lateReplica: an invalidation script found replicas connected after
	// first use (single Redis): from then on every invalidation waits.
	lateReplica atomic.Bool
	scripts     *scriptSet
}

// New returns a Backend on c. It does not own c: Close leaves c open.
// Nothing is sent to the server until the Backend is first used.
//
// Every call must end at its context's deadline, even on a server that
// accepts connections and never answers, which go-redis does only with
// ContextTimeoutEnabled: on a *redis.Client (standalone or failover),
// *redis.ClusterClient or *redis.Ring built without it, Lookup and Fill
// fail with ErrNoContextTimeout (logged here once) and the cache serves
// uncached; invalidations still run.
func New(c redis.UniversalClient, opts ...Option) *Backend {
	b := &Backend{c: c, cfg: defaultConfig(), connecting: make(chan struct{}, 1)}
	for _, o := range opts {
		if o != nil { // an option built conditionally
			o(&b.cfg)
		}
	}
	b.cfg.prunedKey = prunedKeyOf(b.cfg.epochKey)
	b.log = b.cfg.logger
	if b.log == nil {
		b.log = slog.Default()
	}
	if b.clientErr = clientHonoursDeadlines(c); b.clientErr != nil {
		b.log.Error("redisbackend: cache reads and fills are disabled", "err", b.clientErr)
	}
	switch cc, isCluster := c.(*redis.ClusterClient); {
	case isCluster:
		b.topo = &cluster{client: cc, cfg: &b.cfg, log: b.log}
	case b.cfg.fillLock:
		b.topo = &lockedSingle{newSingle(c, &b.cfg, b.log, true)}
	default:
		s := newSingle(c, &b.cfg, b.log, false)
		b.topo = &s
	}
	return b
}

// Close releases the client if the Backend opened it (FromEnv). Later calls
// fail with an error wrapping backends.ErrClosed. Close is idempotent.
func (b *Backend) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.notify.close()
	if w, ok := b.topo.(interface{ waitBackground() }); ok {
		w.waitBackground() // late lease releases, each bounded
	}
	if !b.owned {
		return nil
	}
	if err := b.c.Close(); err != nil {
		return fmt.Errorf("redisbackend: close: %w", err)
	}
	return nil
}

// Policy returns the maxmemory-policy the Backend runs under, read from the
// server or assumed, or "" before first use.
func (b *Backend) Policy() string {
	if srv := b.srv.Load(); srv != nil {
		return srv.policy
	}
	return ""
}

// connected returns what the Backend knows of the server, learning it at
// first use. A failure to reach the server is retried at the next call.
func (b *Backend) connected(ctx context.Context) (*server, error) {
	if b.closed.Load() {
		return nil, backends.ErrClosed
	}
	srv := b.srv.Load()
	if srv == nil {
		select {
		case b.connecting <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		defer func() { <-b.connecting }()
		if srv = b.srv.Load(); srv == nil {
			var err error
			if srv, err = b.topo.connect(ctx); err != nil {
				return nil, err
			}
			b.srv.Store(srv)
		}
	}
	return srv, srv.err
}

// usable is connected, for the calls that read or fill entries: they fail
// under a policy that may evict metadata.
func (b *Backend) usable(ctx context.Context) (*server, error) {
	if b.clientErr != nil {
		return nil, b.clientErr
	}
	srv, err := b.connected(ctx)
	if err == nil && srv.unsafe {
		err = fmt.Errorf("%w (policy %s)", ErrUnsafePolicy, srv.policy)
	}
	return srv, err
}

// Epoch returns the current epoch, creating it (with a new era) if the
// server has none.
func (b *Backend) Epoch(ctx context.Context) (backends.Epoch, error) {
	srv, err := b.connected(ctx)
	if err != nil {
		return backends.Epoch{}, fmt.Errorf("redisbackend: epoch: %w", err)
	}
	v, err := b.c.Get(ctx, b.cfg.epochKey).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return backends.Epoch{}, fmt.Errorf("redisbackend: epoch: %w", err)
	}
	ep, err := ensureEpoch(ctx, b.c, srv, b.cfg.epochKey, v, err == nil)
	if err != nil {
		return backends.Epoch{}, fmt.Errorf("redisbackend: epoch: %w", err)
	}
	return ep, nil
}

// Lookup reads the entry under key and, on a miss, the epoch to present to
// Fill. Bytes that are not an entry envelope are deleted and reported as a
// miss with Corrupt set.
func (b *Backend) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	if err := checkNS(ns); err != nil {
		return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: %w", key, err)
	}
	srv, err := b.usable(ctx)
	if err != nil {
		return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: %w", key, err)
	}
	return b.topo.lookup(ctx, srv, ns, key)
}

// Fill stores f.Entry under f.Key and registers it under its dependencies,
// unless one of them was invalidated after f.Since, the epoch's era
// changed, or f is older than the maximum fill age: then it stores nothing
// and returns an error wrapping backends.ErrStale.
func (b *Backend) Fill(ctx context.Context, ns string, f backends.Fill) error {
	if err := checkNS(ns); err != nil {
		return fmt.Errorf("redisbackend: fill %q: %w", f.Key, err)
	}
	for _, d := range f.Entry.Deps {
		// A dependency of another namespace is registered in that
		// namespace's tag hash: its name must be as safe as ours.
		if !backends.IsPlainTag(d) {
			if dep := backends.ParseDep(ns, d); !dep.Carried && dep.NS != ns {
				if err := checkNS(dep.NS); err != nil {
					return fmt.Errorf("redisbackend: fill %q: dependency %q: %w", f.Key, dep.Tag, err)
				}
			}
		}
	}
	srv, err := b.usable(ctx)
	if err != nil {
		return fmt.Errorf("redisbackend: fill %q: %w", f.Key, err)
	}
	if f.Current {
		// A single Redis reads the epoch in the fill script; Cluster
		// reads it first (its fill takes several steps anyway).
		if _, ok := b.topo.(*cluster); ok {
			if f.Since, err = b.Epoch(ctx); err != nil {
				return fmt.Errorf("redisbackend: fill %q: %w", f.Key, err)
			}
			f.Current, f.Age = false, 0
		} else {
			f.Since, f.Age = backends.Epoch{}, 0
		}
	}
	if f.Age > b.cfg.maxFillAge {
		return fmt.Errorf("redisbackend: fill %q: %w (computation took %v, longer than %v)", f.Key, backends.ErrStale, f.Age, b.cfg.maxFillAge)
	}
	if f.Since.Era == "" && !f.Current {
		return fmt.Errorf("redisbackend: fill %q: %w (no epoch)", f.Key, backends.ErrStale)
	}
	var ttl time.Duration
	switch {
	case f.TTL > 0:
		ttl = f.TTL
	case f.TTL == 0 || f.TTL == backends.NoExpiry:
		if srv.volatile {
			ttl = b.cfg.maxTTL
		}
	default:
		return fmt.Errorf("redisbackend: fill %q: negative TTL %v", f.Key, f.TTL)
	}
	ttlMS := int64(0)
	if ttl > 0 {
		ttlMS = int64((ttl + time.Millisecond - 1) / time.Millisecond)
	}
	return b.topo.fill(ctx, srv, ns, f, ttlMS)
}

// Invalidate bumps the epoch, stamps each tag with it and deletes every
// entry registered under the tags, returning only once they are all gone.
// Where the server has replicas an invalidation no replica acknowledged
// fails with ErrNotReplicated.
func (b *Backend) Invalidate(ctx context.Context, ns string, tags ...string) (int, error) {
	if err := checkNS(ns); err != nil {
		return 0, fmt.Errorf("redisbackend: invalidate: %w", err)
	}
	srv, err := b.connected(ctx)
	if err != nil {
		return 0, fmt.Errorf("redisbackend: invalidate: %w", err)
	}
	tags = dedupe(tags)
	if len(tags) == 0 {
		return 0, nil
	}
	return b.topo.invalidate(ctx, srv, ns, tags)
}

// Delete removes the entries under keys and returns how many existed.
// Their registrations stay until an invalidation, a fill's pruning or Clear
// removes them.
func (b *Backend) Delete(ctx context.Context, ns string, keys ...string) (int, error) {
	if err := checkNS(ns); err != nil {
		return 0, fmt.Errorf("redisbackend: delete: %w", err)
	}
	srv, err := b.connected(ctx)
	if err != nil {
		return 0, fmt.Errorf("redisbackend: delete: %w", err)
	}
	if len(keys) == 0 {
		return 0, nil
	}
	n, err := b.topo.delete(ctx, srv, ns, keys)
	if err != nil {
		return n, fmt.Errorf("redisbackend: delete %q: %w", keys, err)
	}
	return n, nil
}

// TTL reports the remaining lifetime of the entry under key: NoExpiry if
// it has none, an error wrapping backends.ErrNotFound if there is no entry.
func (b *Backend) TTL(ctx context.Context, ns, key string) (time.Duration, error) {
	if err := checkNS(ns); err != nil {
		return 0, fmt.Errorf("redisbackend: ttl %q: %w", key, err)
	}
	srv, err := b.connected(ctx)
	if err != nil {
		return 0, fmt.Errorf("redisbackend: ttl %q: %w", key, err)
	}
	ms, err := b.topo.entryTTL(ctx, srv, entryKey(ns, key))
	if err != nil {
		return 0, fmt.Errorf("redisbackend: ttl %q: %w", key, err)
	}
	switch {
	case ms == -2:
		return 0, fmt.Errorf("redisbackend: ttl %q: %w", key, backends.ErrNotFound)
	case ms < 0:
		return backends.NoExpiry, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// Release gives back a fill lease that Lookup returned and no Fill will
// use: the entry key is deleted if it still holds that lease, so that
// other callers need not wait for it to expire (on a single Redis, leases
// exist only with WithFillLock).
func (b *Backend) Release(ctx context.Context, ns, key, lease string) error {
	if lease == "" {
		return nil
	}
	if err := checkNS(ns); err != nil {
		return fmt.Errorf("redisbackend: release %q: %w", key, err)
	}
	srv, err := b.connected(ctx)
	if err != nil {
		return fmt.Errorf("redisbackend: release %q: %w", key, err)
	}
	if err := b.topo.release(ctx, srv, entryKey(ns, key), lease); err != nil {
		return fmt.Errorf("redisbackend: release %q: %w", key, err)
	}
	return nil
}

// Clear first stamps the namespace as an invalidation stamps a tag (it
// bumps the epoch and writes the namespace stamp ns:c, waiting for a
// replica where there are any), so that every fill of the namespace, or of
// one of its tags, that began before is refused. Then it removes every
// entry of the namespace and counts them, and cleans its tag hashes: the
// entries of other namespaces still registered there are unlinked, their
// registrations and those whose entries are gone are removed, stamps older than
// twice the maximum fill age are dropped from hashes that hold nothing
// else, and emptied hashes disappear. Each hash is cleaned atomically, so
// a fill racing Clear keeps both its entry and its registration, or
// neither matters. Clear never deletes or resets the epoch, and never
// uses KEYS or FLUSHDB.
func (b *Backend) Clear(ctx context.Context, ns string) (int, error) {
	if err := checkNS(ns); err != nil {
		return 0, fmt.Errorf("redisbackend: clear: %w", err)
	}
	srv, err := b.connected(ctx)
	if err != nil {
		return 0, fmt.Errorf("redisbackend: clear %q: %w", ns, err)
	}
	n, err := b.topo.clear(ctx, srv, ns)
	if err != nil {
		return n, fmt.Errorf("redisbackend: clear %q: %w", ns, err)
	}
	return n, nil
}

// Prune cleans the tag hashes of the namespace as Clear does, without
// removing entries: registrations whose entries expired or were deleted go,
// and stamps older than twice the maximum fill age go from hashes that
// hold nothing else. Fills and invalidations already keep metadata bounded
// (doc.go, "Pruning"); Prune SCANs the namespace to clean everything at
// once.
func (b *Backend) Prune(ctx context.Context, ns string) error {
	if err := checkNS(ns); err != nil {
		return fmt.Errorf("redisbackend: prune: %w", err)
	}
	srv, err := b.connected(ctx)
	if err != nil {
		return fmt.Errorf("redisbackend: prune %q: %w", ns, err)
	}
	if err := b.topo.prune(ctx, srv, ns); err != nil {
		return fmt.Errorf("redisbackend: prune %q: %w", ns, err)
	}
	return nil
}

// Key layout. Braces are Redis Cluster hash tags: an entry hashes by its
// key, a tag hash by its tag.
func entryKey(ns, key string) string { return ns + ":e:{" + key + "}" }
func tagKey(ns, tag string) string   { return ns + ":t:{" + tag + "}" }

// frozenKey is the frozen hash of a tag hash: where an invalidation of a
// big tag moves its registrations to drain them (invalidateLua). In the
// tag hash's Cluster slot; tag hash keys end with "}", so no tag hash is
// another's frozen hash, and Clear and Prune, whose SCAN of ns:t:{*
// finds frozen hashes too, clean them as tag hashes.
func frozenKey(tagHash string) string { return tagHash + ":d" }

// tagIndexKey is the namespace's tag index: a sorted set of its tag hash
// keys, by the time of their last stamp or first registration, which
// fills and invalidations trim (doc.go, "Pruning").
func tagIndexKey(ns string) string { return ns + ":s" }

// clearKey is the namespace's stamp: a hash like a tag's, holding only
// the stamp "~v" of the namespace's last Clear, which every fill storing
// into the namespace or depending on one of its tags checks. It is in the
// tag index, and pruned like a tag's stamp (doc.go, "Pruning").
func clearKey(ns string) string { return ns + ":c" }

// depSpaces returns ns and the namespaces of deps, each once: the
// namespace stamps a fill of an entry of ns with those dependencies is
// checked against.
func depSpaces(ns string, deps []backends.Dep) []string {
	out := []string{ns}
	for _, d := range deps {
		if !slices.Contains(out, d.NS) {
			out = append(out, d.NS)
		}
	}
	return out
}

// ensureEpoch parses the epoch value v, read by the caller, or creates the
// epoch if it was missing or unreadable (an extra round trip, rare).
func ensureEpoch(ctx context.Context, c redis.Scripter, srv *server, epochKey, v string, found bool) (backends.Epoch, error) {
	if found {
		if ep, err := backends.ParseEpoch(v); err == nil {
			return ep, nil
		}
	}
	v, err := srv.scripts[scriptEnsureEpoch].Run(ctx, c, []string{epochKey}, newEra()).Text()
	if err != nil {
		return backends.Epoch{}, err
	}
	return backends.ParseEpoch(v)
}

// policyRank orders eviction policies by danger to metadata: noeviction
// evicts nothing, volatile-* only keys with a TTL (never metadata), the
// rest (allkeys-*, unknown) anything.
func policyRank(p string) int {
	switch {
	case p == "noeviction":
		return 0
	case strings.HasPrefix(p, "volatile-"):
		return 1
	}
	return 2
}

// applyPolicy records the policy srv runs under and what it implies.
func applyPolicy(srv *server, policy string, log *slog.Logger) {
	srv.policy = policy
	switch policyRank(policy) {
	case 1:
		srv.volatile = true
	case 2:
		srv.unsafe = true
		log.Error("redisbackend: maxmemory-policy may evict tag registrations and stamps; serving uncached (use noeviction or volatile-*)",
			"policy", policy)
	}
}

// infoField returns the value of name in an INFO reply.
func infoField(info, name string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// The log lines of a first use that an ACL restricts (doc.go, "Security").
const (
	policyRefusedMsg = "redisbackend: CONFIG GET maxmemory-policy refused (managed Redis, or an ACL user without CONFIG); assuming the configured policy (WithAssumedPolicy): set it to the server's real policy"
	infoRefusedMsg   = "redisbackend: INFO refused (an ACL user without +info): replicas and failovers cannot be detected, so invalidations would not wait for a replica and eras would not follow a failover; grant +info"
)

// isNoPerm reports an ACL refusal.
func isNoPerm(err error) bool { return redis.HasErrorPrefix(err, "NOPERM") }

// firstErrOf returns the first non-nil error of errs.
func firstErrOf(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// setupRefused returns execErr, the error of a pipeline of cmds, when no
// command carries an error: go-redis sets none when the server refused the
// connection's own setup (AUTH, SELECT, HELLO: a wrong password, a
// database index out of range), so nothing was read. connect must fail
// then, not record what it did not read (the policy, the replicas) for
// the backend's lifetime.
func setupRefused(execErr error, cmds ...redis.Cmder) error {
	if execErr == nil {
		return nil
	}
	for _, cmd := range cmds {
		if cmd.Err() != nil {
			return nil
		}
	}
	return execErr
}

// isServerError reports an error the server replied with, as opposed to a
// failure to reach it.
func isServerError(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && !errors.Is(err, redis.Nil)
}

// newEra returns a fresh random era.
func newEra() string {
	var b [8]byte
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return hex.EncodeToString(b[:])
}

// newFillID returns a fresh random fill id.
func newFillID() string {
	return strconv.FormatUint(rand.Uint64(), 36)
}

// leasePrefix starts every lease token. Envelopes start with "dc" and the
// version byte 1: a token is never mistaken for an entry, and a store that
// knows no leases reads one as corrupt.
const leasePrefix = "dc\x00L"

// newLeaseToken returns a fresh lease token.
func newLeaseToken() string {
	return leasePrefix + strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36)
}

func isLease(s string) bool { return strings.HasPrefix(s, leasePrefix) }

// leaseMS is the lifetime of a fill lease in milliseconds.
func (c *config) leaseMS() int64 {
	d := c.leaseTTL
	if d <= 0 {
		d = c.maxFillAge
	}
	return max(1, d.Milliseconds())
}

// decodeEntry reads the envelope v stored under ek: a hit, or a miss with
// Corrupt once the bytes that are no envelope are deleted.
func decodeEntry(ctx context.Context, c redis.Cmdable, log *slog.Logger, key, ek, v string, deps []string) (backends.Lookup, error) {
	e, err := backends.DecodeEntryStringInto(v, deps)
	if err == nil {
		return backends.Lookup{Found: true, Entry: e}, nil
	}
	log.Warn("redisbackend: corrupt entry deleted", "key", ek, "err", err)
	if err := c.Unlink(ctx, ek).Err(); err != nil {
		return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: delete corrupt entry: %w", key, err)
	}
	return backends.Lookup{Corrupt: true}, nil
}

// registeredDeps reads the dependencies of an entry of namespace ns
// (backends.ParseDep), leaving out the carried ones, which are neither
// checked nor registered. A tag of another namespace is checked and
// registered in that namespace's tag hash, so its invalidation finds the
// entry (registrations hold full entry keys); the tag index holds full
// hash keys, so pruning treats it like any other.
func registeredDeps(ns string, deps []string) []backends.Dep {
	out := make([]backends.Dep, 0, len(deps))
	for _, d := range deps {
		if dep := backends.ParseDep(ns, d); !dep.Carried {
			out = append(out, dep)
		}
	}
	return out
}

// dedupe returns s without repeated strings, in first-seen order. It
// returns s itself when nothing repeats.
func dedupe(s []string) []string {
	if len(s) < 2 {
		return s
	}
	seen := make(map[string]struct{}, len(s))
	out := s[:0:0]
	for _, v := range s {
		if _, ok := seen[v]; !ok {
			seen[v] = struct{}{}
			out = append(out, v)
		}
	}
	return out
}

// scanPages runs SCAN MATCH pattern on c to the end, calling fn with each
// non-empty page.
func scanPages(ctx context.Context, c redis.Cmdable, pattern string, count int, fn func([]string) error) error {
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, pattern, int64(count)).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			if err := fn(keys); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// globEscape escapes the glob metacharacters of s for SCAN MATCH.
func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var sb strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			sb.WriteByte('\\')
		}
		sb.WriteRune(r)
	}
	return sb.String()
}
