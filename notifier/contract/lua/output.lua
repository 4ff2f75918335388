-- The bus's append_output (notifier.core.bus): appends a chunk of a job's live output
-- (workers.progress.stream) to the job's output and, in the same step, a `job_output`
-- message carrying the chunk and its offset (code points of output before it) to the
-- event stream. Nothing is appended after the job's terminal event. Past max bytes (UTF-8)
-- the chunk is cut at a code point boundary, the job is marked outputTruncated and later
-- chunks are dropped. The job hash's eventId moves to the chunk's id, so a snapshot taken
-- from the hash holds exactly the chunks up to its eventId.
-- KEYS: 1 events, 2 job hash, 3 job output
-- ARGV: 1 user, 2 the message's JSON up to the offset ('{"type":"job_output",...,"offset":'),
--       3 text, 4 its code points, 5 job, 6 stream maxlen, 7 max bytes, 8 retention s,
--       9 live channel ('' none: live.lua)
-- Returns {id, offset, length, truncated}: id '' when nothing was appended (the output was
-- already full); false when the job is unknown or finished.
local cur = redis.call('HMGET', KEYS[2], 'owner', 'terminal', 'outputLength', 'outputTruncated')
if not cur[1] or cur[2] then return false end
if cur[1] ~= ARGV[1] then return redis.error_reply('ERR job belongs to another user') end
local offset = tonumber(cur[3]) or 0
if cur[4] then return {'', offset, offset, 1} end
local text, chars = ARGV[3], tonumber(ARGV[4])
local size = redis.call('STRLEN', KEYS[3])
local room = tonumber(ARGV[7]) - size
local truncated = #text > room
if truncated then
  -- Keep what fits, backing up while the first byte left out continues a code point.
  local cut = math.max(room, 0)
  while cut > 0 do
    local b = string.byte(text, cut + 1)
    if b < 128 or b >= 192 then break end
    cut = cut - 1
  end
  text = string.sub(text, 1, cut)
  chars = select(2, string.gsub(text, '[^\128-\191]', ''))
end
local fields = {}
local id = ''
if #text > 0 then
  local payload = ARGV[2] .. offset .. ',"text":' .. cjson.encode(text) .. '}}'
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[6], '*',
    'r', 'owner', 't', 'job_output', 'u', ARGV[1], 'j', ARGV[5], 'c', '', 'p', payload)
  publish_live(ARGV[9], id, 'owner', 'job_output', ARGV[1], ARGV[5], '', payload)
  redis.call('APPEND', KEYS[3], text)
  if size == 0 then redis.call('EXPIRE', KEYS[3], tonumber(ARGV[8])) end
  fields = {'outputLength', offset + chars, 'outputBytes', size + #text, 'eventId', id}
end
if truncated then fields[#fields + 1] = 'outputTruncated'; fields[#fields + 1] = '1' end
if #fields > 0 then redis.call('HSET', KEYS[2], unpack(fields)) end
return {id, offset, offset + chars, truncated and 1 or 0}
