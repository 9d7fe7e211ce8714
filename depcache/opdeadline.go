package depcache

import (
	"context"
	"errors"
	"sync"
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
//     child, which the shared deadline cancels too: the operation joins a
//     list the shared deadline walks when it passes (sharedDeadline.expire)
//     instead of arming a timer. Four allocations (the child, its cancel
//     function, its Done channel, the list node) and no thread wakeup; a
//     registration through context.AfterFunc on the shared context cost
//     eight.
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

	// The operations under a caller context that can end, running on this
	// deadline: expire cancels them when it passes.
	mu      sync.Mutex
	running *cancellableOp // a doubly linked list
	expired bool

	stale atomic.Bool // set timeout/sharedSlack after it was made (get)
}

// expire ends every operation still running on s; it runs once, when s's
// deadline passes.
func (s *sharedDeadline) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expired = true
	for op := s.running; op != nil; op = op.next {
		op.cancel(context.DeadlineExceeded)
	}
	s.running = nil
}

// opDeadlines hands out the manager's current shared deadline.
type opDeadlines struct {
	current atomic.Pointer[sharedDeadline]
}

// get returns a shared deadline due between now+timeout-timeout/sharedSlack
// and now+timeout. Two operations racing past an expiring one may both make
// a new one; either serves, and the loser's timer simply runs out.
//
// It reads no clock while the current one is fresh: a timer marks it stale
// timeout/sharedSlack after it was made. (On some virtual machines, this
// project's CI among them, time.Now costs ~0.5 µs, a visible part of a
// hit.) A timer that fires late shortens the operations' budgets by its
// lateness, never lengthens them: every deadline is still at most timeout
// after the operation began.
func (o *opDeadlines) get(timeout time.Duration) *sharedDeadline {
	if s := o.current.Load(); s != nil && !s.stale.Load() {
		return s
	}
	d := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(context.Background(), d)
	s := &sharedDeadline{ctx: ctx, cancel: cancel, deadline: d}
	s.background = &boundCtx{Context: context.Background(), shared: s}
	context.AfterFunc(ctx, s.expire)
	time.AfterFunc(timeout/sharedSlack, func() { s.stale.Store(true) })
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

// cancellableOp is an operation under a caller context that can end:
// Context is a WithCancelCause child of the caller's, which end cancels
// when the operation is over, and its shared deadline when that passes.
type cancellableOp struct {
	context.Context
	cancel     context.CancelCauseFunc
	shared     *sharedDeadline
	prev, next *cancellableOp // in shared.running, under shared.mu
}

func (c *cancellableOp) Deadline() (time.Time, bool) { return c.shared.deadline, true }

// Err reports DeadlineExceeded, as a context.WithTimeout would, when the
// shared deadline ended the operation rather than the caller.
func (c *cancellableOp) Err() error {
	err := c.Context.Err()
	if err != nil && errors.Is(context.Cause(c.Context), context.DeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return err
}

// start puts c on its shared deadline's list, or cancels it at once if the
// deadline has passed already.
func (c *cancellableOp) start() {
	s := c.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.expired {
		c.cancel(context.DeadlineExceeded)
		return
	}
	c.next = s.running
	if c.next != nil {
		c.next.prev = c
	}
	s.running = c
}

// end takes c off the list and releases its child context.
func (c *cancellableOp) end() {
	s := c.shared
	s.mu.Lock()
	switch {
	case c.prev != nil:
		c.prev.next = c.next
	case s.running == c:
		s.running = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next = nil, nil
	s.mu.Unlock()
	c.cancel(context.Canceled)
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
		op := &cancellableOp{shared: shared}
		op.Context, op.cancel = context.WithCancelCause(ctx)
		op.start()
		return op, op.end
	}
	return context.WithTimeout(ctx, cacheBudget(ctx, m.cfg.timeout))
}
