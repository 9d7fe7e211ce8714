package depcache

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends/memory"
)

type opKey struct{}

// An operation under a context that can neither end nor carries a deadline
// gets a shared deadline no later than its timeout, keeps the caller's
// values, and its Done closes once that deadline passes.
func TestOpContextSharedDeadlineEndsWithinTheTimeout(t *testing.T) {
	const timeout = 40 * time.Millisecond
	m := New(memory.New(), WithTimeout(timeout))
	defer m.Close()
	parent := context.WithValue(context.Background(), opKey{}, "v")
	ctx, cancel := m.opContext(parent)
	defer cancel()
	returned := time.Now()
	deadline, ok := ctx.Deadline()
	if !ok {
		t.Fatal("operation context has no deadline")
	}
	if deadline.After(returned.Add(timeout)) {
		t.Errorf("deadline %v later than the timeout after opContext returned (%v)", deadline, returned.Add(timeout))
	}
	if ctx.Value(opKey{}) != "v" {
		t.Error("operation context lost the caller's value")
	}
	<-ctx.Done()
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("Err after Done = %v, want DeadlineExceeded", ctx.Err())
	}
	if time.Now().Before(deadline) {
		t.Errorf("Done closed before the reported deadline")
	}
}

// A context derived from an operation's (as go-redis may do) ends with it.
func TestOpContextChildEndsWithTheOperation(t *testing.T) {
	m := New(memory.New(), WithTimeout(20*time.Millisecond))
	defer m.Close()
	ctx, cancel := m.opContext(context.Background())
	defer cancel()
	child, stop := context.WithCancel(ctx)
	defer stop()
	<-child.Done()
	if !errors.Is(child.Err(), context.Canceled) && !errors.Is(child.Err(), context.DeadlineExceeded) {
		t.Errorf("child Err = %v", child.Err())
	}
}

// A cancelled caller context still reaches the operation.
func TestOpContextFollowsTheCallersCancel(t *testing.T) {
	m := New(memory.New(), WithTimeout(time.Hour))
	defer m.Close()
	parent, stop := context.WithCancel(context.Background())
	ctx, cancel := m.opContext(parent)
	defer cancel()
	stop()
	<-ctx.Done()
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Errorf("Err = %v, want Canceled", ctx.Err())
	}
}

// Operations under context.Background() share one bound context and
// allocate nothing for it; others keep their own values.
func TestOpContextBackgroundAllocatesNothing(t *testing.T) {
	m := New(memory.New(), WithTimeout(time.Hour))
	defer m.Close()
	allocs := testing.AllocsPerRun(100, func() {
		_, cancel := m.opContext(context.Background())
		cancel()
	})
	if allocs != 0 {
		t.Errorf("opContext(Background) allocates %v times, want 0", allocs)
	}
	ctx, cancel := m.opContext(context.WithValue(context.Background(), opKey{}, "w"))
	defer cancel()
	if ctx.Value(opKey{}) != "w" {
		t.Error("a caller's value is lost")
	}
}

// An operation under a caller context that can end is bounded by the
// shared deadline too, and reports DeadlineExceeded when that ends it.
func TestOpContextCancellableCallerGetsTheSharedDeadline(t *testing.T) {
	const timeout = 30 * time.Millisecond
	m := New(memory.New(), WithTimeout(timeout))
	defer m.Close()
	parent, stop := context.WithCancel(context.WithValue(context.Background(), opKey{}, "c"))
	defer stop()
	ctx, cancel := m.opContext(parent)
	defer cancel()
	returned := time.Now()
	deadline, ok := ctx.Deadline()
	if !ok || deadline.After(returned.Add(timeout)) {
		t.Fatalf("deadline %v, %v; want one no later than %v", deadline, ok, returned.Add(timeout))
	}
	if ctx.Value(opKey{}) != "c" {
		t.Error("the caller's value is lost")
	}
	<-ctx.Done()
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("Err = %v, want DeadlineExceeded", ctx.Err())
	}
	if parent.Err() != nil {
		t.Error("the operation's end cancelled the caller's context")
	}
}

// Operations under cancellable callers, each under another caller than the
// operation before, leave their shared deadline's list when they end, in
// any order, and cost five allocations at most (the child context, its
// cancel function, its Done channel, the list node, the returned end
// function).
func TestOpContextCancellableOperationsLeaveTheList(t *testing.T) {
	m := New(memory.New(), WithTimeout(time.Hour))
	defer m.Close()
	var parents [2]context.Context
	for i := range parents {
		p, stop := context.WithCancel(context.Background())
		defer stop()
		parents[i] = p
	}
	var ends []context.CancelFunc
	for i := range 5 {
		ctx, end := m.opContext(parents[i%2])
		pollDone(ctx)
		ends = append(ends, end)
	}
	for _, i := range []int{2, 0, 4, 1, 3} {
		ends[i]()
	}
	shared := m.deadlines.current.Load()
	shared.mu.Lock()
	running := shared.running
	shared.mu.Unlock()
	if running != nil {
		t.Fatal("an ended operation is still on its shared deadline's list")
	}
	i := 0
	allocs := testing.AllocsPerRun(100, func() {
		i++
		ctx, end := m.opContext(parents[i%2])
		pollDone(ctx)
		end()
	})
	if allocs > 5 {
		t.Errorf("an operation under a cancellable context allocates %v times, want at most 5", allocs)
	}
}

// Operations that come one after another under one cancellable caller
// context share one operation context from the second on: it allocates
// nothing more, follows the caller's cancel, and the operations' ends do
// not end it.
func TestOpContextOperationsUnderOneCallerShareOne(t *testing.T) {
	m := New(memory.New(), WithTimeout(time.Hour))
	defer m.Close()
	parent, stop := context.WithCancel(context.WithValue(context.Background(), opKey{}, "s"))
	defer stop()
	first, end := m.opContext(parent)
	end()
	if first.Err() == nil {
		t.Fatal("the first operation's context outlived its end")
	}
	second, end := m.opContext(parent)
	end()
	third, end := m.opContext(parent)
	end()
	if second != third {
		t.Fatal("operations in a row under one caller context do not share an operation context")
	}
	if second.Err() != nil {
		t.Fatalf("an operation's end ended the shared context: %v", second.Err())
	}
	if second.Value(opKey{}) != "s" {
		t.Error("the caller's value is lost")
	}
	if d, ok := second.Deadline(); !ok || d.IsZero() {
		t.Error("the shared context has no deadline")
	}
	allocs := testing.AllocsPerRun(100, func() {
		ctx, end := m.opContext(parent)
		pollDone(ctx)
		end()
	})
	if allocs != 0 {
		t.Errorf("a further operation under the same caller allocates %v times, want 0", allocs)
	}
	// Another caller in between: its own context, not the shared one.
	other, stopOther := context.WithCancel(context.Background())
	defer stopOther()
	own, end := m.opContext(other)
	if own == second {
		t.Error("an operation under another caller got the shared context")
	}
	end()
	stop()
	<-second.Done()
	if !errors.Is(second.Err(), context.Canceled) {
		t.Errorf("Err after the caller's cancel = %v, want Canceled", second.Err())
	}
	if ctx, end := m.opContext(parent); ctx.Err() == nil {
		t.Error("an operation under a cancelled caller got a live context")
	} else {
		end()
	}
}

// The context operations under one caller share ends at their shared
// deadline, with DeadlineExceeded, without cancelling the caller, and the
// shared deadline lets go of the caller's context then.
func TestOpContextSharedCallerContextEndsAtTheDeadline(t *testing.T) {
	const timeout = 30 * time.Millisecond
	m := New(memory.New(), WithTimeout(timeout))
	defer m.Close()
	parent, stop := context.WithCancel(context.Background())
	defer stop()
	_, end := m.opContext(parent)
	end()
	returned := time.Now()
	ctx, end := m.opContext(parent)
	defer end()
	op, ok := ctx.(*cancellableOp)
	if !ok || op.caller == nil {
		t.Fatalf("the second operation in a row got %T, not the shared context", ctx)
	}
	if d, _ := ctx.Deadline(); d.After(returned.Add(timeout)) {
		t.Fatalf("deadline %v later than the timeout after opContext returned (%v)", d, returned.Add(timeout))
	}
	<-ctx.Done()
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("Err = %v, want DeadlineExceeded", ctx.Err())
	}
	if parent.Err() != nil {
		t.Error("the shared deadline cancelled the caller's context")
	}
	if op.shared.caller.Load() != nil || op.shared.seen.Load() != 0 {
		t.Error("the expired shared deadline still holds the caller's context")
	}
}

// pollDone looks at Done without waiting, as go-redis does on every
// command (which makes a cancelCtx allocate its channel).
func pollDone(ctx context.Context) {
	select {
	case <-ctx.Done():
	default:
	}
}

// A shared deadline is replaced once it is stale, so that later operations
// get a full budget again, and the new one is no later than the timeout.
func TestOpContextSharedDeadlineIsRenewed(t *testing.T) {
	const timeout = 40 * time.Millisecond
	m := New(memory.New(), WithTimeout(timeout))
	defer m.Close()
	ctx, end := m.opContext(context.Background())
	first, _ := ctx.Deadline()
	end()
	for giveUp := time.Now().Add(5 * time.Second); ; {
		ctx, end := m.opContext(context.Background())
		returned := time.Now()
		d, _ := ctx.Deadline()
		end()
		if d.After(returned.Add(timeout)) {
			t.Fatalf("deadline %v is later than the timeout after opContext returned (%v)", d, returned.Add(timeout))
		}
		if d.After(first) {
			return
		}
		if time.Now().After(giveUp) {
			t.Fatal("the shared deadline was never renewed")
		}
		time.Sleep(time.Millisecond) // pacing the poll, not synchronising
	}
}
