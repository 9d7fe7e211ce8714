package redisbackend

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
)

const notifyTestLease = 200 * time.Millisecond

// recorder is a backends.Listener that records what it gets.
type recorder struct {
	mu      sync.Mutex
	changes []backends.Change
	resets  int
}

func (r *recorder) Changed(c backends.Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, c)
}

func (r *recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resets++
}

func (r *recorder) state() ([]backends.Change, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.changes), r.resets
}

// closableDialer dials connections it can close all at once.
type closableDialer struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (d *closableDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
	}
	return c, err
}

func (d *closableDialer) closeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

func notifyBackend(t *testing.T, opt *redis.Options) *Backend {
	c := newClient(t, opt, nil)
	b := New(c, WithTierLease(notifyTestLease), WithLogger(testLogger(t)))
	t.Cleanup(func() { b.Close() })
	return b
}

// listenServing listens on b with rec and waits until the lease is valid.
func listenServing(t *testing.T, b *Backend, rec *recorder) (*backends.Lease, func()) {
	t.Helper()
	lease, stop, err := b.Listen(rec)
	if err != nil {
		t.Fatal(err)
	}
	waitNotify(t, "the lease", lease.Valid)
	return lease, stop
}

func waitNotify(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestNotifyDeliversBeforeReturning: once Notify returns, a listener in
// another "process" (another client) has the change.
func TestNotifyDeliversBeforeReturning(t *testing.T) {
	mr := miniredis.RunT(t)
	sender := notifyBackend(t, &redis.Options{Addr: mr.Addr()})
	receiver := notifyBackend(t, &redis.Options{Addr: mr.Addr()})
	var rec recorder
	lease, stop := listenServing(t, receiver, &rec)
	defer stop()
	want := backends.Change{NS: "ns", Tags: []string{"a\x00b", "c"}, Keys: []string{"k"}}
	for i := range 20 {
		if err := sender.Notify(context.Background(), want); err != nil {
			t.Fatal(err)
		}
		// Delivered, or (a receiver too slow to acknowledge on a loaded
		// machine) no longer serving: the lease is read first, so a lease
		// extended after the change was applied shows the change too.
		valid := lease.Valid()
		if got, _ := rec.state(); len(got) != i+1 && valid {
			t.Fatalf("Notify %d returned with %d changes delivered and the receiver's lease valid", i+1, len(got))
		}
	}
	waitNotify(t, "every change", func() bool { got, _ := rec.state(); return len(got) == 20 })
	got, _ := rec.state()
	if g := got[0]; g.NS != want.NS || !slices.Equal(g.Tags, want.Tags) || !slices.Equal(g.Keys, want.Keys) || g.Clear {
		t.Fatalf("delivered %+v, want %+v", g, want)
	}
}

// TestNotifyResetsOnReconnect: a subscription that drops revokes the lease
// and, once back, resets the listener before the lease starts again.
func TestNotifyResetsOnReconnect(t *testing.T) {
	mr := miniredis.RunT(t)
	var d closableDialer
	b := notifyBackend(t, &redis.Options{Addr: mr.Addr(), Dialer: d.dial})
	var rec recorder
	lease, stop := listenServing(t, b, &rec)
	defer stop()
	_, resets := rec.state()
	d.closeAll()
	waitNotify(t, "a reset after the reconnection", func() bool { _, r := rec.state(); return r > resets })
	waitNotify(t, "the lease again", lease.Valid)
}

// TestNotifyWithoutTiersStartsNothing: a process without tiers pays one
// round trip per lease to learn there are none, and subscribes to nothing.
func TestNotifyWithoutTiersStartsNothing(t *testing.T) {
	mr := miniredis.RunT(t)
	b := notifyBackend(t, &redis.Options{Addr: mr.Addr()})
	notify := func() {
		if err := b.Notify(context.Background(), backends.Change{NS: "ns", Tags: []string{"t"}}); err != nil {
			t.Fatal(err)
		}
	}
	notify()
	first := mr.CommandCount()
	for range 4 {
		notify()
	}
	if n, _ := b.notifier(b.c.(*redis.Client), false); n != nil {
		t.Fatal("Notify without any tier started a notifier")
	}
	if got := mr.CommandCount() - first; got != 0 {
		t.Fatalf("4 Notify calls within a lease of one that found no tier sent %d commands, want 0", got)
	}
}

func TestListenRefusedOnCluster(t *testing.T) {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}, ContextTimeoutEnabled: true})
	defer cc.Close()
	b := New(cc)
	defer b.Close()
	if _, _, err := b.Listen(&recorder{}); !errors.Is(err, errNoTierOnCluster) {
		t.Fatalf("Listen on Cluster: %v, want errNoTierOnCluster", err)
	}
	if err := b.Notify(context.Background(), backends.Change{NS: "ns", Tags: []string{"t"}}); err != nil {
		t.Fatalf("Notify on Cluster: %v", err)
	}
}

// TestNotifyWaitsThroughAServerClockStep: the server's clock steps forward
// (miniredis's SetTime) past every registration's expiry. A Notify then
// finds no registered tier; it used to return at once (and skip Notify
// for a lease), while the tier, whose lease runs in its own clock, served
// on. It waits for every subscriber PUBLISH reached.
func TestNotifyWaitsThroughAServerClockStep(t *testing.T) {
	mr := miniredis.RunT(t)
	const lease = 2 * time.Second // renewed every 500 ms: the step comes between two renewals
	newBackend := func() *Backend {
		b := New(newClient(t, &redis.Options{Addr: mr.Addr()}, nil), WithTierLease(lease), WithLogger(testLogger(t)))
		t.Cleanup(func() { b.Close() })
		return b
	}
	sender, receiver := newBackend(), newBackend()
	var rec recorder
	l, stop := listenServing(t, receiver, &rec)
	defer stop()
	for i := range 3 {
		mr.SetTime(time.Now().Add(time.Duration(i+1) * time.Hour))
		if err := sender.Notify(context.Background(), backends.Change{NS: "ns", Tags: []string{"t"}}); err != nil {
			t.Fatal(err)
		}
		valid := l.Valid()
		if got, _ := rec.state(); len(got) != i+1 && valid {
			t.Fatalf("after a clock step, Notify %d returned with %d changes delivered and the receiver's lease valid", i+1, len(got))
		}
	}
}

// TestNotifyAfterTheLastTierLeftSendsNothing: a process whose Notify once
// found a tier keeps its subscription (for acknowledgements), which every
// PUBLISH counts; once the last tier is gone, a change that reached only
// that subscription is remembered as "no tier" for a lease, as a probe
// that found nobody is: Set and invalidations go back to one round trip.
func TestNotifyAfterTheLastTierLeftSendsNothing(t *testing.T) {
	mr := miniredis.RunT(t)
	sender := notifyBackend(t, &redis.Options{Addr: mr.Addr()})
	receiver := notifyBackend(t, &redis.Options{Addr: mr.Addr()})
	var rec recorder
	_, stop := listenServing(t, receiver, &rec)
	notify := func() {
		t.Helper()
		if err := sender.Notify(context.Background(), backends.Change{NS: "ns", Tags: []string{"t"}}); err != nil {
			t.Fatal(err)
		}
	}
	notify()
	if got, _ := rec.state(); len(got) != 1 {
		t.Fatalf("the tier got %d changes, want 1", len(got))
	}
	if n, _ := sender.notifier(sender.c.(*redis.Client), false); n == nil {
		t.Fatal("a Notify that found a tier started no notifier")
	}
	// The tier's process goes: its registration with it.
	stop()
	if err := receiver.Close(); err != nil {
		t.Fatal(err)
	}
	// miniredis drops a closed subscription once it reads the EOF: until
	// then PUBLISH counts it, and a Notify waits a lease for it.
	_, channel := sender.tierKeys(sender.c.(*redis.Client))
	waitNotify(t, "the tier's subscription to go", func() bool { return mr.PubSubNumSub(channel)[channel] == 1 })
	notify()
	first := mr.CommandCount()
	for range 4 {
		notify()
	}
	if got := mr.CommandCount() - first; got != 0 {
		t.Fatalf("4 Notify calls within a lease of one that reached no tier sent %d commands, want 0", got)
	}
}

// TestNotifyAloneKeepsANewTierOfThisNotifierCoherent: the last tier of a
// process leaves and its registration stays until the heartbeat's next
// tick; a Notify then reaches only the process's own subscription. A tier
// that starts on the same Backend right after gets the notifier's lease at
// once (no wait: its registration never lapsed), so that Notify must not
// be remembered as "no tier": the next change has to reach the new tier
// before its Notify returns.
func TestNotifyAloneKeepsANewTierOfThisNotifierCoherent(t *testing.T) {
	mr := miniredis.RunT(t)
	// A long lease: the heartbeat ticks every lease/4, and the window is
	// between the first tier's leaving and that tick.
	b := New(newClient(t, &redis.Options{Addr: mr.Addr()}, nil), WithTierLease(time.Second), WithLogger(testLogger(t)))
	t.Cleanup(func() { b.Close() })
	ctx := context.Background()
	for attempt := 0; ; attempt++ {
		if attempt == 10 {
			t.Fatal("the heartbeat unregistered between the first tier's leaving and the second's arrival in every attempt")
		}
		var first recorder
		lease, stop, err := b.Listen(&first)
		if err != nil {
			t.Fatal(err)
		}
		waitNotify(t, "the first tier's lease", lease.Valid)
		stop() // the first tier goes; the registration stays until the next tick
		if err := b.Notify(ctx, backends.Change{NS: "ns", Tags: []string{"a"}}); err != nil {
			t.Fatal(err)
		}
		var rec recorder
		lease, stop, err = b.Listen(&rec)
		if err != nil {
			t.Fatal(err)
		}
		if !lease.Valid() {
			// The tick came in between: it unregistered (and revoked the
			// lease), so the new tier waits a lease and resets. Again.
			stop()
			continue
		}
		// The new tier serves now: a value it reads from Redis here
		// enters it, for nothing came since.
		if err := b.Notify(ctx, backends.Change{NS: "ns", Tags: []string{"b"}}); err != nil {
			t.Fatal(err)
		}
		got, resets := rec.state()
		if lease.Valid() && resets == 0 && !slices.ContainsFunc(got, func(c backends.Change) bool { return slices.Contains(c.Tags, "b") }) {
			t.Fatalf("a Notify returned, and a serving tier of this Backend got neither it nor a reset (it got %v): it serves what the change condemned", got)
		}
		stop()
		return
	}
}
