package backends

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
)

// Both decoders read back what EncodeEntry wrote, and every truncation of
// an envelope is ErrCorrupt, never a panic or a wrong entry.
func TestEnvelopeRoundTripAndTruncation(t *testing.T) {
	e := Entry{
		Since: Epoch{Era: "era-1", N: 1 << 40},
		Deps:  []string{"users::42", "posts::*", string(make([]byte, 300))},
		Value: []byte(`{"id":42}`),
	}
	b := EncodeEntry(e)
	for name, decode := range map[string]func([]byte) (Entry, error){
		"bytes":  DecodeEntry,
		"string": func(b []byte) (Entry, error) { return DecodeEntryString(string(b)) },
	} {
		got, err := decode(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.Since != e.Since || !slices.Equal(got.Deps, e.Deps) || !bytes.Equal(got.Value, e.Value) {
			t.Errorf("%s: decoded %+v, want %+v", name, got, e)
		}
		for n := range len(b) - len(e.Value) {
			if _, err := decode(b[:n]); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s: %d of %d bytes: err %v, want ErrCorrupt", name, n, len(b), err)
			}
		}
	}
}

// A uvarint longer than 64 bits is corrupt, as binary.Uvarint says.
func TestEnvelopeOverlongVarint(t *testing.T) {
	b := append([]byte{'d', 'c', envelopeVersion}, bytes.Repeat([]byte{0xff}, 10)...)
	b = append(b, 0x01)
	if _, err := DecodeEntryString(string(b)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("overlong era length: err %v, want ErrCorrupt", err)
	}
}

func FuzzDecodeEntryString(f *testing.F) {
	f.Add(EncodeEntry(Entry{Since: Epoch{Era: "e", N: 3}, Deps: []string{"a"}, Value: []byte("v")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		e1, err1 := DecodeEntry(b)
		e2, err2 := DecodeEntryString(string(b))
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("DecodeEntry %v, DecodeEntryString %v", err1, err2)
		}
		if err1 == nil && (e1.Since != e2.Since || !slices.Equal(e1.Deps, e2.Deps) || !bytes.Equal(e1.Value, e2.Value)) {
			t.Fatalf("decoders disagree: %+v vs %+v", e1, e2)
		}
	})
}

// readUvarint agrees with binary.Uvarint on every input.
func FuzzReadUvarint(f *testing.F) {
	f.Add([]byte{0x80, 0x01})
	f.Add(bytes.Repeat([]byte{0xff}, 11))
	f.Fuzz(func(t *testing.T, b []byte) {
		want, k := binary.Uvarint(b)
		got, rest, ok := readUvarint(string(b))
		if ok != (k > 0) || (ok && (got != want || len(rest) != len(b)-k)) {
			t.Fatalf("%x: readUvarint %d,%d,%v; binary.Uvarint %d,%d", b, got, len(rest), ok, want, k)
		}
	})
}

// A decoded hit allocates its tag slice and nothing else: the era, the tags
// and the value share the string's memory.
func TestDecodeEntryStringAllocatesOnlyTheTags(t *testing.T) {
	for _, deps := range [][]string{nil, {"users::42", "posts::*"}} {
		s := string(EncodeEntry(Entry{Since: Epoch{Era: "era", N: 7}, Deps: deps, Value: []byte(`{"id":42}`)}))
		want := 0.0
		if len(deps) > 0 {
			want = 1
		}
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := DecodeEntryString(s); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != want {
			t.Errorf("%d deps: %v allocations per decode, want %v", len(deps), allocs, want)
		}
	}
}
