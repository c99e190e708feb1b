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
--   P:gseq              counter: the order gated tasks were written in (their seq)
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

-- KEYS: the store's own keys, by these names, the same for every step (`RedisStore` sends
-- them in this order); the keys of tasks, queues, lines and gates are made from P in the
-- script, from what those hold. All share P's hash tag, so a cluster runs the script on the
-- node that holds them all.
local KEY_NAMES = {'ids', 'queues', 'held', 'delayed', 'streams', 'bell', 'made', 'paused',
  'w', 'we', 'gused', 'schedules', 'gseq'}
local K = {}
for i, name in ipairs(KEY_NAMES) do
  if KEYS[i] ~= P .. ':' .. name then
    return redis.error_reply('KEYS[' .. i .. '] must be ' .. P .. ':' .. name)
  end
  K[name] = KEYS[i]
end

-- Each step's arguments after those two, by name, in the order `RedisStore` sends them; a
-- last name '...x' takes the rest, as the list x. Steps read them from `a` (a.now, a.ids).
local ARGS = {
  open = {'now', 'token', 'create'},
  enqueue = {'now', 'deadline', '...groups'},  -- a group: one JSON list of new rows
  activate = {'now', 'ids'},  -- ids: a JSON list
  activate_and_claim = {'now', 'lease', 'worker', 'limit', 'ids'},
  claim = {'now', 'lease', 'worker', 'limit', 'max_lost', 'alone_first', 'gated_share',
    'lost_error', '...queues'},
  renew = {'now', 'lease', '...claims'},  -- claims: id, attempt, id, attempt, ...
  finish = {'now', 'settlements'},
  progress = {'id', 'attempt', 'document'},
  release = {'now', '...claims'},
  cancel = {'now', 'reason', '...ids'},
  retry = {'now', '...ids'},  -- ids: {'*'} for every failed task
  purge = {'before', 'dry_run', '...states'},
  list = {'now', 'state', 'queue', 'name', 'limit', 'below', 'chunk'},
  search = {'now', 'state', 'queue', 'name', 'id_prefix', 'argument', 'error', 'below',
    'lowest', 'limit', 'scan', 'chunk', '...status_fields'},
  failure_groups = {'scan'},
  oldest_due = {'now', 'queue'},
  run_now = {'now', '...ids'},
  delete = {'...ids'},
  counts = {'now', 'queue'},
  queues = {},
  beat = {'seen_at', 'name', 'document', 'expires_in'},
  workers = {'which'},  -- 'all', or 'live'
  take_over = {'now', 'worker'},
  due = {},
  schedules = {},
  declare = {'now', '...pairs'},  -- pairs: name, rule, name, rule, ...
  fire = {'now', 'name', 'rule', 'tick', 'note', 'skip_if_running', 'busy_note', 'task'},
  pause = {'now', 'name', 'paused'},
  pause_queue = {'queue', 'paused'},
  paused_queues = {},
  gate_usage = {},
}
if not ARGS[step] then return redis.error_reply('unknown step ' .. tostring(step)) end
local a = {}
for i, name in ipairs(ARGS[step]) do
  if name:sub(1, 3) == '...' then  -- a loop, not unpack: a list may outgrow Lua's stack
    local rest = {}
    for j = i + 2, #ARGV do rest[#rest + 1] = ARGV[j] end
    a[name:sub(4)] = rest
  else
    a[name] = ARGV[i + 2]
  end
end

local GROUP = 'backbeat'
local LONGEST = 86400  -- seconds: the longest rate window (`backbeat.gates.LONGEST_WINDOW`)
local LIVE = {held = true, pending = true, running = true}
-- A schedule's fields, as `schedules` and `fire` answer them (after its name).
local SCHEDULE = {'rule', 'last_tick', 'last_task', 'note', 'paused', 'updated_at'}

if made ~= '' and step ~= 'open' then
  local now_made = redis.call('GET', K.made)
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

-- Make a stream's consumer group (and the stream): one that is there already (BUSYGROUP)
-- is what was wanted; any other error (the key is not a stream) is raised.
local function make_group(key)
  local made = redis.pcall('XGROUP', 'CREATE', key, GROUP, '0', 'MKSTREAM')
  if type(made) == 'table' and made.err and not made.err:find('BUSYGROUP', 1, true) then
    error(made)
  end
end

local function stream_of(q, prio)
  local member = q .. '\t' .. prio
  local key = P .. ':x:' .. q .. ':' .. prio
  if not redis.call('ZSCORE', K.streams, member) then
    make_group(key)
    redis.call('ZADD', K.streams, prio, member)
  end
  return key
end

-- The worker now owns the task's stream entry (its consumer's pending entries, which
-- housekeeping reads). The task's hash, not the entry, says who runs it: an entry whose
-- stream or group was deleted outside backbeat (XCLAIM fails) is forgotten, and the next
-- claim restores the stream (`restore_stream`).
local function own_entry(t, key, entry, worker)
  if not entry or entry == '' then return end
  local owned = redis.pcall('XCLAIM', key, GROUP, worker, 0, entry, 'JUSTID')
  if type(owned) == 'table' and owned.err then
    redis.call('HSET', t, 'entry', '', 'stream', '')
  end
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
    redis.call('ZADD', K.delayed, due, id)
    -- Idle workers block on the streams: ring, so that they wait for this due time too.
    redis.call('XADD', K.bell, 'MAXLEN', '~', 100, '*', 'due', due)
    return
  end
  redis.call('ZREM', K.delayed, id)
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
  redis.call('ZREM', K.held, id)
  redis.call('ZREM', K.delayed, id)
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
    for _, each in ipairs(redis.call('SMEMBERS', K.queues)) do
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

local function append(list, ...)
  for _, item in ipairs({...}) do list[#list + 1] = item end
end

-- A hash's fields by name (false for those it does not have).
local function fields_of(key, names)
  local values = redis.call('HMGET', key, unpack(names))
  local named = {}
  for i, name in ipairs(names) do named[name] = values[i] end
  return named
end

-- The field of a task (as fetched by `take`) that cannot be read, or nil.
local function unreadable(v)
  if (v.name or '') == '' then return 'name' end
  if (v.payload or ''):sub(1, 1) ~= '{' then return 'payload (not a JSON document)' end
  if not tonumber(v.attempts or '0') then return 'attempts' end
  for _, field in ipairs({'created_at', 'retries', 'backoff', 'max_backoff'}) do
    if not tonumber(v[field]) then return field end
  end
  if (v.timeout or '') ~= '' and not tonumber(v.timeout) then return 'timeout' end
  if not tonumber(v.lost or '0') then return 'lost' end
  if (v.queue or '') == '' then return 'queue' end
  return nil
end

-- What `take` reads of a task: what a claim returns, then where the task is.
local TAKE = {'name', 'payload', 'attempts', 'created_at', 'retries', 'backoff',
  'max_backoff', 'timeout', 'lost', 'error', 'queue', 'state', 'entry', 'stream'}

-- Lease a task to `worker`; nil (which table.insert ignores) and the task dead-lettered
-- if its record cannot be read.
local function take(id, lost, now, lease, worker, found_in)
  local t = tk(id)
  local v = fields_of(t, TAKE)
  local why = unreadable(v)
  if why then
    bury(id, t, found_in, why, now)
    return nil
  end
  local attempts = tonumber(v.attempts or '0') + 1
  local lost_total = tonumber(v.lost or '0') + lost
  if lost > 0 then log_attempt(id, t, 'lost') end
  local until_ = now + lease
  redis.call('HSET', t, 'state', 'running', 'attempts', attempts, 'lost', lost_total,
    'started_at', now, 'lease_until', until_, 'worker', worker)
  redis.call('ZREM', sk(v.state, v.queue), id)
  redis.call('ZADD', sk('running', v.queue), until_, id)
  if v.state == 'held' then
    redis.call('ZREM', K.held, id)
    redis.call('HSET', t, 'held_until', '')
  end
  own_entry(t, v.stream, v.entry, worker)
  -- ClaimedTask's fields, in `redis_rows.claimed`'s order.
  return {id, v.name, v.payload, tostring(attempts), v.created_at, v.retries, v.backoff,
    v.max_backoff, v.timeout or '', tostring(lost_total), v.error or '', v.queue}
end

-- Gates. A gated task (field `line`: its queue and gates) never enters a stream: once due
-- and free of earlier tasks it waits in its line, and the claim takes the first of each
-- line whose gates are open (`take_gated`), on Redis's clock. A rate gate keeps its starts
-- for one window (open while fewer than `rlimit` started in the last `rwindow` seconds);
-- a concurrency gate, the ids of its running tasks (open while fewer than `cmax`).
local RECHECK = 1.0  -- a full concurrency gate's line is looked at again after this at the latest

local function gates_key(q) return P .. ':gates:' .. q end

-- A line's member: the task's due time and its order of writing, fixed width, then its id.
local MEMBER = '%017.6f%015d'
local function member_id(member) return member:sub(33) end

into_line = function(id, t, q, line, prio, due)
  -- Due time, then the order tasks were written (ids made in one millisecond are unordered).
  local seq = redis.call('HGET', t, 'seq')
  if not seq then
    seq = redis.call('INCR', K.gseq)
    redis.call('HSET', t, 'seq', seq)
  end
  local member = string.format(MEMBER, tonumber(due), tonumber(seq)) .. id
  redis.call('ZADD', P .. ':gl:' .. line, -tonumber(prio), member)
  redis.call('HSET', t, 'lm', member)
  redis.call('ZADD', gates_key(q), 'LT', 0, line)  -- look at it now
  -- Idle workers block on the streams, which gated tasks never enter: ring for them.
  redis.call('XADD', K.bell, 'MAXLEN', '~', 100, '*', 'due', due)
end

-- A slot of the line's gate may be free: look at the line now, if tasks wait in it.
local function look_now(q, line)
  if line and line ~= '' and redis.call('EXISTS', P .. ':gl:' .. line) == 1 then
    redis.call('ZADD', gates_key(q), 'LT', 0, line)
    redis.call('XADD', K.bell, 'MAXLEN', '~', 100, '*', 'due', 0)
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
  local rate_ok = (tonumber(rlimit) or 0) >= 1 and (tonumber(rwindow) or 0) > 0
  if rgate and rgate ~= '' and not rate_ok then
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
      local why = #members > 0 and unreadable_gates(tk(member_id(members[1])))
      if #members == 0 then
        redis.call('ZREM', gates, line)  -- empty: `into_line` adds it again
      elseif why then  -- it alone is dead-lettered; the line goes on at the next claim
        redis.call('ZREM', key, members[1])
        bury(member_id(members[1]), tk(member_id(members[1])), q, why, now)
      else
        local room, look, rgate, rwindow, cgate = room_of(member_id(members[1]),
          limit - #claimed, snow)
        if room > 0 then  -- for `gate_usage`: which gates were used lately
          if rgate ~= '' then redis.call('ZADD', K.gused, snow, rgate) end
          if cgate ~= '' then redis.call('ZADD', K.gused, snow, cgate) end
        end
        for i = 1, math.min(room, #members) do
          local id = member_id(members[i])
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
  for _, q in ipairs(redis.call('SMEMBERS', K.queues)) do
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
  for _, q in ipairs(redis.call('SMEMBERS', K.queues)) do
    count = count + redis.call('ZCARD', sk('pending', q)) + redis.call('ZCARD', sk('running', q))
  end
  return count
end

local function queues_of(list)
  if #list > 0 then return list end
  return redis.call('SMEMBERS', K.queues)
end

-- The paused queues as a set, or nil when none is (the usual case: one read of an empty set).
local function paused_set()
  local members = redis.call('SMEMBERS', K.paused)
  if #members == 0 then return nil end
  local set = {}
  for _, q in ipairs(members) do set[q] = true end
  return set
end

local function stream_ids()
  local seen, keys = {}, {}
  for _, member in ipairs(redis.call('ZRANGE', K.streams, 0, -1)) do
    local q, prio = member:match('^(.*)\t(.*)$')
    table.insert(keys, P .. ':x:' .. q .. ':' .. prio)
  end
  if redis.call('EXISTS', K.bell) == 1 then table.insert(keys, K.bell) end
  for _, key in ipairs(keys) do
    -- An error (the stream was deleted outside backbeat) leaves it out: the next claim
    -- restores it.
    local info = redis.pcall('XINFO', 'STREAM', key)
    if info.err then info = {} end
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        table.insert(seen, key)
        table.insert(seen, info[i + 1])
      end
    end
  end
  return seen
end

-- Housekeeping: forgetting what nobody will ask for again. No step's contract needs it; it
-- rides along with the steps that come often enough, in the same call.
local GONE_FOR = 3600  -- seconds: a worker, or a stream consumer, idle this long is forgotten
local housekeeping = {}

-- After a purge: the stream consumers of workers gone for an hour with no entry pending
-- (XREADGROUP makes one per worker name, and Redis keeps it until deleted), and the gates
-- not used within the longest rate window (`gate_usage` no longer shows them).
function housekeeping.purge()
  for _, member in ipairs(redis.call('ZRANGE', K.streams, 0, -1)) do
    local q, prio = member:match('^(.*)\t(.*)$')
    local key = P .. ':x:' .. q .. ':' .. prio
    -- An error (the stream was deleted outside backbeat): no consumers to forget; the next
    -- claim restores it.
    local consumers = redis.pcall('XINFO', 'CONSUMERS', key, GROUP)
    if consumers.err then consumers = {} end
    for _, consumer in ipairs(consumers) do
      local c = {}
      for i = 1, #consumer, 2 do c[consumer[i]] = consumer[i + 1] end
      if tonumber(c.pending) == 0 and tonumber(c.idle) > GONE_FOR * 1000 then
        redis.call('XGROUP', 'DELCONSUMER', key, GROUP, c.name)
      end
    end
  end
  redis.call('ZREMRANGEBYSCORE', K.gused, '-inf', server_now() - LONGEST)
end

-- After a heartbeat: the workers whose heartbeats expired an hour ago (`workers` with
-- `include_expired` no longer lists them).
function housekeeping.beat(now)
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', K.we, '-inf', now - GONE_FOR)) do
    redis.call('HDEL', K.w, gone)
    redis.call('ZREM', K.we, gone)
  end
end

-- A stream (or its consumer group) was deleted outside backbeat: make it again, and put
-- back the pending tasks whose entries went with it.
local function restore_stream(key, q, now)
  make_group(key)
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
    'held_until', v.held_until, 'queue', v.queue,
    'priority', v.priority, 'key', v.key, 'state', held and 'held' or 'pending',
    'attempts', 0, 'lost', 0, 'blocked', 0, 'cancel_requested', 0)
  if v.line ~= '' then
    redis.call('HSET', t, 'rgate', v.rgate, 'rlimit', v.rlimit, 'rwindow', v.rwindow,
      'cgate', v.cgate, 'cmax', v.cmax, 'line', v.line)
  end
  redis.call('ZADD', K.ids, 0, id)
  redis.call('SADD', K.queues, v.queue)
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
  if held then redis.call('ZADD', K.held, v.held_until, id) else push(id, now) end
  return id
end

if step == 'enqueue' then
  local now = tonumber(a.now)
  -- On Redis's clock, when the writer stops waiting for this write (it answers 503, or
  -- raises): a write that arrives later, after a freeze or a stall, stores nothing.
  local clock = redis.call('TIME')  -- returned, for the writer to measure its offset
  local deadline = tonumber(a.deadline)
  if deadline then
    local late = tonumber(clock[1]) + tonumber(clock[2]) / 1000000 - deadline
    if late > 0 then return {'LATE', tostring(late), clock} end
  end
  local out = {}
  for _, group in ipairs(a.groups) do
    -- A group: one caller's tasks, as one JSON list of [id, F...] lists of strings.
    local rows = cjson.decode(group)
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
  -- `activate` claims none: no lease, no worker, a limit of 0.
  local now, lease, limit = tonumber(a.now), tonumber(a.lease or '0'), tonumber(a.limit or '0')
  local claimed = {}
  local paused = step == 'activate_and_claim' and paused_set() or {}
  for _, id in ipairs(cjson.decode(a.ids)) do
    local t = tk(id)
    local v = fields_of(t, {'state', 'blocked', 'due_at', 'after', 'line', 'queue'})
    if v.state == 'held' then
      local runs_now = tonumber(v.blocked) == 0 and v.after == '' and tonumber(v.due_at) <= now
        and (v.line or '') == '' and not paused[v.queue]
      if #claimed < limit and runs_now then
        table.insert(claimed, take(id, 0, now, lease, a.worker, nil))
      else
        redis.call('ZREM', K.held, id)
        redis.call('HSET', t, 'state', 'pending', 'held_until', '')
        push(id, now)
      end
    end
  end
  return claimed

elseif step == 'claim' then
  local now, lease, worker = tonumber(a.now), tonumber(a.lease), a.worker
  local limit, max_lost, alone_first = tonumber(a.limit), tonumber(a.max_lost), a.alone_first == '1'
  local gated_share = tonumber(a.gated_share)  -- of `limit`: the rest is other tasks' first
  local lost_error = a.lost_error  -- written on a task dead-lettered at `max_lost` losses
  -- Held past their hold (the process that wrote them died), and delays that are due.
  local held = redis.call('ZRANGEBYSCORE', K.held, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(held) do
    redis.call('ZREM', K.held, id)
    if redis.call('EXISTS', tk(id)) == 1 then
      redis.call('HSET', tk(id), 'state', 'pending', 'held_until', '')
      push(id, now)
    end
  end
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', K.delayed, id)
    if redis.call('HGET', tk(id), 'state') == 'pending' then push(id, now) end
  end
  local queues = queues_of(a.queues)
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
      local cancel, lost, name, line = unpack(redis.call('HMGET', t, 'cancel_requested',
        'lost', 'name', 'line'))
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
        redis.call('HSET', t, 'lost', tonumber(lost or '0') + 1, 'lease_until', '',
          'worker', '')
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
  for _, member in ipairs(redis.call('ZREVRANGE', K.streams, 0, -1)) do
    if #claimed >= limit then break end
    local q, prio = member:match('^(.*)\t(.*)$')
    if only[q] then
      local key = P .. ':x:' .. q .. ':' .. prio
      local read = {'XREADGROUP', 'GROUP', GROUP, worker, 'COUNT', limit - #claimed,
        'STREAMS', key, '>'}
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
  if more_gated then  -- what is left
    take_gated(open_queues, now, lease, worker, limit, claimed)
  end
  for _, each in ipairs(buried) do table.insert(dead, each) end
  return {claimed, dead, stream_ids()}

elseif step == 'renew' then
  local now, lease = tonumber(a.now), tonumber(a.lease)
  local stop = {}
  for i = 1, #a.claims, 2 do
    local id = a.claims[i]
    local ok, t = current(id, a.claims[i + 1])
    if ok then
      local until_ = now + lease
      local q, cancel, worker, entry, key = unpack(redis.call('HMGET', t, 'queue',
        'cancel_requested', 'worker', 'entry', 'stream'))
      redis.call('HSET', t, 'lease_until', until_)
      redis.call('ZADD', sk('running', q), until_, id)
      own_entry(t, key, entry, worker)
      if cancel == '1' then table.insert(stop, id) end
    else
      table.insert(stop, id)
    end
  end
  return stop

elseif step == 'finish' then
  local now = tonumber(a.now)
  local kept = {}
  -- One JSON list of [id, attempt, state, result, error, traceback, retry_at] lists.
  for _, s in ipairs(cjson.decode(a.settlements)) do
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
        local why = error ~= '' and error or redis.call('HGET', t, 'error')
        log_attempt(id, t, 'cancelled', now, why)
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
          append(fields, 'result', result)
        elseif state == 'failed' then
          append(fields, 'error', error, 'traceback', trace)
        elseif error ~= '' then
          append(fields, 'error', error)
        end
        redis.call('HSET', t, unpack(fields))
        redis.call('ZADD', sk(state, q), now, id)
        released(id, key, now)
      end
    end
  end
  return kept

elseif step == 'progress' then
  local t = tk(a.id)
  if redis.call('HGET', t, 'attempts') ~= a.attempt then return 0 end
  redis.call('HSET', t, 'progress', a.document)
  return 1

elseif step == 'release' then
  local now = tonumber(a.now)
  for i = 1, #a.claims, 2 do
    local id = a.claims[i]
    local ok, t = current(id, a.claims[i + 1])
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
  local now, reason = tonumber(a.now), a.reason
  local count = 0
  for _, id in ipairs(a.ids) do
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
  local now = tonumber(a.now)
  local ids = a.ids
  if ids[1] == '*' then
    ids = {}
    for _, q in ipairs(redis.call('SMEMBERS', K.queues)) do
      for _, id in ipairs(redis.call('ZRANGE', sk('failed', q), 0, -1)) do
        table.insert(ids, id)
      end
    end
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
  local count = 0
  for _, q in ipairs(redis.call('SMEMBERS', K.queues)) do
    for _, state in ipairs(a.states) do
      local key = sk(state, q)
      for _, id in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. a.before)) do
        count = count + 1
        if a.dry_run ~= '1' then
          redis.call('DEL', tk(id), P .. ':d:' .. id, P .. ':a:' .. id)
          redis.call('ZREM', key, id)
          redis.call('ZREM', K.ids, id)
        end
      end
    end
  end
  if a.dry_run ~= '1' then housekeeping.purge() end
  return count

elseif step == 'list' then
  -- One page of `list_tasks`: ids newest first below `below` ('' from the newest), at most
  -- `chunk` looked at, until `limit` match. The caller goes on from the cursor in further
  -- calls. Returns {cursor ('' when no older id is left), {id...}}.
  local now, limit, chunk = tonumber(a.now), tonumber(a.limit), tonumber(a.chunk)
  local top = a.below == '' and '+' or ('(' .. a.below)
  local page = redis.call('ZREVRANGEBYLEX', K.ids, top, '-', 'LIMIT', 0, chunk)
  local found, cursor = {}, ''
  for _, id in ipairs(page) do
    local v = fields_of(tk(id), {'state', 'queue', 'name', 'due_at'})
    if (a.state == '' or shown_state(v.state, v.due_at, now) == a.state)
        and (a.queue == '' or v.queue == a.queue) and (a.name == '' or v.name == a.name) then
      table.insert(found, id)
      if #found == limit then
        cursor = id
        break
      end
    end
    cursor = id
  end
  if #page < chunk and #found < limit then cursor = '' end
  return {cursor, found}

elseif step == 'search' then
  -- One stretch of the dashboard's search (`Store.search`): ids newest first within
  -- [lowest, below), at most `chunk` looked at, until `limit` match. The source is the
  -- state's sets when they hold no more than `scan` tasks, else every id. The caller goes on
  -- from the cursor in further calls (a long scan never blocks Redis in one).
  -- Returns {cursor ('' when the source ran out), looked at, {{id, STATUS...}...}}.
  local now, state, queue, name = tonumber(a.now), a.state, a.queue, a.name
  local idp, arg, err = a.id_prefix, a.argument, a.error
  local below, lowest, limit, scan = a.below, a.lowest, tonumber(a.limit), tonumber(a.scan)
  local chunk = tonumber(a.chunk)
  local status_fields = a.status_fields
  -- Only the fields the filter needs are read, each task once.
  local wanted = {}
  if state ~= '' then append(wanted, 'state', 'due_at') end
  if queue ~= '' then append(wanted, 'queue') end
  if name ~= '' then append(wanted, 'name') end
  if arg ~= '' then append(wanted, 'payload') end
  if err ~= '' then append(wanted, 'error') end
  local function matches(id)
    if idp ~= '' and id:sub(1, #idp) ~= idp then return false end
    if #wanted == 0 then return true end
    local v = fields_of(tk(id), wanted)
    if state ~= '' and shown_state(v.state, v.due_at, now) ~= state then return false end
    return (queue == '' or v.queue == queue) and (name == '' or v.name == name)
      and (arg == '' or string.find(v.payload or '', arg, 1, true) ~= nil)
      and (err == '' or string.find(v.error or '', err, 1, true) ~= nil)
  end
  local found, scanned, cursor = {}, 0, ''
  local function look(id)  -- true: the page is done
    scanned = scanned + 1
    if matches(id) then
      local row = redis.call('HMGET', tk(id), unpack(status_fields))
      table.insert(row, 1, id)
      table.insert(found, row)
      if #found == limit then
        cursor = id
        return true
      end
    end
    if scanned == chunk then
      cursor = id
      return true
    end
    return false
  end
  local candidates = nil
  if state ~= '' then
    local sets, total = {}, 0
    local stored = (state == 'scheduled') and 'pending' or state
    for _, q in ipairs(queue ~= '' and {queue} or redis.call('SMEMBERS', K.queues)) do
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
      local page = redis.call('ZREVRANGEBYLEX', K.ids, top, bottom, 'LIMIT', 0,
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
  local scan = tonumber(a.scan)
  local ids = {}
  for _, q in ipairs(redis.call('SMEMBERS', K.queues)) do
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
  local now, only = tonumber(a.now), a.queue
  local oldest = nil
  for _, q in ipairs(only ~= '' and {only} or redis.call('SMEMBERS', K.queues)) do
    local offset = 0
    while true do  -- held tasks share the set: skipped
      local page = redis.call('ZRANGEBYSCORE', sk('pending', q), '-inf', now, 'WITHSCORES',
        'LIMIT', offset, 100)
      if #page == 0 then break end
      local first = nil
      for i = 1, #page, 2 do
        if redis.call('HGET', tk(page[i]), 'state') == 'pending' then
          first = tonumber(page[i + 1])
          break
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
  local now = tonumber(a.now)
  local count, seen = 0, {}
  for _, id in ipairs(a.ids) do
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
  for _, id in ipairs(a.ids) do
    local state, q = unpack(redis.call('HMGET', tk(id), 'state', 'queue'))
    if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
      redis.call('DEL', tk(id), P .. ':d:' .. id, P .. ':a:' .. id)
      redis.call('ZREM', sk(state, q), id)
      redis.call('ZREM', K.ids, id)
      count = count + 1
    end
  end
  return count

elseif step == 'counts' then
  local now, only = tonumber(a.now), a.queue
  local queues = only ~= '' and {only} or redis.call('SMEMBERS', K.queues)
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
  return redis.call('SMEMBERS', K.queues)

elseif step == 'beat' then  -- expiry on Redis's clock: hosts' clocks may disagree
  local expires = tonumber(a.expires_in)
  local now = server_now()
  if expires <= 0 then
    redis.call('HDEL', K.w, a.name)
    redis.call('ZREM', K.we, a.name)
  else
    redis.call('HSET', K.w, a.name, a.document)
    redis.call('ZADD', K.we, now + expires, a.name)
  end
  housekeeping.beat(now)
  return 0

elseif step == 'workers' then
  -- {Redis's time now, document, expires_at, ...}: all of them, or the live ones
  local now = server_now()
  local since = a.which == 'all' and '-inf' or '(' .. now
  local listed = redis.call('ZRANGEBYSCORE', K.we, since, '+inf', 'WITHSCORES')
  local out = {tostring(now)}
  for i = 1, #listed, 2 do
    local document = redis.call('HGET', K.w, listed[i])
    if document then
      table.insert(out, document)
      table.insert(out, listed[i + 1])
    end
  end
  return out

elseif step == 'take_over' then  -- a dead worker: its leases run out now
  local now, name = tonumber(a.now), a.worker
  redis.call('HDEL', K.w, name)
  redis.call('ZREM', K.we, name)
  local ids = {}
  for _, q in ipairs(redis.call('SMEMBERS', K.queues)) do
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', sk('running', q), '(' .. now, '+inf')) do
      if redis.call('HGET', tk(id), 'worker') == name then
        redis.call('ZADD', sk('running', q), now, id)
        redis.call('HSET', tk(id), 'lease_until', now)
        table.insert(ids, id)
      end
    end
  end
  if #ids > 0 then  -- idle workers block on the streams: wake them to claim these
    redis.call('XADD', K.bell, 'MAXLEN', '~', 100, '*', 'due', now)
  end
  return ids

elseif step == 'due' then  -- when the soonest held or delayed task is due, and the streams
  local soonest = ''
  for _, key in ipairs({K.held, K.delayed}) do
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if #first > 0 and (soonest == '' or tonumber(first[2]) < tonumber(soonest)) then
      soonest = first[2]
    end
  end
  return {soonest, stream_ids(), next_look()}

elseif step == 'schedules' then  -- every schedule: {name, rule, last_tick, ...} each
  local out = {}
  for _, name in ipairs(redis.call('SORT', K.schedules, 'ALPHA')) do
    local record = redis.call('HMGET', P .. ':sch:' .. name, unpack(SCHEDULE))
    table.insert(record, 1, name)
    table.insert(out, record)
  end
  return out

elseif step == 'declare' then  -- the schedules not known yet
  local now, pairs_ = tonumber(a.now), a.pairs
  for i = 1, #pairs_, 2 do
    if redis.call('SADD', K.schedules, pairs_[i]) == 1 then
      redis.call('HSET', P .. ':sch:' .. pairs_[i], 'rule', pairs_[i + 1], 'paused', 0,
        'updated_at', now)
    end
  end
  return 0

elseif step == 'fire' then  -- one tick of a schedule, handled once (`Store.fire_schedule`)
  local now, name, rule, tick, note = tonumber(a.now), a.name, a.rule, tonumber(a.tick), a.note
  local skip_if_running, busy_note, row = a.skip_if_running == '1', a.busy_note, a.task
  local s = P .. ':sch:' .. name
  if redis.call('SADD', K.schedules, name) == 1 then
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

elseif step == 'pause' then  -- paused '1' pauses, '0' resumes; 0 if there is no such one
  if redis.call('SISMEMBER', K.schedules, a.name) == 0 then return 0 end
  redis.call('HSET', P .. ':sch:' .. a.name, 'paused', a.paused, 'updated_at', a.now)
  return 1

elseif step == 'open' then  -- token: a new one, if none is there; create: '1' to create
  local token = redis.call('GET', K.made)
  local found = token or redis.call('EXISTS', K.streams, K.bell) > 0
  if a.create == '1' then
    stream_of('default', '0')
    if redis.call('EXISTS', K.bell) == 0 then
      redis.call('XADD', K.bell, 'MAXLEN', '~', 100, '*', 'opened', a.now)
    end
    if not token then
      token = a.token
      redis.call('SET', K.made, token)
    end
    found = true
  end
  return {token or '', found and 1 or 0, unfinished(), redis.call('TIME')}

elseif step == 'pause_queue' then  -- paused '1' pauses, '0' resumes
  local q = a.queue
  if a.paused == '1' then
    redis.call('SADD', K.paused, q)
  elseif redis.call('SREM', K.paused, q) == 1 then
    -- Its lines were not looked at meanwhile, and idle workers block on the streams: ring.
    for _, line in ipairs(redis.call('ZRANGE', gates_key(q), 0, -1)) do
      redis.call('ZADD', gates_key(q), 'LT', 0, line)
    end
    redis.call('XADD', K.bell, 'MAXLEN', '~', 100, '*', 'due', 0)
  end
  return 0

elseif step == 'paused_queues' then
  return redis.call('SORT', K.paused, 'ALPHA')

elseif step == 'gate_usage' then  -- {gate, used, waiting, ...}: recently used or waited for
  local snow, used, waiting = server_now(), {}, {}
  local recent = redis.call('ZREVRANGEBYSCORE', K.gused, '+inf', snow - LONGEST,
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
  for _, q in ipairs(redis.call('SMEMBERS', K.queues)) do
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
