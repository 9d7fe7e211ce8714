package depcache

import (
	"fmt"
	"unsafe"
)

// Function identity without KeyName is the function's symbol, and every
// closure of one function literal reports the same symbol whatever it
// captured: Memoize(multiplier(2)) and Memoize(multiplier(3)) would share
// entries, and which one a caller gets would depend on the compiler (an
// inlined factory gives each call site a symbol of its own). Captured
// variables cannot be part of a key, so the first closure value a manager
// sees for an identity owns it; another closure value of the same literal
// under that manager is logged once, naming the symbol and KeyName, and runs
// uncached: a slower answer rather than another closure's.
//
// Closure values are compared by the address of their closure object (the
// funcval the func value points to): wrappers of one closure value, or of a
// top-level function or a literal that captures nothing (one static object),
// share entries as two wrappers of one function should. The manager keeps
// the first closure it saw for each identity, so its address cannot be
// reused by a later closure while the manager lives.

// closureOwner is the first closure value a manager saw for an identity.
type closureOwner struct {
	addr uintptr
	fn   any // keeps the closure object alive, so addr stays its own
}

// closureAddr returns the address of the closure object of fn, a non-nil
// func value: an interface holding a func stores the func value (a pointer
// to its closure object) as its data word.
func closureAddr(fn any) uintptr {
	type eface struct{ typ, data unsafe.Pointer }
	return uintptr((*eface)(unsafe.Pointer(&fn)).data)
}

// ownsIdentity reports whether s's function may cache under its identity
// in m: it does unless another closure value of the same literal got there
// first. s.fn is nil with KeyName, or where the identity is not a symbol.
func (m *Manager) ownsIdentity(s *memoSpec) bool {
	if s.fn == nil {
		return true
	}
	addr := closureAddr(s.fn)
	v, seen := m.closures.Load(s.id)
	if !seen {
		// The first closure value stored wins, also against a concurrent
		// first call of another one.
		v, _ = m.closures.LoadOrStore(s.id, &closureOwner{addr: addr, fn: s.fn})
	}
	if v.(*closureOwner).addr == addr {
		return true
	}
	m.logOnce("closure:"+s.id, fmt.Sprintf("depcache: %s: another closure of this function literal already caches in this manager, and captured variables are not part of keys; give each closure its own KeyName. This one runs uncached", s.id),
		"func", s.id)
	return false
}
