//! The Lua scripts. Each runs atomically on the server; every key it touches shares the
//! queue's `{name}` hash tag, so each script runs on one Cluster node.
//!
//! Keys of queue `Q` (prefix `q:{Q}:`): `meta` (exists once created), `seq` (id counter),
//! `ready` (LIST of seqs, LPUSH in, RPOP out), `delayed` (ZSET seq → due ms), `leased`
//! (ZSET seq → lease deadline ms), `wake` (LIST of tokens that blocked receivers BLPOP),
//! `m:<seq>` (STRING: the message, see below), `att` (HASH seq → attempts so far, absent
//! = 0), `gen` (HASH seq → lease generation, absent = 0), `dedup:<id>` (STRING with TTL).
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

/// Server time in ms, and promotion of due delayed messages and expired leases to ready.
/// Expects `prefix`, KEYS[2] ready, KEYS[3] delayed, KEYS[4] leased.
const PROMOTE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
if #due > 0 then
  redis.call('LPUSH', KEYS[2], unpack(due))
  redis.call('ZREM', KEYS[3], unpack(due))
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 1000)
if #expired > 0 then
  redis.call('RPUSH', KEYS[2], unpack(expired))
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
/// message: id, body (`<n>:<id><k>:<headers><payload>`), delay ms, dedup id. Returns the
/// ids (a duplicate returns the id it first went with).
///
/// One `MSET` of every new message, one `INCRBY`, `LPUSH` (or `ZADD` to `delayed`) and
/// wake-token push per batch; per message only the dedup `SET`, when it has a dedup id.
pub static SEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{KNOWN}
local prefix = ARGV[1]
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
{WAKE}
local count = (#ARGV - 2) / 4
local seq = redis.call('INCRBY', KEYS[6], count) - count
local out, ready, delayed, kv = {{}}, {{}}, {{}}, {{}}
local stamp = string.format('%d', now) .. ':'
for b = 3, #ARGV, 4 do
  local id, dd, delay = ARGV[b], ARGV[b + 3], tonumber(ARGV[b + 2])
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
    if delay > 0 then
      table.insert(delayed, now + delay)
      table.insert(delayed, s)
    else
      table.insert(ready, s)
    end
    table.insert(out, id)
  end
end
if #kv > 0 then redis.call('MSET', unpack(kv)) end
if #ready > 0 then
  redis.call('LPUSH', KEYS[2], unpack(ready))
  wake(#ready)
end
if #delayed > 0 then redis.call('ZADD', KEYS[3], unpack(delayed)) end
return out
"#
    ))
});

/// KEYS: meta ready delayed leased. ARGV: prefix, max. The next `max` ready messages,
/// next in line first, changing nothing but the promotion of due ones, in the RECEIVE
/// reply's shape: `[server now, -1, then per message: seq, generation, attempt, message]`,
/// where `attempt` is the count its next delivery would carry (deliveries so far + 1).
pub static PEEK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{KNOWN}
local prefix = ARGV[1]
{PROMOTE}
local out = {{now, -1}}
local n = tonumber(ARGV[2])
if n < 1 then return out end
local seqs = redis.call('LRANGE', KEYS[2], -n, -1)
if #seqs == 0 then return out end
local mk = {{}}
for i, s in ipairs(seqs) do mk[i] = prefix .. 'm:' .. s end
local bodies = redis.call('MGET', unpack(mk))
local atts = redis.call('HMGET', prefix .. 'att', unpack(seqs))
local gens = redis.call('HMGET', prefix .. 'gen', unpack(seqs))
for i = #seqs, 1, -1 do
  if bodies[i] then
    table.insert(out, seqs[i])
    table.insert(out, tonumber(gens[i]) or 0)
    table.insert(out, (tonumber(atts[i]) or 0) + 1)
    table.insert(out, bodies[i])
  end
end
return out
"#
    ))
});

/// KEYS: meta ready delayed leased. ARGV: prefix, max, lease ms. Returns
/// `[server now, next wake or -1, then per delivery: seq, generation, attempt, message]`.
///
/// One `RPOP key max`, one `MGET` of the messages, one `HMGET` and one `HSET` each of the
/// attempt counts and generations, and one `ZADD` of the leases per call.
pub static RECEIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{KNOWN}
local prefix = ARGV[1]
{PROMOTE}
local lease = tonumber(ARGV[3])
local out = {{now, -1}}
local seqs = redis.call('RPOP', KEYS[2], tonumber(ARGV[2]))
if seqs then
  local mk = {{}}
  for i, s in ipairs(seqs) do mk[i] = prefix .. 'm:' .. s end
  local bodies = redis.call('MGET', unpack(mk))
  local atts = redis.call('HMGET', prefix .. 'att', unpack(seqs))
  local gens = redis.call('HMGET', prefix .. 'gen', unpack(seqs))
  local leases, newa, newg = {{}}, {{}}, {{}}
  for i, s in ipairs(seqs) do
    if bodies[i] then
      local a, g = (tonumber(atts[i]) or 0) + 1, (tonumber(gens[i]) or 0) + 1
      table.insert(newa, s)
      table.insert(newa, a)
      table.insert(newg, s)
      table.insert(newg, g)
      table.insert(leases, now + lease)
      table.insert(leases, s)
      table.insert(out, s)
      table.insert(out, g)
      table.insert(out, a)
      table.insert(out, bodies[i])
    end
  end
  if #leases > 0 then
    redis.call('HSET', prefix .. 'att', unpack(newa))
    redis.call('HSET', prefix .. 'gen', unpack(newg))
    redis.call('ZADD', KEYS[4], unpack(leases))
  end
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

/// KEYS: meta leased. ARGV: prefix, then pairs seq, generation. Returns the 0-based
/// indexes of receipts that were stale (lease ended, generation moved on, already acked,
/// or named twice in one call). One `ZMSCORE`, one `HMGET` and one each of `ZREM`, `DEL`
/// and `HDEL` per call, whatever the batch size.
pub static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{KNOWN}
local prefix = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seqs = {{}}
for i = 2, #ARGV, 2 do table.insert(seqs, ARGV[i]) end
if #seqs == 0 then return {{}} end
local scores = redis.call('ZMSCORE', KEYS[2], unpack(seqs))
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
  redis.call('ZREM', KEYS[2], unpack(done))
  redis.call('DEL', unpack(keys))
  redis.call('HDEL', prefix .. 'att', unpack(done))
  redis.call('HDEL', prefix .. 'gen', unpack(done))
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
if redis.call('HGET', prefix .. 'gen', ARGV[2]) ~= ARGV[3] or not current(KEYS[4], ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('HINCRBY', prefix .. 'gen', ARGV[2], 1)
if ARGV[5] == '1' then redis.call('HINCRBY', prefix .. 'att', ARGV[2], -1) end
local delay = tonumber(ARGV[4])
if delay > 0 then
  redis.call('ZADD', KEYS[3], now + delay, ARGV[2])
else
  redis.call('RPUSH', KEYS[2], ARGV[2])
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
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], prefix .. 'att', prefix .. 'gen')
if ARGV[2] == 'delete' then
  redis.call('DEL', KEYS[1], KEYS[5], KEYS[6])
end
return 1
"#
    ))
});

/// KEYS: meta ready delayed leased. ARGV: prefix. Returns `[ready, leased, delayed]`
/// after promoting what is due.
pub static STATS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{KNOWN}
local prefix = ARGV[1]
{PROMOTE}
return {{redis.call('LLEN', KEYS[2]), redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[3])}}
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
