-- The bus's hot path (notifier.core.bus.publish): one progress step of a running job.
-- It does only what a step changes: appends the update to the event stream and to the
-- job's history, records it as the job's latest step ('step', the message itself: a
-- snapshot reads its data from there) with its order and id, and counts it. Anything
-- else — a job not known to be running under this owner, a lease due for renewal — is
-- left to the full script (publish.lua): the caller runs it when this returns 0.
-- KEYS: 1 events, 2 job hash, 3 job's events, 4 the partition's job event totals
-- ARGV: 1 user, 2 job, 3 payload, 4 attempt, 5 seq, 6 now ms, 7 stream maxlen,
--       8 lease ms, 9 live channel ('' none)
-- Returns the event's id; false when the step is stale (an older attempt or step);
-- 0 when publish.lua must handle it.
local cur = redis.call('HMGET', KEYS[2], 'owner', 'state', 'attempt', 'seq', 'lease')
if cur[1] ~= ARGV[1] or cur[2] ~= 'processing'
  or (tonumber(cur[5]) or 0) - tonumber(ARGV[6]) < tonumber(ARGV[8]) / 2 then
  return 0
end
local attempt, seq = tonumber(ARGV[4]), tonumber(ARGV[5])
local ca, cs = tonumber(cur[3]) or -1, tonumber(cur[4]) or 0
if attempt < ca or (attempt == ca and seq <= cs) then return false end
local user, job, payload = ARGV[1], ARGV[2], ARGV[3]
local typ = 'job_status_update'
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[7], '*',
  'r', 'job', 't', typ, 'u', user, 'j', job, 'p', payload)
redis.call('HSET', KEYS[2], 'attempt', attempt, 'seq', seq, 'eventId', id,
  'updatedAt', ARGV[6], 'step', payload)
redis.pcall('XADD', KEYS[3], 'MAXLEN', '~', 1000, id,
  'r', 'job', 't', typ, 'u', user, 'j', job, 'p', payload)
if redis.call('HINCRBY', KEYS[4], 'processing', 1) == 1 then
  redis.call('HSETNX', KEYS[4], 'since', ARGV[6])
end
publish_live(ARGV[9], id, 'job', typ, user, job, '', payload)
return id
