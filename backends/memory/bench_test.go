package memory

import (
	"fmt"
	"testing"

	"github.com/depcache/go-depcache/backends"
)

func BenchmarkLookupHit(b *testing.B) {
	ctx := b.Context()
	m := New()
	defer m.Close()
	since, _ := m.Epoch(ctx)
	err := m.Fill(ctx, "ns", backends.Fill{
		Key:   "k",
		Entry: backends.Entry{Value: make([]byte, 256), Deps: []string{"users::42", "posts::*"}, Since: since},
		Since: since,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		l, err := m.Lookup(ctx, "ns", "k")
		if err != nil || !l.Found {
			b.Fatal(l.Found, err)
		}
	}
}

// BenchmarkFill fills new keys (the miss path), 1024 at a time into an
// emptied namespace; refill fills existing keys again (registrations kept).
func BenchmarkFill(b *testing.B) {
	for _, bc := range []struct {
		name   string
		ndeps  int
		refill bool
	}{{"deps=1", 1, false}, {"deps=10", 10, false}, {"deps=10/refill", 10, true}} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := b.Context()
			m := New()
			defer m.Close()
			deps := make([]string, bc.ndeps)
			for i := range deps {
				deps[i] = fmt.Sprint("tag", i)
			}
			keys := make([]string, 1024)
			for i := range keys {
				keys[i] = fmt.Sprint("key", i)
			}
			value := make([]byte, 256)
			since, _ := m.Epoch(ctx)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if i%len(keys) == 0 && i > 0 && !bc.refill {
					b.StopTimer()
					if _, err := m.Clear(ctx, "ns"); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				err := m.Fill(ctx, "ns", backends.Fill{
					Key:   keys[i%len(keys)],
					Entry: backends.Entry{Value: value, Deps: deps, Since: since},
					Since: since,
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkInvalidate(b *testing.B) {
	for _, n := range []int{1, 1000, 100000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			ctx := b.Context()
			m := New()
			defer m.Close()
			keys := make([]string, n)
			for i := range keys {
				keys[i] = fmt.Sprint("key", i)
			}
			deps := []string{"big"}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				since, _ := m.Epoch(ctx)
				for _, k := range keys {
					err := m.Fill(ctx, "ns", backends.Fill{
						Key:   k,
						Entry: backends.Entry{Value: []byte("v"), Deps: deps, Since: since},
						Since: since,
					})
					if err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				got, err := m.Invalidate(ctx, "ns", "big")
				if err != nil || got != n {
					b.Fatalf("Invalidate = %d, %v; want %d", got, err, n)
				}
			}
		})
	}
}
