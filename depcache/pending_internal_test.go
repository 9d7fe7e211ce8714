package depcache

import (
	"testing"
	"time"
)

// Retry waits are drawn between half of the backoff and all of it, so that
// processes that failed together spread their retries.
func TestRetryJitter(t *testing.T) {
	const d = 100 * time.Millisecond
	seen := map[time.Duration]bool{}
	for range 200 {
		w := jitter(d)
		if w < d/2 || w > d {
			t.Fatalf("jitter(%v) = %v, outside [%v, %v]", d, w, d/2, d)
		}
		seen[w] = true
	}
	if len(seen) < 2 {
		t.Fatal("every wait was the same: no jitter")
	}
	if w := jitter(1); w != 1 {
		t.Fatalf("jitter(1ns) = %v", w)
	}
}
