-- tower-sluice settlement: charges the difference between each request's
-- true cost and the estimate it was charged, for a batch of requests in one
-- call, atomically per key (each key as script.lua keeps it).
--
-- KEYS     the keys settled, one per request (a key may come more than
--          once: its settlements apply in order); on Redis Cluster all in
--          one slot.
-- ARGV     one settlement per key, in the order of KEYS, each a group of
--          arguments as settle_group.lua describes.
--
-- Reply: {quotas changed, now (us)}.
local settle_group = settling(index, stop, names)
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local raws = redis.call('MGET', unpack(KEYS))
-- What this call wrote, for a key settled twice in the batch.
local written = {}
local changed = 0
local a = 0
for k = 1, #KEYS do
  local key = KEYS[k]
  local raw = written[key]
  if raw == nil then raw = raws[k] end
  local v, ttl, c
  v, ttl, c, a = settle_group(key, raw, ARGV, a, now)
  if v then
    redis.call('SET', key, v, 'PX', math.floor(ttl / 1000) + 1)
    written[key] = v
  end
  changed = changed + c
end
return {changed, now}
