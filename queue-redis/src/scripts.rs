//! The Lua scripts. Each runs atomically on the server; every key it touches shares the
//! queue's `{name}` hash tag, so each script runs on one Cluster node.
//!
//! Keys of queue `Q` (prefix `q:{Q}:`): `meta` (exists once created), `seq` (id counter),
//! `ready` (LIST of seqs, LPUSH in, RPOP out), `delayed` (ZSET seq → due ms), `leased`
//! (ZSET seq → lease deadline ms), `wake` (LIST of tokens that blocked receivers BLPOP),
//! `m:<seq>` (STRING: the message, see below), `att` (HASH seq → attempts so far, absent
//! = 0), `gen` (HASH seq → lease generation, absent = 0), `dedup:<id>` (STRING with TTL).
//!
//! Priorities (as BullMQ keeps them): a prioritized message waits in `prio` (ZSET, score
//! `(255 - priority) · 2^44 + seq`, so higher first and FIFO within a priority) instead of
//! the ready list, and `pri` (HASH seq → priority) remembers where it goes back to after a
//! retry or an expired lease. Receives take from `prio` first, then from `ready`; a message
//! without a priority ranks below every prioritized one.
//!
//! Per-key order (as BullMQ Pro's groups): `okey` (HASH seq → ordering key), and per key a
//! LIST `g:<key>` of its seqs in send order. Only the head of a key's list is ever ready,
//! delayed or leased; the others wait (counted in `waiting`, their own send delay kept in
//! `nb`, HASH seq → due ms) until the head is acked or dead-lettered, when the next one is
//! released to the line. A head that is leased, nacked with a delay, or back after its
//! lease holds its key; other keys keep flowing. `groups` (SET) names the keys with a list,
//! for purge and delete.
//!
//! A message is one STRING, `<t>:<n>:<id><k>:<headers JSON><payload>`: the enqueue time
//! (server ms, written by SEND), then the id and the headers each after its byte length,
//! then the payload to the end. One value per message lets every script read and write
//! the messages of a whole batch with one `MGET`, `MSET` or `DEL`: a `redis.call` from
//! Lua costs a few microseconds of its own, and one per message per step was most of the
//! server's time (see docs/benchmarks.md). Attempt counts and generations live in the two
//! per-queue hashes for the same reason (one `HMGET`/`HSET` per batch).

use redis::Script;
use std::sync::LazyLock;

/// `route(seqs, front)`: puts messages where a receive finds them: a prioritized one in
/// `prio`, the others on the ready list, at the back of the line or, with `front`, at its
/// head. Expects `prefix` and KEYS[2] ready.
const ROUTE: &str = r#"
local function route(seqs, front)
  if #seqs == 0 then return end
  local pris = redis.call('HMGET', prefix .. 'pri', unpack(seqs))
  local plain, scored = {}, {}
  for i, s in ipairs(seqs) do
    local p = tonumber(pris[i])
    if p then
      table.insert(scored, string.format('%d', (255 - p) * 17592186044416 + tonumber(s)))
      table.insert(scored, s)
    else
      table.insert(plain, s)
    end
  end
  if #scored > 0 then redis.call('ZADD', prefix .. 'prio', unpack(scored)) end
  if #plain > 0 then
    if front then
      redis.call('RPUSH', KEYS[2], unpack(plain))
    else
      redis.call('LPUSH', KEYS[2], unpack(plain))
    end
  end
end
"#;

/// Server time in ms, and promotion of due delayed messages and expired leases to ready.
/// Expects `prefix`, `route`, KEYS[2] ready, KEYS[3] delayed, KEYS[4] leased.
const PROMOTE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
if #due > 0 then
  route(due, false)
  redis.call('ZREM', KEYS[3], unpack(due))
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 1000)
if #expired > 0 then
  route(expired, true)
  redis.call('ZREM', KEYS[4], unpack(expired))
  for _, s in ipairs(expired) do redis.call('HINCRBY', prefix .. 'gen', s, 1) end
end
"#;

const KNOWN: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('UNKNOWN_QUEUE') end
"#;

/// Server time in ms as `now`, and `current(leased, seq)`: the lease of `seq` has not
/// ended (a receipt is valid only while its lease lasts, promoted or not).
const NOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function current(leased, seq)
  local sc = redis.call('ZSCORE', leased, seq)
  return sc and tonumber(sc) > now
end
"#;

const WAKE: &str = r#"
local function wake(n)
  local tokens = {}
  for i = 1, math.min(n, 64) do tokens[i] = '1' end
  redis.call('LPUSH', KEYS[5], unpack(tokens))
  redis.call('LTRIM', KEYS[5], 0, 63)
end
"#;

/// KEYS: meta ready delayed leased wake seq. ARGV: prefix, dedup window ms, then per
/// message: id, body (`<n>:<id><k>:<headers><payload>`), delay ms, dedup id, priority
/// (`''` for none), ordering key (`''` for none). Returns the ids (a duplicate returns the
/// id it first went with).
///
/// One `MSET` of every new message, one `INCRBY`, `LPUSH` (or `ZADD` to `delayed`) and
/// wake-token push per batch; per message only the dedup `SET`, when it has a dedup id,
/// and the bookkeeping of a priority or an ordering key, when it has one.
pub static SEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{KNOWN}
local prefix = ARGV[1]
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
{WAKE}
{ROUTE}
local count = (#ARGV - 2) / 6
local seq = redis.call('INCRBY', KEYS[6], count) - count
local out, ready, prio, delayed, kv = {{}}, {{}}, {{}}, {{}}, {{}}
local stamp = string.format('%d', now) .. ':'
for b = 3, #ARGV, 6 do
  local id, dd, delay = ARGV[b], ARGV[b + 3], tonumber(ARGV[b + 2])
  local p, key = ARGV[b + 4], ARGV[b + 5]
  local first = false
  if dd ~= '' then
    first = redis.call('SET', prefix .. 'dedup:' .. dd, id, 'NX', 'PX', window, 'GET')
  end
  if first then
    table.insert(out, first)
  else
    seq = seq + 1
    local s = string.format('%d', seq)
    table.insert(kv, prefix .. 'm:' .. s)
    table.insert(kv, stamp .. ARGV[b + 1])
    if p ~= '' then redis.call('HSET', prefix .. 'pri', s, p) end
    local head = true
    if key ~= '' then
      redis.call('HSET', prefix .. 'okey', s, key)
      head = redis.call('RPUSH', prefix .. 'g:' .. key, s) == 1
      if head then
        redis.call('SADD', prefix .. 'groups', key)
      else
        redis.call('INCR', prefix .. 'waiting')
        if delay > 0 then redis.call('HSET', prefix .. 'nb', s, now + delay) end
      end
    end
    if not head then
      -- waits behind its key's head
    elseif delay > 0 then
      table.insert(delayed, now + delay)
      table.insert(delayed, s)
    elseif p ~= '' then
      table.insert(prio, s)
    else
      table.insert(ready, s)
    end
    table.insert(out, id)
  end
end
if #kv > 0 then redis.call('MSET', unpack(kv)) end
route(prio, false)
if #ready > 0 then
  redis.call('LPUSH', KEYS[2], unpack(ready))
end
if #ready + #prio > 0 then wake(#ready + #prio) end
if #delayed > 0 then redis.call('ZADD', KEYS[3], unpack(delayed)) end
return out
"#
    ))
});

/// `reply(out, seqs)`: appends, per seq whose message exists, `seq, generation, attempt,
/// ordering key ('' for none), message` to `out`, reading each field once for the batch.
/// `bump`: the seqs are being delivered (attempt and generation go up by one, and are
/// written back) rather than looked at. `keyed`: look their ordering keys up (a queue with
/// no keyed message skips it).
const REPLY: &str = r#"
local function reply(out, seqs, bump, keyed)
  if #seqs == 0 then return {} end
  local mk = {}
  for i, s in ipairs(seqs) do mk[i] = prefix .. 'm:' .. s end
  local bodies = redis.call('MGET', unpack(mk))
  local atts = redis.call('HMGET', prefix .. 'att', unpack(seqs))
  local gens = redis.call('HMGET', prefix .. 'gen', unpack(seqs))
  local keys = {}
  if keyed then keys = redis.call('HMGET', prefix .. 'okey', unpack(seqs)) end
  local kept, newa, newg = {}, {}, {}
  local step = 0
  if bump then step = 1 end
  for i, s in ipairs(seqs) do
    if bodies[i] then
      local a, g = (tonumber(atts[i]) or 0) + 1, (tonumber(gens[i]) or 0) + step
      table.insert(kept, s)
      table.insert(newa, s)
      table.insert(newa, a)
      table.insert(newg, s)
      table.insert(newg, g)
      table.insert(out, s)
      table.insert(out, g)
      table.insert(out, a)
      table.insert(out, keys[i] or '')
      table.insert(out, bodies[i])
    end
  end
  if bump and #kept > 0 then
    redis.call('HSET', prefix .. 'att', unpack(newa))
    redis.call('HSET', prefix .. 'gen', unpack(newg))
  end
  return kept
end
"#;

/// KEYS: meta ready delayed leased. ARGV: prefix, max. The next `max` ready messages,
/// next in line first, changing nothing but the promotion of due ones, in the RECEIVE
/// reply's shape: `[server now, -1, then per message: seq, generation, attempt, key,
/// message]`, where `attempt` is the count its next delivery would carry (deliveries so
/// far + 1).
pub static PEEK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{KNOWN}
local prefix = ARGV[1]
{ROUTE}
{PROMOTE}
{REPLY}
local out = {{now, -1}}
local n = tonumber(ARGV[2])
if n < 1 then return out end
local seqs = redis.call('ZRANGE', prefix .. 'prio', 0, n - 1)
if #seqs < n then
  local plain = redis.call('LRANGE', KEYS[2], -(n - #seqs), -1)
  for i = #plain, 1, -1 do table.insert(seqs, plain[i]) end
end
reply(out, seqs, false, true)
return out
"#
    ))
});

/// KEYS: meta ready delayed leased. ARGV: prefix, max, lease ms. Returns
/// `[server now, next wake or -1, then per delivery: seq, generation, attempt, key,
/// message]`.
///
/// One `ZPOPMIN` of the prioritized messages, one `RPOP key max` for the rest, one `MGET`
/// of the messages, one `HMGET` each of the attempt counts, generations and keys, one
/// `HSET` each of the new counts and generations, and one `ZADD` of the leases per call.
pub static RECEIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{KNOWN}
local prefix = ARGV[1]
{ROUTE}
{PROMOTE}
{REPLY}
local lease = tonumber(ARGV[3])
local max = tonumber(ARGV[2])
local out = {{now, -1}}
local seqs = {{}}
-- A queue that never saw a priority or an ordering key pays one EXISTS for both.
local extras = redis.call('EXISTS', prefix .. 'prio', prefix .. 'okey') > 0
if extras then
  local popped = redis.call('ZPOPMIN', prefix .. 'prio', max)
  for i = 1, #popped, 2 do table.insert(seqs, popped[i]) end
end
if #seqs < max then
  local plain = redis.call('RPOP', KEYS[2], max - #seqs)
  if plain then
    for _, s in ipairs(plain) do table.insert(seqs, s) end
  end
end
local kept = reply(out, seqs, true, extras)
if #kept > 0 then
  local leases = {{}}
  for _, s in ipairs(kept) do
    table.insert(leases, now + lease)
    table.insert(leases, s)
  end
  redis.call('ZADD', KEYS[4], unpack(leases))
end
local nd = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local nl = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
local nxt = -1
if nd[2] then nxt = tonumber(nd[2]) end
if nl[2] and (nxt < 0 or tonumber(nl[2]) < nxt) then nxt = tonumber(nl[2]) end
out[2] = nxt
return out
"#
    ))
});

/// `release(done)`: after the messages `done` are settled for good, each keyed one's
/// successor (the next of its key, if any) joins the line: ready, prioritized, or delayed
/// until its own send delay ends. Expects `prefix`, `now`, `route`, `wake`, KEYS[3]
/// delayed.
const RELEASE: &str = r#"
local function release(done)
  local keys = redis.call('HMGET', prefix .. 'okey', unpack(done))
  local keyed, next_ready = {}, {}
  for i, s in ipairs(done) do
    local k = keys[i]
    if k then
      table.insert(keyed, s)
      local g = prefix .. 'g:' .. k
      redis.call('LREM', g, 1, s)
      local nxt = redis.call('LINDEX', g, 0)
      if nxt then
        redis.call('DECR', prefix .. 'waiting')
        local nb = tonumber(redis.call('HGET', prefix .. 'nb', nxt))
        if nb then redis.call('HDEL', prefix .. 'nb', nxt) end
        if nb and nb > now then
          redis.call('ZADD', KEYS[3], nb, nxt)
        else
          table.insert(next_ready, nxt)
        end
      else
        redis.call('SREM', prefix .. 'groups', k)
      end
    end
  end
  if #keyed > 0 then redis.call('HDEL', prefix .. 'okey', unpack(keyed)) end
  if #next_ready > 0 then
    route(next_ready, false)
    wake(#next_ready)
  end
end
"#;

/// KEYS: meta ready delayed leased wake. ARGV: prefix, then pairs seq, generation. Returns
/// the 0-based indexes of receipts that were stale (lease ended, generation moved on,
/// already acked, or named twice in one call). One `ZMSCORE`, one `HMGET` each of the
/// generations and ordering keys, and one each of `ZREM`, `DEL` and `HDEL` per call,
/// whatever the batch size; per keyed message, the release of its key's next one.
pub static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{KNOWN}
local prefix = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
{ROUTE}
{WAKE}
{RELEASE}
local seqs = {{}}
for i = 2, #ARGV, 2 do table.insert(seqs, ARGV[i]) end
if #seqs == 0 then return {{}} end
local scores = redis.call('ZMSCORE', KEYS[4], unpack(seqs))
local gens = redis.call('HMGET', prefix .. 'gen', unpack(seqs))
local stale, done, keys, seen = {{}}, {{}}, {{}}, {{}}
for j, s in ipairs(seqs) do
  local sc = scores[j]
  if not seen[s] and sc and tonumber(sc) > now and gens[j] == ARGV[2 * j + 1] then
    seen[s] = true
    table.insert(done, s)
    table.insert(keys, prefix .. 'm:' .. s)
  else
    table.insert(stale, j - 1)
  end
end
if #done > 0 then
  redis.call('ZREM', KEYS[4], unpack(done))
  redis.call('DEL', unpack(keys))
  redis.call('HDEL', prefix .. 'att', unpack(done))
  redis.call('HDEL', prefix .. 'gen', unpack(done))
  -- A queue that never saw a priority or an ordering key pays one EXISTS for both.
  if redis.call('EXISTS', prefix .. 'pri', prefix .. 'okey') > 0 then
    redis.call('HDEL', prefix .. 'pri', unpack(done))
    release(done)
  end
end
return stale
"#
    ))
});

/// KEYS: meta ready delayed leased wake. ARGV: prefix, seq, generation, delay ms, and
/// `1` to give back without counting an attempt. Returns 1, or 0 when the receipt is
/// stale.
pub static NACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{KNOWN}
local prefix = ARGV[1]
{WAKE}
{NOW}
{ROUTE}
if redis.call('HGET', prefix .. 'gen', ARGV[2]) ~= ARGV[3] or not current(KEYS[4], ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('HINCRBY', prefix .. 'gen', ARGV[2], 1)
if ARGV[5] == '1' then redis.call('HINCRBY', prefix .. 'att', ARGV[2], -1) end
local delay = tonumber(ARGV[4])
if delay > 0 then
  redis.call('ZADD', KEYS[3], now + delay, ARGV[2])
else
  route({{ARGV[2]}}, true)
  wake(1)
end
return 1
"#
    ))
});

/// KEYS: meta leased. ARGV: prefix, seq, generation, lease ms. Returns 1, or 0 when stale.
pub static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{KNOWN}
{NOW}
if redis.call('HGET', ARGV[1] .. 'gen', ARGV[2]) ~= ARGV[3] or not current(KEYS[2], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[4]), ARGV[2])
return 1
"#
    ))
});

/// KEYS: meta ready delayed leased wake seq. ARGV: prefix, `purge` or `delete`. Deletes
/// every message (ready, delayed, leased); `delete` also drops the queue itself. Dedup
/// marks are left to expire with their window. Purging an unknown queue is an error;
/// deleting one is not.
pub static CLEAR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"
if ARGV[2] == 'purge' then
{KNOWN}
end
local prefix = ARGV[1]
local function drop(seqs)
  for _, s in ipairs(seqs) do redis.call('DEL', prefix .. 'm:' .. s) end
end
drop(redis.call('LRANGE', KEYS[2], 0, -1))
drop(redis.call('ZRANGE', KEYS[3], 0, -1))
drop(redis.call('ZRANGE', KEYS[4], 0, -1))
drop(redis.call('ZRANGE', prefix .. 'prio', 0, -1))
for _, k in ipairs(redis.call('SMEMBERS', prefix .. 'groups')) do
  drop(redis.call('LRANGE', prefix .. 'g:' .. k, 0, -1))
  redis.call('DEL', prefix .. 'g:' .. k)
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], prefix .. 'att', prefix .. 'gen',
  prefix .. 'prio', prefix .. 'pri', prefix .. 'okey', prefix .. 'nb', prefix .. 'groups',
  prefix .. 'waiting')
if ARGV[2] == 'delete' then
  redis.call('DEL', KEYS[1], KEYS[5], KEYS[6])
end
return 1
"#
    ))
});

/// KEYS: meta ready delayed leased. ARGV: prefix. Returns `[ready, leased, delayed]`
/// after promoting what is due; ready counts the prioritized messages and those waiting
/// behind their key's head.
pub static STATS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{KNOWN}
local prefix = ARGV[1]
{ROUTE}
{PROMOTE}
local ready = redis.call('LLEN', KEYS[2]) + redis.call('ZCARD', prefix .. 'prio')
  + (tonumber(redis.call('GET', prefix .. 'waiting')) or 0)
return {{ready, redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[3])}}
"#
    ))
});

/// Idempotency claim. KEYS: the key. ARGV: lease ms. Returns `started`, `done` or `running`.
pub static IDEM_BEGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('SET', KEYS[1], 'running', 'NX', 'PX', ARGV[1]) then return 'started' end
return redis.call('GET', KEYS[1]) or 'started'
"#,
    )
});

/// Idempotency release. KEYS: the key. Deletes it only while it is `running`.
pub static IDEM_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == 'running' then redis.call('DEL', KEYS[1]) end
return 1
"#,
    )
});

/// Store insert. KEYS: the entry's hash. ARGV: value, ttl ms. Returns 1, or 0 when a live
/// entry is there (an expired one Redis has already dropped).
pub static KV_INSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'n', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#,
    )
});

/// Store replace. KEYS: the entry's hash. ARGV: expected version, value, ttl ms. Returns
/// the new version, or 0 when the entry is gone or at another version.
pub static KV_REPLACE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = redis.call('HGET', KEYS[1], 'n')
if (not n) or n ~= ARGV[1] then return 0 end
local next = tonumber(n) + 1
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'n', next)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return next
"#,
    )
});
