//! The access family's oracles on known-bad histories, and the role graph they judge with.

use std::collections::{BTreeMap, BTreeSet};

use racelab_core::access::{
    CACHED_ACROSS_CHANGE, DELTA, I_PERM, PermDecision, PermTag, RoleChange, RoleGraph,
    STALE_FILL_DEAD_KEY, i_perm, perm_coverage,
};
use racelab_core::{
    History, Note, NoteRecord, OpId, OpRecord, ProcessId, Reply, SqlOp, SqlReply, StoreOp, Tag,
    Timestamp,
};

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `u0` holds `base` {read, write}; `u1` holds `admin`, which includes `base`.
fn graph() -> RoleGraph {
    RoleGraph {
        users: BTreeMap::from([
            ("u0".to_string(), set(&["base"])),
            ("u1".to_string(), set(&["admin"])),
        ]),
        roles: BTreeMap::from([
            (
                "base".to_string(),
                (set(&["read", "write"]), BTreeSet::new()),
            ),
            ("admin".to_string(), (set(&["admin"]), set(&["base"]))),
        ]),
    }
}

fn revoke_write() -> Vec<RoleChange> {
    vec![RoleChange {
        role: "base".into(),
        perms: set(&["read"]),
        edited_user: "u0".into(),
    }]
}

struct H(History);

impl H {
    fn new() -> H {
        H(History::default())
    }

    fn op(&mut self, p: u16, at_ms: u64, tag: PermTag, result: Reply) {
        let at = Timestamp::from_ms(at_ms);
        let id = OpId(self.0.ops.len() as u64 + 1);
        self.0.ops.push(OpRecord {
            process: ProcessId(p),
            id,
            tag: Tag::new(tag),
            op: StoreOp::Sql(SqlOp::Commit),
            invoked_at: at,
            applied_at: Some(at),
            durable_at: Some(at),
            lost_at: None,
            result: Some(result),
            completed_at: Some(at),
            timed_out: false,
        });
    }

    fn commit(&mut self, at_ms: u64) {
        let reply = Reply::Sql(SqlReply::Committed);
        self.op(9, at_ms, PermTag::Commit { change: 0 }, reply);
    }

    /// Request `r` of `user` on instance `i`: its first operation at `start`, a fill at
    /// `fill` if any.
    fn request(&mut self, r: u32, i: u32, user: &str, start: u64, fill: Option<u64>) {
        let ok = Reply::Sql(SqlReply::Ok);
        self.op(i as u16, start, PermTag::Lookup { request: r }, ok.clone());
        if let Some(at) = fill {
            let tag = PermTag::Fill {
                request: r,
                instance: i,
                user: user.into(),
                epoch: None,
            };
            self.op(i as u16, at, tag, ok);
        }
    }

    fn decide(&mut self, r: u32, i: u32, user: &str, perm: &str, allowed: bool, at_ms: u64) {
        self.0.notes.push(NoteRecord {
            at: Timestamp::from_ms(at_ms),
            process: ProcessId(i as u16),
            note: Note::new(PermDecision {
                request: r,
                instance: i,
                user: user.into(),
                perm: perm.into(),
                allowed,
                perms: String::new(),
            }),
        });
    }
}

#[test]
fn the_role_graph_follows_included_roles_and_stops_on_cycles() {
    let g = graph();
    assert_eq!(g.effective("u0"), set(&["read", "write"]));
    assert_eq!(g.effective("u1"), set(&["admin", "read", "write"]));
    assert_eq!(g.effective("nobody"), BTreeSet::new());
    let mut cyclic = g.clone();
    if let Some(base) = cyclic.roles.get_mut("base") {
        base.1 = set(&["admin"]);
    }
    assert_eq!(cyclic.effective("u0"), set(&["admin", "read", "write"]));
}

#[test]
fn an_indirect_holder_allowed_a_revoked_permission_after_delta_breaks_i_perm() {
    let mut h = H::new();
    h.request(1, 1, "u1", 100, Some(110));
    h.decide(1, 1, "u1", "write", true, 110);
    h.commit(500);
    h.request(2, 1, "u1", 1_500, None);
    h.decide(2, 1, "u1", "write", true, 1_500);
    let verdict = i_perm(&h.0, &graph(), &revoke_write(), DELTA);
    assert_eq!(verdict.broken(), [I_PERM.name], "{}", verdict.explanation());
    assert_eq!(verdict.violations.len(), 1);
    let text = verdict.explanation();
    assert!(text.contains("r2"), "{text}");
    assert!(text.contains("allowed u1 write"), "{text}");
    assert!(
        text.contains("u1's permissions were {admin,read}"),
        "{text}"
    );
    let mut verdict = verdict;
    perm_coverage(&h.0, DELTA, &mut verdict);
    assert_eq!(verdict.sometimes.get(CACHED_ACROSS_CHANGE.name), Some(&1));
}

#[test]
fn a_stale_decision_within_delta_of_the_change_is_allowed() {
    let mut h = H::new();
    h.commit(500);
    h.request(2, 0, "u0", 900, None);
    h.decide(2, 0, "u0", "write", true, 900);
    assert!(i_perm(&h.0, &graph(), &revoke_write(), DELTA).holds());
}

#[test]
fn denying_a_permission_the_user_holds_breaks_i_perm_too() {
    let mut h = H::new();
    h.request(1, 0, "u0", 100, None);
    h.decide(1, 0, "u0", "write", false, 100);
    let verdict = i_perm(&h.0, &graph(), &revoke_write(), DELTA);
    assert_eq!(verdict.broken(), [I_PERM.name]);
}

#[test]
fn a_change_that_never_committed_changes_nothing() {
    let mut h = H::new();
    h.op(
        9,
        500,
        PermTag::Commit { change: 0 },
        Reply::Sql(SqlReply::RolledBack),
    );
    h.request(2, 0, "u0", 1_500, None);
    h.decide(2, 0, "u0", "write", true, 1_500);
    assert!(i_perm(&h.0, &graph(), &revoke_write(), DELTA).holds());
}

#[test]
fn a_fill_under_a_retired_epoch_counts_as_the_protection() {
    let mut h = H::new();
    h.commit(500);
    let tag = PermTag::Fill {
        request: 1,
        instance: 0,
        user: "u0".into(),
        epoch: Some(0),
    };
    h.op(0, 700, tag, Reply::Sql(SqlReply::Ok));
    let mut verdict = i_perm(&h.0, &graph(), &revoke_write(), DELTA);
    perm_coverage(&h.0, DELTA, &mut verdict);
    assert_eq!(verdict.sometimes.get(STALE_FILL_DEAD_KEY.name), Some(&1));
}
