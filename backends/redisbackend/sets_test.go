package redisbackend

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A member a reader adds must survive a failover, like an invalidation:
// with a replica, AddMember returns once the replica has it, and fails
// with ErrNotReplicated when the replica acknowledges nothing.
func TestAddMemberWaitsForReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server processes")
	}
	master, _ := startRedis(t)
	_, port, _ := net.SplitHostPort(master)
	replica, replicaProc := startRedis(t, "--replicaof", "127.0.0.1", port)
	rc := newClient(t, &redis.Options{Addr: replica}, nil)
	inSync(t, newClient(t, &redis.Options{Addr: master}, nil))
	c := newClient(t, &redis.Options{Addr: master}, nil)
	b := New(c, WithLogger(testLogger(t)), WithWaitTimeout(300*time.Millisecond))
	t.Cleanup(func() { _ = b.Close() })
	ctx := t.Context()
	warm(t, b)

	// Tried again on ErrNotReplicated, as its caller would: a loaded
	// machine may starve the replica past the 300 ms WAIT (seen in CI).
	for attempt := 1; ; attempt++ {
		in, err := b.AddMember(ctx, "ns", "schemes:posts", "author_id", 4)
		if err == nil && in {
			break
		}
		if !errors.Is(err, ErrNotReplicated) || attempt == 20 {
			t.Fatalf("AddMember (attempt %d) = %v, %v; want true", attempt, in, err)
		}
	}
	if !rc.SIsMember(ctx, setKey("ns", "schemes:posts"), "author_id").Val() {
		t.Errorf("the replica has not the member AddMember returned")
	}

	if err := replicaProc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer replicaProc.Signal(syscall.SIGCONT)
	if _, err := b.AddMember(ctx, "ns", "schemes:posts", "title", 4); !errors.Is(err, ErrNotReplicated) {
		t.Errorf("AddMember with the replica frozen: %v, want ErrNotReplicated", err)
	}
}
