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

use std::borrow::Cow;

use crate::ops::{KvReply, KvView};
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
        key(self.0, "node:", n)
    }
    /// [`Ns::node`] written into `buf` (for a loop over many nodes: one buffer).
    fn node_into(&self, buf: &mut String, n: &str) {
        key_into(buf, self.0, "node:", n);
    }
    fn epoch(&self, n: &str) -> String {
        key(self.0, "epoch:", n)
    }
    fn pool(&self) -> String {
        key(self.0, "pool", "")
    }
    fn job(&self, j: &str) -> String {
        key(self.0, "job:", j)
    }
    /// [`Ns::job`] written into `buf` (for a loop over many jobs: one buffer).
    fn job_into(&self, buf: &mut String, j: &str) {
        key_into(buf, self.0, "job:", j);
    }
    fn jobs(&self, n: &str) -> String {
        key(self.0, "jobs:", n)
    }
    fn rr(&self) -> String {
        key(self.0, "rr", "")
    }
    fn binding(&self, j: &str) -> String {
        key(self.0, "binding:", j)
    }
}

/// `{ns}{kind}{id}`, sized once: scripts build several keys per call, and `format!` costs
/// several times as much.
fn key(ns: &str, kind: &str, id: &str) -> String {
    let mut k = String::new();
    key_into(&mut k, ns, kind, id);
    k
}

/// [`key`] written into `buf`, replacing what it held.
fn key_into(buf: &mut String, ns: &str, kind: &str, id: &str) {
    buf.clear();
    buf.reserve(ns.len() + kind.len() + id.len());
    buf.push_str(ns);
    buf.push_str(kind);
    buf.push_str(id);
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

/// A command's reply; an error reply ends the script with it, keeping earlier writes.
fn ok(reply: KvReply) -> Result<KvReply, KvReply> {
    match reply {
        KvReply::Error(e) => Err(KvReply::Error(e)),
        r => Ok(r),
    }
}

/// `HGET key field`, owned (for a value the script keeps across later commands).
fn hget(view: &mut dyn KvView, key: &str, field: &str) -> Result<Option<String>, KvReply> {
    Ok(view.hget(key, field)?.map(Cow::into_owned))
}

/// Whether `HGET key field` is exactly `expected` (missing: no).
fn hget_is(view: &mut dyn KvView, key: &str, field: &str, expected: &str) -> Result<bool, KvReply> {
    Ok(view.hget(key, field)?.as_deref() == Some(expected))
}

/// Whether `HGET key field` is exactly the decimal text of `n` (missing: no).
fn hget_is_number(view: &mut dyn KvView, key: &str, field: &str, n: u64) -> Result<bool, KvReply> {
    Ok(view.hget(key, field)?.is_some_and(|v| is_decimal(&v, n)))
}

/// Whether `text == n.to_string()`, without writing `n` out: the canonical digits of `n`
/// (no sign, no leading zero but in "0" itself).
fn is_decimal(text: &str, n: u64) -> bool {
    let canonical = match text.as_bytes() {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    canonical && text.parse::<u64>() == Ok(n)
}

fn expire(view: &mut dyn KvView, key: &str, ttl_ms: u64) -> Result<(), KvReply> {
    if ttl_ms > 0 {
        ok(view.pexpire(key, Duration::from_ms(ttl_ms)))?;
    }
    Ok(())
}

/// `INCRBY key 1`, whose result must stay within [`SCRIPT_NUMBER_MAX`] either way.
fn counter(view: &mut dyn KvView, key: &str, what: &str) -> Result<i64, KvReply> {
    match ok(view.incr_by(key, 1))? {
        KvReply::Int(n) if n.unsigned_abs() <= SCRIPT_NUMBER_MAX.unsigned_abs() => Ok(n),
        _ => Err(err(&format!("{what} out of range"))),
    }
}

/// `SMEMBERS key`, sorted: SMEMBERS comes in hash order; the Lua sorts it too, byte by byte.
fn members(view: &mut dyn KvView, key: &str) -> Result<Vec<String>, KvReply> {
    view.members_sorted(key)
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
        ok(view.del(&key))?;
        ok(view.hset(&key, &[("epoch", &epoch.to_string()), ("cap", "1")]))?;
        expire(view, &key, node_ttl)?;
        let pool = ns.pool();
        ok(view.sadd(&pool, n))?;
        expire(view, &pool, pool_ttl)?;
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
            if !hget_is_number(view, &key, "epoch", epoch)? {
                return Ok(KvReply::Int(-1));
            }
        } else {
            // heartbeat_with_pool_assign.lua: HSET then EXPIRE, which re-creates a node whose
            // key expired as a partial hash.
            ok(view.hset(&key, &[("hb", "1")]))?;
        }
        expire(view, &key, node_ttl)?;
        let pool = ns.pool();
        ok(view.sadd(&pool, n))?;
        expire(view, &pool, pool_ttl)?;
        // Invariant: at most 15 digits (`int_arg`), so it fits an i64.
        Ok(KvReply::Int(i64::try_from(epoch).unwrap_or(i64::MAX)))
    };
    run().unwrap_or_else(|e| e)
}

/// Binds job `j` to a node chosen round robin from the pool (fenced: among the members whose
/// lease is present, removing the others). Returns the status string.
fn bind(view: &mut dyn KvView, ns: &Ns<'_>, j: &str, fenced: bool) -> Result<String, KvReply> {
    let pool = ns.pool();
    let all = members(view, &pool)?;
    let mut live = Vec::new();
    let mut skipped = 0;
    // One buffer for every member's node key.
    let mut node_key = String::new();
    for m in all {
        ns.node_into(&mut node_key, &m);
        let epoch = hget(view, &node_key, "epoch")?;
        match (fenced, epoch) {
            (true, None) => {
                skipped += 1;
                ok(view.srem(&pool, &m))?;
            }
            (_, e) => live.push((m, e.unwrap_or_else(|| "0".into()))),
        }
    }
    let jk = ns.job(j);
    if live.is_empty() {
        ok(view.hset(&jk, &[("state", "queued")]))?;
        return Ok(format!("queued {skipped}"));
    }
    let rr = counter(view, &ns.rr(), "round-robin counter")?.unsigned_abs();
    let (node, epoch) = live.swap_remove((rr % live.len() as u64) as usize);
    ok(view.hset(
        &jk,
        &[("state", "running"), ("node", &node), ("epoch", &epoch)],
    ))?;
    ok(view.sadd(&ns.jobs(&node), j))?;
    Ok(format!("bound {node} {epoch} {skipped}"))
}

/// `dispatch(KEYS[1]=ns; ARGV: J, fenced)`: submit and bind; a job that exists is reaped
/// instead (the client's stable `job_id`).
pub fn dispatch(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let ns = ns_arg(keys)?;
        let j = id_arg(args, 0)?;
        let fenced = int_arg(args, 1)? == 1;
        if view.hget(&ns.job(j), "state")?.is_some() {
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
    // The states this decision tells apart; any other counts as none.
    let state = view.hget(&jk, "state")?.and_then(|s| {
        ["done", "timed_out", "running"]
            .into_iter()
            .find(|known| *known == s)
    });
    match state {
        Some(s @ ("done" | "timed_out")) => Ok(KvReply::Bulk(s.into())),
        Some("running") => {
            let node = hget(view, &jk, "node")?.unwrap_or_default();
            let epoch = hget(view, &jk, "epoch")?.unwrap_or_default();
            let alive = match view.hget(&ns.node(&node), "epoch")? {
                None => false,
                Some(e) => !fenced || e == epoch.as_str(),
            };
            if alive {
                Ok(KvReply::Bulk(format!("running {node} {epoch}")))
            } else {
                ok(view.srem(&ns.jobs(&node), j))?;
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
        let epoch = int_arg(args, 2)?;
        let mut out = Vec::new();
        // One buffer for every job's key.
        let mut jk = String::new();
        for j in members(view, &ns.jobs(n))? {
            ns.job_into(&mut jk, &j);
            // The Lua reads the three fields first; reads write nothing, and a read that
            // fails fails on the first (the same key), so stopping at the first mismatch
            // answers the same.
            let mine = hget_is(view, &jk, "state", "running")?
                && hget_is(view, &jk, "node", n)?
                && (!fenced || hget_is_number(view, &jk, "epoch", epoch)?);
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
        let epoch = int_arg(args, 2)?;
        let fenced = int_arg(args, 3)? == 1;
        let jk = ns.job(j);
        // As in poll: stopping at the first mismatch answers the same as reading all three.
        if fenced
            && !(hget_is(view, &jk, "state", "running")?
                && hget_is(view, &jk, "node", node)?
                && hget_is_number(view, &jk, "epoch", epoch)?)
        {
            return Ok(KvReply::Int(0));
        }
        ok(view.hset(&jk, &[("state", "done")]))?;
        ok(view.hincr_by(&jk, "results", 1))?;
        ok(view.srem(&ns.jobs(node), j))?;
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
        let mut pool = members(view, &ns.pool())?;
        if pool.is_empty() {
            return Ok(KvReply::Bulk("none".into()));
        }
        let rr = counter(view, &ns.rr(), "round-robin counter")?.unsigned_abs();
        let node = pool.swap_remove((rr % pool.len() as u64) as usize);
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
        ok(view.hset(
            &ns.job(j),
            &[("state", "running"), ("node", node), ("epoch", &epoch)],
        ))?;
        ok(view.sadd(&ns.jobs(node), j))?;
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
        if view.hget(&key, "epoch")?.is_some() {
            return Ok(KvReply::Array(vec![Some("alive".into())]));
        }
        let mut out = vec![Some(format!("offline {n}"))];
        let pool_key = ns.pool();
        ok(view.srem(&pool_key, n))?;
        if !fenced {
            ok(view.del(&key))?;
        }
        let index = ns.jobs(n);
        for j in members(view, &index)? {
            let jk = ns.job(&j);
            let running = hget_is(view, &jk, "state", "running")? && hget_is(view, &jk, "node", n)?;
            if !running {
                continue;
            }
            let line = if fenced {
                ok(view.srem(&index, &j))?;
                bind(view, &ns, &j, true)?
            } else {
                let mut pool = members(view, &pool_key)?;
                if pool.is_empty() {
                    return Err(err("no node to re-dispatch to"));
                }
                let rr = counter(view, &ns.rr(), "round-robin counter")?.unsigned_abs();
                let target = pool.swap_remove((rr % pool.len() as u64) as usize);
                let epoch = hget(view, &ns.node(&target), "epoch")?.unwrap_or_else(|| "0".into());
                ok(view.hset(&jk, &[("node", &target), ("epoch", &epoch)]))?;
                ok(view.sadd(&ns.jobs(&target), &j))?;
                ok(view.srem(&index, &j))?;
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
        let timed_out: &[(&str, &str)] = &[("state", "timed_out")];
        if fenced {
            let state = hget(view, &jk, "state")?;
            return match state.as_deref() {
                Some(s @ ("done" | "timed_out")) => Ok(KvReply::Bulk(format!("state {s}"))),
                _ => {
                    ok(view.hset(&jk, timed_out))?;
                    Ok(KvReply::Bulk("timed_out".into()))
                }
            };
        }
        match view.get(&ns.binding(j))?.map(Cow::into_owned) {
            Some(node) => {
                ok(view.hset(&jk, timed_out))?;
                Ok(KvReply::Bulk(format!("timed_out {node}")))
            }
            None => {
                let running = hget_is(view, &jk, "state", "running")?;
                Ok(KvReply::Bulk(
                    if running { "lost" } else { "unbound" }.into(),
                ))
            }
        }
    };
    run().unwrap_or_else(|e| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `is_decimal` is `text == n.to_string()`, on canonical and near-miss texts.
    #[test]
    fn is_decimal_is_comparing_with_the_written_number() {
        let texts = [
            "0",
            "00",
            "7",
            "07",
            "+7",
            "-7",
            " 7",
            "7 ",
            "",
            "12",
            "120",
            "1e2",
            "18446744073709551615",
            "18446744073709551616",
            "999999999999999",
        ];
        let numbers = [0, 7, 12, 120, 999_999_999_999_999, u64::MAX];
        let mut matches = 0;
        for text in texts {
            for n in numbers {
                assert_eq!(is_decimal(text, n), text == n.to_string(), "{text:?} {n}");
                matches += usize::from(is_decimal(text, n));
            }
        }
        assert_eq!(matches, 6, "each number matches its own text once");
    }
}
