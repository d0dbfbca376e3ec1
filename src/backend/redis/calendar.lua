-- What the decide and settle scripts share about calendar windows, sent
-- before each of them: days since 1970-01-01 of y-m-d (Hinnant's
-- days_from_civil), the lengths of the fixed windows in seconds, and the
-- periods' names.
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
