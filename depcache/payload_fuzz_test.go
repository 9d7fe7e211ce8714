package depcache

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

type fuzzRecord struct {
	ID    int
	Name  string
	Tags  []string
	Inner *fuzzRecord
	M     map[string]float64
}

type fuzzErr struct{ Code int }

func (e fuzzErr) Error() string { return "fuzz error" }

var errFuzzSentinel = errors.New("sentinel")

// fuzzDsts returns fresh destinations of the shapes memoized functions
// read into.
func fuzzDsts() []any {
	var (
		a   any
		s   string
		i   int
		bs  []byte
		rec fuzzRecord
		p   *fuzzRecord
		sl  []fuzzRecord
		m   map[string]any
	)
	return []any{&a, &s, &i, &bs, &rec, &p, &sl, &m}
}

// FuzzCodecUnmarshal: each built-in codec's Unmarshal, given any bytes,
// returns an error or a value, never panics (gob's recover included).
func FuzzCodecUnmarshal(f *testing.F) {
	for _, c := range []Codec{JSON, Msgpack, Gob} {
		for _, v := range []any{"x", 42, fuzzRecord{ID: 1, Name: "n", Tags: []string{"a"}, Inner: &fuzzRecord{}, M: map[string]float64{"k": 1}}, []fuzzRecord{{}}, map[string]any{"a": []any{1, "b"}}} {
			if b, err := c.Marshal(v); err == nil { // gob refuses []any in any
				f.Add(b)
			}
		}
	}
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}) // msgpack array32 of 4G elements
	f.Add([]byte{0xc6, 0x7f, 0xff, 0xff, 0xff}) // msgpack bin32 of 2 GiB
	f.Add([]byte(`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range []Codec{JSON, Msgpack, Gob} {
			for _, dst := range fuzzDsts() {
				_ = c.Unmarshal(b, dst)
			}
		}
	})
}

// FuzzDecodePayload: a payload of any bytes, read as a value or as a cached
// error under every codec, is a value, a cached error or errCorruptPayload;
// never a panic, never another error.
func FuzzDecodePayload(f *testing.F) {
	rules := []errorMatcher{isMatcher(errFuzzSentinel), asMatcher[fuzzErr]()}
	for _, c := range []Codec{JSON, Msgpack, Gob} {
		for _, v := range []any{"x", fuzzRecord{ID: 1, Tags: []string{"t"}}, []byte("raw")} {
			b, err := encodeValue(c, v)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
		for _, e := range []error{errFuzzSentinel, fuzzErr{Code: 7}} {
			b, ok, err := encodeError(c, rules, e)
			if !ok || err != nil {
				f.Fatal(ok, err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte{})
	f.Add([]byte{kindError, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{kindError, 0x05, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range []Codec{JSON, Msgpack, Gob} {
			for _, ms := range [][]errorMatcher{nil, rules} {
				for _, dst := range fuzzDsts() {
					cached, err := decodePayload(c, ms, b, dst)
					if err != nil && !errors.Is(err, errCorruptPayload) {
						t.Fatalf("%s: %x: error %v does not wrap errCorruptPayload", c.Name(), b, err)
					}
					if err != nil && cached != nil {
						t.Fatalf("%s: %x: both a cached error and a decode error", c.Name(), b)
					}
				}
			}
		}
	})
}

// FuzzPayloadRoundTrip: a string or []byte value, and a cached error's
// message, read back as stored under every codec.
func FuzzPayloadRoundTrip(f *testing.F) {
	f.Add("x", []byte("y"))
	f.Add("", []byte{})
	f.Add("\x00\xff", []byte{0})
	f.Fuzz(func(t *testing.T, s string, raw []byte) {
		for _, c := range []Codec{JSON, Msgpack, Gob} {
			b, err := encodeValue(c, raw)
			if err != nil {
				t.Fatal(err)
			}
			var gotRaw []byte
			if _, err := decodePayload(c, nil, b, &gotRaw); err != nil || string(gotRaw) != string(raw) {
				t.Fatalf("%s: []byte %x read back as %x, %v", c.Name(), raw, gotRaw, err)
			}
			b, ok, err := encodeError(c, []errorMatcher{isMatcher(errFuzzSentinel)}, fmtError(s))
			if !ok || err != nil {
				t.Fatal(ok, err)
			}
			cached, err := decodePayload(c, []errorMatcher{isMatcher(errFuzzSentinel)}, b, new(string))
			if err != nil || cached == nil || cached.Error() != s || !errors.Is(cached, errFuzzSentinel) {
				t.Fatalf("%s: error %q read back as %v, %v", c.Name(), s, cached, err)
			}
		}
	})
}

// fmtError is an error with message s that wraps errFuzzSentinel.
type fmtError string

func (e fmtError) Error() string { return string(e) }
func (e fmtError) Unwrap() error { return errFuzzSentinel }

// FuzzMsgpackCheck: checkMsgpack accepts every value msgpack encodes
// (strings, binaries, extensions such as time, nested arrays and maps of
// every header width), so the guard never turns a good entry into a miss.
func FuzzMsgpackCheck(f *testing.F) {
	f.Add("s", int64(1), 1.5, []byte("b"), uint16(3), int64(0))
	f.Add("", int64(-1<<40), -0.0, []byte(nil), uint16(20), int64(1<<62))
	f.Add(strings.Repeat("x", 70000), int64(300), 1e300, bytes.Repeat([]byte{1}, 300), uint16(70), int64(-5))
	f.Fuzz(func(t *testing.T, s string, i int64, fl float64, bs []byte, n uint16, sec int64) {
		n %= 1 << 10
		list := make([]any, n)
		m := make(map[string]any, n)
		for j := range list {
			list[j] = j
			m[strconv.Itoa(j)] = s
		}
		v := map[string]any{
			"s": s, "i": i, "f": fl, "b": bs, "t": time.Unix(sec%(1<<40), i%1e9).UTC(),
			"list": list, "map": m, "nested": []any{[]any{m}, map[string]any{"x": list}},
			"f32": float32(fl), "u": uint64(i), "nil": nil, "bool": true,
		}
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkMsgpack(b); err != nil {
			t.Fatalf("checkMsgpack refuses msgpack's own encoding of %v: %v", v, err)
		}
		var back map[string]any
		if err := Msgpack.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		// Any cut of a valid encoding is refused by the check or by the decoder.
		if len(b) > 1 {
			if err := Msgpack.Unmarshal(b[:len(b)/2], new(any)); err == nil {
				t.Fatalf("half of %x decoded", b)
			}
		}
	})
}

// The ten bytes the fuzzer found: an array32 header declaring 2.9e9
// elements. Before checkMsgpack, decoding them into an any made msgpack
// allocate 47 GB and the runtime kill the test binary.
func TestMsgpackDeclaredCountIsBounded(t *testing.T) {
	for _, b := range [][]byte{
		[]byte("\xdd\xb0\xb0\xb0\xb0\xcd\xd3\x94"),
		{0xdf, 0xff, 0xff, 0xff, 0xff, 0x00}, // map32 of 4G pairs
		{0x91, 0xdc, 0xff, 0xff},             // array16 inside a fixarray
		{0xdb, 0x7f, 0xff, 0xff, 0xff, 'a'},  // str32 of 2 GiB
	} {
		for _, dst := range fuzzDsts() {
			if err := Msgpack.Unmarshal(b, dst); err == nil {
				t.Errorf("%x into %T: no error", b, dst)
			}
		}
	}
}
