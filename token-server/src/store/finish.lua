-- Settles an attempt attempt.lua counted with `begin` (a password check): `ok` forgets the
-- pair's failures and marks it known good, `void` takes the attempt back; both refund the
-- budgets it was charged. A failure needs no call: it stays counted.
--
-- KEYS as attempt.lua. ARGV[1] ok | void  ARGV[2] 1 if charged  ARGV[3] principal budget
-- ARGV[4] source budget  ARGV[5] window ms  ARGV[6] known-good ttl ms  ARGV[7] 1 with a source
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pcap, scap, window = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if ARGV[1] == 'ok' then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[6])
else
  local f = tonumber(redis.call('HGET', KEYS[1], 'f') or '0') or 0
  if f > 0 then redis.call('HSET', KEYS[1], 'f', f - 1) end
end
local function give_back(key, cap)
  local b = redis.call('HMGET', key, 't', 'a')
  if not b[1] then return end
  local lvl = math.min(tonumber(b[1]) + (now - tonumber(b[2])) * cap / window, cap)
  redis.call('HSET', key, 't', math.min(lvl + 1, cap), 'a', now)
  redis.call('PEXPIRE', key, window)
end
if ARGV[2] == '1' then
  give_back(KEYS[2], pcap)
  if ARGV[7] == '1' then give_back(KEYS[3], scap) end
end
return 0
