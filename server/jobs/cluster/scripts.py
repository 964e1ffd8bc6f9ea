"""The queue's changes that must be one decision, as Lua scripts (Redis runs each atomically).

Every script takes the key prefix as ARGV[1] and builds its keys from it (server/jobs/cluster/store.py
lists them): the job hashes a script touches are known only inside it, so this is for one Redis
server (or a primary with replicas), not a Redis Cluster.

The fence: each time a worker takes a job, `attempts` goes up by one and the job's stream entry is new.
A worker writes progress, heartbeats and its finish only while the record still says running, with
its attempt and its name as owner; a worker presumed dead, whose job another took since, is refused
(its finish counts as `dropped` in stats).
"""

from __future__ import annotations

_PRELUDE = r"""
local p = ARGV[1]
local function jkey(id) return p .. ':job:' .. id end
local function move(id, from, to, created)
  redis.call('ZREM', p .. ':state:' .. from, id)
  redis.call('ZADD', p .. ':state:' .. to, created, id)
end
local function notify()
  redis.call('XADD', p .. ':notify', 'MAXLEN', '~', '1000', '*', 'n', '1')
end
-- set the field/value pairs ARGV[i..] (n of them); the index after them
local function set_pairs(key, i, n)
  for k = i, i + 2 * n - 1, 2 do redis.call('HSET', key, ARGV[k], ARGV[k + 1]) end
  return i + 2 * n
end
local function del_names(key, i, n)
  for k = i, i + n - 1 do redis.call('HDEL', key, ARGV[k]) end
  return i + n
end
-- the job ends, from state `from`: its indexes, and a notice to lanes that wait for work
local function finalize(id, from, state, now)
  local key = jkey(id)
  local created = redis.call('HGET', key, 'created_at')
  redis.call('HSET', key, 'state', state, 'finished_at', now)
  redis.call('HDEL', key, 'owner', 'entry', 'cancel')
  move(id, from, state, created)
  redis.call('ZADD', p .. ':finished', now, id)
  notify()
end
-- a running job goes back to its lane's ready set, in its old place (same priority, same age)
local function requeue(id, lane)
  local key = jkey(id)
  local f = redis.call('HMGET', key, 'created_at', 'priority', 'member')
  redis.call('HSET', key, 'state', 'queued', 'progress', '0.0')
  redis.call('HDEL', key, 'started_at', 'eta_s', 'owner', 'entry', 'detail')
  move(id, 'running', 'queued', f[1])
  redis.call('ZADD', p .. ':ready:' .. lane, f[2], f[3])
  notify()
end
"""

# ARGV: p, depth (-1: none), unless_kind, unless_model, n, then per job:
#   id, lane, priority, member, created_at, nfields, field/value pairs
# -> {'ok'} | {'full', queued} | {'duplicate', id} | {'exists', id} (an unfinished job of unless_kind
#    and unless_model: the oldest)
SUBMIT = (
    _PRELUDE
    + r"""
local depth, n = tonumber(ARGV[2]), tonumber(ARGV[5])
if ARGV[3] ~= '' then
  local best, best_at = nil, nil
  for _, state in ipairs({'queued', 'running'}) do
    for _, id in ipairs(redis.call('ZRANGE', p .. ':state:' .. state, 0, -1)) do
      local f = redis.call('HMGET', jkey(id), 'kind', 'model', 'created_at')
      if f[1] == ARGV[3] and f[2] == ARGV[4] and (best == nil or tonumber(f[3]) < best_at) then
        best, best_at = id, tonumber(f[3])
      end
    end
  end
  if best then return {'exists', best} end
end
local queued = redis.call('ZCARD', p .. ':state:queued')
if depth >= 0 and queued + n > depth then return {'full', tostring(queued)} end
local jobs, seen, i = {}, {}, 6
for j = 1, n do
  local job = {id = ARGV[i], lane = ARGV[i + 1], priority = ARGV[i + 2], member = ARGV[i + 3],
               created = ARGV[i + 4], count = tonumber(ARGV[i + 5]), first = i + 6}
  i = job.first + 2 * job.count
  if seen[job.id] or redis.call('EXISTS', jkey(job.id)) == 1 then return {'duplicate', job.id} end
  seen[job.id] = true
  jobs[j] = job
end
for _, job in ipairs(jobs) do
  local key = jkey(job.id)
  set_pairs(key, job.first, job.count)
  redis.call('HSET', key, 'lane', job.lane, 'member', job.member, 'state', 'queued')
  redis.call('ZADD', p .. ':jobs', job.created, job.id)
  redis.call('ZADD', p .. ':state:queued', job.created, job.id)
  redis.call('ZADD', p .. ':ready:' .. job.lane, job.priority, job.member)
end
notify()
return {'ok'}
"""
)

# ARGV: p, lane, group, consumer, now, members... (of the lane's ready set)
# -> flat {id, attempt, entry, ...} for the jobs taken (a member another worker took first is skipped)
CLAIM = (
    _PRELUDE
    + r"""
local lane, group, consumer, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ready, stream = p .. ':ready:' .. lane, p .. ':run:' .. lane
redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')  -- there already: BUSYGROUP, ignored
local out = {}
for i = 6, #ARGV do
  local member = ARGV[i]
  local id = string.match(member, ':([^:]+)$')
  local key = jkey(id)
  if redis.call('ZREM', ready, member) == 1 and redis.call('EXISTS', key) == 1 then
    local attempt = redis.call('HINCRBY', key, 'attempts', 1)
    local entry = redis.call('XADD', stream, '*', 'job', id, 'attempt', attempt)
    redis.call('XCLAIM', stream, group, consumer, 0, entry, 'FORCE', 'JUSTID')
    redis.call('HSET', key, 'state', 'running', 'started_at', now, 'progress', '0.0', 'owner', consumer,
               'entry', entry)
    redis.call('HDEL', key, 'eta_s')
    move(id, 'queued', 'running', redis.call('HGET', key, 'created_at'))
    out[#out + 1] = id
    out[#out + 1] = tostring(attempt)
    out[#out + 1] = entry
  end
end
return out
"""
)

# ARGV: p, group, id, attempt, consumer, state, finished_at, nset, pairs..., ndel, names...
# -> 1 (written) | 0 (dropped: the job is no longer this attempt's)
FINISH = (
    _PRELUDE
    + r"""
local id = ARGV[3]
local key = jkey(id)
local f = redis.call('HMGET', key, 'state', 'attempts', 'owner', 'lane', 'entry')
if f[1] ~= 'running' or f[2] ~= ARGV[4] or f[3] ~= ARGV[5] then
  redis.call('HINCRBY', p .. ':stats', 'dropped', 1)
  return 0
end
local i = set_pairs(key, 9, tonumber(ARGV[8]))
del_names(key, i + 1, tonumber(ARGV[i]))
local stream = p .. ':run:' .. f[4]
redis.call('XACK', stream, ARGV[2], f[5])
redis.call('XDEL', stream, f[5])
finalize(id, 'running', ARGV[6], ARGV[7])
redis.call('HINCRBY', p .. ':stats', 'finished', 1)
return 1
"""
)

# A queued job ends now (cancelled, or failed because the job it ran after did not succeed); a running
# one is flagged for its worker (flag = '1').
# ARGV: p, id, state, now, flag, nset, pairs... -> 'ended' | 'flagged' | the state it is in | 'missing'
END_QUEUED = (
    _PRELUDE
    + r"""
local id = ARGV[2]
local key = jkey(id)
local f = redis.call('HMGET', key, 'state', 'lane', 'member')
if f[1] == 'queued' and redis.call('ZREM', p .. ':ready:' .. f[2], f[3]) == 1 then
  set_pairs(key, 7, tonumber(ARGV[6]))
  redis.call('HDEL', key, 'eta_s')
  finalize(id, 'queued', ARGV[3], ARGV[4])
  return 'ended'
end
if f[1] == 'running' and ARGV[5] == '1' then
  redis.call('HSET', key, 'cancel', '1')
  return 'flagged'
end
return f[1] or 'missing'
"""
)

# A worker's heartbeat, with the progress of the jobs it runs.
# ARGV: p, group, consumer, report (its WorkerInfo as JSON: workers.py), ttl_s, n,
# then per job: id, attempt, lane, entry, write, progress, eta, detail
# (write '0': heartbeat only, its finish is on its way; eta '' = none; detail '' = unchanged)
# -> per job 'ok' | 'cancel' (asked by a user) | 'lost' (another attempt has it now)
TICK = (
    _PRELUDE
    + r"""
local group, consumer = ARGV[2], ARGV[3]
redis.call('SET', p .. ':worker:' .. consumer, ARGV[4], 'EX', ARGV[5])
local out, i = {}, 7
for j = 1, tonumber(ARGV[6]) do
  local id, attempt, lane, entry, write = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local key = jkey(id)
  local f = redis.call('HMGET', key, 'state', 'attempts', 'owner', 'cancel', 'entry')
  if f[1] ~= 'running' or f[2] ~= attempt or f[3] ~= consumer or f[5] ~= entry then
    out[j] = 'lost'
  else
    redis.call('XCLAIM', p .. ':run:' .. lane, group, consumer, 0, entry, 'JUSTID')  -- idle time back to 0
    if write == '1' then
      redis.call('HSET', key, 'progress', ARGV[i + 5])
      if ARGV[i + 6] == '' then redis.call('HDEL', key, 'eta_s') else redis.call('HSET', key, 'eta_s', ARGV[i + 6]) end
      if ARGV[i + 7] ~= '' then redis.call('HSET', key, 'detail', ARGV[i + 7]) end
    end
    out[j] = (f[4] == '1') and 'cancel' or 'ok'
  end
  i = i + 8
end
return out
"""
)

# Jobs whose stream entries a worker no longer heartbeats go back to their lane's ready set (a job
# cancelled while it ran ends cancelled instead). mode 'idle': the entries idle past min_idle_ms, by
# XAUTOCLAIM; mode 'these': the entries named (a worker stopping, or restarted under its old name).
# ARGV: p, lane, group, claimer, min_idle_ms, count, now, mode, entries... -> flat {id, 'queued'|'cancelled'}
RECLAIM = (
    _PRELUDE
    + r"""
local lane, group, now = ARGV[2], ARGV[3], ARGV[7]
local stream = p .. ':run:' .. lane
if redis.call('EXISTS', stream) == 0 then return {} end
local entries = {}
if ARGV[8] == 'idle' then
  local ok, res = pcall(redis.call, 'XAUTOCLAIM', stream, group, ARGV[4], ARGV[5], '0-0', 'COUNT', ARGV[6], 'JUSTID')
  if not ok then return {} end  -- no group yet
  entries = res[2]
else
  for i = 9, #ARGV do entries[#entries + 1] = ARGV[i] end
end
local out = {}
for _, entry in ipairs(entries) do
  local e = redis.call('XRANGE', stream, entry, entry)
  if #e > 0 then
    local id, attempt
    local fields = e[1][2]
    for k = 1, #fields, 2 do
      if fields[k] == 'job' then id = fields[k + 1] elseif fields[k] == 'attempt' then attempt = fields[k + 1] end
    end
    local f = redis.call('HMGET', jkey(id), 'state', 'attempts', 'cancel', 'entry')
    if f[1] == 'running' and f[2] == attempt and f[4] == entry then
      if f[3] == '1' then
        finalize(id, 'running', 'cancelled', now)
        out[#out + 1] = id
        out[#out + 1] = 'cancelled'
      else
        requeue(id, lane)
        out[#out + 1] = id
        out[#out + 1] = 'queued'
      end
      redis.call('HINCRBY', p .. ':stats', 'reclaimed', 1)
    end
  end
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
end
return out
"""
)
