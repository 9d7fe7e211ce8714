// Package memory is depcache's in-process store: a backends.Backend that
// keeps entries in maps guarded by one lock, for tests, single-process
// programs and the DEP_CACHE_BACKEND=memory setting.
//
// It carries the fill protocol of package backends in process. A Backend
// has an era of its own (random, from crypto/rand) and an epoch counter that
// every Invalidate advances. Per namespace it keeps the entries (a copy of
// the value's bytes, the tags, the Since of the fill, the expiry), the
// registrations of each tag (the entries filled under it) and each tag's
// stamp (the epoch and time of its last invalidation), and the namespace's
// stamp (the epoch and time of its last Clear, which also advances the
// epoch). A Fill checks the era, the fill's age against the longest allowed
// fill, and the stamps of its tags and of the namespaces it stores into or
// depends on against its Since, and stores and registers the entry, all
// under the same lock, so an invalidation or a Clear either finds the entry
// or refuses it. The age is Fill.Age plus the time the fill waited for the
// lock, by the Backend's clock, and every check runs before the sweep that
// prunes stamps: a fill cannot prune a stamp it must be checked against.
//
// Values are copied on Fill and on Lookup: callers may change the slices
// they pass and receive. Since the store keeps Entry values rather than
// bytes, a Lookup never reports corrupt data.
//
// Expiry: an entry filled with a TTL of 0 or backends.NoExpiry never
// expires. An expired entry is a miss at once; it is removed, with its
// registrations, when it is next looked up, deleted or invalidated, and by
// a sweep that every writing call (Fill, Invalidate, Delete, Clear) runs over
// a bounded number of the soonest-expired entries. Stamps are pruned by the
// same sweep once they are older than the longest allowed fill (see
// WithMaxFillAge): a fill that started before such a stamp was written is
// refused for its age anyway. The Backend starts no goroutine.
//
// With WithMaxEntries the Backend holds at most that many entries across all
// namespaces and evicts the least recently used one, with its
// registrations, to make room for a new key.
//
// A Backend is safe for concurrent use. The zero value is not usable: call
// New. Close drops everything; afterwards every call returns
// backends.ErrClosed.
package memory
