package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"
)

// The machinery of a Cluster operation's steps. A step is a batch of
// commands sent in one round trip, each to the master of its key's slot;
// an operation is a sequence of steps, the client carrying what one step
// read to the next (doc.go, "Redis Cluster").

// clusterOp is one command of a step: a script or a plain command, routed
// by the slot of key. cmd holds its reply once the step ran.
type clusterOp struct {
	key    string
	script *script // nil: args is a plain command
	keys   []string
	args   []any
	cmd    *redis.Cmd
	// read marks a command whose master need not wait for a replica on
	// its account: in a waited step, a master sent only reads gets no
	// WAIT (which would otherwise stall there when it has no replica).
	read bool
}

// scriptOp is a script on the slot of keys[0] (all keys share it).
func scriptOp(s *script, keys []string, args ...any) *clusterOp {
	return &clusterOp{key: keys[0], script: s, keys: keys, args: args}
}

// commandOp is a plain command on the slot of key.
func commandOp(key string, args ...any) *clusterOp { return &clusterOp{key: key, args: args} }

func (o *clusterOp) addTo(ctx context.Context, pipe redis.Pipeliner, sha bool) {
	switch {
	case o.script == nil:
		o.cmd = pipe.Do(ctx, o.args...)
	case sha:
		o.cmd = o.script.EvalSha(ctx, pipe, o.keys, o.args...)
	default:
		o.cmd = o.script.Eval(ctx, pipe, o.keys, o.args...)
	}
}

// missingScripts returns the ops whose script the server did not have.
func missingScripts(ops []*clusterOp) []*clusterOp {
	var out []*clusterOp
	for _, o := range ops {
		if o.script != nil && redis.HasErrorPrefix(o.cmd.Err(), "NOSCRIPT") {
			out = append(out, o)
		}
	}
	return out
}

// firstOpErr returns the first error of ops, other than redis.Nil.
func firstOpErr(ops []*clusterOp) error {
	for _, o := range ops {
		if err := o.cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	return nil
}

// runStep runs ops in one round trip, each on its slot's master: without
// wait, as one cluster pipeline (go-redis sends each master its part in
// parallel, and follows redirections); with wait, as one pipeline per
// master on that master's connection, ending with WAIT 1, so that the
// replica acknowledges every write of the step before the next step
// starts. go-redis would send a plain WAIT to every shard, on other
// connections, where it covers nothing. Results are in the ops' cmds; the
// error returned is ErrNotReplicated when a master's replica did not
// acknowledge.
func (c *cluster) runStep(ctx context.Context, ops []*clusterOp, wait bool) error {
	if len(ops) == 0 {
		return nil
	}
	run := func(pipe func() redis.Pipeliner, ops []*clusterOp, sha bool) *redis.Cmd {
		p := pipe()
		writes := false
		for _, o := range ops {
			o.addTo(ctx, p, sha)
			writes = writes || !o.read
		}
		var w *redis.Cmd
		if wait && writes {
			w = p.Do(ctx, "WAIT", 1, c.cfg.waitTimeout.Milliseconds())
		}
		_, _ = p.Exec(ctx)
		return w
	}
	if !wait && len(ops) == 1 {
		// No pipeline (nor its fan-out goroutines) for one command.
		o := ops[0]
		if o.script == nil {
			o.cmd = c.client.Do(ctx, o.args...)
		} else {
			o.cmd = o.script.Run(ctx, c.client, o.keys, o.args...)
		}
		return nil
	}
	if !wait {
		run(c.client.Pipeline, ops, true)
		if retry := missingScripts(ops); len(retry) > 0 {
			run(c.client.Pipeline, retry, false)
		}
		return nil
	}

	byMaster := map[*redis.Client][]*clusterOp{}
	for _, o := range ops {
		m, err := c.client.MasterForKey(ctx, o.key)
		if err != nil {
			o.cmd = redis.NewCmd(ctx)
			o.cmd.SetErr(err)
			continue
		}
		byMaster[m] = append(byMaster[m], o)
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		waitErr error
	)
	for m, group := range byMaster {
		wg.Go(func() {
			w := run(m.Pipeline, group, true)
			if retry := missingScripts(group); len(retry) > 0 {
				if rw := run(m.Pipeline, retry, false); rw != nil {
					w = rw
				}
			}
			if w == nil {
				return // only reads on this master
			}
			n, err := w.Int64()
			switch {
			case err != nil:
				err = fmt.Errorf("%w: WAIT on %s: %w", ErrNotReplicated, m.Options().Addr, err)
			case n < 1:
				err = fmt.Errorf("%w: %s within %v", ErrNotReplicated, m.Options().Addr, c.cfg.waitTimeout)
			}
			if err != nil {
				mu.Lock()
				if waitErr == nil {
					waitErr = err
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
			c.client.ReloadState(ctx)
			break
		}
	}
	return waitErr
}

// tagWalk is one tag hash being drained (invalidate) or cleaned (prune):
// the registrations read and not yet dealt with, and where to read next.
type tagWalk struct {
	key     string
	tag     string
	fields  []string // entry keys read
	ids     []string // their fill ids, as read
	next    string   // cursor to read from next, "0": nothing more
	stamp   string   // the stamp, as last read ("": none seen)
	settled bool
}

// absorb takes a {cursor, flat} reply.
func (w *tagWalk) absorb(cmd *redis.Cmd) error {
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
			w.stamp = id
			continue
		}
		w.fields = append(w.fields, f)
		w.ids = append(w.ids, id)
	}
	return nil
}

// removeAndReadOp returns the op that removes the registrations in done
// (indexes of w.fields) if unchanged and reads the next step; settleMS >= 0
// settles the stamp at the end, dropping it only if it is still covered
// (the stamp a floor covered, "" for none).
func (c *cluster) removeAndReadOp(w *tagWalk, done []int, settleMS int64, covered string) *clusterOp {
	next := w.next
	if next == "0" {
		next = ""
	}
	settle := ""
	if settleMS >= 0 {
		settle = strconv.FormatInt(settleMS, 10)
	}
	args := make([]any, 0, 4+2*len(done))
	args = append(args, next, c.cfg.chunkSize, settle, covered)
	for _, i := range done {
		args = append(args, w.fields[i], w.ids[i])
	}
	return scriptOp(clusterScripts[clusterRemoveAndRead], []string{w.key}, args...)
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
