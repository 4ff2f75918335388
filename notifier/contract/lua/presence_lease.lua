-- Before presence_prune in presence_open: renews the opening instance's lease in the
-- user's partition (its connections there count while it lives).
-- KEYS: 2 the partition's instances; ARGV: 5 the lease's expiry ms, 6 the instance id
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
