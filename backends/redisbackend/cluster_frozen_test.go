package redisbackend

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends"
)

// TestClusterFrozenNodeCallsEndAtTheirDeadline freezes (SIGSTOP) the
// master of an entry's slot while the epoch, the namespace's keys and the
// fill's tag live on another master, and checks that every call touching
// the frozen master ends within its context: a fill whose compare-and-set
// times out must not then wait for the lease's release without a deadline
// (issue 15 item 1), nor must a lookup, release, delete, TTL, invalidation
// or Clear.
func TestClusterFrozenNodeCallsEndAtTheirDeadline(t *testing.T) {
	longOnly(t) // a cluster of its own, one master stopped: ~3 s
	tc := ownCluster(t, false)
	epochKey := DefaultEpochKey
	b := clusterBackend(t, tc, WithLogger(quietLog))
	ctx := t.Context()

	// A namespace whose stamp, tag index and tag "t" share the epoch's
	// master, and a key whose entry lives on another one.
	home := masterOf(t, b, epochKey)
	var ns, frozenAddr, key string
	for i := 0; ns == ""; i++ {
		if i > 10000 {
			t.Fatal("no namespace with its keys on the epoch's master")
		}
		cand := randomName(t, "cfz")
		if masterOf(t, b, clearKey(cand)) == home && masterOf(t, b, tagIndexKey(cand)) == home {
			ns = cand
		}
	}
	tag := ""
	for i := 0; tag == ""; i++ {
		if masterOf(t, b, tagKey(ns, fmt.Sprint("t", i))) == home {
			tag = fmt.Sprint("t", i)
		}
	}
	for i := 0; key == ""; i++ {
		k := fmt.Sprint("k", i)
		if m := masterOf(t, b, entryKey(ns, k)); m != home {
			key, frozenAddr = k, m
		}
	}
	var frozen *clusterNode
	for _, nd := range tc.nodes {
		if nd.addr == frozenAddr {
			frozen = nd
		}
	}
	// First use (INFO, scripts on every master) before the freeze.
	if _, err := b.Epoch(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := b.Lookup(ctx, ns, key)
	if err != nil || l.Lease == "" {
		t.Fatalf("Lookup = %+v, %v; want a miss with a lease", l, err)
	}

	if err := frozen.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = frozen.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)

	boundedCall(t, "Fill (compare-and-set on the frozen master, then release)", func(ctx context.Context) error {
		return b.Fill(ctx, ns, backends.Fill{Key: key, Entry: backends.Entry{Value: []byte("v"), Deps: []string{tag}}, Since: l.Epoch, Lease: l.Lease})
	})
	boundedCall(t, "Fill without a lease", func(ctx context.Context) error {
		return b.Fill(ctx, ns, backends.Fill{Key: key, Entry: backends.Entry{Value: []byte("v"), Deps: []string{tag}}, Since: l.Epoch})
	})
	boundedCall(t, "Fill without tags", func(ctx context.Context) error {
		return b.Fill(ctx, ns, backends.Fill{Key: key, Entry: backends.Entry{Value: []byte("v")}, Since: l.Epoch, Lease: l.Lease})
	})
	boundedCall(t, "Lookup", func(ctx context.Context) error {
		_, err := b.Lookup(ctx, ns, key)
		return err
	})
	boundedCall(t, "Release", func(ctx context.Context) error {
		return b.Release(ctx, ns, key, l.Lease)
	})
	boundedCall(t, "Delete", func(ctx context.Context) error {
		_, err := b.Delete(ctx, ns, key)
		return err
	})
	boundedCall(t, "TTL", func(ctx context.Context) error {
		_, err := b.TTL(ctx, ns, key)
		return err
	})
	boundedCall(t, "Invalidate (its entry on the frozen master)", func(ctx context.Context) error {
		_, err := b.Invalidate(ctx, ns, tag)
		return err
	})
	boundedCall(t, "Clear", func(ctx context.Context) error {
		_, err := b.Clear(ctx, ns)
		return err
	})
	thaw()
	// Once thawed, the cluster serves again (the background release, if
	// any, has given the lease back or will let it expire).
	if err := tc.waitReady(context.Background(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Clear(ctx, ns); err != nil {
		t.Fatalf("Clear after the thaw: %v", err)
	}
}

// TestClusterFrozenReplicaWaitsEndAtTheirDeadline: where masters have
// replicas, fills register and invalidations and Clear write with WAIT 1
// on each master's connection, which the server holds up to the wait
// timeout (1 s) when the replica does not answer. The caller's context
// still ends each call: a frozen replica costs no more than the timeout.
func TestClusterFrozenReplicaWaitsEndAtTheirDeadline(t *testing.T) {
	longOnly(t) // a cluster of its own with replicas: ~5 s
	tc := ownCluster(t, true)
	b := clusterBackend(t, tc, WithLogger(quietLog))
	ctx := t.Context()
	if _, err := b.Epoch(ctx); err != nil {
		t.Fatal(err)
	}
	ns := clusterNS(t, b, "cfr")
	tag := "t"
	master := masterOf(t, b, tagKey(ns, tag))
	l, err := b.Lookup(ctx, ns, "k")
	if err != nil || l.Lease == "" {
		t.Fatalf("Lookup = %+v, %v; want a miss with a lease", l, err)
	}
	r := freezeReplica(t, tc, master)
	boundedCall(t, "Fill (registration waits for the frozen replica)", func(ctx context.Context) error {
		return b.Fill(ctx, ns, backends.Fill{Key: "k", Entry: backends.Entry{Value: []byte("v"), Deps: []string{tag}}, Since: l.Epoch, Lease: l.Lease})
	})
	boundedCall(t, "Invalidate (stamp waits for the frozen replica)", func(ctx context.Context) error {
		_, err := b.Invalidate(ctx, ns, tag)
		return err
	})
	r.thaw(context.Background())
}
