package depcache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"unsafe"

	"github.com/depcache/go-depcache/internal/pluginapi"
)

// A payload is what the manager stores as an entry's value: a kind byte,
// then the codec's bytes of the value, a []byte value as it is, or a cached
// error.
const (
	kindValue byte = 'v'
	kindBytes byte = 'b'
	kindError byte = 'e'
)

// errCorruptPayload reports a payload this manager cannot read.
var errCorruptPayload = errors.New("depcache: unreadable cached value")

// encodeValue makes the payload of v. With a built-in codec a non-nil
// []byte is stored as it is: it is bytes already, and the codec would only
// inflate it (JSON's base64) and cost a hit a decode. A nil one goes
// through the codec, which tells it from an empty one; so does every value
// of a user's codec, which may compress or encrypt.
func encodeValue(c Codec, v any) ([]byte, error) {
	raw, ok := v.([]byte)
	if pb, isShared := v.(pluginapi.Bytes); isShared {
		raw, ok = pb, true
	}
	if ok && raw != nil && builtinCodec(c) {
		out := make([]byte, 0, len(raw)+1)
		out = append(out, kindBytes)
		return append(out, raw...), nil
	}
	b, err := marshalRecovered(c, v)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(b)+1)
	out = append(out, kindValue)
	return append(out, b...), nil
}

// marshalRecovered is c.Marshal(v) with a panic turned into an error, so
// that the value is returned uncached as any value the codec cannot encode:
// encoding/gob panics on a nil pointer (a memoized *T result that is nil),
// and a codec of the user's may panic too.
func marshalRecovered(c Codec, v any) (b []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			b, err = nil, fmt.Errorf("%s panicked encoding %T: %v", c.Name(), v, r)
		}
	}()
	return c.Marshal(v)
}

func builtinCodec(c Codec) bool {
	switch c.(type) {
	case jsonCodec, msgpackCodec, gobCodec:
		return true
	}
	return false
}

// errorMatcher decides whether an error is cached, and rebuilds it on a hit.
type errorMatcher struct {
	id string // stable across processes: it is stored with the error
	// match returns the part of err to store (nil for a sentinel) and
	// whether err is to be cached.
	match func(err error) (detail any, ok bool)
	// rebuild returns the error to unwrap to from stored detail bytes.
	rebuild func(c Codec, detail []byte) (error, error)
}

func isMatcher(target error) errorMatcher {
	return errorMatcher{
		id:    "is:" + target.Error(),
		match: func(err error) (any, bool) { return nil, errors.Is(err, target) },
		rebuild: func(Codec, []byte) (error, error) {
			return target, nil
		},
	}
}

func asMatcher[E error]() errorMatcher {
	t := reflect.TypeFor[E]()
	return errorMatcher{
		id: "as:" + t.String(),
		match: func(err error) (any, bool) {
			var e E
			if !errors.As(err, &e) {
				return nil, false
			}
			return e, true
		},
		rebuild: func(c Codec, detail []byte) (error, error) {
			var e E
			if err := c.Unmarshal(detail, &e); err != nil {
				return nil, err
			}
			return e, nil
		},
	}
}

// cachedError is an error served from the cache: its message is the
// original's, and it unwraps to the sentinel or the typed value it matched,
// so errors.Is and errors.As answer as they did for the original.
type cachedError struct {
	msg   string
	inner error
}

func (e *cachedError) Error() string { return e.msg }
func (e *cachedError) Unwrap() error { return e.inner }

// encodeError returns the payload for err, or ok=false if no matcher
// accepts it.
func encodeError(c Codec, ms []errorMatcher, err error) (b []byte, ok bool, encErr error) {
	for _, m := range ms {
		detail, match := m.match(err)
		if !match {
			continue
		}
		var db []byte
		if detail != nil {
			if db, encErr = marshalRecovered(c, detail); encErr != nil {
				return nil, true, encErr
			}
		}
		msg := err.Error()
		b = make([]byte, 0, 1+3*binary.MaxVarintLen64+len(m.id)+len(msg)+len(db))
		b = append(b, kindError)
		b = binary.AppendUvarint(b, uint64(len(m.id)))
		b = append(b, m.id...)
		b = binary.AppendUvarint(b, uint64(len(msg)))
		b = append(b, msg...)
		return append(b, db...), true, nil
	}
	return nil, false, nil
}

// decodeResult is decodePayload into a new R. A []byte (or
// pluginapi.Bytes) result stored as bytes is read without the codec, and
// without a pointer to it escaping: one allocation fewer on such a hit, and
// for pluginapi.Bytes no copy at all (its callers only read).
func decodeResult[R any](c Codec, ms []errorMatcher, b []byte) (v R, cached error, err error) {
	if len(b) > 0 && b[0] == kindBytes {
		switch any((*R)(nil)).(type) {
		case *pluginapi.Bytes:
			*(*pluginapi.Bytes)(unsafe.Pointer(&v)) = b[1:]
			return v, nil, nil
		case *[]byte:
			// A copy: b is the backend's reply, which the caller must
			// not be able to modify.
			*(*[]byte)(unsafe.Pointer(&v)) = append(make([]byte, 0, len(b)-1), b[1:]...)
			return v, nil, nil
		}
	}
	p := new(R)
	cached, err = decodePayload(c, ms, b, p)
	return *p, cached, err
}

// decodePayload reads a payload into dst (a pointer) or returns the cached
// error it holds as cached. With no error rules (ms nil, as for Get) a cached
// error comes back with its message only.
func decodePayload(c Codec, ms []errorMatcher, b []byte, dst any) (cached error, err error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty", errCorruptPayload)
	}
	switch b[0] {
	case kindValue:
		if err := c.Unmarshal(b[1:], dst); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", errCorruptPayload, c.Name(), err)
		}
		return nil, nil
	case kindBytes:
		if p, ok := dst.(*[]byte); ok {
			// A copy: b is the backend's reply, which the caller must not
			// be able to modify.
			*p = append(make([]byte, 0, len(b)-1), b[1:]...)
			return nil, nil
		}
		// Read into another type (Manager.Get into a *string): as the codec
		// would have read the []byte.
		enc, err := c.Marshal(b[1:])
		if err == nil {
			err = c.Unmarshal(enc, dst)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", errCorruptPayload, c.Name(), err)
		}
		return nil, nil
	case kindError:
		r := b[1:]
		next := func() (string, bool) {
			l, k := binary.Uvarint(r)
			if k <= 0 || l > uint64(len(r)-k) {
				return "", false
			}
			s := string(r[k : k+int(l)])
			r = r[k+int(l):]
			return s, true
		}
		id, ok1 := next()
		msg, ok2 := next()
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%w: truncated error", errCorruptPayload)
		}
		if ms == nil {
			// A plain Get: no rules to rebuild with; keep the message.
			return &cachedError{msg: msg}, nil
		}
		for _, m := range ms {
			if m.id != id {
				continue
			}
			inner, err := m.rebuild(c, r)
			if err != nil {
				return nil, fmt.Errorf("%w: error detail: %v", errCorruptPayload, err)
			}
			return &cachedError{msg: msg, inner: inner}, nil
		}
		// Cached under an error rule this function no longer has.
		return nil, fmt.Errorf("%w: no error rule %q", errCorruptPayload, id)
	default:
		return nil, fmt.Errorf("%w: kind %q", errCorruptPayload, b[0])
	}
}
