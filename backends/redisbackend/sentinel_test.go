package redisbackend

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/internal/redistest"
)

// Sentinel works through the same UniversalClient: a failover client is a
// standalone client whose master Sentinel names. The test starts a master,
// a replica and a Sentinel of its own, checks that invalidations wait for
// the replica, forces a failover, and checks that an invalidation that had
// returned is not undone and that the store keeps working on the new
// master.
func TestSentinel(t *testing.T) {
	longOnly(t)
	ctx := context.Background()
	master := redistest.Start(t)
	replica := redistest.Start(t, "--replicaof", strings.Replace(master, ":", " ", 1))
	sentinel := redistest.StartSentinel(t, "depcache", master)

	waitFor(t, "the replica to sync", func() bool {
		c := redis.NewClient(&redis.Options{Addr: replica})
		defer c.Close()
		return strings.Contains(c.Info(ctx, "replication").Val(), "master_link_status:up")
	})
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "depcache", SentinelAddrs: []string{sentinel}, ContextTimeoutEnabled: true})
	defer c.Close()
	b := New(c, WithLogger(testLogger(t)))
	ns := "sentinel"

	fill := func(key, tag string) {
		t.Helper()
		l, err := b.Lookup(ctx, ns, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Fill(ctx, ns, backends.Fill{Key: key, Entry: backends.Entry{Value: []byte(key), Deps: []string{tag}}, Since: l.Epoch}); err != nil {
			t.Fatal(err)
		}
	}
	fill("a", "gone")
	fill("b", "kept")
	if n, err := b.Invalidate(ctx, ns, "gone"); n != 1 || err != nil {
		t.Fatalf("Invalidate through Sentinel = %d, %v", n, err)
	}
	if b.srv.Load().replicas == 0 {
		t.Fatal("the backend did not see the replica, so it did not WAIT")
	}

	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel})
	defer sc.Close()
	if err := sc.Failover(ctx, "depcache").Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	waitFor(t, "the replica to be promoted", func() bool {
		addr, err := sc.GetMasterAddrByName(ctx, "depcache").Result()
		return err == nil && addr[0]+":"+addr[1] == replica
	})
	waitFor(t, "the client to reach the new master", func() bool {
		return c.Set(ctx, "sentinel:probe", 1, time.Minute).Err() == nil
	})
	// Invalidations wait for a replica: the old master rejoins as one.
	waitFor(t, "the old master to replicate the new one", func() bool {
		nc := redis.NewClient(&redis.Options{Addr: replica})
		defer nc.Close()
		return strings.Contains(nc.Info(ctx, "replication").Val(), "state=online")
	})

	if l, err := b.Lookup(ctx, ns, "a"); err != nil || l.Found {
		t.Fatalf("after failover an invalidated entry is back: found=%v err=%v", l.Found, err)
	}
	if l, err := b.Lookup(ctx, ns, "b"); err != nil || !l.Found {
		t.Fatalf("after failover a kept entry is lost: found=%v err=%v", l.Found, err)
	}
	// The epoch on the new master was minted in the old master's
	// replication history, and replicated: a fill from it passes (the
	// promoted replica holds every stamp up to it). The first
	// invalidation there starts a new era, so that no epoch a reader saw
	// on the old master (perhaps never replicated) is issued again: a
	// fill begun before it is refused.
	epochBefore := c.Get(ctx, b.cfg.epochKey).Val()
	fill("c", "kept")
	l, err := b.Lookup(ctx, ns, "d")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := b.Invalidate(ctx, ns, "kept"); n != 2 || err != nil {
		t.Fatalf("Invalidate on the new master = %d, %v; want 2", n, err)
	}
	if after := c.Get(ctx, b.cfg.epochKey).Val(); epochEra(after) == epochEra(epochBefore) {
		t.Errorf("epoch after the first invalidation on the new master %q: still the era of %q", after, epochBefore)
	}
	err = b.Fill(ctx, ns, backends.Fill{Key: "d", Entry: backends.Entry{Value: []byte("d"), Deps: []string{"kept"}}, Since: l.Epoch})
	if !errors.Is(err, backends.ErrStale) {
		t.Fatalf("fill from the old history's epoch %v after an invalidation on the new master: %v, want ErrStale", l.Epoch, err)
	}
}

// waitFor polls cond until it holds, failing after 30s: for processes
// outside the test's control (replication, Sentinel), not for
// synchronisation between the test's own goroutines.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
