package redisbackend

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// testCluster is a Redis Cluster of the tests' own on loopback: 3 masters,
// and a replica each when asked.
type testCluster struct {
	dir   string
	nodes []*clusterNode
}

type clusterNode struct {
	addr   string
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has exited (and been waited for)
	dead   bool
}

// startNode starts one cluster node on free ports and waits until it
// answers as itself. A port is free when chosen but may be taken before
// the server binds it (by other tests or processes): a node that exits, or
// a port answered by another server, means trying again on other ports,
// up to 5 times.
func startNode(server, dir string) (*clusterNode, error) {
	var last error
	for range 5 {
		nd, err := startNodeOnce(server, dir)
		if err == nil {
			return nd, nil
		}
		last = err
	}
	return nil, last
}

func startNodeOnce(server, dir string) (*clusterNode, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	bus, err := freePort()
	if err != nil {
		return nil, err
	}
	p := strconv.Itoa(port)
	logf, err := os.Create(filepath.Join(dir, "redis-"+p+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(server,
		"--port", p, "--cluster-port", strconv.Itoa(bus), "--bind", "127.0.0.1",
		"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes-"+p+".conf"),
		"--cluster-node-timeout", "1000", "--dir", dir, "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--repl-diskless-sync-delay", "0", "--logfile", "")
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return nil, err
	}
	nd := &clusterNode{addr: net.JoinHostPort("127.0.0.1", p), cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(nd.exited)
	}()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: nd.addr, MaxRetries: -1})
	defer c.Close()
	pid := strconv.Itoa(cmd.Process.Pid)
	gone := false
	err = poll(10*time.Second, func() bool {
		select {
		case <-nd.exited:
			gone = true
			return true
		default:
		}
		info, err := c.Info(ctx, "server").Result()
		return err == nil && infoField(info, "process_id") == pid
	})
	switch {
	case gone:
		return nil, fmt.Errorf("redis-server on %s exited at start (port taken?)", nd.addr)
	case err != nil:
		nd.kill()
		return nil, fmt.Errorf("%s does not answer: %w", nd.addr, err)
	}
	return nd, nil
}

// kill kills the node's process with SIGKILL and waits for it to exit.
func (nd *clusterNode) kill() {
	nd.dead = true
	_ = nd.cmd.Process.Signal(syscall.SIGKILL)
	<-nd.exited
}

// clusterTools returns the paths of redis-server and redis-cli, or why not.
func clusterTools() (server, cli string, skip string) {
	server, err := exec.LookPath("redis-server")
	if err != nil {
		return "", "", "redis-server not on PATH"
	}
	cli, err = exec.LookPath("redis-cli")
	if err != nil {
		return "", "", "redis-cli not on PATH"
	}
	return server, cli, ""
}

// freePort returns a loopback port nothing listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startCluster starts 3 masters (and 3 replicas if replicas), joins them
// and waits until the cluster serves every slot (and every replica is in
// sync). On error it stops what it started.
func startCluster(replicas bool) (*testCluster, error) {
	server, cli, skip := clusterTools()
	if skip != "" {
		return nil, fmt.Errorf("%s", skip)
	}
	dir, err := os.MkdirTemp("", "depcache-cluster-")
	if err != nil {
		return nil, err
	}
	tc := &testCluster{dir: dir}
	ok := false
	defer func() {
		if !ok {
			tc.stop()
		}
	}()
	n := 3
	if replicas {
		n = 6
	}
	for range n {
		nd, err := startNode(server, dir)
		if err != nil {
			return nil, err
		}
		tc.nodes = append(tc.nodes, nd)
	}
	ctx := context.Background()
	args := []string{"--cluster", "create"}
	for _, nd := range tc.nodes {
		args = append(args, nd.addr)
	}
	r := "0"
	if replicas {
		r = "1"
	}
	args = append(args, "--cluster-replicas", r, "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := tc.waitReady(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	ok = true
	return tc, nil
}

// waitReady waits until every live node reports cluster_state:ok, every
// master with a replica sees it in sync, and a cluster client can write
// and read keys in many slots.
func (tc *testCluster) waitReady(ctx context.Context, within time.Duration) error {
	var last string
	err := poll(within, func() bool {
		masters := 0
		for _, nd := range tc.live() {
			c := redis.NewClient(&redis.Options{Addr: nd.addr, MaxRetries: -1})
			info, err := c.ClusterInfo(ctx).Result()
			repl, rerr := c.Info(ctx, "replication").Result()
			c.Close()
			if err != nil || rerr != nil {
				last = fmt.Sprintf("%s: %v %v", nd.addr, err, rerr)
				return false
			}
			if !strings.Contains(info, "cluster_state:ok") {
				last = nd.addr + ": " + info
				return false
			}
			switch infoField(repl, "role") {
			case "master":
				masters++
			case "slave":
				if infoField(repl, "master_link_status") != "up" {
					last = nd.addr + ": replica link down"
					return false
				}
			}
		}
		if masters != 3 {
			last = fmt.Sprintf("%d masters", masters)
			return false
		}
		c := tc.client()
		defer c.Close()
		for i := range 32 {
			k := fmt.Sprint("probe:", i)
			if err := c.Set(ctx, k, "1", time.Minute).Err(); err != nil {
				last = err.Error()
				return false
			}
			if err := c.Get(ctx, k).Err(); err != nil {
				last = err.Error()
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("cluster not ready: %w (last: %s)", err, last)
	}
	return nil
}

// live returns the nodes not killed.
func (tc *testCluster) live() []*clusterNode {
	var out []*clusterNode
	for _, nd := range tc.nodes {
		if !nd.dead {
			out = append(out, nd)
		}
	}
	return out
}

// client returns a new cluster client on the live nodes.
func (tc *testCluster) client(hooks ...redis.Hook) *redis.ClusterClient {
	var addrs []string
	for _, nd := range tc.live() {
		addrs = append(addrs, nd.addr)
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true})
	for _, h := range hooks {
		c.AddHook(h)
	}
	return c
}

// kill kills the node at addr with SIGKILL.
func (tc *testCluster) kill(addr string) error {
	for _, nd := range tc.nodes {
		if nd.addr == addr && !nd.dead {
			nd.kill()
			return nil
		}
	}
	return fmt.Errorf("no live node %s", addr)
}

// stop kills every node and removes the directory.
func (tc *testCluster) stop() {
	for _, nd := range tc.nodes {
		if !nd.dead {
			nd.kill()
		}
	}
	_ = os.RemoveAll(tc.dir)
}

// logs returns the tail of every node's log, for a failing test.
func (tc *testCluster) logs() string {
	var sb strings.Builder
	for _, nd := range tc.nodes {
		_, port, _ := net.SplitHostPort(nd.addr)
		b, _ := os.ReadFile(filepath.Join(tc.dir, "redis-"+port+".log"))
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		fmt.Fprintf(&sb, "--- %s (dead %v)\n%s\n", nd.addr, nd.dead, strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
	return sb.String()
}

// poll calls cond every 20ms until it holds or within has passed.
func poll(within time.Duration, cond func() bool) error {
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", within)
		}
		<-tick.C
	}
	return nil
}

// The shared cluster (3 masters, no replicas), started by the first test
// that needs it and stopped by TestMain.
var shared struct {
	once sync.Once
	tc   *testCluster
	err  error
}

// sharedCluster returns the shared cluster, skipping the test when the
// tools are missing or under -short.
func sharedCluster(t testing.TB) *testCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	if _, _, skip := clusterTools(); skip != "" {
		t.Skip(skip)
	}
	shared.once.Do(func() {
		start := time.Now()
		shared.tc, shared.err = startCluster(false)
		if shared.err == nil {
			fmt.Fprintf(os.Stderr, "redisbackend tests: Redis Cluster of 3 masters up in %v\n", time.Since(start).Round(time.Millisecond))
		}
	})
	if shared.err != nil {
		t.Fatalf("start cluster: %v", shared.err)
	}
	return shared.tc
}

// stopSharedCluster stops the shared cluster if it was started.
func stopSharedCluster() {
	if shared.tc != nil {
		shared.tc.stop()
	}
}

// ownCluster starts a cluster of the test's own, stopped when it ends.
func ownCluster(t *testing.T, replicas bool) *testCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	if _, _, skip := clusterTools(); skip != "" {
		t.Skip(skip)
	}
	tc, err := startCluster(replicas)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster logs:\n%s", tc.logs())
		}
		tc.stop()
	})
	return tc
}

// clusterClient returns a client on tc, closed when the test ends.
func clusterClient(t testing.TB, tc *testCluster, hooks ...redis.Hook) *redis.ClusterClient {
	c := tc.client(hooks...)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// clusterBackend returns a Backend on a new client of tc.
func clusterBackend(t testing.TB, tc *testCluster, opts ...Option) *Backend {
	c := clusterClient(t, tc)
	b := New(c, append([]Option{WithLogger(testLogger(t))}, opts...)...)
	t.Cleanup(func() { _ = b.Close() })
	return b
}
