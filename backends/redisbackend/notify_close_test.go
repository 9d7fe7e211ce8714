package redisbackend

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
)

// TestListenRacingCloseLeavesNoNotifier: a Listen that runs while the
// Backend closes either fails with ErrClosed or gets a notifier that Close
// stops; a notifier started after Close looked (its goroutines and its
// subscription running for ever, its tier serving on) must not happen.
func TestListenRacingCloseLeavesNoNotifier(t *testing.T) {
	mr := miniredis.RunT(t)
	c := newClient(t, &redis.Options{Addr: mr.Addr()}, nil)
	for i := range 1000 {
		b := New(c, WithTierLease(notifyTestLease), WithLogger(testLogger(t)))
		var wg sync.WaitGroup
		var lease *backends.Lease
		var err error
		wg.Add(2)
		go func() {
			defer wg.Done()
			lease, _, err = b.Listen(&recorder{})
		}()
		go func() {
			defer wg.Done()
			b.Close()
		}()
		wg.Wait()
		if err != nil {
			if !errors.Is(err, backends.ErrClosed) {
				t.Fatalf("round %d: Listen: %v", i, err)
			}
			continue
		}
		b.notify.mu.Lock()
		n := b.notify.n
		b.notify.mu.Unlock()
		if n == nil || !n.stopped() {
			t.Fatalf("round %d: Listen succeeded on a closing Backend and its notifier runs after Close returned (lease valid: %v)", i, lease.Valid())
		}
	}
}

// TestNotifyNeedNotWaitForAStoppedListener: a notifier whose last listener
// stopped is still registered until its next heartbeat tick; it has
// nothing to drop and acknowledges, rather than make every Notify wait a
// lease for it.
func TestNotifyNeedNotWaitForAStoppedListener(t *testing.T) {
	const lease = 2 * time.Second
	mr := miniredis.RunT(t)
	sender := New(newClient(t, &redis.Options{Addr: mr.Addr()}, nil), WithTierLease(lease), WithLogger(testLogger(t)))
	t.Cleanup(func() { sender.Close() })
	receiver := New(newClient(t, &redis.Options{Addr: mr.Addr()}, nil), WithTierLease(lease), WithLogger(testLogger(t)))
	t.Cleanup(func() { receiver.Close() })
	l, stop, err := receiver.Listen(&recorder{})
	if err != nil {
		t.Fatal(err)
	}
	waitNotify(t, "the lease", l.Valid)
	// The sender's own subscription, for the acknowledgements.
	if err := sender.Notify(context.Background(), backends.Change{NS: "ns", Tags: []string{"warm"}}); err != nil {
		t.Fatal(err)
	}
	stop()
	// Half the wait for a silent tier: enough for an acknowledgement.
	ctx, cancel := context.WithTimeout(context.Background(), lease/2)
	defer cancel()
	if err := sender.Notify(ctx, backends.Change{NS: "ns", Tags: []string{"t"}}); err != nil {
		t.Fatalf("Notify waited for a notifier without listeners: %v", err)
	}
}
