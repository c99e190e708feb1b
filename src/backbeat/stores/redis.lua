-- backbeat's Redis store: every step of the store contract is one call of this script
-- (ARGV[1] the step, ARGV[2] the key prefix with its hash tag, e.g. "{backbeat}"), so
-- each step is atomic. Layout (P = the prefix):
--   P:t:<id>            hash: the task (fields as in the SQLite table)
--   P:ids               zset, score 0: every id (ids sort by creation time)
--   P:queues            set: queue names
--   P:s:<state>:<queue> zset per state: pending (held and pending, score due_at),
--                       running (score lease_until), succeeded/failed/cancelled
--                       (score finished_at)
--   P:held, P:delayed   zsets: written-ahead tasks by hold, waiting tasks by due time
--   P:x:<queue>:<prio>  stream of runnable task ids, consumer group "backbeat"
--   P:streams           zset: "<queue>\t<prio>" by priority (the claim order)
--   P:d:<id>            set: tasks waiting for this one;  P:k:<key>: a live key's task
--   P:w, P:we           hash and zset: worker heartbeats and their expiry
--   P:bell              stream: rung when a task is delayed (idle workers wake, re-time)
--   P:gates:<queue>     zset: lines of gated tasks by when to look at them (Redis's clock)
--   P:gl:<line>         zset: a line's waiting tasks, score -priority, member due..seq..id
--   P:gr:<gate>, P:gh:<gate>  a rate gate's starts (zset by time), a concurrency gate's
--                       running tasks (set); see `take_gated`
--   P:made              string: a token `open` leaves; gone, the data was flushed
--   P:paused            set: paused queues (their tasks are neither claimed nor started)
--   P:gused             zset: gates by their latest start (`gate_usage` reads them)
--   P:a:<id>            list: the task's attempts that did not succeed, the latest 20, each
--                       JSON [number, worker, started_at, finished_at, outcome, error, traceback]
--   P:schedules, P:sch:<name>  set of schedule names, and a hash per schedule
-- ARGV[1] may carry that token after the step ("claim <token>"): a call made for data that
-- is gone (FLUSHDB, FLUSHALL, an eviction) is refused with "GONE <the token now>".
local step, made = ARGV[1]:match('^(%S+) ?(.*)$')
local P = ARGV[2]
local GROUP = 'backbeat'
local LONGEST = 86400  -- seconds: the longest rate window (`backbeat.gates.LONGEST_WINDOW`)
local LIVE = {held = true, pending = true, running = true}
-- A schedule's fields, as `schedules` and `fire` answer them (after its name).
local SCHEDULE = {'rule', 'last_tick', 'last_task', 'note', 'paused', 'updated_at'}

if made ~= '' and step ~= 'open' then
  local now_made = redis.call('GET', P .. ':made')
  if now_made ~= made then return redis.error_reply('GONE ' .. (now_made or '-')) end
end

-- Redis's own clock, in seconds (for what hosts with different clocks compare).
local function server_now()
  local time = redis.call('TIME')
  return tonumber(time[1]) + tonumber(time[2]) / 1000000
end

-- What a reader is shown of a task stored in `state`: mirrors `shown_state` in
-- backbeat/stores/base.py (held is pending; pending not yet due is scheduled), here so that
-- `list` and `search` filter in the script, and `counts` counts the same way.
local function shown_state(state, due, now)
  if state == 'held' or state == 'pending' then
    return (tonumber(due) or 0) > now and 'scheduled' or 'pending'
  end
  return state
end

local function tk(id) return P .. ':t:' .. id end
local function sk(state, q)
  if state == 'held' then state = 'pending' end
  return P .. ':s:' .. state .. ':' .. q
end

local function stream_of(q, prio)
  local member = q .. '\t' .. prio
  local key = P .. ':x:' .. q .. ':' .. prio
  if not redis.call('ZSCORE', P .. ':streams', member) then
    redis.pcall('XGROUP', 'CREATE', key, GROUP, '0', 'MKSTREAM')
    redis.call('ZADD', P .. ':streams', prio, member)
  end
  return key
end

local bury  -- (below) dead-letters a task whose record cannot be read

-- A pending task becomes runnable: into its stream if due and free of earlier tasks.
local into_line  -- (below) a due gated task waits in its line, not in a stream

local function push(id, now)
  local t = tk(id)
  local blocked, due, q, prio, line = unpack(redis.call('HMGET', t, 'blocked', 'due_at', 'queue',
    'priority', 'line'))
  local why = (not tonumber(blocked or '0') and 'blocked') or (not tonumber(due) and 'due_at')
    or ((q or '') == '' and 'queue') or (not tonumber(prio or '0') and 'priority')
  if why then
    bury(id, t, nil, why, now)
    return
  end
  if tonumber(blocked or '0') > 0 then return end
  if tonumber(due) > now then
    redis.call('ZADD', P .. ':delayed', due, id)
    -- Idle workers block on the streams: ring, so that they wait for this due time too.
    redis.call('XADD', P .. ':bell', 'MAXLEN', '~', 100, '*', 'due', due)
    return
  end
  redis.call('ZREM', P .. ':delayed', id)
  if line and line ~= '' then
    into_line(id, t, q, line, prio, due)
    return
  end
  local key = stream_of(q, prio)
  local entry = redis.call('XADD', key, '*', 'id', id)
  redis.call('HSET', t, 'entry', entry, 'stream', key)
end

local function drop_entry(t)
  local entry, key = unpack(redis.call('HMGET', t, 'entry', 'stream'))
  if entry and entry ~= '' then
    redis.call('XACK', key, GROUP, entry)
    redis.call('XDEL', key, entry)
    redis.call('HSET', t, 'entry', '', 'stream', '')
  end
end

-- The task reached a final state: its key is free, the tasks after it may run.
local function released(id, key, now)
  if key and key ~= '' and redis.call('GET', P .. ':k:' .. key) == id then
    redis.call('DEL', P .. ':k:' .. key)
  end
  local deps = P .. ':d:' .. id
  local waiting = redis.call('SMEMBERS', deps)
  for _, dep in ipairs(waiting) do
    local dt = tk(dep)
    if redis.call('EXISTS', dt) == 1 and redis.call('HINCRBY', dt, 'blocked', -1) <= 0 then
      if redis.call('HGET', dt, 'state') == 'pending' then push(dep, now) end
    end
  end
  if #waiting > 0 then redis.call('DEL', deps) end
end

local function finished(id, t, now)
  released(id, redis.call('HGET', t, 'key'), now)
end

local function move(id, t, q, from, to, score)
  redis.call('ZREM', sk(from, q), id)
  redis.call('ZADD', sk(to, q), score, id)
  redis.call('HSET', t, 'state', to)
end

local ungate  -- (below) out of its line, and its concurrency slot freed

-- The running attempt of a task did not succeed: kept, the latest ATTEMPTS of them, before the
-- task's fields change (its worker and start are the attempt's). `at` nil: when its lease ran
-- out (a lost attempt). Never called on the success path.
local ATTEMPTS = 20
local function log_attempt(id, t, outcome, at, error, traceback)
  local number, worker, started, lease = unpack(redis.call('HMGET', t, 'attempts', 'worker',
    'started_at', 'lease_until'))
  local key = P .. ':a:' .. id
  redis.call('RPUSH', key, cjson.encode({number or '0', worker or '', started or '',
    tostring(at or lease or ''), outcome, error or '', traceback or ''}))
  redis.call('LTRIM', key, -ATTEMPTS, -1)
end

local function finish_as(id, t, q, from, to, now)
  ungate(id, t)
  move(id, t, q, from, to, now)
  redis.call('HSET', t, 'finished_at', now, 'lease_until', '')
  drop_entry(t)
  redis.call('ZREM', P .. ':held', id)
  redis.call('ZREM', P .. ':delayed', id)
  finished(id, t, now)
end

-- Tasks dead-lettered in this call because their record cannot be read (changed or
-- broken outside backbeat): {id, name, error} each, reported by `claim`.
local buried = {}

-- Dead-letter a task whose field `why` cannot be read: at once, with an error that says so,
-- so that it strands nothing else. `q`: the queue it was found in, if known.
bury = function(id, t, q, why, now)
  local state, name, own = unpack(redis.call('HMGET', t, 'state', 'name', 'queue'))
  if not q then q = own end
  if (q or '') == '' then  -- which sets hold it is not known: take it out of every queue's
    for _, each in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
      redis.call('ZREM', sk('pending', each), id)
      redis.call('ZREM', sk('running', each), id)
    end
    q = 'default'
  end
  local error = 'its stored record cannot be read: field ' .. why .. ' is missing or '
    .. 'malformed (changed outside backbeat?); dead-lettered'
  redis.call('HSET', t, 'queue', q, 'error', error)
  if not LIVE[state or ''] then state = 'pending' end
  finish_as(id, t, q, state, 'failed', now)
  table.insert(buried, {id, name or '?', error})
end

-- The field of a task (as fetched by `take`) that cannot be read, or nil.
local function unreadable(v)
  if (v[1] or '') == '' then return 'name' end
  if (v[2] or ''):sub(1, 1) ~= '{' then return 'payload (not a JSON document)' end
  if not tonumber(v[3] or '0') then return 'attempts' end
  for i, field in pairs({[4] = 'created_at', [5] = 'retries', [6] = 'backoff',
      [7] = 'max_backoff'}) do
    if not tonumber(v[i]) then return field end
  end
  if (v[8] or '') ~= '' and not tonumber(v[8]) then return 'timeout' end
  if not tonumber(v[9] or '0') then return 'lost' end
  if (v[11] or '') == '' then return 'queue' end
  return nil
end

-- What a claim returns (ClaimedTask's fields after the id), then what `take` needs.
local TAKE = {'name', 'payload', 'attempts', 'created_at', 'retries', 'backoff',
  'max_backoff', 'timeout', 'lost', 'error', 'queue', 'state', 'entry', 'stream'}

-- Lease a task to `worker`; nil (which table.insert ignores) and the task dead-lettered
-- if its record cannot be read.
local function take(id, lost, now, lease, worker, found_in)
  local t = tk(id)
  local v = redis.call('HMGET', t, unpack(TAKE))
  local why = unreadable(v)
  if why then
    bury(id, t, found_in, why, now)
    return nil
  end
  local attempts = tonumber(v[3] or '0') + 1
  local lost_total = tonumber(v[9] or '0') + lost
  if lost > 0 then log_attempt(id, t, 'lost') end
  local q, state, entry = v[11], v[12], v[13]
  local until_ = now + lease
  redis.call('HSET', t, 'state', 'running', 'attempts', attempts, 'lost', lost_total,
    'started_at', now, 'lease_until', until_, 'worker', worker)
  redis.call('ZREM', sk(state, q), id)
  redis.call('ZADD', sk('running', q), until_, id)
  if state == 'held' then redis.call('ZREM', P .. ':held', id) end
  if entry and entry ~= '' then
    redis.pcall('XCLAIM', v[14], GROUP, worker, 0, entry, 'JUSTID')
  end
  return {id, v[1], v[2], tostring(attempts), v[4], v[5], v[6], v[7], v[8] or '',
    tostring(lost_total), v[10] or '', q}
end

-- Gates. A gated task (field `line`: its queue and gates) never enters a stream: once due
-- and free of earlier tasks it waits in its line, and the claim takes the first of each
-- line whose gates are open (`take_gated`), on Redis's clock. A rate gate keeps its starts
-- for one window (open while fewer than `rlimit` started in the last `rwindow` seconds);
-- a concurrency gate, the ids of its running tasks (open while fewer than `cmax`).
local RECHECK = 1.0  -- a full concurrency gate's line is looked at again after this at the latest

local function gates_key(q) return P .. ':gates:' .. q end

into_line = function(id, t, q, line, prio, due)
  -- Due time, then the order tasks were written (ids made in one millisecond are unordered).
  local seq = redis.call('HGET', t, 'seq')
  if not seq then
    seq = redis.call('INCR', P .. ':gseq')
    redis.call('HSET', t, 'seq', seq)
  end
  local member = string.format('%017.6f%015d', tonumber(due), tonumber(seq)) .. id
  redis.call('ZADD', P .. ':gl:' .. line, -tonumber(prio), member)
  redis.call('HSET', t, 'lm', member)
  redis.call('ZADD', gates_key(q), 'LT', 0, line)  -- look at it now
  -- Idle workers block on the streams, which gated tasks never enter: ring for them.
  redis.call('XADD', P .. ':bell', 'MAXLEN', '~', 100, '*', 'due', due)
end

-- A slot of the line's gate may be free: look at the line now, if tasks wait in it.
local function look_now(q, line)
  if line and line ~= '' and redis.call('EXISTS', P .. ':gl:' .. line) == 1 then
    redis.call('ZADD', gates_key(q), 'LT', 0, line)
    redis.call('XADD', P .. ':bell', 'MAXLEN', '~', 100, '*', 'due', 0)
  end
end

ungate = function(id, t)
  local line, member, cgate, q = unpack(redis.call('HMGET', t, 'line', 'lm', 'cgate', 'queue'))
  if not line or line == '' then return end
  if member and member ~= '' then
    redis.call('ZREM', P .. ':gl:' .. line, member)
    redis.call('HSET', t, 'lm', '')
  end
  if cgate and cgate ~= '' and redis.call('SREM', P .. ':gh:' .. cgate, id) == 1 then
    look_now(q, line)
  end
end

-- The gate field of a task that cannot be read (changed outside backbeat), or nil.
local function unreadable_gates(t)
  local rgate, rlimit, rwindow, cgate, cmax = unpack(redis.call('HMGET', t, 'rgate', 'rlimit',
    'rwindow', 'cgate', 'cmax'))
  if rgate and rgate ~= '' and not ((tonumber(rlimit) or 0) >= 1 and (tonumber(rwindow) or 0) > 0) then
    return 'rlimit/rwindow'
  end
  if cgate and cgate ~= '' and not ((tonumber(cmax) or 0) >= 1) then return 'cmax' end
  return nil
end

-- How many of a line may start now, by the gates of its first task, and when to look again.
local function room_of(head, room, snow)
  local rgate, rlimit, rwindow, cgate, cmax = unpack(redis.call('HMGET', tk(head), 'rgate',
    'rlimit', 'rwindow', 'cgate', 'cmax'))
  local look = snow
  if rgate and rgate ~= '' then
    local log, window, limit = P .. ':gr:' .. rgate, tonumber(rwindow), tonumber(rlimit)
    redis.call('ZREMRANGEBYSCORE', log, '-inf', snow - window)
    local count = redis.call('ZCARD', log)
    room = math.min(room, limit - count)
    if count + math.max(room, 0) >= limit then  -- closed once these start: open again then
      local oldest = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')[2]
      look = math.max(look, (oldest and tonumber(oldest) or snow) + window)
    end
  end
  if cgate and cgate ~= '' then
    local holders, max = P .. ':gh:' .. cgate, tonumber(cmax)
    if redis.call('SCARD', holders) >= max then  -- forget any that no longer run
      for _, holder in ipairs(redis.call('SMEMBERS', holders)) do
        if redis.call('HGET', tk(holder), 'state') ~= 'running' then
          redis.call('SREM', holders, holder)
        end
      end
    end
    local held = redis.call('SCARD', holders)
    room = math.min(room, max - held)
    if held + math.max(room, 0) >= max then look = math.max(look, snow + RECHECK) end
  end
  return math.max(room, 0), look, rgate or '', rwindow, cgate or ''
end

-- Start the first tasks of the open lines of these queues, up to `limit` in all.
local function take_gated(queues, now, lease, worker, limit, claimed)
  local snow = server_now()
  for _, q in ipairs(queues) do
    local gates = gates_key(q)
    for _, line in ipairs(redis.call('ZRANGEBYSCORE', gates, '-inf', snow)) do
      if #claimed >= limit then return end
      local key = P .. ':gl:' .. line
      local members = redis.call('ZRANGE', key, 0, limit - #claimed - 1)
      local why = #members > 0 and unreadable_gates(tk(members[1]:sub(33)))
      if #members == 0 then
        redis.call('ZREM', gates, line)  -- empty: `into_line` adds it again
      elseif why then  -- it alone is dead-lettered; the line goes on at the next claim
        redis.call('ZREM', key, members[1])
        bury(members[1]:sub(33), tk(members[1]:sub(33)), q, why, now)
      else
        local room, look, rgate, rwindow, cgate = room_of(members[1]:sub(33), limit - #claimed, snow)
        if room > 0 then  -- for `gate_usage`: which gates were used lately
          if rgate ~= '' then redis.call('ZADD', P .. ':gused', snow, rgate) end
          if cgate ~= '' then redis.call('ZADD', P .. ':gused', snow, cgate) end
        end
        for i = 1, math.min(room, #members) do
          local id = members[i]:sub(33)
          redis.call('ZREM', key, members[i])
          redis.call('HSET', tk(id), 'lm', '')
          local row = take(id, 0, now, lease, worker, q)
          if row then
            table.insert(claimed, row)
            if rgate ~= '' then
              local log = P .. ':gr:' .. rgate
              redis.call('ZADD', log, snow, id .. ':' .. row[4])
              redis.call('PEXPIRE', log, math.ceil((tonumber(rwindow) + 1) * 1000))
            end
            if cgate ~= '' then redis.call('SADD', P .. ':gh:' .. cgate, id) end
          end
        end
        if redis.call('EXISTS', key) == 0 then
          redis.call('ZREM', gates, line)
        else  -- served lines go to the back, closed ones wait for their gate
          redis.call('ZADD', gates, look, line)
        end
      end
    end
  end
end

-- When a line is to be looked at next, after now, in seconds from now (for `wait`); '' if none.
local function next_look()
  local snow, soonest = server_now(), nil
  for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
    local first = redis.call('ZRANGEBYSCORE', gates_key(q), '(' .. snow, '+inf', 'WITHSCORES',
      'LIMIT', 0, 1)
    if #first > 0 and (not soonest or tonumber(first[2]) < soonest) then
      soonest = tonumber(first[2])
    end
  end
  return soonest and tostring(soonest - snow) or ''
end

local function current(id, attempt)
  local t = tk(id)
  local state, attempts = unpack(redis.call('HMGET', t, 'state', 'attempts'))
  return state == 'running' and attempts == attempt, t
end

-- How many tasks are held, pending or running (what a flush would lose).
local function unfinished()
  local count = 0
  for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
    count = count + redis.call('ZCARD', sk('pending', q)) + redis.call('ZCARD', sk('running', q))
  end
  return count
end

local function queues_of(list)
  if #list > 0 then return list end
  return redis.call('SMEMBERS', P .. ':queues')
end

-- The paused queues as a set, or nil when none is (the usual case: one read of an empty set).
local function paused_set()
  local members = redis.call('SMEMBERS', P .. ':paused')
  if #members == 0 then return nil end
  local set = {}
  for _, q in ipairs(members) do set[q] = true end
  return set
end

local function stream_ids()
  local seen, keys = {}, {}
  for _, member in ipairs(redis.call('ZRANGE', P .. ':streams', 0, -1)) do
    local q, prio = member:match('^(.*)\t(.*)$')
    table.insert(keys, P .. ':x:' .. q .. ':' .. prio)
  end
  if redis.call('EXISTS', P .. ':bell') == 1 then table.insert(keys, P .. ':bell') end
  for _, key in ipairs(keys) do
    local info = redis.pcall('XINFO', 'STREAM', key)
    if info.err then info = {} end  -- deleted (outside backbeat): the next claim restores it
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then table.insert(seen, key); table.insert(seen, info[i + 1]) end
    end
  end
  return seen
end

-- A stream (or its consumer group) was deleted outside backbeat: make it again, and put
-- back the pending tasks whose entries went with it.
local function restore_stream(key, q, now)
  redis.pcall('XGROUP', 'CREATE', key, GROUP, '0', 'MKSTREAM')
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', sk('pending', q), '-inf', now)) do
    local t = tk(id)
    local state, stream, entry = unpack(redis.call('HMGET', t, 'state', 'stream', 'entry'))
    if state == 'pending' and stream == key and entry ~= ''
        and #redis.call('XRANGE', key, entry, entry) == 0 then
      redis.call('HSET', t, 'entry', '', 'stream', '')
      push(id, now)
    end
  end
end

-- The fields of a task as `enqueue` and `fire_schedule` receive it, after its id.
local NEW = {'name', 'payload', 'retries', 'backoff', 'max_backoff', 'timeout', 'created_at',
  'due_at', 'after', 'held_until', 'queue', 'priority', 'key', 'rgate', 'rlimit', 'rwindow',
  'cgate', 'cmax', 'line'}

-- Store a new task (a list: its id, then the NEW fields as strings); returns its id, or that
-- of the live task that has its key already (then nothing is added).
local function add_task(row, now)
  local id = row[1]
  local v = {}
  for i = 1, #NEW do v[NEW[i]] = row[i + 1] or '' end
  local existing = v.key ~= '' and redis.call('GET', P .. ':k:' .. v.key)
  if existing and LIVE[redis.call('HGET', tk(existing), 'state') or ''] then
    return existing
  end
  local t = tk(id)
  local held = v.held_until ~= ''
  redis.call('HSET', t, 'name', v.name, 'payload', v.payload, 'retries', v.retries,
    'backoff', v.backoff, 'max_backoff', v.max_backoff, 'timeout', v.timeout,
    'created_at', v.created_at, 'due_at', v.due_at, 'after', v.after,
    'held_until', v.held_until, 'lease_until', v.held_until, 'queue', v.queue,
    'priority', v.priority, 'key', v.key, 'state', held and 'held' or 'pending',
    'attempts', 0, 'lost', 0, 'blocked', 0, 'cancel_requested', 0)
  if v.line ~= '' then
    redis.call('HSET', t, 'rgate', v.rgate, 'rlimit', v.rlimit, 'rwindow', v.rwindow,
      'cgate', v.cgate, 'cmax', v.cmax, 'line', v.line)
  end
  redis.call('ZADD', P .. ':ids', 0, id)
  redis.call('SADD', P .. ':queues', v.queue)
  redis.call('ZADD', sk('pending', v.queue), v.due_at, id)
  if v.key ~= '' then redis.call('SET', P .. ':k:' .. v.key, id) end
  if v.after ~= '' then
    local ok, before = pcall(cjson.decode, v.after)
    if ok and type(before) == 'table' then
      for _, b in ipairs(before) do
        if LIVE[redis.call('HGET', tk(b), 'state') or ''] then
          redis.call('HINCRBY', t, 'blocked', 1)
          redis.call('SADD', P .. ':d:' .. b, id)
        end
      end
    end
  end
  if held then redis.call('ZADD', P .. ':held', v.held_until, id) else push(id, now) end
  return id
end

if step == 'enqueue' then
  local now, groups = tonumber(ARGV[3]), tonumber(ARGV[4])
  -- On Redis's clock, when the writer stops waiting for this write (it answers 503, or
  -- raises): a write that arrives later, after a freeze or a stall, stores nothing.
  local clock = redis.call('TIME')  -- returned, for the writer to measure its offset
  local deadline = tonumber(ARGV[5 + groups] or '')
  if deadline then
    local late = tonumber(clock[1]) + tonumber(clock[2]) / 1000000 - deadline
    if late > 0 then return {'LATE', tostring(late), clock} end
  end
  local out = {}
  for g = 1, groups do
    -- A group: one caller's tasks, as one JSON list of [id, F...] lists of strings.
    local rows = cjson.decode(ARGV[4 + g])
    local ids, seen, duplicate = {}, {}, nil
    for _, row in ipairs(rows) do
      if seen[row[1]] or redis.call('EXISTS', tk(row[1])) == 1 then duplicate = row[1] end
      seen[row[1]] = true
    end
    if duplicate then  -- `DuplicateTask`: the group stores nothing
      table.insert(out, duplicate)
    else
      for _, row in ipairs(rows) do table.insert(ids, add_task(row, now)) end
      table.insert(out, ids)
    end
  end
  table.insert(out, unfinished())
  table.insert(out, clock)
  return out

elseif step == 'activate' or step == 'activate_and_claim' then
  local now, lease, worker, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
  local claimed = {}
  local paused = step == 'activate_and_claim' and paused_set() or {}
  for _, id in ipairs(cjson.decode(ARGV[7])) do
    local t = tk(id)
    local state, blocked, due, after, line, q = unpack(redis.call('HMGET', t, 'state', 'blocked',
      'due_at', 'after', 'line', 'queue'))
    if state == 'held' then
      if step == 'activate_and_claim' and #claimed < limit and tonumber(blocked) == 0 and after == ''
          and tonumber(due) <= now and (line or '') == '' and not paused[q] then
        table.insert(claimed, take(id, 0, now, lease, worker, nil))
      else
        redis.call('ZREM', P .. ':held', id)
        redis.call('HSET', t, 'state', 'pending', 'lease_until', '')
        push(id, now)
      end
    end
  end
  return claimed

elseif step == 'claim' then
  local now, lease, worker = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
  local limit, max_lost, alone_first = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8] == '1'
  local gated_share = tonumber(ARGV[9])  -- of `limit`: the rest is other tasks' first
  local lost_error = ARGV[10]  -- written on a task dead-lettered at `max_lost` losses
  local wanted = {}
  for i = 11, #ARGV do table.insert(wanted, ARGV[i]) end
  -- Held past their hold (the process that wrote them died), and delays that are due.
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':held', '-inf', now, 'LIMIT', 0, 1000)) do
    redis.call('ZREM', P .. ':held', id)
    if redis.call('EXISTS', tk(id)) == 1 then
      redis.call('HSET', tk(id), 'state', 'pending', 'lease_until', '')
      push(id, now)
    end
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':delayed', '-inf', now, 'LIMIT', 0, 1000)) do
    redis.call('ZREM', P .. ':delayed', id)
    if redis.call('HGET', tk(id), 'state') == 'pending' then push(id, now) end
  end
  local queues = queues_of(wanted)
  local paused = paused_set()
  local open_queues = queues  -- those not paused: only their tasks are claimed
  if paused then
    open_queues = {}
    for _, q in ipairs(queues) do
      if not paused[q] then table.insert(open_queues, q) end
    end
  end
  local dead, suspects, lost_once = {}, {}, {}
  for _, q in ipairs(queues) do
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', sk('running', q), '-inf', now)) do
      local t = tk(id)
      local cancel, lost, name, line = unpack(redis.call('HMGET', t, 'cancel_requested', 'lost',
        'name', 'line'))
      if not name and redis.call('EXISTS', t) == 0 then  -- deleted (outside backbeat)
        redis.call('ZREM', sk('running', q), id)
        table.insert(dead, {id, '?', 'its stored record was deleted (outside backbeat) while '
          .. 'it ran; nothing is left of it to run again'})
      elseif not tonumber(lost or '0') then
        bury(id, t, q, 'lost', now)
      elseif cancel == '1' then
        log_attempt(id, t, 'cancelled', nil, redis.call('HGET', t, 'error'))
        finish_as(id, t, q, 'running', 'cancelled', now)
      elseif tonumber(lost or '0') + 1 >= max_lost then
        log_attempt(id, t, 'lost', nil, lost_error)
        redis.call('HSET', t, 'lost', tonumber(lost or '0') + 1, 'error', lost_error)
        finish_as(id, t, q, 'running', 'failed', now)
        table.insert(dead, {id, name, lost_error})
      elseif line and line ~= '' then  -- a gated task waits in its line again, first
        log_attempt(id, t, 'lost')
        ungate(id, t)
        redis.call('HSET', t, 'lost', tonumber(lost or '0') + 1, 'lease_until', '', 'worker', '')
        move(id, t, q, 'running', 'pending', redis.call('HGET', t, 'due_at'))
        push(id, now)
      elseif paused and paused[q] then  -- taken over once its queue is resumed
      elseif tonumber(lost or '0') >= 1 then
        table.insert(suspects, {id, q})
      else
        table.insert(lost_once, {id, q})
      end
    end
  end
  local claimed = {}
  if alone_first and #suspects > 0 then
    table.insert(claimed, take(suspects[1][1], 1, now, lease, worker, suspects[1][2]))
    for _, each in ipairs(buried) do table.insert(dead, each) end
    return {claimed, dead, stream_ids()}
  end
  for _, lost in ipairs(lost_once) do
    if #claimed >= limit then break end
    table.insert(claimed, take(lost[1], 1, now, lease, worker, lost[2]))
  end
  local before_gated = #claimed
  take_gated(open_queues, now, lease, worker, math.min(#claimed + gated_share, limit), claimed)
  local more_gated = #claimed - before_gated >= gated_share  -- their share did not run dry
  local only = {}
  for _, q in ipairs(open_queues) do only[q] = true end
  for _, member in ipairs(redis.call('ZREVRANGE', P .. ':streams', 0, -1)) do
    if #claimed >= limit then break end
    local q, prio = member:match('^(.*)\t(.*)$')
    if only[q] then
      local key = P .. ':x:' .. q .. ':' .. prio
      local read = {'XREADGROUP', 'GROUP', GROUP, worker, 'COUNT', limit - #claimed, 'STREAMS',
        key, '>'}
      local got = redis.pcall(unpack(read))
      if type(got) == 'table' and got.err then  -- the stream or its group was deleted
        restore_stream(key, q, now)
        got = redis.call(unpack(read))
      end
      if got then
        for _, item in ipairs(got[1][2]) do
          local entry, id = item[1], item[2][2]
          local t = tk(id)
          local state, mine = unpack(redis.call('HMGET', t, 'state', 'entry'))
          if state == 'pending' and mine == entry then
            table.insert(claimed, take(id, 0, now, lease, worker, q))
          else  -- cancelled, purged or moved since it was added: only the entry is left
            redis.call('XACK', key, GROUP, entry)
            redis.call('XDEL', key, entry)
          end
        end
      end
    end
  end
  if more_gated then take_gated(open_queues, now, lease, worker, limit, claimed) end  -- what is left
  for _, each in ipairs(buried) do table.insert(dead, each) end
  return {claimed, dead, stream_ids()}

elseif step == 'renew' then
  local now, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
  local stop = {}
  for i = 5, #ARGV, 2 do
    local id = ARGV[i]
    local ok, t = current(id, ARGV[i + 1])
    if ok then
      local until_ = now + lease
      local q, cancel, worker, entry, key = unpack(redis.call('HMGET', t, 'queue',
        'cancel_requested', 'worker', 'entry', 'stream'))
      redis.call('HSET', t, 'lease_until', until_)
      redis.call('ZADD', sk('running', q), until_, id)
      if entry and entry ~= '' then
        redis.pcall('XCLAIM', key, GROUP, worker, 0, entry, 'JUSTID')
      end
      if cancel == '1' then table.insert(stop, id) end
    else
      table.insert(stop, id)
    end
  end
  return stop

elseif step == 'finish' then
  local now = tonumber(ARGV[3])
  local kept = {}
  -- One JSON list of [id, attempt, state, result, error, traceback, retry_at] lists.
  for _, s in ipairs(cjson.decode(ARGV[4])) do
    local id, attempt, state, result, error, trace, retry_at = unpack(s)
    local t = tk(id)
    local was, attempts, q, entry, stream, key, line = unpack(redis.call('HMGET', t, 'state',
      'attempts', 'queue', 'entry', 'stream', 'key', 'line'))
    local ok = was == 'running' and attempts == attempt
    table.insert(kept, ok and 1 or 0)
    if ok and line and line ~= '' then ungate(id, t) end
    if ok then
      if entry and entry ~= '' then
        redis.call('XACK', stream, GROUP, entry)
        redis.call('XDEL', stream, entry)
      end
      redis.call('ZREM', sk('running', q), id)
      if state == 'scheduled' or state == 'failed' then
        log_attempt(id, t, state == 'failed' and 'failed' or 'retried', now, error, trace)
      elseif state == 'cancelled' then
        log_attempt(id, t, 'cancelled', now, error ~= '' and error or redis.call('HGET', t, 'error'))
      end
      if state == 'scheduled' then  -- a retry at retry_at
        redis.call('HSET', t, 'state', 'pending', 'error', error, 'traceback', trace,
          'due_at', retry_at, 'lease_until', '', 'worker', '', 'entry', '', 'stream', '')
        redis.call('ZADD', sk('pending', q), retry_at, id)
        push(id, now)
      else
        local fields = {'state', state, 'finished_at', now, 'lease_until', '', 'entry', '',
          'stream', ''}
        if state == 'succeeded' then
          table.insert(fields, 'result'); table.insert(fields, result)
        elseif state == 'failed' then
          for _, f in ipairs({'error', error, 'traceback', trace}) do table.insert(fields, f) end
        elseif error ~= '' then
          table.insert(fields, 'error'); table.insert(fields, error)
        end
        redis.call('HSET', t, unpack(fields))
        redis.call('ZADD', sk(state, q), now, id)
        released(id, key, now)
      end
    end
  end
  return kept

elseif step == 'progress' then
  local t = tk(ARGV[3])
  if redis.call('HGET', t, 'attempts') ~= ARGV[4] then return 0 end
  redis.call('HSET', t, 'progress', ARGV[5])
  return 1

elseif step == 'release' then
  local now = tonumber(ARGV[3])
  for i = 4, #ARGV, 2 do
    local id = ARGV[i]
    local ok, t = current(id, ARGV[i + 1])
    if ok and redis.call('HGET', t, 'cancel_requested') ~= '1' then
      local q, due = unpack(redis.call('HMGET', t, 'queue', 'due_at'))
      ungate(id, t)
      drop_entry(t)
      redis.call('HINCRBY', t, 'attempts', -1)
      redis.call('HSET', t, 'lease_until', '', 'worker', '')
      move(id, t, q, 'running', 'pending', due)
      push(id, now)
    end
  end
  return 0

elseif step == 'cancel' then
  local now, reason = tonumber(ARGV[3]), ARGV[4]
  local count = 0
  for i = 5, #ARGV do
    local id = ARGV[i]
    local t = tk(id)
    local state, q = unpack(redis.call('HMGET', t, 'state', 'queue'))
    if state == 'held' or state == 'pending' then
      redis.call('HSET', t, 'error', reason)
      finish_as(id, t, q, state, 'cancelled', now)
      count = count + 1
    elseif state == 'running' then  -- its worker cancels it, told at its next renewal
      redis.call('HSET', t, 'cancel_requested', 1, 'error', reason)
      count = count + 1
    end
  end
  return count

elseif step == 'retry' then
  local now = tonumber(ARGV[3])
  local ids = {}
  if ARGV[4] == '*' then
    for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
      for _, id in ipairs(redis.call('ZRANGE', sk('failed', q), 0, -1)) do table.insert(ids, id) end
    end
  else
    for i = 4, #ARGV do table.insert(ids, ARGV[i]) end
  end
  local count = 0
  for _, id in ipairs(ids) do
    local t = tk(id)
    local state, q = unpack(redis.call('HMGET', t, 'state', 'queue'))
    if state == 'failed' then
      redis.call('HSET', t, 'attempts', 0, 'lost', 0, 'due_at', now, 'finished_at', '',
        'started_at', '', 'worker', '')
      move(id, t, q, 'failed', 'pending', now)
      push(id, now)
      count = count + 1
    end
  end
  return count

elseif step == 'purge' then
  local before, dry = ARGV[3], ARGV[4] == '1'
  local count = 0
  if not dry then  -- consumers of workers gone for an hour, with nothing pending
    for _, member in ipairs(redis.call('ZRANGE', P .. ':streams', 0, -1)) do
      local q, prio = member:match('^(.*)\t(.*)$')
      local key = P .. ':x:' .. q .. ':' .. prio
      for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', key, GROUP)) do
        local c = {}
        for i = 1, #consumer, 2 do c[consumer[i]] = consumer[i + 1] end
        if tonumber(c.pending) == 0 and tonumber(c.idle) > 3600000 then
          redis.call('XGROUP', 'DELCONSUMER', key, GROUP, c.name)
        end
      end
    end
  end
  if not dry then redis.call('ZREMRANGEBYSCORE', P .. ':gused', '-inf', server_now() - LONGEST) end
  for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
    for i = 5, #ARGV do
      local key = sk(ARGV[i], q)
      for _, id in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. before)) do
        count = count + 1
        if not dry then
          redis.call('DEL', tk(id), P .. ':d:' .. id, P .. ':a:' .. id)
          redis.call('ZREM', key, id)
          redis.call('ZREM', P .. ':ids', id)
        end
      end
    end
  end
  return count

elseif step == 'list' then
  local now, state, queue, name, limit = tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
  local cursor = ARGV[8] == '' and '+' or ('(' .. ARGV[8])
  local found, scanned = {}, 0
  while #found < limit and scanned < 100000 do
    local page = redis.call('ZREVRANGEBYLEX', P .. ':ids', cursor, '-', 'LIMIT', 0, 500)
    if #page == 0 then break end
    for _, id in ipairs(page) do
      local s, q, n, due = unpack(redis.call('HMGET', tk(id), 'state', 'queue', 'name', 'due_at'))
      if (state == '' or shown_state(s, due, now) == state) and (queue == '' or q == queue) and (name == '' or n == name) then
        table.insert(found, id)
        if #found == limit then break end
      end
    end
    scanned = scanned + #page
    cursor = '(' .. page[#page]
  end
  return found

elseif step == 'search' then
  -- One stretch of the dashboard's search (`Store.search`): ids newest first within
  -- [lowest, below), at most `chunk` looked at, until `limit` match. The source is the
  -- state's sets when they hold no more than `scan` tasks, else every id. The caller goes on
  -- from the cursor in further calls (a long scan never blocks Redis in one).
  -- Returns {cursor ('' when the source ran out), looked at, {{id, STATUS...}...}}.
  local now, state, queue, name, idp, arg, err = tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6],
    ARGV[7], ARGV[8], ARGV[9]
  local below, lowest, limit, scan = ARGV[10], ARGV[11], tonumber(ARGV[12]), tonumber(ARGV[13])
  local chunk = tonumber(ARGV[14])
  local status_fields = {}
  for i = 15, #ARGV do table.insert(status_fields, ARGV[i]) end
  -- Only the fields the filter needs are read, each task once.
  local wanted, at = {}, {}
  local function want(field) table.insert(wanted, field); at[field] = #wanted end
  if state ~= '' then want('state'); want('due_at') end
  if queue ~= '' then want('queue') end
  if name ~= '' then want('name') end
  if arg ~= '' then want('payload') end
  if err ~= '' then want('error') end
  local function matches(id)
    if idp ~= '' and id:sub(1, #idp) ~= idp then return false end
    if #wanted == 0 then return true end
    local v = redis.call('HMGET', tk(id), unpack(wanted))
    if state ~= '' and shown_state(v[at.state], v[at.due_at], now) ~= state then return false end
    return (queue == '' or v[at.queue] == queue) and (name == '' or v[at.name] == name)
      and (arg == '' or string.find(v[at.payload] or '', arg, 1, true) ~= nil)
      and (err == '' or string.find(v[at.error] or '', err, 1, true) ~= nil)
  end
  local found, scanned, cursor = {}, 0, ''
  local function look(id)  -- true: the page is done
    scanned = scanned + 1
    if matches(id) then
      local row = redis.call('HMGET', tk(id), unpack(status_fields))
      table.insert(row, 1, id)
      table.insert(found, row)
      if #found == limit then cursor = id; return true end
    end
    if scanned == chunk then cursor = id; return true end
    return false
  end
  local candidates = nil
  if state ~= '' then
    local sets, total = {}, 0
    local stored = (state == 'scheduled') and 'pending' or state
    for _, q in ipairs(queue ~= '' and {queue} or redis.call('SMEMBERS', P .. ':queues')) do
      table.insert(sets, sk(stored, q))
      total = total + redis.call('ZCARD', sk(stored, q))
    end
    if total <= scan then
      candidates = {}
      for _, key in ipairs(sets) do
        for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do
          if (below == '' or id < below) and (lowest == '' or id >= lowest) then
            table.insert(candidates, id)
          end
        end
      end
      table.sort(candidates, function(a, b) return a > b end)
    end
  end
  if candidates then
    for _, id in ipairs(candidates) do
      if look(id) then break end
    end
  else
    local top = below == '' and '+' or ('(' .. below)
    local bottom = lowest == '' and '-' or ('[' .. lowest)
    local done = false
    while not done do
      local page = redis.call('ZREVRANGEBYLEX', P .. ':ids', top, bottom, 'LIMIT', 0,
        math.min(500, chunk - scanned))
      if #page == 0 then break end
      for _, id in ipairs(page) do
        done = look(id)
        if done then break end
      end
      top = '(' .. page[#page]
    end
  end
  return {cursor, scanned, found}

elseif step == 'failure_groups' then
  -- Failed tasks grouped by name and exception (the error up to its first ': '): of the
  -- `scan` newest by id among each queue's `scan` latest failures. {name, exception, count,
  -- latest id, latest finished_at, its error} each; the caller orders them.
  local scan = tonumber(ARGV[3])
  local ids = {}
  for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
    for _, id in ipairs(redis.call('ZREVRANGE', sk('failed', q), 0, scan - 1)) do
      table.insert(ids, id)
    end
  end
  table.sort(ids, function(a, b) return a > b end)
  local groups, order = {}, {}
  for i = 1, math.min(scan, #ids) do
    local id = ids[i]
    local name, error, stamp = unpack(redis.call('HMGET', tk(id), 'name', 'error', 'finished_at'))
    error = error or ''
    local at = tonumber(stamp) or 0
    local cut = string.find(error, ': ', 1, true)
    local exception = cut and error:sub(1, cut - 1) or error
    local key = (name or '?') .. '\t' .. exception
    local g = groups[key]
    if not g then
      g = {name or '?', exception, 0, id, at, error, stamp or '0'}
      groups[key] = g
      table.insert(order, g)
    end
    g[3] = g[3] + 1
    if at > g[5] or (at == g[5] and id > g[4]) then
      g[4], g[5], g[6], g[7] = id, at, error, stamp or '0'
    end
  end
  for _, g in ipairs(order) do g[5], g[7] = g[7], nil end  -- as stored: tostring rounds
  return order

elseif step == 'oldest_due' then  -- the earliest due time of the pending tasks due now
  local now, only = tonumber(ARGV[3]), ARGV[4]
  local oldest = nil
  for _, q in ipairs(only ~= '' and {only} or redis.call('SMEMBERS', P .. ':queues')) do
    local offset = 0
    while true do  -- held tasks share the set: skipped
      local page = redis.call('ZRANGEBYSCORE', sk('pending', q), '-inf', now, 'WITHSCORES',
        'LIMIT', offset, 100)
      if #page == 0 then break end
      local first = nil
      for i = 1, #page, 2 do
        if redis.call('HGET', tk(page[i]), 'state') == 'pending' then
          first = tonumber(page[i + 1]); break
        end
      end
      if first then
        if not oldest or first < oldest then oldest = first end
        break
      end
      offset = offset + 100
    end
  end
  return oldest and tostring(oldest) or ''

elseif step == 'run_now' then  -- waiting tasks due now; pushed (a waiting worker wakes)
  local now = tonumber(ARGV[3])
  local count, seen = 0, {}
  for i = 4, #ARGV do
    local id = ARGV[i]
    local t = tk(id)
    local state, due, q = unpack(redis.call('HMGET', t, 'state', 'due_at', 'queue'))
    if state == 'pending' and not seen[id] then
      seen[id] = true
      count = count + 1
      if (tonumber(due) or 0) > now then
        redis.call('HSET', t, 'due_at', now)
        redis.call('ZADD', sk('pending', q), now, id)
        push(id, now)
      end
    end
  end
  return count

elseif step == 'delete' then  -- finished tasks, as `purge` deletes them
  local count = 0
  for i = 3, #ARGV do
    local id = ARGV[i]
    local state, q = unpack(redis.call('HMGET', tk(id), 'state', 'queue'))
    if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
      redis.call('DEL', tk(id), P .. ':d:' .. id, P .. ':a:' .. id)
      redis.call('ZREM', sk(state, q), id)
      redis.call('ZREM', P .. ':ids', id)
      count = count + 1
    end
  end
  return count

elseif step == 'counts' then
  local now, only = tonumber(ARGV[3]), ARGV[4]
  local queues = only ~= '' and {only} or redis.call('SMEMBERS', P .. ':queues')
  local c = {0, 0, 0, 0, 0, 0}  -- in `backbeat.status.STATES`' order
  for _, q in ipairs(queues) do
    -- `shown_state` by the set: the held and pending tasks, by due time, either side of now.
    local waiting = redis.call('ZCARD', sk('pending', q))
    local later = redis.call('ZCOUNT', sk('pending', q), '(' .. now, '+inf')
    c[1] = c[1] + waiting - later
    c[2] = c[2] + later
    c[3] = c[3] + redis.call('ZCARD', sk('running', q))
    c[4] = c[4] + redis.call('ZCARD', sk('succeeded', q))
    c[5] = c[5] + redis.call('ZCARD', sk('failed', q))
    c[6] = c[6] + redis.call('ZCARD', sk('cancelled', q))
  end
  return c

elseif step == 'queues' then
  return redis.call('SMEMBERS', P .. ':queues')

elseif step == 'beat' then  -- expiry on Redis's clock: hosts' clocks may disagree
  local name, document, expires = ARGV[4], ARGV[5], tonumber(ARGV[6])
  local now = server_now()
  if expires <= 0 then
    redis.call('HDEL', P .. ':w', name)
    redis.call('ZREM', P .. ':we', name)
  else
    redis.call('HSET', P .. ':w', name, document)
    redis.call('ZADD', P .. ':we', now + expires, name)
  end
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', P .. ':we', '-inf', now - 3600)) do
    redis.call('HDEL', P .. ':w', gone)
    redis.call('ZREM', P .. ':we', gone)
  end
  return 0

elseif step == 'workers' then
  -- {Redis's time now, document, expires_at, ...}: all of them (ARGV[3] 'all') or the live
  local now = server_now()
  local since = ARGV[3] == 'all' and '-inf' or '(' .. now
  local listed = redis.call('ZRANGEBYSCORE', P .. ':we', since, '+inf', 'WITHSCORES')
  local out = {tostring(now)}
  for i = 1, #listed, 2 do
    local document = redis.call('HGET', P .. ':w', listed[i])
    if document then
      table.insert(out, document)
      table.insert(out, listed[i + 1])
    end
  end
  return out

elseif step == 'take_over' then  -- a dead worker: its leases run out now
  local now, name = tonumber(ARGV[3]), ARGV[4]
  redis.call('HDEL', P .. ':w', name)
  redis.call('ZREM', P .. ':we', name)
  local ids = {}
  for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', sk('running', q), '(' .. now, '+inf')) do
      if redis.call('HGET', tk(id), 'worker') == name then
        redis.call('ZADD', sk('running', q), now, id)
        redis.call('HSET', tk(id), 'lease_until', now)
        table.insert(ids, id)
      end
    end
  end
  if #ids > 0 then  -- idle workers block on the streams: wake them to claim these
    redis.call('XADD', P .. ':bell', 'MAXLEN', '~', 100, '*', 'due', now)
  end
  return ids

elseif step == 'due' then  -- when the soonest held or delayed task is due, and the streams
  local soonest = ''
  for _, key in ipairs({P .. ':held', P .. ':delayed'}) do
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if #first > 0 and (soonest == '' or tonumber(first[2]) < tonumber(soonest)) then
      soonest = first[2]
    end
  end
  return {soonest, stream_ids(), next_look()}

elseif step == 'schedules' then  -- every schedule: {name, rule, last_tick, ...} each
  local out = {}
  for _, name in ipairs(redis.call('SORT', P .. ':schedules', 'ALPHA')) do
    local record = redis.call('HMGET', P .. ':sch:' .. name, unpack(SCHEDULE))
    table.insert(record, 1, name)
    table.insert(out, record)
  end
  return out

elseif step == 'declare' then  -- ARGV[4..]: name, rule, ...: those not known yet
  local now = tonumber(ARGV[3])
  for i = 4, #ARGV, 2 do
    if redis.call('SADD', P .. ':schedules', ARGV[i]) == 1 then
      redis.call('HSET', P .. ':sch:' .. ARGV[i], 'rule', ARGV[i + 1], 'paused', 0,
        'updated_at', now)
    end
  end
  return 0

elseif step == 'fire' then  -- one tick of a schedule, handled once (`Store.fire_schedule`)
  local now, name, rule, tick, note = tonumber(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
  local skip_if_running, busy_note, row = ARGV[8] == '1', ARGV[9], ARGV[10]
  local s = P .. ':sch:' .. name
  if redis.call('SADD', P .. ':schedules', name) == 1 then
    redis.call('HSET', s, 'paused', 0)
  end
  local last_tick, last_task, paused = unpack(redis.call('HMGET', s, 'last_tick', 'last_task',
    'paused'))
  if tonumber(last_tick or '') and tonumber(last_tick) >= tick then return false end
  if paused == '1' then
    note = 'paused'
  elseif row ~= '' and skip_if_running
      and LIVE[redis.call('HGET', tk(last_task or ''), 'state') or ''] then
    note = busy_note
  elseif row ~= '' then
    last_task = add_task(cjson.decode(row), now)
    note = 'enqueued'
  end
  redis.call('HSET', s, 'rule', rule, 'last_tick', tick, 'last_task', last_task or '',
    'note', note, 'updated_at', now)
  local record = redis.call('HMGET', s, unpack(SCHEDULE))
  table.insert(record, 1, name)
  return record

elseif step == 'pause' then  -- ARGV[5] '1' pauses, '0' resumes; 0 if there is no such one
  if redis.call('SISMEMBER', P .. ':schedules', ARGV[4]) == 0 then return 0 end
  redis.call('HSET', P .. ':sch:' .. ARGV[4], 'paused', ARGV[5], 'updated_at', ARGV[3])
  return 1

elseif step == 'open' then  -- ARGV[4]: a new token, if none is there; ARGV[5]: '1' to create
  local token = redis.call('GET', P .. ':made')
  local found = token or redis.call('EXISTS', P .. ':streams', P .. ':bell') > 0
  if ARGV[5] == '1' then
    stream_of('default', '0')
    if redis.call('EXISTS', P .. ':bell') == 0 then
      redis.call('XADD', P .. ':bell', 'MAXLEN', '~', 100, '*', 'opened', ARGV[3])
    end
    if not token then
      token = ARGV[4]
      redis.call('SET', P .. ':made', token)
    end
    found = true
  end
  return {token or '', found and 1 or 0, unfinished(), redis.call('TIME')}

elseif step == 'pause_queue' then  -- ARGV[3] the queue, ARGV[4] '1' pauses, '0' resumes
  local q = ARGV[3]
  if ARGV[4] == '1' then
    redis.call('SADD', P .. ':paused', q)
  elseif redis.call('SREM', P .. ':paused', q) == 1 then
    -- Its lines were not looked at meanwhile, and idle workers block on the streams: ring.
    for _, line in ipairs(redis.call('ZRANGE', gates_key(q), 0, -1)) do
      redis.call('ZADD', gates_key(q), 'LT', 0, line)
    end
    redis.call('XADD', P .. ':bell', 'MAXLEN', '~', 100, '*', 'due', 0)
  end
  return 0

elseif step == 'paused_queues' then
  return redis.call('SORT', P .. ':paused', 'ALPHA')

elseif step == 'gate_usage' then  -- {gate, used, waiting, ...}: recently used or waited for
  local snow, used, waiting = server_now(), {}, {}
  local recent = redis.call('ZREVRANGEBYSCORE', P .. ':gused', '+inf', snow - LONGEST,
    'LIMIT', 0, 10000)
  for _, gate in ipairs(recent) do
    local ok, parts = pcall(cjson.decode, gate)
    if ok and type(parts) == 'table' and parts[1] == 'concurrency' then
      local count = 0
      for _, holder in ipairs(redis.call('SMEMBERS', P .. ':gh:' .. gate)) do
        if redis.call('HGET', tk(holder), 'state') == 'running' then count = count + 1 end
      end
      used[gate] = count
    elseif ok and type(parts) == 'table' and type(parts[3]) == 'string' then
      local window = tonumber(parts[3]:match('/(.+)s$') or '')
      if window then
        used[gate] = redis.call('ZCOUNT', P .. ':gr:' .. gate, '(' .. (snow - window), '+inf')
      end
    end
  end
  for _, q in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
    for _, line in ipairs(redis.call('ZRANGE', gates_key(q), 0, 9999)) do
      local count = redis.call('ZCARD', P .. ':gl:' .. line)
      local _, rgate, cgate = line:match('^(.*)\t([^\t]*)\t([^\t]*)$')
      for _, gate in ipairs({rgate or '', cgate or ''}) do
        if gate ~= '' then waiting[gate] = (waiting[gate] or 0) + count end
      end
    end
  end
  local out = {}
  for gate, count in pairs(used) do table.insert(out, {gate, count, waiting[gate] or 0}) end
  for gate, count in pairs(waiting) do
    if not used[gate] then table.insert(out, {gate, 0, count}) end
  end
  return out
end
return redis.error_reply('unknown step ' .. tostring(step))
