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
// 3 s read and write timeouts (a REDIS_URL's own dial_timeout,
// read_timeout and write_timeout win), and gives a command or pipeline
// sent without a deadline one of dial plus read timeout, retries included
// (go-redis retries a read that timed out: without it, 4 read timeouts per
// round trip). A
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
// On Redis Cluster a fill or lookup that fails after taking a fill lease
// gives the lease back within its own context while that has time left;
// once it has none (a master that stopped answering), the release goes on
// in the background, bounded by a second, and the call returns at its
// deadline. Close waits for those releases.
//
// # Security
//
// AUTH and ACL users come in REDIS_URL (redis://:password@host,
// redis://user:password@host) or REDIS_PASSWORD; no error or log line of
// this package quotes them (a REDIS_URL that does not parse is reported by
// the error of the same URL without its user information, since go-redis
// quotes the path and port a stray "/" or "#" in a password turns it
// into). TLS: rediss:// verifies the server against the system roots,
// or the CA certificates of the PEM file REDIS_TLS_CA_FILE names, and
// presents the client certificate of REDIS_TLS_CERT_FILE and
// REDIS_TLS_KEY_FILE where the server requires one.
//
// An ACL user needs exactly these commands (the README gives the line):
// GET SET MGET UNLINK DEL EXISTS PTTL GETRANGE SCAN ZCARD EVALSHA EVAL
// SCRIPT|LOAD INFO WAIT PUBLISH SUBSCRIBE ZREM PING HELLO AUTH SELECT, and
// inside the scripts TIME HGET HSET HDEL HGETALL HLEN HRANDFIELD HSCAN RENAME ZADD
// ZRANGEBYSCORE ZREMRANGEBYSCORE ZSCORE; on Cluster also CLUSTER|SLOTS and
// COMMAND (go-redis), on Redis 7.2 or later CLIENT|SETINFO (go-redis, at
// connect). Nothing of @admin; of @dangerous only INFO. Keys: the
// namespaces, the epoch key, its pruned key and the tier registry;
// channels: <epoch key>:tiers:*. Without CONFIG the eviction policy is
// assumed (WithAssumedPolicy) and that is logged once at Info. Without
// INFO, replicas and failovers cannot be seen: a single Redis logs an
// error once and runs on without WAIT and with eras not bound to the
// replication history; Cluster fails every call with that error.
//
// Namespaces are isolated: no key of one is a key of another, or matches
// the SCAN patterns of another's Clear and Prune (glob characters are
// escaped), as long as neither holds ":e:{" or ":t:{", which every call
// refuses (ErrNamespace). Registrations of another namespace's entries
// (backends.ForeignDep) are the one designed crossing: an invalidation or
// Clear of a namespace removes the entries registered under its tags.
// The epoch, the pruned key and the tier registry and channel are shared
// by every namespace on a Redis; tier changes name their namespace.
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
//	ns:t:{tag}:d     the tag's frozen hash, while an invalidation of a big
//	                 tag drains it (below, "Scripts and round trips"): the
//	                 registrations the tag hash held at that invalidation
//	                 and its stamp
//	ns:c             the namespace stamp: a hash like a tag's holding
//	                 only "~v", the stamp of the namespace's last Clear,
//	                 which every fill of the namespace (or depending on
//	                 one of its tags) checks like a tag's stamp
//	ns:s             the tag index: a sorted set of the tag hash keys
//	                 (and of ns:c), scored by the time of their last
//	                 stamp or first registration (below, "Pruning")
//	depcache:epoch   the epoch "era:n", one per Redis, shared by every
//	                 namespace (WithEpochKey), outside every prefix
//	{depcache:epoch}:pruned
//	                 the pruned key "era:n": the newest stamp of the era
//	                 that pruning removed (below), in the epoch key's
//	                 Cluster slot so that one script reads both
//
// An era is a random string followed by "." and the first 16 hex digits
// of the master_replid of the server that minted it. Every script that
// writes the epoch, and Cluster's fill check, reads INFO replication and
// counts an epoch minted in another replication history as missing, and
// a new era begins: a replica promoted by a failover may hold an older
// epoch than one a reader saw on the old master (its bump was never
// acknowledged: that invalidation failed), and the next invalidation
// would issue that number again; in a new era no fill begun before the
// failover can pass. A restart without the data changes the replication
// id too. A single Redis's fill, which every miss pays, spares the INFO
// (about a fifth of its server time) and checks the number instead: it
// refuses a Since ahead of the epoch (the bump it was read from was
// lost). A Since at or behind the promoted replica's epoch is as good as
// one read there: the replica holds a prefix of the old master's writes,
// so every stamp up to its epoch, written by the script that bumped to
// it, is there for the fill to check.
//
// Braces are Redis Cluster hash tags: a tag's registrations and stamp share
// one slot, so one script sees both. A namespace holding ":e:{" or ":t:{"
// is refused (ErrNamespace): without them no key of one namespace is a
// key of another, nor matches another's SCAN patterns, whatever the keys
// and tags hold. Other braces in a namespace are allowed; on Cluster they
// make its keys hash by what they enclose. Registrations and stamps carry no TTL: they are
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
//     leaves nothing behind. One fill in four also samples eight
//     registrations of one of its tags (single Redis). Lookups never trim (a hit stays one
//     GET).
//   - Why a stamp may go at all: before a stamp of the current era goes,
//     the script that drops it raises the pruned key to it, and every fill
//     is refused if the pruned key is of its era and newer than its Since
//     (backends.ErrStale: "a stamp ... was pruned"). So a fill meets
//     either the stamp or the record of its pruning, whenever it arrives:
//     held in transit past the prune age, from a process that stalled, with
//     the server's clock stepped forward (a fresh stamp looks old), or from
//     a parent that took an older Since from a child's hit. Clocks and the
//     prune age decide only when a stamp goes (liveness): a stamp goes once
//     older than twice the maximum fill age, so the fills the pruned key
//     refuses are ones the client's age check refuses already, unless they
//     were delayed. A stamp of another era than the current one goes
//     without a record: a fill of its era is refused by its epoch check.
//     On a single Redis the current era is the stored epoch's, of whatever
//     replication history: a promoted replica passes fills of the old
//     history's era until its first bump, so until then Prune records
//     the stamps of that era it drops, as the old master would have. A
//     registration goes only once its entry is gone (a lease counts as
//     there: its fill is under way), with the fill id seen then.
//   - The namespace stamp (ns:c) is in the tag index like a tag hash, and
//     goes the same way: once older than the prune age.
//   - A fill's own trim never removes a stamp that fill is checked
//     against before the check: on a single Redis the script checks every
//     stamp and the pruned key before it writes or trims anything; on
//     Cluster the trim runs after the fill's last step.
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
//     refuses if the epoch is missing (it then starts a new era, so that the
//     next lookup reads an epoch a fill can pass), if it is of another era
//     than Fill.Since or behind it (above), if the pruned key
//     is of Since's era and newer, or if a tag's stamp, or the namespace
//     stamp (ns:c) of the entry's namespace or of a dependency's, is of
//     Since's era and newer (a stamp of another era counts as missing); a
//     fill older than WithMaxFillAge is refused before it is sent, to spare
//     the round trip. Otherwise it registers the entry in every tag hash (HSET) and
//     stores it (SET PX). One fill in four also samples eight registrations of
//     one of its tags, picked at random (HRANDFIELD, which costs about as
//     much for one field as for eight), and removes those whose entries
//     are gone, so that tag hashes do not grow without bound as entries
//     expire between trims; and it trims the tag index (above,
//     "Pruning").
//   - Invalidate: one script bumps the epoch (a missing epoch starts a new
//     era), stamps every tag, and drains every tag whose registrations fit
//     WithChunkSize (1000): UNLINK the entries, then HDEL those
//     registrations, in the same script — a registration never goes before
//     its entry, so a concurrent invalidation cannot return while an entry
//     it should remove still exists. 1 round trip for small tags. A bigger
//     tag's hash is frozen by the same script: RENAME moves it, with the
//     stamp just written, to the tag's frozen hash ns:t:{tag}:d, and the
//     stamp is written again to a new tag hash, where later fills register.
//     The frozen hash is then drained by HSCAN steps of about the chunk
//     size, one script each, over the whole cursor (never stopping at a
//     hash that looks empty), that UNLINK the entries and leave the
//     registrations: nothing registers in a frozen hash, so once a complete
//     iteration has passed every registration's entry is gone, and the last
//     step unlinks the hash whole (freed off the main thread) — if it still
//     holds the stamp it had when the invalidation began, the one stamp that
//     names it, so that a drain never removes a frozen hash it did not
//     iterate from its start. An invalidation that finds a frozen hash (one
//     still draining, or abandoned by a process that died) drains it too
//     before it returns, and drains a big tag hash in steps that HDEL what
//     they UNLINK, as all drains did before frozen hashes: about 20% more
//     server time. Frozen hashes are in the tag index, pruned like tag
//     hashes, and cleaned by Clear and Prune as tag hashes. A tag of n
//     registrations costs about n/1000 more round trips and never blocks
//     the server in one long script. The count returned is the number of
//     entries UNLINK removed, so an entry under several invalidated tags
//     counts once.
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
//     replica count is read at first use, and every invalidation script
//     reports the replicas connected now: one that finds replicas the
//     backend did not know of runs again, waiting, and so do all later
//     invalidations. A failover that loses a bump no replica acknowledged
//     is covered by the era (above, "Key layout"). WAIT is not consensus:
//     with several replicas one acknowledgement suffices, and if a replica
//     that did not acknowledge is promoted instead, the invalidation is
//     lost (Sentinel and Cluster prefer the replica with the most data,
//     but a partition can defeat that). A Redis that loses acknowledged
//     writes (a restart from an older RDB) can bring deleted entries back:
//     use AOF with appendfsync always.
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
//   - Fill with the lease: (1) in parallel one script per tag slot that
//     refuses if a stamp of Since's era is newer than Since and otherwise
//     registers the entry (HSET entry key -> fill id), and in the same
//     pipeline a read-only check of the namespace stamp (ns:c, a key of
//     its own slot) of the entry's namespace; where the cluster has replicas
//     this step waits for one on every master it registers on (below,
//     "Replicas"); (2) a script on the epoch's slot that refuses if the
//     epoch is no longer of Since's era (a missing epoch, or one of
//     another replication history, starts a new era, as on a single
//     Redis) or if the pruned key records a stamp of that era newer than
//     Since; (3) a compare-and-set on the entry's slot: the value replaces
//     the lease only if the entry still holds it — 3 round trips whatever
//     the number of tags (2 without tags: the epoch script and the
//     namespace stamps in one, then the compare-and-set). An invalidation
//     that stamped a tag before the registration makes it refuse; one
//     that stamped it after found the registration and unlinked the entry
//     key, lease included, so the compare-and-set fails; one whose stamp
//     was pruned before the registration read it raised the pruned key
//     first, so (2) refuses: ErrStale every way. The epoch is read after
//     the registration, not before: eras are random and never come back,
//     so an era unchanged at (2) was unchanged since the lookup, and every
//     stamp written meanwhile was of Since's era, the one (1) compares. The
//     namespace stamps are read only once the lease is in place (a fill
//     without a lease takes it first): a Clear that stamps after the read
//     SCANs afterwards, finds the lease and unlinks it, so the
//     compare-and-set fails. A fill that depends on tags of other
//     namespaces (backends.ForeignDep) checks their namespace stamps in
//     one more round trip between (1) and (2): a Clear of such a namespace
//     finds the entry only through its registration, so the check must
//     follow it (a Clear that stamps later finds the registration), and
//     precede (2), which sees the floor of a stamp pruned before the
//     check. A refused fill gives its lease back.
//   - Fill without a lease (Manager.Set, or a miss that found another
//     caller's lease): a first round trip checks the stamps without
//     registering and takes the lease if the entry holds nothing or a
//     lease (another caller's fill then fails); over an existing entry the
//     lease replaces it only after the check passed, so that a refused
//     fill leaves the entry alone; then (1) to (3) — 4 round trips, 5 over
//     an entry. Without tags: the epoch script and the namespace stamps,
//     then a plain SET — 2.
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
//     every invalidation that writes to it, until then. A fill's
//     registration step (1) runs the same way, so that no entry is
//     readable whose registration a failover could lose (the invalidation
//     after it would not find the entry): a registration no replica
//     acknowledged refuses the fill (ErrStale, also ErrNotReplicated) and
//     gives the lease back. Masters that step only reads get no WAIT. A
//     master without a replica refuses the fills that register there, after
//     the wait timeout, as it fails invalidations.
//   - Delete: one script per key (UNLINK, counting entries, not leases),
//     pipelined: 1 round trip. TTL: GETRANGE and PTTL pipelined, 1.
//   - Clear first bumps the epoch (1) and stamps ns:c and indexes it (2),
//     waiting for a replica where there are any. Clear and Prune SCAN every
//     master (ForEachMaster) for ns:e:{* and ns:t:{*, glob characters of
//     ns escaped. Clear unlinks the entries it finds first, and later
//     every entry still registered under a tag hash (another namespace's,
//     one script per key) before removing its registration; where there
//     are replicas, both unlinks wait for one, as an invalidation's do, and
//     one not acknowledged fails Clear with ErrNotReplicated and keeps the
//     registrations (a failover could bring the entry back, and the next
//     invalidation must find it). Then, for each tag hash, the
//     registrations are read in chunks, the entries' masters are asked
//     which still exist (EXISTS; a
//     lease counts, its fill is under way), and a script removes the
//     others' registrations if their fill ids are unchanged and drops a
//     stamp older than the prune age from a hash that holds nothing
//     else. Fills do not sample registrations on Cluster (a fill's script
//     cannot see entries in other slots); stamps are trimmed as on a
//     single Redis (above, "Pruning").
//   - A stamp goes only once the pruned key (on the epoch's slot) covers
//     it: a trim's EXISTS step, and the step of Clear and Prune that asks
//     which entries exist, also run a script on the epoch's slot that
//     raises the pruned key to the newest stamp of the current era among
//     those about to be settled that are older than the prune age (by the
//     epoch master's clock), and returns the era and that floor; the tag's
//     script then drops a stamp only if it is still the one read and is of
//     another era or no newer than the floor. No extra round trip; the
//     ages decide only when (liveness), never whether a fill in flight can
//     miss a stamp that would refuse it.
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
//	Fill after a miss        1               3 (check+register; epoch;
//	                                         CAS), 4 with tags of other
//	                                         namespaces
//	Fill without a lease     1               4 (check+lease; then as
//	                                         above), 5 over an entry
//	Invalidate, small tags   1               4 (epoch; stamp+read; unlink;
//	                                         remove registrations)
//	Trim of due stamps       0 (in the       +4 after a fill or an
//	                         scripts)        invalidation that found any
//	Delete, TTL              1               1
//
// What Cluster does not cover: WAIT is not consensus. A replica that
// acknowledged a write and then lost it loses it, and with several
// replicas per master, WAIT 1 is satisfied by one while another, which
// has not seen the write, may be the one promoted: an invalidation's stamp
// or a fill's registration can then be lost (a stale entry served until
// its TTL). An epoch rolled back by a failover is covered whatever the
// replicas: the promoted master has a new replication history, and the
// first script that meets the epoch there starts a new era. A replica
// held by CLIENT PAUSE WRITE acknowledges what it has read but not applied
// (seen with Redis 7.0.15): promoting it loses acknowledged writes. An
// invalidation step that meets a resharding (MOVED, ASK) on a master's own
// connection fails and is retried by depcache; a fill's registration step
// that meets one is refused.
//
// Where masters have replicas, a registration goes (a trim, Prune) only
// once its entry's removal (Delete, expiry, eviction) reached a replica:
// the EXISTS that finds the entry gone writes a net no-op to the entry's
// key (SET then DEL, in one script) and is followed by WAIT 1 on that
// master's connection, so the replica has everything before it; without
// an acknowledgement the registration stays (Prune fails with
// ErrNotReplicated, a trim tries again later). Otherwise a failover of the
// entry's master could bring the entry back unregistered, where no
// invalidation finds it. A single Redis needs no such step: the removal
// of the registration follows the entry's in the one replication stream.
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
