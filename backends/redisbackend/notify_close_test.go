package redisbackend

import (
	"errors"
	"sync"
	"testing"

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
