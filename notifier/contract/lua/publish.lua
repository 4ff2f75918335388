-- The bus's publish (notifier.core.bus): appends an event to the event stream and, in the
-- same step, updates the job's state, the owner's job list, the owner's inbox and the job's
-- own history. A terminal state is final; an older attempt's or step's event is dropped.
-- KEYS: 1 events, 2 job hash, 3 user's jobs, 4 user's inbox, 5 broadcasts, 6 job's events,
--       7 running jobs, 8 the partition's job event totals (by state, and by error code),
--       9 the job's output (its expiry follows the job hash's)
-- ARGV: 1 route, 2 type, 3 user, 4 job, 5 channel, 6 payload, 7 state, 8 attempt, 9 seq,
--       10 snapshot, 11 now ms, 12 retention s, 13 stream maxlen, 14 inbox maxlen, 15 lease ms,
--       16 '1' when the snapshot has a progress, 17 live channel ('' none: live.lua)
-- A job's hash holds its snapshot in 'snapshot', or, after progress steps of progress.lua,
-- in 'step' (the latest step's message, whose data is the snapshot): this script folds
-- 'step' back into 'snapshot' whenever it writes the job.
-- Returns the event's stream id, or nil when the event was dropped.
local route, typ, user, job, channel, payload, state =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local attempt, seq, retention = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[12])
local terminal = state == 'completed' or state == 'failed' or state == 'cancelled'
local cur = {}
if job ~= '' then
  cur = redis.call('HMGET', KEYS[2], 'owner', 'terminal', 'attempt', 'seq', 'state', 'lease',
    'step')
  if cur[2] then return false end
  if cur[1] and cur[1] ~= user then return redis.error_reply('ERR job belongs to another user') end
  if state == 'queued' and cur[5] then return false end
  if seq > 0 and not terminal then
    local ca, cs = tonumber(cur[3]) or -1, tonumber(cur[4]) or 0
    if attempt < ca or (attempt == ca and seq <= cs) then return false end
  end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[13], '*',
  'r', route, 't', typ, 'u', user, 'j', job, 'c', channel, 'p', payload)
if job ~= '' then
  local now = ARGV[11]
  -- A snapshot without progress keeps the last one; one with progress is stored as is.
  local snapshot = ARGV[10]
  if ARGV[16] ~= '1' then
    local o = nil
    if cur[7] then
      o = cjson.decode(cur[7])['data']
    else
      local old = redis.call('HGET', KEYS[2], 'snapshot')
      if old then o = cjson.decode(old) end
    end
    if o ~= nil and o['progress'] ~= nil then
      local snap = cjson.decode(snapshot)
      snap['progress'] = o['progress']
      snapshot = cjson.encode(snap)
    end
  end
  if cur[7] then redis.call('HDEL', KEYS[2], 'step') end
  local fields = {'owner', user, 'state', state, 'snapshot', snapshot,
    'eventId', id, 'updatedAt', now}
  if seq > 0 then
    fields[#fields + 1] = 'attempt'; fields[#fields + 1] = attempt
    fields[#fields + 1] = 'seq'; fields[#fields + 1] = seq
  end
  if terminal then fields[#fields + 1] = 'terminal'; fields[#fields + 1] = payload end
  -- A running job's steps renew its lease once half of it has passed (and on every change
  -- of state), not on every progress step: the worker's publisher renews it too.
  local transition = state ~= 'processing' or cur[5] ~= 'processing'
  local lease_ms = tonumber(ARGV[15])
  local renew = not terminal and state ~= 'retrying' and state ~= 'queued'
    and (transition or (tonumber(cur[6]) or 0) - tonumber(now) < lease_ms / 2)
  if renew then
    fields[#fields + 1] = 'lease'; fields[#fields + 1] = tonumber(now) + lease_ms
  end
  local created = not cur[1]
  if created then fields[#fields + 1] = 'createdAt'; fields[#fields + 1] = now end
  redis.call('HSET', KEYS[2], unpack(fields))
  redis.pcall('XADD', KEYS[6], 'MAXLEN', '~', 1000, id,
    'r', route, 't', typ, 'u', user, 'j', job, 'c', channel, 'p', payload)
  -- A progress step changes no membership and no expiry: the hot path stays short.
  if created then
    redis.call('ZADD', KEYS[3], 'NX', now, job)
    redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -1001)
    redis.call('EXPIRE', KEYS[3], retention)
  end
  if transition then
    redis.call('EXPIRE', KEYS[2], retention)
    redis.call('EXPIRE', KEYS[6], retention)
    redis.call('EXPIRE', KEYS[9], retention)
  end
  if terminal or state == 'retrying' then
    redis.call('ZREM', KEYS[7], job)
  elseif renew then
    redis.call('ZADD', KEYS[7], tonumber(now) + lease_ms, job)
  end
  -- A count's first step marks when the totals started ('since': a reader that sees it
  -- change knows they were lost and started again).
  if redis.call('HINCRBY', KEYS[8], state, 1) == 1 then
    redis.call('HSETNX', KEYS[8], 'since', now)
  end
  if typ == 'job_error' then
    local ok, msg = pcall(cjson.decode, payload)
    local code = ok and type(msg) == 'table' and type(msg['data']) == 'table' and msg['data']['code']
    redis.call('HINCRBY', KEYS[8], 'code:' .. (type(code) == 'string' and code or 'unknown'), 1)
  end
  if terminal then
    redis.pcall('XADD', KEYS[4], 'MAXLEN', ARGV[14], id,
      'r', route, 't', typ, 'u', user, 'j', job, 'c', channel, 'p', payload)
    redis.call('EXPIRE', KEYS[4], retention)
  end
else
  redis.pcall('XADD', KEYS[5], 'MAXLEN', ARGV[14], id,
    'r', route, 't', typ, 'u', user, 'j', job, 'c', channel, 'p', payload)
  redis.call('EXPIRE', KEYS[5], retention)
end
publish_live(ARGV[17], id, route, typ, user, job, channel, payload)
return id
