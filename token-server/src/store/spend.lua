-- The state of a refresh token being exchanged, and its spending, in one atomic step: of two
-- replicas exchanging the same rotated token at once, exactly one spends it.
--
-- KEYS[1] revoked marker of the token   KEYS[2] revoked marker of its chain
-- KEYS[3] spent marker of the token
-- ARGV[1] 1 to spend (rotation), 0 to check only  ARGV[2] seconds until the token expires
-- ARGV[3] seconds a chain revoked for reuse stays revoked
-- Returns 0 fresh (now spent), 1 reused (the chain is now revoked), 2 revoked.
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return 2
end
if ARGV[1] == '0' then return 0 end
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
return 1
