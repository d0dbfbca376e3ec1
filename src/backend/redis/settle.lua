-- tower-sluice settlement: charges the difference between each request's
-- true cost and the estimate it was charged, for a batch of requests in one
-- call, atomically per key (each key as script.lua keeps it).
--
-- KEYS     the keys settled, one per request (a key may come more than
--          once: its settlements apply in order); on Redis Cluster all in
--          one slot.
-- ARGV     one group per key, in the order of KEYS, in one of three forms.
--          For a policy of one rolling quota that counts cost, a debt
--          `d T extra` or a refund `r T less stamp`; otherwise
--   n      the number of quotas of the request's policy
--   extra  units of cost to charge as a debt (0: none)
--   less   units of cost to give back (0: none)
--   then   per quota: emission interval T (us; 0 for a calendar quota),
--          B (the burst, or for a calendar quota limit * 8 + period), the
--          stamp the decision returned for it (the TAT it wrote, or the
--          calendar window's index; 0: unknown), and 1 if the quota counts
--          cost (0: a quota of requests, left as it is)
--   then   one unit name per calendar quota, as script.lua.
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
local MAX = 4503599627370496
local raws = redis.call('MGET', unpack(KEYS))
-- What this call wrote, for a key settled twice in the batch.
local written = {}
local changed = 0

-- Writes the TATs `tat` (n of them) to `key`, with the expiry at the
-- latest of them.
local function store(key, tat, n)
  local out, ttl = {}, 0
  for i = 1, n do
    out[i] = string.format('%.0f', tat[i])
    if tat[i] - now > ttl then ttl = tat[i] - now end
  end
  local v = table.concat(out, ' ')
  redis.call('SET', key, v, 'PX', math.floor(ttl / 1000) + 1)
  written[key] = v
end

-- Settles one request of `n` quotas on `key` (its value `raw`, false if
-- none), its quotas' arguments from ARGV[base + 1], its calendar units'
-- after them; returns the number of calendar units it read.
local function settle(key, raw, extra, less, n, base)
  local ncal = 0
  for i = 1, n do
    if tonumber(ARGV[base + 4 * i - 3]) == 0 then ncal = ncal + 1 end
  end
  local tat = {}
  if raw then
    local i = 1
    for v in string.gmatch(raw, '%d+') do
      tat[i] = tonumber(v)
      i = i + 1
    end
  end
  local moved, seen, done = false, 0, {}
  for i = 1, n do
    local e = tonumber(ARGV[base + 4 * i - 3])
    local code = tonumber(ARGV[base + 4 * i - 2])
    local stamp = tonumber(ARGV[base + 4 * i - 1])
    local cost = ARGV[base + 4 * i] == '1'
    if e == 0 then
      seen = seen + 1
      local unit = code % 8
      local name = ARGV[base + 4 * n + seen]
      local now_idx = index(unit, now)
      local idx = stamp
      if extra > 0 and (stamp == 0 or stamp < now_idx) then idx = now_idx end
      local prefix = key .. '@'
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
  if moved then store(key, tat, n) end
  return ncal
end

local a = 0
for k = 1, #KEYS do
  local key = KEYS[k]
  local raw = written[key]
  if raw == nil then raw = raws[k] end
  local form = ARGV[a + 1]
  if form == 'd' or form == 'r' then
    -- One rolling quota of cost: the same as settle(), without tables.
    local e = tonumber(ARGV[a + 2])
    local cur = 0
    if raw then cur = tonumber(raw) or tonumber(string.match(raw, '^%d+')) or 0 end
    local new = nil
    if form == 'd' then
      new = math.max(cur, now) + tonumber(ARGV[a + 3]) * e
      if new > MAX then new = MAX end
      a = a + 3
    else
      local stamp = tonumber(ARGV[a + 4])
      if stamp > 0 and cur == stamp then
        new = stamp - tonumber(ARGV[a + 3]) * e
        if new < 0 then new = 0 end
      end
      a = a + 4
    end
    if new then
      local v = string.format('%.0f', new)
      local ttl = new - now
      if ttl < 0 then ttl = 0 end
      redis.call('SET', key, v, 'PX', math.floor(ttl / 1000) + 1)
      written[key] = v
      changed = changed + 1
    end
  else
    local n = tonumber(form)
    local extra = tonumber(ARGV[a + 2])
    local less = tonumber(ARGV[a + 3])
    a = a + 3 + 4 * n + settle(key, raw, extra, less, n, a + 3)
  end
end
return {changed, now}
