package redisbackend

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

// SharedClusterClient lets the external tests of this directory (which may
// import packages that import this one, such as the stale-read harness) use
// the tests' shared Redis Cluster.
func SharedClusterClient(t testing.TB) *redis.ClusterClient {
	return clusterClient(t, sharedCluster(t))
}
