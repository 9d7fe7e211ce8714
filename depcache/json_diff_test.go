package depcache

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	gojson "github.com/goccy/go-json"
)

// The JSON codec must be encoding/json in all but speed (jsonengine.go):
// the same bytes for a value, the same value (or an error) for any bytes,
// and the entries encoding/json wrote before the engine changed read back
// as they were. These tests compare the codec with encoding/json itself
// over the shapes cached values take.

type diffInner struct {
	A int `json:"a"`
	B string
}

type diffEmbedded struct {
	E   int
	Dup string
}

type diffEmbedded2 struct{ Dup string }

// diffText is a TextMarshaler, as a value and as a map key.
type diffText struct{ s string }

func (t diffText) MarshalText() ([]byte, error) { return []byte("T:" + t.s), nil }
func (t *diffText) UnmarshalText(b []byte) error {
	if !bytes.HasPrefix(b, []byte("T:")) {
		return fmt.Errorf("diffText: %q has no T: prefix", b)
	}
	t.s = string(b[2:])
	return nil
}

// diffMarshaler writes JSON that encoding/json compacts and HTML-escapes.
type diffMarshaler struct{ n int }

func (j diffMarshaler) MarshalJSON() ([]byte, error) {
	return []byte(fmt.Sprintf(`{"n": %d, "<x>": "&"}`, j.n)), nil
}
func (j *diffMarshaler) UnmarshalJSON(b []byte) error {
	var x struct{ N int }
	if err := stdjson.Unmarshal(b, &x); err != nil {
		return err
	}
	j.n = x.N
	return nil
}

type diffShape struct {
	diffEmbedded
	*diffEmbedded2
	ID       int64  `json:"id"`
	Name     string `json:"name,omitempty"`
	Skip     string `json:"-"`
	Dash     string `json:"-,"`
	Str      int    `json:",string"`
	F32      float32
	F64      float64
	U8       uint8
	Bytes    []byte
	NilBytes []byte
	When     time.Time
	WhenP    *time.Time
	Map      map[string]any
	IntMap   map[int]string
	TextMap  map[diffText]int
	Text     diffText
	TextP    *diffText
	JM       diffMarshaler
	JMP      *diffMarshaler
	Any      any
	Num      stdjson.Number
	Slice    []diffInner
	Arr      [2]int
	Ptr      *diffInner
	Empty    []string       `json:",omitempty"`
	EmptyMap map[string]int `json:",omitempty"`
	Raw      stdjson.RawMessage
	Iface    fmt.Stringer
	unexp    int
}

func diffSample() diffShape {
	t := time.Date(2024, 2, 29, 13, 4, 5, 123456789, time.FixedZone("X", 3600+1800))
	t2 := time.Unix(0, 0).UTC()
	return diffShape{
		diffEmbedded: diffEmbedded{E: 1, Dup: "e1"}, diffEmbedded2: &diffEmbedded2{Dup: "e2"},
		ID: -1 << 60, Name: "Ada <Lovelace> & \u2028 \u2029 \x7f é 😀 \"q\" \\ \n\t\x01 \xff",
		Skip: "s", Dash: "d", Str: 42, F32: 0.1, F64: 1e21, U8: 255,
		Bytes: []byte{0, 1, 2, 0xff, 0xfe}, When: t, WhenP: &t2,
		Map:     map[string]any{"z": 1.5, "a": []any{"x", nil, true, 1e-7}, "m": map[string]any{"k": "v"}},
		IntMap:  map[int]string{3: "c", -1: "m", 10: "t"},
		TextMap: map[diffText]int{{"b"}: 2, {"a"}: 1},
		Text:    diffText{"x"}, TextP: &diffText{"y"}, JM: diffMarshaler{3}, JMP: &diffMarshaler{4},
		Any: map[string]any{"n": 12345678901234567890.0}, Num: "12.50",
		Slice: []diffInner{{1, "x"}, {}}, Arr: [2]int{1, 2}, Ptr: &diffInner{A: 7},
		Raw: stdjson.RawMessage(`{"b":[1, 2]}`), unexp: 3,
	}
}

// diffValues are values to encode: the project's own shapes (fuzzRecord,
// a benchmark's user) and what encoding/json treats specially.
func diffValues() []any {
	return []any{
		diffSample(), &diffShape{}, diffShape{}, nil, "x", "\xff\xfe invalid \xc3", "<&>\u2028",
		1.0, 1e20, 1e21, 1e-6, 1e-7, -0.0, float32(0.1), float32(math.MaxFloat32), float32(-math.SmallestNonzeroFloat32),
		123456789.123456789, math.MaxInt64, uint64(math.MaxUint64), []any{}, map[string]any{}, []byte(nil), []byte{},
		map[string]string{"<": ">", "\xff": "&"}, []diffInner(nil), map[uint8]bool{1: true, 200: false},
		struct{ A, a, B int }{1, 2, 3}, time.Time{}, [0]int{}, stdjson.Number("1e3"),
		fuzzRecord{ID: 1, Name: "n", Tags: []string{"a"}, Inner: &fuzzRecord{}, M: map[string]float64{"k": 1}},
		[]fuzzRecord{{}}, map[string]any{"a": []any{1, "b"}},
		struct{ ID, Name, Email, Bio any }{42, "Ada Lovelace", "ada@example.com", nil},
	}
}

func diffDsts() []any {
	var (
		a   any
		s   string
		i   int
		f   float64
		f32 float32
		bs  []byte
		sh  diffShape
		p   *diffShape
		sl  []diffInner
		m   map[string]any
		mi  map[int]string
		n   stdjson.Number
		tt  time.Time
		in  diffInner
		rec fuzzRecord
		rs  []fuzzRecord
	)
	return []any{&a, &s, &i, &f, &f32, &bs, &sh, &p, &sl, &m, &mi, &n, &tt, &in, &rec, &rs}
}

var diffInputs = []string{
	`{"a":1,"B":"x"}`, `{"A":1,"b":"x"}`, `{"a":1,"a":2}`, `{"a":1,}`, `[1,2,]`, `01`, `-0`, `1.`, `.5`, `1e`, `+1`,
	`"\u00e9\ud83d\ude00"`, `"\ud800"`, `"\ud800\u0041"`, "\"\xff\xfe\"", "\"a\x01b\"", `"\x"`, `"\u12"`,
	`null`, `true`, `nul`, `1 2`, ` 1 `, `1}`, "", " ", `{}`, `[]`, `{"id":"1"}`, `{"id":1.5}`, `{"id":1e2}`,
	`{"id":9223372036854775808}`, `{"U8":256}`, `{"Str":"42"}`, `{"Str":42}`, `{"Str":"x"}`, `{"Bytes":"AAEC/w=="}`,
	`{"Bytes":"AAEC/w"}`, `{"Bytes":"!!"}`, `{"Bytes":[1,2]}`, `{"When":"2024-02-29T13:04:05.123+01:30"}`, `{"When":"bad"}`,
	`{"IntMap":{"1":"a","x":"b"}}`, `{"IntMap":{"1":"a"}}`, `{"TextMap":{"T:a":1}}`, `{"TextMap":{"b":1}}`, `{"Text":"T:q"}`,
	`{"Text":"q"}`, `{"JM":{"N":5}}`, `{"JMP":null}`, `{"Any":[1,"2",{"3":null}]}`, `{"Num":12.5}`, `{"Num":"12.5"}`, `{"Num":"x"}`,
	`{"Slice":[{"a":1},{"a":"x"},{"a":3}]}`, `{"Arr":[1,2,3]}`, `{"Arr":[1]}`, `{"name":null,"id":null}`, `{"Raw":{"x": [1, 2]}}`,
	`{"Dup":"d"}`, `{"E":2}`, `{"-":"dash"}`, `{"Skip":"s"}`, `{"unexp":5}`, `{"Iface":"x"}`, `{"Iface":null}`,
	`1.7976931348623157e309`, `123456789012345678901234567890`, `1e400`, `"2024-01-01T00:00:00Z"`, `{"a":"\u0000"}`,
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001), strings.Repeat("[", 20000), strings.Repeat(`{"a":`, 10001),
	`{"Map":{"a":1},"Map":{"b":2}}`, `{"Ptr":{"a":1}}`, `{"Ptr":null}`, `{"F32":3.4028235e+38}`, `3.4028235e+38`,
	`-3.4028235e+38`, `3.4028236e+38`, `{"F32":1e39}`, `{"NAME":"upper"}`, `{"nAmE":"mixed"}`, "{\"name\":\"a\"}\n",
	"\ufeff{}", `{"a" : 1 , "B" : "x" }`, `[{"a":1,"B":"x"},{"a":2}]`, `{"a":1,"B":"x"}garbage`, `{"a":true}`,
	`{"ID":1,"Name":"n","Tags":["a",null],"Inner":{"ID":2},"M":{"k":1,"j":"x"}}`, `[{"ID":1},{"Inner":{"Inner":{}}}]`,
}

func diffShort(b []byte) string {
	if len(b) > 100 {
		return fmt.Sprintf("%q... (%d bytes)", b[:100], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// checkDecodeSame decodes in into every destination with encoding/json and
// with the JSON codec, and fails unless both refuse it with the same error
// or both give the same value.
func checkDecodeSame(t *testing.T, in []byte) {
	t.Helper()
	want, got := diffDsts(), diffDsts()
	for k := range want {
		werr := stdjson.Unmarshal(in, want[k])
		gerr := JSON.Unmarshal(in, got[k])
		if (werr != nil) != (gerr != nil) {
			t.Errorf("%s into %T: encoding/json: %v; codec: %v", diffShort(in), want[k], werr, gerr)
			continue
		}
		if werr != nil && (werr.Error() != gerr.Error() || reflect.TypeOf(werr) != reflect.TypeOf(gerr)) {
			t.Errorf("%s into %T: encoding/json error %T %v, codec error %T %v", diffShort(in), want[k], werr, werr, gerr, gerr)
		}
		// Refused bytes leave dst as they leave it: encoding/json leaves
		// it untouched on a syntax error, go-json may have decoded a part
		// before the codec handed the bytes to encoding/json.
		if werr == nil && !reflect.DeepEqual(want[k], got[k]) {
			t.Errorf("%s into %T:\nencoding/json %#v\ncodec         %#v", diffShort(in), want[k],
				reflect.ValueOf(want[k]).Elem(), reflect.ValueOf(got[k]).Elem())
		}
	}
}

func checkEncodeSame(t *testing.T, v any) {
	t.Helper()
	want, werr := stdjson.Marshal(v)
	got, gerr := JSON.Marshal(v)
	if (werr != nil) != (gerr != nil) || !bytes.Equal(want, got) {
		t.Errorf("%T %#v:\nencoding/json %s %v\ncodec         %s %v", v, v, want, werr, got, gerr)
	}
}

func TestJSONEncodesAsEncodingJSON(t *testing.T) {
	for _, v := range diffValues() {
		checkEncodeSame(t, v)
	}
	for _, v := range []any{math.NaN(), math.Inf(1), map[bool]int{true: 1}, func() {}, make(chan int), diffMarshalerErr{}} {
		checkEncodeSame(t, v)
		if _, err := JSON.Marshal(v); err == nil {
			t.Errorf("%T: encoded", v)
		}
	}
}

type diffMarshalerErr struct{}

func (diffMarshalerErr) MarshalJSON() ([]byte, error) { return nil, errors.New("refused") }

func TestJSONDecodesAsEncodingJSON(t *testing.T) {
	for _, in := range diffInputs {
		checkDecodeSame(t, []byte(in))
	}
	for _, v := range diffValues() {
		b, err := stdjson.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		checkDecodeSame(t, b)
	}
}

// go-json alone refuses math.MaxFloat32 as encoding/json writes it: the
// codec hands such bytes to encoding/json. If go-json comes to read them,
// this test says the fallback's one known use is gone.
func TestJSONReadsMaxFloat32(t *testing.T) {
	in := []byte(`{"F32":3.4028235e+38}`)
	var raw diffShape
	if err := gojson.Unmarshal(in, &raw); err == nil {
		t.Log("go-json now reads 3.4028235e+38 into a float32: the note in jsonengine.go is out of date")
	}
	var v diffShape
	if err := JSON.Unmarshal(in, &v); err != nil || v.F32 != math.MaxFloat32 {
		t.Fatalf("got %v, %v; want math.MaxFloat32", v.F32, err)
	}
}

// Entries written before the engine changed, by encoding/json, read back
// through the payload as the values they were written from.
func TestJSONReadsEntriesEncodingJSONWrote(t *testing.T) {
	for _, v := range []any{
		diffSample(),
		fuzzRecord{ID: 7, Name: "é<&>", Tags: []string{"a", ""}, Inner: &fuzzRecord{ID: 8}, M: map[string]float64{"x": 0.1}},
		[]fuzzRecord{{ID: 1}, {}},
		struct {
			ID               int
			Name, Email, Bio string
		}{42, "Ada Lovelace", "ada@example.com", "Wrote the first program."},
		map[string]any{"n": 1.5, "l": []any{"s", nil, false}},
		"x\u2028", 42, float32(math.MaxFloat32), []byte(nil),
	} {
		enc, err := stdjson.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		old := append([]byte{kindValue}, enc...)
		want := reflect.New(reflect.TypeOf(v))
		if err := stdjson.Unmarshal(enc, want.Interface()); err != nil {
			t.Fatal(err)
		}
		got := reflect.New(reflect.TypeOf(v))
		if cached, err := decodePayload(JSON, nil, old, got.Interface()); err != nil || cached != nil {
			t.Fatalf("%T: %v, %v", v, cached, err)
		}
		if !reflect.DeepEqual(want.Elem().Interface(), got.Elem().Interface()) {
			t.Errorf("%T:\nencoding/json %#v\ncodec         %#v", v, want.Elem(), got.Elem())
		}
		// And the codec writes those very bytes today.
		if now, err := encodeValue(JSON, v); err != nil || !bytes.Equal(now, old) {
			t.Errorf("%T: written as %q, before as %q (%v)", v, now, old, err)
		}
	}
}

// FuzzJSONDiff: for any bytes, the codec decodes what encoding/json
// decodes, into the same values, and refuses what it refuses; what it
// decoded encodes to encoding/json's bytes.
func FuzzJSONDiff(f *testing.F) {
	for _, in := range diffInputs {
		f.Add([]byte(in))
	}
	for _, v := range diffValues() {
		if b, err := stdjson.Marshal(v); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		checkDecodeSame(t, in)
		var v any
		if stdjson.Unmarshal(in, &v) == nil {
			checkEncodeSame(t, v)
		}
		var sh diffShape
		if stdjson.Unmarshal(in, &sh) == nil {
			checkEncodeSame(t, sh)
		}
	})
}

// FuzzJSONDiffValues: values built from any strings, numbers and bytes
// encode as encoding/json encodes them and decode back alike.
func FuzzJSONDiffValues(f *testing.F) {
	f.Add("Ada <&> \u2028", 1.5, uint32(0x7f7fffff), int64(-1), []byte("b"), int64(0))
	f.Add("\xff\x00\"\\", -0.0, uint32(1), int64(1<<62), []byte(nil), int64(1<<40))
	f.Fuzz(func(t *testing.T, s string, fl float64, f32bits uint32, i int64, bs []byte, sec int64) {
		f32 := math.Float32frombits(f32bits)
		if math.IsNaN(fl) || math.IsInf(fl, 0) || math.IsNaN(float64(f32)) || math.IsInf(float64(f32), 0) {
			return
		}
		when := time.Unix(sec%(1<<40), i%1e9).In(time.FixedZone("", int(i%50000)))
		v := diffShape{
			ID: i, Name: s, F32: f32, F64: fl, Bytes: bs, When: when, WhenP: &when,
			Map: map[string]any{s: fl, "i": float64(i), "s": []any{s, nil}}, IntMap: map[int]string{int(i): s},
			TextMap: map[diffText]int{{s}: 1}, Text: diffText{s}, Any: s, Slice: []diffInner{{int(i), s}},
			Num: stdjson.Number(fmt.Sprint(i)), Ptr: &diffInner{B: s},
		}
		checkEncodeSame(t, v)
		checkEncodeSame(t, fuzzRecord{ID: int(i), Name: s, Tags: []string{s}, M: map[string]float64{s: fl}})
		if b, err := stdjson.Marshal(v); err == nil {
			checkDecodeSame(t, b)
		}
	})
}

// BenchmarkJSONDecode compares the codec with encoding/json decoding and
// encoding the struct the hit benchmarks cache.
//
//	go test -run x -bench JSONDecode -benchmem ./depcache
func BenchmarkJSONDecode(b *testing.B) {
	type user struct {
		ID               int
		Name, Email, Bio string
	}
	u := user{ID: 42, Name: "Ada Lovelace", Email: "ada@example.com", Bio: "Wrote the first program."}
	in, _ := stdjson.Marshal(u)
	for _, e := range []struct {
		name string
		m    func(any) ([]byte, error)
		u    func([]byte, any) error
	}{{"encoding-json", stdjson.Marshal, stdjson.Unmarshal}, {"codec", JSON.Marshal, JSON.Unmarshal}} {
		b.Run("decode/"+e.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var v user
				if err := e.u(in, &v); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("encode/"+e.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.m(u); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
