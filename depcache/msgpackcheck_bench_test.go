package depcache

import (
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// The cost of checkMsgpack on a hit: the codec with the check against
// msgpack alone, on a page of 50 records.
func BenchmarkMsgpackCheck(b *testing.B) {
	page := make([]fuzzRecord, 50)
	for i := range page {
		page[i] = fuzzRecord{ID: i, Name: "user name", Tags: []string{"a", "b"}, M: map[string]float64{"x": 1}}
	}
	enc, err := msgpack.Marshal(page)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("msgpack", func(b *testing.B) {
		for b.Loop() {
			var out []fuzzRecord
			if err := msgpack.Unmarshal(enc, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("checked", func(b *testing.B) {
		for b.Loop() {
			var out []fuzzRecord
			if err := Msgpack.Unmarshal(enc, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("check-only", func(b *testing.B) {
		for b.Loop() {
			if err := checkMsgpack(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
}
