//! `KvOp` over real Redis. Each named script's Lua text lives here; its semantics, in
//! `racelab_core::ScriptName::run`, are the reference, and the conformance tests hold the two
//! to the same answers. Scripts are loaded once and called by SHA (`EVALSHA`), and loaded
//! again when Redis answers `NOSCRIPT` (a restarted server).
//!
//! Keys and values travel only as `KEYS` and `ARGV` (and as command arguments); nothing is
//! ever spliced into script text. Every key gets the client's prefix, so tests and tenants
//! sharing a server never see each other's keys.

use std::collections::BTreeMap;

use racelab_core::{Duration, KvOp, KvReply, ScoreBound, ScriptName, SetCondition};

use crate::AdapterError;
use crate::redis_conn::{Answer, RedisConn, WHAT};

/// The scheduler scripts' shared helpers (core's `scheduler::scripts`, line by line): a
/// command's error ends the script with that error and keeps the writes before it (`cmd`
/// keeps it in `failure` and raises a Lua error, `sched_run!` returns it: Redis 7's `pcall`
/// hands a raised table back as a string, so the reply travels beside the error); `ARGV` numbers are 1 to 15 ASCII digits, used as
/// their canonical text (leading zeros stripped, as `PEXPIRE` wants); counters read back from
/// Redis must stay within 15 digits, where Lua's doubles are exact; `SMEMBERS` is sorted
/// byte by byte (Lua's `<` on strings follows the server's collation locale).
macro_rules! sched_prelude {
    () => {
        r#"
local failure = nil
local function fail(msg)
  failure = redis.error_reply('ERR ' .. msg)
  error('script error')
end
local function cmd(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then
    failure = r
    error('command error')
  end
  return r
end
local function ns_arg()
  if #KEYS < 1 then
    fail('missing key')
  end
  return KEYS[1]
end
local function id_arg(i)
  local a = ARGV[i]
  if a == nil then
    fail('missing argument')
  end
  if #a == 0 then
    fail('empty id')
  end
  return a
end
local function int_arg(i)
  local a = ARGV[i]
  if a == nil then
    fail('missing argument')
  end
  if #a == 0 or #a > 15 or not string.match(a, '^%d+$') then
    fail('argument must be a non-negative integer')
  end
  local c = string.gsub(a, '^0+', '')
  if c == '' then
    c = '0'
  end
  return c
end
local function hget(key, field)
  local v = cmd('HGET', key, field)
  if v == false then
    return nil
  end
  return v
end
local function expire(key, ttl)
  if ttl ~= '0' then
    cmd('PEXPIRE', key, ttl)
  end
end
local function counter(key, what)
  local n = cmd('INCRBY', key, 1)
  if math.abs(n) > 999999999999999 then
    fail(what .. ' out of range')
  end
  return n
end
local function less(a, b)
  local len = math.min(#a, #b)
  for i = 1, len do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end
local function members(key)
  local m = cmd('SMEMBERS', key)
  table.sort(m, less)
  return m
end
"#
    };
}

/// The node's registration and heartbeat, shared by `register`, `heartbeat` and
/// `sched_versioned` (which passes its own arguments after the version and the mode): the
/// node TTL, pool TTL and `fenced` switch (and, for a heartbeat, the epoch) are `ARGV[at]`
/// onwards, checked before any write.
macro_rules! sched_beats {
    () => {
        r#"
local function register(ns, n, at)
  local node_ttl = int_arg(at)
  local pool_ttl = int_arg(at + 1)
  local fenced = int_arg(at + 2) == '1'
  local key = ns .. 'node:' .. n
  local epoch = 0
  if fenced then
    epoch = counter(ns .. 'epoch:' .. n, 'epoch')
    if epoch < 0 then
      fail('epoch out of range')
    end
  end
  cmd('DEL', key)
  cmd('HSET', key, 'epoch', string.format('%d', epoch), 'cap', '1')
  expire(key, node_ttl)
  cmd('SADD', ns .. 'pool', n)
  expire(ns .. 'pool', pool_ttl)
  return epoch
end
local function heartbeat(ns, n, at)
  local node_ttl = int_arg(at)
  local pool_ttl = int_arg(at + 1)
  local fenced = int_arg(at + 2) == '1'
  local epoch = int_arg(at + 3)
  local key = ns .. 'node:' .. n
  if fenced then
    if hget(key, 'epoch') ~= epoch then
      return -1
    end
  else
    cmd('HSET', key, 'hb', '1')
  end
  expire(key, node_ttl)
  cmd('SADD', ns .. 'pool', n)
  expire(ns .. 'pool', pool_ttl)
  return tonumber(epoch)
end
"#
    };
}

/// Selection and binding (`bind`) and the re-dispatch decision (`reap_existing`), shared by
/// the dispatch and reap scripts.
macro_rules! sched_bind {
    () => {
        r#"
local function bind(ns, j, fenced)
  local live = {}
  local skipped = 0
  for _, m in ipairs(members(ns .. 'pool')) do
    local e = hget(ns .. 'node:' .. m, 'epoch')
    if fenced and e == nil then
      skipped = skipped + 1
      cmd('SREM', ns .. 'pool', m)
    else
      live[#live + 1] = {m, e or '0'}
    end
  end
  local jk = ns .. 'job:' .. j
  if #live == 0 then
    cmd('HSET', jk, 'state', 'queued')
    return 'queued ' .. skipped
  end
  local rr = math.abs(counter(ns .. 'rr', 'round-robin counter'))
  local pick = live[(rr % #live) + 1]
  cmd('HSET', jk, 'state', 'running', 'node', pick[1], 'epoch', pick[2])
  cmd('SADD', ns .. 'jobs:' .. pick[1], j)
  return 'bound ' .. pick[1] .. ' ' .. pick[2] .. ' ' .. skipped
end
local function reap_existing(ns, j, fenced)
  local jk = ns .. 'job:' .. j
  local state = hget(jk, 'state')
  if state == 'done' or state == 'timed_out' then
    return state
  end
  if state == 'running' then
    local node = hget(jk, 'node') or ''
    local epoch = hget(jk, 'epoch') or ''
    local current = hget(ns .. 'node:' .. node, 'epoch')
    local alive = current ~= nil and ((not fenced) or current == epoch)
    if alive then
      return 'running ' .. node .. ' ' .. epoch
    end
    cmd('SREM', ns .. 'jobs:' .. node, j)
  end
  return bind(ns, j, fenced)
end
"#
    };
}

/// Runs `main`, turning an error it raised (a command's or the script's own) into the
/// script's error reply.
macro_rules! sched_run {
    () => {
        r#"
local ok, r = pcall(main)
if ok then
  return r
end
if failure ~= nil then
  return failure
end
return redis.error_reply('ERR ' .. tostring(r))
"#
    };
}

/// The Lua text of a named script. Arguments arrive only as `KEYS` and `ARGV`.
///
/// Both mirror [`ScriptName::run`]: extra keys or arguments are ignored, too few are an
/// error reply before any write, a lock key of another type returns `WRONGTYPE` as the
/// command gave it (`redis.pcall`, so that Redis does not append the script's name), and `compare_and_extend`'s TTL must be 1 to 15 ASCII
/// digits with a positive value (leading zeros are stripped before `PEXPIRE`, which would
/// reject them).
pub fn lua(script: ScriptName) -> &'static str {
    match script {
        ScriptName::CompareAndExtend => {
            r#"
if #KEYS < 1 or #ARGV < 2 then
  return redis.error_reply('ERR compare_and_extend needs 1 key and 2 args')
end
local ttl = ARGV[2]
if #ttl == 0 or #ttl > 15 or not string.match(ttl, '^%d+$') or tonumber(ttl) <= 0 then
  return redis.error_reply('ERR ttl must be a positive integer')
end
ttl = string.gsub(ttl, '^0+', '')
local current = redis.pcall('GET', KEYS[1])
if type(current) == 'table' and current.err then
  return current
end
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 1
end
return 0
"#
        }
        ScriptName::CompareAndDelete => {
            r#"
if #KEYS < 1 or #ARGV < 1 then
  return redis.error_reply('ERR compare_and_delete needs 1 key and 1 arg')
end
local current = redis.pcall('GET', KEYS[1])
if type(current) == 'table' and current.err then
  return current
end
if current == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#
        }
        ScriptName::SetIfNewer => {
            r#"
if #KEYS < 1 or #ARGV < 1 then
  return redis.error_reply('ERR set_if_newer needs 1 key and a version')
end
if (#ARGV - 1) % 2 ~= 0 then
  return redis.error_reply('ERR set_if_newer needs field-value pairs')
end
local function version(v)
  if type(v) ~= 'string' or #v == 0 or #v > 15 or not string.match(v, '^%d+$') then
    return nil
  end
  return tonumber(v)
end
local new = version(ARGV[1])
if new == nil then
  return redis.error_reply('ERR version must be 1 to 15 digits')
end
local stored = redis.pcall('HGET', KEYS[1], 'version')
if type(stored) == 'table' and stored.err then
  return stored
end
local current = version(stored) or -1
if current >= new then
  return 0
end
local args = {'version', ARGV[1]}
for i = 2, #ARGV do
  args[#args + 1] = ARGV[i]
end
local set = redis.pcall('HSET', KEYS[1], unpack(args))
if type(set) == 'table' and set.err then
  return set
end
return 1
"#
        }
        ScriptName::CompareAndDeleteVersioned => {
            r#"
if #KEYS < 1 or #ARGV < 3 then
  return redis.error_reply('ERR compare_and_delete_versioned needs 1 key and 3 args')
end
local function version(v)
  if type(v) ~= 'string' or #v == 0 or #v > 15 or not string.match(v, '^%d+$') then
    return nil
  end
  return tonumber(v)
end
local mine = version(ARGV[3])
if mine == nil then
  return redis.error_reply('ERR version must be 1 to 15 digits')
end
local current = redis.pcall('HGET', KEYS[1], ARGV[1])
if type(current) == 'table' and current.err then
  return current
end
if current ~= ARGV[2] then
  return 0
end
local stored = redis.pcall('HGET', KEYS[1], 'version')
if type(stored) == 'table' and stored.err then
  return stored
end
if (version(stored) or -1) > mine then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
"#
        }
        ScriptName::DeductIfEnough => {
            r#"
if #KEYS < 1 or #ARGV < 2 then
  return redis.error_reply('ERR deduct_if_enough needs 1 key and 2 args')
end
local amount = ARGV[2]
if #amount == 0 or #amount > 15 or not string.match(amount, '^%d+$') then
  return redis.error_reply('ERR amount must be 1 to 15 digits')
end
amount = tonumber(amount)
local current = redis.pcall('HGET', KEYS[1], ARGV[1])
if type(current) == 'table' and current.err then
  return current
end
if type(current) ~= 'string' then
  return 0
end
local digits = string.match(current, '^%-?(%d+)$')
if digits == nil or #digits > 15 then
  return 0
end
if tonumber(current) < amount then
  return 0
end
-- The delta as canonical text: Lua would print -0 for an amount of 0, and 15-digit numbers
-- in exponent notation, neither of which HINCRBY accepts.
local canon = string.gsub(ARGV[2], '^0+', '')
local delta = '0'
if #canon > 0 then
  delta = '-' .. canon
end
local left = redis.pcall('HINCRBY', KEYS[1], ARGV[1], delta)
if type(left) == 'table' and left.err then
  return left
end
return 1
"#
        }
        ScriptName::SchedRegister => concat!(
            sched_prelude!(),
            sched_beats!(),
            r#"
local function main()
  local ns = ns_arg()
  local n = id_arg(1)
  return register(ns, n, 2)
end
"#,
            sched_run!()
        ),
        ScriptName::SchedHeartbeat => concat!(
            sched_prelude!(),
            sched_beats!(),
            r#"
local function main()
  local ns = ns_arg()
  local n = id_arg(1)
  return heartbeat(ns, n, 2)
end
"#,
            sched_run!()
        ),
        ScriptName::SchedDispatch => concat!(
            sched_prelude!(),
            sched_bind!(),
            r#"
local function main()
  local ns = ns_arg()
  local j = id_arg(1)
  local fenced = int_arg(2) == '1'
  if hget(ns .. 'job:' .. j, 'state') ~= nil then
    return reap_existing(ns, j, fenced)
  end
  return bind(ns, j, fenced)
end
"#,
            sched_run!()
        ),
        ScriptName::SchedReap => concat!(
            sched_prelude!(),
            sched_bind!(),
            r#"
local function main()
  local ns = ns_arg()
  local j = id_arg(1)
  local fenced = int_arg(2) == '1'
  return reap_existing(ns, j, fenced)
end
"#,
            sched_run!()
        ),
        ScriptName::SchedPoll => concat!(
            sched_prelude!(),
            r#"
local function main()
  local ns = ns_arg()
  local n = id_arg(1)
  local fenced = int_arg(2) == '1'
  local epoch = int_arg(3)
  local out = {}
  for _, j in ipairs(members(ns .. 'jobs:' .. n)) do
    local jk = ns .. 'job:' .. j
    local state = hget(jk, 'state')
    local node = hget(jk, 'node')
    local e = hget(jk, 'epoch')
    if state == 'running' and node == n and ((not fenced) or e == epoch) then
      out[#out + 1] = j
    end
  end
  return out
end
"#,
            sched_run!()
        ),
        ScriptName::SchedComplete => concat!(
            sched_prelude!(),
            r#"
local function main()
  local ns = ns_arg()
  local j = id_arg(1)
  local node = id_arg(2)
  local epoch = int_arg(3)
  local fenced = int_arg(4) == '1'
  local jk = ns .. 'job:' .. j
  if fenced then
    local state = hget(jk, 'state')
    local bound = hget(jk, 'node')
    local e = hget(jk, 'epoch')
    if state ~= 'running' or bound ~= node or e ~= epoch then
      return 0
    end
  end
  cmd('HSET', jk, 'state', 'done')
  cmd('HINCRBY', jk, 'results', 1)
  cmd('SREM', ns .. 'jobs:' .. node, j)
  return 1
end
"#,
            sched_run!()
        ),
        ScriptName::SchedSelect => concat!(
            sched_prelude!(),
            r#"
local function main()
  local ns = ns_arg()
  id_arg(1)
  local pool = members(ns .. 'pool')
  if #pool == 0 then
    return 'none'
  end
  local rr = math.abs(counter(ns .. 'rr', 'round-robin counter'))
  local node = pool[(rr % #pool) + 1]
  local epoch = hget(ns .. 'node:' .. node, 'epoch') or '0'
  return node .. ' ' .. epoch
end
"#,
            sched_run!()
        ),
        ScriptName::SchedBind => concat!(
            sched_prelude!(),
            r#"
local function main()
  local ns = ns_arg()
  local j = id_arg(1)
  local node = id_arg(2)
  local epoch = int_arg(3)
  cmd('HSET', ns .. 'job:' .. j, 'state', 'running', 'node', node, 'epoch', epoch)
  cmd('SADD', ns .. 'jobs:' .. node, j)
  return 'bound ' .. node .. ' ' .. epoch .. ' 0'
end
"#,
            sched_run!()
        ),
        ScriptName::SchedOffline => concat!(
            sched_prelude!(),
            sched_bind!(),
            r#"
local function main()
  local ns = ns_arg()
  local n = id_arg(1)
  local fenced = int_arg(2) == '1'
  local key = ns .. 'node:' .. n
  if hget(key, 'epoch') ~= nil then
    return {'alive'}
  end
  local out = {'offline ' .. n}
  cmd('SREM', ns .. 'pool', n)
  if not fenced then
    cmd('DEL', key)
  end
  for _, j in ipairs(members(ns .. 'jobs:' .. n)) do
    local jk = ns .. 'job:' .. j
    if hget(jk, 'state') == 'running' and hget(jk, 'node') == n then
      local line
      if fenced then
        cmd('SREM', ns .. 'jobs:' .. n, j)
        line = bind(ns, j, true)
      else
        -- The document's loop indexes the pool as it finds it: with no member left it meets
        -- a runtime error here, after the writes above (made explicit, so that its text is
        -- the model's).
        local pool = members(ns .. 'pool')
        if #pool == 0 then
          fail('no node to re-dispatch to')
        end
        local rr = math.abs(counter(ns .. 'rr', 'round-robin counter'))
        local target = pool[(rr % #pool) + 1]
        local epoch = hget(ns .. 'node:' .. target, 'epoch') or '0'
        cmd('HSET', jk, 'node', target, 'epoch', epoch)
        cmd('SADD', ns .. 'jobs:' .. target, j)
        cmd('SREM', ns .. 'jobs:' .. n, j)
        line = 'bound ' .. target .. ' ' .. epoch .. ' 0'
      end
      out[#out + 1] = j .. ' ' .. line
    end
  end
  return out
end
"#,
            sched_run!()
        ),
        ScriptName::SchedFinalize => concat!(
            sched_prelude!(),
            r#"
local function main()
  local ns = ns_arg()
  local j = id_arg(1)
  local fenced = int_arg(2) == '1'
  local jk = ns .. 'job:' .. j
  if fenced then
    local state = hget(jk, 'state')
    if state == 'done' or state == 'timed_out' then
      return 'state ' .. state
    end
    cmd('HSET', jk, 'state', 'timed_out')
    return 'timed_out'
  end
  local node = cmd('GET', ns .. 'binding:' .. j)
  if node ~= false then
    cmd('HSET', jk, 'state', 'timed_out')
    return 'timed_out ' .. node
  end
  if hget(jk, 'state') == 'running' then
    return 'lost'
  end
  return 'unbound'
end
"#,
            sched_run!()
        ),
        ScriptName::SchedVersioned => concat!(
            sched_prelude!(),
            sched_beats!(),
            r#"
local function main()
  local ns = ns_arg()
  local n = id_arg(1)
  local version = int_arg(2)
  local mode = ARGV[3]
  if mode == nil then
    fail('missing argument')
  end
  if mode ~= 'register' and mode ~= 'heartbeat' then
    fail('unknown mode')
  end
  if hget(ns .. 'config', 'version') ~= version then
    return -2
  end
  if mode == 'register' then
    return register(ns, n, 4)
  end
  return heartbeat(ns, n, 4)
end
"#,
            sched_run!()
        ),
        ScriptName::SchedTransition => concat!(
            sched_prelude!(),
            r#"
local declared = {
  none = {created = true},
  created = {dispatched = true},
  dispatched = {running = true, timed_out = true},
  running = {done = true, failed = true, timed_out = true},
}
local states = {
  created = true, dispatched = true, running = true, done = true, failed = true,
  timed_out = true,
}
local function state_arg(i, none)
  local a = ARGV[i]
  if a == nil then
    fail('missing argument')
  end
  if states[a] == true or (none and a == 'none') then
    return a
  end
  fail('unknown state')
end
local function number(v)
  if type(v) ~= 'string' or #v == 0 or #v > 15 or not string.match(v, '^%d+$') then
    return nil
  end
  return tonumber(v)
end
local function main()
  local ns = ns_arg()
  local j = id_arg(1)
  local cas = int_arg(2) == '1'
  local expected = state_arg(3, true)
  local expected_version = tonumber(int_arg(4))
  local new = state_arg(5, false)
  local tx = id_arg(6)
  local key = ns .. 'fsm:' .. j
  if not cas then
    local prev = hget(key, 'state') or 'none'
    cmd('HSET', key, 'state', new, 'tx', tx)
    local v = cmd('HINCRBY', key, 'version', 1)
    if math.abs(v) > 999999999999999 then
      fail('version out of range')
    end
    return 'ok ' .. prev .. ' ' .. new .. ' ' .. string.format('%d', v)
  end
  local edges = declared[expected]
  if edges == nil or edges[new] ~= true then
    fail('undeclared transition')
  end
  if expected_version >= 999999999999999 then
    fail('version out of range')
  end
  local state = hget(key, 'state') or 'none'
  local version = hget(key, 'version') or '0'
  if hget(key, 'tx') == tx then
    return 'dup ' .. state .. ' ' .. version
  end
  if state ~= expected or number(version) ~= expected_version then
    return 'no ' .. state .. ' ' .. version
  end
  local nv = string.format('%d', expected_version + 1)
  cmd('HSET', key, 'state', new, 'version', nv, 'tx', tx)
  return 'ok ' .. expected .. ' ' .. new .. ' ' .. nv
end
"#,
            sched_run!()
        ),
        // The window as canonical text: PEXPIRE rejects leading zeros, and Lua would print a
        // 15-digit number in exponent notation.
        ScriptName::IncrWindow => {
            r#"
if #KEYS < 1 or #ARGV < 1 then
  return redis.error_reply('ERR incr_window needs 1 key and 1 arg')
end
local window = ARGV[1]
if #window == 0 or #window > 15 or not string.match(window, '^%d+$') or tonumber(window) <= 0 then
  return redis.error_reply('ERR window must be 1 to 15 digits, not zero')
end
window = string.gsub(window, '^0+', '')
-- A reply's integer is a double in Lua: a counter past 15 digits would come back rounded.
local current = redis.pcall('GET', KEYS[1])
if type(current) == 'table' and current.err then
  return current
end
if type(current) == 'string' then
  local digits = string.match(current, '^%-?(%d+)$')
  if digits ~= nil and #digits > 15 then
    return redis.error_reply('ERR incr_window counter past 15 digits')
  end
end
local count = redis.pcall('INCRBY', KEYS[1], 1)
if type(count) == 'table' and count.err then
  return count
end
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], window)
end
return count
"#
        }
    }
}

/// A Redis connection that executes [`KvOp`]s, with every key under a prefix.
#[derive(Debug)]
pub struct RedisKv {
    conn: RedisConn,
    prefix: String,
    scripts: BTreeMap<ScriptName, redis::Script>,
}

impl RedisKv {
    /// Connects to `url` (now, so that an unreachable server is reported here); every key
    /// gets `prefix` in front. Later failures reconnect before the next operation.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisKv, AdapterError> {
        let mut kv = RedisKv::lazy(url, prefix)?;
        kv.conn.connect().await?;
        for script in ScriptName::ALL {
            let mut load = redis::cmd("SCRIPT");
            load.arg("LOAD").arg(lua(script));
            if let Answer::Error(e) = kv.conn.query(&load).await? {
                return Err(AdapterError::Protocol {
                    what: WHAT,
                    message: format!("SCRIPT LOAD failed: {e}"),
                });
            }
        }
        Ok(kv)
    }

    /// A client that connects on its first operation (and loads scripts on first use).
    pub fn lazy(url: &str, prefix: &str) -> Result<RedisKv, AdapterError> {
        let scripts = ScriptName::ALL
            .iter()
            .map(|s| (*s, redis::Script::new(lua(*s))))
            .collect();
        Ok(RedisKv {
            conn: RedisConn::new(url)?,
            prefix: prefix.to_string(),
            scripts,
        })
    }

    /// The prefix in front of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// Deletes every key under the prefix (`SCAN` + `UNLINK`, never `KEYS`).
    pub async fn clean(&mut self) -> Result<u64, AdapterError> {
        clean_prefix(&mut self.conn, &self.prefix).await
    }

    /// Executes one command or script.
    pub async fn execute_kv(&mut self, op: &KvOp) -> Result<KvReply, AdapterError> {
        let mut cmd;
        match op {
            KvOp::Get { key } => {
                cmd = redis::cmd("GET");
                cmd.arg(self.key(key));
            }
            KvOp::Set {
                key,
                value,
                condition,
                ttl,
            } => {
                cmd = redis::cmd("SET");
                cmd.arg(self.key(key)).arg(value.as_bytes());
                match condition {
                    SetCondition::Always => {}
                    SetCondition::IfAbsent => {
                        cmd.arg("NX");
                    }
                    SetCondition::IfPresent => {
                        cmd.arg("XX");
                    }
                }
                if let Some(ttl) = ttl {
                    cmd.arg("PX").arg(ttl_ms(*ttl)?);
                }
            }
            KvOp::Del { key } => {
                cmd = redis::cmd("DEL");
                cmd.arg(self.key(key));
            }
            KvOp::IncrBy { key, delta } => {
                cmd = redis::cmd("INCRBY");
                cmd.arg(self.key(key)).arg(*delta);
            }
            KvOp::PExpire { key, ttl } => {
                cmd = redis::cmd("PEXPIRE");
                cmd.arg(self.key(key)).arg(ttl_ms(*ttl)?);
            }
            KvOp::PTtl { key } => {
                cmd = redis::cmd("PTTL");
                cmd.arg(self.key(key));
            }
            KvOp::DecrBy { key, delta } => {
                cmd = redis::cmd("DECRBY");
                cmd.arg(self.key(key)).arg(*delta);
            }
            KvOp::Expire { key, seconds } => {
                cmd = redis::cmd("EXPIRE");
                cmd.arg(self.key(key)).arg(*seconds);
            }
            KvOp::Ttl { key } => {
                cmd = redis::cmd("TTL");
                cmd.arg(self.key(key));
            }
            KvOp::Exists { key } => {
                cmd = redis::cmd("EXISTS");
                cmd.arg(self.key(key));
            }
            KvOp::Publish { channel, message } => {
                // Channels live under the prefix too (see `RedisPubSub`).
                cmd = redis::cmd("PUBLISH");
                cmd.arg(self.key(channel)).arg(message.as_bytes());
            }
            KvOp::HGet { key, field } => {
                cmd = redis::cmd("HGET");
                cmd.arg(self.key(key)).arg(field.as_bytes());
            }
            KvOp::HSet { key, pairs } => {
                cmd = redis::cmd("HSET");
                cmd.arg(self.key(key));
                for (field, value) in pairs {
                    cmd.arg(field.as_bytes()).arg(value.as_bytes());
                }
            }
            KvOp::HMGet { key, fields } => cmd = key_and_list("HMGET", self.key(key), fields),
            KvOp::HGetAll { key } => {
                cmd = redis::cmd("HGETALL");
                cmd.arg(self.key(key));
                let answer = self.conn.query(&cmd).await?;
                return kv_reply(answer).and_then(pairs);
            }
            KvOp::HIncrBy { key, field, delta } => {
                cmd = redis::cmd("HINCRBY");
                cmd.arg(self.key(key)).arg(field.as_bytes()).arg(*delta);
            }
            KvOp::HDel { key, fields } => cmd = key_and_list("HDEL", self.key(key), fields),
            KvOp::SAdd { key, members } => cmd = key_and_list("SADD", self.key(key), members),
            KvOp::SRem { key, members } => cmd = key_and_list("SREM", self.key(key), members),
            KvOp::SIsMember { key, member } => {
                cmd = redis::cmd("SISMEMBER");
                cmd.arg(self.key(key)).arg(member.as_bytes());
            }
            KvOp::SMembers { key } => {
                cmd = redis::cmd("SMEMBERS");
                cmd.arg(self.key(key));
            }
            KvOp::SCard { key } => {
                cmd = redis::cmd("SCARD");
                cmd.arg(self.key(key));
            }
            KvOp::ZAdd { key, pairs } => {
                cmd = redis::cmd("ZADD");
                cmd.arg(self.key(key));
                for (score, member) in pairs {
                    cmd.arg(exact_score(*score)?).arg(member.as_bytes());
                }
            }
            KvOp::ZRem { key, members } => cmd = key_and_list("ZREM", self.key(key), members),
            KvOp::ZRangeByScore { key, min, max } => {
                cmd = redis::cmd("ZRANGEBYSCORE");
                cmd.arg(self.key(key))
                    .arg(score_bound(*min)?)
                    .arg(score_bound(*max)?);
            }
            KvOp::ZScore { key, member } => {
                cmd = redis::cmd("ZSCORE");
                cmd.arg(self.key(key)).arg(member.as_bytes());
            }
            KvOp::Script { script, keys, args } => {
                let Some(s) = self.scripts.get(script) else {
                    return Err(AdapterError::InvalidInput(format!(
                        "no Lua text for script {}",
                        script.as_str()
                    )));
                };
                let s = s.clone();
                let keys: Vec<Vec<u8>> = keys.iter().map(|k| self.key(k)).collect();
                let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
                let answer = self.conn.eval(&s, &keys, &args).await?;
                return kv_reply(answer);
            }
        }
        let answer = self.conn.query(&cmd).await?;
        kv_reply(answer)
    }
}

/// A TTL as Redis accepts it: a signed 64-bit count of milliseconds.
fn ttl_ms(ttl: Duration) -> Result<i64, AdapterError> {
    i64::try_from(ttl.as_ms()).map_err(|_| {
        AdapterError::InvalidInput(format!(
            "TTL of {} ms does not fit Redis' signed 64-bit milliseconds",
            ttl.as_ms()
        ))
    })
}

/// `CMD key item [item ...]`.
fn key_and_list(name: &str, key: Vec<u8>, items: &[String]) -> redis::Cmd {
    let mut cmd = redis::cmd(name);
    cmd.arg(key);
    for item in items {
        cmd.arg(item.as_bytes());
    }
    cmd
}

/// The largest magnitude up to which every integer is exact in Redis' double scores.
const EXACT_SCORE_MAX: i64 = 1 << 53;

/// A sorted-set score, refused beyond 2^53, where Redis' doubles would round it and the
/// model's integers would not.
fn exact_score(score: i64) -> Result<i64, AdapterError> {
    if score.unsigned_abs() <= EXACT_SCORE_MAX.unsigned_abs() {
        Ok(score)
    } else {
        Err(AdapterError::InvalidInput(format!(
            "score {score} is beyond 2^53, where Redis' double scores are no longer exact"
        )))
    }
}

fn score_bound(bound: ScoreBound) -> Result<String, AdapterError> {
    Ok(match bound {
        ScoreBound::NegInf => "-inf".into(),
        ScoreBound::At(n) => exact_score(n)?.to_string(),
        ScoreBound::PosInf => "+inf".into(),
    })
}

/// `HGETALL`'s flat array `[f1, v1, f2, v2, ...]` as pairs (errors pass through).
fn pairs(reply: KvReply) -> Result<KvReply, AdapterError> {
    let KvReply::Array(items) = reply else {
        return Ok(reply);
    };
    if items.len() % 2 != 0 {
        return Err(AdapterError::Protocol {
            what: WHAT,
            message: format!("HGETALL answered an odd number of items ({})", items.len()),
        });
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(field), Some(value)) = (it.next(), it.next()) {
        let (Some(field), Some(value)) = (field, value) else {
            return Err(AdapterError::Protocol {
                what: WHAT,
                message: "HGETALL answered a nil field or value".into(),
            });
        };
        out.push((field, value));
    }
    Ok(KvReply::Pairs(out))
}

fn text(bytes: Vec<u8>) -> Result<String, AdapterError> {
    String::from_utf8(bytes).map_err(|e| AdapterError::Protocol {
        what: WHAT,
        message: format!("a value is not UTF-8 ({e}); racelab stores only text"),
    })
}

/// One element of an array reply: a bulk string or nil.
fn item(v: redis::Value) -> Result<Option<String>, AdapterError> {
    match v {
        redis::Value::Nil => Ok(None),
        redis::Value::BulkString(bytes) => text(bytes).map(Some),
        redis::Value::SimpleString(s) => Ok(Some(s)),
        other => Err(AdapterError::Protocol {
            what: WHAT,
            message: format!("unexpected array element {other:?}"),
        }),
    }
}

fn kv_reply(answer: Answer) -> Result<KvReply, AdapterError> {
    match answer {
        Answer::Error(e) => Ok(KvReply::Error(e)),
        Answer::Value(v) => match v {
            redis::Value::Nil => Ok(KvReply::Nil),
            redis::Value::Okay => Ok(KvReply::Ok),
            redis::Value::SimpleString(s) if s == "OK" => Ok(KvReply::Ok),
            redis::Value::SimpleString(s) => Ok(KvReply::Bulk(s)),
            redis::Value::Int(n) => Ok(KvReply::Int(n)),
            redis::Value::BulkString(bytes) => text(bytes).map(KvReply::Bulk),
            redis::Value::Array(items) | redis::Value::Set(items) => items
                .into_iter()
                .map(item)
                .collect::<Result<_, _>>()
                .map(KvReply::Array),
            other => Err(AdapterError::Protocol {
                what: WHAT,
                message: format!("unexpected reply {other:?}"),
            }),
        },
    }
}

/// How many keys one `SCAN` step asks for.
const SCAN_COUNT: u64 = 500;

/// Deletes every key starting with `prefix`. The prefix is matched literally (glob
/// metacharacters in it are escaped).
pub(crate) async fn clean_prefix(conn: &mut RedisConn, prefix: &str) -> Result<u64, AdapterError> {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let (next, keys): (u64, Vec<Vec<u8>>) = match conn.query(&scan).await? {
            Answer::Value(v) => redis::from_redis_value(v).map_err(|e| AdapterError::Protocol {
                what: WHAT,
                message: format!("SCAN reply: {e}"),
            })?,
            Answer::Error(e) => {
                return Err(AdapterError::Protocol {
                    what: WHAT,
                    message: format!("SCAN failed: {e}"),
                });
            }
        };
        if !keys.is_empty() {
            let mut unlink = redis::cmd("UNLINK");
            unlink.arg(&keys);
            if let Answer::Value(redis::Value::Int(n)) = conn.query(&unlink).await? {
                deleted += u64::try_from(n).unwrap_or(0);
            }
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}
