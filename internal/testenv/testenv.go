// Package testenv holds the switches the project's tests share.
package testenv

import (
	"os"
	"testing"
)

// LongVar is the environment variable that turns the long test runs on.
// `.ci/run` sets it; the README's quick test command leaves it unset.
const LongVar = "DEPCACHE_LONG"

// Long reports whether the long runs are on: the stale-read proofs with
// 100,000 reads, failovers, Sentinel, big invalidations. A quick run keeps
// every check, with fewer iterations or without the slowest scenarios.
func Long() bool { return os.Getenv(LongVar) != "" }

// SkipUnlessLong skips t in a quick run, saying how to run it.
func SkipUnlessLong(t testing.TB) {
	t.Helper()
	if !Long() {
		t.Skipf("a long run: set %s=1 (as .ci/run does) to run it", LongVar)
	}
}
