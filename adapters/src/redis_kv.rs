//! `KvOp` over real Redis. Each named script's Lua text lives here; its semantics, in
//! `racelab_core::ScriptName::run`, are the reference, and the conformance tests hold the two
//! to the same answers. Scripts are loaded once and called by SHA (`EVALSHA`), and loaded
//! again when Redis answers `NOSCRIPT` (a restarted server).
//!
//! Keys and values travel only as `KEYS` and `ARGV` (and as command arguments); nothing is
//! ever spliced into script text. Every key gets the client's prefix, so tests and tenants
//! sharing a server never see each other's keys.

use std::collections::BTreeMap;

use racelab_core::{Duration, KvOp, KvReply, ScriptName, SetCondition};

use crate::AdapterError;
use crate::redis_conn::{Answer, RedisConn, WHAT};

/// The Lua text of a named script. Arguments arrive only as `KEYS` and `ARGV`.
///
/// Both mirror [`ScriptName::run`]: extra keys or arguments are ignored, too few are an
/// error reply before any write, and `compare_and_extend`'s TTL must be 1 to 15 ASCII
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
if redis.call('GET', KEYS[1]) == ARGV[1] then
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
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
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

fn kv_reply(answer: Answer) -> Result<KvReply, AdapterError> {
    match answer {
        Answer::Error(e) => Ok(KvReply::Error(e)),
        Answer::Value(v) => {
            match v {
                redis::Value::Nil => Ok(KvReply::Nil),
                redis::Value::Okay => Ok(KvReply::Ok),
                redis::Value::SimpleString(s) if s == "OK" => Ok(KvReply::Ok),
                redis::Value::SimpleString(s) => Ok(KvReply::Bulk(s)),
                redis::Value::Int(n) => Ok(KvReply::Int(n)),
                redis::Value::BulkString(bytes) => String::from_utf8(bytes)
                    .map(KvReply::Bulk)
                    .map_err(|e| AdapterError::Protocol {
                        what: WHAT,
                        message: format!("a value is not UTF-8 ({e}); racelab stores only text"),
                    }),
                other => Err(AdapterError::Protocol {
                    what: WHAT,
                    message: format!("unexpected reply {other:?}"),
                }),
            }
        }
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
