package gormplugin

import (
	"sync/atomic"
	"unsafe"
)

// With the manager's in-process tier (depcache.WithLocalCache) every hit on
// a key gets the very same entry bytes back, which the plugin used to
// decode again on each hit. entryMemo keeps the decoding of recent
// entries, named by the address and length of their bytes. That is sound
// because a memo entry holds the bytes it names: while it exists no other
// allocation can have that address, so bytes at the same address and of
// the same length are the same bytes — no one writes to an entry once the
// backend returned it (decodeEntry relies on that too). What a memo entry
// maps is the identity of the bytes to their decoding, never a cache key
// to a value: an invalidated or refilled key comes back as other bytes, so
// the memo cannot serve anything stale. The decoding is shared by the hits
// that find it, which only read it, as they already share the tier's
// bytes.
//
// A decoding is kept on the second sighting of an address (the first one
// only notes it), so that a backend that returns fresh bytes on every hit
// costs no allocation; entries over memoMaxBytes are never kept. The memo
// holds at most len(slots) entries, so at most about twice
// len(slots)*memoMaxBytes of memory.
type entryMemo struct {
	slots [128]memoSlot
}

type memoSlot struct {
	seen atomic.Uintptr              // the address last decoded here
	e    atomic.Pointer[memoDecoded] // kept decoding
}

type memoDecoded struct {
	b  []byte // held: its address names it
	qs []recordedQuery
}

const memoMaxBytes = 8 << 10

// decode returns the decoding of b, decoding it only if the memo has not
// kept it.
func (m *entryMemo) decode(b []byte) ([]recordedQuery, error) {
	if len(b) == 0 || len(b) > memoMaxBytes {
		return decodeEntry(b)
	}
	p := unsafe.SliceData(b)
	addr := uintptr(unsafe.Pointer(p))
	s := &m.slots[(addr>>4^addr>>11)%uintptr(len(m.slots))]
	if e := s.e.Load(); e != nil && unsafe.SliceData(e.b) == p && len(e.b) == len(b) {
		return e.qs, nil
	}
	qs, err := decodeEntry(b)
	if err != nil {
		return nil, err
	}
	if s.seen.Swap(addr) == addr {
		s.e.Store(&memoDecoded{b: b, qs: qs})
	}
	return qs, nil
}
