-- After canvas_aggregate: a member succeeded.
-- KEYS: 1 canvas; ARGV: 1 index, 2 weight, 3 total weight, 4 members, 5 keep ('1'/'0'),
--       6 result JSON, 7 now ms, 8 retention s.
-- A member counts once however often it reports success (a redelivered task); the canvas is
-- complete for the one member whose success completed it, which gets the members' results.
local key, index, members = KEYS[1], ARGV[1], tonumber(ARGV[4])
member_progress(key, index, tonumber(ARGV[2]), 100)
if ARGV[5] == '1' then redis.call('HSET', key, 'r:' .. index, ARGV[6]) end
local done
if redis.call('HSETNX', key, 'd:' .. index, '1') == 1 then
  done = redis.call('HINCRBY', key, 'done', 1)
else
  done = tonumber(redis.call('HGET', key, 'done') or '0')
end
local complete = false
if done >= members then
  redis.call('HSETNX', key, 'complete', index)
  complete = redis.call('HGET', key, 'complete') == index
end
local agg, eta, seq = aggregate(key, tonumber(ARGV[3]), done >= members, tonumber(ARGV[7]), ARGV[8])
local out = {agg = agg, eta = eta, seq = seq, done = done, complete = complete}
if complete then
  local results = {}
  for j = 0, members - 1 do
    local r = redis.call('HGET', key, 'r:' .. j)
    if r then results[tostring(j)] = r end
  end
  out['results'] = results
end
return cjson.encode(out)
