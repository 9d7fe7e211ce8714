// Package backendtest is the conformance suite that every backends.Backend
// passes: the in-process store, miniredis, a real Redis and Redis Cluster run
// the same cases through Run.
//
// A store's test describes how to get a fresh store and how to move its
// clock in a Harness, and calls Run:
//
//	func TestConformance(t *testing.T) {
//		clock := newFakeClock()
//		backendtest.Run(t, backendtest.Harness{
//			New: func(t *testing.T) backends.Backend {
//				return memory.New(memory.WithClock(clock.Now))
//			},
//			Advance:    func(t *testing.T, d time.Duration) { clock.Add(d) },
//			MaxFillAge: memory.DefaultMaxFillAge,
//		})
//	}
//
// Every case is a subtest of its own (run one with -run
// 'TestConformance/StaleGuard'), gets a Backend of its own from Harness.New,
// and works in a namespace of its own, "bt" followed by random hex (the
// namespace cases derive theirs from it). When the case ends the suite
// clears the namespaces it used and closes the Backend. So the suite can run
// against a Redis that other tests share: it never flushes, never clears a
// namespace it did not make, and only assumes of the backend-wide epoch that
// it grows. (Stamps it wrote stay until the store prunes them.) Cases run one after another, never in parallel,
// because Harness.Advance may move a clock that every store shares
// (miniredis's FastForward does).
//
// Long runs: by default the cases that scale (BigTag, Concurrent,
// NoStaleReads) run on sizes that keep `go test ./...` quick; with
// DEPCACHE_LONG=1 (Long, LongEnv) they run full size, and the stores' own
// long tests (Redis Cluster failover, Sentinel, the 20,000-read Cluster
// harness) run too. CI sets it.
//
// The cases:
//
//   - Miss: a Lookup of a missing key is a miss carrying a non-zero epoch of
//     the store's era.
//   - FillThenHit: a fill round-trips Value, Deps and Since; the store keeps
//     its own copy of the bytes, on fill and on lookup.
//   - EmptyValue: an empty (or nil) value is still a hit.
//   - NoDeps: a fill without dependencies is stored and survives
//     invalidations.
//   - Refill: a second fill of a key replaces the first and stays registered.
//   - TTL: 0 < TTL ≤ the TTL set; NoExpiry for a TTL of 0 and for NoExpiry
//     (or at most Harness.MaxTTL where the store caps it); ErrNotFound for a
//     missing key.
//   - Expiry (needs Advance): an expired entry is a miss with no TTL, and
//     its registration is forgotten: invalidating its tag counts 0.
//   - Delete: counts only the keys that existed.
//   - Invalidate: removes every entry registered under the tags, counts
//     distinct entries (one under two tags invalidated together counts
//     once), leaves entries under other tags.
//   - StaleGuard: a fill whose Since predates an invalidation of one of its
//     tags fails with ErrStale and stores nothing, neither entry nor
//     registration; a fill under other tags, and a fill with an epoch read
//     after the invalidation, succeed.
//   - ForeignEra: a Since of another era (or the zero Epoch) is ErrStale.
//   - MaxFillAge (needs MaxFillAge): a fill whose Age is beyond it is
//     ErrStale.
//   - EpochGrows: the epoch after an invalidation is newer, in the same era.
//   - NamespaceIsolation: namespaces "x", "x2" and "x:y" do not see each
//     other's entries, invalidations, stamps or Clear.
//   - NamespaceGlob: namespaces holding glob characters ("x*", "x?", "x[2]")
//     do not reach "x2" and the like.
//   - ForeignDeps: an entry depending on a tag of another namespace
//     (backends.ForeignDep) is refused by that tag's stamp and removed by
//     its invalidation there, never by its own namespace's tag of the same
//     name; a carried tag (backends.CarriedDep) is stored, not registered.
//   - Clear: removes and counts every entry and registration of the
//     namespace, keeps recent stamps, and the namespace works afterwards.
//   - AwkwardNames: keys and tags with ":", "*", "{", "}", "\\", spaces,
//     glob characters, Unicode and 1 KB of length are stored, found,
//     invalidated and deleted exactly.
//   - BigTag: a tag with Harness.BigTag entries is invalidated fully, with
//     the right count.
//   - Concurrent: goroutines look up, fill, invalidate and delete at once
//     (run the suite with -race); afterwards the store is consistent.
//   - NoStaleReads: the stale-read property below.
//   - NaiveFill: the same property broken on purpose, to show that the
//     property test can fail: a fill whose Since is read after the database
//     read is stored over a committed write's invalidation.
//
// The stale-read property (DESIGN.md, "Consistency"): once a write has
// committed and its invalidation has returned, no later read returns data
// from before that write. The case keeps a "database" of a few rows, each a
// version counter. Writers bump a row's version, invalidate the row's tag and
// then record the version as acknowledged. Readers record the acknowledged
// version, look the row up and, on a miss, read the version (the database
// read), yield (runtime.Gosched, so that writers slip in between) and fill
// it with the epoch of the miss; a reader fails the case if the value it
// ends up with, hit or computed, is older than what was acknowledged before
// its lookup.
package backendtest
