package depcache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
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
//     eight. The child also takes the caller's lock twice (registering in
//     its children and leaving them) and the list's twice: under one
//     caller context many goroutines share (a worker's or a server's root
//     context), those four lock turns on two shared cache lines were what
//     64 goroutines queued on. So when an operation comes under the same
//     caller context as the one before it on this shared deadline, one
//     child is made for that caller and every later operation under it
//     shares it (sharedDeadline.forCaller): no allocation, no lock, only
//     loads. It is ended as the per-operation ones are, by the caller's
//     cancel or at the shared deadline, which is every sharing
//     operation's deadline too; until then it stays in the caller's
//     children (at most the timeout).
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

	// The caller context of the latest operation, by the address it
	// points to (forCaller: a heuristic, checked against caller), and the
	// child shared by operations under one caller context.
	seen   atomic.Uintptr
	caller atomic.Pointer[cancellableOp]
}

// forCaller returns the operation context that operations under ctx, a
// caller context that can end, share on s, or nil if ctx is not the
// caller context of the operation before (it then gets one of its own).
func (s *sharedDeadline) forCaller(ctx context.Context) *cancellableOp {
	if op := s.caller.Load(); op != nil && sameContext(op.caller, ctx) {
		return op
	}
	w := uintptr(contextData(ctx))
	if s.seen.Load() != w {
		s.seen.Store(w)
		return nil
	}
	// Two in a row: make the one they share. Two goroutines may race
	// here; each uses its own, and the loser's ends with the others.
	op := &cancellableOp{shared: s, caller: ctx}
	op.Context, op.cancel = context.WithCancelCause(ctx)
	op.start()
	s.caller.Store(op)
	return op
}

// contextData is the data word of ctx, the address of its value.
func contextData(ctx context.Context) unsafe.Pointer {
	return (*[2]unsafe.Pointer)(unsafe.Pointer(&ctx))[1]
}

// sameContext reports whether a and b are the same context value: the
// same dynamic type and the same address. It compares no values (a
// context of a type that is not comparable cannot make == panic).
func sameContext(a, b context.Context) bool {
	pa, pb := (*[2]unsafe.Pointer)(unsafe.Pointer(&a)), (*[2]unsafe.Pointer)(unsafe.Pointer(&b))
	return pa[0] == pb[0] && pa[1] == pb[1]
}

// expire ends every operation still running on s; it runs once, when s's
// deadline passes.
func (s *sharedDeadline) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expired = true
	// Nothing keeps a caller's context (and its values) past the deadline.
	s.caller.Store(nil)
	s.seen.Store(0)
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
	prev, next *cancellableOp  // in shared.running, under shared.mu
	caller     context.Context // when shared by the operations under it (forCaller)
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
		if op := shared.forCaller(ctx); op != nil {
			return op, noCancel
		}
		op := &cancellableOp{shared: shared}
		op.Context, op.cancel = context.WithCancelCause(ctx)
		op.start()
		return op, op.end
	}
	return context.WithTimeout(ctx, cacheBudget(ctx, m.cfg.timeout))
}
