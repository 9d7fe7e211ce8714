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
		"string into room for 2 tags": func(b []byte) (Entry, error) {
			return DecodeEntryStringInto(string(b), make([]string, 0, 2))
		},
		"string into room for 3 tags": func(b []byte) (Entry, error) {
			return DecodeEntryStringInto(string(b), make([]string, 0, 3))
		},
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
		e3, err3 := DecodeEntryStringInto(string(b), make([]string, 0, 2))
		if (err1 == nil) != (err3 == nil) {
			t.Fatalf("DecodeEntry %v, DecodeEntryStringInto %v", err1, err3)
		}
		if err1 == nil && (e1.Since != e3.Since || !slices.Equal(e1.Deps, e3.Deps) || !bytes.Equal(e1.Value, e3.Value)) {
			t.Fatalf("decoders disagree: %+v vs %+v", e1, e3)
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

// With room for its tags, a hit decodes without allocating: the tags land
// in the room given, capped at their length (an append cannot write into
// the caller's array); tags that do not fit get a slice of their own.
func TestDecodeEntryStringIntoUsesTheRoomGiven(t *testing.T) {
	deps := []string{"users::42", "posts::*"}
	s := string(EncodeEntry(Entry{Since: Epoch{Era: "era", N: 7}, Deps: deps, Value: []byte(`{"id":42}`)}))
	var room [4]string
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := DecodeEntryStringInto(s, room[:0]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per decode with room for the tags, want 0", allocs)
	}
	e, err := DecodeEntryStringInto(s, room[:0])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(e.Deps, deps) || &e.Deps[0] != &room[0] || cap(e.Deps) != len(deps) {
		t.Errorf("tags %q (cap %d) not in the room given", e.Deps, cap(e.Deps))
	}
	small := make([]string, 0, 1)
	e, err = DecodeEntryStringInto(s, small)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(e.Deps, deps) || small[:1][0] != "" {
		t.Errorf("tags %q; the room too small was written to: %q", e.Deps, small[:1])
	}
	if e, _ := DecodeEntryStringInto(string(EncodeEntry(Entry{Value: []byte("v")})), room[:0]); e.Deps != nil {
		t.Errorf("an entry without tags decoded Deps %q, want nil", e.Deps)
	}
}
