// Package redisbackend is the depcache store on Redis, through a go-redis v9
// client: a *redis.Client (including a Sentinel failover client) or a
// *redis.ClusterClient (see "Redis Cluster" below). It
// implements the fill protocol of package backends: every invalidation
// advances one epoch per Redis and stamps the tags it invalidates, and a
// fill is refused (backends.ErrStale) if any of its tags carries a stamp
// newer than the epoch its computation started at.
//
// A Backend is safe for concurrent use. New wraps a client the caller owns;
// FromEnv opens one from REDIS_URL or REDIS_HOST/PORT/PASSWORD/DB and closes
// it on Close. Nothing is sent to the server until the first call.
//
// # Timeouts
//
// Every call ends at its context's deadline, even on a server that accepts
// connections and never answers (SIGSTOP, a long script, a full kernel
// backlog): go-redis honours deadlines only with ContextTimeoutEnabled, and
// otherwise waits for its ReadTimeout (3 s) or DialTimeout (5 s) however
// short the context. FromEnv's client sets it, with a 1 s dial timeout and
// 3 s read and write timeouts for calls whose context has no deadline (a
// REDIS_URL's own dial_timeout, read_timeout and write_timeout win). A
// *redis.Client (standalone or failover), *redis.ClusterClient or
// *redis.Ring given to New must be built with ContextTimeoutEnabled: true;
// without it Lookup and Fill fail with ErrNoContextTimeout (served
// uncached, logged by New) while invalidations still run, so that other
// processes see them. New does not turn the option on itself: that would
// write to options the client reads at every command, racing with whoever
// already uses it, and change the caller's own commands. A client of
// another type is trusted to honour deadlines. Callers arriving while the
// first call learns the server wait for it no longer than their own
// context.
//
// # Key layout
//
// For a namespace ns (a manager's prefix, such as "cache:users"):
//
//	ns:e:{key}       the entry: a string holding backends.EncodeEntry bytes
//	                 (value, dependency tags, the fill's epoch)
//	ns:t:{tag}       the tag's hash: one field per registered entry, the
//	                 entry's Redis key -> the id of the fill that registered
//	                 it (fresh per fill), plus the reserved field "~v", the
//	                 stamp "era:n:ms": the epoch of the tag's last
//	                 invalidation and the server time (ms) it happened
//	ns:c             the namespace stamp: a hash like a tag's holding
//	                 only "~v", the stamp of the namespace's last Clear,
//	                 which every fill of the namespace (or depending on
//	                 one of its tags) checks like a tag's stamp
//	ns:s             the tag index: a sorted set of the tag hash keys
//	                 (and of ns:c), scored by the time of their last
//	                 stamp or first registration (below, "Pruning")
//	depcache:epoch   the epoch "era:n", one per Redis, shared by every
//	                 namespace (WithEpochKey), outside every prefix
//
// Braces are Redis Cluster hash tags: a tag's registrations and stamp share
// one slot, so one script sees both. Namespaces should not contain "{", nor
// the sequences ":e:{" and ":t:{", which would make one namespace's keys
// look like another's. Registrations and stamps carry no TTL: they are
// never evicted under noeviction or volatile-* and are pruned by the
// scripts instead (below).
//
// # Pruning
//
// Metadata stays proportional to live entries plus recent invalidations,
// under any traffic and with no call from the user:
//
//   - Every tag hash is in the namespace's tag index (ns:s): an
//     invalidation moves the tags it stamps to now, a fill adds the tags
//     it registers under that are not there yet (ZADD NX). A tag is due
//     once its score is older than the prune age, twice WithMaxFillAge.
//   - Every fill and every invalidation trims the index a bounded amount:
//     it visits up to 32 due tags, plus one per tag the invalidation
//     stamps, so the index never grows faster than traffic prunes it. A
//     visit samples 16 registrations of the tag, removes those whose
//     entries are gone (their fill ids unchanged), drops the stamp if
//     nothing else is left and it is older than the prune age (the hash
//     disappears, and the tag leaves the index); a tag whose sample was
//     all alive is looked at again one prune age later, one that lost
//     dead registrations stays due for the next trim. So a tag filled once
//     whose entries expired, or invalidated once and never filled again,
//     leaves nothing behind. A fill also samples two registrations of
//     each of its tags (single Redis). Lookups never trim (a hit stays one
//     GET).
//   - Why a stamp may go then: a fill that a stamp could refuse read its
//     Since before the stamp was written; it is refused for its Age if it
//     started more than the maximum fill age before, and otherwise has
//     another whole maximum fill age for its own round trips. No stamp
//     that could still refuse a fill in flight goes. A registration goes
//     only once its entry is gone (a lease counts as there: its fill is
//     under way), with the fill id seen then.
//   - The namespace stamp (ns:c) is in the tag index like a tag hash, and
//     goes the same way: once older than the prune age.
//   - A fill's own trim never removes a stamp that fill is checked
//     against: on a single Redis the script checks every stamp before it
//     writes or trims anything, and trims only stamps older than the prune
//     age; on Cluster the trim runs after the fill's last step. What
//     bounds a fill's age is the client's check of Fill.Age before it
//     sends the fill: a fill delayed after that check by more than one
//     more WithMaxFillAge (a stalled process, a request held in transit)
//     can meet a stamp that another operation's trim pruned meanwhile.
//     The server does not know when the fill's Since was read.
//   - On a single Redis the trim runs inside the fill and invalidation
//     scripts (an invalidation of more than 224 tags trims on in further
//     scripts of 256 visits). On Cluster the due tags are read in the
//     first step of the fill or invalidation and the index is written in
//     its second (no extra round trip); a trim costs 4 more round trips
//     only when some tags were due (sample, EXISTS, settle, index), each
//     write conditional on what was read. The index is one key per
//     namespace, written by every invalidation and by fills of new tags.
//   - Why not a background pruner per Backend: it needs an owner for its
//     goroutine, knows only the namespaces its process has used, and
//     SCANs; incremental trimming costs nothing when nothing is due and
//     keeps pace with the traffic that creates the metadata.
//   - Clear and Prune clean every tag hash of the namespace (SCAN) and
//     trim the index until nothing is due.
//
// # Scripts and round trips
//
// Every operation is one Lua script or one plain command, so each is
// atomic on a single Redis:
//
//   - Lookup: MGET entry epoch — 1 round trip, hit or miss. Only a miss that
//     finds no epoch runs a small script that creates it with a new random
//     era (SET NX semantics): 1 more, once per era.
//   - Fill: one script, 1 round trip whatever the number of dependencies. It
//     refuses if the epoch is missing or of another era than Fill.Since, or if
//     a tag's stamp, or the namespace stamp (ns:c) of the entry's namespace
//     or of a dependency's, is of Since's era and newer (a stamp of another
//     era counts as missing); a fill older than WithMaxFillAge is refused
//     before it is sent. Otherwise it registers the entry in every tag hash (HSET) and
//     stores it (SET PX). It also samples two registrations of each tag
//     (HRANDFIELD) and removes those whose entries are gone, so that tag
//     hashes do not grow without bound as entries expire; and it trims
//     the tag index (above, "Pruning").
//   - Invalidate: one script bumps the epoch (a missing epoch starts a new
//     era), stamps every tag, and drains every tag whose registrations fit
//     WithChunkSize (1000): UNLINK the entries, then HDEL those
//     registrations, in the same script — a registration never goes before
//     its entry, so a concurrent invalidation cannot return while an entry
//     it should remove still exists. 1 round trip for small tags. A bigger
//     tag is then drained by HSCAN steps of about the chunk size, one script
//     each, over the whole cursor (never stopping at a hash that looks
//     empty): a tag of n registrations costs about n/1000 more round trips
//     and never blocks the server in one long script. The count returned is
//     the number of entries UNLINK removed, so an entry under several
//     invalidated tags counts once.
//   - Delete: UNLINK, 1 round trip. TTL: PTTL, 1 round trip.
//   - Clear: first the invalidation script on the namespace stamp ns:c
//     alone (it bumps the epoch, stamps ns:c, indexes it; WAIT where there
//     are replicas), 1 round trip, so that every fill of the namespace that
//     began before is refused and Clear is as strong as the invalidations
//     it may stand for (depcache's pending queue overflows into a Clear);
//     then SCAN MATCH ns:e:{* (glob characters of ns escaped) and UNLINK
//     page by page; then SCAN ns:t:{* and, one script per page of hashes,
//     remove the registrations whose entries are gone, drop stamps older
//     than the prune age from hashes that hold nothing else, and let
//     emptied hashes disappear; then trim the tag index until nothing is
//     due. Each hash is cleaned atomically, after the entries are gone, so
//     a fill racing Clear keeps its entry only with its registration.
//     Clear never deletes or resets the epoch and never uses KEYS,
//     FLUSHDB or FLUSHALL. Where a tag hash still holds registrations
//     (entries of other namespaces, backends.ForeignDep), Clear unlinks
//     those entries in the same script, before their registrations, as an
//     invalidation would. Prune runs the second half alone; neither is needed to
//     keep metadata bounded (above, "Pruning").
//
// go-redis sends scripts by EVALSHA (loaded at first use) and falls back to
// EVAL when the server lost them.
//
// # Server checks at first use
//
// The first call reads INFO server, INFO replication and CONFIG GET
// maxmemory-policy in one round trip, and loads the scripts in another. A
// network failure is retried at the next call.
//
//   - Redis 7 gets scripts with a "#!lua" shebang; those that remove data
//     declare flags=allow-oom, so that an invalidation never fails for lack
//     of memory (at maxmemory under noeviction a plain script that writes is
//     refused). Fills carry no such flag: at maxmemory they fail (and
//     depcache serves uncached). Older servers and miniredis, which parses no
//     shebang, get the plain scripts.
//   - Eviction: tag registrations and stamps must never be evicted while
//     entries depend on them, or an entry could outlive every way to find
//     it. Under noeviction nothing is evicted. Under volatile-* only keys
//     with a TTL are: metadata has none, and entries filled without expiry
//     get WithMaxTTL (24 h) so that something stays evictable (TTL reports
//     it). Under allkeys-* (or a policy this package does not know) Lookup
//     and Fill fail with ErrUnsafePolicy, since validate-on-read is not
//     built yet; Invalidate, Delete, TTL and Clear still work. Where CONFIG
//     GET is refused (managed Redis services, miniredis) the policy named by
//     WithAssumedPolicy (default noeviction) is assumed, and logged: set it
//     to the service's real policy.
//   - Replicas: if the server has connected replicas, every invalidation
//     script is pipelined with WAIT 1 <WithWaitTimeout> on the same
//     connection (still 1 round trip for a small tag), and an invalidation
//     no replica acknowledged fails with ErrNotReplicated: it was applied on
//     the master but a failover could lose it, so it must be retried. The
//     replica count is read once, at first use. WAIT is not consensus, and
//     a Redis that loses acknowledged writes (a restart from an older RDB)
//     can bring deleted entries back: use AOF with appendfsync always.
//
// # Redis Cluster
//
// New accepts a *redis.ClusterClient (or a UniversalClient that is one);
// the cluster must run Redis 7.0 or later (older ones fail every call).
// The key layout is the one above: an entry hashes by its key, a tag's
// hash (registrations and stamp) by its tag, and the one epoch key lives
// in a slot of its own. A script may touch the keys of one slot only, so
// the fill and the invalidation are split (consistency-notes.md, "Redis
// Cluster"), and a fill takes a lease on its entry:
//
//   - Lookup: one pipeline, SET entry <token> NX GET PX <lease TTL> on the
//     entry's master and GET epoch on the epoch's; go-redis sends both in
//     parallel — 1 round trip, hit or miss. An envelope is a hit (NX left
//     it alone); nothing is a miss whose lease the caller now holds
//     (Lookup.Lease); another caller's token is a miss with Lookup.Busy and
//     no lease (depcache computes without filling). Tokens start with
//     "dc\x00L", never an envelope. Every lookup, hit or miss, reads the
//     one epoch key (a hit's reply is ignored), so its master serves a GET
//     per lookup of every namespace: a hot key to plan for.
//   - Fill with the lease: GET epoch (E1, whose era must be Since's); then
//     in parallel one script per tag slot that refuses if a stamp of
//     Since's era is newer than Since and otherwise registers the entry
//     (HSET entry key -> fill id), and in the same pipeline a read-only
//     check of each namespace stamp (ns:c, a key of its own slot) the
//     fill depends on; then a compare-and-set on the entry's
//     slot: the value replaces the lease only if the entry still holds it
//     — 3 round trips whatever the number of tags (2 without tags, whose
//     namespace stamps are read with E1). The namespace stamps are read
//     only once the lease is in place (a fill without a lease may take it
//     in the first step, in parallel with that step's reads): a Clear that
//     stamps after the read SCANs afterwards, finds the lease and unlinks
//     it, so the compare-and-set fails. An
//     invalidation that stamped a tag before the registration makes it
//     refuse; one that stamped it after found the registration and
//     unlinked the entry key, lease included, so the compare-and-set
//     fails: ErrStale either way. A refused fill gives its lease back.
//   - Fill without a lease (Manager.Set, or a miss that found another
//     caller's lease): the first round trip also checks the stamps without
//     registering and takes the lease if the entry holds nothing or a
//     lease (another caller's fill then fails); over an existing entry the
//     lease replaces it only after the check passed, so that a refused
//     fill leaves the entry alone — 3 round trips, 4 over an entry.
//   - Release (backends.Releaser): a script deletes the entry key if it
//     still holds the lease, 1 round trip. Leases expire after
//     WithLeaseTTL (default WithMaxFillAge), which matters only when a
//     process dies mid-fill; a lease is no entry to Get, Exists, TTL,
//     Delete's and Clear's counts or an invalidation's count.
//   - Invalidate: a script bumps the epoch on its slot (1); per tag in
//     parallel, a script stamps it (unless it holds a newer stamp) and
//     reads its registrations, the whole hash if it fits WithChunkSize,
//     else an HSCAN step (2); the entries are unlinked, one script per key
//     (it tells entries from leases, for the count), pipelined (3); per
//     tag, a script removes the registrations read whose fill ids are
//     unchanged and reads the next HSCAN step (4). Steps 3 and 4 repeat
//     until every tag's HSCAN has run to its end: a tag of n registrations
//     costs about 2n/chunk more round trips, and an invalidation never
//     stops at a hash that looks empty while another drains it. 4 round
//     trips for small tags (2 when they hold nothing), whatever their
//     number. A registration is never removed before its entry is gone.
//   - Replicas: if any master has connected replicas at first use, every
//     step of an invalidation runs as one pipeline per master, on that
//     master's own connection (ClusterClient.MasterForKey), ending with
//     WAIT 1 <WithWaitTimeout>: same round trips, plus the replica's
//     acknowledgement. go-redis would send a plain WAIT to every shard on
//     other connections, where it covers nothing. A step no replica
//     acknowledged fails the invalidation with ErrNotReplicated; the rest
//     still unlinks every entry but removes no registration (a failover of
//     an entry's master could otherwise bring back an entry whose
//     registration, on another master, is gone). A master without a
//     replica (one promoted by a failover, until a replica joins it) fails
//     every invalidation that writes to it, until then.
//   - Delete: one script per key (UNLINK, counting entries, not leases),
//     pipelined: 1 round trip. TTL: GETRANGE and PTTL pipelined, 1.
//   - Clear first bumps the epoch (1) and stamps ns:c and indexes it (2),
//     waiting for a replica where there are any. Clear and Prune SCAN every
//     master (ForEachMaster) for ns:e:{* and ns:t:{*, glob characters of
//     ns escaped. Clear unlinks the entries it finds first, and later
//     every entry still registered under a tag hash (another namespace's,
//     one script per key) before removing its registration; then, for each tag hash, the registrations are read in
//     chunks, the entries' masters are asked which still exist (EXISTS; a
//     lease counts, its fill is under way), and a script removes the
//     others' registrations if their fill ids are unchanged and drops a
//     stamp older than the prune age from a hash that holds nothing
//     else. Fills do not sample registrations on Cluster (a fill's script
//     cannot see entries in other slots); stamps are trimmed as on a
//     single Redis (above, "Pruning").
//   - Server checks at first use run on every master (ForEachMaster):
//     CONFIG GET maxmemory-policy, INFO server and INFO replication; the
//     most dangerous policy of any master wins (allkeys-* over volatile-*
//     over noeviction). The scripts get a "#!lua" shebang; those that
//     stamp or remove declare flags=allow-oom. At maxmemory under
//     noeviction the lookup's SET NX is refused even on a hit: Lookup then
//     falls back to a plain GET (a hit still serves; a miss takes no
//     lease, and its fill fails like any write at maxmemory).
//
// Round trips per topology (a cluster pipeline counts as one: go-redis
// sends each master its part in parallel):
//
//	                         single Redis    Redis Cluster
//	Lookup hit               1 (MGET)        1 (SET NX GET + GET epoch)
//	Lookup miss              1               1 (lease taken)
//	Fill after a miss        1               3 (E1; check+register; CAS)
//	Fill without a lease     1               3, 4 over an existing entry
//	Invalidate, small tags   1               4 (epoch; stamp+read; unlink;
//	                                         remove registrations)
//	Trim of due stamps       0 (in the       +4 after a fill or an
//	                         scripts)        invalidation that found any
//	Delete, TTL              1               1
//
// What Cluster does not cover: the stamp check reads the epoch (E1) before
// it registers, so an epoch lost and recreated between the two (a master
// restarted without persistence) can let one fill through; a master's
// replication ID is not watched (an era does not change at a failover:
// WAIT is what keeps a promoted replica's stamps and epoch current); and
// WAIT is not consensus: a replica that acknowledged and then lost the
// write loses it. An invalidation step that meets a resharding (MOVED,
// ASK) on a master's own connection fails and is retried by depcache.
//
// # In-process tiers
//
// On a single Redis (standalone or Sentinel) the Backend is a
// backends.Notifier, so that depcache.WithLocalCache can keep decoded values
// in process. Every process with a tier registers in a sorted set beside
// the epoch key (<epoch key>:tiers, expiring in the server's clock a lease
// and a half after each renewal) and subscribes to <epoch key>:tiers:<db>.
// Notify runs one script that reads the registry and publishes the change,
// then waits for an acknowledgement from each registered process, at most
// the lease plus a tenth. A process serves from its tier only while its
// lease is valid: the lease is extended to "sent + lease" each time a
// heartbeat published with its registration (every lease/4) comes back on
// its subscription, after every change published before it. A process
// that does not acknowledge a change therefore had its lease run out
// before the Notify returns. A dropped subscription revokes the lease, and
// the next subscription clears the tiers before they serve again. A
// process that registers (or whose registration may have lapsed) waits a
// lease before serving, which lets a Notify that found no tier at all skip
// the script for a lease. WithTierLease sets the lease (default 1 s).
// Redis Cluster is refused: Listen fails and depcache keeps the tier off.
// After a Sentinel failover a registration that had not reached the
// promoted replica is lost until that process renews it (within lease/4),
// and a process cut off from the new master keeps serving until its lease
// runs out: the first lease after a failover is outside the tiers'
// guarantee (depcache without tiers is not affected).
package redisbackend
