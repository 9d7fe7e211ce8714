package pgcdc

import (
	"testing"
	"time"
)

// ShortenTimeouts sets the query and connection timeouts for the rest of
// the test (call it before starting listeners: it is restored last).
func ShortenTimeouts(t testing.TB, query, connect time.Duration) {
	q, c := queryTimeout, connectTimeout
	queryTimeout, connectTimeout = query, connect
	t.Cleanup(func() { queryTimeout, connectTimeout = q, c })
}

// SetMaxChangeTags lowers the bound on a transaction's WithChangeTags tags
// for the rest of the test.
func SetMaxChangeTags(t testing.TB, n int) {
	old := maxChangeTags
	maxChangeTags = n
	t.Cleanup(func() { maxChangeTags = old })
}
