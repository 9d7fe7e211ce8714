// Package keys derives canonical cache keys from function arguments.
//
// [Of] turns arguments into a key that is equal for equal arguments in every
// process and run, and different for different ones: map iteration order
// and pointer addresses never reach a key. depcache uses it to key memoized
// calls; the GORM plugin uses [FormatValue] and [FormatKey] to format the
// primary keys in row tags such as "users::42".
//
// # Layout
//
// A key is [Version] followed by one atom per argument, each preceded by
// '|':
//
//	keys.Of(42, "bob", user) == `v1|i:42|s:"bob"|User::7`
//
// A key longer than [MaxLen] is replaced by Version, '#' and a hash of it.
// Keys never contain a newline or any other non-printable character.
//
// # Identity
//
// An argument that has an identity is keyed by it alone. In priority order:
//
//  1. a CacheKey() string method ([CacheKeyer]), with a value or pointer
//     receiver: its result. A nil pointer is keyed as nil, never called. A
//     method promoted from an embedded field counts, as in Go.
//  2. struct fields tagged `depcache:"key"`: "Type::value".
//  3. the GORM primary key: fields tagged `gorm:"primaryKey"` (or
//     primary_key, in any case), else the field ID, also when promoted from
//     an embedded struct such as gorm.Model: "Type::value".
//  4. a field Id: "Type::value".
//
// Type is the struct's type name without package path ("Page[User]" for a
// generic type). Values are formatted by [FormatValue]; a composite key
// joins them with ':' in field order ("Membership::3:7"). A rule whose field
// sits behind a nil embedded pointer is skipped.
//
// Warning: a struct that carries query parameters must not have an ID field
// (or a promoted one, or a primary-key tag), or it is keyed by that ID alone
// and two different queries share one cache entry. Rename the field or give
// the struct a CacheKey method. The first time a type with an ID (or Id)
// field and other exported fields, and no CacheKey, depcache:"key" or
// primary-key tag, is keyed by its ID alone, a warning naming the type and
// the fields left out goes to slog's default logger.
//
// An identity is used verbatim unless it could be mistaken for another atom
// or is unfit for a key (empty, longer than 128 bytes, not printable UTF-8,
// containing '|', "nil", "true", "false", or starting with one of the
// prefixes below): then it is "k#" and a hash of it. CacheKey results
// should therefore look like "Type::value", which is also what keeps two
// types with equal values apart.
//
// # Other values
//
//	nil, nil pointer, nil slice, map, func or chan   nil
//	bool                                             true, false
//	signed integers (every size, named types)        i:-42
//	unsigned integers                                u:42
//	floats (float32 widened exactly)                 f:1.5, f:NaN, f:-Inf
//	complex numbers                                  c:(1+2i)
//	strings up to 64 bytes                           s:"bob" (strconv.Quote)
//	longer strings                                   s#<hash>
//	[]byte up to 32 bytes                            b:626f62 (hex)
//	longer []byte                                    b#<hash>
//	time.Time (zone dropped, instant kept)           t:2024-05-01T10:00:00.5Z
//	everything else (structs, maps, slices, arrays)  h:<hash>
//
// A hash is the first 16 bytes of a SHA-256, in hex. Pointers are followed,
// so &x and x give one key. Composites are hashed from a canonical
// encoding: maps in the order of their encoded keys, slices and arrays in
// order (both as lists), structs as their short type name and their
// exported and embedded fields in declaration order (a field tagged
// `depcache:"-"` is left out), nested values that have an identity as that
// identity, nil distinct from empty and from zero. Integer kinds are
// distinguished only as signed and unsigned, so int8(1) and int64(1) share a
// key, while 1, uint(1), 1.0 and "1" all differ. Two struct types with the
// same name and the same fields share a key.
//
// # Values that cannot be keyed
//
// A non-nil func, channel or unsafe pointer, a struct whose fields are all
// unexported (unless it implements encoding.TextMarshaler, as netip.Addr
// and *big.Int do), and values nested deeper than 2000 levels or of more
// than 4M elements cannot be keyed faithfully. [Of] still returns a
// deterministic key, with a placeholder naming the type, so two such values
// may share a key; [OfErr] and [ArgErr] report them with an error wrapping
// [ErrUnsupported], and callers that cache by key should then not cache.
// Cycles through pointers, maps and slices are encoded as references to
// the enclosing value and never hang.
//
// Everything in this package is safe for concurrent use. A CacheKey method
// that panics panics through Of.
package keys
