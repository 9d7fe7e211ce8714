package redisbackend_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/internal/redistest"
)

// A first use of FromEnv's Backend on a port where nothing listens names
// the refused dial: go-redis retries the dial until the caller's deadline
// and returned only "context deadline exceeded", with the reason in
// go-redis's own log line at best.
func TestFromEnvNamesTheFailedDial(t *testing.T) {
	setEnv(t, map[string]string{"REDIS_URL": "redis://127.0.0.1:" + strconv.Itoa(redistest.FreePort(t)) + "/0"})
	b, err := redisbackend.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = b.Lookup(ctx, "ns", "k")
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Lookup on a refused port: %v, want the refused dial named", err)
	}
}
