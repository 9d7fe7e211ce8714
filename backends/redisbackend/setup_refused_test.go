package redisbackend

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/internal/redistest"
)

// A first use whose connection setup the server refuses (a wrong
// password: go-redis then sets no error on the pipeline's commands) fails,
// rather than record the policy and replicas it did not read for the
// Backend's lifetime. It used to connect "successfully" with the assumed
// noeviction policy, so that once the password was right it read and
// filled under allkeys-lru, which may evict tag metadata.
func TestRefusedSetupIsNoConnection(t *testing.T) {
	addr := redistest.Start(t, "--requirepass", "right", "--maxmemory-policy", "allkeys-lru")
	var password atomic.Value
	password.Store("wrong")
	c := redis.NewClient(&redis.Options{
		Addr:                  addr,
		ContextTimeoutEnabled: true,
		CredentialsProvider:   func() (string, string) { return "", password.Load().(string) },
	})
	defer c.Close()
	b := New(c, WithLogger(quietLog))
	defer b.Close()
	ctx := t.Context()
	if _, err := b.Lookup(ctx, "ns", "k"); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("Lookup with a refused password: %v, want the server's WRONGPASS", err)
	}
	password.Store("right")
	if _, err := b.Lookup(ctx, "ns", "k"); !errors.Is(err, ErrUnsafePolicy) {
		t.Fatalf("Lookup once the password is right, under allkeys-lru: %v, want ErrUnsafePolicy", err)
	}
}
