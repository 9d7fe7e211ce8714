package redisbackend

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"
)

// ErrNoContextTimeout reports a client that ignores context deadlines: its
// commands wait for its own ReadTimeout (3 s by default) however short the
// cache's timeout, so a frozen server would hold every cached call that
// long. Lookup and Fill fail with it; the other calls still work. Build the
// client with ContextTimeoutEnabled: true.
var ErrNoContextTimeout = errors.New("redisbackend: the client ignores context deadlines; set ContextTimeoutEnabled: true in its options")

// honourDeadlines makes c end its commands at their context's deadline, the
// only bound the cache's timeouts have on a server that accepts connections
// and never answers. A *redis.Client (standalone or failover) and a
// *redis.ClusterClient have ContextTimeoutEnabled turned on in place: their
// connections read it at each command and the cluster's node clients copy it
// when they are made, at first use. A *redis.Ring copied it into its shards
// when it was built, so it cannot be adjusted: the error says what to set.
// A client of another type is trusted to honour deadlines itself.
func honourDeadlines(c redis.UniversalClient, log *slog.Logger) error {
	var enabled *bool
	switch cc := c.(type) {
	case *redis.Client:
		enabled = &cc.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		enabled = &cc.Options().ContextTimeoutEnabled
	case *redis.Ring:
		if !cc.Options().ContextTimeoutEnabled {
			return fmt.Errorf("%w (redis.RingOptions)", ErrNoContextTimeout)
		}
		return nil
	default:
		return nil
	}
	// Read before writing: a client already set, or adjusted by an earlier
	// New, is left untouched, so sharing one client between Backends that
	// are built while it serves commands is race-free.
	if !*enabled {
		*enabled = true
		log.Info("redisbackend: turned on ContextTimeoutEnabled on the client given to New so that cache operations end at their timeout; set it in the client's options to silence this")
	}
	return nil
}
