package depcache_test

import (
	"errors"
	"testing"

	"github.com/alicebob/miniredis/v2"

	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
)

// GetOrCreate without WithBackend builds its manager on the environment's
// backend as New does on one given: WithLocalCache starts the tier (it was
// silently off: the Quick start's GetOrCreate with WithLocalCache served
// every hit from Redis, LocalCacheEnabled false, nothing logged), and a
// prefix the store refuses is an error (it was accepted, and every fill
// failed with a logged warning).
func TestGetOrCreateFromTheEnvironmentIsConfiguredLikeNew(t *testing.T) {
	t.Setenv(depcache.EnvBackend, "memory")
	reg := depcache.NewRegistry()
	t.Cleanup(func() { reg.Close() })
	m, err := reg.GetOrCreate("tiered", depcache.WithLocalCache(100), depcache.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	if !m.LocalCacheEnabled() {
		t.Error("GetOrCreate with WithLocalCache on the environment's memory backend: no in-process tier")
	}

	mr := miniredis.RunT(t)
	t.Setenv(depcache.EnvBackend, "redis")
	t.Setenv("REDIS_URL", "redis://"+mr.Addr()+"/0")
	r, err := reg.GetOrCreate("redis-tiered", depcache.WithLocalCache(100), depcache.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	if !r.LocalCacheEnabled() {
		t.Error("GetOrCreate with WithLocalCache on the environment's Redis: no in-process tier")
	}
	if _, err := reg.GetOrCreate("refused", depcache.WithPrefix("app:t:{x"), depcache.WithLogger(quiet)); !errors.Is(err, redisbackend.ErrNamespace) {
		t.Errorf("GetOrCreate on the environment's Redis with a refused prefix: %v, want an error wrapping redisbackend.ErrNamespace", err)
	}
	// The refused manager gave its share of the backend back: closing the
	// other one closes the client (goleak would see its pool otherwise).
}
