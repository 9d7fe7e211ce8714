package stalecheck_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a test starts is gone when the package's tests end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
