-- tower-sluice GCRA, one key, several quotas, decided atomically.
--
-- KEYS[1]  the key; its value is the TAT of each quota, in microseconds
--          of Redis TIME, as decimal integers separated by spaces.
-- ARGV[1]  max wait in microseconds (how long the request may be delayed)
-- ARGV[2]  1 to consume, 0 to peek (decide without writing); 1 + m to
--          consume after settling, on this key, the settlements carried
--          in the last m arguments (groups as settle_group.lua describes,
--          applied in order before the decision); `d` to consume after a
--          lone debt of a policy of one rolling quota, carried in the last
--          two arguments: the debt (us: units * T) and how long before now
--          it was found (us; as settle_group.lua's `d T extra ago`)
-- ARGV[3..] per quota: emission interval T (us), burst B, and the charge c
--          (1 for a quota of requests, the request's cost for a quota of
--          cost): the quota takes c * T. For a calendar quota T = 0 and
--          B = limit * 8 + period (0 minute, 1 hour, 2 day, 3 month, UTC),
--          and the window's count grows by c.
-- then     one unit name per calendar quota, in the quotas' order
--          (`requests` for a quota of requests).
--
-- A calendar quota counts in one key per window, KEYS[1] followed by
-- `@calendar-<period>:<index>` (a quota of requests) or
-- `@<unit>-calendar-<period>:<index>` (a quota of cost), where index counts
-- minutes, hours or days since the epoch, or months since January 1970;
-- charged with INCRBY and expiring a minute after the window ends. Two
-- calendar quotas of one unit and period count the same, in one key.
-- Other keys hash to the slot of KEYS[1] only when KEYS[1] has a
-- {hash tag} (needed on Redis Cluster).
--
-- Reply: {allowed, quota index (1-based), remaining, retry_after (us),
--         reset_after (us), wait (us), now (us)}, and when admitted one
--         stamp per quota: the TAT written (us), or for a calendar quota
--         the index of the window charged (what settle.lua checks).
--         A denial leaves the state untouched.
-- Integers never go through tostring (which keeps 14 digits): they are
-- written with %.0f, exact below 2^53 us (285 years).
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local max_wait = tonumber(ARGV[1])
local consume = ARGV[2]
local raw = redis.call('GET', KEYS[1])
-- The decision's own arguments end at nargs; settlements carried follow.
local nargs = #ARGV
-- The key's value changed by a settlement carried and its time to live
-- (us), to write if the decision does not.
local dirty = nil
-- A lone debt of a policy of one rolling quota, carried: the debt (us)
-- and when it was found, applied below as settle_group would.
local debt, debt_at = nil, nil
if consume == 'd' then
  nargs = nargs - 2
  consume = '1'
  debt, debt_at = tonumber(ARGV[nargs + 1]), tonumber(ARGV[nargs + 2])
  if debt_at > now then debt_at = now end
  debt_at = now - debt_at
elseif consume ~= '1' and consume ~= '0' then
  nargs = nargs - (tonumber(consume) - 1)
  consume = '1'
  local settle_group = settling(index, stop, names)
  local a = nargs
  while a < #ARGV do
    local v, ttl, _
    v, ttl, _, a = settle_group(KEYS[1], raw, ARGV, a, now)
    if v then raw, dirty = v, ttl end
  end
end
if nargs == 5 and tonumber(ARGV[3]) > 0 then
  -- One rolling quota: the same decision as below, without tables.
  local e = tonumber(ARGV[3])
  local tol = e * tonumber(ARGV[4])
  local cost = tonumber(ARGV[5])
  local cur = nil
  if raw then cur = tonumber(raw) or tonumber(string.match(raw, '^%d+')) end
  if debt then
    if cur == nil or cur < debt_at then cur = debt_at end
    cur = cur + debt
    if cur > 4503599627370496 then cur = 4503599627370496 end
    dirty = cur - now
    if dirty < 0 then dirty = 0 end
  end
  local tat = now
  if cur and cur > now then tat = cur end
  local w = tat + e * cost - now - tol
  if w > 0 and (w > max_wait or consume == '0') then
    if debt then raw = string.format('%.0f', cur) end
    if dirty then
      redis.call('SET', KEYS[1], raw, 'PX', math.floor(dirty / 1000) + 1)
    end
    local left = tol - (tat - now)
    if left < 0 then left = 0 end
    return {0, 1, math.floor(left / e), w, tat - now, 0, now}
  end
  if w < 0 then w = 0 end
  if tat < now + w then tat = now + w end
  local new = tat + e * cost
  if consume == '1' then
    redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.floor((new - now) / 1000) + 1)
  end
  local left = tol - (new - now)
  if left < 0 then left = 0 end
  return {1, 1, math.floor(left / e), 0, new - now, w, now, new}
end
if debt then
  -- A lone debt is carried only by a decision of one rolling quota.
  return redis.error_reply('a lone debt carried by a decision of several quotas')
end
if dirty then
  redis.call('SET', KEYS[1], raw, 'PX', math.floor(dirty / 1000) + 1)
end
-- The quotas: triples until only the calendar quotas' unit names are left.
local n, ncal = 0, 0
while 2 + 3 * n + ncal < nargs do
  n = n + 1
  if tonumber(ARGV[3 * n]) == 0 then ncal = ncal + 1 end
end
-- The calendar window of `unit` holding `at` (us): index, end (us).
local function window(unit, at)
  local idx = index(unit, at)
  return idx, stop(unit, idx)
end
local counts = {}
-- Calendar quota i's key for the window `idx`, and the count it holds.
local function counted(c, idx)
  local k = c[4] .. 'calendar-' .. names[c[1] + 1] .. ':' .. string.format('%.0f', idx)
  if counts[k] == nil then
    counts[k] = tonumber(redis.call('GET', k)) or 0
  end
  return k, counts[k]
end
-- Per calendar quota: {period, limit, charge, key prefix}.
local cal = {}
local seen = 0
for i = 1, n do
  if tonumber(ARGV[3 * i]) == 0 then
    seen = seen + 1
    local code = tonumber(ARGV[3 * i + 1])
    local unit = code % 8
    local name = ARGV[2 + 3 * n + seen]
    local prefix = KEYS[1] .. '@'
    if name ~= 'requests' then prefix = prefix .. name .. '-' end
    cal[i] = {unit, (code - unit) / 8, tonumber(ARGV[3 * i + 2]), prefix}
  end
end
-- How long after `at` calendar quota i has room for its charge.
local function cal_wait(i, at)
  local c = cal[i]
  local idx, stop = window(c[1], at)
  local _, used = counted(c, idx)
  if used + c[3] <= c[2] then return 0 end
  return stop - at
end
local _, tats = settling(index, stop, names)
local tat = tats(raw)
-- The longest wait any quota needs (the first such quota decides).
local base, wait, worst = {}, 0, 0
for i = 1, n do
  local w
  if cal[i] then
    w = cal_wait(i, now)
  else
    local e = tonumber(ARGV[3 * i])
    local b = tat[i] or now
    if b < now then b = now end
    base[i] = b
    w = b + e * tonumber(ARGV[3 * i + 2]) - now - e * tonumber(ARGV[3 * i + 1])
  end
  if w > wait then
    wait = w
    worst = i
  end
end
-- A calendar window the wait lands in may be full too (requests reserved
-- ahead): wait on, a few windows at most.
for _ = 1, 4 do
  local more = 0
  for i = 1, n do
    if cal[i] then
      local w = cal_wait(i, now + wait)
      if w > more then more = w end
    end
  end
  if more == 0 then break end
  wait = wait + more
end
local function refusal(i)
  if cal[i] then
    local idx, stop = window(cal[i][1], now)
    local _, used = counted(cal[i], idx)
    local left = cal[i][2] - used
    if left < 0 then left = 0 end
    return {0, i, left, wait, stop - now, 0, now}
  end
  local e = tonumber(ARGV[3 * i])
  local left = e * tonumber(ARGV[3 * i + 1]) - (base[i] - now)
  if left < 0 then left = 0 end
  return {0, i, math.floor(left / e), wait, base[i] - now, 0, now}
end
if wait > 0 and (wait > max_wait or consume == '0') then
  if worst == 0 then worst = 1 end
  return refusal(worst)
end
-- Admitted at now + wait in every quota; report the one with the fewest
-- remaining.
local at = now + wait
local out, ttl, rolling, best, best_left, best_reset = {}, 0, false, 1, -1, 0
local charged, stamps = {}, {}
for i = 1, n do
  local left, reset
  if cal[i] then
    local c = cal[i]
    local idx, stop = window(c[1], at)
    local k, used = counted(c, idx)
    if consume == '1' and c[3] > 0 and not charged[k] then
      charged[k] = true
      redis.call('INCRBY', k, c[3])
      redis.call('PEXPIREAT', k, string.format('%.0f', math.floor(stop / 1000) + 60000))
    end
    left = c[2] - used - c[3]
    if left < 0 then left = 0 end
    reset = stop - now
    out[i] = '0'
    stamps[i] = idx
  else
    rolling = true
    local e = tonumber(ARGV[3 * i])
    local b = tat[i] or at
    if b < at then b = at end
    local new = b + e * tonumber(ARGV[3 * i + 2])
    out[i] = string.format('%.0f', new)
    stamps[i] = new
    if new - now > ttl then ttl = new - now end
    left = e * tonumber(ARGV[3 * i + 1]) - (new - now)
    if left < 0 then left = 0 end
    left = math.floor(left / e)
    reset = new - now
  end
  if best_left < 0 or left < best_left then
    best, best_left, best_reset = i, left, reset
  end
end
if consume == '1' and rolling then
  redis.call('SET', KEYS[1], table.concat(out, ' '), 'PX', math.floor(ttl / 1000) + 1)
end
local reply = {1, best, best_left, 0, best_reset, wait, now}
for i = 1, n do reply[7 + i] = stamps[i] end
return reply
