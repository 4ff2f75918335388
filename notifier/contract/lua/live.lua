-- Shared by the scripts that append to a partition's event stream (publish, progress,
-- output): after the XADD, the same entry goes to the partition's live channel, so that
-- a notifier on one Redis is woken with the entry itself instead of re-issuing a blocking
-- XREAD per event. The stream stays the source of truth: a reader that was away reads
-- what it missed from the stream (notifier.core.reader). `channel` '' publishes nothing
-- (Redis Cluster, where the readers block on XREAD per partition).
-- Message: '<id> <route> <type> <#user> <#job> <#chan>\n' .. user .. job .. chan .. payload
-- (lengths in bytes: ids and names may hold any byte; route and type are identifiers).
local function publish_live(channel, id, route, typ, user, job, chan, payload)
  if channel ~= nil and channel ~= '' then
    redis.call('PUBLISH', channel, id .. ' ' .. route .. ' ' .. typ .. ' ' .. #user .. ' '
      .. #job .. ' ' .. #chan .. '\n' .. user .. job .. chan .. payload)
  end
end
