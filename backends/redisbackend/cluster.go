package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/internal/taglist"
)

// cluster is the topology of Redis Cluster (doc.go, "Redis Cluster"). The
// key layout is the single Redis one; what differs is that no script spans
// slots, so a fill takes a lease on its entry and finishes with a
// compare-and-set, and an invalidation carries the registrations it read
// from each tag's slot to the entries' slots and back, in steps
// (cluster_step.go).
type cluster struct {
	client *redis.ClusterClient
	cfg    *config
	log    *slog.Logger
	// replicated: some master had replicas at first use; a registration
	// then goes only once its entry's removal reached a replica
	// (existsOp).
	replicated atomic.Bool
	// releases gives back leases whose operation ran out of time.
	releases lateReleases
}

// errClusterVersion reports a cluster older than Redis 7.
var errClusterVersion = errors.New("redisbackend: Redis Cluster needs Redis 7.0 or later (SET NX GET, script flags)")

// connect reads the eviction policy, the version and the replicas of every
// master (the most dangerous policy wins), and loads the scripts on every
// master.
func (c *cluster) connect(ctx context.Context) (*server, error) {
	var (
		mu       sync.Mutex
		policies []string
		refused  error
		major    = -1
		replicas int
		noInfo   error
	)
	err := c.client.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		pipe := m.Pipeline()
		info := pipe.Info(ctx, "server")
		repl := pipe.Info(ctx, "replication")
		policy := pipe.ConfigGet(ctx, "maxmemory-policy")
		_, execErr := pipe.Exec(ctx)
		cmds := []redis.Cmder{info, repl, policy}
		for _, cmd := range cmds {
			if err := cmd.Err(); err != nil && !isServerError(err) {
				return err
			}
		}
		if err := setupRefused(execErr, cmds...); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if isNoPerm(info.Err()) || isNoPerm(repl.Err()) {
			// Without INFO neither the version nor the replicas can be
			// known, nor can the scripts bind eras to a replication
			// history: a permanent failure, logged once.
			noInfo = firstErrOf(info.Err(), repl.Err())
		}
		if p := policy.Val()["maxmemory-policy"]; policy.Err() == nil && p != "" {
			policies = append(policies, p)
		} else {
			policies = append(policies, c.cfg.assumedPolicy)
			refused = policy.Err()
		}
		v := 0
		if info.Err() == nil {
			v, _ = strconv.Atoi(strings.SplitN(infoField(info.Val(), "redis_version"), ".", 2)[0])
		}
		if major < 0 || v < major {
			major = v
		}
		if repl.Err() == nil {
			n, _ := strconv.Atoi(infoField(repl.Val(), "connected_slaves"))
			replicas = max(replicas, n)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redisbackend: connect: %w", err)
	}
	if len(policies) == 0 {
		return nil, fmt.Errorf("redisbackend: connect: the cluster has no master")
	}
	if noInfo != nil {
		c.log.Error(infoRefusedMsg, "err", noInfo)
		return &server{err: fmt.Errorf("%s: %w", infoRefusedMsg, noInfo)}, nil
	}
	srv := &server{replicas: replicas, scripts: shebangScripts}
	c.replicated.Store(replicas > 0)
	if major < 7 {
		srv.err = errClusterVersion
		return srv, nil
	}
	if refused != nil {
		c.log.Info(policyRefusedMsg, "policy", c.cfg.assumedPolicy, "err", refused)
	}
	worst := policies[0]
	for _, p := range policies[1:] {
		if policyRank(p) > policyRank(worst) {
			worst = p
		}
	}
	applyPolicy(srv, worst, c.log)

	err = c.client.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		pipe := m.Pipeline()
		cmds := []*redis.StringCmd{pipe.ScriptLoad(ctx, shebangScripts[scriptEnsureEpoch].src)}
		for _, s := range clusterScripts {
			cmds = append(cmds, pipe.ScriptLoad(ctx, s.src))
		}
		_, execErr := pipe.Exec(ctx)
		for _, cmd := range cmds {
			if err := cmd.Err(); err != nil {
				return err
			}
		}
		return execErr // a refused connection setup, which no command carries
	})
	if err != nil {
		return nil, fmt.Errorf("redisbackend: load scripts: %w", err)
	}
	c.log.Debug("redisbackend: connected to a cluster", "masters", len(policies), "policy", srv.policy, "replicas", srv.replicas)
	return srv, nil
}

// lookup takes the entry's fill lease and reads the epoch in one round
// trip: SET entry token NX GET on the entry's slot, GET epoch on the
// epoch's. The SET returns what the entry held: an envelope is a hit (and
// NX left it alone), nothing a miss whose lease this caller now holds,
// another token a miss whose lease another caller holds (Busy).
func (c *cluster) lookup(ctx context.Context, srv *server, ns, key string) (backends.Lookup, error) {
	ek := entryKey(ns, key)
	token := newLeaseToken()
	pipe := c.client.Pipeline()
	set := pipe.Do(ctx, "SET", ek, token, "NX", "GET", "PX", c.cfg.leaseMS())
	get := pipe.Get(ctx, c.cfg.epochKey)
	_, _ = pipe.Exec(ctx)
	v, err := set.Text()
	if redis.HasErrorPrefix(err, "OOM") {
		// At maxmemory under noeviction even a SET NX that would not
		// write is refused: read without a lease (a hit still serves).
		token = ""
		v, err = c.client.Get(ctx, ek).Result()
	}
	var res backends.Lookup
	switch {
	case errors.Is(err, redis.Nil):
		res.Lease = token
	case err != nil:
		return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: %w", key, err)
	case isLease(v):
		res.Busy = true
	default:
		l, err := decodeEntry(ctx, c.client, c.log, key, ek, v, nil)
		if err != nil || l.Found {
			return l, err
		}
		res.Corrupt = true
	}
	ev, gerr := get.Result()
	if gerr != nil && !errors.Is(gerr, redis.Nil) {
		err = gerr
	} else {
		res.Epoch, err = ensureEpoch(ctx, c.client, srv, c.cfg.epochKey, ev, gerr == nil)
	}
	if err != nil {
		if res.Lease != "" {
			c.giveBack(ctx, srv, ek, res.Lease)
		}
		return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: epoch: %w", key, err)
	}
	return res, nil
}

// release deletes the entry key if it still holds lease.
func (c *cluster) release(ctx context.Context, _ *server, ek, lease string) error {
	return clusterScripts[clusterReleaseLease].Run(ctx, c.client, []string{ek}, lease).Err()
}

// giveBack releases the lease of an operation that failed, within the
// operation's context while it has time left. Once it has none (the
// failure was the deadline: a frozen or overloaded master), the release
// goes on in the background, bounded by lateReleaseTimeout, and the caller
// returns at its deadline: a release without a deadline would wait for the
// client's read timeout, several times over as go-redis retries (20 s
// measured with one master stopped), and one skipped would leave the key
// served uncached (Busy) until the lease expires.
func (c *cluster) giveBack(ctx context.Context, srv *server, ek, lease string) {
	if ctx.Err() == nil && c.release(ctx, srv, ek, lease) == nil {
		return
	}
	c.releases.start(func(ctx context.Context) { _ = c.release(ctx, srv, ek, lease) })
}

// waitBackground waits for the late releases under way (Backend.Close).
func (c *cluster) waitBackground() { c.releases.wait() }

// fill is the lease-based fill (consistency-notes.md, "Redis Cluster"):
//
//  1. in parallel, one script per tag slot that refuses if a tag's stamp
//     is newer than Since and otherwise registers the entry, waiting for a
//     replica where the cluster has replicas;
//  2. on the epoch's slot, a script that refuses if the epoch is no longer
//     of Since's era or a stamp newer than Since was pruned;
//  3. on the entry's slot, a compare-and-set from the lease to the value.
//
// An invalidation that stamps a tag before step 1 makes step 1 refuse, or,
// if its stamp was pruned before step 1 read it, step 2 (the floor is
// raised before a stamp goes); one that stamps it after finds the
// registration and unlinks the entry key, which holds the lease (taken
// before step 1), so step 3 fails. Step 2 reads the era after the
// registration: an era unchanged then was unchanged since the lookup (eras
// are random and never come back), so every stamp written meanwhile was
// of Since's era, the era step 1 checks. A registration no replica
// acknowledged refuses the fill: a failover could lose it, and the entry
// would outlive the next invalidation of its tag.
//
// A fill without a lease (Manager.Set, or a miss that found another
// caller's lease) takes one first, replacing whatever the entry holds: in
// a first round trip that also checks the stamps without registering, if
// the entry holds nothing or a lease; over an entry (so that a fill
// refused as stale leaves it alone) only once that check passed, in one
// more round trip. A fill that depends on tags of other namespaces checks
// their namespace stamps (Clear) between steps 1 and 2, in one more round
// trip. A fill without tags has nothing to register: step 2 and
// the namespace stamps' check run in one round trip, then the
// compare-and-set (or, without a lease, a plain SET).
func (c *cluster) fill(ctx context.Context, srv *server, ns string, f backends.Fill, ttlMS int64) error {
	e := f.Entry
	e.Since = f.Since
	ek := entryKey(ns, f.Key)
	groups := groupBySlot(ns, dedupe(e.Deps))
	spaces := depSpaces(ns, registeredDeps(ns, dedupe(e.Deps)))
	env := backends.EncodeEntry(e)
	lease := f.Lease
	refuse := func(err error) error {
		if lease != "" {
			c.giveBack(ctx, srv, ek, lease)
		}
		return err
	}
	// The stamps due for pruning ride in the first step, and are trimmed
	// once the fill is done.
	due := c.dueOp(ns, trimBudget)
	due.read = true
	defer c.trimAfter(ctx, ns, due)

	if len(groups) == 0 {
		ops := append([]*clusterOp{c.epochOp(f.Since), due}, c.clearedOps(spaces, f.Since)...)
		_ = c.runStep(ctx, ops, false)
		if err := staleEpoch(f.Key, f.Since, ops[0].cmd); err != nil {
			return refuse(err)
		}
		if err := staleSpace(f.Key, spaces, f.Since, ops[2:]); err != nil {
			return refuse(err)
		}
		if lease == "" {
			// Nothing can invalidate it: a plain SET.
			args := []any{"SET", ek, env}
			if ttlMS > 0 {
				args = append(args, "PX", ttlMS)
			}
			if err := c.client.Do(ctx, args...).Err(); err != nil {
				return fmt.Errorf("redisbackend: fill %q: %w", f.Key, err)
			}
			return nil
		}
		return c.compareAndSet(ctx, f.Key, ek, lease, env, ttlMS, refuse)
	}

	first := due // sent with the first step
	if lease == "" {
		// Check the stamps and take the lease; over an entry, take it only
		// once the check passed.
		ops := make([]*clusterOp, 0, len(groups)+2)
		for _, g := range groups {
			ops = append(ops, scriptOp(clusterScripts[clusterCheckStamps], g.keys, f.Since.Era, f.Since.N))
		}
		token := newLeaseToken()
		take := scriptOp(clusterScripts[clusterTakeLease], []string{ek}, token, leasePrefix, c.cfg.leaseMS())
		_ = c.runStep(ctx, append(ops, take, due), false)
		first = nil
		if n, _ := take.cmd.Int64(); n == 1 {
			lease = token // released by refuse if the check refuses
		}
		for i, g := range groups {
			if err := staleTag(f.Key, g, f.Since, ops[i].cmd); err != nil {
				return refuse(err)
			}
		}
		if lease == "" {
			token = newLeaseToken()
			if err := c.client.Set(ctx, ek, token, time.Duration(c.cfg.leaseMS())*time.Millisecond).Err(); err != nil {
				return fmt.Errorf("redisbackend: fill %q: lease: %w", f.Key, err)
			}
			lease = token
		}
	}

	// 1. Check and register, one script per tag slot; check the stamp of
	// the entry's namespace (Clear); and index the tags not in the tag
	// index yet, so that their registrations are looked at once their
	// entries may have expired (doc.go, "Pruning"). The lease is in place
	// before this step is sent: a Clear of the namespace that stamps after
	// this step read it SCANs its entries afterwards and unlinks the
	// lease, so step 3 fails.
	id := newFillID()
	ops := make([]*clusterOp, 0, len(groups)+len(spaces)+2)
	index := []any{"NX"}
	for _, g := range groups {
		ops = append(ops, scriptOp(clusterScripts[clusterRegister], g.keys, f.Since.Era, f.Since.N, id, ek))
		for _, k := range g.keys {
			index = append(index, k)
		}
	}
	cleared := c.clearedOps(spaces[:1], f.Since)
	step := append(ops, cleared...)
	step = append(step, scriptOp(clusterScripts[clusterIndexTags], []string{tagIndexKey(ns)}, index...))
	if first != nil {
		step = append(step, first)
	}
	werr := c.runStep(ctx, step, srv.replicas > 0)
	if err := staleSpace(f.Key, spaces[:1], f.Since, cleared); err != nil {
		return refuse(err)
	}
	for i, g := range groups {
		if err := staleTag(f.Key, g, f.Since, ops[i].cmd); err != nil {
			return refuse(err)
		}
	}
	if werr != nil {
		return refuse(fmt.Errorf("redisbackend: fill %q: %w (its registration was not acknowledged: %w)", f.Key, backends.ErrStale, werr))
	}
	// The namespaces of foreign dependencies (backends.ForeignDep): a
	// Clear of one finds the entry only through its registration under
	// one of that namespace's tags, so their stamps are checked once the
	// registration is in place (a Clear that stamps later finds it), and
	// before step 2 (which sees the floor of a stamp pruned before this
	// check): one more round trip, for such fills only.
	if len(spaces) > 1 {
		foreign := c.clearedOps(spaces[1:], f.Since)
		_ = c.runStep(ctx, foreign, false)
		if err := staleSpace(f.Key, spaces[1:], f.Since, foreign); err != nil {
			return refuse(err)
		}
	}

	// 2. The epoch, read after the registration.
	check := c.epochOp(f.Since)
	_ = c.runStep(ctx, []*clusterOp{check}, false)
	if err := staleEpoch(f.Key, f.Since, check.cmd); err != nil {
		return refuse(err)
	}

	// 3. Compare-and-set.
	return c.compareAndSet(ctx, f.Key, ek, lease, env, ttlMS, refuse)
}

// epochOp checks the epoch and the pruned floor against since, on the
// epoch's slot (epochLua).
func (c *cluster) epochOp(since backends.Epoch) *clusterOp {
	return scriptOp(clusterScripts[clusterCheckEpoch], []string{c.cfg.epochKey, c.cfg.prunedKey}, since.Era, since.N, newEra())
}

// staleEpoch interprets epochLua's reply: nil when the fill may go on, an
// error wrapping ErrStale otherwise.
func staleEpoch(key string, since backends.Epoch, cmd *redis.Cmd) error {
	res, err := cmd.Slice()
	if err == nil && len(res) == 0 {
		err = errors.New("empty script reply")
	}
	if err != nil {
		return fmt.Errorf("redisbackend: fill %q: epoch: %w", key, err)
	}
	code, _ := res[0].(int64)
	switch {
	case code == 0:
		return nil
	case code == 1:
		return fmt.Errorf("redisbackend: fill %q: %w (the epoch was lost, or a failover promoted a replica: a new era begins)", key, backends.ErrStale)
	case code == 2 && len(res) == 2:
		return fmt.Errorf("redisbackend: fill %q: %w (epoch %v is of another era than %v)", key, backends.ErrStale, res[1], since)
	case code == 5 && len(res) == 2:
		return fmt.Errorf("redisbackend: fill %q: %w (a stamp of %v, after %v, was pruned: the fill is older than the prune age)", key, backends.ErrStale, res[1], since)
	}
	return fmt.Errorf("redisbackend: fill %q: unexpected script reply %v", key, res)
}

// compareAndSet stores env in place of the fill's lease, if the entry
// still holds it.
func (c *cluster) compareAndSet(ctx context.Context, key, ek, lease string, env []byte, ttlMS int64, refuse func(error) error) error {
	ok, err := clusterScripts[clusterCompareAndSet].Run(ctx, c.client, []string{ek}, lease, env, ttlMS).Int64()
	if err != nil {
		return refuse(fmt.Errorf("redisbackend: fill %q: %w", key, err))
	}
	if ok != 1 {
		return fmt.Errorf("redisbackend: fill %q: %w (the fill lease was revoked: an invalidation, Delete or Clear removed it, or it expired)", key, backends.ErrStale)
	}
	return nil
}

// clearedOps checks the namespace stamps (Clear) of spaces against since,
// one script each: every namespace stamp is a key of its own slot.
func (c *cluster) clearedOps(spaces []string, since backends.Epoch) []*clusterOp {
	ops := make([]*clusterOp, len(spaces))
	for i, sp := range spaces {
		ops[i] = scriptOp(clusterScripts[clusterCheckStamps], []string{clearKey(sp)}, since.Era, since.N)
		ops[i].read = true
	}
	return ops
}

// staleSpace interprets the replies of clearedOps: nil when every check
// passed, an error wrapping ErrStale naming the namespace otherwise.
func staleSpace(key string, spaces []string, since backends.Epoch, ops []*clusterOp) error {
	for i, o := range ops {
		g := slotGroup{keys: []string{clearKey(spaces[i])}, tags: []string{spaces[i]}}
		if err := staleTag(key, g, since, o.cmd); err != nil {
			if errors.Is(err, backends.ErrStale) {
				return fmt.Errorf("redisbackend: fill %q: %w (namespace %q was cleared after %v)", key, backends.ErrStale, spaces[i], since)
			}
			return err
		}
	}
	return nil
}

// staleTag interprets a check or register reply: nil when it passed, an
// error wrapping ErrStale naming the tag otherwise.
func staleTag(key string, g slotGroup, since backends.Epoch, cmd *redis.Cmd) error {
	res, err := cmd.Slice()
	if err == nil && len(res) == 0 {
		err = errors.New("empty script reply")
	}
	if err != nil {
		return fmt.Errorf("redisbackend: fill %q: %w", key, err)
	}
	code, _ := res[0].(int64)
	switch {
	case code == 0:
		return nil
	case code == 3 && len(res) == 3:
		i, _ := res[1].(int64)
		tag := ""
		if i >= 1 && int(i) <= len(g.tags) {
			tag = g.tags[i-1]
		}
		return fmt.Errorf("redisbackend: fill %q: %w (tag %q invalidated at %v, after %v)", key, backends.ErrStale, tag, res[2], since)
	}
	return fmt.Errorf("redisbackend: fill %q: unexpected script reply %v", key, res)
}

// invalidate bumps the epoch on its slot; then, per tag in parallel,
// stamps it and reads its registrations in one script; unlinks those
// entries on their slots; and removes the registrations whose fill ids are
// unchanged, reading the next chunk of a big tag in the same script, until
// every tag's HSCAN has run to its end. A registration is never removed
// before its entry is gone. Where the cluster has replicas every step
// waits for one on each master it wrote to.
func (c *cluster) invalidate(ctx context.Context, srv *server, ns string, tags []string) (int, error) {
	wait := srv.replicas > 0
	// Once a step was not acknowledged by a replica the invalidation fails
	// anyway: the rest runs without waiting, and removes no registration,
	// since a failover of an entry's master could bring back an entry
	// whose registration (on another master) is gone. The retry removes
	// them.
	var waitErr error
	note := func(err error) {
		if waitErr == nil {
			waitErr = err
		}
		wait = wait && err == nil
	}
	fail := func(removed int, err error) (int, error) {
		return removed, fmt.Errorf("redisbackend: invalidate %s: %w", taglist.Quote(tags), err)
	}

	// Each invalidation visits at least as many due stamps as it writes,
	// so that the index never grows under any mix of traffic.
	due := c.dueOp(ns, min(len(tags)+trimBudget, c.cfg.chunkSize))
	bump := []*clusterOp{scriptOp(clusterScripts[clusterBumpEpoch], []string{c.cfg.epochKey}, newEra()), due}
	note(c.runStep(ctx, bump, wait))
	ep, err := bump[0].cmd.Text()
	if err != nil {
		return fail(0, err)
	}

	walks := make([]*tagWalk, len(tags))
	ops := make([]*clusterOp, len(tags), len(tags)+1)
	index := make([]any, len(tags))
	for i, t := range tags {
		walks[i] = &tagWalk{key: tagKey(ns, t), tag: t}
		ops[i] = scriptOp(clusterScripts[clusterStampAndRead], []string{walks[i].key}, ep, c.cfg.chunkSize)
		index[i] = walks[i].key
	}
	ops = append(ops, scriptOp(clusterScripts[clusterIndexTags], []string{tagIndexKey(ns)}, append([]any{""}, index...)...))
	note(c.runStep(ctx, ops, wait))
	if err := ops[len(tags)].cmd.Err(); err != nil {
		return fail(0, fmt.Errorf("tag index: %w", err))
	}
	for i, w := range walks {
		if err := w.absorb(ops[i].cmd); err != nil {
			return fail(0, fmt.Errorf("tag %q: %w", w.tag, err))
		}
	}

	removed := 0
	for {
		// Unlink the entries read, each once.
		seen := map[string]bool{}
		ops = ops[:0]
		var active []*tagWalk
		for _, w := range walks {
			if len(w.fields) == 0 && w.next == "0" {
				continue
			}
			active = append(active, w)
			for _, f := range w.fields {
				if !seen[f] {
					seen[f] = true
					ops = append(ops, scriptOp(clusterScripts[clusterUnlinkEntry], []string{f}, leasePrefix))
				}
			}
		}
		if len(active) == 0 {
			break
		}
		note(c.runStep(ctx, ops, wait))
		if err := firstOpErr(ops); err != nil {
			return fail(removed, err)
		}
		for _, o := range ops {
			n, _ := o.cmd.Int64()
			removed += int(n)
		}
		// Then their registrations, and read on.
		ops = ops[:0]
		for _, w := range active {
			var done []int
			if waitErr == nil {
				done = make([]int, len(w.fields))
				for i := range done {
					done[i] = i
				}
			}
			ops = append(ops, c.removeAndReadOp(w, done, -1, ""))
		}
		note(c.runStep(ctx, ops, wait))
		for i, w := range active {
			if err := w.absorb(ops[i].cmd); err != nil {
				return fail(removed, fmt.Errorf("tag %q: %w", w.tag, err))
			}
		}
	}
	if waitErr != nil {
		return fail(removed, waitErr)
	}
	c.trimAfter(ctx, ns, due)
	return removed, nil
}

// delete unlinks each entry key on its slot, one round trip. Leases are
// removed too but not counted.
func (c *cluster) delete(ctx context.Context, _ *server, ns string, keys []string) (int, error) {
	ops := make([]*clusterOp, 0, len(keys))
	for _, k := range dedupe(keys) {
		ops = append(ops, scriptOp(clusterScripts[clusterUnlinkEntry], []string{entryKey(ns, k)}, leasePrefix))
	}
	_ = c.runStep(ctx, ops, false)
	if err := firstOpErr(ops); err != nil {
		return 0, err
	}
	n := 0
	for _, o := range ops {
		v, _ := o.cmd.Int64()
		n += int(v)
	}
	return n, nil
}

// entryTTL reads the entry's first bytes and PTTL in one round trip: a
// lease is no entry.
func (c *cluster) entryTTL(ctx context.Context, _ *server, ek string) (int64, error) {
	pipe := c.client.Pipeline()
	head := pipe.GetRange(ctx, ek, 0, int64(len(leasePrefix)-1))
	pttl := pipe.Do(ctx, "PTTL", ek)
	_, _ = pipe.Exec(ctx)
	h, err := head.Result()
	if err != nil {
		return 0, err
	}
	ms, err := pttl.Int64()
	if err != nil {
		return 0, err
	}
	if h == leasePrefix {
		return -2, nil
	}
	return ms, nil
}

// scan calls fn with each page of keys matching pattern on every master,
// the masters in parallel: fn must be safe for concurrent use.
func (c *cluster) scan(ctx context.Context, pattern string, fn func([]string) error) error {
	return c.client.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		return scanPages(ctx, m, pattern, c.cfg.chunkSize, fn)
	})
}

// clear unlinks every entry of ns on every master, counting entries (not
// leases), then prunes its tag hashes. Where the cluster has replicas the
// unlinks wait for one, as an invalidation's do; if one was not
// acknowledged, Clear fails with ErrNotReplicated and removes no
// registration (a failover could bring back the entry, which an
// invalidation must still find).
func (c *cluster) clear(ctx context.Context, srv *server, ns string) (int, error) {
	if err := c.stampCleared(ctx, srv, ns); err != nil {
		return 0, err
	}
	wait := srv.replicas > 0
	var (
		removed atomic.Int64
		unacked firstErr
	)
	err := c.scan(ctx, globEscape(ns)+`:e:\{*`, func(keys []string) error {
		ops := make([]*clusterOp, len(keys))
		for i, k := range keys {
			ops[i] = scriptOp(clusterScripts[clusterUnlinkEntry], []string{k}, leasePrefix)
		}
		unacked.note(c.runStep(ctx, ops, wait))
		if err := firstOpErr(ops); err != nil {
			return err
		}
		for _, o := range ops {
			n, _ := o.cmd.Int64()
			removed.Add(n)
		}
		return nil
	})
	if err != nil {
		return int(removed.Load()), err
	}
	if err := unacked.get(); err != nil {
		return int(removed.Load()), fmt.Errorf("redisbackend: clear %q: %w", ns, err)
	}
	return int(removed.Load()), c.cleanTags(ctx, ns, true, wait)
}

// existsOp asks whether an entry key exists before its registration is
// removed: a plain EXISTS, or where masters have replicas one that fences
// (existsFenceLua), for a step that waits.
func (c *cluster) existsOp(key string) *clusterOp {
	if c.replicated.Load() {
		return scriptOp(clusterScripts[clusterExistsFence], []string{key})
	}
	o := commandOp(key, "EXISTS", key)
	o.read = true
	return o
}

// firstErr keeps the first non-nil error noted, safely for concurrent use.
type firstErr struct {
	mu  sync.Mutex
	err error
}

func (f *firstErr) note(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *firstErr) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// stampCleared stamps the namespace as an invalidation stamps a tag:
// it bumps the epoch (1), then writes the namespace stamp and moves it to
// now in the tag index (2), so that the fills that started before are
// refused and the stamp is pruned like a tag's. Where the cluster has
// replicas both steps wait for one.
func (c *cluster) stampCleared(ctx context.Context, srv *server, ns string) error {
	wait := srv.replicas > 0
	bump := []*clusterOp{scriptOp(clusterScripts[clusterBumpEpoch], []string{c.cfg.epochKey}, newEra())}
	if err := c.runStep(ctx, bump, wait); err != nil {
		return fmt.Errorf("stamp the namespace: %w", err)
	}
	ep, err := bump[0].cmd.Text()
	if err != nil {
		return fmt.Errorf("stamp the namespace: %w", err)
	}
	ck := clearKey(ns)
	ops := []*clusterOp{
		scriptOp(clusterScripts[clusterStampAndRead], []string{ck}, ep, c.cfg.chunkSize),
		scriptOp(clusterScripts[clusterIndexTags], []string{tagIndexKey(ns)}, "", ck),
	}
	if err := c.runStep(ctx, ops, wait); err != nil {
		return fmt.Errorf("stamp the namespace: %w", err)
	}
	if err := firstOpErr(ops); err != nil {
		return fmt.Errorf("stamp the namespace: %w", err)
	}
	return nil
}

// prune cleans every tag hash of ns on every master: it reads the
// registrations in chunks, asks the entries' slots which entries still
// exist (a lease counts: its fill is under way), removes the others'
// registrations if their fill ids are unchanged, and settles the stamp of
// a hash left with nothing else; then it trims the tag index until no
// due stamp is left, so that the index goes with the last stamp.
func (c *cluster) prune(ctx context.Context, _ *server, ns string) error {
	return c.cleanTags(ctx, ns, false, false)
}

// cleanTags is prune; with drain, as Clear needs, it unlinks every entry
// still registered (another namespace's: Clear unlinked its own) instead
// of asking which exist, and then removes every registration read whose
// fill id is unchanged: never a registration before its entry is gone.
// With wait the unlinks wait for a replica; once one was not acknowledged
// the page's registrations stay, and cleanTags fails with
// ErrNotReplicated.
func (c *cluster) cleanTags(ctx context.Context, ns string, drain, wait bool) error {
	maxAge := c.cfg.pruneAfterMS()
	var unacked firstErr
	err := c.scan(ctx, globEscape(ns)+`:t:\{*`, func(keys []string) error {
		keep := false // an unlink of this page was not acknowledged
		walks := make([]*tagWalk, len(keys))
		ops := make([]*clusterOp, len(keys))
		for i, k := range keys {
			walks[i] = &tagWalk{key: k}
			ops[i] = scriptOp(clusterScripts[clusterReadRegistrations], []string{k}, c.cfg.chunkSize)
		}
		_ = c.runStep(ctx, ops, false)
		for i, w := range walks {
			if err := w.absorb(ops[i].cmd); err != nil {
				return fmt.Errorf("%s: %w", w.key, err)
			}
		}
		for {
			var active []*tagWalk
			var base []int // index in ops of each active walk's first EXISTS
			var stamps []string
			ops = ops[:0]
			for _, w := range walks {
				if w.settled {
					continue
				}
				active = append(active, w)
				base = append(base, len(ops))
				for _, f := range w.fields {
					if drain {
						ops = append(ops, scriptOp(clusterScripts[clusterUnlinkEntry], []string{f}, leasePrefix))
					} else {
						ops = append(ops, c.existsOp(f))
					}
				}
				if w.next == "0" && w.stamp != "" {
					stamps = append(stamps, w.stamp) // settled in this round
				}
			}
			if len(active) == 0 {
				return nil
			}
			// The floor covers the stamps to settle before they go, in
			// the same round trip.
			floor := c.floorOp(stamps)
			step := ops
			if floor != nil {
				step = append(ops[:len(ops):len(ops)], floor)
			}
			if werr := c.runStep(ctx, step, wait && drain || c.replicated.Load()); werr != nil {
				unacked.note(werr)
				keep = true
			}
			if err := firstOpErr(ops); err != nil {
				return err
			}
			fl := readFloor(floor)
			steps := make([]*clusterOp, len(active))
			for i, w := range active {
				var dead []int
				for j := range w.fields {
					if keep {
						break
					}
					if n, _ := ops[base[i]+j].cmd.Int64(); n == 0 || drain {
						dead = append(dead, j)
					}
				}
				steps[i] = c.removeAndReadOp(w, dead, maxAge, fl.cover(w.stamp))
			}
			_ = c.runStep(ctx, steps, false)
			for i, w := range active {
				last := w.next == "0"
				if err := w.absorb(steps[i].cmd); err != nil {
					return fmt.Errorf("%s: %w", w.key, err)
				}
				w.settled = last
			}
		}
	})
	if err != nil {
		return err
	}
	if err := c.trimAll(ctx, ns); err != nil {
		return err
	}
	if err := unacked.get(); err != nil {
		return fmt.Errorf("redisbackend: clear %q: %w", ns, err)
	}
	return nil
}
