package depcache

import (
	"sync/atomic"
	"time"
)

// EventKind names what happened in an Event.
type EventKind int

const (
	// EventHit: a lookup found an entry (Key, Deps).
	EventHit EventKind = iota + 1
	// EventMiss: a lookup found nothing, or found an entry it could not use.
	EventMiss
	// EventSet: an entry was stored (Key, Deps, TTL).
	EventSet
	// EventDelete: entries were deleted by key (Count).
	EventDelete
	// EventInvalidate: tags were invalidated (Deps, Count).
	EventInvalidate
	// EventClear: the manager's namespace was cleared (Count).
	EventClear
	// EventError: a backend, codec or usage error (Err, Key where known).
	EventError
	// EventSkip: a computed value was not stored (Err says why: a stale
	// fill, SkipFill, a pending invalidation).
	EventSkip
	// EventBreakerOpen: the backend failed WithBreaker's number of times
	// in a row, and reads and fills skip it (Err wraps ErrBreakerOpen and
	// the last failure).
	EventBreakerOpen
	// EventBreakerClose: a probe got an answer; reads and fills resume.
	EventBreakerClose
)

var eventNames = [...]string{"", "hit", "miss", "set", "delete", "invalidate", "clear", "error", "skip", "breaker-open", "breaker-close"}

func (k EventKind) String() string {
	if k > 0 && int(k) < len(eventNames) {
		return eventNames[k]
	}
	return "unknown"
}

// Event reports one cache operation to the observer given by WithObserver.
type Event struct {
	Kind  EventKind
	Key   string
	Deps  []string
	TTL   time.Duration
	Count int
	Err   error
}

// Stats are a manager's counters since it was created.
type Stats struct {
	Hits          uint64
	Misses        uint64
	Sets          uint64
	Deletes       uint64 // entries removed by Delete
	Invalidations uint64 // entries removed by InvalidateDependency and Clear
	Errors        uint64
	// StaleFills counts fills the backend refused because a dependency was
	// invalidated while the value was being computed.
	StaleFills uint64
	// SkippedFills counts values returned but not stored for other reasons
	// (SkipFill, a pending invalidation, an encoding error).
	SkippedFills uint64
	// NoDepFills counts entries stored with no dependency at all.
	NoDepFills uint64
	// SharedFlights counts calls that waited for a concurrent call of the
	// same key in this process and took its stored result instead of
	// running the function.
	SharedFlights uint64
	// LocalHits counts the Hits served from the in-process tier
	// (WithLocalCache).
	LocalHits uint64
	// PendingInvalidations is the number of tags whose invalidation failed
	// and is being retried.
	PendingInvalidations uint64
	// TooLarge counts values not stored because their encoding was larger
	// than WithMaxValueSize.
	TooLarge uint64
	// BreakerSkips counts reads, fills and lease releases not sent to the
	// backend because the circuit breaker was open (WithBreaker).
	BreakerSkips uint64
	// BreakerOpens counts the times the breaker opened.
	BreakerOpens uint64
}

// HitRatio is Hits / (Hits + Misses), or 0 before any lookup.
func (s Stats) HitRatio() float64 {
	if s.Hits+s.Misses == 0 {
		return 0
	}
	return float64(s.Hits) / float64(s.Hits+s.Misses)
}

type counters struct {
	hits, misses, sets, deletes, invalidations, errors  atomic.Uint64
	staleFills, skippedFills, noDepFills, sharedFlights atomic.Uint64
	localHits, tooLarge                                 atomic.Uint64
}
