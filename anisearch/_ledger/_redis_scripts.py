"""The Redis ledger's Lua scripts: ``_logic.reserve``, ``_logic.settle`` and ``_logic.inspect``, ported.

Each step is one script call, so it is atomic on the server and costs one round trip. The scripts only
count and compare integers (microseconds since the epoch); every span, calendar and zone was turned into
numbers by the Python side before the call, exactly as for the other backends. The shared test suite runs
every ledger rule against all three backends, which keeps this port and ``_logic.py`` in step.

Keys, all derived from ``KEYS[1]`` = ``anisearch:ledger:`` (the prefix) and ``ARGV[1]`` = ``provider|scope``:
``s:<ps>`` (hash: cooldown, concurrency, priority, busy streak), ``w:<ps>`` (hash: window -> ``|``-joined
numbers), ``h:<ps>`` (hash: reservation token -> ``holder|lease_until|slot|at``), ``u:<ps>:<window>`` (sorted
set: unit -> leave instant), ``p:<ps>:<window>`` (set: pending units), ``wake:<ps>`` (list a waiter BLPOPs),
``q:<ps>`` (list: tokens of the searches queued for a slot, first refused first) with ``qr:<ps>`` (hash:
token -> the queued search as JSON), ``g:<ps>:<token>`` (list: the instant a freed slot was reserved for
that queued search, or '' to ask again), and ``scopes`` (set of every ``<ps>``).
"""

from __future__ import annotations

from anisearch._ledger._logic import CLOCK_SKEW_US, RECOUNT_US

__all__ = ["FREE", "INSPECT", "RENEW", "RESERVE", "SETTLE", "WITHDRAW"]

_COMMON = (
    r"""
local RECOUNT_US, CLOCK_SKEW_US = """
    f"{RECOUNT_US}, {CLOCK_SKEW_US}"
    r"""
local P = KEYS[1]
local PS = ARGV[1]
local SK, WK, HK = P .. 's:' .. PS, P .. 'w:' .. PS, P .. 'h:' .. PS
local function num(v) if v == nil or v == false or v == '' then return nil end return tonumber(v) end
local function fmt(v) if v == nil then return '' end return string.format('%d', v) end
local function split(raw)
  local out = {}
  for part in string.gmatch(raw .. '|', '([^|]*)|') do out[#out + 1] = part end
  return out
end
local function uk(name) return P .. 'u:' .. PS .. ':' .. name end
local function pk(name) return P .. 'p:' .. PS .. ':' .. name end
local function load_window(name)
  local raw = redis.call('HGET', WK, name)
  local w = {source = 'ledger', unknown = 0, unknown_leave = 0, freed = 0, blocked_until = 0, resets_at = 0}
  if raw then
    local f = split(raw)
    w.limit, w.declared, w.truth_at, w.source = num(f[1]), num(f[2]), num(f[3]), f[4]
    w.unknown, w.unknown_leave, w.freed = num(f[5]) or 0, num(f[6]) or 0, num(f[7]) or 0
    w.blocked_until, w.resets_at = num(f[8]) or 0, num(f[9]) or 0
  end
  return w
end
local function save_window(name, w)
  redis.call('HSET', WK, name, table.concat({fmt(w.limit), fmt(w.declared), fmt(w.truth_at), w.source,
    fmt(w.unknown), fmt(w.unknown_leave), fmt(w.freed), fmt(w.blocked_until), fmt(w.resets_at)}, '|'))
end
local function purge_units(name, now)
  local gone = redis.call('ZRANGEBYSCORE', uk(name), '-inf', now)
  for _, member in ipairs(gone) do redis.call('SREM', pk(name), member) end
  redis.call('ZREMRANGEBYSCORE', uk(name), '-inf', now)
  return #gone
end
local function purge(name, w, now)
  local gone = purge_units(name, now)
  if w.unknown > 0 and w.unknown_leave <= now then gone = gone + w.unknown; w.unknown = 0 end
  w.freed = w.freed + gone
end
local function kth_leave(name, k)
  local row = redis.call('ZRANGE', uk(name), k - 1, k - 1, 'WITHSCORES')
  if row[2] then return tonumber(row[2]) end
  return nil
end
local function kth(name, w, k)
  if w.unknown > 0 then
    local before = redis.call('ZCOUNT', uk(name), '-inf', '(' .. fmt(w.unknown_leave))
    if k > before then
      if k <= before + w.unknown then return w.unknown_leave end
      k = k - w.unknown
    end
  end
  return kth_leave(name, k) or w.unknown_leave
end
local function settle_unit(name, member, leave)
  if redis.call('SREM', pk(name), member) == 1 and leave then
    redis.call('ZADD', uk(name), 'XX', leave, member)
  end
end
local function wake_one()  -- a slot freed: one search blocked on the scope's wake list goes on
  redis.call('LPUSH', P .. 'wake:' .. PS, '1')
  redis.call('LTRIM', P .. 'wake:' .. PS, 0, 63)
  redis.call('PEXPIRE', P .. 'wake:' .. PS, 60000)
end
local function remove_unit(name, member)
  redis.call('ZREM', uk(name), member)
  redis.call('SREM', pk(name), member)
end
local function expire(now, dead, windows)
  -- _logic.reserve step 1: reservations whose lease lapsed or whose holder is dead end (their units stay
  -- counted); returns the live ones that hold a slot, as {holder, lease_until}
  local held = redis.call('HGETALL', HK)
  local holding = {}
  for j = 1, #held, 2 do
    local f = split(held[j + 1])
    if tonumber(f[2]) <= now or dead[f[1]] then
      redis.call('HDEL', HK, held[j])
      for _, w in ipairs(windows) do settle_unit(w.name, held[j], nil) end
    elseif f[3] == '1' then
      holding[#holding + 1] = {holder = f[1], lease_until = tonumber(f[2])}
    end
  end
  return holding
end
local function reserve_now(now, token, holder, lease_until, slots, take_slot, trust, dead, windows)
  -- _logic.reserve; returns the reply: {'ok', token}, {'stale', window} or
  -- {'refused', kind, until, reason, window, holders}
  redis.call('SADD', P .. 'scopes', PS)
  -- 1. expire lapsed or dead reservations: their units stay counted, their slot frees
  local holding = expire(now, dead, windows)
  -- 2. cooldown (told after the windows: a spent window that frees later is the longer wait)
  local scope = redis.call('HMGET', SK, 'cooldown_until', 'cooldown_reason', 'cooldown_kind', 'concurrency')
  local cooldown = num(scope[1]) or 0
  local cooling = nil
  if cooldown > now then
    local kind = scope[3]
    if kind ~= 'busy' and kind ~= 'quota' then kind = 'rate' end
    cooling = {'refused', kind, cooldown, scope[2] or '', '', ''}
  end
  -- 3, 4. windows
  local best, stale = nil, nil
  for _, win in ipairs(windows) do
    local w = load_window(win.name)
    purge(win.name, w, now)
    save_window(win.name, w)
    local kind = 'quota'
    if win.kind == 'rate' then kind = 'rate' end
    if w.blocked_until > now then
      if not best or w.blocked_until > best[3] then
        best = {'refused', kind, w.blocked_until, 'spent', win.name, ''}
      end
    else
      local limit = w.limit or win.limit
      if limit then
        local used = redis.call('ZCARD', uk(win.name)) + w.unknown
        local recount = win.reported and not trust and w.truth_at and now - w.truth_at > RECOUNT_US
        if used + 1 > limit and recount then
          stale = win.name  -- _logic: spent by a count older than RECOUNT_US; the limit may have been raised
        elseif used + 1 > limit then
          local untill = kth(win.name, w, used - limit + 1)
          if not best or untill > best[3] then
            local reason = used .. ' of ' .. limit .. ' used'
            if w.limit and not w.declared and w.limit ~= win.limit then
              reason = "none left by the upstream's count and the searches since"
            end
            best = {'refused', kind, untill, reason, win.name, ''}
          end
        elseif win.reported and not trust and w.freed > 0 and used + 1 + w.freed > limit then
          stale = win.name
        end
      end
    end
  end
  if cooling and not (best and best[3] > cooldown) then return cooling end
  if best then return best end
  if stale then return {'stale', stale} end
  -- 5. concurrency
  if take_slot then
    local limit = num(scope[4]) or slots
    if #holding >= limit then
      local first, names = nil, {}
      for _, h in ipairs(holding) do
        if not first or h.lease_until < first then first = h.lease_until end
        names[#names + 1] = h.holder
      end
      local reason = #holding .. ' of ' .. limit .. ' slots held'
      return {'refused', 'concurrency', first, reason, '', table.concat(names, ' ')}
    end
  end
  -- 6. admitted
  local slot = '0'
  if take_slot then slot = '1' end
  redis.call('HSET', HK, token, holder .. '|' .. fmt(lease_until) .. '|' .. slot .. '|' .. fmt(now))
  for _, win in ipairs(windows) do
    redis.call('ZADD', uk(win.name), win.leave, token)
    redis.call('SADD', pk(win.name), token)
  end
  return {'ok', token}
end
local QK, QR = P .. 'q:' .. PS, P .. 'qr:' .. PS
local function unqueue(token)  -- the search no longer waits in the queue
  if redis.call('HDEL', QR, token) == 1 then redis.call('LREM', QK, 1, token) end
end
local function grant_first(now)
  -- A slot is free: reserve it for the search queued first (its nap then returns the ticket without
  -- asking again); true if one was handed it. A queued search refused for another reason (a window spent
  -- meanwhile, a cooldown, an estimate to confirm) is woken to ask itself, and keeps its place.
  for _ = 1, 64 do
    local token = redis.call('LPOP', QK)
    if not token then break end
    local raw = redis.call('HGET', QR, token)
    redis.call('HDEL', QR, token)
    if raw then
      local r = cjson.decode(raw)
      if r.valid_until > now then
        local windows = {}
        for _, w in ipairs(r.windows) do
          local leave = w.leave
          if w.span > 0 then leave = now + w.span end
          windows[#windows + 1] = {name = w.name, kind = w.kind, counts = w.counts, limit = num(w.limit),
            reported = w.reported, leave = leave}
        end
        local reply = reserve_now(now, token, r.holder, now + r.lease, r.slots, true, r.trust, {}, windows)
        local GK = P .. 'g:' .. PS .. ':' .. token
        local ok = reply[1] == 'ok'
        redis.call('RPUSH', GK, ok and fmt(now) or '')  -- the instant reserved, or '' to ask itself
        redis.call('PEXPIRE', GK, 60000)
        if ok then return true end
        redis.call('LPUSH', QK, token)  -- refused: it keeps its place
        redis.call('HSET', QR, token, raw)
        redis.call('PEXPIRE', QK, 60000)
        redis.call('PEXPIRE', QR, 60000)
        return false
      end
    end
  end
  return false
end
local function grant_or_wake(now)
  -- A slot freed: to the search queued first, else wake one search blocked on the scope's wake list.
  if not grant_first(now) then wake_one() end
end
"""
)

RESERVE = (
    _COMMON
    + r"""
-- ARGV: ps, now, token, holder, lease_until, slots, take_slot, trust, n_dead, dead..., n_windows,
--       (name, kind, counts, limit, reported, leave)..., queue
-- queue: '' or the search as JSON, to queue it for a slot handed over directly when one is refused
local now, token, holder = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local lease_until, slots = tonumber(ARGV[5]), tonumber(ARGV[6])
local take_slot, trust = ARGV[7] == '1', ARGV[8] == '1'
local dead, i = {}, 10
for _ = 1, tonumber(ARGV[9]) do dead[ARGV[i]] = true; i = i + 1 end
local windows = {}
for _ = 1, tonumber(ARGV[i]) do
  windows[#windows + 1] = {name = ARGV[i + 1], kind = ARGV[i + 2], counts = ARGV[i + 3],
    limit = num(ARGV[i + 4]), reported = ARGV[i + 5] == '1', leave = tonumber(ARGV[i + 6])}
  i = i + 6
end
local queue = ARGV[i + 1] or ''
local function granted()  -- a queued search handed a freed slot: the reservation as made then
  local raw = redis.call('HGET', HK, token)
  if not raw or tonumber(split(raw)[2]) <= now then return nil end
  unqueue(token)
  redis.call('DEL', P .. 'g:' .. PS .. ':' .. token)
  local f = split(raw)
  return {'ok', token, f[2], f[4]}
end
local handed = granted()
if handed then return handed end
if take_slot and redis.call('LLEN', QK) > 0 then
  -- Slots freed without a settle or free (a lapsed lease, a holder known dead) go to the searches queued
  -- first, as a settle would have handed them: a search asking now does not overtake the queue.
  local free = (num(redis.call('HGET', SK, 'concurrency')) or slots) - #expire(now, dead, windows)
  while free > 0 and grant_first(now) do free = free - 1 end
  handed = granted()  -- this search may have been the first in the queue
  if handed then return handed end
end
local reply = reserve_now(now, token, holder, lease_until, slots, take_slot, trust, dead, windows)
if reply[1] == 'refused' and reply[2] == 'concurrency' and queue ~= '' then
  if redis.call('HSET', QR, token, queue) == 1 then redis.call('RPUSH', QK, token) end
  redis.call('PEXPIRE', QK, 60000)
  redis.call('PEXPIRE', QR, 60000)
  reply[7] = 'queued'
else
  unqueue(token)
end
return reply
"""
)

SETTLE = (
    _COMMON
    + r"""
-- ARGV: ps, now, token, outcome, busy, busy_jitter, concurrency, priority, cooldown_until, cooldown_reason,
--       cooldown_kind, n_windows, (name, counts, leave)..., n_truths,
--       (window, observed_at, limit, used, remaining, unknown_leave, resets_at, source, since_leave)...,
--       n_blocks,
--       (window, until)...
local now, token, outcome, busy = tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local busy_jitter = tonumber(ARGV[6])
redis.call('SADD', P .. 'scopes', PS)
local held_raw = redis.call('HGET', HK, token)
local was_held = redis.call('HDEL', HK, token) == 1
local freed_slot = was_held and split(held_raw)[3] == '1'
do  -- _logic.settle: the other reservations whose lease lapsed end first, counted as settled
  local windows = {}
  for j = 13, 12 + 3 * tonumber(ARGV[12]), 3 do windows[#windows + 1] = {name = ARGV[j]} end
  expire(now, {}, windows)
end
local i = 13
local counted = {}  -- _logic._kept: the windows where the upstream counted this search
for _ = 1, tonumber(ARGV[12]) do
  local name, counts, leave = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local keep = outcome == 'charged' or (outcome == 'uncharged' and counts == 'requests')
  counted[name] = keep
  if not keep then remove_unit(name, token) elseif was_held then settle_unit(name, token, leave) end
  i = i + 3
end
for _ = 1, tonumber(ARGV[i]) do
  local name, observed = ARGV[i + 1], tonumber(ARGV[i + 2])
  local limit, used, remaining = num(ARGV[i + 3]), num(ARGV[i + 4]), num(ARGV[i + 5])
  local unknown_leave, resets_at, source = tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7]), ARGV[i + 8]
  local since_leave = ARGV[i + 9]
  i = i + 9
  local w = load_window(name)
  if not (w.truth_at and observed < w.truth_at and w.truth_at <= now + CLOCK_SKEW_US) then
    purge_units(name, observed)
    local settled = redis.call('ZCARD', uk(name)) - redis.call('SCARD', pk(name))
    if limit then w.limit = limit; w.declared = limit end
    if used == nil and remaining ~= nil then
      if w.declared then
        used = math.max(w.declared - remaining, 0)
      else
        if settled > 0 or remaining > 0 then used = settled else used = 1 end
        w.limit = used + remaining
      end
    end
    if used ~= nil then
      if used >= settled then
        w.unknown, w.unknown_leave = used - settled, unknown_leave
      else
        local drop, members = settled - used, redis.call('ZRANGE', uk(name), 0, -1)
        if since_leave ~= '0' then  -- _logic._missing: only units settled before the search set out
          local earlier = redis.call('ZCOUNT', uk(name), '-inf', '(' .. since_leave)
          for _, member in ipairs(redis.call('SMEMBERS', pk(name))) do
            local score = redis.call('ZSCORE', uk(name), member)
            if score and tonumber(score) < tonumber(since_leave) then earlier = earlier - 1 end
          end
          local before = used
          if counted[name] then before = math.max(used - 1, 0) end
          drop = math.min(drop, math.max(earlier - before, 0))
        end
        for _, member in ipairs(members) do
          if drop == 0 then break end
          if redis.call('SISMEMBER', pk(name), member) == 0 then
            redis.call('ZREM', uk(name), member)
            drop = drop - 1
          end
        end
        w.unknown = 0
      end
      w.truth_at, w.source, w.freed, w.blocked_until, w.resets_at = observed, source, 0, 0, resets_at
    end
    save_window(name, w)
  end
end
i = i + 1
if ARGV[7] ~= '' then redis.call('HSET', SK, 'concurrency', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', SK, 'priority', ARGV[8]) end
local function cool(untill, reason, kind)
  local current = num(redis.call('HGET', SK, 'cooldown_until')) or 0
  if untill > current then
    redis.call('HSET', SK, 'cooldown_until', fmt(untill), 'cooldown_reason', reason, 'cooldown_kind', kind)
  end
end
if outcome == 'charged' and busy == '' then redis.call('HSET', SK, 'busy_streak', 0) end
if busy ~= '' then
  local streak = redis.call('HINCRBY', SK, 'busy_streak', 1)
  local seconds = math.min(0.5 * 2 ^ math.max(streak - 1, 0), 30) * busy_jitter
  cool(now + math.floor(seconds * 1000000), busy, 'busy')
end
if ARGV[9] ~= '' then cool(tonumber(ARGV[9]), ARGV[10], ARGV[11]) end
for _ = 1, tonumber(ARGV[i]) do
  local name, untill = ARGV[i + 1], tonumber(ARGV[i + 2])
  local w = load_window(name)
  if untill > w.blocked_until then w.blocked_until = untill end
  save_window(name, w)
  i = i + 2
end
if not freed_slot then return 0 end  -- no slot freed (handed over already): wake nobody
grant_or_wake(now)
return 1
"""
)

FREE = (
    _COMMON
    + r"""
-- ARGV: ps, token, now. _logic.free_slot: the reservation gives up its slot, its units stay pending.
local raw = redis.call('HGET', HK, ARGV[2])
if not raw then return 0 end
local f = split(raw)
if f[3] ~= '1' then return 0 end
redis.call('HSET', HK, ARGV[2], f[1] .. '|' .. f[2] .. '|0|' .. f[4])
grant_or_wake(tonumber(ARGV[3]))
return 1
"""
)

WITHDRAW = (
    _COMMON
    + r"""
-- ARGV: ps, token, now. A queued search stops waiting: out of the queue, and a slot reserved for it that
-- it never took is given up as unsent (its units go, the slot goes to the next search). 1 if it had one.
local token, now = ARGV[2], tonumber(ARGV[3])
unqueue(token)
redis.call('DEL', P .. 'g:' .. PS .. ':' .. token)
local raw = redis.call('HGET', HK, token)
if not raw then return 0 end
redis.call('HDEL', HK, token)
for _, name in ipairs(redis.call('HKEYS', WK)) do remove_unit(name, token) end
if split(raw)[3] == '1' then grant_or_wake(now) end
return 1
"""
)

RENEW = (
    _COMMON
    + r"""
-- ARGV: ps, token, lease_until, holder (empty: keep it)
local raw = redis.call('HGET', HK, ARGV[2])
if not raw then return 0 end
local f = split(raw)
local holder = f[1]
if ARGV[4] and ARGV[4] ~= '' then holder = ARGV[4] end
redis.call('HSET', HK, ARGV[2], holder .. '|' .. ARGV[3] .. '|' .. f[3] .. '|' .. f[4])
return 1
"""
)

INSPECT = (
    _COMMON
    + r"""
-- ARGV: ps, now, n_windows, (name, limit)...; returns scope fields, then per window 9 values
local now = tonumber(ARGV[2])
local defaults, names, seen = {}, {}, {}
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  defaults[ARGV[i]] = num(ARGV[i + 1])
  if not seen[ARGV[i]] then names[#names + 1] = ARGV[i]; seen[ARGV[i]] = true end
  i = i + 2
end
for _, name in ipairs(redis.call('HKEYS', WK)) do
  if not seen[name] then names[#names + 1] = name; seen[name] = true end
end
table.sort(names)
local scope = redis.call('HMGET', SK, 'cooldown_until', 'cooldown_reason', 'concurrency', 'priority')
local held = 0
local rows = redis.call('HVALS', HK)
for _, raw in ipairs(rows) do if tonumber(split(raw)[2]) > now then held = held + 1 end end
local out = {fmt(num(scope[1]) or 0), scope[2] or '', scope[3] or '', scope[4] or '', held}
for _, name in ipairs(names) do
  local w = load_window(name)
  purge(name, w, now)
  save_window(name, w)
  local limit = w.limit or defaults[name]
  local used = redis.call('ZCARD', uk(name)) + w.unknown
  local spent = ''
  if w.blocked_until > now then
    spent = fmt(w.blocked_until)
  elseif limit and used >= limit then
    spent = fmt(kth(name, w, used - limit + 1))
  end
  local nxt = ''
  if used > 0 then nxt = fmt(kth(name, w, 1)) end
  for _, v in ipairs({name, fmt(limit), fmt(w.declared), used, nxt, spent, fmt(w.truth_at), w.source,
      fmt(w.blocked_until)}) do
    out[#out + 1] = v
  end
end
return out
"""
)
