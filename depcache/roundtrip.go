package depcache

import (
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// TypeChecker is implemented by a Codec that can tell, before anything is
// stored, whether values of a type come back from Unmarshal exactly as they
// went into Marshal. Memoize and Fetch ask once per function and codec: a
// result type the codec refuses is never cached (the function runs every
// time, and the refusal is logged and counted once). A Codec without it is
// trusted with every type.
type TypeChecker interface {
	CheckType(t reflect.Type) error
}

// ErrCodecType is wrapped by the built-in codecs' refusals.
var ErrCodecType = errors.New("depcache: the codec cannot round-trip this type")

// JSON and msgpack decode into an interface what they see on the wire, not
// what was encoded: a struct comes back as map[string]any, a number as
// float64 (rounding int64 above 2^53) or msgpack's smallest integer type.
// A miss would return a User and a hit a map, so such types are refused.
// Types that decode themselves (json.Unmarshaler, encoding.TextUnmarshaler,
// msgpack's Unmarshaler and CustomDecoder) are trusted.

func (jsonCodec) CheckType(t reflect.Type) error {
	return checkNoInterface(t, "json", jsonDecodesItself)
}

func (msgpackCodec) CheckType(t reflect.Type) error {
	return checkNoInterface(t, "msgpack", msgpackDecodesItself)
}

// Gob carries the concrete type of an interface value (for types given to
// gob.Register; others fail to encode and are returned uncached), so it
// round-trips interfaces: Memoize hands it a pointer to an interface
// result so that the type travels.
func (gobCodec) CheckType(reflect.Type) error { return nil }

var (
	jsonUnmarshaler    = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler    = reflect.TypeFor[encoding.TextUnmarshaler]()
	msgpackUnmarshaler = reflect.TypeFor[msgpack.Unmarshaler]()
	msgpackDecoder     = reflect.TypeFor[msgpack.CustomDecoder]()
)

func implementsAny(t reflect.Type, ifaces ...reflect.Type) bool {
	for _, i := range ifaces {
		if t.Implements(i) || (t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(i)) {
			return true
		}
	}
	return false
}

func jsonDecodesItself(t reflect.Type) bool {
	return implementsAny(t, jsonUnmarshaler, textUnmarshaler)
}

func msgpackDecodesItself(t reflect.Type) bool {
	return implementsAny(t, msgpackUnmarshaler, msgpackDecoder)
}

// checkNoInterface refuses t if the codec named tag would decode into an
// interface anywhere inside it: at the top, in an exported field it
// encodes, or in an element of a pointer, slice, array or map.
func checkNoInterface(t reflect.Type, tag string, decodesItself func(reflect.Type) bool) error {
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type, path string) error
	walk = func(t reflect.Type, path string) error {
		if seen[t] {
			return nil
		}
		seen[t] = true
		if t.Kind() != reflect.Interface && decodesItself(t) {
			return nil
		}
		switch t.Kind() {
		case reflect.Interface:
			return fmt.Errorf("%w: %s decodes %s (%v) as whatever the bytes look like, not as the type that was stored; return a concrete type, or use the gob codec with gob.Register",
				ErrCodecType, tag, path, t)
		case reflect.Pointer, reflect.Slice, reflect.Array:
			return walk(t.Elem(), path+"[]")
		case reflect.Map:
			if err := walk(t.Key(), path+" key"); err != nil {
				return err
			}
			return walk(t.Elem(), path+"[k]")
		case reflect.Struct:
			for i := range t.NumField() {
				f := t.Field(i)
				if !f.IsExported() && !(f.Anonymous && derefKind(f.Type) == reflect.Struct) {
					continue // not encoded: dropped, documented
				}
				name, _, _ := strings.Cut(f.Tag.Get(tag), ",")
				if name == "-" {
					continue
				}
				if err := walk(f.Type, path+"."+f.Name); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(t, "the result")
}

func derefKind(t reflect.Type) reflect.Kind {
	if t.Kind() == reflect.Pointer {
		return t.Elem().Kind()
	}
	return t.Kind()
}

// resultCheck is the verdict on a result type under one codec.
type resultCheck struct {
	codec Codec
	err   error // the codec cannot round-trip the type: run uncached
	// byPointer: the type is an interface, so the codec is given a pointer
	// to it and encodes the concrete type along (gob).
	byPointer bool
}

type resultCheckKey struct {
	t         reflect.Type
	codecType reflect.Type
	codecName string
}

// resultChecks holds the verdicts already reached, so that each (result
// type, codec) is walked and reported once per process, also for Fetch,
// whose options are built per call.
var resultChecks sync.Map // resultCheckKey → *resultCheck

// checkResult returns the verdict for result type t under codec c, m's
// codec. A memoized function keeps its last verdict: a hit costs one atomic
// load. Fetch, whose specs serve calls of any result type, finds it in m's
// verdicts by type alone (m.results: one lock-free read, where the
// process-wide map hashes the codec's type and name too).
func (s *memoSpec) checkResult(m *Manager, key string, c Codec, t reflect.Type) *resultCheck {
	if s.perCall {
		return m.verdict(s, key, t)
	}
	if v := s.result.Load(); v != nil && sameCodec(v.codec, c) {
		return v
	}
	v := m.verdict(s, key, t)
	s.result.Store(v)
	return v
}

// verdict returns the verdict for result type t under m's codec.
func (m *Manager) verdict(s *memoSpec, key string, t reflect.Type) *resultCheck {
	v, ok := m.results.Load(t)
	if !ok {
		v = s.reachVerdict(m, key, m.cfg.codec, t)
		m.results.Store(t, v)
	}
	return v.(*resultCheck)
}

// reachVerdict returns the process's verdict for t under c, walking the
// type and reporting a refusal the first time.
func (s *memoSpec) reachVerdict(m *Manager, key string, c Codec, t reflect.Type) *resultCheck {
	k := resultCheckKey{t: t, codecType: reflect.TypeOf(c), codecName: c.Name()}
	if v, ok := resultChecks.Load(k); ok {
		return v.(*resultCheck)
	}
	v := &resultCheck{codec: c, byPointer: t.Kind() == reflect.Interface}
	if tc, ok := c.(TypeChecker); ok {
		if err := tc.CheckType(t); err != nil {
			v.err = fmt.Errorf("depcache: result type %v is never cached with codec %s (first seen in %s): %w", t, c.Name(), s.id, err)
		}
	}
	if prev, loaded := resultChecks.LoadOrStore(k, v); loaded {
		v = prev.(*resultCheck)
	} else if v.err != nil {
		m.usageError(key, v.err)
	}
	return v
}

// encodable is what the codec is given for a result v: v itself, or for an
// interface type a pointer to it, so that the codec sees the interface and
// not only the value inside.
func encodable[R any](rc *resultCheck, v *R) any {
	if rc.byPointer {
		return v
	}
	return *v
}

// sameCodec compares codecs without panicking on uncomparable ones.
func sameCodec(a, b Codec) bool {
	ta := reflect.TypeOf(a)
	if ta != reflect.TypeOf(b) {
		return false
	}
	if !ta.Comparable() {
		return a.Name() == b.Name()
	}
	return a == b
}
