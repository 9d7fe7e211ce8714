package backendtest

import "os"

// LongEnv is the environment variable that turns on the long runs of the
// tests of this module's stores: the full-size stale-read, concurrency and
// big-tag cases of this suite, and the stores' own long tests (failover,
// Sentinel, long harness runs). CI sets DEPCACHE_LONG=1; without it every
// case still runs, on smaller sizes, so that `go test ./...` stays quick.
const LongEnv = "DEPCACHE_LONG"

// Long reports whether DEPCACHE_LONG asks for the long runs (any value
// but "", "0" and "false").
func Long() bool {
	switch os.Getenv(LongEnv) {
	case "", "0", "false":
		return false
	}
	return true
}
