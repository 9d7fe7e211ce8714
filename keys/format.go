package keys

import (
	"database/sql/driver"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// NilValue is what [FormatValue] returns for nil, a nil pointer and a
// driver.Valuer whose value is nil. No string formats to it.
const NilValue = `\N`

// FormatValue formats one primary-key value the way dependency tags and
// identities (Type::value) carry it:
//
//   - integers in decimal, floats in the shortest form that reads back
//     (strconv 'g'), booleans as true and false;
//   - strings (and []byte) with '\' and ':' escaped by '\', and a string
//     that is exactly "*" as `\*`, so a key can never read as a list tag;
//   - time.Time in UTC, RFC 3339 with nanoseconds;
//   - a driver.Valuer through its Value (nil is [NilValue]);
//   - pointers through what they point to; nil as [NilValue];
//   - anything else through encoding.TextMarshaler (escaped as a string),
//     else '#' and a hash of its canonical encoding.
//
// Callers should pass keys in their field's Go type: the int 7 and the
// string "7" both format as 7, like the database column would.
func FormatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return NilValue
	case string:
		return escape(x)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case int32:
		return strconv.FormatInt(int64(x), 10)
	case uint32:
		return strconv.FormatUint(uint64(x), 10)
	case uint:
		return strconv.FormatUint(uint64(x), 10)
	case time.Time:
		return formatTime(x)
	}
	return formatValue(reflect.ValueOf(v), 0)
}

// FormatKey formats a (possibly composite) primary key: its values by
// [FormatValue], joined with ':' in primary-key order.
func FormatKey(vals ...any) string {
	if len(vals) == 1 {
		return FormatValue(vals[0])
	}
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = FormatValue(v)
	}
	return strings.Join(parts, ":")
}

const maxValuerDepth = 4

func formatValue(v reflect.Value, depth int) string {
	for {
		if !v.IsValid() {
			return NilValue
		}
		if v.Kind() == reflect.Interface {
			if v.IsNil() {
				return NilValue
			}
			v = v.Elem()
			continue
		}
		if v.Kind() == reflect.Pointer && v.IsNil() {
			return NilValue
		}
		ti := infoOf(v.Type())
		if depth < maxValuerDepth {
			if val, ok := driverValue(v, ti); ok {
				return formatValue(reflect.ValueOf(val), depth+1)
			}
		}
		if v.Kind() != reflect.Pointer {
			break
		}
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return strconv.FormatUint(v.Uint(), 10)
	case reflect.Float32:
		return strconv.FormatFloat(v.Float(), 'g', -1, 32)
	case reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	case reflect.Complex64, reflect.Complex128:
		return strconv.FormatComplex(v.Complex(), 'g', -1, 128)
	case reflect.String:
		return escape(v.String())
	case reflect.Slice:
		if v.IsNil() {
			return NilValue
		}
		if isBytes(v.Type()) {
			return escape(string(v.Bytes()))
		}
	case reflect.Map, reflect.Func, reflect.Chan, reflect.UnsafePointer:
		if v.IsNil() {
			return NilValue
		}
	case reflect.Struct:
		if v.Type() == timeType && v.CanInterface() {
			return formatTime(v.Interface().(time.Time))
		}
	}
	if text, ok := marshalText(v, infoOf(v.Type())); ok {
		return escape(string(text))
	}
	// No identity rules here: an identity is made of formatted values.
	e := encoder{}
	e.encode(v, 0)
	if e.fatal != nil {
		return "#" + hashHex(append([]byte("X"), v.Type().String()...))
	}
	return "#" + hashHex(e.buf)
}

// driverValue calls v's driver.Valuer, if it has one and it does not fail.
func driverValue(v reflect.Value, ti *typeInfo) (driver.Value, bool) {
	var vr driver.Valuer
	switch {
	case ti.valuer && v.CanInterface():
		vr = v.Interface().(driver.Valuer)
	case ti.valPtr:
		p, ok := addr(v)
		if !ok {
			return nil, false
		}
		vr = p.Interface().(driver.Valuer)
	default:
		return nil, false
	}
	val, err := vr.Value()
	if err != nil {
		return nil, false
	}
	return val, true
}

// escape escapes '\' and ':' with '\', and a lone "*" as `\*`.
func escape(s string) string {
	if s == "*" {
		return `\*`
	}
	if !strings.ContainsAny(s, `\:`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 4)
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\\' || c == ':' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
