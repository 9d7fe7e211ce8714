package redisbackend

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

// SharedClusterClient returns a client on the tests' shared Redis Cluster,
// closed when the test ends, for the tests of package redisbackend_test.
// It skips the test where the cluster cannot run.
func SharedClusterClient(t *testing.T) *redis.ClusterClient {
	return clusterClient(t, sharedCluster(t))
}
