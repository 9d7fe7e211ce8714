package redisbackend

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/depcache/go-depcache/backends"
)

// TestStampsPruned: 5,000 tags invalidated once and never filled again
// leave no stamp behind once they are older than the bound, with no call
// from the user: ordinary traffic prunes them, and keeps a stamp younger
// than the bound.
func TestStampsPruned(t *testing.T) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			maxAge := time.Minute
			if tg.advance == nil {
				maxAge = 300 * time.Millisecond // real time passes
			}
			b := newBackend(t, tg, WithMaxFillAge(maxAge))
			ns := randomName(t, "stamps")
			clearAtEnd(t, b, ns)
			checkStampsPruned(t, b, ns, maxAge, tg.advance)
		})
	}
}

func TestClusterStampsPruned(t *testing.T) {
	tc := sharedCluster(t)
	const maxAge = 300 * time.Millisecond
	// The lease lives as long as the longest fill by default: 300 ms, which
	// a loaded machine can spend between a lookup and its fill. The test is
	// about stamps, so the leases get a minute.
	b := clusterBackend(t, tc, WithMaxFillAge(maxAge), WithLeaseTTL(time.Minute))
	checkStampsPruned(t, b, clusterNS(t, b, "cstamps"), maxAge, nil)
}

// countKeys counts the keys matching pattern (on every master of a
// cluster).
func countKeys(tb testing.TB, b *Backend, pattern string) int {
	tb.Helper()
	var n atomic.Int64
	count := func(keys []string) error { n.Add(int64(len(keys))); return nil }
	var err error
	if cc, ok := b.c.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
			return scanPages(ctx, m, pattern, 1000, count)
		})
	} else {
		err = scanPages(context.Background(), b.c, pattern, 1000, count)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return int(n.Load())
}

// checkStampsPruned invalidates 5,000 tags once, lets them age past the
// bound (advance, or real time when advance is nil), runs ordinary
// traffic (lookups, fills, invalidations of other tags) and checks that
// their hashes are gone while a younger stamp and a live registration
// stay.
func checkStampsPruned(t *testing.T, b *Backend, ns string, maxAge time.Duration, advance func(time.Duration)) {
	ctx := t.Context()
	const n = 5000
	bound := 2 * maxAge // stamps go after twice the longest fill (doc.go)
	began := time.Now()
	for start := 0; start < n; start += 500 {
		tags := make([]string, 0, 500)
		for i := start; i < start+500; i++ {
			tags = append(tags, fmt.Sprint("old", i))
		}
		if _, err := b.Invalidate(ctx, ns, tags...); err != nil {
			t.Fatal(err)
		}
	}
	// A stamped tag that still has a registration keeps its hash.
	if _, err := b.Invalidate(ctx, ns, "held"); err != nil {
		t.Fatal(err)
	}
	fill(t, b, ns, "held-entry", "v", 0, "held")
	// On real time (a loaded machine) the first stamps may already be
	// past the bound, and pruned by the later invalidations.
	if got := countKeys(t, b, globEscape(ns)+`:t:\{old*`); got != n && (advance != nil || time.Since(began) < bound) {
		t.Fatalf("%d stamped hashes, want %d", got, n)
	}

	// Past the bound.
	if advance != nil {
		advance(bound + time.Second)
	}
	deadline := time.Now().Add(bound + 20*time.Second)

	traffic := func(i int) {
		key := fmt.Sprint("k", i)
		l, err := b.Lookup(ctx, ns, key)
		if err != nil {
			t.Fatal(err)
		}
		err = b.Fill(ctx, ns, backends.Fill{Key: key, Entry: backends.Entry{Value: []byte("v"), Deps: []string{"hot"}},
			TTL: time.Minute, Since: l.Epoch, Lease: l.Lease})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Invalidate(ctx, ns, "hot"); err != nil {
			t.Fatal(err)
		}
	}
	rounds := 0
	for ; countKeys(t, b, globEscape(ns)+`:t:\{old*`) > 0; rounds++ {
		if advance != nil && rounds >= 200 {
			t.Fatalf("%d stamps older than the bound left after %d rounds of traffic (lookup, fill, invalidate)",
				countKeys(t, b, globEscape(ns)+`:t:\{old*`), rounds)
		}
		if advance == nil && time.Now().After(deadline) {
			t.Fatalf("%d stamps left after %d rounds of traffic", countKeys(t, b, globEscape(ns)+`:t:\{old*`), rounds)
		}
		for i := range 10 {
			traffic(rounds*10 + i)
		}
	}
	t.Logf("old stamps gone after %d rounds of 10 lookups, fills and invalidations", rounds)

	// A stamp younger than the bound survives traffic.
	start := time.Now()
	if _, err := b.Invalidate(ctx, ns, "fresh"); err != nil {
		t.Fatal(err)
	}
	if advance != nil {
		advance(bound - time.Second)
	}
	for i := range 20 {
		traffic(100000 + i)
	}
	if advance != nil || time.Since(start) < bound/2 {
		if countKeys(t, b, globEscape(ns)+`:t:\{fresh}`) != 1 {
			t.Error("a stamp younger than the bound was pruned")
		}
	}
	if got, err := b.Invalidate(ctx, ns, "held"); err != nil || got != 1 {
		t.Errorf("Invalidate(held) = %d, %v; want the entry registered before the old stamps aged", got, err)
	}
	if size := b.c.ZCard(ctx, ns+":s").Val(); size > 10 {
		t.Errorf("tag index holds %d tags, want only recent ones", size)
	}
}

// TestDeadRegistrationsPruned: tags filled once, whose entries expired and
// that are never filled nor invalidated again, leave no hash behind after
// ordinary traffic (metadata proportional to live entries).
func TestDeadRegistrationsPruned(t *testing.T) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			maxAge := time.Minute
			if tg.advance == nil {
				maxAge = 300 * time.Millisecond
			}
			b := newBackend(t, tg, WithMaxFillAge(maxAge))
			ns := randomName(t, "regs")
			clearAtEnd(t, b, ns)
			checkDeadRegistrationsPruned(t, b, ns, maxAge, tg.advance)
		})
	}
}

func TestClusterDeadRegistrationsPruned(t *testing.T) {
	tc := sharedCluster(t)
	const maxAge = 300 * time.Millisecond
	b := clusterBackend(t, tc, WithMaxFillAge(maxAge), WithLeaseTTL(time.Minute)) // as in TestClusterStampsPruned
	checkDeadRegistrationsPruned(t, b, clusterNS(t, b, "cregs"), maxAge, nil)
}

func checkDeadRegistrationsPruned(t *testing.T, b *Backend, ns string, maxAge time.Duration, advance func(time.Duration)) {
	ctx := t.Context()
	const n = 300
	for i := range n {
		fill(t, b, ns, fmt.Sprint("cold", i), "v", 50*time.Millisecond, fmt.Sprint("cold", i))
	}
	fill(t, b, ns, "live", "v", 0, "live")
	bound := 2*maxAge + time.Second
	if advance != nil {
		advance(bound)
	}
	deadline := time.Now().Add(bound + 20*time.Second)
	for rounds := 0; countKeys(t, b, globEscape(ns)+`:t:\{cold*`) > 0; rounds++ {
		if advance != nil && rounds >= 100 || time.Now().After(deadline) {
			t.Fatalf("%d hashes of expired entries' tags left after %d rounds of traffic",
				countKeys(t, b, globEscape(ns)+`:t:\{cold*`), rounds)
		}
		for i := range 10 {
			key := fmt.Sprint("k", rounds*10+i)
			l, err := b.Lookup(ctx, ns, key)
			if err != nil {
				t.Fatal(err)
			}
			err = b.Fill(ctx, ns, backends.Fill{Key: key, Entry: backends.Entry{Value: []byte("v"), Deps: []string{"hot"}},
				TTL: time.Minute, Since: l.Epoch, Lease: l.Lease})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if got, err := b.Invalidate(ctx, ns, "live"); err != nil || got != 1 {
		t.Errorf("Invalidate(live) = %d, %v; want the live entry still registered", got, err)
	}
}
