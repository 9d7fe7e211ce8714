package backends

import (
	"encoding/binary"
	"fmt"
	"unsafe"
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
	e, rest, err := decodeHeader(string(b), nil)
	if err != nil {
		return Entry{}, err
	}
	e.Value = b[len(b)-len(rest):]
	return e, nil
}

// DecodeEntryString is DecodeEntry for an envelope a client returned as a
// string (go-redis does): the era, the tags and the value all share s's
// memory, so a hit allocates the tag slice and nothing else. The returned
// Value must not be modified (it is s's bytes, and strings are immutable);
// Backend.Lookup's contract says so of every Entry.Value it returns.
func DecodeEntryString(s string) (Entry, error) {
	return DecodeEntryStringInto(s, nil)
}

// DecodeEntryStringInto is DecodeEntryString with the tags kept in deps's
// array when they fit in its capacity: a caller that makes an allocation
// for the lookup anyway (redisbackend's arguments) gives room for a few
// tags in it, and a hit allocates nothing for its tags. The returned Deps
// are capped at their length, so appending to them never writes into deps.
func DecodeEntryStringInto(s string, deps []string) (Entry, error) {
	e, rest, err := decodeHeader(s, deps)
	if err != nil {
		return Entry{}, err
	}
	if rest != "" {
		e.Value = unsafe.Slice(unsafe.StringData(rest), len(rest))
	}
	return e, nil
}

// decodeHeader parses everything before the value; its strings are
// substrings of s, and rest is the value. The tags go in buf's array if
// they fit.
func decodeHeader(s string, buf []string) (e Entry, rest string, err error) {
	if len(s) < 3 || s[0] != 'd' || s[1] != 'c' {
		return e, "", fmt.Errorf("%w: not an envelope", ErrCorrupt)
	}
	if s[2] != envelopeVersion {
		return e, "", fmt.Errorf("%w: envelope version %d", ErrCorrupt, s[2])
	}
	r := s[3:]
	var ok bool
	if e.Since.Era, r, ok = readString(r); !ok {
		return Entry{}, "", fmt.Errorf("%w: truncated era", ErrCorrupt)
	}
	if e.Since.N, r, ok = readUvarint(r); !ok {
		return Entry{}, "", fmt.Errorf("%w: truncated epoch", ErrCorrupt)
	}
	count, r, ok := readUvarint(r)
	if !ok || count > uint64(len(r)) { // every tag takes at least one byte
		return Entry{}, "", fmt.Errorf("%w: bad dependency count", ErrCorrupt)
	}
	if count > 0 {
		if count <= uint64(cap(buf)) {
			e.Deps = buf[:count:count]
		} else {
			e.Deps = make([]string, count)
		}
		for i := range e.Deps {
			if e.Deps[i], r, ok = readString(r); !ok {
				return Entry{}, "", fmt.Errorf("%w: truncated dependency", ErrCorrupt)
			}
		}
	}
	return e, r, nil
}

// readUvarint reads a uvarint from the front of r (binary.Uvarint over a
// string, which it does not take without a copy).
func readUvarint(r string) (v uint64, rest string, ok bool) {
	var shift uint
	for i := 0; i < len(r) && i < binary.MaxVarintLen64; i++ {
		c := r[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return 0, r, false // overflow
			}
			return v | uint64(c)<<shift, r[i+1:], true
		}
		v |= uint64(c&0x7f) << shift
		shift += 7
	}
	return 0, r, false
}

// readString reads a uvarint length and that many bytes from r.
func readString(r string) (s, rest string, ok bool) {
	l, r, ok := readUvarint(r)
	if !ok || l > uint64(len(r)) {
		return "", r, false
	}
	return r[:l], r[l:], true
}
