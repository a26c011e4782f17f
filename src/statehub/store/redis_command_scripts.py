"""The Lua scripts of the command directory (see ``redis_commands``).

Every script takes the store's key base as ``ARGV[1]`` and computes the names of the
keys it touches (``cmd:servers``, ``cmd:offers:<server>``, ``cmd:claims``,
``cmd:labels``, ``alive:<server>``), as the lock scripts do: one Redis, not a cluster.
"""

_ALIVE = """
local base = ARGV[1]
local function alive(server)
  return redis.call('EXISTS', base .. 'alive:' .. server) == 1
end
local function forget_claims(server, name)
  local claims = redis.call('HGETALL', base .. 'cmd:claims')
  local mark = name and (name .. '\\0') or ''
  for i = 1, #claims, 2 do
    if claims[i + 1] == server and string.sub(claims[i], 1, #mark) == mark then
      redis.call('HDEL', base .. 'cmd:claims', claims[i])
    end
  end
end
local function forget(server)
  redis.call('DEL', base .. 'cmd:offers:' .. server)
  redis.call('HDEL', base .. 'cmd:labels', server)
  forget_claims(server, nil)
  redis.call('SREM', base .. 'cmd:servers', server)
end
"""

#: ARGV: base, me, name, offer, routed ("1"/"0"), liveness ms, label, claimed values...
OFFER = (
    _ALIVE
    + """
local me, name, offer, routed, ttl, label = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local function label_of(server)
  return redis.call('HGET', base .. 'cmd:labels', server) or ''
end
for _, server in ipairs(redis.call('SMEMBERS', base .. 'cmd:servers')) do
  if server ~= me and alive(server) then
    local other = redis.call('HGET', base .. 'cmd:offers:' .. server, name)
    if other and (routed == '0' or string.sub(other, 1, 1) ~= 'r') then
      return {'taken', server, label_of(server)}
    end
  end
end
for i = 8, #ARGV do
  local holder = redis.call('HGET', base .. 'cmd:claims', name .. '\\0' .. ARGV[i])
  if holder and holder ~= me and alive(holder) then
    return {'claimed', holder, label_of(holder), ARGV[i]}
  end
end
-- Not swept before the store's first beat: it keeps the key alive from then on.
redis.call('SET', base .. 'alive:' .. me, '1', 'PX', ttl, 'NX')
redis.call('SADD', base .. 'cmd:servers', me)
redis.call('HSET', base .. 'cmd:labels', me, label)
redis.call('HSET', base .. 'cmd:offers:' .. me, name, offer)
forget_claims(me, name)
for i = 8, #ARGV do
  redis.call('HSET', base .. 'cmd:claims', name .. '\\0' .. ARGV[i], me)
end
redis.call('PUBLISH', base .. 'cmd:directory', me)
return {'ok'}
"""
)

#: ARGV: base, me, name ("" for every command of me).
WITHDRAW = (
    _ALIVE
    + """
local me, name = ARGV[2], ARGV[3]
if name == '' then
  forget(me)
else
  redis.call('HDEL', base .. 'cmd:offers:' .. me, name)
  forget_claims(me, name)
end
redis.call('PUBLISH', base .. 'cmd:directory', me)
return 1
"""
)

#: ARGV: base, me. Forgets dead servers; answers {listed, {server, offers}..., claims,
#: labels}.
DIRECTORY = (
    _ALIVE
    + """
local me = ARGV[2]
local listed = 0
local offers = {}
for _, server in ipairs(redis.call('SMEMBERS', base .. 'cmd:servers')) do
  if server == me then
    listed = 1
  elseif alive(server) then
    table.insert(offers, server)
    table.insert(offers, redis.call('HGETALL', base .. 'cmd:offers:' .. server))
  else
    forget(server)
  end
end
local claims = redis.call('HGETALL', base .. 'cmd:claims')
return {listed, offers, claims, redis.call('HGETALL', base .. 'cmd:labels')}
"""
)
