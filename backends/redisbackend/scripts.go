package redisbackend

import "github.com/redis/go-redis/v9"

// The Lua scripts. Each exists in two variants: the plain body, for Redis
// before 7 and for miniredis (which parses no shebang line), and the body
// behind a "#!lua" shebang for Redis 7, where the scripts that remove data
// declare flags=allow-oom so that an invalidation never fails for lack of
// memory. The fill and the epoch creation write, so they carry no allow-oom:
// at maxmemory under noeviction they fail as a whole (a fill fails open).
//
// These are the single-Redis scripts: the invalidation, drain and clean
// scripts UNLINK or EXISTS entry keys named by the registrations they read
// (undeclared, and in other slots), and the fill script reads the epoch key
// and writes tag hashes that live in other slots than the entry. Redis
// Cluster runs the split scripts of clusterscripts.go instead; only
// ensureEpochLua (one key) serves both.

// luaPrelude holds the helpers every script uses.
const luaPrelude = `
local function parse_epoch(s)
  if not s then return nil end
  local era, n = string.match(s, '^(.+):(%d+)$')
  if not era then return nil end
  return era, tonumber(n)
end
local function parse_stamp(s)
  if not s then return nil end
  local era, n, ms = string.match(s, '^(.+):(%d+):(%d+)$')
  if not era then return nil end
  return era, tonumber(n), tonumber(ms)
end
-- uvarint encodes x as encoding/binary's AppendUvarint does.
local function uvarint(x)
  local out = {}
  repeat
    local b = x % 128
    x = (x - b) / 128
    if x > 0 then b = b + 128 end
    out[#out + 1] = string.char(b)
  until x == 0
  return table.concat(out)
end
-- elapsed_us is the time since t0, a TIME reply, in microseconds.
local function elapsed_us(t0)
  local t = redis.call('TIME')
  return (tonumber(t[1]) - tonumber(t0[1])) * 1000000 + tonumber(t[2]) - tonumber(t0[2])
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- batched runs cmd [key] item... over list, 256 items per call, and sums
-- the integer replies.
local function batched(cmd, key, list)
  local sum = 0
  for i = 1, #list, 256 do
    local j = math.min(i + 255, #list)
    if key then
      sum = sum + redis.call(cmd, key, unpack(list, i, j))
    else
      sum = sum + redis.call(cmd, unpack(list, i, j))
    end
  end
  return sum
end
-- unlink_all unlinks the entries of the registrations in flat (field,
-- value pairs as HGETALL and HSCAN return them) and returns the number of
-- entries that existed, and the fields.
local function unlink_all(flat, leases)
  local fields = {}
  for i = 1, #flat, 2 do
    if flat[i] ~= '~v' then fields[#fields + 1] = flat[i] end
  end
  if #fields == 0 then return 0, fields end
  local removed
  if leases then
    -- Count entries, not fill leases (a key a WithFillLock lookup took
    -- after its entry expired): a lease is no entry.
    removed = 0
    for i = 1, #fields do
      local head = redis.call('GETRANGE', fields[i], 0, 3)
      if head ~= '' and head ~= 'dc\0L' then removed = removed + 1 end
    end
    batched('UNLINK', nil, fields)
  else
    removed = batched('UNLINK', nil, fields)
  end
  return removed, fields
end
-- drain unlinks the entries of the registrations in flat, then removes
-- those registrations: never a registration before its entry is gone. It
-- returns the number of entries that existed.
local function drain(h, flat, leases)
  local removed, fields = unlink_all(flat, leases)
  if #fields > 0 then batched('HDEL', h, fields) end
  return removed
end
-- clean removes the registrations in flat whose entries are gone.
local function clean(h, flat)
  local dead = {}
  for i = 1, #flat, 2 do
    local f = flat[i]
    if f ~= '~v' and redis.call('EXISTS', f) == 0 then dead[#dead + 1] = f end
  end
  if #dead > 0 then batched('HDEL', h, dead) end
end
-- settle drops the stamp of a hash that holds nothing else once it is
-- older than max_age ms (or unreadable); Redis deletes the emptied hash.
-- The age is for liveness only (a fill in flight is refused by a stamp
-- while it exists, and by the pruned floor once it is gone): drop(era, n)
-- decides, recording the floor first where it can, and may refuse.
local function settle(h, now, max_age, drop)
  if redis.call('HLEN', h) ~= 1 then return end
  local s = redis.call('HGET', h, '~v')
  if not s then return end
  local se, sn, ms = parse_stamp(s)
  if ms and now - ms <= max_age then return end
  if se and drop and not drop(se, sn) then return end
  redis.call('HDEL', h, '~v')
end
-- server_id names this server's replication history: the first 16 hex
-- digits of its master_replid, which changes when a replica is promoted
-- (a failover) and when a server starts without its data; '' where INFO
-- gives none (miniredis). It also returns the connected replicas.
local function server_id()
  local info = redis.pcall('INFO', 'replication')
  if type(info) ~= 'string' then return '', 0 end
  local sid = string.sub(string.match(info, 'master_replid:(%x+)') or '', 1, 16)
  return sid, tonumber(string.match(info, 'connected_slaves:(%d+)') or '0')
end
-- mint_era makes an era of a client's random candidate, bound to the
-- server's replication history.
local function mint_era(candidate, sid)
  if sid == '' then return candidate end
  return candidate .. '.' .. sid
end
-- epoch_of reads the epoch key: era, n and the raw value, or nil when it
-- is missing, unreadable, or was minted in another replication history.
-- A promoted replica may hold an epoch older than one readers saw on the
-- old master (its bump was never acknowledged); counting it as missing
-- starts a new era, so that no number a reader saw is issued again.
local function epoch_of(key, sid)
  local v = redis.call('GET', key)
  local era, n = parse_epoch(v)
  if not era then return nil end
  if sid ~= '' and string.sub(era, -#sid - 1) ~= '.' .. sid then return nil end
  return era, n, v
end
-- pruned_after reports whether a stamp of era newer than since was pruned:
-- the pruned key holds "era:n", the newest pruned stamp of its era.
local function pruned_after(pkey, era, since)
  local pe, pn = parse_epoch(redis.call('GET', pkey))
  return pe == era and pn > since, pe and (pe .. ':' .. string.format('%d', pn))
end
-- raise_pruned records, before a stamp era:n goes, that it went: a fill
-- whose since is older is refused from then on.
local function raise_pruned(pkey, era, n)
  local pe, pn = parse_epoch(redis.call('GET', pkey))
  if pe ~= era or pn < n then
    redis.call('SET', pkey, era .. ':' .. string.format('%d', n))
  end
end
-- dropper returns settle's drop for a script that can write the pruned
-- key: a stamp of the current era raises it; one of another era (or with
-- no epoch at all) goes as it is, since a fill of that era is refused by
-- its epoch check. The current era is the stored epoch's, whatever
-- replication history minted it (epoch_of(key, '')): a single Redis's
-- fill checks only the era and the number, so on a promoted replica a
-- fill of the old history's era passes until a bump there starts a new
-- era, and a stamp of that era must go with its record there too.
local function dropper(pkey, cur_era)
  return function(se, sn)
    if cur_era and se == cur_era then raise_pruned(pkey, se, sn) end
    return true
  end
end
-- trim visits up to budget tags of the tag index idx (a sorted set of
-- tag hash keys by the time of their last stamp or first registration)
-- that are due: indexed more than max_age ms ago. It removes the dead
-- registrations among a sample of each hash, and settles the stamp when
-- nothing else is left. A hash gone leaves the index; one whose sample
-- held only live registrations is looked at again max_age later; one that
-- lost dead registrations stays due, for the next trim to go on. It
-- returns the number of tags visited.
local function trim(idx, now, max_age, budget, sample, drop)
  if budget <= 0 then return 0 end
  local due = redis.call('ZRANGEBYSCORE', idx, '-inf', now - max_age, 'LIMIT', 0, budget)
  for i = 1, #due do
    local h = due[i]
    if redis.call('EXISTS', h) == 0 then
      redis.call('ZREM', idx, h)
    else
      local dropped = 0
      local fs = redis.call('HRANDFIELD', h, sample)
      for j = 1, #fs do
        local f = fs[j]
        if f ~= '~v' and redis.call('EXISTS', f) == 0 then
          redis.call('HDEL', h, f)
          dropped = dropped + 1
        end
      end
      settle(h, now, max_age, drop)
      if redis.call('EXISTS', h) == 0 then
        redis.call('ZREM', idx, h)
      elseif dropped == 0 then
        redis.call('ZADD', idx, now, h)
      end
    end
  end
  return #due
end
`

// ensureEpochLua returns the epoch, creating it in a new era (ARGV[1],
// bound to the server's replication history) with n=0 if it is missing,
// unreadable or of another history.
//
// KEYS[1] epoch key. ARGV[1] candidate era.
const ensureEpochLua = `
local sid = server_id()
local era, _, v = epoch_of(KEYS[1], sid)
if era then return v end
v = mint_era(ARGV[1], sid) .. ':0'
redis.call('SET', KEYS[1], v)
return v
`

// fillLua is the conditional fill. Once stored, it trims the tag index.
//
// KEYS[1] entry, KEYS[2] epoch key, KEYS[3] tag index, KEYS[4] the pruned
// key, KEYS[5..4+c] the namespace stamps (Clear) of the entry's namespace
// and of its dependencies', KEYS[5+c..] tag hashes. ARGV[1] since era,
// ARGV[2] since n, ARGV[3] fill id, ARGV[4] envelope, ARGV[5] ttl ms (0:
// none), ARGV[6] registrations to sample for pruning, ARGV[7] stamp age to
// prune after (ms), ARGV[8] due stamps to visit, ARGV[9] registrations to
// sample per stamp, ARGV[10] c, ARGV[11] a candidate era. An empty since
// era stores at the current epoch (Fill.Current): nothing can refuse it
// but a missing epoch, which it creates, and the envelope ARGV[4], encoded
// with an empty epoch, gets the current one.
//
// Every check comes before anything that writes or prunes: the trim at the
// end may drop only stamps this fill was already checked against.
//
// The fill, which every miss pays, does not read INFO replication (a
// fifth of its server time): an epoch of another replication history
// is checked by number instead. A replica promoted by a failover holds a
// prefix of the old master's writes: if its epoch is at or past Since, it
// holds every stamp written up to it, in the script that bumped to it, so
// the stamp checks below are complete; if it is behind Since, the bump a
// reader saw was lost, and the fill is refused ({6}). Every script that
// bumps the epoch reads INFO and starts a new era in a new history, so no
// number a reader saw on the old master is issued again (doc.go, "Keys").
//
// Returns {0} when stored; {1} when the epoch is missing (a new era is
// started, so that lookups read an epoch a fill can pass); {2, epoch}
// when it is of another era; {6, epoch} when it is behind since (a
// failover lost the bump since was read from); {3, i,
// stamp} when tag i (1-based) was invalidated after since; {4, i, stamp}
// when namespace stamp i (1-based) was written after since; {5, pruned}
// when a stamp newer than since was pruned (whatever its tag: the pruned
// key keeps only the newest).
const fillLua = `
local era, n, cur = epoch_of(KEYS[2], '')
if not era then
  local sid = server_id()
  era, n = mint_era(ARGV[11], sid), 0
  redis.call('SET', KEYS[2], era .. ':0')
  if ARGV[1] ~= '' then return {1} end
end
local since = tonumber(ARGV[2])
local env = ARGV[4]
if ARGV[1] == '' then
  since = n
  env = 'dc\1' .. uvarint(#era) .. era .. uvarint(n) .. string.sub(env, 6)
elseif era ~= ARGV[1] then
  return {2, cur}
elseif since > n then
  return {6, cur}
end
local first = 5 + tonumber(ARGV[10])
-- At the current epoch (ARGV[1] empty) nothing can be newer than since:
-- every stamp, and the pruned key, holds a number the epoch reached.
if ARGV[1] ~= '' then
  local pruned, floor = pruned_after(KEYS[4], era, since)
  if pruned then return {5, floor} end
  for i = 5, #KEYS do
    local s = redis.call('HGET', KEYS[i], '~v')
    local se, sn = parse_stamp(s)
    if se == era and sn > since then
      if i < first then return {4, i - 4, s} end
      return {3, i - first + 1, s}
    end
  end
end
-- Opportunistic pruning: a few random registrations of one of the tags
-- (picked by the random fill id) whose entries are gone (expired,
-- evicted) are removed, so that tag hashes do not grow without bound
-- under churn between the trims of the tag index. One tag, not each: a
-- fill's cost grows with its tags by the registration alone.
local sample = tonumber(ARGV[6])
if sample > 0 and #KEYS >= first then
  local h = KEYS[first + string.byte(ARGV[3], -1) % (#KEYS - first + 1)]
  local fs = redis.call('HRANDFIELD', h, sample)
  for j = 1, #fs do
    local f = fs[j]
    if f ~= '~v' and f ~= KEYS[1] and redis.call('EXISTS', f) == 0 then
      redis.call('HDEL', h, f)
    end
  end
end
local now = now_ms()
-- Indexed once (ZADD NX, one call per 256 tags): a tag's registrations are
-- looked at max_age after it was first filled or last invalidated, and
-- then again while it lives. In calls of 256 tags, since unpack takes at
-- most about 8000 values and an entry may have more dependencies.
local index = {}
for i = first, #KEYS do
  redis.call('HSET', KEYS[i], KEYS[1], ARGV[3])
  index[#index + 1] = now
  index[#index + 1] = KEYS[i]
end
for i = 1, #index, 512 do
  redis.call('ZADD', KEYS[3], 'NX', unpack(index, i, math.min(i + 511, #index)))
end
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('SET', KEYS[1], env, 'PX', ttl)
else
  redis.call('SET', KEYS[1], env)
end
trim(KEYS[3], now, tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), dropper(KEYS[4], era))
return {0}
`

// invalidateLua bumps the epoch, stamps every tag (and records it in the
// tag index), drains the tags that fit a budget of registrations (the
// others are left to drainStepLua or drainFrozenStepLua) and trims the
// tag index.
//
// A bigger tag's registrations are frozen, when its hash has no frozen
// hash already: RENAME moves the hash, with the stamp just written, to
// the tag's frozen hash (the tag hash's key and ":d", in its Cluster
// slot), and the stamp is written again to a new, empty tag hash. Nothing
// ever registers in a frozen hash, so its drain needs no HDEL per
// registration: once one complete HSCAN iteration has unlinked the
// entries of every registration, the whole hash goes at once (UNLINK
// frees it off the main thread). Its stamp names it: the stamp of the
// invalidation that froze it, unique, that no other hash of the tag ever
// holds (doc.go, "Scripts and round trips").
//
// KEYS[1] epoch key, KEYS[2] tag index, KEYS[3] the pruned key,
// KEYS[4..] tag hashes. ARGV[1] candidate era (used if the epoch is
// missing or of another replication history), ARGV[2] budget,
// ARGV[3] "1" when keys may hold fill leases (WithFillLock), ARGV[4]
// stamp age to prune after (ms), ARGV[5] due stamps to visit, ARGV[6]
// registrations to sample per stamp, ARGV[7] the time (µs) past which
// the script drains no further tag itself but leaves it to the steps (it
// drains the first tag that fits the budget whatever the time).
//
// Returns {epoch, removed, visited, replicas, x...}: the new epoch, the
// number of entries removed, the number of due stamps visited, the
// replicas connected now, and the tags still to drain: for a tag hash
// to drain in HSCAN steps, its 1-based index i (among the tags); for a
// frozen hash, {i, its stamp}. A tag may need both: its hash held too
// many registrations when a frozen hash of an earlier invalidation,
// still draining (or abandoned), was there already.
const invalidateLua = `
local sid, replicas = server_id()
local era, n = epoch_of(KEYS[1], sid)
if not era then era = mint_era(ARGV[1], sid); n = 0 end
local ep = era .. ':' .. string.format('%d', n + 1)
redis.call('SET', KEYS[1], ep)
local now = now_ms()
local stamp = ep .. ':' .. string.format('%d', now)
local budget = tonumber(ARGV[2])
local t0 = redis.call('TIME')
local out = {ep, 0, 0, replicas}
-- The first tag that fits the budget is drained here however long the
-- script has run: a small tag's invalidation stays one round trip on a
-- slow server too; the time limit is on draining more than one.
local drained = false
for i = 4, #KEYS do
  local h = KEYS[i]
  redis.call('HSET', h, '~v', stamp)
  redis.call('ZADD', KEYS[2], now, h)
  local size = redis.call('HLEN', h) - 1
  -- A frozen hash keeps its stamp while it holds registrations (settle
  -- drops a stamp only from a hash that holds nothing else).
  local frozen = h .. ':d'
  local held = redis.call('HGET', frozen, '~v')
  if size > 0 then
    if size <= budget and (not drained or elapsed_us(t0) < tonumber(ARGV[7])) then
      budget = budget - size
      drained = true
      out[2] = out[2] + drain(h, redis.call('HGETALL', h), ARGV[3] == '1')
    elseif not held then
      redis.call('RENAME', h, frozen)
      redis.call('HSET', h, '~v', stamp)
      -- Indexed, so that the trims prune a frozen hash whose drain was
      -- abandoned (its process died) as they prune tag hashes.
      redis.call('ZADD', KEYS[2], now, frozen)
      held = stamp
    else
      out[#out + 1] = i - 3
    end
  end
  if held then out[#out + 1] = {i - 3, held} end
end
out[3] = trim(KEYS[2], now, tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), dropper(KEYS[3], era))
return out
`

// trimLua trims the tag index.
//
// KEYS[1] tag index, KEYS[2] epoch key, KEYS[3] the pruned key. ARGV[1]
// stamp age to prune after (ms), ARGV[2] due stamps to visit, ARGV[3]
// registrations to sample per stamp.
// Returns the number of due stamps visited.
const trimLua = `
local drop = dropper(KEYS[3], epoch_of(KEYS[2], ''))
return trim(KEYS[1], now_ms(), tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), drop)
`

// drainStepLua drains one HSCAN step of a big tag.
//
// KEYS[1] tag hash. ARGV[1] cursor, ARGV[2] count, ARGV[3] as for
// invalidateLua.
// Returns {next cursor, removed, the step's duration in µs}, so that the
// client sizes the next step to the time it may block the server.
const drainStepLua = `
local t0 = redis.call('TIME')
local r = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local removed = drain(KEYS[1], r[2], ARGV[3] == '1')
return {r[1], removed, elapsed_us(t0)}
`

// drainFrozenStepLua drains one HSCAN step of a frozen hash (no HDEL: its
// registrations go with it) and, once the cursor is back to 0, unlinks
// the hash if it still holds the stamp it held when the invalidation
// began: then it is the same hash all along, which no fill wrote to, and
// this complete iteration reached every registration it ever held (or
// the registration went after its entry, removed by a trim, Prune or
// Clear). A frozen hash another drain removed meanwhile reads as empty;
// one frozen again since by a later invalidation has another stamp and
// stays, to that invalidation's own drain.
//
// KEYS[1] frozen hash. ARGV[1] cursor, ARGV[2] count, ARGV[3] as for
// invalidateLua, ARGV[4] the stamp invalidateLua returned for it.
// Returns as drainStepLua.
const drainFrozenStepLua = `
local t0 = redis.call('TIME')
local r = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local removed = unlink_all(r[2], ARGV[3] == '1')
if r[1] == '0' and redis.call('HGET', KEYS[1], '~v') == ARGV[4] then
  redis.call('UNLINK', KEYS[1])
end
return {r[1], removed, elapsed_us(t0)}
`

// cleanLua cleans the tag hashes that fit a budget of fields: it removes
// the registrations whose entries are gone (Prune), or unlinks every
// registered entry and then removes its registration (Clear, whose own
// entries are gone already: those left belong to other namespaces), and
// settles the stamp. The others are left to cleanStepLua.
//
// KEYS[1] epoch key, KEYS[2] the pruned key, KEYS[3..] tag hashes.
// ARGV[1] budget, ARGV[2] max stamp age in ms, ARGV[3] empty to clean,
// else the leases flag of invalidateLua to drain.
// Returns the 1-based indexes (among the tag hashes) of the hashes still
// to clean.
const cleanLua = `
local budget = tonumber(ARGV[1])
local max_age = tonumber(ARGV[2])
local now = now_ms()
local drop = dropper(KEYS[2], epoch_of(KEYS[1], ''))
local out = {}
for i = 3, #KEYS do
  local h = KEYS[i]
  local size = redis.call('HLEN', h)
  if size <= budget then
    budget = budget - size
    if size > 0 then
      if ARGV[3] ~= '' then
        drain(h, redis.call('HGETALL', h), ARGV[3] == '1')
      else
        clean(h, redis.call('HGETALL', h))
      end
      settle(h, now, max_age, drop)
    end
  else
    out[#out + 1] = i - 2
  end
end
return out
`

// cleanStepLua cleans one HSCAN step of a big tag hash, and settles its
// stamp at the last step.
//
// KEYS[1] tag hash, KEYS[2] epoch key, KEYS[3] the pruned key. ARGV[1]
// cursor, ARGV[2] count, ARGV[3] max stamp age ms, ARGV[4] as cleanLua's
// ARGV[3].
// Returns the next cursor.
const cleanStepLua = `
local r = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
if ARGV[4] ~= '' then
  drain(KEYS[1], r[2], ARGV[4] == '1')
else
  clean(KEYS[1], r[2])
end
if r[1] == '0' then
  settle(KEYS[1], now_ms(), tonumber(ARGV[3]), dropper(KEYS[3], epoch_of(KEYS[2], '')))
end
return r[1]
`

type scriptID int

const (
	scriptEnsureEpoch scriptID = iota
	scriptFill
	scriptInvalidate
	scriptDrainStep
	scriptDrainFrozenStep
	scriptClean
	scriptCleanStep
	scriptTrim
	numScripts
)

var scriptSources = [numScripts]struct {
	body     string
	allowOOM bool
}{
	scriptEnsureEpoch:     {ensureEpochLua, false},
	scriptFill:            {fillLua, false},
	scriptInvalidate:      {invalidateLua, true},
	scriptDrainStep:       {drainStepLua, true},
	scriptDrainFrozenStep: {drainFrozenStepLua, true},
	scriptClean:           {cleanLua, true},
	scriptCleanStep:       {cleanStepLua, true},
	scriptTrim:            {trimLua, true},
}

// script is a redis.Script that remembers its source, for SCRIPT LOAD in
// a pipeline.
type script struct {
	*redis.Script
	src string
}

// scriptSet is one variant of every script.
type scriptSet [numScripts]*script

func newScriptSet(shebang bool) *scriptSet {
	var s scriptSet
	for id, src := range scriptSources {
		body := luaPrelude + src.body
		if shebang {
			if src.allowOOM {
				body = "#!lua flags=allow-oom\n" + body
			} else {
				body = "#!lua\n" + body
			}
		}
		s[id] = &script{Script: redis.NewScript(body), src: body}
	}
	return &s
}

var (
	plainScripts   = newScriptSet(false)
	shebangScripts = newScriptSet(true)
)
