package depcache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/redisbackend"
)

// ErrBreakerOpen is wrapped by the error a strict manager (WithStrictErrors)
// returns for a read or fill it did not send because its circuit breaker is
// open: the backend failed several times in a row and is being skipped
// until a probe finds it answering again. A manager that fails open (the
// default) returns no error: reads are misses and fills are skipped.
var ErrBreakerOpen = errors.New("depcache: circuit breaker open: the backend is skipped after consecutive failures")

// Defaults for WithBreaker.
const (
	DefaultBreakerFailures = 5
	DefaultBreakerOpenFor  = time.Second
)

// WithBreaker sets the manager's circuit breaker (on by default, with
// DefaultBreakerFailures and DefaultBreakerOpenFor). After failures
// consecutive backend failures of reads and fills (timeouts, refused or
// broken connections, a misconfigured client; not a refused stale fill, a
// missing key or corrupt bytes), the manager stops sending reads and fills:
// lookups are misses and the functions run, fills are skipped, with no
// round trip and no log line per call (one line when it opens, one when it
// closes; Stats.BreakerSkips counts the skips). Every openFor, the next
// read that arrives starts one probe in the background (an epoch read,
// bounded by WithTimeout) instead of paying for it; the first probe that
// gets an answer closes the breaker and caching resumes. Callers never
// wait for a probe.
//
// Invalidations never go through the breaker: they are always sent, and
// one that fails is returned as an error and retried in the background
// (InvalidateDependency), whatever the breaker's state.
//
// failures must be at least 1 and openFor positive. WithoutBreaker turns
// the breaker off.
func WithBreaker(failures int, openFor time.Duration) Option {
	return func(c *config) {
		if failures < 1 || openFor <= 0 {
			c.invalid(fmt.Sprintf("WithBreaker(%d, %v): failures must be at least 1 and openFor positive", failures, openFor))
			return
		}
		c.breakerFailures, c.breakerOpenFor = failures, openFor
	}
}

// WithoutBreaker turns the circuit breaker off: every read and fill is sent
// to the backend, and each failure is logged.
func WithoutBreaker() Option { return func(c *config) { c.breakerFailures = 0 } }

// breaker gates a manager's reads and fills with a gobreaker circuit
// breaker. A nil *breaker lets everything through.
//
// Why probes run in the background: gobreaker lets the first request after
// the open interval through as its half-open probe. Were that a caller's
// lookup, one caller per interval would pay a full timeout during an
// outage, and at low traffic that is the p99 of every read. So a caller
// that finds the breaker anything but closed is never let through: it
// starts (at most one) probe goroutine and runs uncached.
type breaker struct {
	m  *Manager
	cb *gobreaker.CircuitBreaker[struct{}]

	probing atomic.Bool
	ctx     context.Context // ends at close: cancels a probe under way
	stop    context.CancelFunc
	wg      sync.WaitGroup
	closed  bool // under mu: no new probe

	// State changes are recorded under gobreaker's lock (OnStateChange) and
	// reported after it is released, so an observer may call the manager.
	mu       sync.Mutex
	changes  []gobreaker.State
	dirty    atomic.Bool
	lastErr  atomic.Pointer[error] // the failure that tripped it
	openedAt time.Time             // under mu
	down     atomic.Bool           // open or half-open since the last close
	clean    atomic.Bool           // closed, no failure since the last success (do)
	// tripped is down as gobreaker decides it, set under its lock at each
	// change (down follows in report, later): a reply that arrives while
	// it is set, or after it moved (servingMark), is not served.
	tripped atomic.Bool

	skips, opens atomic.Uint64
}

// errCallerLeft marks an operation that ended because its caller's ctx
// did: it says nothing about the backend.
var errCallerLeft = errors.New("depcache: caller left")

func newBreaker(m *Manager) *breaker {
	if m.cfg.breakerFailures < 1 {
		return nil
	}
	b := &breaker{m: m}
	b.ctx, b.stop = context.WithCancel(context.Background())
	b.clean.Store(true)
	failures := uint32(m.cfg.breakerFailures)
	b.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        m.name,
		MaxRequests: 1,
		Timeout:     m.cfg.breakerOpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		IsSuccessful: func(err error) bool {
			return err == nil || !backendDown(err)
		},
		IsExcluded: func(err error) bool { return errors.Is(err, errCallerLeft) },
		OnStateChange: func(_ string, _, to gobreaker.State) {
			// Called under gobreaker's lock. An entry read before an
			// opening may predate writes whose invalidation failed
			// during the outage: from here, nothing read before is
			// served (Manager.lookup), and nothing while it is open.
			b.tripped.Store(to != gobreaker.StateClosed)
			if to != gobreaker.StateClosed {
				// Entries of other managers carrying this one's tags
				// (pairs) are not served either: index it for them.
				notePending(m)
			}
			m.servingChanged()
			b.mu.Lock()
			b.changes = append(b.changes, to)
			b.mu.Unlock()
			b.dirty.Store(true)
		},
	})
	return b
}

// do runs op unless the breaker is open, and records its outcome. It
// returns ErrBreakerOpen without running op when the backend is being
// skipped (callers wrap it with the operation, as any backend error). ctx is the caller's: an op that failed because ctx ended
// does not count against the backend.
func (b *breaker) do(ctx context.Context, op func() error) error {
	if b == nil {
		return op()
	}
	if b.down.Load() {
		// Open or half-open: a caller is never the half-open probe.
		b.skip()
		return ErrBreakerOpen
	}
	if b.clean.Load() {
		// Closed, with no failure since the last success: another success
		// changes nothing the breaker decides on (it trips on consecutive
		// failures), so it is not recorded, sparing every hit gobreaker's
		// lock and clock reads. Only a failure goes to the breaker.
		err := op()
		if err == nil || ctx.Err() != nil || !backendDown(err) {
			return err
		}
		b.execute(func() error { return err }) // refused if it opened meanwhile: op ran anyway
		return err
	}
	var opErr error
	if err := b.execute(func() error {
		opErr = op()
		if opErr != nil && ctx.Err() != nil {
			return errCallerLeft
		}
		return opErr
	}); errors.Is(err, ErrBreakerOpen) {
		// It opened between the check above and Execute.
		b.skip()
		return err
	}
	return opErr
}

// execute runs op through gobreaker, and returns op's error, or
// ErrBreakerOpen if gobreaker refused it.
func (b *breaker) execute(op func() error) error {
	_, err := b.cb.Execute(func() (struct{}, error) { return struct{}{}, op() })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return ErrBreakerOpen
	}
	if err != nil && !errors.Is(err, errCallerLeft) {
		b.lastErr.Store(&err)
	}
	// A race between two outcomes may leave clean stale until the next
	// failure, which then goes through the breaker and sets it right.
	b.clean.Store(b.cb.Counts().ConsecutiveFailures == 0)
	b.report()
	return err
}

// skip counts a skipped operation and starts a probe if one is due.
func (b *breaker) skip() {
	b.skips.Add(1)
	b.report()
	b.probeIfDue()
}

// probeIfDue starts a probe if one is due: a read this breaker skips, or
// a read of another manager's entry carrying this manager's tags, which
// its opening refuses too (pendingAffects): a manager that reads nothing
// more itself must still recover.
func (b *breaker) probeIfDue() {
	if b.cb.State() != gobreaker.StateHalfOpen || !b.probing.CompareAndSwap(false, true) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		b.probing.Store(false)
		return
	}
	b.wg.Add(1)
	go b.probe()
}

// probeKey is the key a probe looks up. Its lookup is a read like a
// caller's (so a client the backend refuses fails it too), and it misses.
const probeKey = "\x00depcache-breaker-probe"

// probe sends one lookup as the half-open breaker's trial request.
func (b *breaker) probe() {
	defer b.wg.Done()
	defer b.probing.Store(false)
	ctx, cancel := context.WithTimeout(b.ctx, b.m.cfg.timeout)
	defer cancel()
	var (
		probeErr error
		result   backends.Lookup
	)
	b.cb.Execute(func() (struct{}, error) { //nolint:errcheck // the breaker records the outcome
		result, probeErr = b.m.backend.Lookup(ctx, b.m.ns, probeKey)
		if probeErr == nil {
			// It answers: close only once what must be delivered first
			// (a durable outbox) is (recovery.go).
			probeErr = b.m.runRecoveryChecks(b.ctx)
		}
		if b.ctx.Err() != nil {
			return struct{}{}, errCallerLeft // closing, not the backend's failure
		}
		return struct{}{}, probeErr
	})
	if probeErr != nil {
		b.lastErr.Store(&probeErr)
	}
	b.clean.Store(b.cb.Counts().ConsecutiveFailures == 0)
	if r, ok := b.m.backend.(backends.Releaser); ok && probeErr == nil && result.Lease != "" {
		// The miss took a fill lease (Cluster, a fill lock): give it back.
		_ = r.Release(ctx, b.m.ns, probeKey, result.Lease)
	}
	b.report()
}

// report logs and emits the state changes recorded since the last call.
func (b *breaker) report() {
	if !b.dirty.Load() {
		return
	}
	// down and openedAt change under mu, in the order gobreaker made the
	// changes, so that two goroutines reporting at once cannot leave down
	// set on a closed breaker (nothing would probe it open again).
	type announcement struct {
		opened  bool
		downFor time.Duration
	}
	var say []announcement
	b.mu.Lock()
	b.dirty.Store(false)
	for _, to := range b.changes {
		switch to {
		case gobreaker.StateOpen:
			if b.down.Swap(true) {
				continue // a failed probe: still down, already said
			}
			b.openedAt = time.Now()
			say = append(say, announcement{opened: true})
		case gobreaker.StateClosed:
			if !b.down.Swap(false) {
				continue
			}
			say = append(say, announcement{downFor: time.Since(b.openedAt)})
		}
	}
	b.changes = b.changes[:0]
	b.mu.Unlock()
	for _, a := range say {
		if !a.opened {
			b.m.log.Warn("depcache: backend answers again; caching resumed", "down_for", a.downFor.Round(time.Millisecond))
			b.m.emit(Event{Kind: EventBreakerClose})
			continue
		}
		b.opens.Add(1)
		var err error
		if p := b.lastErr.Load(); p != nil {
			err = *p
		}
		b.m.log.Error("depcache: backend unreachable; reads and fills skip it until a probe gets an answer",
			"failures", b.m.cfg.breakerFailures, "probe_every", b.m.cfg.breakerOpenFor, "err", err)
		b.m.emit(Event{Kind: EventBreakerOpen, Err: fmt.Errorf("%w: %w", ErrBreakerOpen, err)})
	}
}

// open reports whether the breaker is open or half-open: the manager
// serves nothing from the cache, the in-process tier included, until a
// probe has closed it (after the recovery checks passed).
func (b *breaker) open() bool { return b != nil && b.tripped.Load() }

// quiet reports whether per-call failure logs are suppressed: the breaker
// has logged that the backend is down.
func (b *breaker) quiet() bool { return b != nil && b.down.Load() }

// close stops probes and waits for one under way (bounded by the timeout).
func (b *breaker) close() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.stop()
	b.wg.Wait()
}

func (b *breaker) skipCount() uint64 {
	if b == nil {
		return 0
	}
	return b.skips.Load()
}

func (b *breaker) openCount() uint64 {
	if b == nil {
		return 0
	}
	return b.opens.Load()
}

// backendDown reports whether err says the backend cannot serve: a
// timeout, a connection error, a closed or misconfigured client, a server
// that is loading or without a master. Errors that come with an answer —
// a stale fill, a missing key, corrupt bytes, a script's error reply — do
// not count against it.
func backendDown(err error) bool {
	switch {
	case err == nil,
		errors.Is(err, backends.ErrStale),
		errors.Is(err, backends.ErrNotFound),
		errors.Is(err, backends.ErrCorrupt),
		errors.Is(err, errCallerLeft):
		return false
	case permanentError(err):
		return true
	}
	var reply interface{ RedisError() }
	if errors.As(err, &reply) {
		// The server answered. Only the replies that mean it cannot serve
		// count.
		msg := err.Error()
		for _, p := range []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY", "READONLY"} {
			if strings.Contains(msg, p) {
				return true
			}
		}
		return false
	}
	return true
}

// permanentError reports a failure that retrying soon cannot fix (a
// client that ignores deadlines, an eviction policy that may drop
// metadata): it is logged once, not per call.
func permanentError(err error) bool {
	return errors.Is(err, redisbackend.ErrNoContextTimeout) || errors.Is(err, redisbackend.ErrUnsafePolicy)
}
