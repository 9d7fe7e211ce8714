package redisbackend

import (
	"context"
	"fmt"
	"strings"

	"github.com/depcache/go-depcache/backends"
)

// Trimming the tag index on Cluster (doc.go, "Pruning"). The index lives
// in a slot of its own, the tag hashes in theirs and the entries in
// theirs, so a trim is a few steps that carry what one read to the next;
// nothing in it needs to be atomic across slots, since every write is
// conditional on what was read: a registration goes only if its fill id
// is the one seen with a dead entry, a stamp only from a hash that holds
// nothing else, once older than the prune age (the tag's master decides,
// by its own clock: liveness only), and only if it is still the stamp read
// before the pruned floor was raised to cover it (floorLua, on the epoch's
// slot: a fill that stamp could refuse is refused by the floor from then
// on), and an index member only if its score is still the one read (a
// newer stamp moved it).

// dueOp reads up to n due tags of ns's tag index; it rides in the first
// step of a fill or an invalidation.
func (c *cluster) dueOp(ns string, n int) *clusterOp {
	return scriptOp(clusterScripts[clusterDueTags], []string{tagIndexKey(ns)}, c.cfg.pruneAfterMS(), n)
}

// dueTag is one tag of the index being trimmed.
type dueTag struct {
	key, score string
	stamp      string   // as sampled, "" for none
	fields     []string // sampled registrations
	ids        []string
	exists     []*clusterOp
}

// trim deals with the due tags that due read: 4 round trips (sample the
// registrations; EXISTS of their entries; remove the dead ones and settle
// the stamp; update the index) when there are any, none otherwise. It
// returns how many were due.
func (c *cluster) trim(ctx context.Context, ns string, due *clusterOp) (int, error) {
	flat, err := due.cmd.StringSlice()
	if err != nil {
		return 0, fmt.Errorf("read the tag index: %w", err)
	}
	tags := make([]*dueTag, 0, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		tags = append(tags, &dueTag{key: flat[i], score: flat[i+1]})
	}
	if len(tags) == 0 {
		return 0, nil
	}

	// 1. A sample of each tag's registrations.
	ops := make([]*clusterOp, len(tags))
	for i, d := range tags {
		ops[i] = scriptOp(clusterScripts[clusterSampleTag], []string{d.key}, trimSample)
	}
	_ = c.runStep(ctx, ops, false)
	if err := firstOpErr(ops); err != nil {
		return 0, fmt.Errorf("sample registrations: %w", err)
	}
	var unindex []any // key, score, code
	live := tags[:0]
	for i, d := range tags {
		res, err := ops[i].cmd.Slice()
		if err != nil || len(res) != 3 {
			return 0, fmt.Errorf("sample registrations: unexpected reply %v, %v", res, err)
		}
		if exists, _ := res[0].(int64); exists == 0 {
			unindex = append(unindex, d.key, d.score, 0)
			continue
		}
		d.stamp, _ = res[2].(string)
		pairs, _ := res[1].([]any)
		for j := 0; j+1 < len(pairs); j += 2 {
			f, _ := pairs[j].(string)
			id, _ := pairs[j+1].(string)
			if f != "~v" {
				d.fields = append(d.fields, f)
				d.ids = append(d.ids, id)
			}
		}
		live = append(live, d)
	}
	tags = live

	// 2. Which of those entries still exist (a lease counts: its fill is
	// under way); and the pruned floor raised to cover the stamps.
	ops = ops[:0]
	var stamps []string
	for _, d := range tags {
		for _, f := range d.fields {
			o := c.existsOp(f)
			d.exists = append(d.exists, o)
			ops = append(ops, o)
		}
		if d.stamp != "" {
			stamps = append(stamps, d.stamp)
		}
	}
	floor := c.floorOp(stamps)
	step := ops
	if floor != nil {
		step = append(ops[:len(ops):len(ops)], floor)
	}
	if err := c.runStep(ctx, step, c.replicated.Load()); err != nil {
		// An entry's removal may not have reached a replica: keep every
		// registration (and so the stamps) until a later trim.
		return 0, fmt.Errorf("read entries: %w", err)
	}
	if err := firstOpErr(ops); err != nil {
		return 0, fmt.Errorf("read entries: %w", err)
	}
	fl := readFloor(floor)

	// 3. Remove the dead registrations, settle the stamps.
	ops = ops[:0]
	for _, d := range tags {
		args := []any{c.cfg.pruneAfterMS(), fl.cover(d.stamp)}
		for j, o := range d.exists {
			if n, _ := o.cmd.Int64(); n == 0 {
				args = append(args, d.fields[j], d.ids[j])
			}
		}
		ops = append(ops, scriptOp(clusterScripts[clusterSettleTag], []string{d.key}, args...))
	}
	_ = c.runStep(ctx, ops, false)
	if err := firstOpErr(ops); err != nil {
		return 0, fmt.Errorf("settle stamps: %w", err)
	}
	for i, d := range tags {
		// 2: dead registrations went, more may be left: the tag stays due.
		if code, _ := ops[i].cmd.Int64(); code != 2 {
			unindex = append(unindex, d.key, d.score, code)
		}
	}

	// 4. The index.
	if len(unindex) > 0 {
		err := clusterScripts[clusterUnindexTags].Run(ctx, c.client, []string{tagIndexKey(ns)}, unindex...).Err()
		if err != nil {
			return 0, fmt.Errorf("update the tag index: %w", err)
		}
	}
	return len(flat) / 2, nil
}

// floorOp raises the pruned floor to cover the stamps that are old enough
// to go (floorLua), nil when there are none.
func (c *cluster) floorOp(stamps []string) *clusterOp {
	if len(stamps) == 0 {
		return nil
	}
	args := make([]any, 0, 1+len(stamps))
	args = append(args, c.cfg.pruneAfterMS())
	for _, s := range stamps {
		args = append(args, s)
	}
	o := scriptOp(clusterScripts[clusterRaiseFloor], []string{c.cfg.epochKey, c.cfg.prunedKey}, args...)
	// A failover of the epoch's master loses nothing the floor is for:
	// the promoted master starts a new era.
	o.read = true
	return o
}

// floor is what floorLua returned: the current era ("" when there is
// none) and the newest pruned stamp of that era (-1 for none). ok is false
// when it was not raised (no stamps, or an error): nothing is covered.
type floor struct {
	era string
	n   int64
	ok  bool
}

// readFloor reads the reply of a floorOp (nil: nothing covered).
func readFloor(o *clusterOp) floor {
	if o == nil {
		return floor{}
	}
	res, err := o.cmd.Slice()
	if err != nil || len(res) != 2 {
		return floor{}
	}
	era, ok1 := res[0].(string)
	n, ok2 := res[1].(int64)
	return floor{era: era, n: n, ok: ok1 && ok2}
}

// cover returns stamp if the floor lets it go, "" otherwise: a stamp of
// another era than the current one (no fill of its era can pass the
// epoch check again: eras never come back), or of the current era and no
// newer than the floor. An unreadable stamp goes anyway (settle).
func (f floor) cover(stamp string) string {
	if !f.ok || stamp == "" {
		return ""
	}
	i := strings.LastIndexByte(stamp, ':')
	if i <= 0 {
		return stamp
	}
	ep, err := backends.ParseEpoch(stamp[:i])
	if err != nil {
		return stamp
	}
	if ep.Era != f.era || f.n >= 0 && ep.N <= uint64(f.n) {
		return stamp
	}
	return ""
}

// trimAll trims the index until no due tag is left (Clear, Prune), in
// steps of at most the chunk size; bounded by the index size, since every
// visit removes a stamp, defers its tag by the prune age or drops dead
// registrations.
func (c *cluster) trimAll(ctx context.Context, ns string) error {
	size, err := c.client.ZCard(ctx, tagIndexKey(ns)).Result()
	if err != nil {
		return fmt.Errorf("read the tag index: %w", err)
	}
	limit := 2*int(size) + c.cfg.chunkSize
	for done := 0; done < limit; {
		due := c.dueOp(ns, c.cfg.chunkSize)
		_ = c.runStep(ctx, []*clusterOp{due}, false)
		n, err := c.trim(ctx, ns, due)
		if err != nil {
			return err
		}
		if n < c.cfg.chunkSize {
			return nil
		}
		done += n
	}
	return nil
}

// trimAfter trims what due read at the end of a fill or an invalidation
// that already did its job: a failure is logged, not returned.
func (c *cluster) trimAfter(ctx context.Context, ns string, due *clusterOp) {
	if _, err := c.trim(ctx, ns, due); err != nil {
		c.log.Warn("redisbackend: trim the tag index", "ns", ns, "err", err)
	}
}
