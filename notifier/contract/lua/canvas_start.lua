-- A canvas member's run started (workers.aggregate).
-- KEYS: 1 canvas, 2 job hash, 3 running set (of the owner's partition)
-- ARGV: 1 job, 2 task id, 3 now ms, 4 lease ms, 5 retention s
-- Returns the seq of the canvas's ``started`` event for its first member to start, else 0.
local first = redis.call('HSETNX', KEYS[1], 'started', ARGV[2]) == 1
redis.call('HINCRBY', KEYS[1], 'running', 1)
local seq = 0
if first then
  redis.call('HSET', KEYS[1], 'startedAt', ARGV[3])
  seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
if redis.call('HEXISTS', KEYS[2], 'terminal') == 0 then
  redis.call('ZADD', KEYS[3], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
end
return seq
