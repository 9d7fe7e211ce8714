package depcache

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"sort"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// Codec turns values into bytes and back. Implementations must be safe for
// concurrent use. Unmarshal is given bytes that Marshal of the same Codec
// produced, or bytes from elsewhere (another version of the program):
// it must return an error, never panic, on bytes it cannot read. Unmarshal
// must not modify b, nor keep it after returning (as json.Unmarshaler): on a
// hit b is the backend's reply, shared rather than copied. With the
// built-in codecs (JSON, Msgpack, Gob) a value of type []byte (a memoized
// function's result, a Set's value) is stored as it is and never reaches
// the codec, unless it is nil; a codec of the user's gets every value.
type Codec interface {
	Name() string
	Marshal(v any) ([]byte, error)
	Unmarshal(b []byte, v any) error
}

// JSON is the default codec: encoding/json's format and semantics (struct
// tags, Marshaler and TextMarshaler, []byte as base64, time.Time as RFC
// 3339), encoded and decoded by github.com/goccy/go-json, which decodes in
// fewer allocations, with encoding/json deciding whatever go-json refuses
// (jsonengine.go). Unexported fields and fields tagged json:"-" do not
// survive it (they are zero on a hit), nor do the bytes of a string that
// are not valid UTF-8 (they become U+FFFD).
var JSON Codec = jsonCodec{}

// Msgpack is a compact binary codec (github.com/vmihailenco/msgpack/v5).
// Unexported fields do not survive it.
var Msgpack Codec = msgpackCodec{}

// Gob is encoding/gob. It cannot encode nil pointers at top level; such a
// value is returned uncached. Unexported fields do not survive it, and an
// empty slice comes back nil. Gob bytes name the concrete types of
// interface values, and decoding builds whichever type registered with
// gob.Register they name: use Gob only for data the application alone
// writes (doc.go, "Security"). JSON, the default, never builds a type the
// bytes name.
var Gob Codec = gobCodec{}

type jsonCodec struct{}

func (jsonCodec) Name() string                    { return "json" }
func (jsonCodec) Marshal(v any) ([]byte, error)   { return jsonMarshal(v) }
func (jsonCodec) Unmarshal(b []byte, v any) error { return jsonUnmarshal(b, v) }

type msgpackCodec struct{}

func (msgpackCodec) Name() string                  { return "msgpack" }
func (msgpackCodec) Marshal(v any) ([]byte, error) { return msgpack.Marshal(v) }
func (msgpackCodec) Unmarshal(b []byte, v any) error {
	// Foreign bytes must not make the decoder allocate by a count they
	// declare (checkMsgpack says why).
	if err := checkMsgpack(b); err != nil {
		return err
	}
	return msgpack.Unmarshal(b, v)
}

type gobCodec struct{}

func (gobCodec) Name() string { return "gob" }

func (gobCodec) Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (gobCodec) Unmarshal(b []byte, v any) (err error) {
	// encoding/gob has panicked on hostile input in past releases; a cache
	// must treat such bytes as a miss, not crash.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("gob: %v", r)
		}
	}()
	return gob.NewDecoder(bytes.NewReader(b)).Decode(v)
}

var (
	codecMu sync.RWMutex
	codecs  = map[string]Codec{"json": JSON, "msgpack": Msgpack, "gob": Gob}
)

// RegisterCodec makes c available by its Name to DEP_CACHE_SERIALIZER.
// Registering a name again replaces the codec.
func RegisterCodec(c Codec) {
	if c == nil || c.Name() == "" {
		panic("depcache: RegisterCodec needs a codec with a name")
	}
	codecMu.Lock()
	defer codecMu.Unlock()
	codecs[c.Name()] = c
}

// LookupCodec returns the codec registered under name.
func LookupCodec(name string) (Codec, bool) {
	codecMu.RLock()
	defer codecMu.RUnlock()
	c, ok := codecs[name]
	return c, ok
}

func codecNames() []string {
	codecMu.RLock()
	defer codecMu.RUnlock()
	names := make([]string, 0, len(codecs))
	for n := range codecs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
