package depcache

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/depcache/go-depcache/internal/taglist"
)

// pendingSet holds the tags whose invalidation failed, and retries them in
// the background until the backend takes them. While a tag is pending, this
// process counts a hit on an entry carrying it as a miss and stores no value
// carrying it: the entry may predate a committed write.
type pendingSet struct {
	m *Manager

	mu    sync.Mutex
	tags  map[string]uint64 // tag → generation of its latest failure
	gen   uint64
	clear bool // the set overflowed: clear the whole namespace instead
	// clearGen is the generation of the latest failure that only a Clear
	// covers (its tag was not kept): a Clear that began before it does not
	// end the need for one.
	clearGen uint64
	size     atomic.Int64

	wake    chan struct{}
	quit    chan struct{}
	done    chan struct{}
	started bool
	stopped bool
}

func newPendingSet(m *Manager) *pendingSet {
	return &pendingSet{m: m, tags: map[string]uint64{}, wake: make(chan struct{}, 1)}
}

// affects reports whether an entry with these tags must not be served or
// stored. It costs one atomic load while nothing is pending.
func (p *pendingSet) affects(deps []string) bool {
	if p.size.Load() == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.clear {
		return true
	}
	for _, d := range deps {
		if _, ok := p.tags[d]; ok {
			return true
		}
	}
	return false
}

func (p *pendingSet) len() int { return int(p.size.Load()) }

func (p *pendingSet) add(deps []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		p.m.log.Error("depcache: invalidation failed on a closed manager; it will not be retried", "deps", taglist.Quote(deps))
		return
	}
	p.gen++
	for _, d := range deps {
		if _, known := p.tags[d]; known {
			// Renew it even in overflow: a retry of it under way may have
			// stamped the tag before the write behind this failure.
			p.tags[d] = p.gen
			continue
		}
		if !p.clear && len(p.tags) >= p.m.cfg.pendingLimit {
			// Too many distinct tags to remember: one Clear of the namespace
			// covers them all.
			p.clear = true
			p.m.log.Error("depcache: too many failed invalidations; the namespace will be cleared", "limit", p.m.cfg.pendingLimit)
		}
		if p.clear {
			p.clearGen = p.gen
		} else {
			p.tags[d] = p.gen
		}
	}
	p.updateSize()
	if !p.started {
		p.started = true
		p.quit = make(chan struct{})
		p.done = make(chan struct{})
		go p.loop()
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// changed marks the end of a pending invalidation, after it reached the
// backend: a lookup whose round trip spans it does not serve its entry.
func (p *pendingSet) changed() { p.m.servingChanged() }

func (p *pendingSet) updateSize() {
	n := int64(len(p.tags))
	if p.clear {
		n++
	}
	p.size.Store(n)
}

// loop retries with capped exponential backoff and jitter until the set is
// empty or stop.
func (p *pendingSet) loop() {
	defer close(p.done)
	wait := p.m.cfg.retryMin
	timer := time.NewTimer(jitter(wait))
	defer timer.Stop()
	for {
		select {
		case <-p.quit:
			return
		case <-timer.C:
		case <-p.wake:
			// A new failure: wait the current backoff before retrying, not
			// immediately (the backend just failed).
			continue
		}
		if err := p.retry(context.Background()); err != nil {
			wait = min(wait*2, p.m.cfg.retryMax)
		} else {
			wait = p.m.cfg.retryMin
		}
		if p.size.Load() == 0 {
			// Park until the next failure.
			select {
			case <-p.quit:
				return
			case <-p.wake:
			}
		}
		timer.Reset(jitter(wait))
	}
}

// jitter returns a wait drawn uniformly between half of d and d: processes
// whose invalidations failed at the same moment (a Redis restart) must not
// all retry at the same moment too.
func jitter(d time.Duration) time.Duration {
	half := d / 2
	if half <= 0 {
		return d
	}
	return d - half + rand.N(half+1)
}

// retry makes one attempt at everything pending. What it removes from the
// set afterwards is only what it delivered: a tag (or a Clear) that failed
// again while the attempt was under way keeps its newer generation and
// stays pending.
func (p *pendingSet) retry(ctx context.Context) error {
	p.mu.Lock()
	clear, clearGen := p.clear, p.clearGen
	snapshot := make(map[string]uint64, len(p.tags))
	for t, g := range p.tags {
		snapshot[t] = g
	}
	p.mu.Unlock()
	ctx = context.WithoutCancel(ctx)

	// The tags still known are invalidated one by one even when a Clear
	// follows. The Clear covers them too (it stamps the namespace, so a
	// fill of it or of one of its tags that began before it, in any
	// process, is refused, and removes every entry registered under its
	// tags), but they stay pending until their own invalidation succeeds,
	// whatever the Clear does.
	err := p.invalidateKnown(ctx, snapshot)
	if !clear {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, p.m.cfg.invTimeout)
	_, cerr := p.m.backend.Clear(cctx, p.m.ns)
	if cerr == nil {
		cerr = p.m.notifyClear(cctx)
	}
	cancel()
	if cerr != nil {
		p.m.backendError("clear", "", cerr)
		return errors.Join(err, fmt.Errorf("depcache: clear %q: %w", p.m.ns, cerr))
	}
	p.mu.Lock()
	if p.clearGen == clearGen {
		p.clear = false
		p.changed()
	}
	p.updateSize()
	p.mu.Unlock()
	return err
}

// invalidateKnown invalidates the tags of snapshot in batches and removes
// from the set those that did not fail again meanwhile. A batch the backend
// refuses (it answered, with an error) is retried one tag at a time, so
// that one tag refused for good (a key of the wrong type under the prefix)
// holds back neither the others of its batch nor the later batches; an
// unreachable backend ends the attempt at once.
func (p *pendingSet) invalidateKnown(ctx context.Context, snapshot map[string]uint64) error {
	tags := make([]string, 0, len(snapshot))
	for t := range snapshot {
		tags = append(tags, t)
	}
	const batch = 256
	var refused error // the first refusal, returned once every batch was tried
	for len(tags) > 0 {
		k := min(batch, len(tags))
		_, err := p.m.invalidate(ctx, tags[:k])
		switch {
		case err == nil:
			for _, t := range tags[:k] {
				p.delivered(t, snapshot[t])
			}
		case unreachable(err):
			return err
		case k == 1:
			refused = cmp.Or(refused, err)
		default:
			for _, t := range tags[:k] {
				if _, err := p.m.invalidate(ctx, []string{t}); err != nil {
					if unreachable(err) {
						return err
					}
					refused = cmp.Or(refused, err)
					continue
				}
				p.delivered(t, snapshot[t])
			}
		}
		tags = tags[k:]
	}
	return refused
}

// delivered removes tag from the set unless it failed again (a newer
// generation than gen) meanwhile.
func (p *pendingSet) delivered(tag string, gen uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tags[tag] == gen {
		delete(p.tags, tag)
		p.changed()
	}
	p.updateSize()
}

// unreachable reports an error of not reaching the backend in time (a
// timeout, a network error), after which trying more tags only costs more
// timeouts.
func unreachable(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.As(err, &ne)
}

// stop ends the retry loop and returns how many tags were still pending.
func (p *pendingSet) stop() int {
	p.mu.Lock()
	p.stopped = true
	started := p.started
	p.mu.Unlock()
	if started {
		close(p.quit)
		<-p.done
	}
	return p.len()
}

// RetryPending makes one attempt, now, at every invalidation that failed and
// is waiting for its background retry. It returns the first error.
func (m *Manager) RetryPending(ctx context.Context) error {
	ctx = orBackground(ctx)
	if m.closed.Load() {
		return ErrClosed
	}
	return m.pending.retry(ctx)
}
