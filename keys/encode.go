package keys

import (
	"bytes"
	"encoding"
	"encoding/binary"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"time"
	"unsafe"
)

// Limits of the canonical encoding. A value beyond them is reported as
// unsupported rather than walked for ever.
const (
	maxDepth = 2000    // nesting
	maxNodes = 1 << 22 // values visited in one argument
)

// Tags of the canonical encoding. Each value is a tag byte, then either a
// length-prefixed text (tok) or a count followed by the elements.
const (
	tagNil       = 'N'
	tagTrue      = 'T'
	tagFalse     = 'F'
	tagInt       = 'i'
	tagUint      = 'u'
	tagFloat     = 'f'
	tagComplex   = 'c'
	tagString    = 's'
	tagBytes     = 'b'
	tagTime      = 't'
	tagIdentity  = 'K'
	tagList      = 'L'
	tagMap       = 'M'
	tagStruct    = 'S'
	tagText      = 'm' // encoding.TextMarshaler of a struct with no exported fields
	tagBackRef   = 'R' // a pointer, map or slice already on the path: its distance up
	tagUnsupport = 'U'
)

// encoder writes the canonical encoding of a value: maps in the order of
// their encoded keys, pointers and interfaces transparent (nil is tagNil),
// structs as their short type name and their exported and embedded fields
// in declaration order, and values with an identity (rules 1-4) as that
// identity when identity is set.
type encoder struct {
	buf      []byte
	identity bool
	path     []visit
	nodes    int
	err      error // the smallest message among unsupported values
	fatal    error // limits exceeded: the encoding is unusable
}

type visit struct {
	ptr unsafe.Pointer
	typ reflect.Type
	n   int
}

func (e *encoder) tok(tag byte, s string) {
	e.buf = append(e.buf, tag)
	e.buf = binary.AppendUvarint(e.buf, uint64(len(s)))
	e.buf = append(e.buf, s...)
}

func (e *encoder) count(tag byte, n int) {
	e.buf = append(e.buf, tag)
	e.buf = binary.AppendUvarint(e.buf, uint64(n))
}

func (e *encoder) unsupported(t reflect.Type, why string) {
	err := fmt.Errorf("%w: %s (%s)", ErrUnsupported, why, t)
	if e.err == nil || err.Error() < e.err.Error() {
		e.err = err
	}
	e.tok(tagUnsupport, t.String())
}

// enter pushes a reference onto the path, or writes a back reference and
// returns false when it is already there (a cycle).
func (e *encoder) enter(p unsafe.Pointer, t reflect.Type, n int) bool {
	for i := len(e.path) - 1; i >= 0; i-- {
		if vs := e.path[i]; vs.ptr == p && vs.typ == t && vs.n == n {
			e.count(tagBackRef, len(e.path)-i)
			return false
		}
	}
	e.path = append(e.path, visit{p, t, n})
	return true
}

func (e *encoder) leave() { e.path = e.path[:len(e.path)-1] }

func (e *encoder) encode(v reflect.Value, depth int) {
	if e.fatal != nil {
		return
	}
	e.nodes++
	if e.nodes > maxNodes {
		e.fatal = fmt.Errorf("%w: more than %d values", ErrUnsupported, maxNodes)
		return
	}
	if depth > maxDepth {
		e.fatal = fmt.Errorf("%w: nested deeper than %d", ErrUnsupported, maxDepth)
		return
	}
	for v.IsValid() && v.Kind() == reflect.Interface {
		if v.IsNil() {
			v = reflect.Value{}
			break
		}
		v = v.Elem()
	}
	if !v.IsValid() {
		e.buf = append(e.buf, tagNil)
		return
	}
	t := v.Type()
	ti := infoOf(t)
	if e.identity {
		if id, ok := identity(v, ti); ok {
			e.tok(tagIdentity, id)
			return
		}
	}
	switch v.Kind() {
	case reflect.Bool:
		if v.Bool() {
			e.buf = append(e.buf, tagTrue)
		} else {
			e.buf = append(e.buf, tagFalse)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		e.tok(tagInt, strconv.FormatInt(v.Int(), 10))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		e.tok(tagUint, strconv.FormatUint(v.Uint(), 10))
	case reflect.Float32, reflect.Float64:
		e.tok(tagFloat, strconv.FormatFloat(v.Float(), 'g', -1, 64))
	case reflect.Complex64, reflect.Complex128:
		e.tok(tagComplex, strconv.FormatComplex(v.Complex(), 'g', -1, 128))
	case reflect.String:
		e.tok(tagString, v.String())
	case reflect.Pointer:
		if v.IsNil() {
			e.buf = append(e.buf, tagNil)
			return
		}
		if e.enter(v.UnsafePointer(), t, 0) {
			e.encode(v.Elem(), depth+1)
			e.leave()
		}
	case reflect.Slice:
		if v.IsNil() {
			e.buf = append(e.buf, tagNil)
			return
		}
		if isBytes(t) {
			e.tok(tagBytes, string(v.Bytes()))
			return
		}
		if e.enter(v.UnsafePointer(), t, v.Len()) {
			e.list(v, depth)
			e.leave()
		}
	case reflect.Array:
		e.list(v, depth)
	case reflect.Map:
		if v.IsNil() {
			e.buf = append(e.buf, tagNil)
			return
		}
		if e.enter(v.UnsafePointer(), t, 0) {
			e.mapEntries(v, depth)
			e.leave()
		}
	case reflect.Struct:
		e.structValue(v, t, ti, depth)
	case reflect.Func, reflect.Chan, reflect.UnsafePointer:
		if v.IsNil() {
			e.buf = append(e.buf, tagNil)
			return
		}
		e.unsupported(t, "non-nil "+v.Kind().String())
	default:
		e.unsupported(t, "kind "+v.Kind().String())
	}
}

func (e *encoder) list(v reflect.Value, depth int) {
	n := v.Len()
	e.count(tagList, n)
	for i := range n {
		e.encode(v.Index(i), depth+1)
	}
}

func (e *encoder) mapEntries(v reflect.Value, depth int) {
	type entry struct{ k, v []byte }
	entries := make([]entry, 0, v.Len())
	outer := e.buf
	it := v.MapRange()
	for it.Next() {
		e.buf = nil
		e.encode(it.Key(), depth+1)
		k := e.buf
		e.buf = nil
		e.encode(it.Value(), depth+1)
		entries = append(entries, entry{k, e.buf})
	}
	e.buf = outer
	slices.SortFunc(entries, func(a, b entry) int {
		if c := bytes.Compare(a.k, b.k); c != 0 {
			return c
		}
		return bytes.Compare(a.v, b.v)
	})
	e.count(tagMap, len(entries))
	for _, en := range entries {
		e.buf = append(e.buf, en.k...)
		e.buf = append(e.buf, en.v...)
	}
}

func (e *encoder) structValue(v reflect.Value, t reflect.Type, ti *typeInfo, depth int) {
	if t == timeType {
		if !v.CanInterface() {
			e.unsupported(t, "unexported time")
			return
		}
		e.tok(tagTime, formatTime(v.Interface().(time.Time)))
		return
	}
	if ti.opaque {
		if text, ok := marshalText(v, ti); ok {
			e.tok(tagText, ti.name)
			e.tok(tagText, string(text))
			return
		}
		e.unsupported(t, "struct without exported fields")
		return
	}
	e.tok(tagStruct, ti.name)
	e.count(tagStruct, len(ti.fields))
	for _, f := range ti.fields {
		e.tok(tagString, f.name)
		e.encode(v.Field(f.index), depth+1)
	}
}

func marshalText(v reflect.Value, ti *typeInfo) ([]byte, bool) {
	var m encoding.TextMarshaler
	switch {
	case ti.text && v.CanInterface():
		m = v.Interface().(encoding.TextMarshaler)
	case ti.textPtr:
		p, ok := addr(v)
		if !ok {
			return nil, false
		}
		m = p.Interface().(encoding.TextMarshaler)
	default:
		return nil, false
	}
	text, err := m.MarshalText()
	return text, err == nil
}
