package redisbackend

import "github.com/redis/go-redis/v9"

// The scripts of the Redis Cluster path. On Cluster a script may touch the
// keys of one slot only, all declared in KEYS: so the fill and the
// invalidation are split into scripts on the entry's slot, on each tag's
// slot and on the epoch's slot, and the client carries the data between
// them (doc.go, "Redis Cluster"; cluster.go). They need Redis 7 (the shebang line, and
// SET NX GET at the lookup); those that remove data or stamp declare
// allow-oom, so that an invalidation never fails for lack of memory.

// clusterPrelude adds to luaPrelude what the Cluster scripts share.
const clusterPrelude = `
-- read returns {cursor, flat} of a tag hash's registrations: the whole hash
-- when it fits count (cursor '0': nothing more), else one HSCAN step.
local function read(h, cursor, count)
  if cursor == '0' and redis.call('HLEN', h) <= count + 1 then
    return {'0', redis.call('HGETALL', h)}
  end
  local r = redis.call('HSCAN', h, cursor, 'COUNT', count)
  return {r[1], r[2]}
end
-- covered returns settle's drop for a script on a tag's slot, which
-- cannot write the pruned key (the epoch's slot): the stamp goes only if
-- it is still stamp, the one the client had floorLua cover ('' for none).
local function covered(h, stamp)
  return function()
    return stamp ~= '' and redis.call('HGET', h, '~v') == stamp
  end
end
`

// bumpLua advances the epoch, starting a new era (ARGV[1], bound to the
// server's replication history) if it is missing, unreadable or of another
// history (a failover promoted a replica, which may hold an older number
// than readers saw: it is never issued again), and returns it.
//
// KEYS[1] epoch key. ARGV[1] candidate era.
const bumpLua = `
local sid = server_id()
local era, n = epoch_of(KEYS[1], sid)
if not era then era = mint_era(ARGV[1], sid); n = 0 end
local ep = era .. ':' .. string.format('%d', n + 1)
redis.call('SET', KEYS[1], ep)
return ep
`

// checkLua checks the stamps of tags of one slot against a fill's epoch.
//
// KEYS: tag hashes of one slot. ARGV[1] since era, ARGV[2] since n.
// Returns {0}, or {3, i, stamp} when tag i (1-based in KEYS) was
// invalidated after since.
const checkLua = `
local since = tonumber(ARGV[2])
for i = 1, #KEYS do
  local s = redis.call('HGET', KEYS[i], '~v')
  local se, sn = parse_stamp(s)
  if se == ARGV[1] and sn > since then return {3, i, s} end
end
return {0}
`

// registerLua is checkLua, then registers the entry under every tag.
//
// KEYS: tag hashes of one slot. ARGV[1] since era, ARGV[2] since n,
// ARGV[3] fill id, ARGV[4] the entry's key. Returns as checkLua.
const registerLua = `
local since = tonumber(ARGV[2])
for i = 1, #KEYS do
  local s = redis.call('HGET', KEYS[i], '~v')
  local se, sn = parse_stamp(s)
  if se == ARGV[1] and sn > since then return {3, i, s} end
end
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], ARGV[4], ARGV[3])
end
return {0}
`

// epochLua is a fill's last check before its compare-and-set, run once
// its registrations are in place: the epoch must still be of Since's era
// (eras are random and never come back, so the era was the same all along
// since the lookup, and every stamp written meanwhile was of that era: the
// registration step saw it, or it was written after and its invalidation
// finds the registration), and no stamp newer than Since may have been
// pruned (the pruned key keeps the newest pruned stamp of the era).
//
// KEYS[1] epoch key, KEYS[2] the pruned key. ARGV[1] since era, ARGV[2]
// since n, ARGV[3] a candidate era.
// Returns {0} when the fill may go on; {1} when the epoch is missing or of
// another replication history (a new era is started, so that lookups read
// an epoch a fill can pass); {2, epoch} when it is of another era; {5,
// pruned} when a stamp newer than since was pruned.
const epochLua = `
local sid = server_id()
local era, _, cur = epoch_of(KEYS[1], sid)
if not era then
  redis.call('SET', KEYS[1], mint_era(ARGV[3], sid) .. ':0')
  return {1}
end
if era ~= ARGV[1] then return {2, cur} end
local pruned, floor = pruned_after(KEYS[2], era, tonumber(ARGV[2]))
if pruned then return {5, floor} end
return {0}
`

// floorLua raises the pruned key before stamps go (doc.go, "Pruning"): to
// the newest stamp of the current era among those given that are older
// than the prune age by this master's clock. It returns the current era
// (empty when the epoch is missing or of another history: then no fill of
// any stamp's era can pass its epoch check) and the floor of that era (-1
// for none): a stamp of another era, or of this one and no newer than the
// floor, may go. The age is for liveness only.
//
// KEYS[1] epoch key, KEYS[2] the pruned key. ARGV[1] stamp age to prune
// after (ms), ARGV[2..] stamps "era:n:ms".
// Returns {era, floor n}.
const floorLua = `
local era = epoch_of(KEYS[1], server_id())
if not era then return {'', -1} end
local now = now_ms()
local max_age = tonumber(ARGV[1])
local top
for i = 2, #ARGV do
  local se, sn, ms = parse_stamp(ARGV[i])
  if se == era and now - ms > max_age and (not top or sn > top) then top = sn end
end
if top then raise_pruned(KEYS[2], era, top) end
local pe, pn = parse_epoch(redis.call('GET', KEYS[2]))
if pe ~= era then pn = -1 end
return {era, pn}
`

// casLua stores the envelope if the entry still holds the fill's lease.
//
// KEYS[1] entry. ARGV[1] lease token, ARGV[2] envelope, ARGV[3] ttl ms
// (0: none). Returns 1 when stored, 0 when the lease is gone.
const casLua = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
`

// takeLua takes a fill lease unless the entry holds an entry (another
// caller's lease is replaced: its fill will fail).
//
// KEYS[1] entry. ARGV[1] lease token, ARGV[2] the lease prefix, ARGV[3]
// lease ttl ms. Returns 1 if taken, 0 if an entry is there.
const takeLua = `
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[2]) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
`

// releaseLua deletes the entry if it holds the lease.
//
// KEYS[1] entry. ARGV[1] lease token. Returns 1 if deleted.
const releaseLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`

// unlinkLua unlinks an entry key and reports whether it held an entry
// (not a lease).
//
// KEYS[1] entry. ARGV[1] the lease prefix. Returns 1 if an entry went.
const unlinkLua = `
local head = redis.pcall('GETRANGE', KEYS[1], 0, #ARGV[1] - 1)
if redis.call('UNLINK', KEYS[1]) == 0 then return 0 end
if head == ARGV[1] then return 0 end
return 1
`

// stampReadLua stamps a tag with an invalidation's epoch, unless it holds
// a newer stamp of the same era, and reads its first registrations, in one
// atomic step: a registration not read here was written after the stamp,
// by a fill that saw it.
//
// KEYS[1] tag hash. ARGV[1] epoch "era:n", ARGV[2] chunk size.
// Returns {cursor, flat} as read.
const stampReadLua = `
local era, n = parse_epoch(ARGV[1])
local ce, cn = parse_stamp(redis.call('HGET', KEYS[1], '~v'))
if ce ~= era or cn < n then
  redis.call('HSET', KEYS[1], '~v', ARGV[1] .. ':' .. string.format('%d', now_ms()))
end
return read(KEYS[1], '0', tonumber(ARGV[2]))
`

// stepLua removes registrations the client has dealt with (their entries
// are gone) if their fill ids are unchanged, then reads the next step.
//
// KEYS[1] tag hash. ARGV[1] the cursor to read from (” to stop), ARGV[2]
// chunk size, ARGV[3] settle: the maximum stamp age in ms, or ” not to
// settle, ARGV[4] the stamp floorLua covered (” for none: a stamp of the
// current era stays), ARGV[5..] field, fill id pairs.
// Returns {cursor, flat} as read, or {'0', {}} when stopping.
const stepLua = `
local h = KEYS[1]
for i = 5, #ARGV, 2 do
  if redis.call('HGET', h, ARGV[i]) == ARGV[i + 1] then redis.call('HDEL', h, ARGV[i]) end
end
if ARGV[1] ~= '' then return read(h, ARGV[1], tonumber(ARGV[2])) end
if ARGV[3] ~= '' then settle(h, now_ms(), tonumber(ARGV[3]), covered(h, ARGV[4])) end
return {'0', {}}
`

// readLua reads a tag hash's first registrations.
//
// KEYS[1] tag hash. ARGV[1] chunk size. Returns {cursor, flat} as read.
const readLua = `
return read(KEYS[1], '0', tonumber(ARGV[1]))
`

// existsFenceLua is EXISTS for a key whose registration may go if it is
// absent: when it is, it writes a net no-op to the key (SET then DEL, one
// atomic script) that goes into the replication stream, so that a WAIT
// after it on the same connection returns only once the replica has
// everything before it — the key's removal (Delete, eviction) included.
// Otherwise a failover could bring the key back after its registration
// went, where no invalidation finds it.
//
// KEYS[1] the key. Returns 1 if it exists, else 0.
const existsFenceLua = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
redis.call('SET', KEYS[1], '')
redis.call('DEL', KEYS[1])
return 0
`

// indexLua records tags in the tag index, at the index master's time: an
// invalidation moves them to now, a fill adds those not there (NX).
//
// KEYS[1] tag index. ARGV[1] "NX" or "", ARGV[2..] tag hash keys.
// Returns 0.
const indexLua = `
local now = now_ms()
for i = 2, #ARGV do
  if ARGV[1] == 'NX' then
    redis.call('ZADD', KEYS[1], 'NX', now, ARGV[i])
  else
    redis.call('ZADD', KEYS[1], now, ARGV[i])
  end
end
return 0
`

// dueLua reads the tag index's due tags: those indexed more than ARGV[1]
// ms ago.
//
// KEYS[1] tag index. ARGV[1] stamp age to prune after (ms), ARGV[2] how
// many. Returns {tag hash key, score, ...}.
const dueLua = `
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms() - tonumber(ARGV[1]), 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
`

// sampleLua reads a sample of a tag's registrations, and its stamp.
//
// KEYS[1] tag hash. ARGV[1] sample size.
// Returns {1, {field, id, ...}, stamp or ”}, or {0, {}, ”} when the hash
// is gone.
const sampleLua = `
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, {}, ''} end
return {1, redis.call('HRANDFIELD', KEYS[1], tonumber(ARGV[1]), 'WITHVALUES'), redis.call('HGET', KEYS[1], '~v') or ''}
`

// settleLua removes the registrations the client found dead if their fill
// ids are unchanged, and settles the stamp: it goes only if it is the one
// floorLua covered.
//
// KEYS[1] tag hash. ARGV[1] stamp age to prune after (ms), ARGV[2] the
// covered stamp (” for none), ARGV[3..] field, fill id pairs. Returns 0
// when the hash is gone, 1 when it lost no registration, 2 when it lost
// some.
const settleLua = `
local h = KEYS[1]
local dropped = 0
for i = 3, #ARGV, 2 do
  if redis.call('HGET', h, ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', h, ARGV[i])
    dropped = dropped + 1
  end
end
settle(h, now_ms(), tonumber(ARGV[1]), covered(h, ARGV[2]))
if redis.call('EXISTS', h) == 0 then return 0 end
if dropped == 0 then return 1 end
return 2
`

// unindexLua updates the tag index after a trim, for each tag whose
// score is still the one read (a newer stamp moved it): code 0 removes it,
// code 1 defers it by the prune age.
//
// KEYS[1] tag index. ARGV: tag hash key, score read, code triples.
const unindexLua = `
local now = now_ms()
for i = 1, #ARGV, 3 do
  local cur = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if cur and tonumber(cur) == tonumber(ARGV[i + 1]) then
    if ARGV[i + 2] == '0' then
      redis.call('ZREM', KEYS[1], ARGV[i])
    else
      redis.call('ZADD', KEYS[1], now, ARGV[i])
    end
  end
end
return 0
`

type clusterScriptID int

const (
	clusterBumpEpoch clusterScriptID = iota
	clusterCheckStamps
	clusterRegister
	clusterCompareAndSet
	clusterTakeLease
	clusterReleaseLease
	clusterUnlinkEntry
	clusterStampAndRead
	clusterRemoveAndRead
	clusterReadRegistrations
	clusterIndexTags
	clusterDueTags
	clusterSampleTag
	clusterSettleTag
	clusterUnindexTags
	clusterCheckEpoch
	clusterRaiseFloor
	clusterExistsFence
	numClusterScripts
)

var clusterScripts = func() *[numClusterScripts]*script {
	sources := [numClusterScripts]struct{ flags, body string }{
		clusterBumpEpoch:         {"allow-oom", bumpLua},
		clusterCheckStamps:       {"no-writes", checkLua},
		clusterRegister:          {"", registerLua},
		clusterCompareAndSet:     {"", casLua},
		clusterTakeLease:         {"", takeLua},
		clusterReleaseLease:      {"allow-oom", releaseLua},
		clusterUnlinkEntry:       {"allow-oom", unlinkLua},
		clusterStampAndRead:      {"allow-oom", stampReadLua},
		clusterRemoveAndRead:     {"allow-oom", stepLua},
		clusterReadRegistrations: {"no-writes", readLua},
		clusterIndexTags:         {"allow-oom", indexLua},
		clusterDueTags:           {"no-writes", dueLua},
		clusterSampleTag:         {"no-writes", sampleLua},
		clusterSettleTag:         {"allow-oom", settleLua},
		clusterUnindexTags:       {"allow-oom", unindexLua},
		clusterCheckEpoch:        {"", epochLua},
		clusterRaiseFloor:        {"allow-oom", floorLua},
		clusterExistsFence:       {"allow-oom", existsFenceLua},
	}
	var set [numClusterScripts]*script
	for id, src := range sources {
		head := "#!lua\n"
		if src.flags != "" {
			head = "#!lua flags=" + src.flags + "\n"
		}
		body := head + luaPrelude + clusterPrelude + src.body
		set[id] = &script{Script: redis.NewScript(body), src: body}
	}
	return &set
}()
