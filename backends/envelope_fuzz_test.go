package backends

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// FuzzEntryRoundTrip: any entry EncodeEntry lays out reads back equal
// through both decoders (tags are split from deps at NUL, so tags holding
// any other byte, and empty ones, are covered).
func FuzzEntryRoundTrip(f *testing.F) {
	f.Add("era", uint64(3), "users::42\x00posts::*", []byte(`{"id":42}`))
	f.Add("", uint64(0), "", []byte(nil))
	f.Add("e\x00", uint64(1<<63), "\x00\x00", []byte("dc\x01"))
	f.Add(strings.Repeat("x", 200), ^uint64(0), strings.Repeat("t", 300), bytes.Repeat([]byte{0xff}, 64))
	f.Fuzz(func(t *testing.T, era string, n uint64, deps string, value []byte) {
		e := Entry{Since: Epoch{Era: era, N: n}, Value: value}
		if deps != "" {
			e.Deps = strings.Split(deps, "\x00")
		}
		b := EncodeEntry(e)
		for name, got := range map[string]func() (Entry, error){
			"bytes":  func() (Entry, error) { return DecodeEntry(b) },
			"string": func() (Entry, error) { return DecodeEntryString(string(b)) },
		} {
			d, err := got()
			if err != nil {
				t.Fatalf("%s: %v for %+v", name, err, e)
			}
			if d.Since != e.Since || !slices.Equal(d.Deps, e.Deps) || !bytes.Equal(d.Value, e.Value) {
				t.Fatalf("%s: decoded %+v, want %+v", name, d, e)
			}
		}
	})
}

// FuzzDecodeEntryReencode: whatever bytes decode as an envelope encode back
// to an envelope that decodes to the same entry (a foreign or corrupt value
// either reads as an error or as one well-defined entry).
func FuzzDecodeEntryReencode(f *testing.F) {
	f.Add(EncodeEntry(Entry{Since: Epoch{Era: "e", N: 3}, Deps: []string{"a", ""}, Value: []byte("v")}))
	f.Add([]byte("dc\x01\x80\x00\x00\x00"))             // non-minimal varint
	f.Add([]byte("dc\x01\x00\x00\xff\xff\xff\xff\x0f")) // a huge dependency count
	f.Add([]byte("dc\x02"))
	f.Add([]byte(`{"json":true}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEntry(b)
		if err != nil {
			return
		}
		d, err := DecodeEntry(EncodeEntry(e))
		if err != nil {
			t.Fatalf("re-encoded %+v: %v", e, err)
		}
		if d.Since != e.Since || !slices.Equal(d.Deps, e.Deps) || !bytes.Equal(d.Value, e.Value) {
			t.Fatalf("re-encoded %+v decodes as %+v", e, d)
		}
	})
}
