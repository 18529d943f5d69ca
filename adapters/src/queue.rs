//! The at-least-once job queue on Redis, matching `racelab_sim`'s queue model (Bull's
//! semantics, which document 002's system uses).
//!
//! Every operation is one atomic Lua script, loaded once and called by SHA, over these keys
//! (all under the client's prefix):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `q:wait` | list | waiting job ids, FIFO |
//! | `q:active` | sorted set | delivered job ids, scored by their lock's deadline (ms) |
//! | `q:dlv` | hash | live delivery id → job id |
//! | `q:dedup` | hash | dedup id (Bull's `jobId`) → job id, while the job exists |
//! | `q:job:<id>` | hash | `attempts`, `delivery`, `dedup`, and the job's fields as `f:<name>` |
//! | `q:seq`, `q:dseq` | string | job and delivery id sequences |
//! | `q:stalls` | string | how many jobs were redelivered after their lock expired |
//!
//! - Enqueue adds a job unless a job with the same dedup id still exists (waiting or active).
//! - Fetch pops the oldest waiting job, makes a new delivery and locks the job until
//!   `now + lock duration`.
//! - Every script first moves jobs whose lock expired back to the end of the waiting list
//!   (Bull's stalled-job check), in job-id order, exactly as the model does before each
//!   operation. A stalled job's old delivery is dead: its ack, nack or extend answers
//!   `LockLost`, and the job is delivered again (at least once, not exactly once).
//! - Ack deletes the job (and frees its dedup id); nack puts it back at the end; extend
//!   pushes the lock's deadline to `now + lock duration`.
//!
//! Time: in production the scripts read the server's clock (`TIME`), so every worker's lock
//! is judged by one clock. Conformance tests pass a virtual `now` instead ([`QueueClock`]), so
//! the very same scripts are compared with the model without sleeping.
//!
//! Ids: the sequences start at the server's time in microseconds when they are first used,
//! so that after a restart without persistence (which loses every job) a new delivery never
//! reuses the id of a delivery a worker still holds from before the restart (its ack would
//! otherwise complete somebody else's job).

use racelab_core::{
    Delivery, DeliveryId, Duration, JobFields, JobId, QueueOp, QueueReply, Timestamp,
};

use crate::AdapterError;
use crate::redis_conn::{Answer, RedisConn, WHAT};
use crate::redis_kv::clean_prefix;

/// Whose clock decides when a job lock expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueClock {
    /// The Redis server's `TIME` (production).
    Server,
    /// A virtual time given by the caller (conformance tests against the model).
    Manual(Timestamp),
}

/// The script that every queue script starts with: the clock, id sequences and the stalled
/// job check. `KEYS`: 1 `q:seq`, 2 `q:dseq`, 3 `q:wait`, 4 `q:active`, 5 `q:dlv`,
/// 6 `q:dedup`, 7 the `q:job:` prefix, 8 `q:stalls`. `ARGV`: 1 now in ms or empty for the
/// server's clock, 2 the lock duration in ms, then the operation's own arguments.
macro_rules! preamble {
    () => {
        r#"
local function now_ms()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function next_id(key)
  if redis.call('EXISTS', key) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', key, t[1] .. string.format('%06d', tonumber(t[2])))
  end
  return string.format('%d', redis.call('INCR', key))
end
local now = now_ms()
local lock = tonumber(ARGV[2])
local stalled = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', string.format('%d', now))
if #stalled > 0 then
  table.sort(stalled, function(a, b) return tonumber(a) < tonumber(b) end)
  for _, id in ipairs(stalled) do
    local job = KEYS[7] .. id
    local d = redis.call('HGET', job, 'delivery')
    if d then redis.call('HDEL', KEYS[5], d) end
    redis.call('HDEL', job, 'delivery')
    redis.call('ZREM', KEYS[4], id)
    redis.call('RPUSH', KEYS[3], id)
  end
  redis.call('INCRBY', KEYS[8], #stalled)
end
"#
    };
}

/// `ARGV[3]` `1` with a dedup id in `ARGV[4]` (else `0`), then field name/value pairs.
const ENQUEUE: &str = concat!(
    preamble!(),
    r#"
if ARGV[3] == '1' then
  local existing = redis.call('HGET', KEYS[6], ARGV[4])
  if existing then return {'duplicate', existing} end
end
local id = next_id(KEYS[1])
local job = KEYS[7] .. id
redis.call('HSET', job, 'attempts', '0')
for i = 5, #ARGV, 2 do
  redis.call('HSET', job, 'f:' .. ARGV[i], ARGV[i + 1])
end
if ARGV[3] == '1' then
  redis.call('HSET', job, 'dedup', ARGV[4])
  redis.call('HSET', KEYS[6], ARGV[4], id)
end
redis.call('RPUSH', KEYS[3], id)
return {'enqueued', id}
"#
);

const FETCH: &str = concat!(
    preamble!(),
    r#"
local id = redis.call('LPOP', KEYS[3])
if not id then return {} end
local job = KEYS[7] .. id
local d = next_id(KEYS[2])
local attempts = redis.call('HINCRBY', job, 'attempts', 1)
redis.call('HSET', job, 'delivery', d)
redis.call('HSET', KEYS[5], d, id)
redis.call('ZADD', KEYS[4], string.format('%d', now + lock), id)
local out = {id, d, string.format('%d', attempts)}
local all = redis.call('HGETALL', job)
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'f:' then
    out[#out + 1] = string.sub(all[i], 3)
    out[#out + 1] = all[i + 1]
  end
end
return out
"#
);

/// `ARGV[3]` the delivery id.
const EXTEND: &str = concat!(
    preamble!(),
    r#"
local id = redis.call('HGET', KEYS[5], ARGV[3])
if not id then return 'lost' end
redis.call('ZADD', KEYS[4], string.format('%d', now + lock), id)
return 'ok'
"#
);

/// `ARGV[3]` the delivery id.
const ACK: &str = concat!(
    preamble!(),
    r#"
local id = redis.call('HGET', KEYS[5], ARGV[3])
if not id then return 'lost' end
local job = KEYS[7] .. id
redis.call('HDEL', KEYS[5], ARGV[3])
redis.call('ZREM', KEYS[4], id)
local dedup = redis.call('HGET', job, 'dedup')
if dedup and redis.call('HGET', KEYS[6], dedup) == id then
  redis.call('HDEL', KEYS[6], dedup)
end
redis.call('DEL', job)
return 'ok'
"#
);

/// `ARGV[3]` the delivery id.
const NACK: &str = concat!(
    preamble!(),
    r#"
local id = redis.call('HGET', KEYS[5], ARGV[3])
if not id then return 'lost' end
local job = KEYS[7] .. id
redis.call('HDEL', KEYS[5], ARGV[3])
redis.call('ZREM', KEYS[4], id)
redis.call('HDEL', job, 'delivery')
redis.call('RPUSH', KEYS[3], id)
return 'ok'
"#
);

/// How many jobs wait, how many are active, how many stalled so far.
const STATUS: &str = concat!(
    preamble!(),
    r#"
local stalls = redis.call('GET', KEYS[8]) or '0'
return {redis.call('LLEN', KEYS[3]), redis.call('ZCARD', KEYS[4]), stalls}
"#
);

/// The Lua text of each queue script, by name (for review and for the injection test).
pub fn queue_lua() -> [(&'static str, &'static str); 6] {
    [
        ("enqueue", ENQUEUE),
        ("fetch", FETCH),
        ("extend", EXTEND),
        ("ack", ACK),
        ("nack", NACK),
        ("status", STATUS),
    ]
}

/// The queue over one Redis connection.
#[derive(Debug)]
pub struct RedisQueue {
    conn: RedisConn,
    prefix: String,
    lock: Duration,
    clock: QueueClock,
    scripts: Scripts,
}

#[derive(Debug)]
struct Scripts {
    enqueue: redis::Script,
    fetch: redis::Script,
    extend: redis::Script,
    ack: redis::Script,
    nack: redis::Script,
    status: redis::Script,
}

/// Where a queue stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueStatus {
    /// Jobs waiting (stalled ones included).
    pub waiting: u64,
    /// Jobs delivered and locked.
    pub active: u64,
    /// Jobs redelivered after their lock expired, since the queue was created.
    pub stalls: u64,
}

impl RedisQueue {
    /// Connects to `url` (now, so that an unreachable server is reported here). The queue's
    /// keys are under `prefix`; a fetched job stays locked for `lock_duration` unless
    /// extended. The clock is the server's.
    pub async fn connect(
        url: &str,
        prefix: &str,
        lock_duration: Duration,
    ) -> Result<RedisQueue, AdapterError> {
        let mut q = RedisQueue::lazy(url, prefix, lock_duration)?;
        q.conn.connect().await?;
        Ok(q)
    }

    /// A queue client that connects on its first operation.
    pub fn lazy(
        url: &str,
        prefix: &str,
        lock_duration: Duration,
    ) -> Result<RedisQueue, AdapterError> {
        if lock_duration.as_ms() == 0 || i64::try_from(lock_duration.as_ms()).is_err() {
            return Err(AdapterError::InvalidInput(format!(
                "the queue's lock duration must be 1..=i64::MAX ms, not {}",
                lock_duration.as_ms()
            )));
        }
        Ok(RedisQueue {
            conn: RedisConn::new(url)?,
            prefix: prefix.to_string(),
            lock: lock_duration,
            clock: QueueClock::Server,
            scripts: Scripts {
                enqueue: redis::Script::new(ENQUEUE),
                fetch: redis::Script::new(FETCH),
                extend: redis::Script::new(EXTEND),
                ack: redis::Script::new(ACK),
                nack: redis::Script::new(NACK),
                status: redis::Script::new(STATUS),
            },
        })
    }

    /// Sets whose clock judges job locks from now on.
    pub fn set_clock(&mut self, clock: QueueClock) {
        self.clock = clock;
    }

    fn keys(&self) -> Vec<Vec<u8>> {
        [
            "seq", "dseq", "wait", "active", "dlv", "dedup", "job:", "stalls",
        ]
        .iter()
        .map(|k| format!("{}q:{k}", self.prefix).into_bytes())
        .collect()
    }

    fn args(&self) -> Vec<Vec<u8>> {
        let now = match self.clock {
            QueueClock::Server => Vec::new(),
            QueueClock::Manual(t) => t.as_ms().to_string().into_bytes(),
        };
        vec![now, self.lock.as_ms().to_string().into_bytes()]
    }

    async fn run(
        &mut self,
        script: &redis::Script,
        extra: Vec<Vec<u8>>,
    ) -> Result<redis::Value, AdapterError> {
        let keys = self.keys();
        let mut args = self.args();
        args.extend(extra);
        match self.conn.eval(script, &keys, &args).await? {
            Answer::Value(v) => Ok(v),
            Answer::Error(e) => Err(AdapterError::Protocol {
                what: WHAT,
                message: format!("a queue script failed: {e}"),
            }),
        }
    }

    /// Executes one queue operation.
    pub async fn execute_queue(&mut self, op: &QueueOp) -> Result<QueueReply, AdapterError> {
        match op {
            QueueOp::Enqueue { dedup, fields } => {
                let mut extra = match dedup {
                    Some(d) => vec![b"1".to_vec(), d.as_bytes().to_vec()],
                    None => vec![b"0".to_vec(), Vec::new()],
                };
                for (name, value) in fields {
                    extra.push(name.as_bytes().to_vec());
                    extra.push(value.as_bytes().to_vec());
                }
                let script = self.scripts.enqueue.clone();
                let v = self.run(&script, extra).await?;
                let (kind, id): (String, String) = parse(v, "enqueue")?;
                let job = JobId(number(&id, "job id")?);
                match kind.as_str() {
                    "enqueued" => Ok(QueueReply::Enqueued { job }),
                    "duplicate" => Ok(QueueReply::Duplicate { job }),
                    other => Err(protocol(format!("enqueue answered {other:?}"))),
                }
            }
            QueueOp::Fetch => {
                let script = self.scripts.fetch.clone();
                let v = self.run(&script, Vec::new()).await?;
                let items: Vec<String> = parse(v, "fetch")?;
                if items.is_empty() {
                    return Ok(QueueReply::Delivered(None));
                }
                if items.len() < 3 || items.len().is_multiple_of(2) {
                    return Err(protocol(format!("fetch answered {} items", items.len())));
                }
                let mut fields = JobFields::new();
                for pair in items[3..].chunks(2) {
                    if let [name, value] = pair {
                        fields.insert(name.clone(), value.clone());
                    }
                }
                Ok(QueueReply::Delivered(Some(Delivery {
                    job: JobId(number(&items[0], "job id")?),
                    id: DeliveryId(number(&items[1], "delivery id")?),
                    attempt: u32::try_from(number(&items[2], "attempt")?)
                        .map_err(|_| protocol(format!("attempt {} out of range", items[2])))?,
                    fields,
                })))
            }
            QueueOp::Extend { delivery }
            | QueueOp::Ack { delivery }
            | QueueOp::Nack { delivery } => {
                let script = match op {
                    QueueOp::Extend { .. } => self.scripts.extend.clone(),
                    QueueOp::Ack { .. } => self.scripts.ack.clone(),
                    _ => self.scripts.nack.clone(),
                };
                let v = self
                    .run(&script, vec![delivery.0.to_string().into_bytes()])
                    .await?;
                let answer: String = parse(v, "ack")?;
                match answer.as_str() {
                    "ok" => Ok(QueueReply::Acked),
                    "lost" => Ok(QueueReply::LockLost),
                    other => Err(protocol(format!("{op} answered {other:?}"))),
                }
            }
        }
    }

    /// Moves stalled jobs back and reports how many jobs wait, are active, and have stalled.
    pub async fn status(&mut self) -> Result<QueueStatus, AdapterError> {
        let script = self.scripts.status.clone();
        let v = self.run(&script, Vec::new()).await?;
        let (waiting, active, stalls): (u64, u64, u64) = parse(v, "status")?;
        Ok(QueueStatus {
            waiting,
            active,
            stalls,
        })
    }

    /// Deletes every key of this queue.
    pub async fn clean(&mut self) -> Result<u64, AdapterError> {
        let prefix = format!("{}q:", self.prefix);
        clean_prefix(&mut self.conn, &prefix).await
    }
}

fn protocol(message: String) -> AdapterError {
    AdapterError::Protocol {
        what: WHAT,
        message,
    }
}

fn parse<T: redis::FromRedisValue>(v: redis::Value, what: &str) -> Result<T, AdapterError> {
    redis::from_redis_value(v).map_err(|e| protocol(format!("{what} script reply: {e}")))
}

fn number(text: &str, what: &str) -> Result<u64, AdapterError> {
    text.parse()
        .map_err(|_| protocol(format!("{what} {text:?} is not a number")))
}
