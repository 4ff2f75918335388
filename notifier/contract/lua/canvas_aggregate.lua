-- The start of the canvas scripts (workers.aggregate): functions they share.
--
-- aggregate() folds the canvas's sum of weighted member progress into the aggregate (never
-- lower than before), updates its ETA and numbers the event that will carry it. The ETA
-- smooths the aggregate's rate as workers.tracking.EtaEstimator does, but samples it over at
-- least WINDOW ms: members running side by side report in bursts, and a burst's rate over a
-- few milliseconds says nothing about the time left.
--
-- Numbering (next_seq): the canvas's first member to start numbers the canvas's ``started``
-- 1 and publishes it; until it says it has (``announced``), other members' updates get no
-- number (seq 0: not published; the aggregate keeps their progress), or the bus would drop
-- the ``started`` that reached it after them. Should that member never say so, numbering
-- resumes ANNOUNCE ms after it started.
local WINDOW, ANNOUNCE = 500, 2000
local function next_seq(key, now)
  local st = redis.call('HMGET', key, 'announced', 'startedAt')
  if not st[1] and st[2] and now - tonumber(st[2]) < ANNOUNCE then return 0 end
  return redis.call('HINCRBY', key, 'seq', 1)
end
local function aggregate(key, total, complete, now, retention)
  local agg = 100
  if not complete then
    local sum = tonumber(redis.call('HGET', key, 'sum') or '0')
    agg = math.floor(math.min(100, sum / total) * 100) / 100
  end
  local prev = tonumber(redis.call('HGET', key, 'agg') or '0')
  if agg < prev then agg = prev end
  redis.call('HSET', key, 'agg', tostring(agg))
  local eta = nil
  if agg >= 100 then
    eta = 0
  else
    local st = redis.call('HMGET', key, 'etaT', 'etaP', 'etaR')
    local rate = tonumber(st[3])
    if not st[1] then
      redis.call('HSET', key, 'etaT', now, 'etaP', tostring(agg))
    else
      local t0, p0 = tonumber(st[1]), tonumber(st[2])
      if now - t0 >= WINDOW and agg >= p0 then
        local r = (agg - p0) / ((now - t0) / 1000)
        if rate then rate = 0.3 * r + 0.7 * rate else rate = r end
        redis.call('HSET', key, 'etaT', now, 'etaP', tostring(agg), 'etaR', tostring(rate))
      end
    end
    if rate and rate > 0 then
      eta = math.floor(math.max(0, (100 - agg) / rate) * 10 + 0.5) / 10
    end
  end
  local seq = next_seq(key, now)
  redis.call('EXPIRE', key, retention)
  return agg, eta, seq
end
local function member_progress(key, index, weight, progress)
  local field = 'p:' .. index
  local old = tonumber(redis.call('HGET', key, field) or '0')
  if progress > old then
    redis.call('HSET', key, field, tostring(progress))
    redis.call('HINCRBYFLOAT', key, 'sum', tostring((progress - old) * weight))
  end
end
