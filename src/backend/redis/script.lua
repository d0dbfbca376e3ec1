-- tower-sluice GCRA, one key, several quotas, decided atomically.
--
-- KEYS[1]  the key; its value is the TAT of each quota, in microseconds
--          of Redis TIME, as decimal integers separated by spaces.
-- ARGV[1]  max wait in microseconds (how long the request may be delayed)
-- ARGV[2]  1 to consume, 0 to peek (decide without writing)
-- ARGV[3..] per quota: emission interval T (us), burst B, and the charge c
--          (1 for a quota of requests, the request's cost for a quota of
--          cost): the quota takes c * T.
--
-- Reply: {allowed, quota index (1-based), remaining, retry_after (us),
--         reset_after (us), wait (us), now (us)}. A denial leaves the state untouched.
-- Integers never go through tostring (which keeps 14 digits): they are
-- written with %.0f, exact below 2^53 us (285 years).
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local max_wait = tonumber(ARGV[1])
local consume = ARGV[2]
local n = (#ARGV - 2) / 3
local raw = redis.call('GET', KEYS[1])
if n == 1 then
  -- One quota: the same decision as below, without tables.
  local e = tonumber(ARGV[3])
  local tol = e * tonumber(ARGV[4])
  local cost = tonumber(ARGV[5])
  local tat = now
  if raw then
    tat = tonumber(raw) or tonumber(string.match(raw, '^%d+')) or now
    if tat < now then tat = now end
  end
  local w = tat + e * cost - now - tol
  if w > 0 and (w > max_wait or consume == '0') then
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
  return {1, 1, math.floor(left / e), 0, new - now, w, now}
end
local tat = {}
if raw then
  local i = 1
  for v in string.gmatch(raw, '%d+') do
    tat[i] = tonumber(v)
    i = i + 1
  end
end
-- The longest wait any quota needs (the first such quota decides).
local base, wait, worst = {}, 0, 0
for i = 1, n do
  local e = tonumber(ARGV[3 * i])
  local b = tat[i] or now
  if b < now then b = now end
  base[i] = b
  local w = b + e * tonumber(ARGV[3 * i + 2]) - now - e * tonumber(ARGV[3 * i + 1])
  if w > wait then
    wait = w
    worst = i
  end
end
if worst > 0 and (wait > max_wait or consume == '0') then
  local e = tonumber(ARGV[3 * worst])
  local left = e * tonumber(ARGV[3 * worst + 1]) - (base[worst] - now)
  if left < 0 then left = 0 end
  return {0, worst, math.floor(left / e), wait, base[worst] - now, 0, now}
end
-- Admitted at now + wait in every quota; report the one with the fewest
-- remaining.
local at = now + wait
local out, ttl, best, best_left = {}, 0, 1, -1
for i = 1, n do
  local e = tonumber(ARGV[3 * i])
  local b = tat[i] or at
  if b < at then b = at end
  local new = b + e * tonumber(ARGV[3 * i + 2])
  out[i] = string.format('%.0f', new)
  if new - now > ttl then ttl = new - now end
  local left = e * tonumber(ARGV[3 * i + 1]) - (new - now)
  if left < 0 then left = 0 end
  left = math.floor(left / e)
  if best_left < 0 or left < best_left then
    best, best_left = i, left
  end
end
if consume == '1' then
  redis.call('SET', KEYS[1], table.concat(out, ' '), 'PX', math.floor(ttl / 1000) + 1)
end
local e = tonumber(ARGV[3 * best])
local b = tat[best] or at
if b < at then b = at end
return {1, best, best_left, 0, b + e * tonumber(ARGV[3 * best + 2]) - now, wait, now}
