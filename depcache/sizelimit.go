package depcache

import (
	"errors"
	"fmt"
)

// DefaultMaxValueSize is the largest payload (the encoded value) a manager
// stores unless WithMaxValueSize says otherwise.
const DefaultMaxValueSize = 8 << 20

// ErrValueTooLarge is wrapped by the error of a Set whose encoded value is
// larger than the manager's WithMaxValueSize, and reported (once per
// function) for a memoized result that was returned uncached for that
// reason.
var ErrValueTooLarge = errors.New("depcache: value larger than the size limit")

// WithMaxValueSize bounds the encoded size of a stored value in bytes
// (default DefaultMaxValueSize; at least 1; math.MaxInt for no limit). A
// memoized result over it is returned to the caller uncached, counted in
// Stats.TooLarge and Stats.SkippedFills, and logged once per function, not
// once per call. A Set over it returns an error wrapping ErrValueTooLarge
// (logged once per manager). One huge value would otherwise cost every
// reader its transfer, and Redis refuses strings above proto-max-bulk-len
// (512 MB by default) with an error on every fill.
func WithMaxValueSize(n int) Option {
	return func(c *config) {
		if n < 1 {
			c.invalid(fmt.Sprintf("WithMaxValueSize(%d): must be at least 1", n))
			return
		}
		c.maxValueSize = n
	}
}

// tooLarge reports a payload over the size limit, counting it and logging
// once per kind (a function's identity, or "Set").
func (m *Manager) tooLarge(kind, key string, size int) error {
	if size <= m.cfg.maxValueSize {
		return nil
	}
	m.stats.tooLarge.Add(1)
	err := fmt.Errorf("%w: %d bytes encoded, limit %d (WithMaxValueSize)", ErrValueTooLarge, size, m.cfg.maxValueSize)
	m.logOnce("too-large:"+kind, "depcache: value not stored, returned uncached; further ones of this kind are not logged", "kind", kind, "key", key, "err", err)
	m.emit(Event{Kind: EventSkip, Key: key, Err: err})
	return err
}
