package backends

import (
	"encoding/binary"
	"fmt"
)

// The envelope is how stores that keep bytes (Redis) lay out an Entry:
//
//	magic 'd' 'c', version 1,
//	uvarint len + era, uvarint n,
//	uvarint count of deps, each uvarint len + tag,
//	the rest: the value.
//
// It is binary so that a hit decodes without allocating per field more than
// the tags themselves, and versioned so that a later layout can coexist
// with entries written by older processes (they read as corrupt: a miss).
const envelopeVersion = 1

// EncodeEntry lays e out as an envelope.
func EncodeEntry(e Entry) []byte {
	n := 3 + binary.MaxVarintLen64*3 + len(e.Since.Era) + len(e.Value)
	for _, d := range e.Deps {
		n += binary.MaxVarintLen64 + len(d)
	}
	b := make([]byte, 0, n)
	b = append(b, 'd', 'c', envelopeVersion)
	b = binary.AppendUvarint(b, uint64(len(e.Since.Era)))
	b = append(b, e.Since.Era...)
	b = binary.AppendUvarint(b, e.Since.N)
	b = binary.AppendUvarint(b, uint64(len(e.Deps)))
	for _, d := range e.Deps {
		b = binary.AppendUvarint(b, uint64(len(d)))
		b = append(b, d...)
	}
	return append(b, e.Value...)
}

// DecodeEntry parses an envelope. Bytes that are not one give an error
// wrapping ErrCorrupt, never a panic. The returned Value aliases b.
func DecodeEntry(b []byte) (Entry, error) {
	var e Entry
	if len(b) < 3 || b[0] != 'd' || b[1] != 'c' {
		return e, fmt.Errorf("%w: not an envelope", ErrCorrupt)
	}
	if b[2] != envelopeVersion {
		return e, fmt.Errorf("%w: envelope version %d", ErrCorrupt, b[2])
	}
	r := b[3:]
	str := func() (string, bool) {
		l, k := binary.Uvarint(r)
		if k <= 0 || l > uint64(len(r)-k) {
			return "", false
		}
		s := string(r[k : k+int(l)])
		r = r[k+int(l):]
		return s, true
	}
	num := func() (uint64, bool) {
		v, k := binary.Uvarint(r)
		if k <= 0 {
			return 0, false
		}
		r = r[k:]
		return v, true
	}
	var ok bool
	if e.Since.Era, ok = str(); !ok {
		return Entry{}, fmt.Errorf("%w: truncated era", ErrCorrupt)
	}
	if e.Since.N, ok = num(); !ok {
		return Entry{}, fmt.Errorf("%w: truncated epoch", ErrCorrupt)
	}
	count, ok := num()
	if !ok || count > uint64(len(r)) { // every tag takes at least one byte
		return Entry{}, fmt.Errorf("%w: bad dependency count", ErrCorrupt)
	}
	if count > 0 {
		e.Deps = make([]string, count)
		for i := range e.Deps {
			if e.Deps[i], ok = str(); !ok {
				return Entry{}, fmt.Errorf("%w: truncated dependency", ErrCorrupt)
			}
		}
	}
	e.Value = r
	return e, nil
}
