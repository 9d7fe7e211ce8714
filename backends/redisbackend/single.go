package redisbackend

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/internal/taglist"
)

// single is the topology of one Redis (a *redis.Client, including a
// Sentinel failover client): every operation is one script or one plain
// command, atomic on the server (doc.go, "Scripts and round trips").
type single struct {
	client redis.UniversalClient
	cfg    *config
	log    *slog.Logger
	// leases tells the scripts that entry keys may hold fill leases
	// (WithFillLock, single_filllock.go), so that they count entries, not
	// leases: it costs a read per key, paid only where leases exist.
	leases bool
	// epochArg is cfg.epochKey boxed once: every lookup's MGET carries it,
	// and boxing it per call would cost a hit an allocation.
	epochArg any
}

func newSingle(c redis.UniversalClient, cfg *config, log *slog.Logger, leases bool) single {
	return single{client: c, cfg: cfg, log: log, leases: leases, epochArg: cfg.epochKey}
}

// connect reads the eviction policy, the server version and the replicas
// in one round trip, and loads the scripts in a second.
func (s *single) connect(ctx context.Context) (*server, error) {
	pipe := s.client.Pipeline()
	info := pipe.Info(ctx, "server")
	repl := pipe.Info(ctx, "replication")
	policy := pipe.ConfigGet(ctx, "maxmemory-policy")
	_, execErr := pipe.Exec(ctx)
	cmds := []redis.Cmder{info, repl, policy}
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil && !isServerError(err) {
			return nil, fmt.Errorf("redisbackend: connect: %w", err)
		}
	}
	if err := setupRefused(execErr, cmds...); err != nil {
		return nil, fmt.Errorf("redisbackend: connect: %w", err)
	}

	srv := &server{}
	if p := policy.Val()["maxmemory-policy"]; policy.Err() == nil && p != "" {
		applyPolicy(srv, p, s.log)
	} else {
		s.log.Info(policyRefusedMsg, "policy", s.cfg.assumedPolicy, "err", policy.Err())
		applyPolicy(srv, s.cfg.assumedPolicy, s.log)
	}
	version := ""
	if info.Err() == nil {
		version = infoField(info.Val(), "redis_version")
	}
	if repl.Err() == nil {
		srv.replicas, _ = strconv.Atoi(infoField(repl.Val(), "connected_slaves"))
	}
	infoRefused := isNoPerm(info.Err()) || isNoPerm(repl.Err())
	if infoRefused {
		s.log.Error(infoRefusedMsg, "err", firstErrOf(info.Err(), repl.Err()))
	}

	// Redis 7 reads the flags of a shebang line; older servers and
	// miniredis get the plain scripts. A server that refuses the shebang
	// variant gets the plain one too, and so does one whose version an
	// ACL hides, after trying the shebang.
	major, _ := strconv.Atoi(strings.SplitN(version, ".", 2)[0])
	sets := []*scriptSet{plainScripts}
	if major >= 7 || infoRefused {
		sets = []*scriptSet{shebangScripts, plainScripts}
	}
	var lerr error
	for _, set := range sets {
		if lerr = loadScripts(ctx, s.client, set); lerr == nil {
			srv.scripts = set
			break
		}
		if !isServerError(lerr) {
			return nil, fmt.Errorf("redisbackend: load scripts: %w", lerr)
		}
	}
	if srv.scripts == nil {
		return nil, fmt.Errorf("redisbackend: load scripts: %w", lerr)
	}
	s.log.Debug("redisbackend: connected", "version", version, "policy", srv.policy,
		"replicas", srv.replicas, "allow-oom", srv.scripts == shebangScripts)
	return srv, nil
}

func loadScripts(ctx context.Context, c redis.UniversalClient, set *scriptSet) error {
	pipe := c.Pipeline()
	cmds := make([]*redis.StringCmd, len(set))
	for i, s := range set {
		// Not s.Load: it would read the reply before the pipeline ran.
		cmds[i] = pipe.ScriptLoad(ctx, s.src)
	}
	_, execErr := pipe.Exec(ctx)
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil {
			return err
		}
	}
	return execErr // a refused connection setup, which no command carries
}

// run runs a script of the server's variant.
func (s *single) run(ctx context.Context, srv *server, id scriptID, keys []string, args ...any) *redis.Cmd {
	return srv.scripts[id].Run(ctx, s.client, keys, args...)
}

// lookup reads the entry and the epoch in one MGET.
func (s *single) lookup(ctx context.Context, srv *server, ns, key string) (backends.Lookup, error) {
	a := newLookupArgs(ns, key, s.epochArg)
	ek := a.ek
	// MGET of the entry and the epoch, as client.MGet would send it but
	// with its arguments made in one allocation (lookupArgs), read as
	// strings: a nil reads as "", which neither an envelope, a lease nor an
	// epoch is, and go-redis then boxes neither value.
	cmd := redis.NewStringSliceCmd(ctx, a.args[:]...)
	_ = s.client.Process(ctx, cmd)
	vals, err := cmd.Result()
	if err != nil {
		return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: %w", key, err)
	}
	if len(vals) != 2 {
		return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: MGET returned %d values", key, len(vals))
	}
	var res backends.Lookup
	if v := vals[0]; isLease(v) {
		// Another process, with WithFillLock, is filling the key.
		res.Busy = true
	} else if v != "" {
		if res, err = s.decode(ctx, key, ek, v, a.deps[:0]); err != nil || res.Found {
			return res, err
		}
	}
	v := vals[1]
	if res.Epoch, err = ensureEpoch(ctx, s.client, srv, s.cfg.epochKey, v, v != ""); err != nil {
		return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: epoch: %w", key, err)
	}
	return res, nil
}

// decode reads the envelope v stored under ek (decodeEntry), with its tags
// in deps's array if they fit.
func (s *single) decode(ctx context.Context, key, ek, v string, deps []string) (backends.Lookup, error) {
	return decodeEntry(ctx, s.client, s.log, key, ek, v, deps)
}

// fill checks the stamps, registers and stores in one script.
func (s *single) fill(ctx context.Context, srv *server, ns string, f backends.Fill, ttlMS int64) error {
	e := f.Entry
	e.Since = f.Since
	ek := entryKey(ns, f.Key)
	tags := registeredDeps(ns, dedupe(e.Deps))
	var spaces []string // the namespace stamps to check: none at the current epoch
	if !f.Current {
		spaces = depSpaces(ns, tags)
	}
	keys := make([]string, 4, 4+len(spaces)+len(tags))
	keys[0], keys[1], keys[2], keys[3] = ek, s.cfg.epochKey, tagIndexKey(ns), s.cfg.prunedKey
	for _, sp := range spaces {
		keys = append(keys, clearKey(sp))
	}
	for _, d := range tags {
		keys = append(keys, tagKey(d.NS, d.Tag))
	}
	// A fill at the current epoch (Manager.Set) sends an envelope with an
	// empty epoch, which the script fills in with the one it reads.
	sample := 0
	if rand.IntN(pruneEvery) == 0 {
		sample = pruneSample
	}
	res, err := s.run(ctx, srv, scriptFill, keys,
		f.Since.Era, f.Since.N, newFillID(), backends.EncodeEntry(e), ttlMS, sample,
		s.cfg.pruneAfterMS(), trimBudget, trimSample, len(spaces), newEra()).Slice()
	if err != nil {
		return fmt.Errorf("redisbackend: fill %q: %w", f.Key, err)
	}
	code, _ := res[0].(int64)
	switch code {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("redisbackend: fill %q: %w (the epoch was lost: a new era begins)", f.Key, backends.ErrStale)
	case 2:
		return fmt.Errorf("redisbackend: fill %q: %w (epoch %v is of another era than %v)", f.Key, backends.ErrStale, res[1], f.Since)
	case 3:
		i, _ := res[1].(int64)
		tag := ""
		if i >= 1 && int(i) <= len(tags) {
			tag = tags[i-1].Tag
		}
		return fmt.Errorf("redisbackend: fill %q: %w (tag %q invalidated at %v, after %v)", f.Key, backends.ErrStale, tag, res[2], f.Since)
	case 4:
		i, _ := res[1].(int64)
		sp := ""
		if i >= 1 && int(i) <= len(spaces) {
			sp = spaces[i-1]
		}
		return fmt.Errorf("redisbackend: fill %q: %w (namespace %q cleared at %v, after %v)", f.Key, backends.ErrStale, sp, res[2], f.Since)
	case 5:
		return fmt.Errorf("redisbackend: fill %q: %w (a stamp of %v, after %v, was pruned: the fill is older than the prune age)", f.Key, backends.ErrStale, res[1], f.Since)
	case 6:
		return fmt.Errorf("redisbackend: fill %q: %w (epoch %v is behind %v: a failover lost the invalidation that bumped it)", f.Key, backends.ErrStale, res[1], f.Since)
	}
	return fmt.Errorf("redisbackend: fill %q: unexpected script reply %v", f.Key, res)
}

// invalidate runs one script that bumps the epoch, stamps every tag and
// drains the tags whose registrations fit the chunk size; bigger ones are
// drained in HSCAN steps of one script each, over the whole cursor. Where
// the server has replicas every script is followed by WAIT.
func (s *single) invalidate(ctx context.Context, srv *server, ns string, tags []string) (int, error) {
	keys := make([]string, 3, 3+len(tags))
	keys[0], keys[1], keys[2] = s.cfg.epochKey, tagIndexKey(ns), s.cfg.prunedKey
	for _, t := range tags {
		keys = append(keys, tagKey(ns, t))
	}
	// Each invalidation visits at least as many due stamps as it writes,
	// so that the index never grows under any mix of traffic.
	trimWant := len(tags) + trimBudget
	// Once a replica failed to acknowledge a step, the invalidation fails
	// anyway: the remaining steps run without waiting.
	var werr error
	waited := s.waits(srv)
	wait := func() bool { return waited && werr == nil }
	v, werr, err := s.runReplicated(ctx, srv, scriptInvalidate, wait(), keys, newEra(), s.cfg.chunkSize, s.leaseFlag(),
		s.cfg.pruneAfterMS(), min(trimWant, trimStep), trimSample, stepBudget.Microseconds())
	res, _ := v.([]any)
	if err == nil && len(res) < 4 {
		err = fmt.Errorf("unexpected script reply %v", v)
	}
	if err != nil {
		return 0, fmt.Errorf("redisbackend: invalidate %s: %w", taglist.Quote(tags), err)
	}
	removed, _ := res[1].(int64)
	visited, _ := res[2].(int64)
	if replicas, _ := res[3].(int64); replicas > 0 && !waited {
		// A replica joined after first use: this invalidation's writes
		// were not waited for, and a failover could lose them. Run it
		// again, waiting (the script is idempotent but for the epoch,
		// which only advances).
		srv.lateReplica.Store(true)
		s.log.Info("redisbackend: the server has replicas now: invalidations wait for one", "replicas", replicas)
		n, err := s.invalidate(ctx, srv, ns, tags)
		return int(removed) + n, err
	}
	// Big tags: every registration present when the stamp was written is
	// reached by a full HSCAN iteration of its tag hash or of the frozen
	// hash it was moved to, or was removed (after its entry) by another
	// invalidation. A hash that looks empty is still iterated.
	for _, x := range res[4:] {
		id, hash, args := scriptDrainStep, "", []any{s.leaseFlag()}
		i, _ := x.(int64)
		if f, ok := x.([]any); ok && len(f) == 2 {
			// A frozen hash: drained without HDEL, then unlinked whole if
			// it still holds its stamp.
			i, _ = f[0].(int64)
			stamp, _ := f[1].(string)
			id, args = scriptDrainFrozenStep, append(args, stamp)
		}
		if i < 1 || int(i) > len(tags) {
			return int(removed), fmt.Errorf("redisbackend: invalidate %s: unexpected script reply %v", taglist.Quote(tags), v)
		}
		if hash = keys[i+2]; id == scriptDrainFrozenStep {
			hash = frozenKey(hash)
		}
		cursor, count := "0", min(firstStep, s.cfg.chunkSize)
		for {
			v, stepWerr, err := s.runReplicated(ctx, srv, id, wait(), []string{hash}, append([]any{cursor, count}, args...)...)
			step, _ := v.([]any)
			if err == nil && len(step) != 3 {
				err = fmt.Errorf("unexpected script reply %v", v)
			}
			if err != nil {
				return int(removed), fmt.Errorf("redisbackend: invalidate %s: tag %q: %w", taglist.Quote(tags), tags[i-1], err)
			}
			if werr == nil {
				werr = stepWerr
			}
			cursor, _ = step[0].(string)
			n, _ := step[1].(int64)
			removed += n
			took, _ := step[2].(int64)
			count = nextStep(count, n, time.Duration(took)*time.Microsecond, s.cfg.chunkSize)
			if cursor == "0" {
				break
			}
		}
	}
	if werr != nil {
		return int(removed), fmt.Errorf("redisbackend: invalidate %s: %w", taglist.Quote(tags), werr)
	}
	if visited == int64(min(trimWant, trimStep)) && trimWant > trimStep {
		// An invalidation of many tags trims on in more scripts. Its
		// entries are gone already: a failure here fails nothing.
		if err := s.trim(ctx, srv, ns, trimWant-trimStep); err != nil {
			s.log.Warn("redisbackend: trim the tag index", "ns", ns, "err", err)
		}
	}
	return int(removed), nil
}

// trim visits up to want due stamps of ns's tag index, trimStep per
// script, stopping early when none is left; want < 0 visits until none is.
func (s *single) trim(ctx context.Context, srv *server, ns string, want int) error {
	idx := tagIndexKey(ns)
	limit := want
	if want < 0 {
		// Each visit removes a stamp, drops registrations or defers a
		// tag by the prune age: the steps are bounded by the index size,
		// twice over for a tag whose dead registrations take two steps.
		n, err := s.client.ZCard(ctx, idx).Result()
		if err != nil {
			return err
		}
		limit = 2*int(n) + trimStep
	}
	for done := 0; done < limit; {
		step := min(limit-done, trimStep)
		n, err := s.run(ctx, srv, scriptTrim, []string{idx, s.cfg.epochKey, s.cfg.prunedKey}, s.cfg.pruneAfterMS(), step, trimSample).Int()
		if err != nil {
			return err
		}
		if n < step {
			return nil
		}
		done += n
	}
	return nil
}

// nextStep sizes the next HSCAN step of a drain from the last one, which
// removed n entries of count asked for in took: about stepBudget's worth,
// between minStep and limit.
func nextStep(count int, n int64, took time.Duration, limit int) int {
	if took <= 0 || n <= 0 {
		return count
	}
	next := int(int64(count) * int64(stepBudget) / int64(took))
	return max(minStep, min(next, limit))
}

// waits reports whether invalidations wait for a replica: the server had
// replicas at first use, or an invalidation found one since.
func (s *single) waits(srv *server) bool { return srv.replicas > 0 || srv.lateReplica.Load() }

// runReplicated runs a script that removes data and, if wait, waits for a
// replica to acknowledge it: WAIT is pipelined after the script on the same
// connection (a pipeline runs on one connection), so it covers the
// script's writes. err reports the script's failure; waitErr, a reply of
// the script that no replica acknowledged.
func (s *single) runReplicated(ctx context.Context, srv *server, id scriptID, wait bool, keys []string, args ...any) (v any, waitErr, err error) {
	if !wait {
		v, err = s.run(ctx, srv, id, keys, args...).Result()
		return v, nil, err
	}
	sc := srv.scripts[id]
	exec := func(sha bool) (*redis.Cmd, *redis.Cmd) {
		pipe := s.client.Pipeline()
		var cmd *redis.Cmd
		if sha {
			cmd = sc.EvalSha(ctx, pipe, keys, args...)
		} else {
			cmd = sc.Eval(ctx, pipe, keys, args...)
		}
		// Pipeliner has no Wait; the client's read timeout must exceed
		// the wait timeout (go-redis's default 3s does the default 1s).
		w := pipe.Do(ctx, "WAIT", 1, s.cfg.waitTimeout.Milliseconds())
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
		return v, fmt.Errorf("%w within %v", ErrNotReplicated, s.cfg.waitTimeout), nil
	}
	return v, nil, nil
}

// leaseFlag tells the invalidation scripts whether entry keys may hold
// leases.
func (s *single) leaseFlag() string {
	if s.leases {
		return "1"
	}
	return "0"
}

// delete unlinks the entry keys.
func (s *single) delete(ctx context.Context, _ *server, ns string, keys []string) (int, error) {
	eks := make([]string, len(keys))
	for i, k := range keys {
		eks[i] = entryKey(ns, k)
	}
	return s.unlinkEntries(ctx, eks)
}

// unlinkEntries unlinks keys and returns how many were entries (not
// leases).
func (s *single) unlinkEntries(ctx context.Context, keys []string) (int, error) {
	if !s.leases {
		n, err := s.client.Unlink(ctx, keys...).Result()
		return int(n), err
	}
	n, err := unlinkEntriesScript.Run(ctx, s.client, keys, leasePrefix).Int64()
	return int(n), err
}

// entryTTL is a plain PTTL: without WithFillLock an entry key holds no
// lease. Not through go-redis's DurationCmd, which would turn the -1 and
// -2 replies into durations.
func (s *single) entryTTL(ctx context.Context, _ *server, ek string) (int64, error) {
	return s.client.Do(ctx, "PTTL", ek).Int64()
}

// release deletes the entry key if it still holds lease (taken by a
// WithFillLock lookup, maybe of another process).
func (s *single) release(ctx context.Context, _ *server, ek, lease string) error {
	return releaseScript.Run(ctx, s.client, []string{ek}, lease).Err()
}

// clear unlinks the namespace's entries page by page, then prunes its tag
// hashes.
func (s *single) clear(ctx context.Context, srv *server, ns string) (int, error) {
	// The namespace stamp first: a fill that stores after it is refused,
	// one that stored before it is unlinked below.
	for {
		waited := s.waits(srv)
		v, werr, err := s.runReplicated(ctx, srv, scriptInvalidate, waited,
			[]string{s.cfg.epochKey, tagIndexKey(ns), s.cfg.prunedKey, clearKey(ns)}, newEra(), s.cfg.chunkSize, s.leaseFlag(),
			s.cfg.pruneAfterMS(), trimBudget, trimSample, stepBudget.Microseconds())
		if err == nil {
			err = werr
		}
		if err != nil {
			return 0, fmt.Errorf("stamp the namespace: %w", err)
		}
		if res, _ := v.([]any); !waited && len(res) >= 4 && res[3] != int64(0) {
			srv.lateReplica.Store(true) // as in invalidate: again, waiting
			continue
		}
		break
	}
	removed := 0
	err := scanPages(ctx, s.client, globEscape(ns)+`:e:\{*`, s.cfg.chunkSize, func(keys []string) error {
		n, err := s.unlinkEntries(ctx, keys)
		removed += n
		return err
	})
	if err != nil {
		return removed, err
	}
	return removed, s.cleanTags(ctx, srv, ns, s.leaseFlag())
}

// prune cleans the namespace's tag hashes, one script per SCAN page of
// hashes, and a big hash in HSCAN steps of one script each; then it trims
// the tag index until no due stamp is left, so that the index goes with
// the last stamp.
func (s *single) prune(ctx context.Context, srv *server, ns string) error {
	return s.cleanTags(ctx, srv, ns, "")
}

// cleanTags is prune; with drain set (the leases flag), as Clear needs,
// it unlinks every entry still registered (another namespace's) before
// removing its registration, instead of removing only the dead ones.
func (s *single) cleanTags(ctx context.Context, srv *server, ns, drain string) error {
	maxAge := s.cfg.pruneAfterMS()
	err := scanPages(ctx, s.client, globEscape(ns)+`:t:\{*`, s.cfg.chunkSize, func(keys []string) error {
		big, err := s.run(ctx, srv, scriptClean, append([]string{s.cfg.epochKey, s.cfg.prunedKey}, keys...), s.cfg.chunkSize, maxAge, drain).Slice()
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
				if cursor, err = s.run(ctx, srv, scriptCleanStep, []string{keys[i-1], s.cfg.epochKey, s.cfg.prunedKey}, cursor, s.cfg.chunkSize, maxAge, drain).Text(); err != nil {
					return err
				}
				if cursor == "0" {
					break
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.trim(ctx, srv, ns, -1)
}

// lookupArgs are a lookup's MGET arguments in one allocation: the entry key
// (in buf when it fits), and the argument list, whose key is an interface
// pointing at ek rather than at a boxed copy. A hit spends two allocations
// fewer than with entryKey and a plain argument list. deps is room for the
// tags of the entry read (backends.DecodeEntryStringInto): a hit on an
// entry with up to len(deps) tags allocates nothing more for them. Nothing
// writes to a lookupArgs once made but the lookup's decode, into deps.
type lookupArgs struct {
	args [3]any
	ek   string
	buf  [128]byte
	deps [4]string
}

func newLookupArgs(ns, key string, epochArg any) *lookupArgs {
	a := new(lookupArgs)
	if n := len(ns) + len(":e:{}") + len(key); n <= len(a.buf) {
		b := append(append(append(append(a.buf[:0], ns...), ":e:{"...), key...), '}')
		a.ek = unsafe.String(&a.buf[0], len(b))
	} else {
		a.ek = entryKey(ns, key)
	}
	var ek any = "" // the type word of a string; no allocation
	(*[2]unsafe.Pointer)(unsafe.Pointer(&ek))[1] = unsafe.Pointer(&a.ek)
	a.args = [3]any{"mget", ek, epochArg}
	return a
}
