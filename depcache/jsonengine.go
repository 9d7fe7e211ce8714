package depcache

import (
	"encoding/json"
	"errors"

	gojson "github.com/goccy/go-json"
)

// The JSON codec's engine is github.com/goccy/go-json, an encoding/json
// work-alike that decodes a struct of strings in half encoding/json's
// allocations and a fraction of its time: on a hit the decode was the
// largest cost beyond the GET. The wire format is encoding/json's, and so
// is every decoded value: json_diff_test.go checks, by table and by
// fuzzing, that both encode the same bytes and decode the same values, and
// that bytes encoding/json wrote decode as encoding/json decodes them.
//
// Where go-json refuses bytes or a value, or panics, encoding/json decides,
// so that what the codec accepts, the errors it returns and their types are
// encoding/json's. The one difference the fuzzer found is of that kind:
// go-json v0.12.0 refuses the float32 ±3.4028235e+38 (math.MaxFloat32 as
// encoding/json writes it), which encoding/json reads. Refusals are rare on
// a hit (a corrupt or foreign entry), so the second decode costs nothing
// on the path that matters.

// The others measured against encoding/json by the same differential tests
// (December 2026, Go 1.26): segmentio/encoding v0.5.4 decodes as cheaply
// but accepts what encoding/json refuses (arrays nested past its depth of
// 10,000 into an any) and refuses a json.Number written as a string;
// bytedance/sonic v1.15.5 (ConfigStd) encodes map[bool]int, which
// encoding/json refuses, spent 6 allocations to decode the struct, and
// generates machine code at run time (a JIT, per architecture).
// encoding/json/v2 exists only under GOEXPERIMENT=jsonv2, which a library
// cannot ask of its users.

// errEnginePanicked stands for a panic of go-json: the value is then
// encoded or decoded again by encoding/json.
var errEnginePanicked = errors.New("depcache: go-json panicked")

func jsonMarshal(v any) ([]byte, error) {
	if b, err := fastMarshal(v); err == nil {
		return b, nil
	}
	return json.Marshal(v)
}

func jsonUnmarshal(b []byte, v any) error {
	if fastUnmarshal(b, v) == nil {
		return nil
	}
	return json.Unmarshal(b, v)
}

func fastMarshal(v any) (b []byte, err error) {
	defer func() {
		if recover() != nil {
			b, err = nil, errEnginePanicked
		}
	}()
	return gojson.Marshal(v)
}

func fastUnmarshal(b []byte, v any) (err error) {
	defer func() {
		if recover() != nil {
			err = errEnginePanicked
		}
	}()
	return gojson.Unmarshal(b, v)
}
