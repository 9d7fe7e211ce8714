// Package pluginapi holds the few operations on depcache's cached
// computations that the GORM plugin needs and that applications should not
// call: a context that restricts reads and fills (a database transaction),
// and a SkipFill that reaches every enclosing computation (a read whose
// result must not reach the cache by any path).
//
// It lives under internal/ so that only this module can import it. It
// imports nothing of ours: depcache stores its computations in contexts
// through WithComputation and honours Restrict through Allowed, and
// gormplugin calls the rest. Imports keep pointing one way: gormplugin
// imports depcache and pluginapi, depcache imports pluginapi, and neither
// of those two imports gormplugin.
package pluginapi

import "context"

// Computation is a running cached computation, as depcache keeps it in a
// context.
type Computation interface {
	// SkipFillAll makes the computation and every computation enclosing it
	// return their results without storing them.
	SkipFillAll(reason string)
}

type computationKey struct{}

// WithComputation returns ctx carrying c as the innermost computation.
func WithComputation(ctx context.Context, c Computation) context.Context {
	return context.WithValue(ctx, computationKey{}, c)
}

// ComputationOf returns the innermost computation under ctx, or nil.
func ComputationOf(ctx context.Context) Computation {
	if ctx == nil {
		return nil
	}
	c, _ := ctx.Value(computationKey{}).(Computation)
	return c
}

// InComputation reports whether a cached computation runs under ctx, so
// that a caller can skip work whose only use is to tag one.
func InComputation(ctx context.Context) bool { return ComputationOf(ctx) != nil }

// SkipFillAll is SkipFill for the innermost computation under ctx and every
// computation enclosing it: for a result that must not reach the cache by
// any path, such as one read inside a database transaction. Outside a
// computation it does nothing.
func SkipFillAll(ctx context.Context, reason string) {
	if c := ComputationOf(ctx); c != nil {
		c.SkipFillAll(reason)
	}
}

type restrictKey struct{}

// Restrict returns a context under which each memoized call asks allow
// whether it may read the cache and whether it may fill it. A call that may
// not read runs its function; one that may not fill returns its result
// without storing it. The GORM plugin uses it for calls inside a database
// transaction, whose answers change once the transaction writes.
func Restrict(ctx context.Context, allow func() (read, fill bool)) context.Context {
	return context.WithValue(ctx, restrictKey{}, allow)
}

// Allowed reports what the innermost Restrict under ctx allows: both
// reading and filling when there is none.
func Allowed(ctx context.Context) (read, fill bool) {
	if allow, ok := ctx.Value(restrictKey{}).(func() (bool, bool)); ok {
		return allow()
	}
	return true, true
}

// Bytes is a memoized result of raw bytes that the caller only reads: a
// hit hands it the backend's reply as it is, where a []byte result gets a
// copy of its own (the GORM plugin's entries, which it decodes in place).
// It is stored as a []byte is.
type Bytes []byte
