//! The job FSM's one Redis script, `sched_transition` ([`ScriptName::SchedTransition`]):
//! one semantic definition over a [`KvView`], run by [`ScriptName::run`]; the adapters carry
//! the matching Lua and the KV conformance test holds the two to the same answers.
//!
//! `KEYS[1]` is the scheduler's namespace (as for every scheduler script), `ARGV`: job id,
//! `cas` (`1`: a compare-and-set; anything else: the document's unconditional write), the
//! expected state (`none` for a missing record) and version, the new state, the transition
//! id. The record is the hash `{ns}fsm:{J}` with `state`, `version` and `tx` (the id of the
//! last transition applied).
//!
//! - Unconditional (`job_fsm_to_*` as the document's code writes them): `HSET state new tx
//!   id`, then `HINCRBY version 1`; replies `ok FROM TO V` (the state it overwrote, `none`
//!   if there was no record). A `version` that is not an integer fails the `HINCRBY` after
//!   the `HSET`, whose write stays (Redis has no rollback).
//! - CAS: the transition must be a declared one (an error before any read otherwise). If the
//!   record's `tx` is this transition's id, the retry of an applied transition: `dup S V`,
//!   nothing written. If the record is at the expected state and version: `HSET state new
//!   version V+1 tx id`, `ok FROM TO V+1`. Otherwise `no S V`, nothing written: the caller
//!   learns the state it must follow from the reply. A version that is not 1 to 15 digits
//!   never matches.
//!
//! [`ScriptName::SchedTransition`]: crate::ScriptName::SchedTransition
//! [`ScriptName::run`]: crate::ScriptName::run

use std::borrow::Cow;

use super::JobState;
use crate::ops::{KvReply, KvView};

/// The largest version: 15 digits, exact in Lua's doubles.
const VERSION_MAX: u64 = 999_999_999_999_999;

/// The FSM record of job `j` in namespace `ns`.
pub(crate) fn record_key(ns: &str, j: &str) -> String {
    // Sized once, without `format!`: the script builds it on every call.
    let mut k = String::with_capacity(ns.len() + "fsm:".len() + j.len());
    k.push_str(ns);
    k.push_str("fsm:");
    k.push_str(j);
    k
}

fn err(msg: &str) -> KvReply {
    KvReply::Error(format!("ERR {msg}"))
}

fn arg(args: &[String], i: usize) -> Result<&str, KvReply> {
    args.get(i)
        .map(String::as_str)
        .ok_or_else(|| err("missing argument"))
}

fn id_arg(args: &[String], i: usize) -> Result<&str, KvReply> {
    match arg(args, i)? {
        "" => Err(err("empty id")),
        a => Ok(a),
    }
}

/// 1 to 15 ASCII digits (leading zeros allowed).
fn number(text: &str) -> Option<u64> {
    let digits = !text.is_empty() && text.len() <= 15 && text.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| text.parse().ok()).flatten()
}

fn int_arg(args: &[String], i: usize) -> Result<u64, KvReply> {
    number(arg(args, i)?).ok_or_else(|| err("argument must be a non-negative integer"))
}

/// A state argument: a state's name, or `none` where `none` is allowed.
fn state_arg(args: &[String], i: usize, none: bool) -> Result<Option<JobState>, KvReply> {
    let a = arg(args, i)?;
    match JobState::parse(a) {
        Some(s) => Ok(Some(s)),
        None if none && a == "none" => Ok(None),
        None => Err(err("unknown state")),
    }
}

/// A command's reply; an error reply ends the script with it, keeping earlier writes.
fn ok(reply: KvReply) -> Result<KvReply, KvReply> {
    match reply {
        KvReply::Error(e) => Err(KvReply::Error(e)),
        r => Ok(r),
    }
}

fn hget(view: &mut dyn KvView, key: &str, field: &str) -> Result<Option<String>, KvReply> {
    Ok(view.hget(key, field)?.map(Cow::into_owned))
}

/// `transition(KEYS[1]=ns; ARGV: J, cas, expected_state, expected_version, new_state, tx)`.
pub fn transition(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let mut run = || -> Result<KvReply, KvReply> {
        let ns = keys.first().ok_or_else(|| err("missing key"))?;
        let j = id_arg(args, 0)?;
        let cas = int_arg(args, 1)? == 1;
        let expected = state_arg(args, 2, true)?;
        let expected_version = int_arg(args, 3)?;
        let new = state_arg(args, 4, false)?.ok_or_else(|| err("unknown state"))?;
        let tx = id_arg(args, 5)?;
        let key = record_key(ns, j);
        if !cas {
            let prev = hget(view, &key, "state")?.unwrap_or_else(|| "none".into());
            ok(view.hset(&key, &[("state", new.as_str()), ("tx", tx)]))?;
            let v = match ok(view.hincr_by(&key, "version", 1))? {
                KvReply::Int(v) if v.unsigned_abs() <= VERSION_MAX => v,
                _ => return Err(err("version out of range")),
            };
            return Ok(KvReply::Bulk(format!("ok {prev} {} {v}", new.as_str())));
        }
        if !JobState::declared(expected, new) {
            return Err(err("undeclared transition"));
        }
        if expected_version >= VERSION_MAX {
            return Err(err("version out of range"));
        }
        let state = hget(view, &key, "state")?.unwrap_or_else(|| "none".into());
        let version = hget(view, &key, "version")?.unwrap_or_else(|| "0".into());
        if view.hget(&key, "tx")?.as_deref() == Some(tx) {
            return Ok(KvReply::Bulk(format!("dup {state} {version}")));
        }
        let expected_text = expected.map_or("none", JobState::as_str);
        if state != expected_text || number(&version) != Some(expected_version) {
            return Ok(KvReply::Bulk(format!("no {state} {version}")));
        }
        let next = expected_version + 1;
        ok(view.hset(
            &key,
            &[
                ("state", new.as_str()),
                ("version", &next.to_string()),
                ("tx", tx),
            ],
        ))?;
        Ok(KvReply::Bulk(format!(
            "ok {expected_text} {} {next}",
            new.as_str()
        )))
    };
    run().unwrap_or_else(|e| e)
}
