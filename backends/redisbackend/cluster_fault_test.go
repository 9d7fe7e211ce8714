package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
)

// Faults on the Cluster fill path (issue 13): each test holds a fill
// between two of its steps, or a replica behind, and checks that what
// happens meanwhile makes the fill refuse and leave nothing readable.

// beforeScript is a go-redis hook that runs do once, right before the
// first command or pipeline that runs script s is sent: a hold in the
// middle of a Cluster fill, between two of its steps.
type beforeScript struct {
	sha  string
	once sync.Once
	do   func()
}

func (h *beforeScript) fire(cmds ...redis.Cmder) {
	for _, c := range cmds {
		if a := c.Args(); len(a) > 1 && a[0] == "evalsha" && a[1] == h.sha {
			h.once.Do(h.do)
			return
		}
	}
}

func (h *beforeScript) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *beforeScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.fire(cmd)
		return next(ctx, cmd)
	}
}

func (h *beforeScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.fire(cmds...)
		return next(ctx, cmds)
	}
}

// fired reports whether the hold ran (and disarms it).
func (h *beforeScript) fired() bool {
	ran := true
	h.once.Do(func() { ran = false })
	return ran
}

// ownEpochKey returns an epoch key of the test's own (so that it may
// delete it on a shared cluster), removed with its pruned key at the end.
func ownEpochKey(t *testing.T, tc *testCluster) string {
	key := randomName(t, "depcache:epoch:")
	t.Cleanup(func() {
		c := tc.client()
		defer c.Close()
		c.Del(context.Background(), key)
		c.Del(context.Background(), prunedKeyOf(key))
	})
	return key
}

// assertNotServed fails the test if key is readable in ns.
func assertNotServed(t *testing.T, b *Backend, ns, key string) {
	t.Helper()
	l, err := b.Lookup(t.Context(), ns, key)
	if err != nil {
		t.Fatalf("Lookup(%q): %v", key, err)
	}
	if l.Found {
		t.Errorf("Lookup(%q) serves %q, written before the invalidation that returned", key, l.Entry.Value)
	}
	if l.Lease != "" {
		_ = b.Release(t.Context(), ns, key, l.Lease)
	}
}

// TestClusterEraWindow loses the epoch and recreates it (a new era) and
// invalidates the fill's tag while the fill is held before its
// registration: the invalidation's stamp is of the new era, which a check
// of the fill's era ignores, and the invalidation finds no registration to
// unlink. The fill must be refused because the era changed since its
// lookup (issue 13 item 8).
func TestClusterEraWindow(t *testing.T) {
	tc := sharedCluster(t)
	for _, leased := range []bool{true, false} {
		t.Run(fmt.Sprint("leased=", leased), func(t *testing.T) {
			ctx := t.Context()
			epochKey := ownEpochKey(t, tc)
			other := clusterBackend(t, tc, WithEpochKey(epochKey))
			ns := clusterNS(t, other, "cera")
			hook := &beforeScript{sha: clusterScripts[clusterRegister].Hash()}
			hook.do = func() {
				ctx := context.WithoutCancel(ctx)
				if err := other.c.Del(ctx, epochKey).Err(); err != nil {
					t.Errorf("delete the epoch: %v", err)
				}
				if _, err := other.Invalidate(ctx, ns, "t"); err != nil {
					t.Errorf("Invalidate: %v", err)
				}
			}
			b := New(clusterClient(t, tc, hook), WithLogger(testLogger(t)), WithEpochKey(epochKey))
			t.Cleanup(func() { _ = b.Close() })

			l, err := b.Lookup(ctx, ns, "k")
			if err != nil || l.Found || l.Lease == "" {
				t.Fatalf("Lookup = %+v, %v; want a miss with a lease", l, err)
			}
			f := backends.Fill{Key: "k", Entry: backends.Entry{Value: []byte("before the write"), Deps: []string{"t"}}, Since: l.Epoch}
			if leased {
				f.Lease = l.Lease
			} else {
				_ = b.Release(ctx, ns, "k", l.Lease)
			}
			err = b.Fill(ctx, ns, f)
			if !hook.fired() {
				t.Fatal("the hold never ran: the fill's steps changed")
			}
			if !errors.Is(err, backends.ErrStale) {
				t.Errorf("Fill across a lost epoch and an invalidation = %v, want ErrStale", err)
			} else {
				t.Log(err)
			}
			assertNotServed(t, other, ns, "k")
		})
	}
}

// TestClusterPrunedStamp holds a fill before its registration while an
// invalidation stamps its tag and the stamp, once older than the prune
// age, is pruned (by Prune, and by the trim of other invalidations): a fill
// delayed in transit past the bound meets no stamp, and must be refused by
// the server all the same (issue 13 item 4; items 6 and 7 are the same
// hole: the age is no longer what keeps a stamp that could refuse a fill).
func TestClusterPrunedStamp(t *testing.T) {
	tc := sharedCluster(t)
	for _, prune := range []string{"Prune", "trim"} {
		t.Run(prune, func(t *testing.T) {
			ctx := t.Context()
			epochKey := ownEpochKey(t, tc)
			const age = 20 * time.Millisecond
			other := clusterBackend(t, tc, WithEpochKey(epochKey), WithMaxFillAge(age))
			ns := clusterNS(t, other, "cpruned")
			tk := tagKey(ns, "t")
			hook := &beforeScript{sha: clusterScripts[clusterRegister].Hash()}
			hook.do = func() {
				ctx := context.WithoutCancel(ctx)
				if _, err := other.Invalidate(ctx, ns, "t"); err != nil {
					t.Errorf("Invalidate: %v", err)
				}
				err := poll(10*time.Second, func() bool {
					if prune == "Prune" {
						if err := other.Prune(ctx, ns); err != nil {
							t.Errorf("Prune: %v", err)
						}
					} else if _, err := other.Invalidate(ctx, ns, "unrelated"); err != nil {
						t.Errorf("Invalidate: %v", err)
					}
					return other.c.Exists(ctx, tk).Val() == 0
				})
				if err != nil {
					t.Errorf("the stamp was never pruned: %v", err)
				}
			}
			b := New(clusterClient(t, tc, hook), WithLogger(testLogger(t)), WithEpochKey(epochKey), WithMaxFillAge(age),
				WithLeaseTTL(time.Minute)) // the lease outlives the hold: only a stamp may refuse
			t.Cleanup(func() { _ = b.Close() })

			l, err := b.Lookup(ctx, ns, "k")
			if err != nil || l.Found || l.Lease == "" {
				t.Fatalf("Lookup = %+v, %v; want a miss with a lease", l, err)
			}
			// The client's own age check passes: the delay is after it.
			err = b.Fill(ctx, ns, backends.Fill{Key: "k", Entry: backends.Entry{Value: []byte("before the write"), Deps: []string{"t"}}, Since: l.Epoch, Lease: l.Lease})
			if !hook.fired() {
				t.Fatal("the hold never ran: the fill's steps changed")
			}
			if !errors.Is(err, backends.ErrStale) {
				t.Errorf("Fill delayed past a pruned stamp = %v, want ErrStale", err)
			} else {
				t.Log(err)
			}
			assertNotServed(t, other, ns, "k")
		})
	}
}

// TestClusterReplicaFaults runs a cluster with a replica per master and
// promotes a replica that missed writes (CLUSTER FAILOVER TAKEOVER of a
// replica held by CLIENT PAUSE WRITE, and stopped by SIGSTOP so that it
// acknowledges nothing):
//
//   - reads: a master the fill's registration step only reads from is not
//     waited for, so its frozen replica refuses nothing.
//   - registration: the replica of a fill's tag master misses the fill's
//     registration. The fill must be refused (the registration was not
//     acknowledged), so that the invalidation after the failover, which
//     cannot find it, has nothing to remove (issue 13 item 1).
//   - clear: the replica of an entry's master misses Clear's unlink. Clear
//     must fail and keep the registration, so that the invalidation after
//     the failover (which brings the entry back) removes the entry.
//   - epoch: the replica of the epoch's master misses a bump that a lookup
//     read (its invalidation failed with ErrNotReplicated). After the
//     failover the next invalidation must not issue that number again: the
//     fill that started from it must be refused (issue 13 item 2).
func TestClusterReplicaFaults(t *testing.T) {
	longOnly(t) // a cluster of its own with replicas, and 3 failovers: ~4 s
	tc := ownCluster(t, true)
	c := clusterClient(t, tc)
	b := New(c, WithLogger(testLogger(t)), WithWaitTimeout(300*time.Millisecond))
	t.Cleanup(func() { _ = b.Close() })
	ctx := t.Context()
	st, err := b.connected(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.replicas < 1 {
		t.Fatalf("replicas = %d, want 1", st.replicas)
	}
	mustEpoch(t, b)
	// invalidate invalidates tag once the cluster has settled after a
	// failover: it retries (as depcache does) while a step is not
	// acknowledged, since a replica that has just rejoined its new master
	// may still be syncing.
	patient := New(c, WithLogger(testLogger(t)), WithWaitTimeout(2*time.Second))
	t.Cleanup(func() { _ = patient.Close() })
	invalidate := func(ns, tag string) int {
		t.Helper()
		var n int
		var err error
		if perr := poll(20*time.Second, func() bool {
			n, err = patient.Invalidate(ctx, ns, tag)
			return !errors.Is(err, ErrNotReplicated)
		}); perr != nil || err != nil {
			t.Fatalf("Invalidate after the failover: %v (%v)", err, perr)
		}
		return n
	}
	// pick returns the first of prefix0, prefix1, ... whose key (by kind)
	// is not served by any master in avoid.
	pick := func(ns, prefix string, key func(ns, name string) string, avoid ...string) string {
		t.Helper()
		for i := range 100 {
			name := fmt.Sprint(prefix, i)
			m := masterOf(t, b, key(ns, name))
			ok := true
			for _, a := range avoid {
				ok = ok && m != a
			}
			if ok {
				return name
			}
		}
		t.Fatalf("no %s on a master other than %v", prefix, avoid)
		return ""
	}

	t.Run("reads", func(t *testing.T) {
		// A master the registration step only reads from (the namespace
		// stamp's) is not waited for: its frozen replica refuses nothing.
		var ns, tag string
		for i := 0; ns == ""; i++ {
			cand := fmt.Sprint(randomName(t, "frd"), i)
			m := masterOf(t, b, clearKey(cand))
			if m != masterOf(t, b, tagIndexKey(cand)) {
				ns = cand
				tag = pick(ns, "t", tagKey, m)
			}
		}
		r := freezeReplica(t, tc, masterOf(t, b, clearKey(ns)))
		leasedFill(t, b, ns, "k", "v", tag)
		r.thaw(ctx)
	})

	t.Run("registration", func(t *testing.T) {
		ns := randomName(t, "frg")
		tag := pick(ns, "t", tagKey, masterOf(t, b, b.cfg.epochKey))
		tagMaster := masterOf(t, b, tagKey(ns, tag))
		key := pick(ns, "k", entryKey, tagMaster)
		l, err := b.Lookup(ctx, ns, key)
		if err != nil || l.Lease == "" {
			t.Fatalf("Lookup = %+v, %v; want a miss with a lease", l, err)
		}
		r := freezeReplica(t, tc, tagMaster)
		err = b.Fill(ctx, ns, backends.Fill{Key: key, Entry: backends.Entry{Value: []byte("before the write"), Deps: []string{tag}}, Since: l.Epoch, Lease: l.Lease})
		if !errors.Is(err, backends.ErrStale) || !errors.Is(err, ErrNotReplicated) {
			t.Errorf("Fill whose registration no replica acknowledged = %v, want ErrStale and ErrNotReplicated", err)
		} else {
			t.Log(err)
		}
		assertNotServed(t, b, ns, key)

		takeover(t, tc, b, r, tagKey(ns, tag))
		kept := c.HExists(ctx, tagKey(ns, tag), entryKey(ns, key)).Val()
		t.Logf("the promoted replica holds the registration: %v", kept)
		n := invalidate(ns, tag)
		t.Logf("the invalidation after the failover removed %d entries", n)
		assertNotServed(t, b, ns, key)
	})

	t.Run("clear", func(t *testing.T) {
		// Clear unlinks an entry whose master's replica misses the unlink:
		// Clear must fail and keep the entry's registration, so that after
		// the failover brings the entry back an invalidation removes it.
		epochMaster := masterOf(t, b, b.cfg.epochKey)
		var ns, entryMaster string
		for i := 0; entryMaster == ""; i++ {
			ns = fmt.Sprint(randomName(t, "fcl"), i)
			stepped := map[string]bool{epochMaster: true, masterOf(t, b, clearKey(ns)): true, masterOf(t, b, tagIndexKey(ns)): true}
			if len(stepped) < 3 {
				key := pick(ns, "k", entryKey, epochMaster, masterOf(t, b, clearKey(ns)), masterOf(t, b, tagIndexKey(ns)))
				entryMaster = masterOf(t, b, entryKey(ns, key))
			}
		}
		key := pick(ns, "k", entryKey, epochMaster, masterOf(t, b, clearKey(ns)), masterOf(t, b, tagIndexKey(ns)))
		tag := pick(ns, "t", tagKey, entryMaster)
		leasedFill(t, b, ns, key, "before the write", tag)
		r := freezeReplica(t, tc, entryMaster)
		_, err := b.Clear(ctx, ns)
		if !errors.Is(err, ErrNotReplicated) {
			t.Errorf("Clear with the entry's replica frozen = %v, want ErrNotReplicated", err)
		}
		if !c.HExists(ctx, tagKey(ns, tag), entryKey(ns, key)).Val() {
			t.Errorf("Clear removed the registration of an entry whose unlink no replica acknowledged")
		}
		takeover(t, tc, b, r, entryKey(ns, key))
		t.Logf("the entry is back after the failover: %v", c.Exists(ctx, entryKey(ns, key)).Val() == 1)
		t.Logf("the invalidation after the failover removed %d entries", invalidate(ns, tag))
		assertNotServed(t, b, ns, key)
	})

	t.Run("prune", func(t *testing.T) {
		// An entry removed (Delete) on a master whose replica misses the
		// removal: Prune must keep its registration, so that when a
		// failover brings the entry back an invalidation still finds it.
		ns := randomName(t, "fpr")
		epochMaster := masterOf(t, b, b.cfg.epochKey)
		key := pick(ns, "k", entryKey, epochMaster, masterOf(t, b, tagIndexKey(ns)))
		entryMaster := masterOf(t, b, entryKey(ns, key))
		tag := pick(ns, "t", tagKey, entryMaster)
		leasedFill(t, b, ns, key, "before the write", tag)
		r := freezeReplica(t, tc, entryMaster)
		if n, err := b.Delete(ctx, ns, key); err != nil || n != 1 {
			t.Fatalf("Delete = %d, %v; want 1", n, err)
		}
		if err := b.Prune(ctx, ns); !errors.Is(err, ErrNotReplicated) {
			t.Errorf("Prune with the entry's replica frozen = %v, want ErrNotReplicated", err)
		}
		if !c.HExists(ctx, tagKey(ns, tag), entryKey(ns, key)).Val() {
			t.Errorf("Prune removed the registration of an entry whose removal no replica acknowledged")
		}
		takeover(t, tc, b, r, entryKey(ns, key))
		t.Logf("the entry is back after the failover: %v", c.Exists(ctx, entryKey(ns, key)).Val() == 1)
		t.Logf("the invalidation after the failover removed %d entries", invalidate(ns, tag))
		assertNotServed(t, b, ns, key)
	})

	t.Run("epoch", func(t *testing.T) {
		ns := randomName(t, "fep")
		epochMaster := masterOf(t, b, b.cfg.epochKey)
		tag := pick(ns, "t", tagKey, epochMaster)
		key := pick(ns, "k", entryKey, epochMaster)
		r := freezeReplica(t, tc, epochMaster)
		_, err := b.Invalidate(ctx, ns, tag)
		if !errors.Is(err, ErrNotReplicated) {
			t.Fatalf("Invalidate with the epoch's replica frozen = %v, want ErrNotReplicated", err)
		}
		l, err := b.Lookup(ctx, ns, key)
		if err != nil || l.Lease == "" {
			t.Fatalf("Lookup = %+v, %v; want a miss with a lease", l, err)
		}
		takeover(t, tc, b, r, b.cfg.epochKey)
		t.Logf("epoch read by the lookup %v; on the promoted replica %q", l.Epoch, c.Get(ctx, b.cfg.epochKey).Val())
		invalidate(ns, tag)
		t.Logf("epoch after the invalidation: %q", c.Get(ctx, b.cfg.epochKey).Val())
		err = b.Fill(ctx, ns, backends.Fill{Key: key, Entry: backends.Entry{Value: []byte("before the write"), Deps: []string{tag}}, Since: l.Epoch, Lease: l.Lease})
		if !errors.Is(err, backends.ErrStale) {
			t.Errorf("Fill from an epoch the failover rolled back = %v, want ErrStale", err)
		} else {
			t.Log(err)
		}
		assertNotServed(t, b, ns, key)
	})
}

// frozenReplica is a replica held behind its master: CLIENT PAUSE WRITE
// (it applies nothing more of the replication stream) and SIGSTOP (it
// acknowledges nothing either) until thawed.
type frozenReplica struct {
	node    *clusterNode
	stopped bool
}

// freezeReplica freezes the replica of the master at addr; the test's end
// thaws it if the test did not.
func freezeReplica(t *testing.T, tc *testCluster, master string) *frozenReplica {
	t.Helper()
	cmd := replicaOf(t, tc, master)
	var r *frozenReplica
	for _, nd := range tc.nodes {
		if nd.cmd == cmd {
			r = &frozenReplica{node: nd}
		}
	}
	nc := redis.NewClient(&redis.Options{Addr: r.node.addr})
	defer nc.Close()
	if err := nc.Do(t.Context(), "CLIENT", "PAUSE", 120000, "WRITE").Err(); err != nil {
		t.Fatalf("CLIENT PAUSE on %s: %v", r.node.addr, err)
	}
	if err := r.node.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	r.stopped = true
	t.Cleanup(func() { r.thaw(context.Background()) })
	return r
}

// cont resumes the process; it stays paused for writes.
func (r *frozenReplica) cont() {
	if r.stopped && !r.node.dead {
		_ = r.node.cmd.Process.Signal(syscall.SIGCONT)
		r.stopped = false
	}
}

// thaw resumes the process and lifts the pause.
func (r *frozenReplica) thaw(ctx context.Context) {
	r.cont()
	if r.node.dead {
		return
	}
	nc := redis.NewClient(&redis.Options{Addr: r.node.addr})
	defer nc.Close()
	_ = nc.Do(ctx, "CLIENT", "UNPAUSE").Err()
}

// takeover promotes the frozen replica r (CLUSTER FAILOVER TAKEOVER, still
// paused, so that it never applies what it missed), thaws it, and waits
// until the cluster is ready again and b's client sends key to it.
func takeover(t *testing.T, tc *testCluster, b *Backend, r *frozenReplica, key string) {
	t.Helper()
	ctx := t.Context()
	r.cont()
	nc := redis.NewClient(&redis.Options{Addr: r.node.addr})
	defer nc.Close()
	if err := nc.Do(ctx, "CLUSTER", "FAILOVER", "TAKEOVER").Err(); err != nil {
		t.Fatalf("CLUSTER FAILOVER TAKEOVER on %s: %v", r.node.addr, err)
	}
	if err := poll(10*time.Second, func() bool {
		info, err := nc.Info(ctx, "replication").Result()
		return err == nil && infoField(info, "role") == "master"
	}); err != nil {
		t.Fatalf("%s never became a master: %v", r.node.addr, err)
	}
	r.thaw(ctx)
	if err := tc.waitReady(ctx, 30*time.Second); err != nil {
		t.Fatalf("after the takeover: %v", err)
	}
	cc := b.c.(*redis.ClusterClient)
	if err := poll(10*time.Second, func() bool {
		cc.ReloadState(ctx)
		m, err := cc.MasterForKey(ctx, key)
		return err == nil && m.Options().Addr == r.node.addr
	}); err != nil {
		t.Fatalf("the client never sent %s to the promoted %s: %v", key, r.node.addr, err)
	}
}

// TestFloorCover checks which stamps a raised floor lets a tag's script
// drop: another era's, and the current era's up to the floor.
func TestFloorCover(t *testing.T) {
	cur := floor{era: "a.s", n: 7, ok: true}
	for _, c := range []struct {
		f     floor
		stamp string
		want  bool
	}{
		{cur, "a.s:7:100", true},
		{cur, "a.s:6:100", true},
		{cur, "a.s:8:100", false},                                // newer than the floor: a fill it refuses may be in flight
		{cur, "b.s:99:100", true},                                // another era: its fills fail the epoch check
		{cur, "", false},                                         // no stamp
		{cur, "garbage", true},                                   // unreadable: settle drops it anyway
		{floor{}, "a.s:1:100", false},                            // the floor was not raised
		{floor{era: "a.s", n: -1, ok: true}, "a.s:1:100", false}, // no floor in this era
		{floor{era: "", n: -1, ok: true}, "a.s:9:100", true},     // no epoch: every fill is refused
	} {
		if got := c.f.cover(c.stamp) == c.stamp && c.stamp != ""; got != c.want {
			t.Errorf("%+v.cover(%q) = %q, want covered %v", c.f, c.stamp, c.f.cover(c.stamp), c.want)
		}
	}
}

// TestClusterPrunedStampOlderSince fills with a Since older than its own
// start, as a parent does that took a child hit's older Since (issue 13
// item 7), after the stamp of an invalidation between that Since and the
// fill was pruned (by age: what a server clock stepped forward does at
// once, item 6). The fill's own age is small, so only the server can
// refuse it.
func TestClusterPrunedStampOlderSince(t *testing.T) {
	tc := sharedCluster(t)
	ctx := t.Context()
	epochKey := ownEpochKey(t, tc)
	const age = 20 * time.Millisecond
	b := clusterBackend(t, tc, WithEpochKey(epochKey), WithMaxFillAge(age), WithLeaseTTL(time.Minute))
	ns := clusterNS(t, b, "colder")
	child := mustEpoch(t, b) // the child's Since, read before the write
	if _, err := b.Invalidate(ctx, ns, "t"); err != nil {
		t.Fatal(err)
	}
	if err := poll(10*time.Second, func() bool {
		if err := b.Prune(ctx, ns); err != nil {
			t.Fatalf("Prune: %v", err)
		}
		return b.c.Exists(ctx, tagKey(ns, "t")).Val() == 0
	}); err != nil {
		t.Fatalf("the stamp was never pruned: %v", err)
	}
	// The parent starts now, hits the child and takes its Since.
	l, err := b.Lookup(ctx, ns, "parent")
	if err != nil || l.Lease == "" {
		t.Fatalf("Lookup = %+v, %v; want a miss with a lease", l, err)
	}
	err = b.Fill(ctx, ns, backends.Fill{Key: "parent", Entry: backends.Entry{Value: []byte("from the child's old data"), Deps: []string{"t"}}, Since: child, Lease: l.Lease})
	if !errors.Is(err, backends.ErrStale) {
		t.Errorf("Fill with a Since older than a pruned stamp = %v, want ErrStale", err)
	} else {
		t.Log(err)
	}
	assertNotServed(t, b, ns, "parent")
	// A fill from after the stamp passes.
	leasedFill(t, b, ns, "parent", "new", "t")
}

// nodeHook is a go-redis hook on one node's client, calling around with
// every pipeline sent to that node: a cluster pipeline reaches each
// master as one such pipeline, in parallel.
type nodeHook struct {
	around func(cmds []redis.Cmder, next func())
}

func (h nodeHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h nodeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h nodeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var err error
		h.around(cmds, func() { err = next(ctx, cmds) })
		return err
	}
}

// runs reports whether cmds run script s with first key key ("" for any).
func runs(cmds []redis.Cmder, s *script, key string) bool {
	for _, c := range cmds {
		if a := c.Args(); len(a) > 3 && a[0] == "evalsha" && a[1] == s.Hash() && (key == "" || a[3] == key) {
			return true
		}
	}
	return false
}

// TestClusterForeignClearBetweenCheckAndRegistration clears a namespace a
// fill depends on (through one of its tags, backends.ForeignDep) after the
// fill has checked that namespace's stamp and before its registration
// under the tag is written: the Clear stamps after the check, and drains
// the tag hash before the registration is there. The fill must be refused
// all the same: a namespace stamp the fill does not see when it is
// registered is one whose Clear finds the registration.
func TestClusterForeignClearBetweenCheckAndRegistration(t *testing.T) {
	tc := sharedCluster(t)
	ctx := t.Context()
	other := clusterBackend(t, tc)
	ns := clusterNS(t, other, "cfa")
	var ns2 string
	for ns2 == "" || masterOf(t, other, clearKey(ns2)) == masterOf(t, other, tagKey(ns2, "t")) {
		ns2 = randomName(t, "cfb")
	}
	clearAtEnd(t, other, ns2)

	checked := make(chan struct{}) // the register step's check of ns2's stamp returned
	var checkOnce, holdOnce sync.Once
	var checkInStep bool // the register step also checks ns2's stamp
	cluster := &beforeScript{sha: clusterScripts[clusterRegister].Hash()}
	c := tc.client(cluster)
	t.Cleanup(func() { _ = c.Close() })
	cluster.do = func() {}
	c.AddHook(nodeHook{around: func(cmds []redis.Cmder, next func()) {
		if runs(cmds, clusterScripts[clusterRegister], "") {
			checkInStep = runs(cmds, clusterScripts[clusterCheckStamps], clearKey(ns2))
		}
		next()
	}})
	c.OnNewNode(func(n *redis.Client) {
		n.AddHook(nodeHook{around: func(cmds []redis.Cmder, next func()) {
			if runs(cmds, clusterScripts[clusterRegister], "") {
				holdOnce.Do(func() {
					if checkInStep {
						<-checked
					}
					if _, err := other.Clear(context.WithoutCancel(ctx), ns2); err != nil {
						t.Errorf("Clear: %v", err)
					}
				})
			}
			next()
			if runs(cmds, clusterScripts[clusterCheckStamps], clearKey(ns2)) {
				checkOnce.Do(func() { close(checked) })
			}
		}})
	})
	b := New(c, WithLogger(testLogger(t)))
	t.Cleanup(func() { _ = b.Close() })

	l, err := b.Lookup(ctx, ns, "k")
	if err != nil || l.Lease == "" {
		t.Fatalf("Lookup = %+v, %v; want a miss with a lease", l, err)
	}
	err = b.Fill(ctx, ns, backends.Fill{Key: "k", Entry: backends.Entry{Value: []byte("before the Clear"), Deps: []string{backends.ForeignDep(ns2, "t")}}, Since: l.Epoch, Lease: l.Lease})
	if !cluster.fired() {
		t.Fatal("the fill sent no registration")
	}
	t.Logf("the registration step checked the namespace stamp too: %v", checkInStep)
	if !errors.Is(err, backends.ErrStale) {
		t.Errorf("Fill across a Clear of a namespace it depends on = %v, want ErrStale", err)
	} else {
		t.Log(err)
	}
	assertNotServed(t, b, ns, "k")
}
