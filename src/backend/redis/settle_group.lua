-- What the decide and settle scripts share about settling, sent after
-- calendar.lua and before either: reading a key's TATs, and applying one
-- request's settlement to its key (each key as script.lua keeps it).
--
-- A settlement is a group of arguments at A[a + 1] of a table of arguments
-- A, in one of three forms. For a policy of one rolling quota that counts
-- cost, a debt `d T extra ago` or a refund `r T less stamp`; otherwise
--   n      the number of quotas of the request's policy
--   extra  units of cost to charge as a debt (0: none)
--   less   units of cost to give back (0: none)
--   ago    how long before now the debt was found (us; 0: now)
--   then   per quota: emission interval T (us; 0 for a calendar quota),
--          B (the burst, or for a calendar quota limit * 8 + period), the
--          stamp the decision returned for it (the TAT it wrote, or the
--          calendar window's index; 0: unknown), and 1 if the quota counts
--          cost (0: a quota of requests, left as it is)
--   then   one unit name per calendar quota, as script.lua.
--
-- A debt moves a TAT from max(TAT, at) by extra * T, where at = now - ago
-- is when the debt was found, past the burst if need be (capped at 2^52
-- us), or adds extra to the count of the calendar window charged (or of
-- the window at `at`, if that one has ended): a debt applied later charges
-- what it would have charged when it was found. A refund gives back
-- less * T only if the TAT is still the stamp (nothing was admitted
-- since), or takes less off the count of the window charged (never below
-- 0).
--
-- Makes tats and settle_group, from calendar.lua's index, stop and names.
-- A script's functions are made anew at every call, and a function that
-- reads the script's locals costs more to make: so only a call that
-- settles, or reads several TATs, makes these, and this one reads nothing.
local function settling(index, stop, names)
  local MAX = 4503599627370496

  -- The TATs of a key's value `raw` (false if none), in order.
  local function tats(raw)
    local tat = {}
    if raw then
      local i = 1
      for v in string.gmatch(raw, '%d+') do
        tat[i] = tonumber(v)
        i = i + 1
      end
    end
    return tat
  end

  -- When a debt was found, `ago` (us) before `now` (never before 0).
  local function found(ago, now)
    if ago > now then return 0 end
    return now - ago
  end

  -- Settles the group at A[a + 1] on `key` (its value `raw`, false if none)
  -- at `now`. The calendar windows' counts are written here; the key's own
  -- value is returned for the caller to write: its new value and how long it
  -- must live (us), or nil if its TATs did not change. Also returns the
  -- number of quotas changed and the index in A after the group.
  local function settle_group(key, raw, A, a, now)
    local form = A[a + 1]
    if form == 'd' or form == 'r' then
      -- One rolling quota of cost: the general rule below, without tables.
      local e = tonumber(A[a + 2])
      local cur = 0
      if raw then cur = tonumber(raw) or tonumber(string.match(raw, '^%d+')) or 0 end
      local new = nil
      if form == 'd' then
        new = math.max(cur, found(tonumber(A[a + 4]), now)) + tonumber(A[a + 3]) * e
        if new > MAX then new = MAX end
      else
        local stamp = tonumber(A[a + 4])
        if stamp > 0 and cur == stamp then
          new = stamp - tonumber(A[a + 3]) * e
          if new < 0 then new = 0 end
        end
      end
      if new == nil then return nil, 0, 0, a + 4 end
      local ttl = new - now
      if ttl < 0 then ttl = 0 end
      return string.format('%.0f', new), ttl, 1, a + 4
    end
    local n = tonumber(form)
    local extra = tonumber(A[a + 2])
    local less = tonumber(A[a + 3])
    local at = found(tonumber(A[a + 4]), now)
    local base = a + 4
    local ncal = 0
    for i = 1, n do
      if tonumber(A[base + 4 * i - 3]) == 0 then ncal = ncal + 1 end
    end
    local tat = tats(raw)
    local changed, moved, seen, done = 0, false, 0, {}
    for i = 1, n do
      local e = tonumber(A[base + 4 * i - 3])
      local code = tonumber(A[base + 4 * i - 2])
      local stamp = tonumber(A[base + 4 * i - 1])
      local cost = A[base + 4 * i] == '1'
      if e == 0 then
        seen = seen + 1
        local unit = code % 8
        local name = A[base + 4 * n + seen]
        local at_idx = index(unit, at)
        local idx = stamp
        if extra > 0 and (stamp == 0 or stamp < at_idx) then idx = at_idx end
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
          local new = math.max(cur, at) + extra * e
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
    local after = base + 4 * n + ncal
    if not moved then return nil, 0, changed, after end
    local out, ttl = {}, 0
    for i = 1, n do
      out[i] = string.format('%.0f', tat[i])
      if tat[i] - now > ttl then ttl = tat[i] - now end
    end
    return table.concat(out, ' '), ttl, changed, after
  end
  return settle_group, tats
end
