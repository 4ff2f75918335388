-- A canvas member's run ended (workers.aggregate): while others run the job keeps its
-- lease; when none does, the canvas waits in the queue (between chain steps, for a retry)
-- and holds none.
-- KEYS: 1 canvas, 2 job hash, 3 running set (of the owner's partition); ARGV: 1 job, 2 now ms, 3 lease ms, 4 retention s
local running = redis.call('HINCRBY', KEYS[1], 'running', -1)
if running < 0 then
  redis.call('HSET', KEYS[1], 'running', 0)
  running = 0
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
if running == 0 then
  redis.call('ZREM', KEYS[3], ARGV[1])
elseif redis.call('HEXISTS', KEYS[2], 'terminal') == 0 then
  redis.call('ZADD', KEYS[3], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
end
return running
