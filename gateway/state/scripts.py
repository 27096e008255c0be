"""Every Lua script the gateway runs, in one place.

Anything that reads and then writes shared state runs here, inside Redis, so
replicas never race on a read-modify-write from Python. Each script names its
KEYS and ARGV; all the keys of one script share a hash tag, so every script also
runs on a Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Callable

# Raise a counter to at least ARGV[n] (shared by FLOOR and MIRROR_ID).
_RAISE_TO = """
local function raise_to(key, at_least)
  local current = tonumber(redis.call('GET', key) or '0')
  if current < at_least then redis.call('SET', key, at_least) end
end
"""

# KEYS: counter. ARGV: floor. The next INCR hands out more than the floor.
FLOOR = _RAISE_TO + """
raise_to(KEYS[1], tonumber(ARGV[1]))
return 1
"""

# KEYS: mirror ids hash, mirror sequence. ARGV: field, first id. An id once, for ever.
MIRROR_ID = _RAISE_TO + """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if id then return id end
raise_to(KEYS[2], tonumber(ARGV[2]) - 1)
id = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], id)
return id
"""

# KEYS: lock. ARGV: token. Delete the lock only if this holder still owns it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# --- breakers -----------------------------------------------------------------

# KEYS: breaker. ARGV: now ms, successes, failures, window s, min requests,
# threshold, keep ms. Returns {state after counting, state before}, and when this
# call opened a closed breaker, the calls and failures in the window that did it.
BREAKER_RECORD = """
local now, s, f = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, minreq, thr = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local function reset(to)
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'state', to, 'since', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  return {to, state}
end
if state == 'half' then
  if f > 0 then return reset('open') end
  if s > 0 then return reset('closed') end
  return {state, state}
end
if state == 'open' then return {state, state} end
local sec = math.floor(now / 1000)
if s > 0 then redis.call('HINCRBY', KEYS[1], 's:' .. sec, s) end
if f > 0 then redis.call('HINCRBY', KEYS[1], 'f:' .. sec, f) end
local total, fails = 0, 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local kind, at = string.match(all[i], '^([sf]):(%d+)$')
  if kind then
    if tonumber(at) <= sec - window then
      redis.call('HDEL', KEYS[1], all[i])
    else
      local n = tonumber(all[i + 1])
      total = total + n
      if kind == 'f' then fails = fails + n end
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
if total >= minreq and fails / total >= thr then
  local r = reset('open')
  r[3], r[4] = total, fails
  return r
end
return {'closed', 'closed'}
"""

# KEYS: provider breaker, service breaker. ARGV: now ms, cooldown ms, probe ttl ms,
# keep ms, take ('1': become the probe when one is due; '0': only look).
# Returns {verdict, which, state}: verdict 1 = go, 2 = go as the probe, 0 = refused;
# which = 1 (provider) or 2 (service); state = the refusing breaker's state.
BREAKER_ALLOW = """
local now = tonumber(ARGV[1])
local take = ARGV[5] == '1'
for i = 1, 2 do
  local state = redis.call('HGET', KEYS[i], 'state') or 'closed'
  if state ~= 'closed' then
    local since = tonumber(redis.call('HGET', KEYS[i], 'since') or '0')
    if state == 'open' and now - since >= tonumber(ARGV[2]) then
      if take then
        redis.call('HSET', KEYS[i], 'state', 'half', 'since', ARGV[1])
        redis.call('PEXPIRE', KEYS[i], ARGV[4])
      end
      return {2, i, state}
    end
    if state == 'half' and now - since >= tonumber(ARGV[3]) then
      if take then redis.call('HSET', KEYS[i], 'since', ARGV[1]) end
      return {2, i, state}
    end
    return {0, i, state}
  end
end
return {1, 0, 'closed'}
"""

# --- money ----------------------------------------------------------------------

# KEYS: balance, ledger, pending, charged. ARGV: units, order, time, note, pending
# value. The charge, its ledger entry, the order's pending mark and its charged mark,
# at once: a crash right after leaves a mark the reconciler finds (no money without
# a trace), and a journal replay knows the order was charged (CHARGE_ONCE).
RESERVE = """
local bal = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if bal < amount then return {0, string.format('%d', bal)} end
local after = redis.call('DECRBY', KEYS[1], amount)
redis.call('XADD', KEYS[2], '*', 'type', 'charge', 'amount', string.format('%d', -amount),
  'balance', string.format('%d', after), 'order', ARGV[2], 't', ARGV[3], 'note', ARGV[4])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[5])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[1])
return {1, string.format('%d', after)}
"""

# KEYS: balance, ledger, charged. ARGV: units, order, time, note. The charge of an
# order whose reservation a failover lost (its journal entry says what it was), once:
# nothing when the order's charged mark stands. The balance may go below zero: the
# order was placed and answered. 1 = charged now.
CHARGE_ONCE = """
if redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[1]) == 0 then return 0 end
local amount = tonumber(ARGV[1])
local after = redis.call('DECRBY', KEYS[1], amount)
redis.call('XADD', KEYS[2], '*', 'type', 'charge', 'amount', string.format('%d', -amount),
  'balance', string.format('%d', after), 'order', ARGV[2], 't', ARGV[3], 'note', ARGV[4])
return 1
"""

# KEYS: balance, ledger, settled, pending. ARGV: units (signed), order, time, type,
# note, settle. With settle = '1' the movement happens at most once per order, and
# settles the order's pending reservation mark.
CREDIT = """
if ARGV[6] == '1' then
  if redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[4]) == 0 then
    return {0, redis.call('GET', KEYS[1]) or '0'}
  end
  redis.call('HDEL', KEYS[4], ARGV[2])
end
local after = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'type', ARGV[4], 'amount', ARGV[1],
  'balance', string.format('%d', after), 'order', ARGV[2], 't', ARGV[3], 'note', ARGV[5])
return {1, string.format('%d', after)}
"""

# --- idempotency claims -----------------------------------------------------------

# KEYS: claim. ARGV: answer, owner, lease until (ms), ttl ms. Takes the claim (nil)
# or returns the holder's {answer, owner, lease until}.
CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HMGET', KEYS[1], 'a', 'o', 'l')
end
redis.call('HSET', KEYS[1], 'a', ARGV[1], 'o', ARGV[2], 'l', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return false
"""

# KEYS: claim. ARGV: owner, op, ... Only the claim's owner may change it:
#   renew    ARGV[3] lease until                      -> 1
#   finish   ARGV[3] answer, ARGV[4] ttl ms            -> 1 (the lease ends)
#   release                                            -> 1 (the claim is gone)
#   takeover ARGV[3] new owner, ARGV[4] answer, ARGV[5] lease until, ARGV[6] now ms
#            -> 1 when the owner's lease had lapsed
# 0 when the claim is not (or no longer) the caller's.
CLAIM_OWNED = """
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return 0 end
local op = ARGV[2]
if op == 'renew' then
  redis.call('HSET', KEYS[1], 'l', ARGV[3])
elseif op == 'finish' then
  redis.call('HSET', KEYS[1], 'a', ARGV[3], 'l', '0')
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
elseif op == 'release' then
  redis.call('DEL', KEYS[1])
elseif op == 'takeover' then
  if tonumber(redis.call('HGET', KEYS[1], 'l') or '0') > tonumber(ARGV[6]) then return 0 end
  redis.call('HSET', KEYS[1], 'o', ARGV[3], 'a', ARGV[4], 'l', ARGV[5])
end
return 1
"""

# --- limits ---------------------------------------------------------------------

# KEYS: bucket. ARGV: rate per second, burst, now in ms. 1 = allowed.
TOKEN_BUCKET = """
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(v[1]) or burst
local ts = tonumber(v[2]) or now
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate / 1000)
local ok = 0
if tokens >= 1 then tokens = tokens - 1; ok = 1 end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return ok
"""

# KEYS: failure count, block (one address, one hash tag). ARGV: window s, failures
# allowed. Counts one failed authentication; past the limit the address is blocked
# for a window. The count.
AUTH_FAILED = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then redis.call('SET', KEYS[2], '1', 'EX', ARGV[1]) end
return n
"""

# --- alerts -----------------------------------------------------------------------

# KEYS: once, recent list. ARGV: ttl ms ('0': record without a claim), payload, keep.
# Claims the alert (SET NX PX) and lists it among the recent ones in one step, so an
# alert is listed exactly when one replica took it. 1 = this caller sends it.
ALERT_CLAIM = """
if ARGV[1] ~= '0' then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
return 1
"""

# --- one active order per link ----------------------------------------------------

# KEYS: link mark. ARGV: mark ("<order>:<ms>:<service>:<client>"), ttl ms, the mark
# it may replace ('': only a free link). Takes the link (nil), or returns the mark
# that holds it: a caller that found the holder done passes its mark, and takes the
# link only if it is still that one.
LINK_TAKE = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[3] then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

# --- order histories and scorecards (gateway.state.history, gateway.state.scores) --

# A history blob is <flags byte><entry>...; an entry is <len><code><time, 4 bytes>
# <payload>, len counting the bytes after itself. KEYS: history bucket. ARGV: max
# entries, max bytes, then per entry: field, entry, mode, claim. Modes: 'c' a status
# change (skipped when the order's last status entry says the same), 'o' once
# (skipped when any entry says the same), 'a' always, 'r' always and the event flags
# reset (a rescue placed the order anew: its new provider counts it). `claim` is a bit mask of
# events to count once (gateway.state.history.SEEN, ...). Bounded: past the limits
# the oldest entries after the first are dropped. Returns per entry -1 (skipped,
# another replica recorded it) or the claimed bits no one had set before.
HISTORY_APPEND = """
local function starts(blob)
  local at, out = 2, {}
  while at <= #blob do out[#out + 1] = at; at = at + 1 + string.byte(blob, at) end
  return out
end
local function said(blob, at)
  return string.sub(blob, at + 1, at + 1) .. string.sub(blob, at + 6, at + string.byte(blob, at))
end
local maxn, maxb = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 4 do
  local field, entry, mode, claim = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local blob = redis.call('HGET', KEYS[1], field) or string.char(0)
  local at = starts(blob)
  local new, skip = said(entry, 1), false
  for j = #at, 1, -1 do
    if mode == 'a' or mode == 'r' then break end
    if mode == 'o' and said(blob, at[j]) == new then skip = true; break end
    if mode == 'c' and string.byte(blob, at[j] + 1) < 16 then
      skip = said(blob, at[j]) == new
      break
    end
  end
  if skip then
    out[#out + 1] = -1
  else
    local flags = string.byte(blob, 1)
    if mode == 'r' then flags = 0 end
    local got = bit.band(claim, bit.bnot(flags))
    blob = string.char(bit.bor(flags, got)) .. string.sub(blob, 2) .. entry
    at = starts(blob)
    while #at > 2 and (#at > maxn or #blob > maxb) do
      blob = string.sub(blob, 1, at[2] - 1) .. string.sub(blob, at[3])
      at = starts(blob)
    end
    redis.call('HSET', KEYS[1], field, blob)
    out[#out + 1] = got
  end
end
return out
"""

# KEYS: scorecard. ARGV: now (s), decay time constant (s), ttl (s), then pairs of
# field, amount. Every sum decays by exp(-elapsed / tau) since the card's time `t`,
# then the amounts are added; a replica whose clock is behind adds at the card's
# time. O(fields), one call. Returns the card after the update (HGETALL's shape).
SCORE_ADD = """
local now, tau = tonumber(ARGV[1]), tonumber(ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local t, sums = now, {}
for i = 1, #all, 2 do
  if all[i] == 't' then t = tonumber(all[i + 1]) else sums[all[i]] = tonumber(all[i + 1]) end
end
local f = 1
if now > t then f = math.exp(-(now - t) / tau) else now = t end
for k, v in pairs(sums) do sums[k] = v * f end
for i = 4, #ARGV, 2 do sums[ARGV[i]] = (sums[ARGV[i]] or 0) + tonumber(ARGV[i + 1]) end
local card = {'t', string.format('%.3f', now)}
for k, v in pairs(sums) do
  card[#card + 1] = k
  card[#card + 1] = string.format('%.9g', v)
end
redis.call('HSET', KEYS[1], unpack(card))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return card
"""


# --- what may run twice --------------------------------------------------------------

def _settles(argv: tuple[object, ...]) -> bool:
    """CREDIT with settle = '1': a second run finds the order settled and does nothing."""
    return len(argv) > 5 and argv[5] in ("1", b"1", 1)


# (script, predicate on its ARGV): the scripts a run twice leaves as one run would,
# which the Redis client may send once more after a lost reply (gateway.state.connect)
REPEATABLE: tuple[tuple[str, Callable[[tuple[object, ...]], bool]], ...] = (
    (FLOOR, lambda argv: True),
    (MIRROR_ID, lambda argv: True),
    (RELEASE, lambda argv: True),
    (CREDIT, _settles),
    (CHARGE_ONCE, lambda argv: True),
)


# --- failed authentication, decided in one step ------------------------------------

# KEYS: failure count, block (one address, one hash tag). ARGV: window s, failures
# allowed, '1' when the key presented was wrong. One /api/v2 authentication: refused
# while the address is blocked (a right key too); a wrong key is counted, and the one
# past the limit blocks the address for a window. 0 = answer it (the key decides);
# else refused: the block's ms left (-1: a block without expiry, set by hand).
AUTH_ATTEMPT = """
local left = redis.call('PTTL', KEYS[2])
if left > 0 or left == -1 then return left end
if ARGV[3] ~= '1' then return 0 end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
  return tonumber(ARGV[1]) * 1000
end
return 0
"""

# KEYS: failure count (one address). ARGV: window s, failures allowed, '1' when the
# key presented was wrong. One operator login or admin bearer key: refused once the
# window holds that many failures (a right key too), until the window ends; a wrong
# key under the limit is counted. 0 = answer it; else the window's ms left (-1: none).
ADMIN_ATTEMPT = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[2]) then return redis.call('PTTL', KEYS[1]) end
if ARGV[3] ~= '1' then return 0 end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 0
"""
