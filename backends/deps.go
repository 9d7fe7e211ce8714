package backends

import "strings"

// A dependency of an entry is a pair (namespace, tag): the tag "post:1" of
// namespace "cache:blog" and the tag "post:1" of "cache:users" are
// different dependencies, and invalidating one never touches entries that
// depend only on the other. Entry.Deps writes each pair relative to the
// namespace the entry is stored in, in one of three forms:
//
//   - a plain tag: a tag of the entry's own namespace (nearly every
//     dependency, and all that callers who use one namespace ever see);
//   - ForeignDep(ns, tag): a tag of another namespace of the same store. The
//     store checks that tag's stamp and registers the entry under it, in
//     namespace ns, so Invalidate(ns, tag) removes the entry too;
//   - CarriedDep(label, tag): a tag carried for someone else, kept in the
//     entry (a computation that uses the entry later passes it on) but
//     neither checked nor registered: the entry does not depend on it.
//
// A plain tag never starts with the two marker bytes, so the three forms
// never collide; depcache refuses tags that do.
const (
	foreignMark = "\x00"
	carriedMark = "\x01"
	dependSep   = "\x00"
)

// ForeignDep is the Entry.Deps form of tag of namespace ns, for an entry
// stored in another namespace of the same store.
func ForeignDep(ns, tag string) string { return foreignMark + ns + dependSep + tag }

// CarriedDep is the Entry.Deps form of a tag the entry carries for label
// (depcache: a manager's name) without depending on it.
func CarriedDep(label, tag string) string { return carriedMark + label + dependSep + tag }

// Dep is one element of Entry.Deps, read.
type Dep struct {
	// NS is the namespace the tag belongs to, or for a carried tag the
	// label it is carried for.
	NS  string
	Tag string
	// Carried reports a tag the entry does not depend on (CarriedDep).
	Carried bool
}

// ParseDep reads dep, an element of Entry.Deps of an entry stored in
// namespace ns. A malformed marked form reads as a carried tag, which
// stores ignore.
func ParseDep(ns, dep string) Dep {
	switch {
	case strings.HasPrefix(dep, foreignMark):
		other, tag, ok := strings.Cut(dep[len(foreignMark):], dependSep)
		if !ok {
			return Dep{Tag: dep, Carried: true}
		}
		return Dep{NS: other, Tag: tag}
	case strings.HasPrefix(dep, carriedMark):
		label, tag, _ := strings.Cut(dep[len(carriedMark):], dependSep)
		return Dep{NS: label, Tag: tag, Carried: true}
	}
	return Dep{NS: ns, Tag: dep}
}

// IsPlainTag reports whether tag can be written as a plain Entry.Deps
// element: it is not empty and starts with neither marker.
func IsPlainTag(tag string) bool {
	return tag != "" && !strings.HasPrefix(tag, foreignMark) && !strings.HasPrefix(tag, carriedMark)
}
