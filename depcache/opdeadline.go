package depcache

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// Why operations share deadlines.
//
// Every cache operation must end within the manager's timeout on a frozen
// server, and go-redis (ContextTimeoutEnabled) enforces that from the
// context: ctx.Deadline() sets the socket's read and write deadlines, and
// ctx.Done() ends the waits that have no socket (a pool turn, which would
// otherwise wait PoolTimeout, ~4 s; a dial or a connection's initialisation
// another caller started). A context.WithTimeout per operation gives both,
// but arms a runtime timer per hit, and arming one wakes another thread:
// on a warm hit that cost more than everything else depcache adds.
//
// A context that reports a deadline but never closes Done would leave the
// pool wait unbounded, so it is not an option. Instead, operations whose
// caller context has no deadline of its own share one deadline context per
// manager: a new one, due at now+timeout, is made only when the current one
// is due earlier than now+timeout-timeout/sharedSlack. An operation on a
// shared deadline thus ends between timeout-timeout/sharedSlack and timeout
// after it began, never later, with its Done closing at the instant its
// socket deadline passes; the runtime arms one timer per
// timeout/sharedSlack instead of one per operation.
//
//   - A caller context that can never end (Background, WithoutCancel: fills,
//     and most callers that are not request handlers) is wrapped as is:
//     Done is the shared one.
//   - One that can end (an HTTP request's) gets a context.WithCancelCause
//     child, cancelled by the shared deadline through context.AfterFunc: a
//     registration in the shared context instead of a timer. It costs
//     three allocations more than WithTimeout but no thread wakeup; on a
//     warm Redis hit it measured as fast as the Background path and 1.5x
//     faster than a per-operation timer (interleaved, same run).
//   - One with a deadline keeps context.WithTimeout: its budget is half of
//     what remains of that deadline, different for every call.
const sharedSlack = 8

// sharedDeadline is one deadline context that operations share. cancel is
// kept for vet's sake and never called: the timer closes Done at the
// deadline, and operations still running on it are due then.
type sharedDeadline struct {
	ctx      context.Context
	cancel   context.CancelFunc
	deadline time.Time
	// background bounds context.Background() itself, the commonest
	// caller context, made once so that such operations allocate nothing.
	background *boundCtx
}

// opDeadlines hands out the manager's current shared deadline.
type opDeadlines struct {
	current atomic.Pointer[sharedDeadline]
}

// get returns a shared deadline due between now+timeout-timeout/sharedSlack
// and now+timeout. Two operations racing past an expiring one may both make
// a new one; either serves, and the loser's timer simply runs out.
func (o *opDeadlines) get(timeout time.Duration) *sharedDeadline {
	now := time.Now()
	if s := o.current.Load(); s != nil && !s.deadline.Before(now.Add(timeout-timeout/sharedSlack)) && !s.deadline.After(now.Add(timeout)) {
		return s
	}
	d := now.Add(timeout)
	ctx, cancel := context.WithDeadline(context.Background(), d)
	s := &sharedDeadline{ctx: ctx, cancel: cancel, deadline: d}
	s.background = &boundCtx{Context: context.Background(), shared: s}
	o.current.Store(s)
	return s
}

// boundCtx is a caller's context (for its values) bounded by a shared
// deadline. The caller's context has no Done and no deadline, so the shared
// one's are the whole truth.
type boundCtx struct {
	context.Context // the caller's, for Value
	shared          *sharedDeadline
}

func (c *boundCtx) Deadline() (time.Time, bool) { return c.shared.deadline, true }
func (c *boundCtx) Done() <-chan struct{}       { return c.shared.ctx.Done() }
func (c *boundCtx) Err() error                  { return c.shared.ctx.Err() }

// AfterFunc lets context.WithCancel and friends, given a boundCtx as parent,
// register with the shared context instead of starting a goroutine to watch
// Done.
func (c *boundCtx) AfterFunc(f func()) func() bool { return context.AfterFunc(c.shared.ctx, f) }

func noCancel() {}

// cancellableBound is a caller's context that can end, bounded by a shared
// deadline: Context is a WithCancelCause child of the caller's, cancelled
// by the shared deadline through context.AfterFunc (a registration in the
// shared context, no timer of its own).
type cancellableBound struct {
	context.Context
	deadline time.Time
}

func (c *cancellableBound) Deadline() (time.Time, bool) { return c.deadline, true }

// Err reports DeadlineExceeded, as a context.WithTimeout would, when the
// shared deadline ended the operation rather than the caller.
func (c *cancellableBound) Err() error {
	err := c.Context.Err()
	if err != nil && errors.Is(context.Cause(c.Context), context.DeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return err
}

// opContext bounds one cache operation by the manager's timeout and, when
// ctx has a deadline, by half of what remains of it: the cache only saves
// time, so a slow one must leave the caller's function the other half to
// run in rather than fail the call. See "Why operations share deadlines".
func (m *Manager) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); !ok {
		shared := m.deadlines.get(m.cfg.timeout)
		if ctx.Done() == nil {
			if ctx == context.Background() {
				return shared.background, noCancel
			}
			return &boundCtx{Context: ctx, shared: shared}, noCancel
		}
		cctx, cancel := context.WithCancelCause(ctx)
		stop := context.AfterFunc(shared.ctx, func() { cancel(context.DeadlineExceeded) })
		return &cancellableBound{Context: cctx, deadline: shared.deadline}, func() {
			stop()
			cancel(context.Canceled)
		}
	}
	return context.WithTimeout(ctx, cacheBudget(ctx, m.cfg.timeout))
}
