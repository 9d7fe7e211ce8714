package depcache_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/depcache"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// newManager returns a manager on a fresh memory backend, closed with t.
func newManager(t *testing.T, opts ...depcache.Option) (*depcache.Manager, *memory.Backend) {
	t.Helper()
	b := memory.New()
	m := depcache.New(b, append([]depcache.Option{depcache.WithLogger(quiet), depcache.WithName(t.Name())}, opts...)...)
	t.Cleanup(func() {
		m.Close()
		b.Close()
	})
	return m, b
}

// events records what a manager reports.
type events struct {
	mu  sync.Mutex
	all []depcache.Event
}

func (e *events) observe(ev depcache.Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

func (e *events) count(k depcache.EventKind) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.all {
		if ev.Kind == k {
			n++
		}
	}
	return n
}

func (e *events) last(k depcache.EventKind) (depcache.Event, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := len(e.all) - 1; i >= 0; i-- {
		if e.all[i].Kind == k {
			return e.all[i], true
		}
	}
	return depcache.Event{}, false
}

var errDown = errors.New("backend down")

// faulty wraps a backend and fails the operations switched off.
type faulty struct {
	backends.Backend
	lookups, fills, invalidations, clears atomic.Bool
	invalidateCalls                       atomic.Int64
}

func (f *faulty) Lookup(ctx context.Context, ns, key string) (backends.Lookup, error) {
	if f.lookups.Load() {
		return backends.Lookup{}, errDown
	}
	return f.Backend.Lookup(ctx, ns, key)
}

func (f *faulty) Fill(ctx context.Context, ns string, fl backends.Fill) error {
	if f.fills.Load() {
		return errDown
	}
	return f.Backend.Fill(ctx, ns, fl)
}

func (f *faulty) Invalidate(ctx context.Context, ns string, tags ...string) (int, error) {
	f.invalidateCalls.Add(1)
	if f.invalidations.Load() {
		return 0, errDown
	}
	return f.Backend.Invalidate(ctx, ns, tags...)
}

func (f *faulty) Clear(ctx context.Context, ns string) (int, error) {
	if f.clears.Load() {
		return 0, errDown
	}
	return f.Backend.Clear(ctx, ns)
}

// counter is a function whose calls are counted.
type counter struct{ n atomic.Int64 }

func (c *counter) calls() int { return int(c.n.Load()) }

var _ = time.Second
