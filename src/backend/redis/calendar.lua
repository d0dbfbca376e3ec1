-- What the decide and settle scripts share about calendar windows, sent
-- before each of them: days since 1970-01-01 of y-m-d (Hinnant's
-- days_from_civil), the lengths of the fixed windows in seconds, the
-- periods' names, and the index and end of the window holding a time.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
local lens = {60, 3600, 86400}
local names = {'minute', 'hour', 'day', 'month'}
-- The index of the window of `unit` holding `at` (us).
local function index(unit, at)
  local s = math.floor(at / 1000000)
  if unit < 3 then return math.floor(s / lens[unit + 1]) end
  local z = math.floor(s / 86400) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return (y - 1970) * 12 + m - 1
end
-- The end (us) of window `idx` of `unit`.
local function stop(unit, idx)
  if unit < 3 then return (idx + 1) * lens[unit + 1] * 1000000 end
  local nm = idx + 1
  return days_from_civil(1970 + math.floor(nm / 12), nm % 12 + 1, 1) * 86400000000
end
