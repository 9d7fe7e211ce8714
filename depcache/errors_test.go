package depcache_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/depcache/go-depcache/depcache"
)

var errNoSuchUser = errors.New("no such user")

type RateLimitError struct {
	Service string
	Retry   int
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("%s: rate limited, retry in %d", e.Service, e.Retry)
}

func TestCachedErrors(t *testing.T) {
	for _, codec := range []depcache.Codec{depcache.JSON, depcache.Msgpack, depcache.Gob} {
		t.Run(codec.Name(), func(t *testing.T) {
			ctx := context.Background()
			m, _ := newManager(t, depcache.WithCodec(codec))
			var calls counter
			f := depcache.Memoize(func(ctx context.Context, kind string) (int, error) {
				calls.n.Add(1)
				depcache.AddDependency(ctx, "users::"+kind)
				switch kind {
				case "sentinel":
					return 0, fmt.Errorf("load user 7: %w", errNoSuchUser)
				case "typed":
					return 0, fmt.Errorf("call: %w", &RateLimitError{Service: "geo", Retry: 30})
				default:
					return 0, errors.New("transient")
				}
			}, depcache.Using(m), depcache.KeyName("errs"),
				depcache.CacheErrors(errNoSuchUser), depcache.CacheErrorsAs[*RateLimitError]())

			_, first := f(ctx, "sentinel")
			_, second := f(ctx, "sentinel")
			if calls.calls() != 1 {
				t.Fatalf("sentinel error not cached: %d calls", calls.calls())
			}
			if !errors.Is(second, errNoSuchUser) || second.Error() != first.Error() {
				t.Fatalf("cached error %v (Is=%v); want %v", second, errors.Is(second, errNoSuchUser), first)
			}

			f(ctx, "typed")
			_, cached := f(ctx, "typed")
			var rl *RateLimitError
			if calls.calls() != 2 || !errors.As(cached, &rl) || rl.Service != "geo" || rl.Retry != 30 {
				t.Fatalf("typed error: calls=%d err=%v as=%+v", calls.calls(), cached, rl)
			}
			if cached.Error() != "call: geo: rate limited, retry in 30" {
				t.Fatalf("message lost: %q", cached.Error())
			}

			f(ctx, "other")
			f(ctx, "other")
			if calls.calls() != 4 {
				t.Fatalf("an error not listed was cached")
			}

			// Cached errors follow dependencies.
			m.InvalidateDependency(ctx, "users::sentinel")
			f(ctx, "sentinel")
			if calls.calls() != 5 {
				t.Fatalf("cached error survived its invalidation")
			}
			// Get sees a cached error with its message.
			var key string
			g := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
				key = depcache.CurrentKey(ctx)
				return 0, errNoSuchUser
			}, depcache.Using(m), depcache.KeyName("errs-get"), depcache.CacheErrors(errNoSuchUser))
			g(ctx, 1)
			var dst int
			found, err := m.Get(ctx, key, &dst)
			if !found || err == nil || err.Error() != errNoSuchUser.Error() {
				t.Fatalf("Get of a cached error = %v, %v", found, err)
			}
		})
	}
}

func TestCacheErrorsAsInterfaceIsRefused(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	var calls counter
	f := depcache.Memoize(func(ctx context.Context, x int) (int, error) {
		calls.n.Add(1)
		return x, nil
	}, depcache.Using(m), depcache.KeyName("iface"), depcache.CacheErrorsAs[interface {
		error
		Timeout() bool
	}]())
	f(ctx, 1)
	f(ctx, 1)
	if calls.calls() != 2 || m.Stats().Errors == 0 {
		t.Fatalf("an unusable CacheErrorsAs must run uncached with an error: calls=%d stats=%+v", calls.calls(), m.Stats())
	}
}
