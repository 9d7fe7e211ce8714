package depcache_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a manager starts (the retry loop) stops with Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
