package redisbackend

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
)

// afterScript is a go-redis hook that runs do once, right after the first
// pipeline that ran script s has returned: a hold in the middle of a
// Cluster fill, between two of its steps.
type afterScript struct {
	sha  string
	once sync.Once
	do   func()
}

func (h *afterScript) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *afterScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *afterScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if a := c.Args(); len(a) > 1 && a[0] == "evalsha" && a[1] == h.sha {
				h.once.Do(h.do)
				break
			}
		}
		return err
	}
}

// TestClusterClearDuringFill runs a Clear of the namespace (from another
// client) in the middle of a Cluster fill that began before it: after its
// first step (which, for a fill without a lease, takes the lease in
// parallel with the step's reads), and after its second (which reads the
// namespace stamp once the lease is in place). Either way the fill is
// refused and stores nothing: the stamp refuses it, or the Clear's SCAN
// unlinked the lease and the compare-and-set fails.
func TestClusterClearDuringFill(t *testing.T) {
	tc := sharedCluster(t)
	for _, step := range []struct {
		name string
		sha  string
	}{
		{"after step 1", clusterScripts[clusterTakeLease].Hash()},
		{"after step 2", clusterScripts[clusterRegister].Hash()},
	} {
		t.Run(step.name, func(t *testing.T) {
			ctx := t.Context()
			other := clusterBackend(t, tc)
			ns := clusterNS(t, other, "cclear")
			hook := &afterScript{sha: step.sha}
			hook.do = func() {
				if _, err := other.Clear(context.WithoutCancel(ctx), ns); err != nil {
					t.Errorf("Clear: %v", err)
				}
			}
			b := New(clusterClient(t, tc, hook), WithLogger(testLogger(t)))
			t.Cleanup(func() { _ = b.Close() })

			since, err := b.Epoch(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// No lease: the fill takes its own in step 1.
			err = b.Fill(ctx, ns, backends.Fill{Key: "k", Entry: backends.Entry{Value: []byte("before Clear"), Deps: []string{"t"}}, Since: since})
			if !errors.Is(err, backends.ErrStale) {
				t.Errorf("Fill across a Clear = %v, want ErrStale", err)
			}
			t.Log(err)
			var fired bool
			hook.once.Do(func() { fired = true })
			if fired {
				t.Fatal("the hold never ran: the fill's steps changed")
			}
			l, err := other.Lookup(ctx, ns, "k")
			if err != nil {
				t.Fatal(err)
			}
			if l.Found {
				t.Errorf("the fill stored %q across a Clear", l.Entry.Value)
			}
		})
	}
}
