-- After canvas_aggregate: the number of a status change (retrying).
-- KEYS: 1 canvas; ARGV: 1 now ms, 2 retention s.
local seq = next_seq(KEYS[1], tonumber(ARGV[1]))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return seq
