// Package redistest starts throwaway redis-server processes on loopback for
// tests that must change server-wide settings (maxmemory, eviction policy)
// or stop the server, which they must never do to a shared Redis.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// FreePort returns a loopback port nothing listens on right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start runs redis-server with args on a free loopback port and returns its
// address; the server is killed when the test ends. It skips the test if
// redis-server is not installed.
func Start(t testing.TB, args ...string) string {
	t.Helper()
	addr, _ := StartProcess(t, args...)
	return addr
}

// StartProcess is Start, also returning the server's process (to stop or
// freeze it).
func StartProcess(t testing.TB, args ...string) (string, *os.Process) {
	t.Helper()
	dir := t.TempDir()
	return start(t, "Ready to accept connections", func(port int) []string {
		return append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", dir, "--daemonize", "no"}, args...)
	})
}

// StartSentinel runs a Sentinel that monitors the master at masterAddr
// under the name master, with quorum 1, and returns its address.
func StartSentinel(t testing.TB, master, masterAddr string) string {
	t.Helper()
	host, port, err := net.SplitHostPort(masterAddr)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	text := fmt.Sprintf("sentinel monitor %s %s %s 1\nsentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 10000\n",
		master, host, port, master, master)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, _ := start(t, "+monitor master", func(port int) []string {
		return []string{conf, "--sentinel", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir, "--daemonize", "no"}
	})
	return addr
}

// start runs redis-server with the args for a free port and waits for it
// to print ready. The port is free when chosen but may be taken before the
// server binds it (other tests, other processes): a server that exits
// before it is ready is started again on another port, up to 5 times.
func start(t testing.TB, ready string, args func(port int) []string) (string, *os.Process) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed")
	}
	for attempt := 1; ; attempt++ {
		port := FreePort(t)
		proc, err := startOnce(t, bin, ready, args(port))
		if err != nil {
			if attempt < 5 {
				t.Logf("redistest: %v; again on another port", err)
				continue
			}
			t.Fatal(err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		// A reply, even NOAUTH from a server with requirepass or ACL
		// users, means it serves.
		var rerr redis.Error
		if err := c.Ping(context.Background()).Err(); err != nil && !errors.As(err, &rerr) {
			t.Fatal(err)
		}
		return addr, proc
	}
}

// startOnce starts one server and waits until it says ready; the server
// is killed when the test ends.
func startOnce(t testing.TB, bin, ready string, args []string) (*os.Process, error) {
	cmd := exec.Command(bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	// Configuration errors (an unknown directive, such as tls-port on a
	// build without TLS) go to standard error: read them too.
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	readyCh := make(chan error, 1)
	var tail strings.Builder
	go func() {
		// The server says when it accepts connections; drain the rest so
		// that it never blocks on a full pipe.
		sc := bufio.NewScanner(out)
		said := false
		for sc.Scan() {
			if !said {
				tail.WriteString(sc.Text() + "\n")
			}
			if !said && strings.Contains(sc.Text(), ready) {
				said = true
				readyCh <- nil
			}
		}
		if !said {
			readyCh <- fmt.Errorf("redis-server %v exited before it was ready:\n%s", args, tail.String())
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	select {
	case err := <-readyCh:
		if err != nil {
			return nil, err
		}
	case <-time.After(20 * time.Second):
		return nil, fmt.Errorf("redis-server %v did not start within 20s", args)
	}
	return cmd.Process, nil
}
