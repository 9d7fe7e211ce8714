package redisbackend

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
)

// Tier notifications: the Backend is a backends.Notifier on a single Redis
// (standalone or Sentinel), so that depcache.WithLocalCache can keep
// decoded values in process without ever serving one that an invalidation
// which has returned condemned.
//
// Pub/sub delivers a message after PUBLISH has returned, so a message alone
// cannot keep that promise. The protocol adds acknowledgements and a lease:
//
//   - Every process with a tier registers its notifier in a sorted set (the
//     registry, beside the epoch key) with an expiry of the lease plus a
//     margin in the server's clock, and renews it every lease/4. The same
//     script publishes a heartbeat on a channel only that notifier
//     subscribes to, on the connection that carries the changes.
//   - A heartbeat arrives after every change published before it (Redis
//     writes a subscriber's messages in the order it ran the PUBLISHes), so
//     when heartbeat h comes back every change published before h was sent
//     has been applied: the tier's lease is extended to h's send time plus
//     the lease. A tier serves from memory only while its lease is valid.
//   - Notify, after the store applied the change, runs one script that
//     reads the registered notifiers and publishes the change, then waits
//     for an acknowledgement from each of them (sent once the change is
//     applied), at most the lease plus a margin. A notifier that did not
//     acknowledge had not applied the change at any heartbeat sent since
//     the publication, so its lease, from a heartbeat sent before, ran out
//     before Notify returns.
//   - A notifier whose subscription drops and comes back may have lost
//     changes: on every (re)subscription it resets its tiers, after the new
//     subscription is in place, and a tier keeps a value only if no change
//     or reset came between its read and its insertion (backends.Listener).
//   - With no tier registered anywhere a Notify costs the script's round
//     trip and nothing else, and its answer is remembered for one lease: a
//     notifier that registers (or whose registration may have lapsed) waits
//     that long, then resets its tiers, before its lease starts, so a
//     change skipped meanwhile condemned nothing it keeps. A notifier that
//     once started stays subscribed (for the acknowledgements of its own
//     Notify calls) and so counts in every PUBLISH: a change that reached
//     it alone, serving no tier and no longer registered, and found no
//     other registration is remembered the same way. (Still registered,
//     its lease runs: a listener added then serves at once.)
//
// Registrations expire in the server's clock (TIME, a wall clock): a
// forward step of it by more than half a lease makes live registrations
// look expired (and other notifiers' renewals remove them) until their
// next renewal. So a Notify does not take the registry's word for who is
// alive: it always publishes, and PUBLISH counts the subscribers the
// change reached; every subscriber acknowledges every change (one with no
// tier too, for it cannot be told apart from a tier whose registration
// looks expired), and Notify waits for as many acknowledgements as PUBLISH
// counted, besides one from each registered notifier (whose subscription
// may be down). Only a probe that reached no subscriber and found no
// registration skips Notify for a lease (noneUntil). Not covered: a step
// while a tier is cut off from Redis with its connection still open
// (PUBLISH does not count it, its registration looks expired): it serves
// until its lease, from its last heartbeat, runs out.
//
// Redis Cluster is refused (Listen fails): pub/sub there would need the
// registry and the channel on every shard.

// DefaultTierLease is how long a tier may serve from memory after its
// notifier last confirmed that it had every change (WithTierLease).
const DefaultTierLease = time.Second

// WithTierLease sets the lease of in-process tiers (default
// DefaultTierLease): a process whose notifications stall stops serving from
// memory after it, and an invalidation waits at most about this long for a
// process that does not acknowledge it. A value ≤ 0 keeps the default.
func WithTierLease(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.tierLease = d
		}
	}
}

var _ backends.Notifier = (*Backend)(nil)

// errNoTierOnCluster is Listen's error on Redis Cluster.
var errNoTierOnCluster = errors.New("redisbackend: in-process tiers need a single Redis (standalone or Sentinel); Redis Cluster is not supported")

// notifyState is the Backend's notifier, started at first need: the first
// Listen, or the first Notify that finds a tier registered somewhere. A
// process without tiers whose invalidations find none never subscribes.
type notifyState struct {
	mu        sync.Mutex
	n         *notifier
	closed    bool         // under mu: no notifier starts any more
	noneUntil atomic.Int64 // LeaseClock: no tier was registered anywhere until then
}

func (s *notifyState) close() {
	s.mu.Lock()
	n := s.n
	s.closed = true
	s.mu.Unlock()
	if n != nil {
		n.close()
	}
}

func (b *Backend) tierLease() time.Duration {
	if b.cfg.tierLease > 0 {
		return b.cfg.tierLease
	}
	return DefaultTierLease
}

func (b *Backend) tierKeys(c *redis.Client) (registry, channel string) {
	return b.cfg.epochKey + ":tiers", b.cfg.epochKey + ":tiers:" + strconv.Itoa(c.Options().DB)
}

// notifier returns the Backend's notifier, starting it if start is set.
func (b *Backend) notifier(c *redis.Client, start bool) (*notifier, error) {
	b.notify.mu.Lock()
	defer b.notify.mu.Unlock()
	// Under mu, which close takes after Close set b.closed: a notifier
	// started after close looked would run for ever.
	if b.notify.closed || b.closed.Load() {
		return nil, backends.ErrClosed
	}
	if b.notify.n == nil && start {
		b.notify.n = newNotifier(b, c)
	}
	return b.notify.n, nil
}

// Listen registers l for the changes of every process sharing this Redis.
// On Redis Cluster it fails: tiers are not supported there.
func (b *Backend) Listen(l backends.Listener) (*backends.Lease, func(), error) {
	c, ok := b.c.(*redis.Client)
	if !ok {
		return nil, nil, errNoTierOnCluster
	}
	n, err := b.notifier(c, true)
	if err != nil {
		return nil, nil, err
	}
	return n.listen(l)
}

// Notify publishes c to every registered tier and waits until each has
// applied it or its lease has run out. With no tier registered anywhere
// it costs one round trip, or none for a lease after one found none.
func (b *Backend) Notify(ctx context.Context, c backends.Change) error {
	rc, ok := b.c.(*redis.Client)
	if !ok {
		return nil // Listen refuses: no tier can exist
	}
	start := backends.LeaseClock()
	if start < b.notify.noneUntil.Load() {
		return nil
	}
	registry, channel := b.tierKeys(rc)
	n, err := b.notifier(rc, false)
	if err != nil {
		return err
	}
	if n == nil || !n.isReady() {
		// Acknowledgements come through our subscription: it must be in
		// place before anything is published. The probe is an empty
		// message, which subscribers ignore.
		members, reached, err := runNotify(ctx, rc, registry, channel, nil)
		if err != nil {
			return err
		}
		if len(members) == 0 && reached == 0 {
			b.notify.noneUntil.Store(start + int64(b.tierLease()))
			return nil
		}
		if n, err = b.notifier(rc, true); err != nil {
			return err
		}
		select {
		case <-n.ready:
		case <-ctx.Done():
			return fmt.Errorf("redisbackend: notify: %w", ctx.Err())
		case <-time.After(n.lease):
			// Publish anyway: without acknowledgements the wait runs out,
			// and so have the leases of the tiers we did not hear from.
		}
	}
	return n.notify(ctx, c, start)
}

// The registry and notify scripts. TIME before a write is fine: scripts
// replicate their effects (Redis ≥ 5).
var (
	registerScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1`)
	notifyScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local m = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
table.insert(m, 1, redis.call('PUBLISH', ARGV[1], ARGV[2]))
return m`)
)

type notifier struct {
	b     *Backend
	c     *redis.Client
	lease time.Duration
	id    string
	// chInv carries changes, chHB this notifier's heartbeats, chAck the
	// acknowledgements of its own Notify calls. Channels span databases,
	// so their names carry the database.
	chInv, chHB, chAck string
	regKey             string

	tierLease backends.Lease
	msgSeq    atomic.Uint64

	mu        sync.Mutex
	listeners map[*listening]struct{}
	waiters   map[string]*ackWait

	ready     chan struct{} // closed at the first subscription
	readyOnce sync.Once
	stopCh    chan struct{}
	stopOnce  sync.Once
	wg        sync.WaitGroup
	acks      chan ack
	wake      chan struct{} // a listener arrived: register now

	psMu sync.Mutex
	ps   *redis.PubSub

	regFailing bool // the last registration failed (heartbeat goroutine only)

	hbMu       sync.Mutex
	hbSent     map[uint64]int64 // heartbeat sequence -> LeaseClock at send
	hbSeq      uint64
	registered bool  // a registration may be in the registry
	lastReg    int64 // LeaseClock at the send of the last heartbeat that came back; 0: none
	gateUntil  int64 // no lease before this (LeaseClock), then reset first
	gateOpen   bool
}

type listening struct{ l backends.Listener }

type ack struct{ channel, payload string }

// ackWait is one Notify waiting for acknowledgements.
type ackWait struct {
	acked   map[string]bool
	waitFor map[string]bool // nil until the registry was read
	need    int             // acknowledgements wanted in all: the subscribers PUBLISH reached
	done    chan struct{}
	closed  bool
}

func newNotifier(b *Backend, c *redis.Client) *notifier {
	var raw [8]byte
	rand.Read(raw[:])
	registry, base := b.tierKeys(c)
	id := hex.EncodeToString(raw[:])
	n := &notifier{
		b: b, c: c, lease: b.tierLease(), id: id,
		chInv: base, chHB: base + ":hb:" + id, chAck: base + ":ack:" + id,
		regKey:    registry,
		listeners: map[*listening]struct{}{},
		waiters:   map[string]*ackWait{},
		ready:     make(chan struct{}),
		stopCh:    make(chan struct{}),
		acks:      make(chan ack, 1024),
		wake:      make(chan struct{}, 1),
		hbSent:    map[uint64]int64{},
	}
	n.ps = c.Subscribe(context.Background(), n.chInv, n.chHB, n.chAck)
	n.wg.Add(3)
	go n.receive()
	go n.heartbeat()
	go n.sendAcks()
	return n
}

func (n *notifier) close() {
	n.stopOnce.Do(func() {
		close(n.stopCh)
		n.tierLease.Revoke()
		n.psMu.Lock()
		n.ps.Close()
		n.psMu.Unlock()
		n.wg.Wait()
		n.hbMu.Lock()
		registered := n.registered
		n.hbMu.Unlock()
		if registered {
			// Else every Notify waits for us until the registration
			// expires (a lease and a half).
			ctx, cancel := context.WithTimeout(context.Background(), n.lease)
			n.c.ZRem(ctx, n.regKey, n.id)
			cancel()
		}
	})
}

func (n *notifier) stopped() bool {
	select {
	case <-n.stopCh:
		return true
	default:
		return false
	}
}

func (n *notifier) listen(l backends.Listener) (*backends.Lease, func(), error) {
	if n.stopped() {
		return nil, nil, backends.ErrClosed
	}
	r := &listening{l: l}
	n.mu.Lock()
	n.listeners[r] = struct{}{}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
	stop := func() {
		n.mu.Lock()
		delete(n.listeners, r)
		n.mu.Unlock()
	}
	return &n.tierLease, stop, nil
}

func (n *notifier) hasListeners() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.listeners) > 0
}

// reset drops every listener's values (changes may have been lost).
func (n *notifier) reset() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for r := range n.listeners {
		r.l.Reset()
	}
}

// receive applies changes, heartbeats and acknowledgements in the order
// the server sent them.
func (n *notifier) receive() {
	defer n.wg.Done()
	backoff := time.Millisecond
	for {
		n.psMu.Lock()
		ps := n.ps
		n.psMu.Unlock()
		msg, err := ps.ReceiveTimeout(context.Background(), 2*n.lease)
		if err != nil {
			if n.stopped() {
				return
			}
			// Changes may be lost until the subscription is back: stop
			// serving now; the next subscription resets the tiers.
			n.tierLease.Revoke()
			var nerr interface{ Timeout() bool }
			if errors.As(err, &nerr) && nerr.Timeout() && n.hasListeners() {
				// No heartbeat for two leases on a connection go-redis
				// keeps: make a new one.
				n.psMu.Lock()
				n.ps.Close()
				n.ps = n.c.Subscribe(context.Background(), n.chInv, n.chHB, n.chAck)
				n.psMu.Unlock()
			}
			select {
			case <-n.stopCh:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, n.lease/4)
			continue
		}
		backoff = time.Millisecond
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == n.chInv {
				// A new connection: whatever was published while there was
				// none is lost. Values read from here on see it applied.
				n.reset()
				n.readyOnce.Do(func() { close(n.ready) })
			}
		case *redis.Message:
			switch m.Channel {
			case n.chInv:
				n.applyChange(m.Payload)
			case n.chHB:
				n.heartbeatBack(m.Payload)
			case n.chAck:
				if id, member, ok := splitAck(m.Payload); ok {
					n.acked(id, member)
				}
			}
		}
	}
}

func (n *notifier) applyChange(payload string) {
	if payload == "" {
		return // a Notify's probe: it counts subscribers, nobody waits for us
	}
	r := wireReader{b: []byte(payload)}
	msgID, ackCh := r.str(), r.str()
	if r.bad {
		n.b.log.Error("redisbackend: malformed tier change", "len", len(payload))
		return
	}
	c, err := backends.ParseChange(r.b)
	if err != nil {
		n.b.log.Error("redisbackend: malformed tier change", "err", err)
		n.reset() // something was condemned; we cannot tell what
		return
	}
	n.mu.Lock()
	for l := range n.listeners {
		l.l.Changed(c)
	}
	n.mu.Unlock()
	// Acknowledged even without listeners (nothing here serves, so the
	// change is applied): PUBLISH counted us, and the Notify waits for as
	// many acknowledgements as it counted.
	if ackCh == n.chAck {
		n.acked(msgID, n.id)
		return
	}
	select {
	case n.acks <- ack{ackCh, msgID + "\x00" + n.id}:
	default:
		// The notifier waits for us at most a lease; by then our lease,
		// from heartbeats sent before this change, has run out.
	}
}

func (n *notifier) heartbeatBack(payload string) {
	seq, err := strconv.ParseUint(payload, 10, 64)
	if err != nil {
		return
	}
	// All under hbMu, so that an unregistration (which revokes the lease
	// and forgets the heartbeats in flight under it) cannot be followed by
	// an extension from an older heartbeat.
	n.hbMu.Lock()
	defer n.hbMu.Unlock()
	sent, ok := n.hbSent[seq]
	for s := range n.hbSent {
		if s <= seq {
			delete(n.hbSent, s)
		}
	}
	if !ok {
		return
	}
	arrived := backends.LeaseClock()
	// The registration this heartbeat came with ran before it arrived.
	// Arriving within a lease of the last one's send, it renewed that
	// registration (the registry keeps one a lease and a half) before it
	// lapsed. Otherwise (the first, or after a gap) a Notify may have found
	// no tier and skipped publishing for up to a lease: wait that long, and
	// reset, before serving.
	if n.lastReg == 0 || arrived-n.lastReg > int64(n.lease) {
		n.gateUntil, n.gateOpen = arrived+int64(n.lease), false
	}
	n.lastReg = sent
	if !n.gateOpen {
		if arrived < n.gateUntil {
			return
		}
		n.gateOpen = true
		n.reset()
	}
	n.tierLease.ExtendTo(sent + int64(n.lease))
}

// heartbeat registers the notifier while it has listeners and publishes a
// heartbeat with each registration.
func (n *notifier) heartbeat() {
	defer n.wg.Done()
	t := time.NewTicker(n.lease / 4)
	defer t.Stop()
	for {
		select {
		case <-n.stopCh:
			return
		case <-t.C:
		case <-n.wake:
		}
		if !n.hasListeners() {
			n.unregister()
			continue
		}
		n.register()
	}
}

func (n *notifier) register() {
	n.hbMu.Lock()
	n.hbSeq++
	seq := n.hbSeq
	n.hbSent[seq] = backends.LeaseClock()
	n.registered = true // from now on the registry may hold us
	n.hbMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), n.lease/4)
	defer cancel()
	// The registration outlives the lease it backs by a margin in the
	// server's clock: it is what makes a Notify wait for us.
	err := registerScript.Run(ctx, n.c, []string{n.regKey}, n.id,
		(n.lease + n.lease/2).Milliseconds(), n.chHB, strconv.FormatUint(seq, 10)).Err()
	switch {
	case err != nil && !n.stopped():
		// Once per outage: it is retried every lease/4.
		if !n.regFailing {
			n.regFailing = true
			n.b.log.Warn("redisbackend: tier registration failed; tiers stop serving when their lease runs out (logged once until it succeeds)", "err", err)
		}
	case err == nil && n.regFailing:
		n.regFailing = false
		n.b.log.Info("redisbackend: tier registration succeeds again")
	}
}

func (n *notifier) unregister() {
	n.hbMu.Lock()
	was := n.registered
	n.registered, n.lastReg, n.gateOpen, n.gateUntil = false, 0, false, 0
	clear(n.hbSent)
	n.tierLease.Revoke()
	n.hbMu.Unlock()
	if !was {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.lease/4)
	defer cancel()
	if err := n.c.ZRem(ctx, n.regKey, n.id).Err(); err != nil {
		n.b.log.Warn("redisbackend: tier unregistration failed; invalidations wait for it until it expires", "err", err)
	}
}

// sendAcks publishes acknowledgements off the receive loop.
func (n *notifier) sendAcks() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stopCh:
			return
		case a := <-n.acks:
			ctx, cancel := context.WithTimeout(context.Background(), n.lease/4)
			n.c.Publish(ctx, a.channel, a.payload)
			cancel()
		}
	}
}

func (n *notifier) isReady() bool {
	select {
	case <-n.ready:
		return true
	default:
		return false
	}
}

// notify publishes c and waits for the acknowledgements. start is the
// LeaseClock before the first round trip of the Notify.
func (n *notifier) notify(ctx context.Context, c backends.Change, start int64) error {
	msgID := n.id + ":" + strconv.FormatUint(n.msgSeq.Add(1), 10)
	w := &ackWait{acked: map[string]bool{}, done: make(chan struct{})}
	n.mu.Lock()
	n.waiters[msgID] = w
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.waiters, msgID)
		n.mu.Unlock()
	}()
	msg := appendWireString(nil, msgID)
	msg = appendWireString(msg, n.chAck)
	msg = backends.AppendChange(msg, c)
	members, reached, err := runNotify(ctx, n.c, n.regKey, n.chInv, msg)
	if err != nil {
		return err
	}
	if len(members) == 0 && reached == 0 {
		n.b.notify.noneUntil.Store(start + int64(n.lease))
		return nil
	}
	n.mu.Lock()
	w.waitFor = map[string]bool{}
	w.need = int(reached)
	for _, m := range members {
		if !w.acked[m] {
			w.waitFor[m] = true
		}
	}
	if w.complete() {
		w.closed = true
		close(w.done)
	}
	n.mu.Unlock()
	// A tier that does not answer within a lease (and a margin for our
	// clocks' rates) has stopped serving by then.
	timer := time.NewTimer(n.lease + n.lease/10 + time.Millisecond)
	defer timer.Stop()
	select {
	case <-w.done:
	case <-timer.C:
	case <-ctx.Done():
		return fmt.Errorf("redisbackend: notify: waiting for %d tiers: %w", len(members), ctx.Err())
	}
	if n.onlyReached(w, members, reached) {
		// No tier anywhere but perhaps ours, which has no listener: as a
		// probe that found nobody (our subscription, kept for the
		// acknowledgements, counts in every PUBLISH).
		n.b.notify.noneUntil.Store(start + int64(n.lease))
	}
	return nil
}

// onlyReached reports whether a change reached this notifier alone, which
// serves no tier: PUBLISH counted one subscriber, and it was ours (our
// subscription got the change: it was subscribed when PUBLISH ran), and
// the registry held no notifier but perhaps this one, and this one is not
// registered now. A notifier whose last listener has just left stays
// registered until the heartbeat's next tick, its lease valid: a listener
// arriving meanwhile serves at once, with no wait for changes skipped
// under noneUntil. Once unregistered (lease revoked, lastReg forgotten) its
// next lease waits a lease from a heartbeat that arrives after now, then
// resets, as another process's would.
func (n *notifier) onlyReached(w *ackWait, members []string, reached int64) bool {
	if reached != 1 || len(members) > 1 || len(members) == 1 && members[0] != n.id {
		return false
	}
	// hbMu before mu is the order heartbeatBack takes them in; they are
	// not needed together: registration is never undone for a listener.
	n.hbMu.Lock()
	registered := n.registered
	n.hbMu.Unlock()
	if registered {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return w.acked[n.id] && len(n.listeners) == 0
}

// runNotify publishes msg on channel and returns the registered notifiers
// and how many subscribers the message reached.
func runNotify(ctx context.Context, c *redis.Client, registry, channel string, msg []byte) (members []string, reached int64, err error) {
	reply, err := notifyScript.Run(ctx, c, []string{registry}, channel, msg).Slice()
	if err != nil {
		return nil, 0, fmt.Errorf("redisbackend: notify tiers: %w", err)
	}
	if len(reply) == 0 {
		return nil, 0, fmt.Errorf("redisbackend: notify tiers: an empty reply")
	}
	reached, ok := reply[0].(int64)
	if !ok {
		return nil, 0, fmt.Errorf("redisbackend: notify tiers: PUBLISH answered %T", reply[0])
	}
	members = make([]string, 0, len(reply)-1)
	for _, m := range reply[1:] {
		id, ok := m.(string)
		if !ok {
			return nil, 0, fmt.Errorf("redisbackend: notify tiers: a registry member of type %T", m)
		}
		members = append(members, id)
	}
	return members, reached, nil
}

// complete reports whether every registered notifier and as many
// subscribers as the change reached have acknowledged. w's notifier's mu
// is held.
func (w *ackWait) complete() bool {
	return len(w.waitFor) == 0 && len(w.acked) >= w.need
}

func (n *notifier) acked(msgID, member string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := n.waiters[msgID]
	if w == nil || w.closed {
		return
	}
	w.acked[member] = true
	if w.waitFor == nil {
		return
	}
	delete(w.waitFor, member)
	if w.complete() {
		w.closed = true
		close(w.done)
	}
}

func splitAck(p string) (id, member string, ok bool) {
	for i := 0; i < len(p); i++ {
		if p[i] == 0 {
			return p[:i], p[i+1:], true
		}
	}
	return "", "", false
}

func appendWireString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

type wireReader struct {
	b   []byte
	bad bool
}

func (r *wireReader) str() string {
	n, k := binary.Uvarint(r.b)
	if k <= 0 || n > uint64(len(r.b)-k) {
		r.bad = true
		return ""
	}
	s := string(r.b[k : k+int(n)])
	r.b = r.b[k+int(n):]
	return s
}
