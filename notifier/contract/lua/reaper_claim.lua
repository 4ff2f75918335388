-- The reaper's claim on a job (notifier.core.reaper): removes the job from the running set
-- only if its lease has lapsed. KEYS: 1 running; ARGV: 1 job, 2 now ms. Returns 1 or 0.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) < tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
