// Package redisbackend is the depcache store on Redis, through a go-redis v9
// client (a *redis.Client, including a Sentinel failover client). It
// implements the fill protocol of package backends: every invalidation
// advances one epoch per Redis and stamps the tags it invalidates, and a
// fill is refused (backends.ErrStale) if any of its tags carries a stamp
// newer than the epoch its computation started at.
//
// A Backend is safe for concurrent use. New wraps a client the caller owns;
// FromEnv opens one from REDIS_URL or REDIS_HOST/PORT/PASSWORD/DB and closes
// it on Close. Nothing is sent to the server until the first call.
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
//     a tag's stamp is of Since's era and newer (a stamp of another era counts
//     as missing); a fill older than WithMaxFillAge is refused before it is
//     sent. Otherwise it registers the entry in every tag hash (HSET) and
//     stores it (SET PX). It also samples two registrations of each tag
//     (HRANDFIELD) and removes those whose entries are gone, so that tag
//     hashes do not grow without bound as entries expire.
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
//   - Clear: SCAN MATCH ns:e:{* (glob characters of ns escaped) and UNLINK
//     page by page; then SCAN ns:t:{* and, one script per page of hashes,
//     remove the registrations whose entries are gone, drop stamps older
//     than the maximum fill age from hashes that hold nothing else, and let
//     emptied hashes disappear. Each hash is cleaned atomically, after the
//     entries are gone, so a fill racing Clear keeps its entry only with its
//     registration. Clear leaves the epoch alone and never uses KEYS,
//     FLUSHDB or FLUSHALL. Prune runs the second half alone: the hash of a
//     tag invalidated once and never filled again stays until Prune or Clear.
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
// Not supported yet: New accepts a *redis.ClusterClient but every call
// fails. The key layout is the one Cluster needs; what must change:
//
//   - Lookup's MGET spans two slots (entry and epoch): a GET of the entry,
//     and on a miss a GET of the epoch (2 round trips on a miss).
//   - Fill touches the entry, the epoch and every tag's slot: it becomes a
//     lease on the entry at the miss, one script per tag slot (check the
//     stamp, register), then a compare-and-set of the entry from the lease
//     to the value (consistency-notes.md), about 3 round trips.
//   - The invalidation, drain and clean scripts UNLINK or EXISTS entry keys
//     of other slots without declaring them: on Cluster the tag's script
//     must return the registrations, the client UNLINK them on their own
//     slots, and a second script HDEL those whose fill ids are unchanged — at
//     least 3 sequential round trips, with the epoch bump on its own slot.
//     WAIT must go to the tag's master (MasterForKey), not to every shard.
//   - Delete's multi-key UNLINK and Clear's SCAN must run per slot and on
//     every master.
package redisbackend
