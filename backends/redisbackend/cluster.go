package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
)

// The Redis Cluster path (doc.go, "Redis Cluster"). The key layout is the
// standalone one; what differs is that no script spans slots, so a fill
// takes a lease on its entry and finishes with a compare-and-set, and an
// invalidation carries the registrations it read from each tag's slot to
// the entries' slots and back.

var _ backends.Releaser = (*Backend)(nil)

// leasePrefix starts every lease token. Envelopes start with "dc" and the
// version byte 1: a token is never mistaken for an entry, and a store that
// knows no leases reads one as corrupt.
const leasePrefix = "dc\x00L"

// newLeaseToken returns a fresh lease token.
func newLeaseToken() string {
	return leasePrefix + strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36)
}

func isLease(s string) bool { return strings.HasPrefix(s, leasePrefix) }

// errClusterVersion reports a cluster older than Redis 7.
var errClusterVersion = errors.New("redisbackend: Redis Cluster needs Redis 7.0 or later (SET NX GET, script flags)")

// learnCluster reads the eviction policy, the version and the replicas of
// every master (the most dangerous policy wins), and loads the scripts on
// every master.
func (b *Backend) learnCluster(ctx context.Context, cl *redis.ClusterClient) (*state, error) {
	var (
		mu       sync.Mutex
		policies []string
		refused  error
		major    = -1
		replicas int
	)
	err := cl.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		pipe := c.Pipeline()
		server := pipe.Info(ctx, "server")
		repl := pipe.Info(ctx, "replication")
		policy := pipe.ConfigGet(ctx, "maxmemory-policy")
		_, _ = pipe.Exec(ctx)
		for _, cmd := range []redis.Cmder{server, repl, policy} {
			if err := cmd.Err(); err != nil && !isServerError(err) {
				return err
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if p := policy.Val()["maxmemory-policy"]; policy.Err() == nil && p != "" {
			policies = append(policies, p)
		} else {
			policies = append(policies, b.cfg.assumedPolicy)
			refused = policy.Err()
		}
		v := 0
		if server.Err() == nil {
			v, _ = strconv.Atoi(strings.SplitN(infoField(server.Val(), "redis_version"), ".", 2)[0])
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
	st := &state{cluster: cl, replicas: replicas, scripts: shebangScripts}
	if major < 7 {
		st.err = errClusterVersion
		return st, nil
	}
	if refused != nil {
		b.log.Info("redisbackend: CONFIG GET maxmemory-policy refused; assuming the configured policy (WithAssumedPolicy)",
			"policy", b.cfg.assumedPolicy, "err", refused)
	}
	// The most dangerous policy of any master wins.
	rank := func(p string) int {
		switch {
		case p == "noeviction":
			return 0
		case strings.HasPrefix(p, "volatile-"):
			return 1
		}
		return 2
	}
	st.policy = policies[0]
	for _, p := range policies[1:] {
		if rank(p) > rank(st.policy) {
			st.policy = p
		}
	}
	switch rank(st.policy) {
	case 1:
		st.volatile = true
	case 2:
		st.unsafe = true
		b.log.Error("redisbackend: maxmemory-policy may evict tag registrations and stamps; serving uncached (use noeviction or volatile-*)",
			"policy", st.policy)
	}

	err = cl.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		pipe := c.Pipeline()
		cmds := []*redis.StringCmd{pipe.ScriptLoad(ctx, shebangScripts[sEnsureEpoch].src)}
		for _, s := range clusterScripts {
			cmds = append(cmds, pipe.ScriptLoad(ctx, s.src))
		}
		_, _ = pipe.Exec(ctx)
		for _, cmd := range cmds {
			if err := cmd.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redisbackend: load scripts: %w", err)
	}
	b.log.Debug("redisbackend: connected to a cluster", "masters", len(policies), "policy", st.policy, "replicas", st.replicas)
	return st, nil
}

// leaseMS is the lifetime of a fill lease in milliseconds.
func (b *Backend) leaseMS() int64 {
	d := b.cfg.leaseTTL
	if d <= 0 {
		d = b.cfg.maxFillAge
	}
	return max(1, d.Milliseconds())
}

// cop is one command of a Cluster step: a script or a plain command,
// routed by the slot of key.
type cop struct {
	key  string
	s    *script // nil: args is a plain command
	keys []string
	args []any
	cmd  *redis.Cmd
}

func scriptOp(s *script, keys []string, args ...any) *cop {
	return &cop{key: keys[0], s: s, keys: keys, args: args}
}

func plainOp(key string, args ...any) *cop { return &cop{key: key, args: args} }

func (o *cop) add(ctx context.Context, pipe redis.Pipeliner, sha bool) {
	switch {
	case o.s == nil:
		o.cmd = pipe.Do(ctx, o.args...)
	case sha:
		o.cmd = o.s.EvalSha(ctx, pipe, o.keys, o.args...)
	default:
		o.cmd = o.s.Eval(ctx, pipe, o.keys, o.args...)
	}
}

// noScript returns the ops whose script the server did not have.
func noScript(ops []*cop) []*cop {
	var out []*cop
	for _, o := range ops {
		if o.s != nil && redis.HasErrorPrefix(o.cmd.Err(), "NOSCRIPT") {
			out = append(out, o)
		}
	}
	return out
}

// cexec runs ops in one round trip, each on its slot's master: without
// wait, as one cluster pipeline (go-redis sends each master its part in
// parallel, and follows redirections); with wait, as one pipeline per
// master on that master's connection, ending with WAIT 1, so that the
// replica acknowledges every write of the step before the next step
// starts. go-redis would send a plain WAIT to every shard, on other
// connections, where it covers nothing. Results are in the ops' cmds; the
// error returned is ErrNotReplicated when a master's replica did not
// acknowledge.
func (b *Backend) cexec(ctx context.Context, st *state, ops []*cop, wait bool) error {
	if len(ops) == 0 {
		return nil
	}
	run := func(pipe func() redis.Pipeliner, ops []*cop, sha bool) *redis.Cmd {
		p := pipe()
		for _, o := range ops {
			o.add(ctx, p, sha)
		}
		var w *redis.Cmd
		if wait {
			w = p.Do(ctx, "WAIT", 1, b.cfg.waitTimeout.Milliseconds())
		}
		_, _ = p.Exec(ctx)
		return w
	}
	if !wait && len(ops) == 1 {
		// No pipeline (nor its fan-out goroutines) for one command.
		o := ops[0]
		if o.s == nil {
			o.cmd = st.cluster.Do(ctx, o.args...)
		} else {
			o.cmd = o.s.Run(ctx, st.cluster, o.keys, o.args...)
		}
		return nil
	}
	if !wait {
		run(st.cluster.Pipeline, ops, true)
		if retry := noScript(ops); len(retry) > 0 {
			run(st.cluster.Pipeline, retry, false)
		}
		return nil
	}

	groups := map[*redis.Client][]*cop{}
	for _, o := range ops {
		c, err := st.cluster.MasterForKey(ctx, o.key)
		if err != nil {
			o.cmd = redis.NewCmd(ctx)
			o.cmd.SetErr(err)
			continue
		}
		groups[c] = append(groups[c], o)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		werr error
	)
	for c, g := range groups {
		wg.Go(func() {
			w := run(c.Pipeline, g, true)
			if retry := noScript(g); len(retry) > 0 {
				w = run(c.Pipeline, retry, false)
			}
			n, err := w.Int64()
			switch {
			case err != nil:
				err = fmt.Errorf("%w: WAIT on %s: %w", ErrNotReplicated, c.Options().Addr, err)
			case n < 1:
				err = fmt.Errorf("%w: %s within %v", ErrNotReplicated, c.Options().Addr, b.cfg.waitTimeout)
			}
			if err != nil {
				mu.Lock()
				if werr == nil {
					werr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// A master's own connection follows no redirection: when the slot
	// moved (failover, resharding) or the node is gone, the step fails;
	// have the client learn the new layout for the retry.
	for _, o := range ops {
		if err := o.cmd.Err(); err != nil && !errors.Is(err, redis.Nil) && !isServerError(err) ||
			redis.HasErrorPrefix(err, "MOVED") || redis.HasErrorPrefix(err, "ASK") ||
			redis.HasErrorPrefix(err, "CLUSTERDOWN") || redis.HasErrorPrefix(err, "TRYAGAIN") {
			st.cluster.ReloadState(ctx)
			break
		}
	}
	return werr
}

// firstErr returns the first error of ops, other than redis.Nil.
func firstErr(ops []*cop) error {
	for _, o := range ops {
		if err := o.cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	return nil
}

// slotGroup is the tags of one fill that live in one slot.
type slotGroup struct {
	keys []string // tag hash keys
	tags []string
}

// groupBySlot groups tags by the slot of their hash keys, in first-seen
// order.
func groupBySlot(ns string, tags []string) []slotGroup {
	var groups []slotGroup
	index := map[uint16]int{}
	for _, d := range registeredDeps(ns, tags) {
		k, t := tagKey(d.NS, d.Tag), d.Tag
		s := keySlot(k)
		i, ok := index[s]
		if !ok {
			i = len(groups)
			index[s] = i
			groups = append(groups, slotGroup{})
		}
		groups[i].keys = append(groups[i].keys, k)
		groups[i].tags = append(groups[i].tags, t)
	}
	return groups
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

// clusterLookup takes the entry's fill lease and reads the epoch in one
// round trip: SET entry token NX GET on the entry's slot, GET epoch on the
// epoch's. The SET returns what the entry held: an envelope is a hit (and
// NX left it alone), nothing a miss whose lease this caller now holds,
// another token a miss whose lease another caller holds (Busy).
func (b *Backend) clusterLookup(ctx context.Context, st *state, ns, key string) (backends.Lookup, error) {
	ek := entryKey(ns, key)
	token := newLeaseToken()
	pipe := st.cluster.Pipeline()
	set := pipe.Do(ctx, "SET", ek, token, "NX", "GET", "PX", b.leaseMS())
	get := pipe.Get(ctx, b.cfg.epochKey)
	_, _ = pipe.Exec(ctx)
	v, err := set.Text()
	if redis.HasErrorPrefix(err, "OOM") {
		// At maxmemory under noeviction even a SET NX that would not
		// write is refused: read without a lease (a hit still serves).
		token = ""
		v, err = st.cluster.Get(ctx, ek).Result()
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
		e, derr := backends.DecodeEntry([]byte(v))
		if derr == nil {
			return backends.Lookup{Found: true, Entry: e}, nil
		}
		b.log.Warn("redisbackend: corrupt entry deleted", "key", ek, "err", derr)
		if err := st.cluster.Unlink(ctx, ek).Err(); err != nil {
			return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: delete corrupt entry: %w", key, err)
		}
		res.Corrupt = true
	}
	ev, gerr := get.Result()
	if gerr != nil && !errors.Is(gerr, redis.Nil) {
		err = gerr
	} else {
		res.Epoch, err = b.epoch(ctx, st, ev, gerr == nil)
	}
	if err != nil {
		if res.Lease != "" {
			_ = b.release(context.WithoutCancel(ctx), st, ek, res.Lease)
		}
		return backends.Lookup{}, fmt.Errorf("redisbackend: lookup %q: epoch: %w", key, err)
	}
	return res, nil
}

// release deletes the entry key if it still holds lease.
func (b *Backend) release(ctx context.Context, st *state, ek, lease string) error {
	return clusterScripts[cRelease].Run(ctx, st.cluster, []string{ek}, lease).Err()
}

// Release gives back a fill lease that Lookup returned and no Fill will
// use: the entry key is deleted if it still holds that lease, so that
// other callers need not wait for it to expire (on a single Redis, leases
// exist only with WithFillLock).
func (b *Backend) Release(ctx context.Context, ns, key, lease string) error {
	if lease == "" {
		return nil
	}
	st, err := b.state(ctx)
	if err != nil {
		return fmt.Errorf("redisbackend: release %q: %w", key, err)
	}
	if st.cluster == nil {
		if err := releaseScript.Run(ctx, b.c, []string{entryKey(ns, key)}, lease).Err(); err != nil {
			return fmt.Errorf("redisbackend: release %q: %w", key, err)
		}
		return nil
	}
	if err := b.release(ctx, st, entryKey(ns, key), lease); err != nil {
		return fmt.Errorf("redisbackend: release %q: %w", key, err)
	}
	return nil
}

// clusterFill is the lease-based fill (consistency-notes.md, "Redis
// Cluster"):
//
//  1. read the epoch E1 (its era must still be Since's);
//  2. in parallel, one script per tag slot that refuses if a tag's stamp
//     is newer than Since and otherwise registers the entry;
//  3. on the entry's slot, a compare-and-set from the lease to the value.
//
// An invalidation that stamps a tag before step 2 makes step 2 refuse; one
// that stamps it after finds the registration and unlinks the entry key,
// which holds the lease (taken before step 2), so step 3 fails. A fill
// without a lease (Manager.Set, or a miss that found another caller's
// lease) takes one first, replacing whatever the entry holds: in step 1's
// round trip if the entry holds nothing or a lease, else (an entry: so
// that a fill refused as stale leaves it alone) only once step 1 has also
// checked the stamps, without registering, in one more round trip.
func (b *Backend) clusterFill(ctx context.Context, st *state, ns string, f backends.Fill, ttlMS int64) error {
	e := f.Entry
	e.Since = f.Since
	ek := entryKey(ns, f.Key)
	groups := groupBySlot(ns, dedupe(e.Deps))
	lease, own := f.Lease, f.Lease == ""
	refuse := func(err error) error {
		if lease != "" {
			_ = b.release(context.WithoutCancel(ctx), st, ek, lease)
		}
		return err
	}

	// 1. E1, and for a fill without a lease the stamps and the lease.
	ops := []*cop{plainOp(b.cfg.epochKey, "GET", b.cfg.epochKey)}
	if own && len(groups) > 0 {
		for _, g := range groups {
			ops = append(ops, scriptOp(clusterScripts[cCheck], g.keys, f.Since.Era, f.Since.N))
		}
		token := newLeaseToken()
		take := scriptOp(clusterScripts[cTake], []string{ek}, token, leasePrefix, b.leaseMS())
		ops = append(ops, take)
		_ = b.cexec(ctx, st, ops, false)
		if n, _ := take.cmd.Int64(); n == 1 {
			lease = token // released by refuse if step 1 refuses
		}
	} else {
		_ = b.cexec(ctx, st, ops, false)
	}
	cur, err := ops[0].cmd.Text()
	switch {
	case errors.Is(err, redis.Nil):
		return refuse(fmt.Errorf("redisbackend: fill %q: %w (the epoch was lost)", f.Key, backends.ErrStale))
	case err != nil:
		return refuse(fmt.Errorf("redisbackend: fill %q: %w", f.Key, err))
	}
	if ep, perr := backends.ParseEpoch(cur); perr != nil || ep.Era != f.Since.Era {
		return refuse(fmt.Errorf("redisbackend: fill %q: %w (epoch %v is of another era than %v)", f.Key, backends.ErrStale, cur, f.Since))
	}
	if own {
		for i, g := range groups {
			if err := staleTag(f.Key, g, f.Since, ops[1+i].cmd); err != nil {
				return refuse(err)
			}
		}
	}
	env := backends.EncodeEntry(e)
	if own {
		if len(groups) == 0 {
			// Nothing can invalidate it: a plain SET.
			args := []any{"SET", ek, env}
			if ttlMS > 0 {
				args = append(args, "PX", ttlMS)
			}
			if err := st.cluster.Do(ctx, args...).Err(); err != nil {
				return fmt.Errorf("redisbackend: fill %q: %w", f.Key, err)
			}
			return nil
		}
		if lease == "" {
			lease = newLeaseToken()
			if err := st.cluster.Set(ctx, ek, lease, time.Duration(b.leaseMS())*time.Millisecond).Err(); err != nil {
				return fmt.Errorf("redisbackend: fill %q: lease: %w", f.Key, err)
			}
		}
	}

	// 2. Check and register, one script per tag slot.
	if len(groups) > 0 {
		id := newFillID()
		ops = ops[:0]
		for _, g := range groups {
			ops = append(ops, scriptOp(clusterScripts[cRegister], g.keys, f.Since.Era, f.Since.N, id, ek))
		}
		_ = b.cexec(ctx, st, ops, false)
		for i, g := range groups {
			if err := staleTag(f.Key, g, f.Since, ops[i].cmd); err != nil {
				return refuse(err)
			}
		}
	}

	// 3. Compare-and-set.
	ok, err := clusterScripts[cCAS].Run(ctx, st.cluster, []string{ek}, lease, env, ttlMS).Int64()
	if err != nil {
		return refuse(fmt.Errorf("redisbackend: fill %q: %w", f.Key, err))
	}
	if ok != 1 {
		return fmt.Errorf("redisbackend: fill %q: %w (the fill lease was revoked: an invalidation, Delete or Clear removed it, or it expired)", f.Key, backends.ErrStale)
	}
	return nil
}

// walk is one tag hash being drained (Invalidate) or cleaned (Prune): the
// registrations read and not yet dealt with, and where to read next.
type walk struct {
	key     string
	tag     string
	fields  []string // entry keys read
	ids     []string // their fill ids, as read
	next    string   // cursor to read from next, "0": nothing more
	settled bool
}

// absorb takes a {cursor, flat} reply.
func (w *walk) absorb(cmd *redis.Cmd) error {
	res, err := cmd.Slice()
	if err != nil {
		return err
	}
	if len(res) != 2 {
		return fmt.Errorf("unexpected script reply %v", res)
	}
	w.next, _ = res[0].(string)
	flat, _ := res[1].([]any)
	w.fields, w.ids = w.fields[:0], w.ids[:0]
	for i := 0; i+1 < len(flat); i += 2 {
		f, _ := flat[i].(string)
		id, _ := flat[i+1].(string)
		if f == "~v" {
			continue
		}
		w.fields = append(w.fields, f)
		w.ids = append(w.ids, id)
	}
	return nil
}

// step returns the op that removes the registrations in done (indexes of
// w.fields) if unchanged and reads the next step; settleMS >= 0 settles
// the stamp at the end.
func (b *Backend) stepOp(w *walk, done []int, settleMS int64) *cop {
	next := w.next
	if next == "0" {
		next = ""
	}
	settle := ""
	if settleMS >= 0 {
		settle = strconv.FormatInt(settleMS, 10)
	}
	args := make([]any, 0, 3+2*len(done))
	args = append(args, next, b.cfg.chunkSize, settle)
	for _, i := range done {
		args = append(args, w.fields[i], w.ids[i])
	}
	return scriptOp(clusterScripts[cStep], []string{w.key}, args...)
}

// clusterInvalidate bumps the epoch on its slot; then, per tag in
// parallel, stamps it and reads its registrations in one script; unlinks
// those entries on their slots; and removes the registrations whose fill
// ids are unchanged, reading the next chunk of a big tag in the same
// script, until every tag's HSCAN has run to its end. A registration is
// never removed before its entry is gone. Where the cluster has replicas
// every step waits for one on each master it wrote to.
func (b *Backend) clusterInvalidate(ctx context.Context, st *state, ns string, tags []string) (int, error) {
	wait := st.replicas > 0
	// Once a step was not acknowledged by a replica the invalidation fails
	// anyway: the rest runs without waiting, and removes no registration,
	// since a failover of an entry's master could bring back an entry
	// whose registration (on another master) is gone. The retry removes
	// them.
	var werr error
	note := func(err error) {
		if werr == nil {
			werr = err
		}
		wait = wait && err == nil
	}
	fail := func(removed int, err error) (int, error) {
		return removed, fmt.Errorf("redisbackend: invalidate %q: %w", tags, err)
	}

	bump := []*cop{scriptOp(clusterScripts[cBump], []string{b.cfg.epochKey}, newEra())}
	note(b.cexec(ctx, st, bump, wait))
	ep, err := bump[0].cmd.Text()
	if err != nil {
		return fail(0, err)
	}

	walks := make([]*walk, len(tags))
	ops := make([]*cop, len(tags))
	for i, t := range tags {
		walks[i] = &walk{key: tagKey(ns, t), tag: t}
		ops[i] = scriptOp(clusterScripts[cStampRead], []string{walks[i].key}, ep, b.cfg.chunkSize)
	}
	note(b.cexec(ctx, st, ops, wait))
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
		var active []*walk
		for _, w := range walks {
			if len(w.fields) == 0 && w.next == "0" {
				continue
			}
			active = append(active, w)
			for _, f := range w.fields {
				if !seen[f] {
					seen[f] = true
					ops = append(ops, scriptOp(clusterScripts[cUnlink], []string{f}, leasePrefix))
				}
			}
		}
		if len(active) == 0 {
			break
		}
		note(b.cexec(ctx, st, ops, wait))
		if err := firstErr(ops); err != nil {
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
			if werr == nil {
				done = make([]int, len(w.fields))
				for i := range done {
					done[i] = i
				}
			}
			ops = append(ops, b.stepOp(w, done, -1))
		}
		note(b.cexec(ctx, st, ops, wait))
		for i, w := range active {
			if err := w.absorb(ops[i].cmd); err != nil {
				return fail(removed, fmt.Errorf("tag %q: %w", w.tag, err))
			}
		}
	}
	if werr != nil {
		return fail(removed, werr)
	}
	return removed, nil
}

// clusterDelete unlinks each entry key on its slot, one round trip.
// Leases are removed too but not counted.
func (b *Backend) clusterDelete(ctx context.Context, st *state, ns string, keys []string) (int, error) {
	ops := make([]*cop, 0, len(keys))
	for _, k := range dedupe(keys) {
		ops = append(ops, scriptOp(clusterScripts[cUnlink], []string{entryKey(ns, k)}, leasePrefix))
	}
	_ = b.cexec(ctx, st, ops, false)
	if err := firstErr(ops); err != nil {
		return 0, err
	}
	n := 0
	for _, o := range ops {
		v, _ := o.cmd.Int64()
		n += int(v)
	}
	return n, nil
}

// clusterTTL reads the entry's first bytes and PTTL in one round trip: a
// lease is no entry.
func (b *Backend) clusterTTL(ctx context.Context, st *state, ek string) (int64, error) {
	pipe := st.cluster.Pipeline()
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

// clusterScan calls fn with each page of keys matching pattern on every
// master, the masters in parallel: fn must be safe for concurrent use.
func (b *Backend) clusterScan(ctx context.Context, st *state, pattern string, fn func([]string) error) error {
	return st.cluster.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		return scanPages(ctx, c, pattern, b.cfg.chunkSize, fn)
	})
}

// clusterClear unlinks every entry of ns on every master, counting entries
// (not leases), then prunes its tag hashes.
func (b *Backend) clusterClear(ctx context.Context, st *state, ns string) (int, error) {
	var removed atomic.Int64
	err := b.clusterScan(ctx, st, globEscape(ns)+`:e:\{*`, func(keys []string) error {
		ops := make([]*cop, len(keys))
		for i, k := range keys {
			ops[i] = scriptOp(clusterScripts[cUnlink], []string{k}, leasePrefix)
		}
		_ = b.cexec(ctx, st, ops, false)
		if err := firstErr(ops); err != nil {
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
	return int(removed.Load()), b.clusterPrune(ctx, st, ns)
}

// clusterPrune cleans every tag hash of ns on every master: it reads the
// registrations in chunks, asks the entries' slots which entries still
// exist (a lease counts: its fill is under way), removes the others'
// registrations if their fill ids are unchanged, and settles the stamp of
// a hash left with nothing else.
func (b *Backend) clusterPrune(ctx context.Context, st *state, ns string) error {
	maxAge := b.cfg.maxFillAge.Milliseconds()
	return b.clusterScan(ctx, st, globEscape(ns)+`:t:\{*`, func(keys []string) error {
		walks := make([]*walk, len(keys))
		ops := make([]*cop, len(keys))
		for i, k := range keys {
			walks[i] = &walk{key: k}
			ops[i] = scriptOp(clusterScripts[cRead], []string{k}, b.cfg.chunkSize)
		}
		_ = b.cexec(ctx, st, ops, false)
		for i, w := range walks {
			if err := w.absorb(ops[i].cmd); err != nil {
				return fmt.Errorf("%s: %w", w.key, err)
			}
		}
		for {
			var active []*walk
			var base []int // index in ops of each active walk's first EXISTS
			ops = ops[:0]
			for _, w := range walks {
				if w.settled {
					continue
				}
				active = append(active, w)
				base = append(base, len(ops))
				for _, f := range w.fields {
					ops = append(ops, plainOp(f, "EXISTS", f))
				}
			}
			if len(active) == 0 {
				return nil
			}
			_ = b.cexec(ctx, st, ops, false)
			if err := firstErr(ops); err != nil {
				return err
			}
			steps := make([]*cop, len(active))
			for i, w := range active {
				var dead []int
				for j := range w.fields {
					if n, _ := ops[base[i]+j].cmd.Int64(); n == 0 {
						dead = append(dead, j)
					}
				}
				steps[i] = b.stepOp(w, dead, maxAge)
			}
			_ = b.cexec(ctx, st, steps, false)
			for i, w := range active {
				last := w.next == "0"
				if err := w.absorb(steps[i].cmd); err != nil {
					return fmt.Errorf("%s: %w", w.key, err)
				}
				w.settled = last
			}
		}
	})
}
