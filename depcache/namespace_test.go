package depcache_test

import (
	"context"
	"errors"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
)

// A prefix the store cannot use (on Redis, one holding ":e:{" collides
// with another namespace's keys) is a configuration error at New, which
// Err and GetOrCreate report, not a failure of every later call.
func TestPrefixTheStoreRefusesIsAConfigError(t *testing.T) {
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	b := redisbackend.New(c)

	m := depcache.New(b, depcache.WithPrefix("app:e:{x"), depcache.WithLogger(quiet))
	t.Cleanup(func() { m.Close() })
	if err := m.Err(); !errors.Is(err, redisbackend.ErrNamespace) {
		t.Fatalf("Err() = %v, want an error wrapping redisbackend.ErrNamespace", err)
	}
	if _, err := m.InvalidateDependency(context.Background(), "users::1"); err == nil {
		t.Error("InvalidateDependency on a misconfigured manager returned nil")
	}

	reg := depcache.NewRegistry()
	if _, err := reg.GetOrCreate("refused", depcache.WithBackend(b), depcache.WithPrefix("app:t:{x"), depcache.WithLogger(quiet)); !errors.Is(err, redisbackend.ErrNamespace) {
		t.Errorf("GetOrCreate with a refused prefix: %v, want an error wrapping redisbackend.ErrNamespace", err)
	}

	ok := depcache.New(b, depcache.WithPrefix("app:{x}"), depcache.WithLogger(quiet))
	t.Cleanup(func() { ok.Close() })
	if err := ok.Err(); err != nil {
		t.Errorf("a prefix with other braces: Err() = %v, want nil", err)
	}
}
