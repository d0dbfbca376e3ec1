-- tower-sluice settlement: charges the difference between a request's true
-- cost and the estimate it was charged, atomically, one key (as script.lua).
--
-- KEYS[1]  the key; its value is the TAT of each quota (see script.lua).
-- ARGV[1]  extra: units of cost to charge as a debt (0: none)
-- ARGV[2]  less: units of cost to give back (0: none)
-- ARGV[3..] per quota: emission interval T (us; 0 for a calendar quota),
--          B (the burst, or for a calendar quota limit * 8 + period), the
--          stamp the decision returned for it (the TAT it wrote, or the
--          calendar window's index; 0: unknown), and 1 if the quota counts
--          cost (0: a quota of requests, left as it is)
-- then     one unit name per calendar quota, as script.lua.
--
-- A debt moves a TAT from max(TAT, now) by extra * T, past the burst if
-- need be (capped at 2^52 us), or adds extra to the count of the calendar
-- window charged (or of the window now, if that one has ended). A refund
-- gives back less * T only if the TAT is still the stamp (nothing was
-- admitted since), or takes less off the count of the window charged
-- (never below 0).
--
-- Reply: {quotas changed, now (us)}.
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local extra = tonumber(ARGV[1])
local less = tonumber(ARGV[2])
local n, ncal = 0, 0
while 2 + 4 * n + ncal < #ARGV do
  n = n + 1
  if tonumber(ARGV[4 * n - 1]) == 0 then ncal = ncal + 1 end
end
local MAX = 4503599627370496
local tat = {}
local raw = redis.call('GET', KEYS[1])
if raw then
  local i = 1
  for v in string.gmatch(raw, '%d+') do
    tat[i] = tonumber(v)
    i = i + 1
  end
end
local changed, moved, seen, done = 0, false, 0, {}
for i = 1, n do
  local e = tonumber(ARGV[4 * i - 1])
  local code = tonumber(ARGV[4 * i])
  local stamp = tonumber(ARGV[4 * i + 1])
  local cost = ARGV[4 * i + 2] == '1'
  if e == 0 then
    seen = seen + 1
    local unit = code % 8
    local name = ARGV[2 + 4 * n + seen]
    local now_idx = index(unit, now)
    local idx = stamp
    if extra > 0 and (stamp == 0 or stamp < now_idx) then idx = now_idx end
    local prefix = KEYS[1] .. '@'
    if name ~= 'requests' then prefix = prefix .. name .. '-' end
    local k = prefix .. 'calendar-' .. names[unit + 1] .. ':' .. string.format('%.0f', idx)
    if cost and not done[k] and (extra > 0 or stamp > 0) then
      done[k] = true
      if extra > 0 then
        redis.call('INCRBY', k, extra)
        redis.call('PEXPIREAT', k, string.format('%.0f', math.floor(stop(unit, idx) / 1000) + 60000))
        changed = changed + 1
      else
        local used = tonumber(redis.call('GET', k)) or 0
        local d = math.min(used, less)
        if d > 0 then
          redis.call('INCRBY', k, -d)
          changed = changed + 1
        end
      end
    end
    tat[i] = 0
  else
    local cur = tat[i] or 0
    if cost and extra > 0 then
      local new = math.max(cur, now) + extra * e
      if new > MAX then new = MAX end
      tat[i] = new
      changed, moved = changed + 1, true
    elseif cost and less > 0 and stamp > 0 and cur == stamp then
      local new = stamp - less * e
      if new < 0 then new = 0 end
      tat[i] = new
      changed, moved = changed + 1, true
    else
      tat[i] = cur
    end
  end
end
if moved then
  local out, ttl = {}, 0
  for i = 1, n do
    out[i] = string.format('%.0f', tat[i])
    if tat[i] - now > ttl then ttl = tat[i] - now end
  end
  redis.call('SET', KEYS[1], table.concat(out, ' '), 'PX', math.floor(ttl / 1000) + 1)
end
return {changed, now}
