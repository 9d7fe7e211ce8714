package depcache

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// outageLog logs failed invalidations once per outage: the first failure
// at error level, the ones after it at debug level, counted, and the first
// success after them at info level with their number. A Redis outage
// during a burst of writes would otherwise log an error per write (and per
// retry), burying the one line that says what happened; the count is also
// in Stats.Errors, and every failure is an EventError.
type outageLog struct {
	failing atomic.Bool // read on every success: no lock while nothing fails

	mu    sync.Mutex
	since time.Time
	more  int // failures after the first of this outage
}

// failed logs a failed invalidation.
func (o *outageLog) failed(log *slog.Logger, msg string, args ...any) {
	o.mu.Lock()
	first := !o.failing.Load()
	if first {
		o.failing.Store(true)
		o.since, o.more = time.Now(), 0
	} else {
		o.more++
	}
	o.mu.Unlock()
	if first {
		log.Error(msg+" (further failures are logged at debug level until an invalidation succeeds)", args...)
		return
	}
	log.Debug(msg, args...)
}

// succeeded notes a successful invalidation, logging the end of an outage.
func (o *outageLog) succeeded(log *slog.Logger) {
	if !o.failing.Load() {
		return
	}
	o.mu.Lock()
	if !o.failing.Load() {
		o.mu.Unlock()
		return
	}
	o.failing.Store(false)
	more, since := o.more, o.since
	o.mu.Unlock()
	log.Info("depcache: invalidations succeed again", "failed_after_the_first", more, "since", since)
}
