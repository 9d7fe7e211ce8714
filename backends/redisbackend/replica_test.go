package redisbackend

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/internal/redistest"
)

// startRedis starts a redis-server of the test's own on a free loopback
// port and returns its address and process; the test's end kills it. It
// skips the test when redis-server is not installed.
func startRedis(t *testing.T, args ...string) (string, *os.Process) {
	t.Helper()
	return redistest.StartProcess(t, append([]string{"--repl-diskless-sync-delay", "0"}, args...)...)
}

// eventually polls cond until it holds, failing the test after 10 seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out waiting: %s", what)
		case <-tick.C:
		}
	}
}

// TestReplicaWait runs a master and a replica of the test's own: an
// invalidation waits for the replica in the same round trip, and fails with
// ErrNotReplicated when the replica does not acknowledge it.
func TestReplicaWait(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server processes")
	}
	master, _ := startRedis(t)
	_, port, _ := net.SplitHostPort(master)
	replica, replicaProc := startRedis(t, "--replicaof", "127.0.0.1", port)
	rc := newClient(t, &redis.Options{Addr: replica}, nil)
	inSync(t, newClient(t, &redis.Options{Addr: master}, nil))

	var cnt counter
	c := newClient(t, &redis.Options{Addr: master}, []redis.Hook{&cnt})
	b := New(c, WithLogger(testLogger(t)), WithWaitTimeout(300*time.Millisecond), WithChunkSize(50))
	t.Cleanup(func() { _ = b.Close() })
	ctx := t.Context()
	warm(t, b)
	if st := b.srv.Load(); st.replicas != 1 {
		t.Fatalf("replicas = %d, want 1", st.replicas)
	}
	// Each step is tried again, from its setup, when a loaded machine
	// starves the replica past the 300 ms WAIT (ErrNotReplicated), as the
	// manager would retry it: the counts are those of the attempt that
	// the replica acknowledged.
	acked := func(what string, setup func(), want int, op func() (int, error)) {
		t.Helper()
		for attempt := 1; ; attempt++ {
			setup()
			cnt.reset()
			n, err := op()
			if err == nil {
				if n != want {
					t.Fatalf("%s = %d, want %d", what, n, want)
				}
				return
			}
			if !errors.Is(err, ErrNotReplicated) || attempt == 20 {
				t.Fatalf("%s (attempt %d) = %d, %v", what, attempt, n, err)
			}
		}
	}
	acked("Invalidate", func() { fill(t, b, "ns", "k", "v", 0, "t") }, 1, func() (int, error) { return b.Invalidate(ctx, "ns", "t") })
	if n, sent := cnt.reset(); n != 1 {
		t.Errorf("Invalidate with a replica: %d round trips %q, want 1 (script and WAIT pipelined)", n, sent)
	}
	// The replica has it.
	if v := rc.HGet(ctx, tagKey("ns", "t"), "~v").Val(); v == "" {
		t.Errorf("replica has no stamp after the invalidation returned")
	}

	// A big tag waits at every step.
	acked("Invalidate(big)", func() { populate(t, b, "ns", 120, "big") }, 120, func() (int, error) { return b.Invalidate(ctx, "ns", "big") })

	// A frozen replica acknowledges nothing: the invalidation is applied on
	// the master but reported as failed, to be retried.
	// The big tag is still drained in full, without waiting at every step.
	fill(t, b, "ns", "solo", "v", 0, "t")
	populate(t, b, "ns", 120, "big")
	if err := replicaProc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer replicaProc.Signal(syscall.SIGCONT)
	start := time.Now()
	n, err := b.Invalidate(ctx, "ns", "t", "big")
	took := time.Since(start)
	if !errors.Is(err, ErrNotReplicated) {
		t.Errorf("Invalidate with the replica frozen: %v, want ErrNotReplicated", err)
	}
	if n != 121 {
		t.Errorf("Invalidate with the replica frozen removed %d, want 121", n)
	}
	if took > 900*time.Millisecond {
		t.Errorf("Invalidate with the replica frozen took %v: it waited at every step", took)
	}
	if l, err := b.Lookup(ctx, "ns", "solo"); err != nil || l.Found {
		t.Errorf("Lookup after the unacknowledged invalidation = %+v, %v; want a miss", l, err)
	}
	if keys := keysOf(t, b, "ns", "e"); len(keys) != 0 {
		t.Errorf("entries left after the unacknowledged invalidation: %d", len(keys))
	}
}
