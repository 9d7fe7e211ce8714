package redisbackend

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// countingHandler counts log records by message.
type countingHandler struct {
	mu sync.Mutex
	n  map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n[r.Message]++
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func (h *countingHandler) count(prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for msg, c := range h.n {
		if strings.HasPrefix(msg, prefix) {
			n += c
		}
	}
	return n
}

// registrationHook reports every attempt of the tier registration script.
type registrationHook struct {
	regKey   string
	failures atomic.Int64
	attempts chan bool // true: it succeeded
}

func (h *registrationHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *registrationHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *registrationHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		args := cmd.Args()
		if name := cmd.Name(); (name == "evalsha" || name == "eval") && len(args) > 3 && args[3] == h.regKey {
			if err != nil {
				h.failures.Add(1)
			}
			select {
			case h.attempts <- err == nil:
			default:
			}
		}
		return err
	}
}

// A tier's registration, renewed every lease/4, logs its failure once per
// outage, not at every attempt: with Redis stopped, a process with
// WithLocalCache logged "tier registration failed" about 5 times a second
// (17 lines in 3.5 s, the default lease), for as long as the outage lasted.
func TestTierRegistrationFailureLoggedOncePerOutage(t *testing.T) {
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	h := &countingHandler{n: map[string]int{}}
	b := New(c, WithTierLease(40*time.Millisecond), WithLogger(slog.New(h)))
	t.Cleanup(func() { b.Close() })
	reg, _ := b.tierKeys(c)
	hook := &registrationHook{regKey: reg, attempts: make(chan bool, 1)}
	c.AddHook(hook)
	_, stop, err := b.Listen(&recorder{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)

	const warn = "redisbackend: tier registration failed"
	waitFor := func(ok bool) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case got := <-hook.attempts:
				if got == ok {
					return
				}
			case <-deadline:
				t.Fatalf("no registration that succeeded=%v within 30s", ok)
			}
		}
	}
	// Counted from the last registration that succeeded before the
	// outage: on a loaded machine a registration can also time out now
	// and then, which is an outage of its own, logged once.
	outage := func(n int) {
		t.Helper()
		waitFor(true)
		before := h.count(warn)
		mr.Close()
		start := hook.failures.Load()
		for hook.failures.Load() < start+5 {
			waitFor(false)
		}
		if got := h.count(warn) - before; got != 1 {
			t.Errorf("outage %d, %d failed registrations: %d %q lines, want 1", n, hook.failures.Load()-start, got, warn)
		}
		if err := mr.Restart(); err != nil {
			t.Fatal(err)
		}
	}
	outage(1)
	outage(2)
}
