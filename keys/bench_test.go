package keys_test

import (
	"testing"

	"github.com/depcache/go-depcache/keys"
)

func BenchmarkOf(b *testing.B) {
	benches := []struct {
		name string
		arg  any
	}{
		{"int", 42},
		{"string", "alice@example.com"},
		{"struct with ID", User{Model: Model{ID: 42}, Name: "ann"}},
		{"map", map[string]int{"limit": 10, "offset": 20, "page": 3, "per": 50}},
		{"struct", Filter{Status: "open", Tags: []string{"a", "b"}, Limit: ptr(10)}},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = keys.Of(bb.arg)
			}
		})
	}
}
