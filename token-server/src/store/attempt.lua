-- One authentication attempt against the guessing budgets (see crate::lockout, whose in-memory
-- model this is): checked and recorded in one atomic step, on the server's clock, so replicas
-- share one count and concurrent attempts cannot all pass a check before any is counted.
--
-- KEYS[1] pair (hash f = failures, l = last attempt ms)   KEYS[2] principal bucket (t, a)
-- KEYS[3] source bucket (t, a)                              KEYS[4] known-good marker
-- ARGV[1] outcome: ok | fail | void (recorded now) or begin (counted; finish.lua settles it)
-- ARGV[2] free failures  ARGV[3] base delay ms  ARGV[4] max delay ms  ARGV[5] principal budget
-- ARGV[6] source budget  ARGV[7] window ms  ARGV[8] known-good ttl ms  ARGV[9] pair ttl ms
-- ARGV[10] 1 when there is a source
-- With outcome ok, the client's token-request limits (see store/limits.rs, the same rules):
-- KEYS[5] rate state (GCRA arrival time, ms)  KEYS[6] the day counters' prefix (the key is
-- KEYS[6]..':'..day, the UTC day on Redis's clock: one clock for every replica)
-- ARGV[11] requests per second (0: none)  ARGV[12] burst  ARGV[13] requests per day (0: none)
-- Returns {0, charged, rate_left, quota_left, quota_reset_s} when allowed (charged: 1 if the
-- budgets were charged; -1: no such limit), {retry_after_s} when the guessing budgets refuse,
-- {-1, retry_after_s, 1 rate | 2 quota} when over a limit.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nowf = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local to_midnight = 86400 - tonumber(t[1]) % 86400
local quota_key = KEYS[6] .. ':' .. math.floor(tonumber(t[1]) / 86400)
local outcome = ARGV[1]
local free, base, maxd = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local pcap, scap, window = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local has_source = ARGV[10] == '1'

local pair = redis.call('HMGET', KEYS[1], 'f', 'l')
local failures = tonumber(pair[1]) or 0
local over = failures - free
if over > 0 then
  local delay = math.min(base * 2 ^ math.min(over - 1, 20), maxd)
  local wait = (tonumber(pair[2]) or 0) + delay - now
  if wait > 0 then return {math.max(1, math.ceil(wait / 1000))} end
end

local function level(key, cap)
  local b = redis.call('HMGET', key, 't', 'a')
  if not b[1] then return cap end
  return math.min(tonumber(b[1]) + (now - tonumber(b[2])) * cap / window, cap)
end
local function refill(cap, lvl)
  return {math.max(1, math.ceil((1 - lvl) * window / cap / 1000))}
end

local charged = 0
if redis.call('EXISTS', KEYS[4]) == 0 then
  local pl = level(KEYS[2], pcap)
  local sl = scap
  if has_source then sl = level(KEYS[3], scap) end
  if pl < 1 then return refill(pcap, pl) end
  if sl < 1 then return refill(scap, sl) end
  if outcome == 'fail' or outcome == 'begin' then
    redis.call('HSET', KEYS[2], 't', pl - 1, 'a', now)
    redis.call('PEXPIRE', KEYS[2], window)
    if has_source then
      redis.call('HSET', KEYS[3], 't', sl - 1, 'a', now)
      redis.call('PEXPIRE', KEYS[3], window)
    end
    charged = 1
  end
end

if outcome == 'fail' or outcome == 'begin' then
  redis.call('HSET', KEYS[1], 'f', failures + 1, 'l', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[9])
  return {0, charged, -1, -1, 0}
end
if outcome ~= 'ok' then return {0, charged, -1, -1, 0} end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[4], '1', 'PX', ARGV[8])

local rps, burst, per_day = tonumber(ARGV[11] or '0'), tonumber(ARGV[12] or '0'), tonumber(ARGV[13] or '0')
local quota_left, rate_left = -1, -1
local used = 0
if per_day > 0 then
  used = tonumber(redis.call('GET', quota_key) or '0') or 0
  if used >= per_day then return {-1, math.max(1, to_midnight), 2} end
  quota_left = per_day - used - 1
end
local next_tat = 0
if rps > 0 then
  local interval = 1000 / rps
  local tolerance = interval * math.max(burst, 1)
  local tat = tonumber(redis.call('GET', KEYS[5]) or '0') or 0
  if tat < nowf then tat = nowf end
  next_tat = tat + interval
  local allow_at = next_tat - tolerance
  if nowf < allow_at then return {-1, math.max(1, math.ceil((allow_at - nowf) / 1000)), 1} end
  rate_left = math.max(0, math.floor((nowf + tolerance - next_tat) / interval))
  redis.call('SET', KEYS[5], string.format('%.3f', next_tat), 'PX', math.ceil(next_tat - nowf) + 1000)
end
if per_day > 0 then
  redis.call('INCR', quota_key)
  if used == 0 then redis.call('EXPIRE', quota_key, to_midnight + 60) end
end
return {0, charged, rate_left, quota_left, to_midnight}
