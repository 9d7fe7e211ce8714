package redisbackend

import (
	"errors"
	"fmt"

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
