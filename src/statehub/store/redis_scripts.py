"""The Lua scripts the Redis store runs: each one is one atomic step inside Redis.

Layout under the prefix P (one hash tag, so every key lives in one slot):

- ``P:epoch``: names the history (set by whichever script first finds it missing, so
  every server agrees; a Redis that lost its data has none and gets a new one; a Redis
  whose revision went back below one a server saw gets a new one too: ``_ENSURE_EPOCH``).
- ``P:revision``: the last revision assigned (INCR).
- ``P:content``: a hash, key -> value in the session protocol's msgpack codec.
- ``P:facts``: a hash, key -> ``"<mod revision> <create revision> <version>"`` for every
  key of ``P:content`` (``core/entries.py``); kept by COMMIT, filled in by SNAPSHOT for
  keys written before it existed (counted as created at the revision then).
- ``P:history``: a stream; revision N is entry ``N-0`` with fields ``e`` (the epoch) and
  ``c`` (the change: msgpack [keys, encoded values, removed keys]); trimmed to MAXLEN.
- ``P:leases`` (key -> owner), ``P:lease_deadlines`` (key -> Redis-clock ms; absent: no
  expiry), ``P:lease_servers`` (key -> id of the server whose session took it).
- ``P:servers``: a set of server ids; ``P:alive:<id>``: that server's liveness key (TTL).
- ``P:bound``: a hash, key -> ``"<server id>|<owner>"`` for keys bound to a session
  (``ephemeral``); any other write or removal of the key drops it (COMMIT). The session's
  end (RELEASE_BOUND) or its server's death (RELEASE_BOUND with the liveness check)
  removes them in one commit.
- ``P:history_versions``: how many versions of each key to keep (absent or 0: none), set
  by the servers that keep history (``statehub serve --history N``); ``P:khist:<key>``: a
  list of the key's last versions, oldest first, each msgpack [revision, Redis-clock ms,
  encoded value or false (removed), encoded owner], trimmed to that many;
  ``P:history_prefixes``: a hash, key prefix -> versions kept under it instead (the
  longest matching prefix wins).
- ``P:deadlines``: a sorted set, key -> its deadline in Redis-clock ms, for keys written
  with a ttl; any other write or removal of the key drops it (COMMIT). EXPIRE removes
  due keys in bounded batches, each one commit; any server may run it (it is idempotent).
- ``P:fence``: the last fencing token of a read/write lock grant (``_LOCKS``'s ``next_fence``).
- ``P:lock:<key>``: a hash ``writer`` / ``depth`` / ``r:<owner>`` (shared holds, count);
  ``P:lockq:<key>``: a list of waiters ``ticket|mode|server|owner`` (FIFO);
  ``P:lockkeys``: keys with a lock or waiters (for the dead-server sweep).
"""

from __future__ import annotations

#: Redis's clock in milliseconds (with the microseconds as a fraction).
_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
"""

#: Append a version to a key's history list if history is kept (``n`` > 0).
_KEY_HISTORY = """
local function record_version(list_prefix, n, revision, at, key, value, owner)
  if n > 0 then
    local list = list_prefix .. key
    redis.call('RPUSH', list, cmsgpack.pack({revision, at, value, owner}))
    redis.call('LTRIM', list, -n, -1)
  end
end
local function history_rules(n_key, prefixes_key)
  local n = tonumber(redis.call('GET', n_key) or '0')
  local prefixes = redis.call('HGETALL', prefixes_key)
  return {n = n, prefixes = prefixes, on = n > 0 or #prefixes > 0}
end
local function versions_for(rules, key)
  local best, best_len = rules.n, -1
  local p = rules.prefixes
  for i = 1, #p, 2 do
    if #p[i] > best_len and string.sub(key, 1, #p[i]) == p[i] then
      best, best_len = tonumber(p[i + 1]), #p[i]
    end
  end
  return best
end
"""

#: The epoch of the history, after checking the caller's claim ``"<candidate> <epoch it
#: follows> <highest revision it saw in that epoch>"``: a missing epoch (Redis lost its
#: data), or the caller's epoch with a revision below one it saw (a failover to a replica
#: that missed writes, a restart that lost the last ones, a restored backup), gets the
#: candidate as a new epoch, so that no revision number is handed out twice in one epoch.
_ENSURE_EPOCH = """
local function ensure_epoch(epoch_key, revision_key, claim)
  local candidate, known, seen = string.match(claim, '^(%S+) (%S+) (%d+)$')
  local epoch = redis.call('GET', epoch_key)
  if (not epoch) or (epoch == known
      and tonumber(redis.call('GET', revision_key) or '0') < tonumber(seen)) then
    redis.call('SET', epoch_key, candidate)
    epoch = candidate
  end
  return epoch
end
"""

#: Drop the lease on ``key`` (all three hashes).
_DROP_LEASE = """
local function drop_lease(leases, deadlines, servers, key)
  redis.call('HDEL', leases, key)
  redis.call('HDEL', deadlines, key)
  redis.call('HDEL', servers, key)
end
local function leased_by_other(leases, deadlines, servers, key, owner, now)
  local holder = redis.call('HGET', leases, key)
  if (not holder) or holder == owner then
    return false
  end
  local deadline = redis.call('HGET', deadlines, key)
  if deadline and tonumber(deadline) <= now then
    drop_lease(leases, deadlines, servers, key)
    return false
  end
  return true
end
"""

#: KEYS: epoch, revision, content, history, leases, lease_deadlines, lease_servers, facts,
#: bound. ARGV: the epoch claim (``_ENSURE_EPOCH``), history MAXLEN, then one (owner,
#: change) pair per commit, a change being msgpack [keys, encoded values, removed keys]
#: or, with compare-and-set expectations, [keys, values, removed, expected keys,
#: expected mod revisions (0: absent)], and with keys bound to a session also [...,
#: bound keys, "<server>|<owner>"],
#: and with ttls also [..., keys with a ttl, their ttls in ms]; KEYS[10] is the deadlines,
#: KEYS[11] the history setting, KEYS[12] the history lists' prefix, KEYS[13] the
#: per-prefix history settings.
#: Each commit is checked and applied on its own (one refused by a lease or an
#: expectation does not stop the others); sending many in one script only saves round
#: trips. The history entry always holds the first three.
#: Removals of keys that hold nothing are dropped; a commit left with nothing to do takes
#: no revision. Returns {epoch, {result, ...}}, a result being {'ok', revision} (with the
#: removals kept as a third element if some were dropped), {'unchanged', current
#: revision}, {'locked', {keys...}} or {'conflict', {key, mod revision now (0: absent),
#: ...}} for the keys whose expectation failed.
COMMIT = (
    _NOW
    + _ENSURE_EPOCH
    + _DROP_LEASE
    + _KEY_HISTORY
    + """
local function mod_revision(facts, key)
  local packed = redis.call('HGET', facts, key)
  if not packed then
    return 0
  end
  return tonumber(string.match(packed, '^(%d+)'))
end
local epoch = ensure_epoch(KEYS[1], KEYS[2], ARGV[1])
local now = nil
if redis.call('HLEN', KEYS[5]) > 0 then
  now = now_ms()
end
local results = {}
for i = 3, #ARGV, 2 do
  local owner, entry = ARGV[i], ARGV[i + 1]
  local change = cmsgpack.unpack(entry)
  local keys, values, removed = change[1], change[2], change[3]
  local repack = false
  local conflicts = {}
  if change[4] then
    repack = true
    for j, key in ipairs(change[4]) do
      local current = mod_revision(KEYS[8], key)
      if current ~= change[5][j] then
        conflicts[#conflicts + 1] = key
        conflicts[#conflicts + 1] = current
      end
    end
  end
  -- Removing a key that holds nothing changes nothing (as in one process).
  local present = {}
  for _, key in ipairs(removed) do
    if redis.call('HEXISTS', KEYS[3], key) == 1 then
      present[#present + 1] = key
    end
  end
  local blocked = {}
  if now then
    for _, key in ipairs(keys) do
      if leased_by_other(KEYS[5], KEYS[6], KEYS[7], key, owner, now) then
        blocked[#blocked + 1] = key
      end
    end
    for _, key in ipairs(present) do
      if leased_by_other(KEYS[5], KEYS[6], KEYS[7], key, owner, now) then
        blocked[#blocked + 1] = key
      end
    end
  end
  if #blocked > 0 then
    results[#results + 1] = {'locked', blocked}
  elseif #conflicts > 0 then
    results[#results + 1] = {'conflict', conflicts}
  elseif #keys == 0 and #present == 0 then
    results[#results + 1] = {'unchanged', tonumber(redis.call('GET', KEYS[2]) or '0')}
  else
    local revision = redis.call('INCR', KEYS[2])
    for j, key in ipairs(keys) do
      redis.call('HSET', KEYS[3], key, values[j])
      local packed = redis.call('HGET', KEYS[8], key)
      local facts = revision .. ' ' .. revision .. ' 1'
      if packed then
        local created, version = string.match(packed, '^%d+ (%d+) (%d+)$')
        facts = revision .. ' ' .. created .. ' ' .. (tonumber(version) + 1)
      end
      redis.call('HSET', KEYS[8], key, facts)
    end
    for _, key in ipairs(present) do
      redis.call('HDEL', KEYS[3], key)
      redis.call('HDEL', KEYS[8], key)
    end
    if change[6] or redis.call('HLEN', KEYS[9]) > 0 then
      repack = true
      for _, key in ipairs(keys) do
        redis.call('HDEL', KEYS[9], key)
      end
      for _, key in ipairs(present) do
        redis.call('HDEL', KEYS[9], key)
      end
      for _, key in ipairs(change[6] or {}) do
        redis.call('HSET', KEYS[9], key, change[7])
      end
    end
    if change[8] or redis.call('ZCARD', KEYS[10]) > 0 then
      repack = true
      for _, key in ipairs(keys) do
        redis.call('ZREM', KEYS[10], key)
      end
      for _, key in ipairs(present) do
        redis.call('ZREM', KEYS[10], key)
      end
      if change[8] and #change[8] > 0 then
        local at = now_ms()
        for j, key in ipairs(change[8]) do
          redis.call('ZADD', KEYS[10], at + change[9][j], key)
        end
      end
    end
    if repack or #present < #removed then
      entry = cmsgpack.pack({keys, values, present})
    end
    redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[2], revision .. '-0', 'e', epoch, 'c', entry)
    local rules = history_rules(KEYS[11], KEYS[13])
    if rules.on then
      local at = now_ms()
      for j, key in ipairs(keys) do
        record_version(KEYS[12], versions_for(rules, key), revision, at, key, values[j], owner)
      end
      for _, key in ipairs(present) do
        record_version(KEYS[12], versions_for(rules, key), revision, at, key, false, owner)
      end
    end
    if #present < #removed then
      results[#results + 1] = {'ok', revision, present}
    else
      results[#results + 1] = {'ok', revision}
    end
  end
end
return {epoch, results}
"""
)

#: KEYS: epoch, revision, content, history, facts, bound, a liveness key, the history
#: setting, the history lists' prefix, the per-prefix settings. ARGV: the epoch claim
#: (``_ENSURE_EPOCH``), history MAXLEN, the binding
#: ("<server>|<owner>") or a server's prefix ("<server>|"), '1' if ARGV[3] is a prefix,
#: the encoded owner the history names. With a prefix, only if the liveness key is
#: gone (that server died). Removes every present key bound so, in one commit (its
#: history entry has no owner of its own). Returns {epoch, revision or 0, keys}.
RELEASE_BOUND = (
    _NOW
    + _ENSURE_EPOCH
    + _KEY_HISTORY
    + """
local epoch = ensure_epoch(KEYS[1], KEYS[2], ARGV[1])
local binding, is_prefix = ARGV[3], ARGV[4] == '1'
if is_prefix and redis.call('EXISTS', KEYS[7]) == 1 then
  return {epoch, 0, {}}
end
local flat = redis.call('HGETALL', KEYS[6])
local present = {}
for i = 1, #flat, 2 do
  local value = flat[i + 1]
  if value == binding or (is_prefix and string.sub(value, 1, #binding) == binding) then
    redis.call('HDEL', KEYS[6], flat[i])
    if redis.call('HEXISTS', KEYS[3], flat[i]) == 1 then
      present[#present + 1] = flat[i]
    end
  end
end
if #present == 0 then
  return {epoch, 0, {}}
end
local revision = redis.call('INCR', KEYS[2])
for _, key in ipairs(present) do
  redis.call('HDEL', KEYS[3], key)
  redis.call('HDEL', KEYS[5], key)
end
local entry = cmsgpack.pack({{}, {}, present})
redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[2], revision .. '-0', 'e', epoch, 'c', entry)
local rules = history_rules(KEYS[8], KEYS[10])
if rules.on then
  local at = now_ms()
  for _, key in ipairs(present) do
    record_version(KEYS[9], versions_for(rules, key), revision, at, key, false, ARGV[5])
  end
end
return {epoch, revision, present}
"""
)

#: KEYS: epoch, revision, content, history, facts, bound, deadlines, the history setting,
#: the history lists' prefix, the per-prefix settings. ARGV: the epoch claim
#: (``_ENSURE_EPOCH``), history MAXLEN, the most keys to remove, the encoded owner the
#: history names. Removes the keys whose deadline has passed on Redis's clock, at most
#: that many, in one commit.
#: Returns {epoch, revision or 0, removed keys, 1 if more are due else 0}.
EXPIRE = (
    _NOW
    + _ENSURE_EPOCH
    + _KEY_HISTORY
    + """
local epoch = ensure_epoch(KEYS[1], KEYS[2], ARGV[1])
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local present = {}
for _, key in ipairs(due) do
  redis.call('ZREM', KEYS[7], key)
  redis.call('HDEL', KEYS[6], key)
  if redis.call('HEXISTS', KEYS[3], key) == 1 then
    present[#present + 1] = key
  end
end
local more = 0
if redis.call('ZCOUNT', KEYS[7], '-inf', now) > 0 then
  more = 1
end
if #present == 0 then
  return {epoch, 0, {}, more}
end
local revision = redis.call('INCR', KEYS[2])
for _, key in ipairs(present) do
  redis.call('HDEL', KEYS[3], key)
  redis.call('HDEL', KEYS[5], key)
end
local entry = cmsgpack.pack({{}, {}, present})
redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[2], revision .. '-0', 'e', epoch, 'c', entry)
local rules = history_rules(KEYS[8], KEYS[10])
if rules.on then
  for _, key in ipairs(present) do
    record_version(KEYS[9], versions_for(rules, key), revision, now, key, false, ARGV[4])
  end
end
return {epoch, revision, present, more}
"""
)

#: KEYS: epoch, revision, content, history, facts, deadlines; ARGV: keys. Returns
#: {key, ms left, ...} for those of the keys that expire.
TIME_LEFT = (
    _NOW
    + """
local now = now_ms()
local result = {}
for _, key in ipairs(ARGV) do
  local at = redis.call('ZSCORE', KEYS[1], key)
  if at then
    result[#result + 1] = key
    result[#result + 1] = string.format('%.3f', math.max(0, tonumber(at) - now))
  end
end
return result
"""
)

#: KEYS: epoch, revision, content, facts. ARGV: the epoch claim (``_ENSURE_EPOCH``), '1'
#: to include the content. Returns {epoch, revision, {key, value, ...}, {key, facts, ...}}: one
#: consistent instant. Keys without facts (written before they were kept) get them, as
#: created at the current revision.
SNAPSHOT = (
    _ENSURE_EPOCH
    + """
local epoch = ensure_epoch(KEYS[1], KEYS[2], ARGV[1])
local revision = tonumber(redis.call('GET', KEYS[2]) or '0')
local content = {}
local facts = {}
if ARGV[2] == '1' then
  content = redis.call('HGETALL', KEYS[3])
  if redis.call('HLEN', KEYS[4]) ~= #content / 2 then
    local fallback = revision .. ' ' .. revision .. ' 1'
    for i = 1, #content, 2 do
      redis.call('HSETNX', KEYS[4], content[i], fallback)
    end
  end
  facts = redis.call('HGETALL', KEYS[4])
end
return {epoch, revision, content, facts}
"""
)

#: KEYS: leases, lease_deadlines, lease_servers. ARGV: owner, server id, release count r,
#: r released keys, then (key, milliseconds or '-1' for no expiry) pairs to acquire.
#: Returns the keys that block the acquisition (nothing acquired then), or {}.
CHANGE_LEASES = (
    _NOW
    + _DROP_LEASE
    + """
local owner, server = ARGV[1], ARGV[2]
local released = tonumber(ARGV[3])
for i = 4, 3 + released do
  if redis.call('HGET', KEYS[1], ARGV[i]) == owner then
    drop_lease(KEYS[1], KEYS[2], KEYS[3], ARGV[i])
  end
end
local now = now_ms()
local blocked = {}
for i = 4 + released, #ARGV, 2 do
  if leased_by_other(KEYS[1], KEYS[2], KEYS[3], ARGV[i], owner, now) then
    blocked[#blocked + 1] = ARGV[i]
  end
end
if #blocked > 0 then
  return blocked
end
for i = 4 + released, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], owner)
  redis.call('HSET', KEYS[3], ARGV[i], server)
  local ms = tonumber(ARGV[i + 1])
  if ms < 0 then
    redis.call('HDEL', KEYS[2], ARGV[i])
  else
    redis.call('HSET', KEYS[2], ARGV[i], string.format('%.3f', now + ms))
  end
end
return {}
"""
)

#: KEYS: leases, lease_deadlines. Returns {key, owner, ms left or '-1', ...} (live ones).
LIST_LEASES = (
    _NOW
    + """
local now = now_ms()
local flat = redis.call('HGETALL', KEYS[1])
local result = {}
for i = 1, #flat, 2 do
  local deadline = redis.call('HGET', KEYS[2], flat[i])
  local left = '-1'
  if deadline then
    left = string.format('%.3f', tonumber(deadline) - now)
  end
  if (not deadline) or tonumber(deadline) > now then
    result[#result + 1] = flat[i]
    result[#result + 1] = flat[i + 1]
    result[#result + 1] = left
  end
end
return result
"""
)

#: KEYS: leases, lease_deadlines, lease_servers. ARGV: owner, server id.
#: Releases the owner's leases taken through that server; returns how many.
RELEASE_OWNER = (
    _DROP_LEASE
    + """
local flat = redis.call('HGETALL', KEYS[1])
local count = 0
for i = 1, #flat, 2 do
  if flat[i + 1] == ARGV[1] and redis.call('HGET', KEYS[3], flat[i]) == ARGV[2] then
    drop_lease(KEYS[1], KEYS[2], KEYS[3], flat[i])
    count = count + 1
  end
end
return count
"""
)

#: KEYS: leases, lease_deadlines, lease_servers. Every lease goes.
CLEAR_LEASES = """
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 1
"""

#: Read/write locks (the rules of ``core/rwlock.py``, non-fair mode): helpers shared by
#: the lock scripts. A waiter is ``ticket|mode|owner`` with mode ``w`` or ``r``; an owner
#: is ``<server id>:<owner>``. ``base`` is the key prefix, ``prefix`` the lock prefix.
#: A fence is at least Redis's clock in microseconds, not only one more than the last: a
#: failover to a replica that missed the last grants must not hand their fences out again,
#: and the new primary's clock has moved past them (assuming the Redis hosts' clocks agree
#: within the failover's duration; docs/redis.md).
_LOCKS = """
local function next_fence(base)
  local time = redis.call('TIME')
  local now = time[1] .. string.format('%06d', tonumber(time[2]))
  local last = redis.call('GET', base .. 'fence')
  if (not last) or tonumber(last) < tonumber(now) then
    redis.call('SET', base .. 'fence', now)
    return tonumber(now)
  end
  return redis.call('INCR', base .. 'fence')
end
local function lock_names(prefix, key)
  return prefix .. ':' .. key, prefix .. 'q:' .. key
end
local function parse_waiter(record)
  return string.match(record, '^([^|]*)|([^|]*)|(.*)$')
end
local function has_readers(lock)
  local fields = redis.call('HLEN', lock)
  if redis.call('HEXISTS', lock, 'writer') == 1 then
    fields = fields - 2
  end
  return fields > 0
end
local function writer_waits(queue)
  for _, record in ipairs(redis.call('LRANGE', queue, 0, -1)) do
    local _, mode = parse_waiter(record)
    if mode == 'w' then
      return true
    end
  end
  return false
end
local function grant(base, lock, key, owner, mode)
  if mode == 'w' then
    redis.call('HSET', lock, 'writer', owner, 'depth', 1)
  else
    redis.call('HINCRBY', lock, 'r:' .. owner, 1)
  end
  redis.call('SADD', base .. 'ownerkeys:' .. owner, key)
  redis.call('SADD', base .. 'lockkeys', key)
  return next_fence(base)
end
local function forget_if_idle(base, prefix, key)
  local lock, queue = lock_names(prefix, key)
  if redis.call('EXISTS', lock) == 0 and redis.call('EXISTS', queue) == 0 then
    redis.call('SREM', base .. 'lockkeys', key)
  end
end
local function dispatch(base, prefix, key)
  local lock, queue = lock_names(prefix, key)
  if redis.call('HEXISTS', lock, 'writer') == 1 then
    return
  end
  local granted = {}
  if not writer_waits(queue) then
    for _, record in ipairs(redis.call('LRANGE', queue, 0, -1)) do
      local ticket, _, owner = parse_waiter(record)
      redis.call('HSET', base .. 'grants', ticket, grant(base, lock, key, owner, 'r'))
      granted[#granted + 1] = ticket
    end
    redis.call('DEL', queue)
  elseif not has_readers(lock) then
    for _, record in ipairs(redis.call('LRANGE', queue, 0, -1)) do
      local ticket, mode, owner = parse_waiter(record)
      if mode == 'w' then
        redis.call('LREM', queue, 1, record)
        redis.call('HSET', base .. 'grants', ticket, grant(base, lock, key, owner, 'w'))
        granted[#granted + 1] = ticket
        break
      end
    end
  end
  if #granted > 0 then
    redis.call('PUBLISH', base .. 'granted', table.concat(granted, ' '))
  end
  forget_if_idle(base, prefix, key)
end
local function holds_nothing(lock, owner)
  return redis.call('HGET', lock, 'writer') ~= owner
    and redis.call('HEXISTS', lock, 'r:' .. owner) == 0
end
local function release_hold(base, prefix, key, owner, mode)
  local lock = lock_names(prefix, key)
  if mode == 'w' then
    if redis.call('HGET', lock, 'writer') ~= owner then
      return false
    end
    if redis.call('HINCRBY', lock, 'depth', -1) <= 0 then
      redis.call('HDEL', lock, 'writer', 'depth')
    end
  else
    if redis.call('HEXISTS', lock, 'r:' .. owner) == 0 then
      return false
    end
    if redis.call('HINCRBY', lock, 'r:' .. owner, -1) <= 0 then
      redis.call('HDEL', lock, 'r:' .. owner)
    end
  end
  if holds_nothing(lock, owner) then
    redis.call('SREM', base .. 'ownerkeys:' .. owner, key)
  end
  dispatch(base, prefix, key)
  return true
end
"""

#: ARGV: base, lock prefix, key, owner, mode. Returns {'granted', fence},
#: {'queued', ticket} or {'upgrade'} (a shared holder asking for exclusive).
LOCK_ACQUIRE = (
    _LOCKS
    + """
local base, prefix, key, owner, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local lock, queue = lock_names(prefix, key)
if redis.call('HGET', lock, 'writer') == owner then
  if mode == 'w' then
    redis.call('HINCRBY', lock, 'depth', 1)
  else
    redis.call('HINCRBY', lock, 'r:' .. owner, 1)
  end
  return {'granted', next_fence(base)}
end
if redis.call('HEXISTS', lock, 'r:' .. owner) == 1 then
  if mode == 'w' then
    return {'upgrade'}
  end
  redis.call('HINCRBY', lock, 'r:' .. owner, 1)
  return {'granted', next_fence(base)}
end
local free = redis.call('HEXISTS', lock, 'writer') == 0 and not writer_waits(queue)
if free and (mode == 'r' or not has_readers(lock)) then
  return {'granted', grant(base, lock, key, owner, mode)}
end
local ticket = redis.call('INCR', base .. 'tickets')
redis.call('RPUSH', queue, ticket .. '|' .. mode .. '|' .. owner)
redis.call('SADD', base .. 'lockkeys', key)
return {'queued', ticket}
"""
)

#: ARGV: base, ticket. Returns the fence of a granted waiter (and forgets the grant), or
#: false while it still waits.
LOCK_TAKE = """
local fence = redis.call('HGET', ARGV[1] .. 'grants', ARGV[2])
if fence then
  redis.call('HDEL', ARGV[1] .. 'grants', ARGV[2])
end
return fence
"""

#: ARGV: base, lock prefix, key, owner, mode, ticket. A waiter gives up (timeout,
#: cancelled): it leaves the queue, or gives back the hold if it was granted meanwhile.
LOCK_ABANDON = (
    _LOCKS
    + """
local base, prefix, key, owner, mode, ticket = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('HDEL', base .. 'grants', ticket) == 1 then
  release_hold(base, prefix, key, owner, mode)
  return 1
end
local _, queue = lock_names(prefix, key)
redis.call('LREM', queue, 1, ticket .. '|' .. mode .. '|' .. owner)
dispatch(base, prefix, key)
return 0
"""
)

#: ARGV: base, lock prefix, key, owner, mode. Returns 1, or 0 if the owner holds no such hold.
LOCK_RELEASE = (
    _LOCKS
    + """
if release_hold(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]) then
  return 1
end
return 0
"""
)

#: ARGV: base, lock prefix, owner. Every hold of the owner on every key goes.
LOCK_RELEASE_OWNER = (
    _LOCKS
    + """
local base, prefix, owner = ARGV[1], ARGV[2], ARGV[3]
local held = base .. 'ownerkeys:' .. owner
for _, key in ipairs(redis.call('SMEMBERS', held)) do
  local lock = lock_names(prefix, key)
  redis.call('HDEL', lock, 'r:' .. owner)
  if redis.call('HGET', lock, 'writer') == owner then
    redis.call('HDEL', lock, 'writer', 'depth')
  end
  dispatch(base, prefix, key)
end
redis.call('DEL', held)
return 1
"""
)

#: ARGV: lock prefix, key, mode. 1 if a new owner could take it now without waiting.
LOCK_TEST = (
    _LOCKS
    + """
local lock, queue = lock_names(ARGV[1], ARGV[2])
if redis.call('HEXISTS', lock, 'writer') == 1 or writer_waits(queue) then
  return 0
end
if ARGV[3] == 'w' and has_readers(lock) then
  return 0
end
return 1
"""
)

#: ARGV: lock prefix, key, mode. Returns 1 if some owner holds the key in that mode.
LOCK_HELD = (
    _LOCKS
    + """
local lock = lock_names(ARGV[1], ARGV[2])
if ARGV[3] == 'w' then
  return redis.call('HEXISTS', lock, 'writer')
end
if has_readers(lock) then
  return 1
end
return 0
"""
)

#: ARGV: base, lock prefix. Returns {{key, {field, value, ...} of its lock, waiters}, ...}
#: for every key with a lock or waiters.
LIST_LOCKS = (
    _LOCKS
    + """
local base, prefix = ARGV[1], ARGV[2]
local result = {}
for _, key in ipairs(redis.call('SMEMBERS', base .. 'lockkeys')) do
  local lock, queue = lock_names(prefix, key)
  result[#result + 1] = {key, redis.call('HGETALL', lock), redis.call('LLEN', queue)}
end
return result
"""
)

#: KEYS: leases, lease_deadlines, lease_servers, servers, the server's liveness key,
#: lockkeys. ARGV: server id, lock prefix, base. If the server's liveness key is gone,
#: release every lease its sessions took and every lock hold and wait of its owners.
#: Returns how many leases, holds and waits were released.
REAP_SERVER = (
    _DROP_LEASE
    + _LOCKS
    + """
if redis.call('EXISTS', KEYS[5]) == 1 then
  return 0
end
local dead, prefix, base = ARGV[1], ARGV[2], ARGV[3]
local mark = dead .. ':'
local count = 0
local servers = redis.call('HGETALL', KEYS[3])
for i = 1, #servers, 2 do
  if servers[i + 1] == dead then
    drop_lease(KEYS[1], KEYS[2], KEYS[3], servers[i])
    count = count + 1
  end
end
for _, key in ipairs(redis.call('SMEMBERS', KEYS[6])) do
  local lock, queue = lock_names(prefix, key)
  local fields = redis.call('HGETALL', lock)
  for i = 1, #fields, 2 do
    local field, value = fields[i], fields[i + 1]
    if string.sub(field, 1, 2 + #mark) == 'r:' .. mark then
      redis.call('HDEL', lock, field)
      redis.call('DEL', base .. 'ownerkeys:' .. string.sub(field, 3))
      count = count + 1
    elseif field == 'writer' and string.sub(value, 1, #mark) == mark then
      redis.call('HDEL', lock, 'writer', 'depth')
      redis.call('DEL', base .. 'ownerkeys:' .. value)
      count = count + 1
    end
  end
  for _, record in ipairs(redis.call('LRANGE', queue, 0, -1)) do
    local _, _, owner = parse_waiter(record)
    if string.sub(owner, 1, #mark) == mark then
      redis.call('LREM', queue, 1, record)
      count = count + 1
    end
  end
  dispatch(base, prefix, key)
end
redis.call('SREM', KEYS[4], dead)
return count
"""
)
