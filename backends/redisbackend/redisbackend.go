package redisbackend

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
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
)

// Backend is a backends.Backend on a go-redis client. It is safe for
// concurrent use. Build one with New or FromEnv.
type Backend struct {
	c     redis.UniversalClient
	owned bool
	cfg   config
	log   *slog.Logger

	closed atomic.Bool

	initMu sync.Mutex
	st     atomic.Pointer[state]
}

var _ backends.Backend = (*Backend)(nil)

// state is what the Backend learns from the server at first use.
type state struct {
	err      error  // a permanent failure (unsupported client)
	policy   string // maxmemory-policy, read or assumed
	unsafe   bool   // policy may evict metadata
	volatile bool   // volatile-*: cap entries without expiry
	replicas int    // connected replicas (on Cluster, of the master that has most): invalidations WAIT for one
	scripts  *scriptSet
	cluster  *redis.ClusterClient // set on Redis Cluster (cluster.go)
}

// New returns a Backend on c. It does not own c: Close leaves c open.
// Nothing is sent to the server until the Backend is first used.
func New(c redis.UniversalClient, opts ...Option) *Backend {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	log := cfg.logger
	if log == nil {
		log = slog.Default()
	}
	return &Backend{c: c, cfg: cfg, log: log}
}

// Close releases the client if the Backend opened it (FromEnv). Later calls
// fail with an error wrapping backends.ErrClosed. Close is idempotent.
func (b *Backend) Close() error {
	if b.closed.Swap(true) || !b.owned {
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
	if st := b.st.Load(); st != nil {
		return st.policy
	}
	return ""
}

// Key layout. Braces are Redis Cluster hash tags: an entry hashes by its
// key, a tag hash by its tag.
func entryKey(ns, key string) string { return ns + ":e:{" + key + "}" }
func tagKey(ns, tag string) string   { return ns + ":t:{" + tag + "}" }

// state returns what the Backend knows of the server, learning it at first
// use. A failure to reach the server is retried at the next call.
func (b *Backend) state(ctx context.Context) (*state, error) {
	if b.closed.Load() {
		return nil, backends.ErrClosed
	}
	st := b.st.Load()
	if st == nil {
		b.initMu.Lock()
		defer b.initMu.Unlock()
		if st = b.st.Load(); st == nil {
			var err error
			if st, err = b.learn(ctx); err != nil {
				return nil, err
			}
			b.st.Store(st)
		}
	}
	return st, st.err
}

// learn reads the eviction policy, the server version and the replicas in
// one round trip, and loads the scripts in a second.
func (b *Backend) learn(ctx context.Context) (*state, error) {
	if cl, ok := b.c.(*redis.ClusterClient); ok {
		return b.learnCluster(ctx, cl)
	}
	pipe := b.c.Pipeline()
	server := pipe.Info(ctx, "server")
	repl := pipe.Info(ctx, "replication")
	policy := pipe.ConfigGet(ctx, "maxmemory-policy")
	_, _ = pipe.Exec(ctx)
	for _, cmd := range []redis.Cmder{server, repl, policy} {
		if err := cmd.Err(); err != nil && !isServerError(err) {
			return nil, fmt.Errorf("redisbackend: connect: %w", err)
		}
	}

	st := &state{}
	if p := policy.Val()["maxmemory-policy"]; policy.Err() == nil && p != "" {
		st.policy = p
	} else {
		st.policy = b.cfg.assumedPolicy
		b.log.Info("redisbackend: CONFIG GET maxmemory-policy refused; assuming the configured policy (WithAssumedPolicy)",
			"policy", st.policy, "err", policy.Err())
	}
	switch {
	case st.policy == "noeviction":
	case strings.HasPrefix(st.policy, "volatile-"):
		st.volatile = true
	default:
		st.unsafe = true
		b.log.Error("redisbackend: maxmemory-policy may evict tag registrations and stamps; serving uncached (use noeviction or volatile-*)",
			"policy", st.policy)
	}
	version := ""
	if server.Err() == nil {
		version = infoField(server.Val(), "redis_version")
	}
	if repl.Err() == nil {
		st.replicas, _ = strconv.Atoi(infoField(repl.Val(), "connected_slaves"))
	}

	// Redis 7 reads the flags of a shebang line; older servers and
	// miniredis get the plain scripts. A server that refuses the shebang
	// variant gets the plain one too.
	major, _ := strconv.Atoi(strings.SplitN(version, ".", 2)[0])
	sets := []*scriptSet{plainScripts}
	if major >= 7 {
		sets = []*scriptSet{shebangScripts, plainScripts}
	}
	var lerr error
	for _, set := range sets {
		if lerr = loadScripts(ctx, b.c, set); lerr == nil {
			st.scripts = set
			break
		}
		if !isServerError(lerr) {
			return nil, fmt.Errorf("redisbackend: load scripts: %w", lerr)
		}
	}
	if st.scripts == nil {
		return nil, fmt.Errorf("redisbackend: load scripts: %w", lerr)
	}
	b.log.Debug("redisbackend: connected", "version", version, "policy", st.policy,
		"replicas", st.replicas, "allow-oom", st.scripts == shebangScripts)
	return st, nil
}

func loadScripts(ctx context.Context, c redis.UniversalClient, set *scriptSet) error {
	pipe := c.Pipeline()
	cmds := make([]*redis.StringCmd, len(set))
	for i, s := range set {
		// Not s.Load: it would read the reply before the pipeline ran.
		cmds[i] = pipe.ScriptLoad(ctx, s.src)
	}
	_, _ = pipe.Exec(ctx)
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil {
			return err
		}
	}
	return nil
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

// isServerError reports an error the server replied with, as opposed to a
// failure to reach it.
func isServerError(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && !errors.Is(err, redis.Nil)
}

// run runs a script of the state's variant.
func (b *Backend) run(ctx context.Context, st *state, id scriptID, keys []string, args ...any) *redis.Cmd {
	return st.scripts[id].Run(ctx, b.c, keys, args...)
}

// runReplicated runs a script that removes data and, if wait, waits for a
// replica to acknowledge it: WAIT is pipelined after the script on the same
// connection (a pipeline runs on one connection), so it covers the
// script's writes. err reports the script's failure; waitErr, a reply of
// the script that no replica acknowledged.
func (b *Backend) runReplicated(ctx context.Context, st *state, id scriptID, wait bool, keys []string, args ...any) (v any, waitErr, err error) {
	if !wait {
		v, err = b.run(ctx, st, id, keys, args...).Result()
		return v, nil, err
	}
	s := st.scripts[id]
	exec := func(sha bool) (*redis.Cmd, *redis.Cmd) {
		pipe := b.c.Pipeline()
		var cmd *redis.Cmd
		if sha {
			cmd = s.EvalSha(ctx, pipe, keys, args...)
		} else {
			cmd = s.Eval(ctx, pipe, keys, args...)
		}
		// Pipeliner has no Wait; the client's read timeout must exceed
		// the wait timeout (go-redis's default 3s does the default 1s).
		w := pipe.Do(ctx, "WAIT", 1, b.cfg.waitTimeout.Milliseconds())
		_, _ = pipe.Exec(ctx)
		return cmd, w
	}
	cmd, w := exec(true)
	if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		cmd, w = exec(false)
	}
	if v, err = cmd.Result(); err != nil {
		return nil, nil, err
	}
	n, err := w.Int64()
	switch {
	case err != nil:
		return v, fmt.Errorf("%w: WAIT: %w", ErrNotReplicated, err), nil
	case n < 1:
		return v, fmt.Errorf("%w within %v", ErrNotReplicated, b.cfg.waitTimeout), nil
	}
	return v, nil, nil
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

// Epoch returns the current epoch, creating it (with a new era) if the
// server has none.
func (b *Backend) Epoch(ctx context.Context) (backends.Epoch, error) {
	st, err := b.state(ctx)
	if err != nil {
		return backends.Epoch{}, fmt.Errorf("redisbackend: epoch: %w", err)
	}
	v, err := b.c.Get(ctx, b.cfg.epochKey).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return backends.Epoch{}, fmt.Errorf("redisbackend: epoch: %w", err)
	}
	ep, err := b.epoch(ctx, st, v, err == nil)
	if err != nil {
		return backends.Epoch{}, fmt.Errorf("redisbackend: epoch: %w", err)
	}
	return ep, nil
}

// epoch parses the epoch value v, read by the caller, or creates the epoch
// if it was missing or unreadable (an extra round trip, rare).
func (b *Backend) epoch(ctx context.Context, st *state, v string, found bool) (backends.Epoch, error) {
	if found {
		if ep, err := backends.ParseEpoch(v); err == nil {
			return ep, nil
		}
	}
	v, err := b.run(ctx, st, sEnsureEpoch, []string{b.cfg.epochKey}, newEra()).Text()
	if err != nil {
		return backends.Epoch{}, err
	}
	return backends.ParseEpoch(v)
}

// Lookup reads the entry under key and, in the same round trip, the epoch.
// Bytes that are not an entry envelope are deleted and reported as a miss
// with Corrupt set.
func (b *Backend) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	st, err := b.state(ctx)
	if err == nil && st.unsafe {
		err = fmt.Errorf("%w (policy %s)", ErrUnsafePolicy, st.policy)
	}
	if err != nil {
		return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: %w", key, err)
	}
	if st.cluster != nil {
		return b.clusterLookup(ctx, st, ns, key)
	}
	if b.cfg.fillLock {
		return b.lockedLookup(ctx, st, ns, key)
	}
	ek := entryKey(ns, key)
	vals, err := b.c.MGet(ctx, ek, b.cfg.epochKey).Result()
	if err != nil {
		return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: %w", key, err)
	}
	var res backends.Lookup
	if s, ok := vals[0].(string); ok && isLease(s) {
		// Another process, with WithFillLock, is filling the key.
		res.Busy = true
	} else if ok {
		e, derr := backends.DecodeEntry([]byte(s))
		if derr == nil {
			return backends.Lookup{Found: true, Entry: e}, nil
		}
		b.log.Warn("redisbackend: corrupt entry deleted", "key", ek, "err", derr)
		if err := b.c.Unlink(ctx, ek).Err(); err != nil {
			return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: delete corrupt entry: %w", key, err)
		}
		res.Corrupt = true
	}
	v, found := vals[1].(string)
	if res.Epoch, err = b.epoch(ctx, st, v, found); err != nil {
		return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: epoch: %w", key, err)
	}
	return res, nil
}

// Fill stores f.Entry under f.Key and registers it under its dependencies
// in one script, unless one of them was invalidated after f.Since, the
// epoch's era changed, or f is older than the maximum fill age: then it
// stores nothing and returns an error wrapping backends.ErrStale.
func (b *Backend) Fill(ctx context.Context, ns string, f backends.Fill) error {
	st, err := b.state(ctx)
	if err == nil && st.unsafe {
		err = fmt.Errorf("%w (policy %s)", ErrUnsafePolicy, st.policy)
	}
	if err != nil {
		return fmt.Errorf("redisbackend: fill %q: %w", f.Key, err)
	}
	if f.Age > b.cfg.maxFillAge {
		return fmt.Errorf("redisbackend: fill %q: %w (computation took %v, longer than %v)", f.Key, backends.ErrStale, f.Age, b.cfg.maxFillAge)
	}
	if f.Since.Era == "" {
		return fmt.Errorf("redisbackend: fill %q: %w (no epoch)", f.Key, backends.ErrStale)
	}
	var ttl time.Duration
	switch {
	case f.TTL > 0:
		ttl = f.TTL
	case f.TTL == 0 || f.TTL == backends.NoExpiry:
		if st.volatile {
			ttl = b.cfg.maxTTL
		}
	default:
		return fmt.Errorf("redisbackend: fill %q: negative TTL %v", f.Key, f.TTL)
	}
	ttlMS := int64(0)
	if ttl > 0 {
		ttlMS = int64((ttl + time.Millisecond - 1) / time.Millisecond)
	}

	if st.cluster != nil {
		return b.clusterFill(ctx, st, ns, f, ttlMS)
	}
	e := f.Entry
	e.Since = f.Since
	ek := entryKey(ns, f.Key)
	keys := make([]string, 2, 2+len(e.Deps))
	keys[0], keys[1] = ek, b.cfg.epochKey
	tags := registeredDeps(ns, dedupe(e.Deps))
	for _, d := range tags {
		keys = append(keys, tagKey(d.NS, d.Tag))
	}
	res, err := b.run(ctx, st, sFill, keys,
		f.Since.Era, f.Since.N, newFillID(), backends.EncodeEntry(e), ttlMS, pruneSample).Slice()
	if err != nil {
		return fmt.Errorf("redisbackend: fill %q: %w", f.Key, err)
	}
	code, _ := res[0].(int64)
	switch code {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("redisbackend: fill %q: %w (the epoch was lost)", f.Key, backends.ErrStale)
	case 2:
		return fmt.Errorf("redisbackend: fill %q: %w (epoch %v is of another era than %v)", f.Key, backends.ErrStale, res[1], f.Since)
	case 3:
		i, _ := res[1].(int64)
		tag := ""
		if i >= 1 && int(i) <= len(tags) {
			tag = tags[i-1].Tag
		}
		return fmt.Errorf("redisbackend: fill %q: %w (tag %q invalidated at %v, after %v)", f.Key, backends.ErrStale, tag, res[2], f.Since)
	}
	return fmt.Errorf("redisbackend: fill %q: unexpected script reply %v", f.Key, res)
}

// registeredDeps reads the dependencies of an entry of namespace ns
// (backends.ParseDep), leaving out the carried ones, which are neither
// checked nor registered. A tag of another namespace is checked and
// registered in that namespace's tag hash, so its invalidation finds the
// entry (registrations hold full entry keys).
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

// Invalidate bumps the epoch, stamps each tag with it and deletes every
// entry registered under the tags. Tags whose registrations fit the chunk
// size are handled by one script; bigger ones are drained in HSCAN steps
// of one script each, over the whole cursor. Where the server has replicas
// every script is followed by WAIT, and an invalidation no replica
// acknowledged fails with ErrNotReplicated.
func (b *Backend) Invalidate(ctx context.Context, ns string, tags ...string) (int, error) {
	st, err := b.state(ctx)
	if err != nil {
		return 0, fmt.Errorf("redisbackend: invalidate: %w", err)
	}
	tags = dedupe(tags)
	if len(tags) == 0 {
		return 0, nil
	}
	if st.cluster != nil {
		return b.clusterInvalidate(ctx, st, ns, tags)
	}
	keys := make([]string, 1, 1+len(tags))
	keys[0] = b.cfg.epochKey
	for _, t := range tags {
		keys = append(keys, tagKey(ns, t))
	}
	// Once a replica failed to acknowledge a step, the invalidation fails
	// anyway: the remaining steps run without waiting.
	var werr error
	wait := func() bool { return st.replicas > 0 && werr == nil }
	v, werr, err := b.runReplicated(ctx, st, sInvalidate, wait(), keys, newEra(), b.cfg.chunkSize, b.leaseFlag())
	res, _ := v.([]any)
	if err == nil && len(res) < 2 {
		err = fmt.Errorf("unexpected script reply %v", v)
	}
	if err != nil {
		return 0, fmt.Errorf("redisbackend: invalidate %q: %w", tags, err)
	}
	removed, _ := res[1].(int64)
	// Big tags: every registration present when the stamp was written is
	// reached by a full HSCAN iteration, or was removed (after its entry)
	// by another invalidation. A hash that looks empty is still iterated.
	for _, x := range res[2:] {
		i, _ := x.(int64)
		if i < 1 || int(i) > len(tags) {
			return int(removed), fmt.Errorf("redisbackend: invalidate %q: unexpected script reply %v", tags, v)
		}
		cursor := "0"
		for {
			v, stepWerr, err := b.runReplicated(ctx, st, sDrainStep, wait(), []string{keys[i]}, cursor, b.cfg.chunkSize, b.leaseFlag())
			step, _ := v.([]any)
			if err == nil && len(step) != 2 {
				err = fmt.Errorf("unexpected script reply %v", v)
			}
			if err != nil {
				return int(removed), fmt.Errorf("redisbackend: invalidate %q: tag %q: %w", tags, tags[i-1], err)
			}
			if werr == nil {
				werr = stepWerr
			}
			cursor, _ = step[0].(string)
			n, _ := step[1].(int64)
			removed += n
			if cursor == "0" {
				break
			}
		}
	}
	if werr != nil {
		return int(removed), fmt.Errorf("redisbackend: invalidate %q: %w", tags, werr)
	}
	return int(removed), nil
}

// Delete removes the entries under keys and returns how many existed.
// Their registrations stay until an invalidation, a fill's pruning or Clear
// removes them.
func (b *Backend) Delete(ctx context.Context, ns string, keys ...string) (int, error) {
	st, err := b.state(ctx)
	if err != nil {
		return 0, fmt.Errorf("redisbackend: delete: %w", err)
	}
	if len(keys) == 0 {
		return 0, nil
	}
	if st.cluster != nil {
		n, err := b.clusterDelete(ctx, st, ns, keys)
		if err != nil {
			return n, fmt.Errorf("redisbackend: delete %q: %w", keys, err)
		}
		return n, nil
	}
	eks := make([]string, len(keys))
	for i, k := range keys {
		eks[i] = entryKey(ns, k)
	}
	n, err := b.unlinkEntries(ctx, eks)
	if err != nil {
		return 0, fmt.Errorf("redisbackend: delete %q: %w", keys, err)
	}
	return n, nil
}

// TTL reports the remaining lifetime of the entry under key: NoExpiry if
// it has none, an error wrapping backends.ErrNotFound if there is no entry.
func (b *Backend) TTL(ctx context.Context, ns, key string) (time.Duration, error) {
	st, err := b.state(ctx)
	if err != nil {
		return 0, fmt.Errorf("redisbackend: ttl %q: %w", key, err)
	}
	// PTTL through a plain command: go-redis's DurationCmd would turn the
	// -1 and -2 replies into durations.
	var ms int64
	if st.cluster != nil {
		ms, err = b.clusterTTL(ctx, st, entryKey(ns, key))
	} else if b.cfg.fillLock {
		ms, err = entryTTLScript.Run(ctx, b.c, []string{entryKey(ns, key)}, leasePrefix).Int64()
	} else {
		ms, err = b.c.Do(ctx, "PTTL", entryKey(ns, key)).Int64()
	}
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

// Clear removes every entry of the namespace and counts them, then cleans
// its tag hashes: registrations whose entries are gone are removed, stamps
// older than the maximum fill age are dropped from hashes that hold nothing
// else, and emptied hashes disappear. Each hash is cleaned atomically, so a
// fill racing Clear keeps both its entry and its registration, or neither
// matters. Clear never touches the epoch, and never uses KEYS or FLUSHDB.
func (b *Backend) Clear(ctx context.Context, ns string) (int, error) {
	st, err := b.state(ctx)
	if err != nil {
		return 0, fmt.Errorf("redisbackend: clear %q: %w", ns, err)
	}
	if st.cluster != nil {
		n, err := b.clusterClear(ctx, st, ns)
		if err != nil {
			return n, fmt.Errorf("redisbackend: clear %q: %w", ns, err)
		}
		return n, nil
	}
	removed := 0
	err = b.scan(ctx, globEscape(ns)+`:e:\{*`, func(keys []string) error {
		n, err := b.unlinkEntries(ctx, keys)
		removed += n
		return err
	})
	if err != nil {
		return removed, fmt.Errorf("redisbackend: clear %q: %w", ns, err)
	}
	if err := b.prune(ctx, st, ns); err != nil {
		return removed, fmt.Errorf("redisbackend: clear %q: %w", ns, err)
	}
	return removed, nil
}

// Prune cleans the tag hashes of the namespace as Clear does, without
// removing entries: registrations whose entries expired or were deleted go,
// and stamps older than the maximum fill age go from hashes that hold
// nothing else. Fills prune a few registrations of the tags they touch, but
// the hash of a tag that was invalidated and is never filled again stays
// until Prune or Clear; run Prune now and then (it SCANs the namespace).
func (b *Backend) Prune(ctx context.Context, ns string) error {
	st, err := b.state(ctx)
	if err != nil {
		return fmt.Errorf("redisbackend: prune %q: %w", ns, err)
	}
	if err := b.prune(ctx, st, ns); err != nil {
		return fmt.Errorf("redisbackend: prune %q: %w", ns, err)
	}
	return nil
}

func (b *Backend) prune(ctx context.Context, st *state, ns string) error {
	if st.cluster != nil {
		return b.clusterPrune(ctx, st, ns)
	}
	maxAge := b.cfg.maxFillAge.Milliseconds()
	return b.scan(ctx, globEscape(ns)+`:t:\{*`, func(keys []string) error {
		big, err := b.run(ctx, st, sClean, keys, b.cfg.chunkSize, maxAge).Slice()
		if err != nil {
			return err
		}
		for _, x := range big {
			i, _ := x.(int64)
			if i < 1 || int(i) > len(keys) {
				return fmt.Errorf("unexpected script reply %v", big)
			}
			cursor := "0"
			for {
				if cursor, err = b.run(ctx, st, sCleanStep, []string{keys[i-1]}, cursor, b.cfg.chunkSize, maxAge).Text(); err != nil {
					return err
				}
				if cursor == "0" {
					break
				}
			}
		}
		return nil
	})
}

// scan calls fn with each page of keys matching pattern (on Cluster,
// clusterScan runs scanPages on every master).
func (b *Backend) scan(ctx context.Context, pattern string, fn func([]string) error) error {
	return scanPages(ctx, b.c, pattern, b.cfg.chunkSize, fn)
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
