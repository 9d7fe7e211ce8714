package redisbackend

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// BenchmarkBigTagDrain measures, before any change to the key layout,
// what invalidating a tag of 100,000 entries costs in bounded-time steps
// for each registry layout, next to one DEL of the 100,000 entry keys
// (issue 14: at most 1.5× that DEL, no script blocking Redis more than
// 5 ms). Every round prepares each contender afresh — 100,000 entries
// (SET PX, the benchValue bytes) and their registry — and measures the
// contenders in a new random order, so that the machine's drift (a
// loopback round trip flips between ~21 and ~60 µs here) spreads over
// all of them; the table printed at the end holds medians over the
// rounds, each ratio taken to the baseline of the same round: the mean
// of two one-DEL runs measured among the others.
//
// The contenders:
//   - baselines: one DEL of the keys in a random order (as a registry
//     lists them: the baseline) and in the order they were
//     written (memory locality halves it);
//   - floors: DEL of the same random order in client-side chunks (what
//     chunking costs), one DEL per key pipelined (as Cluster, where a
//     DEL cannot span slots, would need), and a script that UNLINKs keys
//     the client passes as ARGV (what the Lua round trip of every key
//     costs, with no registry read at all);
//   - today: Backend.Invalidate, and its frozen-hash and unfrozen drain
//     step scripts driven directly with a fixed HSCAN COUNT of 1000;
//   - prototypes drained by standalone scripts: a frozen hash (HSCAN, one
//     UNLINK or DEL of the whole chunk via unpack, the hash unlinked at
//     the end); a sorted set (member = entry key, score = a random 52-bit
//     fill id) drained from its head (ZRANGE 0 k-1 → UNLINK →
//     ZREMRANGEBYRANK, or ZPOPMIN), with a chunk sized to ~3 ms by the
//     client, or frozen and read by rank with the set unlinked at the
//     end; the same frozen set scored by registration order
//     ("zset-seq": a fill time or sequence instead of a random id); a
//     list (LPOP k) and a set (SPOP k); chunks of 256 to 4000 (unpack
//     takes at most about 8000 values), DEL beside UNLINK;
//   - client-driven drains of a frozen registry, no Lua: each round trip
//     DELs the keys the last one read and reads the next chunk (ZRANGE by
//     rank, or HSCAN), the registry unlinked with the last DEL.
//
// Registries are written in a random order relative to their entries, so
// that no layout deletes entries in the order memory holds them.
//
// Per contender: wall time of the whole drain, the server's main-thread
// CPU (INFO cpu) per entry and the whole process's (the lazy-free thread
// included), both as ratios to the round's one DEL, the scripts or
// commands sent and the main-thread CPU per call (what one call blocks
// on an idle server), and the scripts' median and longest duration as
// timed inside them (TIME) and as SLOWLOG records it when the server
// logs commands of 500 µs or more. On a machine whose other work
// preempts Redis the longest durations include that time off the CPU.
//
// Measured on a shared 2-core machine (load 3–9), 4 runs of 7–15
// rounds, main CPU × one DEL: a Lua drain cannot get under ~1.5×, since
// passing keys through Lua alone costs 1.45–1.53× (the ARGV floor);
// today's drain 2.4–2.7×; a frozen sorted set read by rank in Lua
// 1.6–1.8× (1.25–1.57× scored by registration order); client-driven
// drains of a frozen sorted set 1.36–1.45× (1.16–1.33× scored by
// registration order), in chunks of 1000 that cost 2.2–2.4 ms of CPU per
// call there.
//
// It needs a Redis of its own (the CPU counters are server-wide):
//
//	redis-server --daemonize yes --port 7401 --save "" --appendonly no \
//	  --slowlog-log-slower-than 500 --slowlog-max-len 10000
//	REDIS_URL=redis://127.0.0.1:7401/0 go test ./backends/redisbackend/ \
//	  -run '^$' -bench 'BigTag' -benchtime 1x -timeout 30m
//
// BIGTAG_ROUNDS sets the rounds (default 5); BIGTAG_ONLY, a regular
// expression, keeps the contenders whose names match it (and the
// baselines). A run of every contender takes 5–12 minutes.
func BenchmarkBigTagDrain(b *testing.B) {
	tg, ok := realTarget(b)
	if !ok {
		b.Skip("needs REDIS_URL: a Redis of its own")
	}
	c := tg.client(b)
	ctx := context.Background()
	base := randomName(b, "bench-bigtag:")
	b.Cleanup(func() { unlinkMatching(c, base+"*") })
	trips := &counter{}
	be := newBackendHooked(b, tg, []redis.Hook{trips}, WithEpochKey(base+":epoch"))
	if _, err := be.Invalidate(ctx, base+":warm", "t"); err != nil {
		b.Fatal(err) // the first use's checks, outside the measurement
	}
	rounds := envInt(b, "BIGTAG_ROUNDS", 5)
	slowlogUS := slowlogThreshold(c)

	const n = 100_000
	contenders := bigTagContenders(c, be, trips)
	if only := os.Getenv("BIGTAG_ONLY"); only != "" {
		re, err := regexp.Compile(only)
		if err != nil {
			b.Fatalf("BIGTAG_ONLY: %v", err)
		}
		contenders = slices.DeleteFunc(contenders, func(ct bigTagContender) bool {
			return !strings.Contains(ct.name, "(baseline") && !re.MatchString(ct.name)
		})
	}
	results := make([][]drainMeasure, len(contenders))
	order := make([]int, len(contenders))
	for i := range order {
		order[i] = i
	}
	memo := map[registryLayout]string{}
	for round := range rounds {
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		measured := make([]drainMeasure, len(contenders))
		for _, i := range order {
			ct := contenders[i]
			t := &bigTag{ns: fmt.Sprintf("%s:%d:%d", base, i, round), n: n}
			t.prepare(b, c, ct.layout)
			if round == 0 && ct.layout != layoutNone {
				memo[ct.layout] = fmt.Sprintf("%s %d B/registration", ct.layout, memoryUsage(c, t.registry())/n)
			}
			measured[i] = measureDrain(b, c, ct, t, slowlogUS)
		}
		// The round's baseline: the mean of its two one-DEL runs.
		baseline := drainMeasure{
			wall:    (measured[0].wall + measured[1].wall) / 2,
			mainCPU: (measured[0].mainCPU + measured[1].mainCPU) / 2,
			procCPU: (measured[0].procCPU + measured[1].procCPU) / 2,
		}
		for i := range contenders {
			m := measured[i]
			m.wallX = float64(m.wall) / float64(baseline.wall)
			m.cpuX = m.mainCPU / baseline.mainCPU
			m.procX = m.procCPU / baseline.procCPU
			results[i] = append(results[i], m)
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\ninvalidating a tag of %d entries, medians of %d interleaved rounds (%s)\n", n, rounds, strings.Join(slices.Sorted(maps.Values(memo)), ", "))
	fmt.Fprintln(&sb, "| contender | wall ms | ×DEL wall | main CPU ns/entry | ×DEL main CPU (min–max) | ×DEL process CPU | calls | main CPU µs per call | script µs: median, longest in-script / SLOWLOG |")
	fmt.Fprintln(&sb, "|---|---|---|---|---|---|---|---|---|")
	for i, ct := range contenders {
		rs := results[i]
		med := func(f func(drainMeasure) float64) float64 {
			v := make([]float64, len(rs))
			for k, r := range rs {
				v[k] = f(r)
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		medInt := func(f func(drainMeasure) int64) string {
			if v := med(func(r drainMeasure) float64 { return float64(f(r)) }); v >= 0 {
				return strconv.FormatFloat(v, 'f', 0, 64)
			}
			return "–"
		}
		worst := func(f func(drainMeasure) int64) string {
			var w int64 = -1
			for _, r := range rs {
				w = max(w, f(r))
			}
			if w < 0 {
				return "–"
			}
			return strconv.FormatInt(w, 10)
		}
		lo, hi := rs[0].cpuX, rs[0].cpuX
		for _, r := range rs {
			lo, hi = min(lo, r.cpuX), max(hi, r.cpuX)
		}
		fmt.Fprintf(&sb, "| %s | %.1f | %.2f | %.0f | %.2f (%.2f–%.2f) | %.2f | %.0f | %.0f | %s, %s / %s |\n", ct.name,
			med(func(r drainMeasure) float64 { return float64(r.wall) / 1e6 }),
			med(func(r drainMeasure) float64 { return r.wallX }),
			med(func(r drainMeasure) float64 { return r.mainCPU * 1000 / n }),
			med(func(r drainMeasure) float64 { return r.cpuX }), lo, hi,
			med(func(r drainMeasure) float64 { return r.procX }),
			med(func(r drainMeasure) float64 { return float64(r.calls) }),
			med(func(r drainMeasure) float64 { return r.mainCPU / float64(max(1, r.calls)) }),
			medInt(func(r drainMeasure) int64 { return r.medianUS }),
			worst(func(r drainMeasure) int64 { return r.scriptUS }),
			worst(func(r drainMeasure) int64 { return r.slowlogUS }))
	}
	fmt.Print(sb.String()) // not b.Log: the testing package keeps 10 lines of a benchmark's log
}

// BenchmarkBigTagRegister prices what a fill pays for the registry
// layout: one script registering a new entry key under 10 tags (each
// holding 10,000 registrations already), by HSET (key → fill id) or by
// ZADD (score = a random 52-bit fill id, or a rising sequence: a fill
// time), beside the same script registering nothing.
// The layouts alternate in a random order every round; the table logged
// holds the medians of the server's main-thread CPU per fill. Run as
// BenchmarkBigTagDrain says.
func BenchmarkBigTagRegister(b *testing.B) {
	tg, ok := realTarget(b)
	if !ok {
		b.Skip("needs REDIS_URL: a Redis of its own")
	}
	c := tg.client(b)
	ctx := context.Background()
	base := randomName(b, "bench-bigtag-reg:")
	b.Cleanup(func() { unlinkMatching(c, base+"*") })
	const tags, size, fills = 10, 10_000, 3_000
	rounds := envInt(b, "BIGTAG_ROUNDS", 5)
	writes := []struct {
		name   string
		layout registryLayout
		script *redis.Script
	}{
		{"none (script only)", layoutNone, redis.NewScript(`return #KEYS`)},
		{"hash: 10 HSET", layoutHash, redis.NewScript(`
for i = 2, #KEYS do redis.call('HSET', KEYS[i], KEYS[1], ARGV[1]) end
return #KEYS`)},
		{"zset: 10 ZADD", layoutZset, redis.NewScript(`
for i = 2, #KEYS do redis.call('ZADD', KEYS[i], ARGV[2], KEYS[1]) end
return #KEYS`)},
		{"zset-seq: 10 ZADD, rising score", layoutZsetSeq, redis.NewScript(`
for i = 2, #KEYS do redis.call('ZADD', KEYS[i], ARGV[3], KEYS[1]) end
return #KEYS`)},
	}
	keys := make([][]string, len(writes))
	for w, wr := range writes {
		keys[w] = make([]string, tags)
		for i := range keys[w] {
			t := &bigTag{ns: fmt.Sprintf("%s:%d:%d", base, w, i), n: size}
			t.writeRegistry(b, c, wr.layout)
			keys[w][i] = t.registry()
		}
	}
	perFill := make([][]float64, len(writes))
	order := []int{0, 1, 2, 3}
	for round := range rounds {
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, w := range order {
			cpu := serverCPU(c)
			for f := range fills {
				entry := entryKey(base, fmt.Sprintf("r%d:%d", round, f))
				id := rand.Uint64() >> 12
				seq := size + round*fills + f // after the prepared registrations' 1..size
				if err := writes[w].script.Run(ctx, c, append([]string{entry}, keys[w]...), strconv.FormatUint(id, 36), id, seq).Err(); err != nil {
					b.Fatal(err)
				}
			}
			perFill[w] = append(perFill[w], cpu.since()/fills)
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\none fill's registration under %d tags of %d registrations, main CPU µs per fill, medians of %d rounds of %d fills\n", tags, size, rounds, fills)
	fmt.Fprintln(&sb, "| layout | µs/fill | µs/registration above the empty script |")
	fmt.Fprintln(&sb, "|---|---|---|")
	medians := make([]float64, len(writes))
	for w := range writes {
		slices.Sort(perFill[w])
		medians[w] = perFill[w][len(perFill[w])/2]
	}
	for w, wr := range writes {
		fmt.Fprintf(&sb, "| %s | %.2f | %.3f |\n", wr.name, medians[w], (medians[w]-medians[0])/tags)
	}
	fmt.Print(sb.String())
}

type registryLayout string

const (
	layoutNone registryLayout = "none"
	layoutHash registryLayout = "hash"
	layoutZset registryLayout = "zset"
	// layoutZsetSeq scores by registration order (a fill time or sequence
	// rather than a random fill id): its rank order is the order its nodes
	// were allocated in, the entries' still random.
	layoutZsetSeq registryLayout = "zset-seq"
	layoutList    registryLayout = "list"
	layoutSet     registryLayout = "set"
)

// bigTag is one contender's tag in one round: n entries under namespace
// ns and their registry.
type bigTag struct {
	ns string
	n  int
	// keys are the entry keys in the order they were written; shuffled,
	// in a random order (as a hash or a set lists them).
	keys, shuffled []string
}

// registry is the tag's registry key, the tag hash of the backend's own
// layout whatever the layout.
func (t *bigTag) registry() string { return tagKey(t.ns, "big") }

// prepare writes the entries (SET PX 10 min) in key order and then the
// registry.
func (t *bigTag) prepare(tb testing.TB, c redis.UniversalClient, layout registryLayout) {
	ctx := context.Background()
	t.keys = make([]string, t.n)
	for i := range t.keys {
		t.keys[i] = entryKey(t.ns, fmt.Sprint("k", i))
	}
	t.shuffled = slices.Clone(t.keys)
	rand.Shuffle(len(t.shuffled), func(i, j int) { t.shuffled[i], t.shuffled[j] = t.shuffled[j], t.shuffled[i] })
	batches(tb, t.n, func(p redis.Pipeliner, start, end int) {
		for _, k := range t.keys[start:end] {
			p.Set(ctx, k, benchValue, 10*time.Minute)
		}
	}, c)
	t.writeRegistry(tb, c, layout)
}

// writeRegistry registers the tag's entries (t.keys if prepared, else n
// new names) in layout. The list is pushed in a random order: one in
// write order would delete entries in the order memory holds them, a
// locality no production registry has.
func (t *bigTag) writeRegistry(tb testing.TB, c redis.UniversalClient, layout registryLayout) {
	ctx := context.Background()
	if t.keys == nil {
		t.keys = make([]string, t.n)
		for i := range t.keys {
			t.keys[i] = entryKey(t.ns, fmt.Sprint("k", i))
		}
		t.shuffled = slices.Clone(t.keys)
		rand.Shuffle(len(t.shuffled), func(i, j int) { t.shuffled[i], t.shuffled[j] = t.shuffled[j], t.shuffled[i] })
	}
	reg := t.registry()
	seq := 0
	var add func(p redis.Pipeliner, part []string)
	switch layout {
	case layoutNone:
		return
	case layoutHash:
		add = func(p redis.Pipeliner, part []string) {
			pairs := make([]any, 0, 2*len(part))
			for _, k := range part {
				pairs = append(pairs, k, newFillID())
			}
			p.HSet(ctx, reg, pairs...)
		}
	case layoutZset:
		add = func(p redis.Pipeliner, part []string) {
			zs := make([]redis.Z, len(part))
			for i, k := range part {
				zs[i] = redis.Z{Score: float64(rand.Uint64() >> 12), Member: k}
			}
			p.ZAdd(ctx, reg, zs...)
		}
	case layoutZsetSeq:
		add = func(p redis.Pipeliner, part []string) {
			zs := make([]redis.Z, len(part))
			for i, k := range part {
				seq++
				zs[i] = redis.Z{Score: float64(seq), Member: k}
			}
			p.ZAdd(ctx, reg, zs...)
		}
	case layoutList:
		add = func(p redis.Pipeliner, part []string) { p.RPush(ctx, reg, toAny(part)...) }
	case layoutSet:
		add = func(p redis.Pipeliner, part []string) { p.SAdd(ctx, reg, toAny(part)...) }
	}
	batches(tb, t.n, func(p redis.Pipeliner, start, end int) { add(p, t.shuffled[start:end]) }, c)
	if layout == layoutHash {
		// The stamp, which a frozen hash keeps and its drain checks.
		if err := c.HSet(ctx, reg, "~v", "bench:1:0").Err(); err != nil {
			tb.Fatal(err)
		}
	}
}

// batches runs add over [0, n) in pipelines of 1000.
func batches(tb testing.TB, n int, add func(p redis.Pipeliner, start, end int), c redis.UniversalClient) {
	tb.Helper()
	for start := 0; start < n; start += 1000 {
		p := c.Pipeline()
		add(p, start, min(n, start+1000))
		if _, err := p.Exec(context.Background()); err != nil {
			tb.Fatal(err)
		}
	}
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// drainMeasure is what one drain of one contender measured.
type drainMeasure struct {
	wall                time.Duration
	mainCPU, procCPU    float64 // µs
	calls               int
	scriptUS, slowlogUS int64 // longest; -1: not known
	medianUS            int64 // the median script, in-script; -1: none
	wallX, cpuX, procX  float64
}

// stepReply is what a drain script returns: {cursor, registrations
// read, entries removed, µs}; the cursor is "" where there is none, and
// today's step scripts return no count read.
type stepReply struct {
	cursor        string
	read, removed int64
	us            int64
}

// bigTagContender drains t's entries; its calls report the entries
// removed, the calls sent and the longest script (µs, -1 if none).
type bigTagContender struct {
	name   string
	layout registryLayout
	drain  func(ctx context.Context, t *bigTag) (removed int64, calls int, longest int64, err error)
}

func measureDrain(tb testing.TB, c redis.UniversalClient, ct bigTagContender, t *bigTag, slowlogUS int64) drainMeasure {
	tb.Helper()
	ctx := context.Background()
	if slowlogUS >= 0 {
		if err := c.SlowLogReset(ctx).Err(); err != nil {
			tb.Fatal(err)
		}
	}
	main, proc := serverCPU(c), processCPU(c)
	start := time.Now()
	steps := &stepTimes{}
	removed, calls, longest, err := ct.drain(context.WithValue(ctx, stepTimesKey{}, steps), t)
	wall := time.Since(start)
	m := drainMeasure{wall: wall, mainCPU: main.since(), procCPU: processCPU(c) - proc, calls: calls, scriptUS: longest, slowlogUS: -1, medianUS: -1}
	if len(steps.us) > 0 {
		slices.Sort(steps.us)
		m.medianUS = steps.us[len(steps.us)/2]
	}
	if err != nil {
		tb.Fatalf("%s: %v", ct.name, err)
	}
	if removed != int64(t.n) {
		tb.Fatalf("%s removed %d entries, want %d", ct.name, removed, t.n)
	}
	if left, err := c.Exists(ctx, t.keys[:100]...).Result(); err != nil || left != 0 {
		tb.Fatalf("%s: %d of the first 100 entries left, %v", ct.name, left, err)
	}
	if slowlogUS >= 0 && slowlogUS <= 5000 {
		logs, err := c.SlowLogGet(ctx, -1).Result()
		if err != nil {
			tb.Fatal(err)
		}
		m.slowlogUS = 0
		for _, l := range logs {
			if name := strings.ToLower(fmt.Sprint(l.Args[0])); name != "slowlog" && name != "info" {
				m.slowlogUS = max(m.slowlogUS, l.Duration.Microseconds())
			}
		}
	}
	return m
}

// bigTagContenders returns the baseline one DEL first, twice: a round's
// ratios are to the mean of the two, less at the mercy of one run on a
// busy machine.
func bigTagContenders(c redis.UniversalClient, be *Backend, trips *counter) []bigTagContender {
	one := func(order func(t *bigTag) []string) func(ctx context.Context, t *bigTag) (int64, int, int64, error) {
		return func(ctx context.Context, t *bigTag) (int64, int, int64, error) {
			n, err := c.Del(ctx, order(t)...).Result()
			return n, 1, -1, err
		}
	}
	chunkedDel := func(k int) func(ctx context.Context, t *bigTag) (int64, int, int64, error) {
		return func(ctx context.Context, t *bigTag) (int64, int, int64, error) {
			var removed int64
			calls := 0
			for start := 0; start < t.n; start += k {
				n, err := c.Del(ctx, t.shuffled[start:min(t.n, start+k)]...).Result()
				if err != nil {
					return removed, calls, -1, err
				}
				removed += n
				calls++
			}
			return removed, calls, -1, nil
		}
	}
	// The floor of a Lua drain: the keys come from the client (ARGV), so
	// the script reads no registry but still turns every key into a Lua
	// string and back.
	passArgs := redis.NewScript(protoPrelude + `
local t0 = redis.call('TIME')
local removed = redis.call('UNLINK', unpack(ARGV))
return {#ARGV, removed, elapsed_us(t0)}`)
	luaArgs := func(k int) func(ctx context.Context, t *bigTag) (int64, int, int64, error) {
		return func(ctx context.Context, t *bigTag) (int64, int, int64, error) {
			var removed, longest int64
			calls := 0
			for start := 0; start < t.n; start += k {
				r, err := runStep(ctx, c, passArgs, t.registry(), toAny(t.shuffled[start:min(t.n, start+k)])...)
				if err != nil {
					return removed, calls, longest, err
				}
				calls++
				removed += r.removed
				longest = max(longest, r.us)
			}
			return removed, calls, longest, nil
		}
	}
	realFrozen := redis.NewScript(luaPrelude + drainFrozenStepLua)
	realStep := redis.NewScript(luaPrelude + drainStepLua)
	cs := []bigTagContender{
		{"one DEL, random order (baseline a)", layoutNone, one(func(t *bigTag) []string { return t.shuffled })},
		{"one DEL, random order (baseline b)", layoutNone, one(func(t *bigTag) []string { return t.shuffled })},
		{"one DEL, write order", layoutNone, one(func(t *bigTag) []string { return t.keys })},
		{"client DEL ×1000 (floor of chunking)", layoutNone, chunkedDel(1000)},
		{"client DEL ×4000 (floor of chunking)", layoutNone, chunkedDel(4000)},
		{"client DEL per key, pipelined ×1000 (as on Cluster)", layoutNone, func(ctx context.Context, t *bigTag) (int64, int, int64, error) {
			var removed int64
			calls := 0
			for start := 0; start < t.n; start += 1000 {
				p := c.Pipeline()
				for _, k := range t.shuffled[start:min(t.n, start+1000)] {
					p.Del(ctx, k)
				}
				cmds, err := p.Exec(ctx)
				if err != nil {
					return removed, calls, -1, err
				}
				for _, cmd := range cmds {
					removed += cmd.(*redis.IntCmd).Val()
				}
				calls++
			}
			return removed, calls, -1, nil
		}},
		{"Lua UNLINK of ARGV ×1000 (floor of a Lua drain)", layoutNone, luaArgs(1000)},
		{"Lua UNLINK of ARGV ×4000 (floor of a Lua drain)", layoutNone, luaArgs(4000)},
		{"today: Backend.Invalidate", layoutHash, func(ctx context.Context, t *bigTag) (int64, int, int64, error) {
			before := trips.n.Load()
			n, err := be.Invalidate(ctx, t.ns, "big")
			return int64(n), int(trips.n.Load() - before), -1, err
		}},
		{"today's frozen step script, HSCAN 1000, UNLINK ×256", layoutHash, scanDrain(c, realFrozen, 1000, func(cursor string, k int) []any {
			return []any{cursor, k, "0", "bench:1:0"}
		})},
		{"today's unfrozen step script (+HDEL), HSCAN 1000", layoutHash, scanDrain(c, realStep, 1000, func(cursor string, k int) []any {
			return []any{cursor, k, "0"}
		})},
	}
	hash := redis.NewScript(protoPrelude + hashFrozenLua)
	for _, v := range []struct {
		k, batch int
		cmd      string
	}{{1000, 8000, "UNLINK"}, {4000, 8000, "UNLINK"}, {4000, 8000, "DEL"}} {
		cs = append(cs, bigTagContender{fmt.Sprintf("hash frozen: HSCAN %d, one %s", v.k, v.cmd), layoutHash,
			scanDrain(c, hash, v.k, func(cursor string, k int) []any { return []any{cursor, k, v.cmd, v.batch} })})
	}
	head := redis.NewScript(protoPrelude + zsetHeadLua)
	for _, v := range []struct {
		k, batch int
		cmd      string
	}{{256, 8000, "UNLINK"}, {1000, 256, "UNLINK"}, {1000, 8000, "UNLINK"}, {2000, 8000, "UNLINK"}, {4000, 8000, "UNLINK"}, {4000, 8000, "DEL"}} {
		name := fmt.Sprintf("zset head: ZRANGE 0 %d, one %s, ZREMRANGEBYRANK", v.k-1, v.cmd)
		if v.batch < v.k {
			name = fmt.Sprintf("zset head: ZRANGE 0 %d, %s ×%d, ZREMRANGEBYRANK", v.k-1, v.cmd, v.batch)
		}
		cs = append(cs, bigTagContender{name, layoutZset,
			headDrain(c, head, v.k, 0, func(k int) []any { return []any{k, v.cmd, v.batch} })})
	}
	cs = append(cs, bigTagContender{"zset head, chunk sized to ~3 ms (≤7000)", layoutZset,
		headDrain(c, head, 1000, 3000, func(k int) []any { return []any{k, "UNLINK", 8000} })})
	rank := redis.NewScript(protoPrelude + zsetRankLua)
	for _, k := range []int{1000, 2000, 4000} {
		cs = append(cs, bigTagContender{fmt.Sprintf("zset frozen: ZRANGE by rank %d, one UNLINK, set unlinked at end", k), layoutZset,
			func(ctx context.Context, t *bigTag) (int64, int, int64, error) {
				var removed, longest int64
				calls := 0
				for start := 0; ; start += k {
					r, err := runStep(ctx, c, rank, t.registry(), start, k)
					if err != nil {
						return removed, calls, longest, err
					}
					calls++
					removed += r.removed
					longest = max(longest, r.us)
					if r.read < int64(k) {
						return removed, calls, longest, nil
					}
				}
			}})
	}
	rankSeq := func(k int) bigTagContender {
		return bigTagContender{fmt.Sprintf("zset-seq frozen: ZRANGE by rank %d, one UNLINK, set unlinked at end", k), layoutZsetSeq,
			func(ctx context.Context, t *bigTag) (int64, int, int64, error) {
				var removed, longest int64
				calls := 0
				for start := 0; ; start += k {
					r, err := runStep(ctx, c, rank, t.registry(), start, k)
					if err != nil {
						return removed, calls, longest, err
					}
					calls++
					removed += r.removed
					longest = max(longest, r.us)
					if r.read < int64(k) {
						return removed, calls, longest, nil
					}
				}
			}}
	}
	cs = append(cs, rankSeq(1000), rankSeq(2000), rankSeq(4000))
	// No Lua: the client reads a chunk of the frozen registry and sends
	// its DEL pipelined with the next chunk's read, 1 round trip per
	// chunk; the registry goes whole at the end.
	for _, v := range []struct {
		layout registryLayout
		k      int
	}{{layoutZset, 1000}, {layoutZset, 2000}, {layoutZset, 4000}, {layoutZsetSeq, 1000}, {layoutZsetSeq, 4000}, {layoutHash, 1000}} {
		cs = append(cs, bigTagContender{fmt.Sprintf("%s frozen, client-driven: read %d → DEL, pipelined", v.layout, v.k), v.layout,
			clientDrain(c, v.layout, v.k)})
	}
	pop := func(name string, layout registryLayout, src string, k int) bigTagContender {
		return bigTagContender{name, layout, headDrain(c, redis.NewScript(protoPrelude+src), k, 0, func(k int) []any { return []any{k} })}
	}
	cs = append(cs,
		pop("zset head: ZPOPMIN 4000, one UNLINK", layoutZset, zpopminLua, 4000),
		pop("list: LPOP 4000, one UNLINK", layoutList, lpopLua, 4000),
		pop("set: SPOP 4000, one UNLINK", layoutSet, spopLua, 4000),
	)
	return cs
}

// clientDrain drains a frozen registry from the client: each round trip
// DELs the keys the last one read and reads the next chunk (ZRANGE by
// rank, or HSCAN); the registry is unlinked with the last DEL.
func clientDrain(c redis.UniversalClient, layout registryLayout, k int) func(ctx context.Context, t *bigTag) (int64, int, int64, error) {
	return func(ctx context.Context, t *bigTag) (int64, int, int64, error) {
		reg := t.registry()
		var removed int64
		var pending []string
		calls, start := 0, 0
		cursor, done := uint64(0), false
		for {
			p := c.Pipeline()
			var del *redis.IntCmd
			if len(pending) > 0 {
				del = p.Del(ctx, pending...)
			}
			var rng *redis.StringSliceCmd
			var scan *redis.ScanCmd
			switch {
			case done:
				p.Unlink(ctx, reg)
			case layout == layoutHash:
				scan = p.HScan(ctx, reg, cursor, "", int64(k))
			default:
				rng = p.ZRange(ctx, reg, int64(start), int64(start+k-1))
			}
			if _, err := p.Exec(ctx); err != nil {
				return removed, calls, -1, err
			}
			calls++
			if del != nil {
				removed += del.Val()
			}
			pending = pending[:0]
			switch {
			case done:
				return removed, calls, -1, nil
			case scan != nil:
				flat, next := scan.Val()
				for i := 0; i < len(flat); i += 2 {
					if flat[i] != "~v" {
						pending = append(pending, flat[i])
					}
				}
				cursor, done = next, next == 0
			default:
				pending = append(pending, rng.Val()...)
				start += k
				done = len(rng.Val()) < k
			}
		}
	}
}

// scanDrain drives a cursor script ({cursor, read, removed, µs}) with a
// fixed COUNT over the whole cursor.
func scanDrain(c redis.UniversalClient, s *redis.Script, k int, args func(cursor string, k int) []any) func(ctx context.Context, t *bigTag) (int64, int, int64, error) {
	return func(ctx context.Context, t *bigTag) (int64, int, int64, error) {
		var removed, longest int64
		calls := 0
		cursor := "0"
		for {
			r, err := runStep(ctx, c, s, t.registry(), args(cursor, k)...)
			if err != nil {
				return removed, calls, longest, err
			}
			calls++
			removed += r.removed
			longest = max(longest, r.us)
			if cursor = r.cursor; cursor == "0" {
				return removed, calls, longest, nil
			}
		}
	}
}

// headDrain drives a script that removes up to k registrations from the
// registry's head, until one removes fewer; with a budget (µs) the next
// k is sized from the last script's duration, between 256 and 7000.
func headDrain(c redis.UniversalClient, s *redis.Script, k int, budgetUS int64, args func(k int) []any) func(ctx context.Context, t *bigTag) (int64, int, int64, error) {
	return func(ctx context.Context, t *bigTag) (int64, int, int64, error) {
		var removed, longest int64
		calls := 0
		for k := k; ; {
			r, err := runStep(ctx, c, s, t.registry(), args(k)...)
			if err != nil {
				return removed, calls, longest, err
			}
			calls++
			removed += r.removed
			longest = max(longest, r.us)
			if r.read < int64(k) {
				return removed, calls, longest, nil
			}
			if budgetUS > 0 && r.us > 0 {
				k = int(max(256, min(7000, int64(k)*budgetUS/r.us)))
			}
		}
	}
}

// stepTimes collects, under stepTimesKey in a drain's context, the
// in-script duration of every script runStep runs.
type stepTimes struct{ us []int64 }

type stepTimesKey struct{}

func runStep(ctx context.Context, c redis.UniversalClient, s *redis.Script, key string, args ...any) (r stepReply, err error) {
	defer func() {
		if st, ok := ctx.Value(stepTimesKey{}).(*stepTimes); ok && err == nil {
			st.us = append(st.us, r.us)
		}
	}()
	v, err := s.Run(ctx, c, []string{key}, args...).Slice()
	if err != nil {
		return stepReply{}, err
	}
	if len(v) > 0 {
		if cur, ok := v[0].(string); ok {
			r.cursor, v = cur, v[1:]
		}
	}
	switch len(v) {
	case 2: // today's step scripts: {cursor, removed, µs}
		r.removed, _ = v[0].(int64)
		r.us, _ = v[1].(int64)
	case 3:
		r.read, _ = v[0].(int64)
		r.removed, _ = v[1].(int64)
		r.us, _ = v[2].(int64)
	default:
		return r, fmt.Errorf("unexpected reply %v", v)
	}
	return r, nil
}

// protoPrelude holds the prototype scripts' helpers.
const protoPrelude = `
local function elapsed_us(t0)
  local t = redis.call('TIME')
  return (tonumber(t[1]) - tonumber(t0[1])) * 1000000 + tonumber(t[2]) - tonumber(t0[2])
end
-- del runs cmd over list in calls of batch keys and sums the replies.
local function del(cmd, list, batch)
  local sum = 0
  for i = 1, #list, batch do
    sum = sum + redis.call(cmd, unpack(list, i, math.min(i + batch - 1, #list)))
  end
  return sum
end
`

// hashFrozenLua: one HSCAN step of a frozen hash; the hash goes whole at
// the end of the iteration. KEYS[1] hash. ARGV[1] cursor, ARGV[2] count,
// ARGV[3] UNLINK or DEL, ARGV[4] keys per call.
const hashFrozenLua = `
local t0 = redis.call('TIME')
local r = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local flat, fields = r[2], {}
for i = 1, #flat, 2 do
  if flat[i] ~= '~v' then fields[#fields + 1] = flat[i] end
end
local removed = 0
if #fields > 0 then removed = del(ARGV[3], fields, tonumber(ARGV[4])) end
if r[1] == '0' then redis.call('UNLINK', KEYS[1]) end
return {r[1], #fields, removed, elapsed_us(t0)}
`

// zsetHeadLua removes the first k registrations of a sorted set after
// their entries. KEYS[1] set. ARGV[1] k, ARGV[2] UNLINK or DEL, ARGV[3]
// keys per call.
const zsetHeadLua = `
local t0 = redis.call('TIME')
local ks = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local removed = 0
if #ks > 0 then
  removed = del(ARGV[2], ks, tonumber(ARGV[3]))
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #ks - 1)
end
return {#ks, removed, elapsed_us(t0)}
`

// zsetRankLua unlinks the entries of ranks [start, start+k) of a frozen
// sorted set, and the set once a step reads fewer than k. KEYS[1] set.
// ARGV[1] start, ARGV[2] k.
const zsetRankLua = `
local t0 = redis.call('TIME')
local s, k = tonumber(ARGV[1]), tonumber(ARGV[2])
local ks = redis.call('ZRANGE', KEYS[1], s, s + k - 1)
local removed = 0
if #ks > 0 then removed = redis.call('UNLINK', unpack(ks)) end
if #ks < k then redis.call('UNLINK', KEYS[1]) end
return {#ks, removed, elapsed_us(t0)}
`

// zpopminLua pops k registrations (member, score pairs) and unlinks
// their entries. KEYS[1] set. ARGV[1] k.
const zpopminLua = `
local t0 = redis.call('TIME')
local flat = redis.call('ZPOPMIN', KEYS[1], ARGV[1])
local ks = {}
for i = 1, #flat, 2 do ks[#ks + 1] = flat[i] end
local removed = 0
if #ks > 0 then removed = redis.call('UNLINK', unpack(ks)) end
return {#ks, removed, elapsed_us(t0)}
`

// lpopLua pops k registrations of a list and unlinks their entries.
const lpopLua = `
local t0 = redis.call('TIME')
local ks = redis.call('LPOP', KEYS[1], ARGV[1])
if not ks then ks = {} end
local removed = 0
if #ks > 0 then removed = redis.call('UNLINK', unpack(ks)) end
return {#ks, removed, elapsed_us(t0)}
`

// spopLua pops k registrations of a set and unlinks their entries.
const spopLua = `
local t0 = redis.call('TIME')
local ks = redis.call('SPOP', KEYS[1], ARGV[1])
local removed = 0
if #ks > 0 then removed = redis.call('UNLINK', unpack(ks)) end
return {#ks, removed, elapsed_us(t0)}
`

// realTarget returns the REDIS_URL target.
func realTarget(tb testing.TB) (target, bool) {
	for _, tg := range targets(tb) {
		if tg.name != "miniredis" {
			return tg, true
		}
	}
	return target{}, false
}

func envInt(tb testing.TB, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		tb.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// slowlogThreshold returns the server's slowlog-log-slower-than (µs), or
// -1 where it cannot be read or logs nothing.
func slowlogThreshold(c redis.UniversalClient) int64 {
	v, err := c.ConfigGet(context.Background(), "slowlog-log-slower-than").Result()
	if err != nil {
		return -1
	}
	n, err := strconv.ParseInt(v["slowlog-log-slower-than"], 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// processCPU is the server process's CPU time in µs (every thread), or -1.
func processCPU(c redis.UniversalClient) float64 {
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		return -1
	}
	s, err1 := strconv.ParseFloat(infoField(info, "used_cpu_sys"), 64)
	u, err2 := strconv.ParseFloat(infoField(info, "used_cpu_user"), 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return (s + u) * 1e6
}

func memoryUsage(c redis.UniversalClient, key string) int64 {
	n, _ := c.MemoryUsage(context.Background(), key, 0).Result()
	return n
}

// unlinkMatching unlinks every key matching pattern.
func unlinkMatching(c redis.UniversalClient, pattern string) {
	ctx := context.Background()
	iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == 1000 {
			c.Unlink(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		c.Unlink(ctx, batch...)
	}
}
