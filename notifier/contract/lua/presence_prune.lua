-- Shared by the presence scripts (notifier.core.presence): prunes the entries of dead
-- instances from a user's connections. KEYS: 1 user's connections, 2 the partition's
-- instances;
-- ARGV: 1 now ms. Leaves ``live`` = the remaining members.
local live = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local instance = string.match(member, '^(.*)|')
  local expiry = instance and redis.call('ZSCORE', KEYS[2], instance)
  if expiry and tonumber(expiry) >= tonumber(ARGV[1]) then
    live[#live + 1] = member
  else
    redis.call('SREM', KEYS[1], member)
  end
end
