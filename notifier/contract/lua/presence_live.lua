-- After presence_prune: counts a user's live connections.
-- ARGV: 1 now ms, 2 member to leave out of the count ('' for none)
local count = 0
for _, member in ipairs(live) do
  if member ~= ARGV[2] then count = count + 1 end
end
return count
