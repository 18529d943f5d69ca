//! The scheduler's Redis scripts, one semantic definition each over a [`KvView`], called by
//! [`ScriptName::run`](crate::ScriptName::run); the adapters carry the matching Lua
//! (`racelab_adapters::lua`) and the KV conformance test holds the two to the same answers.
//! Each runs as one atomic step; like Redis, a script that errors half-way keeps the writes it
//! made before the error (a command error ends the script with that command's error, as a
//! script returning `redis.pcall`'s error would).
//!
//! Calling convention: `KEYS[1]` is the family's key namespace ([`NAMESPACE`], so that a
//! client's key prefix reaches every key the script derives), `ARGV[1]` the node or job id,
//! then the script's own arguments. Keys: `{ns}node:{N}` (hash: `epoch`, `cap`, `hb`; its TTL
//! is the node's lease), `{ns}epoch:{N}` (the registration counter), `{ns}pool` (set of node
//! ids), `{ns}job:{J}` (hash: `state`, `node`, `epoch`, `results`), `{ns}jobs:{N}` (the
//! per-node job index), `{ns}rr` (the round-robin counter of selection).
//!
//! Every TTL comes in `ARGV` (milliseconds, 1 to 15 ASCII digits; `0`: no TTL), and so does
//! `fenced`, which switches the document's scripts (`0`: a heartbeat re-creates a missing
//! node, selection trusts the pool set, a completion is accepted unconditionally) to the
//! fenced ones (`1`: an epoch per registration checked by heartbeat, re-dispatch and
//! completion, selection checks the node's lease in the same script). Numbers read from
//! Redis that a script returns or indexes with (the epoch counter, the round-robin counter)
//! must stay within 15 digits, where Lua's doubles are exact; beyond, the script answers an
//! error after the counter's write, as the Lua does. Replies: register and heartbeat an
//! integer epoch (`-1`: the lease is gone, re-register); dispatch and reap a bulk status
//! (`bound N E skipped`, `running N E`, `queued skipped`, `done`); poll an array of job ids,
//! in byte order; complete `1` (accepted) or `0` (refused). R-004-03 adds the document's
//! selection split from its binding ([`select`], `N E` or `none`, then [`bind_to`]) and the
//! node-offline script with its re-dispatch ([`offline`], an array of lines). R-004-06 adds
//! the timeout finalize ([`finalize`]) and the binding key `{ns}binding:{J}` it reads.

use crate::ops::{KvOp, KvReply, KvView};
use crate::time::Duration;

/// The scheduler's key namespace, `KEYS[1]` of every script.
pub const NAMESPACE: &str = "sched:";

/// The job hash of `j` in [`NAMESPACE`] (read by a scheduler that follows a job's state).
pub fn job_key(j: &str) -> String {
    Ns(NAMESPACE).job(j)
}

/// The pool set in [`NAMESPACE`] (read by the node-offline monitor).
pub fn pool_key() -> String {
    Ns(NAMESPACE).pool()
}

/// The job->node binding key of `j` in [`NAMESPACE`] (R-004-06: the document's
/// `select_node.lua` line 66, a string holding the node id, written with its TTL by the
/// scheduler right after the binding, read only by the timeout finalize).
pub fn binding_key(j: &str) -> String {
    Ns(NAMESPACE).binding(j)
}

/// The largest number a script reads from Redis and returns or computes with: 15 digits,
/// exact in Lua's doubles.
const SCRIPT_NUMBER_MAX: i64 = 999_999_999_999_999;

/// The keys of one namespace.
struct Ns<'a>(&'a str);

impl Ns<'_> {
    fn node(&self, n: &str) -> String {
        format!("{}node:{n}", self.0)
    }
    fn epoch(&self, n: &str) -> String {
        format!("{}epoch:{n}", self.0)
    }
    fn pool(&self) -> String {
        format!("{}pool", self.0)
    }
    fn job(&self, j: &str) -> String {
        format!("{}job:{j}", self.0)
    }
    fn jobs(&self, n: &str) -> String {
        format!("{}jobs:{n}", self.0)
    }
    fn rr(&self) -> String {
        format!("{}rr", self.0)
    }
    fn binding(&self, j: &str) -> String {
        format!("{}binding:{j}", self.0)
    }
}

fn err(msg: &str) -> KvReply {
    KvReply::Error(format!("ERR {msg}"))
}

/// `ARGV[i + 1]` as a non-negative integer of 1 to 15 ASCII digits (leading zeros allowed).
fn int_arg(args: &[String], i: usize) -> Result<u64, KvReply> {
    let a = args.get(i).ok_or_else(|| err("missing argument"))?;
    if a.is_empty() || a.len() > 15 || !a.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("argument must be a non-negative integer"));
    }
    a.parse::<u64>().map_err(|_| err("bad integer"))
}

/// `ARGV[i + 1]` as a node or job id: present and not empty.
fn id_arg(args: &[String], i: usize) -> Result<&str, KvReply> {
    match args.get(i) {
        None => Err(err("missing argument")),
        Some(a) if a.is_empty() => Err(err("empty id")),
        Some(a) => Ok(a),
    }
}

/// `KEYS[1]`, the namespace (may be empty: the client's prefix is all there is then).
fn ns_arg(keys: &[String]) -> Result<Ns<'_>, KvReply> {
    keys.first()
        .map(|k| Ns(k.as_str()))
        .ok_or_else(|| err("missing key"))
}

/// Runs a command; an error reply ends the script with it, keeping earlier writes.
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

/// `INCRBY key 1`, whose result must stay within [`SCRIPT_NUMBER_MAX`] either way.
fn counter(view: &mut dyn KvView, key: &str, what: &str) -> Result<i64, KvReply> {
    match call(
        view,
        KvOp::IncrBy {
            key: key.into(),
            delta: 1,
        },
    )? {
        KvReply::Int(n) if n.unsigned_abs() <= SCRIPT_NUMBER_MAX.unsigned_abs() => Ok(n),
        _ => Err(err(&format!("{what} out of range"))),
    }
}

fn members(view: &mut dyn KvView, key: &str) -> Result<Vec<String>, KvReply> {
    match call(view, KvOp::SMembers { key: key.into() })? {
        KvReply::Array(items) => {
            let mut m: Vec<String> = items.into_iter().flatten().collect();
            // SMEMBERS comes in hash order; the Lua sorts it too, byte by byte.
            m.sort();
            Ok(m)
        }
        _ => Ok(Vec::new()),
    }
}

/// `register(KEYS[1]=ns; ARGV: N, node_ttl_ms, pool_ttl_ms, fenced)`.
pub fn register(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let ns = ns_arg(keys)?;
        let n = id_arg(args, 0)?;
        let (node_ttl, pool_ttl, fenced) =
            (int_arg(args, 1)?, int_arg(args, 2)?, int_arg(args, 3)?);
        let key = ns.node(n);
        let epoch = if fenced == 1 {
            let e = counter(view, &ns.epoch(n), "epoch")?;
            if e < 0 {
                return Err(err("epoch out of range"));
            }
            e
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
                key: ns.pool(),
                members: vec![n.into()],
            },
        )?;
        expire(view, &ns.pool(), pool_ttl)?;
        Ok(KvReply::Int(epoch))
    };
    run().unwrap_or_else(|e| e)
}

/// `heartbeat(KEYS[1]=ns; ARGV: N, node_ttl_ms, pool_ttl_ms, fenced, epoch)`.
pub fn heartbeat(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let ns = ns_arg(keys)?;
        let n = id_arg(args, 0)?;
        let (node_ttl, pool_ttl, fenced) =
            (int_arg(args, 1)?, int_arg(args, 2)?, int_arg(args, 3)?);
        let epoch = int_arg(args, 4)?;
        let key = ns.node(n);
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
                key: ns.pool(),
                members: vec![n.into()],
            },
        )?;
        expire(view, &ns.pool(), pool_ttl)?;
        // Invariant: at most 15 digits (`int_arg`), so it fits an i64.
        Ok(KvReply::Int(i64::try_from(epoch).unwrap_or(i64::MAX)))
    };
    run().unwrap_or_else(|e| e)
}

/// Binds job `j` to a node chosen round robin from the pool (fenced: among the members whose
/// lease is present, removing the others). Returns the status string.
fn bind(view: &mut dyn KvView, ns: &Ns<'_>, j: &str, fenced: bool) -> Result<String, KvReply> {
    let all = members(view, &ns.pool())?;
    let mut live = Vec::new();
    let mut skipped = 0;
    for m in all {
        let epoch = hget(view, &ns.node(&m), "epoch")?;
        match (fenced, epoch) {
            (true, None) => {
                skipped += 1;
                call(
                    view,
                    KvOp::SRem {
                        key: ns.pool(),
                        members: vec![m],
                    },
                )?;
            }
            (_, e) => live.push((m, e.unwrap_or_else(|| "0".into()))),
        }
    }
    let jk = ns.job(j);
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
    let rr = counter(view, &ns.rr(), "round-robin counter")?.unsigned_abs();
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
            key: ns.jobs(&node),
            members: vec![j.into()],
        },
    )?;
    Ok(format!("bound {node} {epoch} {skipped}"))
}

/// `dispatch(KEYS[1]=ns; ARGV: J, fenced)`: submit and bind; a job that exists is reaped
/// instead (the client's stable `job_id`).
pub fn dispatch(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let ns = ns_arg(keys)?;
        let j = id_arg(args, 0)?;
        let fenced = int_arg(args, 1)? == 1;
        if hget(view, &ns.job(j), "state")?.is_some() {
            return reap_existing(view, &ns, j, fenced);
        }
        Ok(KvReply::Bulk(bind(view, &ns, j, fenced)?))
    };
    run().unwrap_or_else(|e| e)
}

/// `reap(KEYS[1]=ns; ARGV: J, fenced)`: the re-dispatch decision for one job: a terminal
/// one (`done`, `timed_out`) is left alone (its state the reply), a missing job is submitted
/// again, a queued one bound, a running one whose node's lease is gone (fenced:
/// or belongs to another registration) bound again.
pub fn reap(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let ns = ns_arg(keys)?;
        let j = id_arg(args, 0)?;
        let fenced = int_arg(args, 1)? == 1;
        reap_existing(view, &ns, j, fenced)
    };
    run().unwrap_or_else(|e| e)
}

fn reap_existing(
    view: &mut dyn KvView,
    ns: &Ns<'_>,
    j: &str,
    fenced: bool,
) -> Result<KvReply, KvReply> {
    let jk = ns.job(j);
    let state = hget(view, &jk, "state")?;
    match state.as_deref() {
        Some(s @ ("done" | "timed_out")) => Ok(KvReply::Bulk(s.into())),
        Some("running") => {
            let node = hget(view, &jk, "node")?.unwrap_or_default();
            let epoch = hget(view, &jk, "epoch")?.unwrap_or_default();
            let current = hget(view, &ns.node(&node), "epoch")?;
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
                        key: ns.jobs(&node),
                        members: vec![j.into()],
                    },
                )?;
                Ok(KvReply::Bulk(bind(view, ns, j, fenced)?))
            }
        }
        _ => Ok(KvReply::Bulk(bind(view, ns, j, fenced)?)),
    }
}

/// `poll(KEYS[1]=ns; ARGV: N, fenced, epoch)`: the running jobs bound to this node (fenced:
/// to this registration).
pub fn poll(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let ns = ns_arg(keys)?;
        let n = id_arg(args, 0)?;
        let fenced = int_arg(args, 1)? == 1;
        let epoch = int_arg(args, 2)?.to_string();
        let mut out = Vec::new();
        for j in members(view, &ns.jobs(n))? {
            let jk = ns.job(&j);
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

/// `complete(KEYS[1]=ns; ARGV: J, node, epoch, fenced)`: the result of one execution.
/// Fenced: a compare-and-set (`running`, bound to this node and epoch) to `done`; otherwise
/// the document's unconditional write.
pub fn complete(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let ns = ns_arg(keys)?;
        let j = id_arg(args, 0)?;
        let node = id_arg(args, 1)?;
        let epoch = int_arg(args, 2)?.to_string();
        let fenced = int_arg(args, 3)? == 1;
        let jk = ns.job(j);
        if fenced {
            let state = hget(view, &jk, "state")?;
            let bound = hget(view, &jk, "node")?;
            let e = hget(view, &jk, "epoch")?;
            if state.as_deref() != Some("running")
                || bound.as_deref() != Some(node)
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
                key: ns.jobs(node),
                members: vec![j.into()],
            },
        )?;
        Ok(KvReply::Int(1))
    };
    run().unwrap_or_else(|e| e)
}

/// `select(KEYS[1]=ns; ARGV: J)`: the document's `select_node.lua` with the binding left to
/// a later call (assumption A9's split branch): a pool member chosen round robin, trusting
/// the pool set. Replies `N E` (the node and the epoch its hash holds, `0` if none) or
/// `none` when the pool is empty. Writes only the round-robin counter.
pub fn select(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let ns = ns_arg(keys)?;
        id_arg(args, 0)?;
        let pool = members(view, &ns.pool())?;
        if pool.is_empty() {
            return Ok(KvReply::Bulk("none".into()));
        }
        let rr = counter(view, &ns.rr(), "round-robin counter")?.unsigned_abs();
        let node = pool[(rr % pool.len() as u64) as usize].clone();
        let epoch = hget(view, &ns.node(&node), "epoch")?.unwrap_or_else(|| "0".into());
        Ok(KvReply::Bulk(format!("{node} {epoch}")))
    };
    run().unwrap_or_else(|e| e)
}

/// `bind_to(KEYS[1]=ns; ARGV: J, N, E)`: the second half of the split selection: binds `J`
/// to `N` at epoch `E` unconditionally (no liveness check, no state check). Replies
/// `bound N E 0`, as dispatch does.
pub fn bind_to(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let ns = ns_arg(keys)?;
        let j = id_arg(args, 0)?;
        let node = id_arg(args, 1)?;
        let epoch = int_arg(args, 2)?.to_string();
        call(
            view,
            KvOp::HSet {
                key: ns.job(j),
                pairs: vec![
                    ("state".into(), "running".into()),
                    ("node".into(), node.into()),
                    ("epoch".into(), epoch.clone()),
                ],
            },
        )?;
        call(
            view,
            KvOp::SAdd {
                key: ns.jobs(node),
                members: vec![j.into()],
            },
        )?;
        Ok(KvReply::Bulk(format!("bound {node} {epoch} 0")))
    };
    run().unwrap_or_else(|e| e)
}

/// `offline(KEYS[1]=ns; ARGV: N, fenced)`: the node-offline script with the re-dispatch of
/// the node's jobs, fired for a pool member whose registration is gone (a node whose hash
/// still has its `epoch` is alive: `[alive]`, nothing written). Replies an array: `offline N`,
/// then one line per job of the node's index it moved: `J bound M E skipped` or `J queued
/// skipped`.
///
/// Unfenced (the document's): removes `N` from the pool and deletes its hash, then moves each
/// job bound to `N` to a pool member chosen round robin; with no member left it fails there,
/// keeping the writes made so far (the node is out of the pool, its jobs still bound to it:
/// nothing will ever look at them again). Fenced: removes `N` from the pool and moves each
/// job bound to `N` with the fenced selection (members whose lease is present, checked in the
/// same script), which queues the job when no node is live: no error after the first write
/// that the data can cause.
pub fn offline(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let ns = ns_arg(keys)?;
        let n = id_arg(args, 0)?;
        let fenced = int_arg(args, 1)? == 1;
        let key = ns.node(n);
        if hget(view, &key, "epoch")?.is_some() {
            return Ok(KvReply::Array(vec![Some("alive".into())]));
        }
        let mut out = vec![Some(format!("offline {n}"))];
        call(
            view,
            KvOp::SRem {
                key: ns.pool(),
                members: vec![n.into()],
            },
        )?;
        if !fenced {
            call(view, KvOp::Del { key })?;
        }
        for j in members(view, &ns.jobs(n))? {
            let jk = ns.job(&j);
            let running = hget(view, &jk, "state")?.as_deref() == Some("running")
                && hget(view, &jk, "node")?.as_deref() == Some(n);
            if !running {
                continue;
            }
            let line = if fenced {
                call(
                    view,
                    KvOp::SRem {
                        key: ns.jobs(n),
                        members: vec![j.clone()],
                    },
                )?;
                bind(view, &ns, &j, true)?
            } else {
                let pool = members(view, &ns.pool())?;
                if pool.is_empty() {
                    return Err(err("no node to re-dispatch to"));
                }
                let rr = counter(view, &ns.rr(), "round-robin counter")?.unsigned_abs();
                let target = pool[(rr % pool.len() as u64) as usize].clone();
                let epoch = hget(view, &ns.node(&target), "epoch")?.unwrap_or_else(|| "0".into());
                call(
                    view,
                    KvOp::HSet {
                        key: jk,
                        pairs: vec![
                            ("node".into(), target.clone()),
                            ("epoch".into(), epoch.clone()),
                        ],
                    },
                )?;
                call(
                    view,
                    KvOp::SAdd {
                        key: ns.jobs(&target),
                        members: vec![j.clone()],
                    },
                )?;
                call(
                    view,
                    KvOp::SRem {
                        key: ns.jobs(n),
                        members: vec![j.clone()],
                    },
                )?;
                format!("bound {target} {epoch} 0")
            };
            out.push(Some(format!("{j} {line}")));
        }
        Ok(KvReply::Array(out))
    };
    run().unwrap_or_else(|e| e)
}

/// `finalize(KEYS[1]=ns; ARGV: J, fenced)`: the timeout finalize of job `J`, run by the
/// scheduler at the job's deadline (R-004-06).
///
/// Unfenced (the document's: the binding `{ns}binding:{J}` is the only thing in Redis the
/// finalize reads; the job's state lives in the scheduler's memory): `GET` the binding; if it
/// is there, write `state` `timed_out` unconditionally and reply `timed_out N` (the node the
/// binding named); if it expired, write nothing and reply `lost` when the job hash still says
/// `running` (the finalizer cannot find the node of a running job), `unbound` otherwise.
/// Fenced (the job FSM in Redis): a compare-and-set on the job's state: a job that is not
/// terminal (`done` or `timed_out`) moves to `timed_out` (reply `timed_out`), a job whose
/// record a Redis restart erased too (the deadline passed with no result kept); a terminal
/// one is left alone (reply `state S`), so that a late completion and the finalize cannot
/// both win.
pub fn finalize(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let ns = ns_arg(keys)?;
        let j = id_arg(args, 0)?;
        let fenced = int_arg(args, 1)? == 1;
        let jk = ns.job(j);
        let timed_out = || KvOp::HSet {
            key: jk.clone(),
            pairs: vec![("state".into(), "timed_out".into())],
        };
        if fenced {
            let state = hget(view, &jk, "state")?;
            return match state.as_deref() {
                Some(s @ ("done" | "timed_out")) => Ok(KvReply::Bulk(format!("state {s}"))),
                _ => {
                    call(view, timed_out())?;
                    Ok(KvReply::Bulk("timed_out".into()))
                }
            };
        }
        match call(view, KvOp::Get { key: ns.binding(j) })? {
            KvReply::Bulk(node) => {
                call(view, timed_out())?;
                Ok(KvReply::Bulk(format!("timed_out {node}")))
            }
            _ => {
                let running = hget(view, &jk, "state")?.as_deref() == Some("running");
                Ok(KvReply::Bulk(
                    if running { "lost" } else { "unbound" }.into(),
                ))
            }
        }
    };
    run().unwrap_or_else(|e| e)
}
