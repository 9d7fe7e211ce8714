package redisbackend

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNoContextTimeout reports a client that ignores context deadlines: its
// commands wait for its own ReadTimeout (3 s by default) however short the
// cache's timeout, so a frozen server would hold every cached call that
// long. Lookup and Fill fail with it (the manager serves uncached);
// invalidations still run, so that other processes see them. Build the
// client with ContextTimeoutEnabled: true.
var ErrNoContextTimeout = errors.New("redisbackend: the client ignores context deadlines; set ContextTimeoutEnabled: true in its options")

// clientHonoursDeadlines reports ErrNoContextTimeout for a go-redis client
// built without ContextTimeoutEnabled. New does not turn the option on
// itself: it would write to options the client reads at every command,
// racing with whoever already uses the client, and change how the caller's
// own commands behave. A client of another type is trusted to honour
// deadlines.
func clientHonoursDeadlines(c redis.UniversalClient) error {
	var enabled bool
	var kind string
	switch cc := c.(type) {
	case *redis.Client:
		enabled, kind = cc.Options().ContextTimeoutEnabled, "redis.Options (or redis.FailoverOptions)"
	case *redis.ClusterClient:
		enabled, kind = cc.Options().ContextTimeoutEnabled, "redis.ClusterOptions"
	case *redis.Ring:
		enabled, kind = cc.Options().ContextTimeoutEnabled, "redis.RingOptions"
	default:
		return nil
	}
	if enabled {
		return nil
	}
	return fmt.Errorf("%w (%s)", ErrNoContextTimeout, kind)
}

// Late releases (cluster.giveBack): at most maxLateReleases at once, each
// bounded by lateReleaseTimeout. Beyond that, during an outage, a lease is
// left to expire (WithLeaseTTL).
const (
	maxLateReleases    = 64
	lateReleaseTimeout = time.Second
)

// lateReleases runs lease releases that outlived their operation's
// context, each in a goroutine of its own that ends within
// lateReleaseTimeout; wait waits for those under way. The zero value is
// ready to use.
type lateReleases struct {
	wg     sync.WaitGroup
	active atomic.Int32
}

func (l *lateReleases) start(release func(ctx context.Context)) {
	if l.active.Add(1) > maxLateReleases {
		l.active.Add(-1)
		return
	}
	l.wg.Go(func() {
		defer l.active.Add(-1)
		ctx, cancel := context.WithTimeout(context.Background(), lateReleaseTimeout)
		defer cancel()
		release(ctx)
	})
}

func (l *lateReleases) wait() { l.wg.Wait() }
