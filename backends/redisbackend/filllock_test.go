package redisbackend

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/backendtest"
)

// With WithFillLock the store still passes the whole conformance suite:
// the leases its lookups take are never counted, read or reported as
// entries.
func TestFillLockConformance(t *testing.T) {
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			h := backendtest.Harness{
				New: func(t *testing.T) backends.Backend {
					b := newBackend(t, tg, WithFillLock())
					if tg.mini != nil {
						return b
					}
					return &tidyBackend{Backend: b, nss: map[string]bool{}}
				},
				MaxFillAge: DefaultMaxFillAge,
				StaleReads: 500,
			}
			if tg.advance != nil {
				h.Advance = func(t *testing.T, d time.Duration) { tg.advance(d) }
			}
			backendtest.Run(t, h)
		})
	}
}

// Two processes sharing a Redis with WithFillLock: the first miss takes the
// lease, the second sees Busy, and neither lookups nor TTL take the lease
// for an entry; Release or the fill ends it.
func TestFillLock(t *testing.T) {
	ctx := context.Background()
	for _, tg := range targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			p1 := newBackend(t, tg, WithFillLock())
			p2 := newBackend(t, tg, WithFillLock())
			plain := newBackend(t, tg) // a store without the option reads leases right too
			ns := randomName(t, "lock")
			clearAtEnd(t, p1, ns)

			l1, err := p1.Lookup(ctx, ns, "k")
			if err != nil || l1.Found || l1.Lease == "" || l1.Busy {
				t.Fatalf("first miss: %+v, %v; want a lease", l1, err)
			}
			l2, err := p2.Lookup(ctx, ns, "k")
			if err != nil || l2.Found || l2.Lease != "" || !l2.Busy || l2.Epoch.IsZero() {
				t.Fatalf("second miss: %+v, %v; want Busy with an epoch", l2, err)
			}
			if l, err := plain.Lookup(ctx, ns, "k"); err != nil || l.Found || l.Corrupt || !l.Busy {
				t.Fatalf("a store without the option: %+v, %v; want Busy, not corrupt", l, err)
			}
			if _, err := p2.TTL(ctx, ns, "k"); !errors.Is(err, backends.ErrNotFound) {
				t.Fatalf("TTL of a leased key = %v; a lease is no entry", err)
			}
			if err := p1.Release(ctx, ns, "k", l1.Lease+"x"); err != nil {
				t.Fatal(err)
			}
			if l, _ := p2.Lookup(ctx, ns, "k"); !l.Busy {
				t.Fatal("a Release with another token ended the lease")
			}
			if err := p1.Release(ctx, ns, "k", l1.Lease); err != nil {
				t.Fatal(err)
			}
			l3, err := p2.Lookup(ctx, ns, "k")
			if err != nil || l3.Lease == "" {
				t.Fatalf("after Release the next miss takes the lease: %+v, %v", l3, err)
			}
			err = p2.Fill(ctx, ns, backends.Fill{Key: "k", Entry: backends.Entry{Value: []byte("v"), Deps: []string{"t"}}, Since: l3.Epoch, Lease: l3.Lease})
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range []*Backend{p1, p2, plain} {
				if l, err := b.Lookup(ctx, ns, "k"); err != nil || !l.Found || string(l.Entry.Value) != "v" {
					t.Fatalf("after the fill: %+v, %v", l, err)
				}
			}
		})
	}
}
