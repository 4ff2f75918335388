-- Moves a user's cursor forward (notifier.core.presence): keeps the larger event id.
-- KEYS: 1 cursor hash; ARGV: 1 field, 2 event id, 3 ttl s. Returns 1 when it moved, else 0.
local function parse(id)
  local ms, seq = string.match(id or '', '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local nms, nseq = parse(ARGV[2])
if not nms then return redis.error_reply('ERR bad event id') end
local cms, cseq = parse(redis.call('HGET', KEYS[1], ARGV[1]))
if cms and (cms > nms or (cms == nms and cseq >= nseq)) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
