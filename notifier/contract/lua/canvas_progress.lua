-- After canvas_aggregate: a member's progress.
-- KEYS: 1 canvas; ARGV: 1 index, 2 weight, 3 total weight, 4 progress, 5 now ms, 6 retention s
member_progress(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4]))
local agg, eta, seq = aggregate(KEYS[1], tonumber(ARGV[3]), false, tonumber(ARGV[5]), ARGV[6])
return cjson.encode({agg = agg, eta = eta, seq = seq})
