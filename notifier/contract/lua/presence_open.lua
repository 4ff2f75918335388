-- After presence_prune: takes a connection slot for a user.
-- ARGV: 1 now ms, 2 member, 3 max connections, 4 ttl s (5, 6: presence_lease)
-- Returns the user's live connections with this one, or -1 when they already have the max.
if redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 0 and #live >= tonumber(ARGV[3]) then
  return -1
end
redis.call('SADD', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return #live + 1
