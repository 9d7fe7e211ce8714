// Package backends defines the store interface that depcache runs on, and a
// registry of stores by name for the DEP_CACHE_BACKEND variable.
//
// A Backend is not a plain key-value store: it carries the fill protocol that
// keeps depcache free of stale reads.
//
//   - Every invalidation advances a store-wide epoch and stamps each tag it
//     invalidates with the new value, then deletes the entries registered
//     under those tags.
//   - A miss (Lookup) returns the current epoch, read before the computation
//     runs. The fill presents it back (Fill.Since); the store refuses the fill
//     (ErrStale) if any of its tags carries a newer stamp, atomically with
//     registering the entry under its tags and storing it.
//
// So a computation that read the database before a write committed either
// registered its entry before that write's invalidation stamped the tag —
// and the invalidation finds and deletes it — or registers after, and sees
// the stamp and stores nothing. Dependencies discovered during the
// computation are covered, since the check happens at fill time against the
// epoch read before the computation began.
//
// A store refuses a fill older than its longest allowed fill by itself,
// counting the time the fill waited to be applied, and checks every stamp
// before anything it does could prune one: a stamp is pruned only once it
// is older than that bound, so no stamp a fill in time must be checked
// against is gone. Clear stamps its namespace the same way (every fill of
// the namespace, or of one of its tags, that began before it is refused),
// so that a Clear standing for undelivered invalidations is as strong as
// they are.
//
// Entries remember their tags and their epoch (Entry.Deps, Entry.Since): a
// computation that uses a cached result inherits its tags and lowers its own
// epoch to the entry's, so a value valid only before a write can never be
// re-stored through a parent.
//
// A dependency is a pair (namespace, tag): an entry may depend on a tag of
// another namespace of the same store (one manager's page built from
// another manager's post), written ForeignDep(ns, tag) in Entry.Deps; the
// store checks that tag's stamp and registers the entry under it in that
// namespace, so that invalidating it there removes the entry. An entry may
// also carry tags it does not depend on (CarriedDep), which the store keeps
// and otherwise ignores. See ParseDep.
//
// Optional interfaces: Releaser (fill leases), Notifier (in-process
// tiers) and Sets, small shared sets that only grow and survive Clear,
// which the GORM plugin keeps its conjunction schemes in (a writer must
// see every column set any process's reads depend on). The Redis store
// implements all three, the memory store Notifier and Sets.
//
// Every store must pass the conformance suite in backends/backendtest.
package backends
