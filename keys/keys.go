package keys

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Version is the first component of every key built by [Of]. It changes
// whenever the layout of keys changes, so that a new layout never reads
// entries written under an old one.
const Version = "v1"

// MaxLen is the length above which [Of] replaces the whole key by
// Version + "#" + a hash of it.
const MaxLen = 256

// CacheKeyer is implemented by values that name their own cache identity.
// The result is used verbatim as the argument's atom (see the package
// documentation), so it should carry its type, as in "User::42".
type CacheKeyer interface{ CacheKey() string }

// ErrUnsupported is wrapped by the errors of [OfErr] and [ArgErr] for values
// that cannot be keyed faithfully: non-nil funcs, channels and unsafe
// pointers, structs whose state is all unexported, and values too deep or too
// large to walk. The key returned alongside is still deterministic, but
// distinct values of that kind may share it, so callers that cache by key
// should not cache such calls.
var ErrUnsupported = errors.New("keys: unsupported value")

const (
	maxStringAtom = 64  // longer strings are hashed
	maxQuotedAtom = 96  // longer quoted forms are hashed
	maxBytesAtom  = 32  // longer byte slices are hashed
	maxIdentAtom  = 128 // longer identities are hashed
)

// Of returns the canonical key of args: Version followed by one atom per
// argument, each preceded by "|". See the package documentation for the
// atoms. Equal arguments give equal keys in every process; Of never panics
// on values it cannot key faithfully (see [OfErr]) and never contains a
// newline.
func Of(args ...any) string {
	k, _ := OfErr(args...)
	return k
}

// OfErr is [Of] that also reports, wrapping [ErrUnsupported], an argument
// that cannot be keyed faithfully. The key is the one Of returns.
func OfErr(args ...any) (string, error) {
	var buf [64]byte
	b, err := AppendOf(buf[:0], args...)
	return string(b), err
}

// AppendOf appends the key [OfErr] returns for args to dst, so that a caller
// building a longer key around it (a prefix, a function's name) makes one
// string instead of two.
func AppendOf(dst []byte, args ...any) ([]byte, error) {
	var first error
	start := len(dst)
	dst = append(dst, Version...)
	for i, a := range args {
		var err error
		dst, err = appendArg(append(dst, '|'), a)
		if err != nil && first == nil {
			first = fmt.Errorf("argument %d: %w", i, err)
		}
	}
	if len(dst)-start > MaxLen {
		h := hashHex(dst[start:])
		dst = append(append(append(dst[:start], Version...), '#'), h...)
	}
	return dst, first
}

// appendArg appends the atom [ArgErr] returns for v: integers, booleans and
// short strings (a memoized call's usual arguments) are written in place,
// without the atom's own string.
func appendArg(dst []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case int:
		return strconv.AppendInt(append(dst, "i:"...), int64(x), 10), nil
	case int64:
		return strconv.AppendInt(append(dst, "i:"...), x, 10), nil
	case int32:
		return strconv.AppendInt(append(dst, "i:"...), int64(x), 10), nil
	case uint:
		return strconv.AppendUint(append(dst, "u:"...), uint64(x), 10), nil
	case uint64:
		return strconv.AppendUint(append(dst, "u:"...), x, 10), nil
	case uint32:
		return strconv.AppendUint(append(dst, "u:"...), uint64(x), 10), nil
	case bool:
		return strconv.AppendBool(dst, x), nil
	case string:
		if len(x) <= maxStringAtom {
			start := len(dst)
			dst = strconv.AppendQuote(append(dst, "s:"...), x)
			if len(dst)-start-len("s:") <= maxQuotedAtom {
				return dst, nil
			}
			dst = dst[:start]
		}
	}
	atom, err := ArgErr(v)
	return append(dst, atom...), err
}

// Arg returns the atom of one argument, as it appears in [Of].
func Arg(v any) string {
	a, _ := ArgErr(v)
	return a
}

// ArgErr is [Arg] that also reports values that cannot be keyed faithfully.
func ArgErr(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "nil", nil
	case string:
		return stringAtom(x), nil
	case int:
		return "i:" + strconv.Itoa(x), nil
	case int64:
		return "i:" + strconv.FormatInt(x, 10), nil
	case int32:
		return "i:" + strconv.FormatInt(int64(x), 10), nil
	case uint:
		return "u:" + strconv.FormatUint(uint64(x), 10), nil
	case uint64:
		return "u:" + strconv.FormatUint(x, 10), nil
	case uint32:
		return "u:" + strconv.FormatUint(uint64(x), 10), nil
	case bool:
		return strconv.FormatBool(x), nil
	case float64:
		return floatAtom(x), nil
	case []byte:
		if x == nil {
			return "nil", nil
		}
		return bytesAtom(x), nil
	case time.Time:
		return timeAtom(x), nil
	}
	return valueAtom(reflect.ValueOf(v))
}

func valueAtom(v reflect.Value) (string, error) {
	for {
		if !v.IsValid() {
			return "nil", nil
		}
		if v.Kind() == reflect.Interface {
			if v.IsNil() {
				return "nil", nil
			}
			v = v.Elem()
			continue
		}
		ti := infoOf(v.Type())
		if id, ok := identity(v, ti); ok {
			return identAtom(id), nil
		}
		if v.Kind() != reflect.Pointer {
			break
		}
		if v.IsNil() {
			return "nil", nil
		}
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.Bool:
		return strconv.FormatBool(v.Bool()), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "i:" + strconv.FormatInt(v.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "u:" + strconv.FormatUint(v.Uint(), 10), nil
	case reflect.Float32, reflect.Float64:
		return floatAtom(v.Float()), nil
	case reflect.Complex64, reflect.Complex128:
		return "c:" + strconv.FormatComplex(v.Complex(), 'g', -1, 128), nil
	case reflect.String:
		return stringAtom(v.String()), nil
	case reflect.Slice, reflect.Map, reflect.Func, reflect.Chan, reflect.UnsafePointer:
		if v.IsNil() {
			return "nil", nil
		}
		if v.Kind() == reflect.Slice && isBytes(v.Type()) {
			return bytesAtom(v.Bytes()), nil
		}
	case reflect.Struct:
		if v.Type() == timeType && v.CanInterface() {
			return timeAtom(v.Interface().(time.Time)), nil
		}
	}
	e := encoder{identity: true}
	e.encode(v, 0)
	if e.fatal != nil {
		return "h:" + hashHex(append([]byte("X"), v.Type().String()...)), e.fatal
	}
	return "h:" + hashHex(e.buf), e.err
}

func stringAtom(s string) string {
	if len(s) <= maxStringAtom {
		if q := strconv.Quote(s); len(q) <= maxQuotedAtom {
			return "s:" + q
		}
	}
	return "s#" + hashHex([]byte(s))
}

func bytesAtom(b []byte) string {
	if len(b) <= maxBytesAtom {
		return "b:" + hex.EncodeToString(b)
	}
	return "b#" + hashHex(b)
}

func floatAtom(f float64) string { return "f:" + strconv.FormatFloat(f, 'g', -1, 64) }

func timeAtom(t time.Time) string { return "t:" + formatTime(t) }

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// identAtom returns an identity as an atom: verbatim when it cannot be
// confused with another atom and is short and printable, else "k#" and its
// hash.
func identAtom(s string) string {
	if identNeedsHash(s) {
		return "k#" + hashHex([]byte(s))
	}
	return s
}

func identNeedsHash(s string) bool {
	if s == "" || len(s) > maxIdentAtom || s == "nil" || s == "true" || s == "false" {
		return true
	}
	// Atoms of other kinds start with one letter and ':' or '#'; "x::…"
	// (an unexported type named x) is left alone.
	if len(s) >= 2 && strings.IndexByte("bcfhikstu", s[0]) >= 0 &&
		(s[1] == '#' || s[1] == ':' && (len(s) == 2 || s[2] != ':')) {
		return true
	}
	if !utf8.ValidString(s) {
		return true
	}
	for _, r := range s {
		if r == '|' || !unicode.IsPrint(r) {
			return true
		}
	}
	return false
}

// hashHex returns the first 16 bytes of the SHA-256 of b in hex.
func hashHex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}
