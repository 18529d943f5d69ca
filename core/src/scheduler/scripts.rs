//! The scheduler's Redis scripts, one semantic definition each over a [`KvView`], called by
//! [`ScriptName::run`](crate::ScriptName::run). Each runs as one atomic step; like Redis, a
//! script that errors half-way keeps the writes it made before the error.
//!
//! Keys (all `sched:` prefixed): `sched:node:{N}` (hash: `epoch`, `cap`, `hb`; its TTL is the
//! node's lease), `sched:epoch:{N}` (the registration counter), `sched:pool` (set of node
//! ids), `sched:job:{J}` (hash: `state`, `node`, `epoch`, `results`), `sched:jobs:{N}` (the
//! per-node job index), `sched:rr` (the round-robin counter of selection).
//!
//! Every TTL comes in `ARGV` (milliseconds; `0`: no TTL), and so does `fenced`, which switches
//! the document's scripts (`0`: a heartbeat re-creates a missing node, selection trusts the
//! pool set, a completion is accepted unconditionally) to the fenced ones (`1`: an epoch per
//! registration checked by heartbeat, re-dispatch and completion, selection checks the node's
//! lease in the same script). Replies: register and heartbeat an integer epoch (`-1`: the
//! lease is gone, re-register); dispatch and reap a bulk status
//! (`bound N E skipped`, `running N E`, `queued skipped`, `done`); poll an array of job ids;
//! complete `1` (accepted) or `0` (refused).

use crate::ops::{KvOp, KvReply, KvView};
use crate::time::Duration;

/// The key of node `n`'s hash.
pub fn node_key(n: &str) -> String {
    format!("sched:node:{n}")
}

/// The key of job `j`'s hash.
pub fn job_key(j: &str) -> String {
    format!("sched:job:{j}")
}

/// The pool set.
pub const POOL_KEY: &str = "sched:pool";

fn jobs_key(n: &str) -> String {
    format!("sched:jobs:{n}")
}

fn err(msg: &str) -> KvReply {
    KvReply::Error(format!("ERR {msg}"))
}

fn int_arg(args: &[String], i: usize) -> Result<u64, KvReply> {
    let a = args.get(i).ok_or_else(|| err("missing argument"))?;
    if a.is_empty() || a.len() > 15 || !a.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("argument must be a non-negative integer"));
    }
    a.parse::<u64>().map_err(|_| err("bad integer"))
}

fn key_arg(keys: &[String]) -> Result<&str, KvReply> {
    keys.first()
        .map(String::as_str)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| err("missing key"))
}

/// Runs a command; an error reply aborts the script (as `redis.call` would), keeping earlier
/// writes.
fn call(view: &mut dyn KvView, op: KvOp) -> Result<KvReply, KvReply> {
    match view.call(&op) {
        KvReply::Error(e) => Err(KvReply::Error(e)),
        r => Ok(r),
    }
}

fn hget(view: &mut dyn KvView, key: &str, field: &str) -> Result<Option<String>, KvReply> {
    match call(
        view,
        KvOp::HGet {
            key: key.into(),
            field: field.into(),
        },
    )? {
        KvReply::Bulk(v) => Ok(Some(v)),
        _ => Ok(None),
    }
}

fn expire(view: &mut dyn KvView, key: &str, ttl_ms: u64) -> Result<(), KvReply> {
    if ttl_ms > 0 {
        call(
            view,
            KvOp::PExpire {
                key: key.into(),
                ttl: Duration::from_ms(ttl_ms),
            },
        )?;
    }
    Ok(())
}

fn members(view: &mut dyn KvView, key: &str) -> Result<Vec<String>, KvReply> {
    match call(view, KvOp::SMembers { key: key.into() })? {
        KvReply::Array(items) => {
            let mut m: Vec<String> = items.into_iter().flatten().collect();
            // SMEMBERS comes in hash order; the Lua sorts it too.
            m.sort();
            Ok(m)
        }
        _ => Ok(Vec::new()),
    }
}

/// `register(KEYS[1]=N; ARGV: node_ttl_ms, pool_ttl_ms, fenced)`.
pub fn register(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let n = key_arg(keys)?;
        let (node_ttl, pool_ttl, fenced) =
            (int_arg(args, 0)?, int_arg(args, 1)?, int_arg(args, 2)?);
        let key = node_key(n);
        let epoch = if fenced == 1 {
            match call(
                view,
                KvOp::IncrBy {
                    key: format!("sched:epoch:{n}"),
                    delta: 1,
                },
            )? {
                KvReply::Int(e) => e,
                _ => return Err(err("epoch counter")),
            }
        } else {
            0
        };
        call(view, KvOp::Del { key: key.clone() })?;
        call(
            view,
            KvOp::HSet {
                key: key.clone(),
                pairs: vec![
                    ("epoch".into(), epoch.to_string()),
                    ("cap".into(), "1".into()),
                ],
            },
        )?;
        expire(view, &key, node_ttl)?;
        call(
            view,
            KvOp::SAdd {
                key: POOL_KEY.into(),
                members: vec![n.into()],
            },
        )?;
        expire(view, POOL_KEY, pool_ttl)?;
        Ok(KvReply::Int(epoch))
    };
    run().unwrap_or_else(|e| e)
}

/// `heartbeat(KEYS[1]=N; ARGV: node_ttl_ms, pool_ttl_ms, fenced, epoch)`.
pub fn heartbeat(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let n = key_arg(keys)?;
        let (node_ttl, pool_ttl, fenced) =
            (int_arg(args, 0)?, int_arg(args, 1)?, int_arg(args, 2)?);
        let epoch = int_arg(args, 3)?;
        let key = node_key(n);
        if fenced == 1 {
            // No write before the check: a missing lease or another epoch is "re-register".
            if hget(view, &key, "epoch")? != Some(epoch.to_string()) {
                return Ok(KvReply::Int(-1));
            }
        } else {
            // heartbeat_with_pool_assign.lua: HSET then EXPIRE, which re-creates a node whose
            // key expired as a partial hash.
            call(
                view,
                KvOp::HSet {
                    key: key.clone(),
                    pairs: vec![("hb".into(), "1".into())],
                },
            )?;
        }
        expire(view, &key, node_ttl)?;
        call(
            view,
            KvOp::SAdd {
                key: POOL_KEY.into(),
                members: vec![n.into()],
            },
        )?;
        expire(view, POOL_KEY, pool_ttl)?;
        Ok(KvReply::Int(epoch as i64))
    };
    run().unwrap_or_else(|e| e)
}

/// Binds job `j` to a node chosen round robin from the pool (fenced: among the members whose
/// lease is present, removing the others). Returns the status string.
fn bind(view: &mut dyn KvView, j: &str, fenced: bool) -> Result<String, KvReply> {
    let all = members(view, POOL_KEY)?;
    let mut live = Vec::new();
    let mut skipped = 0;
    for m in all {
        let epoch = hget(view, &node_key(&m), "epoch")?;
        match (fenced, epoch) {
            (true, None) => {
                skipped += 1;
                call(
                    view,
                    KvOp::SRem {
                        key: POOL_KEY.into(),
                        members: vec![m],
                    },
                )?;
            }
            (_, e) => live.push((m, e.unwrap_or_else(|| "0".into()))),
        }
    }
    let jk = job_key(j);
    if live.is_empty() {
        call(
            view,
            KvOp::HSet {
                key: jk,
                pairs: vec![("state".into(), "queued".into())],
            },
        )?;
        return Ok(format!("queued {skipped}"));
    }
    let rr = match call(
        view,
        KvOp::IncrBy {
            key: "sched:rr".into(),
            delta: 1,
        },
    )? {
        KvReply::Int(n) => n.unsigned_abs(),
        _ => 0,
    };
    let (node, epoch) = live[(rr % live.len() as u64) as usize].clone();
    call(
        view,
        KvOp::HSet {
            key: jk,
            pairs: vec![
                ("state".into(), "running".into()),
                ("node".into(), node.clone()),
                ("epoch".into(), epoch.clone()),
            ],
        },
    )?;
    call(
        view,
        KvOp::SAdd {
            key: jobs_key(&node),
            members: vec![j.into()],
        },
    )?;
    Ok(format!("bound {node} {epoch} {skipped}"))
}

/// `dispatch(KEYS[1]=J; ARGV: fenced)`: submit and bind; a job that exists is left alone
/// (the client's stable `job_id`).
pub fn dispatch(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let j = key_arg(keys)?;
        let fenced = int_arg(args, 0)? == 1;
        if hget(view, &job_key(j), "state")?.is_some() {
            return reap_existing(view, j, fenced);
        }
        Ok(KvReply::Bulk(bind(view, j, fenced)?))
    };
    run().unwrap_or_else(|e| e)
}

/// `reap(KEYS[1]=J; ARGV: fenced)`: the re-dispatch decision for one job: a missing job is
/// submitted again, a queued one bound, a running one whose node's lease is gone (fenced: or
/// belongs to another registration) bound again.
pub fn reap(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let j = key_arg(keys)?;
        let fenced = int_arg(args, 0)? == 1;
        reap_existing(view, j, fenced)
    };
    run().unwrap_or_else(|e| e)
}

fn reap_existing(view: &mut dyn KvView, j: &str, fenced: bool) -> Result<KvReply, KvReply> {
    let jk = job_key(j);
    let state = hget(view, &jk, "state")?;
    match state.as_deref() {
        Some("done") => Ok(KvReply::Bulk("done".into())),
        Some("running") => {
            let node = hget(view, &jk, "node")?.unwrap_or_default();
            let epoch = hget(view, &jk, "epoch")?.unwrap_or_default();
            let current = hget(view, &node_key(&node), "epoch")?;
            let alive = match (fenced, current) {
                (_, None) => false,
                (true, Some(e)) => e == epoch,
                (false, Some(_)) => true,
            };
            if alive {
                Ok(KvReply::Bulk(format!("running {node} {epoch}")))
            } else {
                call(
                    view,
                    KvOp::SRem {
                        key: jobs_key(&node),
                        members: vec![j.into()],
                    },
                )?;
                Ok(KvReply::Bulk(bind(view, j, fenced)?))
            }
        }
        _ => Ok(KvReply::Bulk(bind(view, j, fenced)?)),
    }
}

/// `poll(KEYS[1]=N; ARGV: fenced, epoch)`: the running jobs bound to this node (fenced: to
/// this registration).
pub fn poll(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let n = key_arg(keys)?;
        let fenced = int_arg(args, 0)? == 1;
        let epoch = int_arg(args, 1)?.to_string();
        let mut out = Vec::new();
        for j in members(view, &jobs_key(n))? {
            let jk = job_key(&j);
            let state = hget(view, &jk, "state")?;
            let node = hget(view, &jk, "node")?;
            let e = hget(view, &jk, "epoch")?;
            let mine = state.as_deref() == Some("running")
                && node.as_deref() == Some(n)
                && (!fenced || e.as_deref() == Some(epoch.as_str()));
            if mine {
                out.push(Some(j));
            }
        }
        Ok(KvReply::Array(out))
    };
    run().unwrap_or_else(|e| e)
}

/// `complete(KEYS[1]=J; ARGV: node, epoch, fenced)`: the result of one execution. Fenced: a
/// compare-and-set (`running`, bound to this node and epoch) to `done`; otherwise the
/// document's unconditional write.
pub fn complete(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let j = key_arg(keys)?;
        let node = args.first().cloned().ok_or_else(|| err("missing node"))?;
        let epoch = int_arg(args, 1)?.to_string();
        let fenced = int_arg(args, 2)? == 1;
        let jk = job_key(j);
        if fenced {
            let state = hget(view, &jk, "state")?;
            let bound = hget(view, &jk, "node")?;
            let e = hget(view, &jk, "epoch")?;
            if state.as_deref() != Some("running")
                || bound.as_deref() != Some(node.as_str())
                || e.as_deref() != Some(epoch.as_str())
            {
                return Ok(KvReply::Int(0));
            }
        }
        call(
            view,
            KvOp::HSet {
                key: jk.clone(),
                pairs: vec![("state".into(), "done".into())],
            },
        )?;
        call(
            view,
            KvOp::HIncrBy {
                key: jk,
                field: "results".into(),
                delta: 1,
            },
        )?;
        call(
            view,
            KvOp::SRem {
                key: jobs_key(&node),
                members: vec![j.into()],
            },
        )?;
        Ok(KvReply::Int(1))
    };
    run().unwrap_or_else(|e| e)
}
