package depcache

import (
	"encoding/binary"
	"errors"
)

// errMsgpackShape reports msgpack bytes whose headers promise more than the
// bytes hold.
var errMsgpackShape = errors.New("msgpack: malformed")

// checkMsgpack walks the headers of the first msgpack value in b without
// decoding it, and fails if any array, map, string, binary or extension
// declares more elements or bytes than b has left. vmihailenco/msgpack
// (v5.4.1) sizes []any and map[string]any by the declared count before
// reading any element: ten foreign bytes declaring an array of 2^32
// elements make it allocate tens of GiB and the runtime kill the process
// (an out-of-memory fatal error, which recover cannot catch). After this
// check every count is at most len(b), so decoding allocates in proportion
// to the bytes it was given.
func checkMsgpack(b []byte) error {
	pending := 1 // values still to walk
	i := 0
	for pending > 0 {
		if i >= len(b) {
			return errMsgpackShape
		}
		c := b[i]
		i++
		pending--
		var count, skip, size int // elements added, fixed bytes, length-prefix bytes
		switch {
		case c <= 0x7f || c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3: // fixints, nil, booleans
		case c <= 0x8f: // fixmap
			count = 2 * int(c&0x0f)
		case c <= 0x9f: // fixarray
			count = int(c & 0x0f)
		case c <= 0xbf: // fixstr
			skip = int(c & 0x1f)
		case c == 0xc4 || c == 0xd9: // bin8, str8
			size = 1
		case c == 0xc5 || c == 0xda: // bin16, str16
			size = 2
		case c == 0xc6 || c == 0xdb: // bin32, str32
			size = 4
		case c == 0xc7: // ext8: length, type, data
			size, skip = 1, 1
		case c == 0xc8:
			size, skip = 2, 1
		case c == 0xc9:
			size, skip = 4, 1
		case c == 0xca, c == 0xce, c == 0xd2: // float32, uint32, int32
			skip = 4
		case c == 0xcb, c == 0xcf, c == 0xd3: // float64, uint64, int64
			skip = 8
		case c == 0xcc, c == 0xd0: // uint8, int8
			skip = 1
		case c == 0xcd, c == 0xd1: // uint16, int16
			skip = 2
		case c >= 0xd4 && c <= 0xd8: // fixext 1, 2, 4, 8, 16: type, data
			skip = 1 + 1<<(c-0xd4)
		case c == 0xdc, c == 0xde: // array16, map16
			size = 2
		case c == 0xdd, c == 0xdf: // array32, map32
			size = 4
		default: // 0xc1, never used
			return errMsgpackShape
		}
		if size > 0 {
			if len(b)-i < size {
				return errMsgpackShape
			}
			var n uint64
			switch size {
			case 1:
				n = uint64(b[i])
			case 2:
				n = uint64(binary.BigEndian.Uint16(b[i:]))
			case 4:
				n = uint64(binary.BigEndian.Uint32(b[i:]))
			}
			i += size
			if n > uint64(len(b)) {
				return errMsgpackShape
			}
			switch c {
			case 0xdc, 0xdd:
				count = int(n)
			case 0xde, 0xdf:
				count = 2 * int(n)
			default:
				skip += int(n)
			}
		}
		if skip > len(b)-i {
			return errMsgpackShape
		}
		i += skip
		// Every value still to walk takes at least one byte.
		if count > len(b)-i-pending {
			return errMsgpackShape
		}
		pending += count
	}
	return nil
}
