package redistest

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// StartAt runs redis-server on the given loopback port, with args after
// the defaults of StartProcess (so "--dir" names where a dump is read
// from): for a test that restarts a server it killed, on the address its
// clients know. The server is killed when the test ends.
func StartAt(t testing.TB, port int, args ...string) *os.Process {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed")
	}
	proc, err := startOnce(t, bin, "Ready to accept connections", append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir(), "--daemonize", "no"}, args...))
	if err != nil {
		t.Fatal(err)
	}
	return proc
}
