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

// ---------------------------------------------------------------------------------------------
// R-000-12: the decision function over every combination of sources, and B1/B2.

mod revocation {
    use proptest::prelude::*;
    use racelab_core::access::{
        B1, B2, KeyDecision, KeyTag, Known, Next, REVOKE_DELTA, Seen, Source, next_source,
        revocation,
    };
    use racelab_core::{
        History, KvOp, Note, NoteRecord, OpId, OpRecord, ProcessId, Reply, StoreOp, Tag, Timestamp,
        Variant,
    };

    /// What each source says for one request.
    #[derive(Clone, Copy, Debug)]
    struct Sources {
        memory: Seen,
        status: Seen,
        set: Seen,
        cache: Seen,
        db: Seen,
    }

    fn seen(options: &'static [Seen]) -> impl Strategy<Value = Seen> {
        proptest::sample::select(options)
    }

    fn sources() -> impl Strategy<Value = Sources> {
        use Seen::*;
        (
            seen(&[Revoked, Clear]),
            seen(&[Active, Revoked, Clear, Error]),
            seen(&[Revoked, Clear, Error]),
            seen(&[Revoked, Clear, Error]),
            seen(&[Revoked, Clear, Error]),
        )
            .prop_map(|(memory, status, set, cache, db)| Sources {
                memory,
                status,
                set,
                cache,
                db,
            })
    }

    /// Runs the decision function to its decision: the sources asked and the verdict.
    fn decide(variant: Variant, s: Sources) -> (Vec<Source>, bool) {
        let mut known = Known::new();
        let mut asked = Vec::new();
        for _ in 0..8 {
            match next_source(variant, &known) {
                Next::Decide(accept) => return (asked, accept),
                Next::Ask(source) => {
                    assert!(!asked.contains(&source), "{source:?} asked twice");
                    asked.push(source);
                    let value = match source {
                        Source::Memory => s.memory,
                        Source::StatusKey => s.status,
                        Source::Set => s.set,
                        Source::Cache => s.cache,
                        Source::Db => s.db,
                    };
                    known.learn(source, value);
                }
            }
        }
        panic!("no decision after 8 steps");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// B1 and B3 for Correct: an acceptance is always the database's word, whatever Redis
        /// said or failed to say; a rejection is a revoked row, a revocation entry in Redis,
        /// or no authority answering.
        #[test]
        fn correct_accepts_only_on_the_databases_word(s in sources()) {
            let (asked, accept) = decide(Variant::Correct, s);
            prop_assert!(asked.iter().all(|a| matches!(a, Source::Cache | Source::Db)));
            if accept {
                prop_assert_eq!(s.db, Seen::Clear);
                prop_assert!(asked.contains(&Source::Db));
            } else {
                prop_assert!(s.cache == Seen::Revoked || s.db != Seen::Clear);
            }
        }

        /// DocFix decides on the one Redis set alone (B3 holds) and accepts when it errs.
        #[test]
        fn docfix_decides_on_the_set_alone(s in sources()) {
            let (asked, accept) = decide(Variant::DocFix, s);
            prop_assert_eq!(asked, vec![Source::Set]);
            prop_assert_eq!(accept, s.set != Seen::Revoked);
        }

        /// Buggy's verdict depends on which source it reaches first.
        #[test]
        fn buggy_returns_early_on_the_first_source_with_an_opinion(s in sources()) {
            let (_, accept) = decide(Variant::Buggy, s);
            let expected = match (s.memory, s.status, s.set) {
                (Seen::Revoked, _, _) => false,
                (_, Seen::Active, _) => true,
                (_, Seen::Revoked, _) => false,
                (_, _, set) => set != Seen::Revoked,
            };
            prop_assert_eq!(accept, expected);
        }
    }

    #[test]
    fn the_document_and_its_fix_accept_a_revoked_key_where_correct_does_not() {
        use Seen::*;
        // The revoke path wrote the set but not the status key: Buggy accepts (B1, B3).
        let disagree = Sources {
            memory: Clear,
            status: Active,
            set: Revoked,
            cache: Revoked,
            db: Revoked,
        };
        assert!(decide(Variant::Buggy, disagree).1);
        // A failover lost the SADD, or Redis errs: DocFix accepts (B1); Correct asks the
        // database, which says revoked.
        for redis in [Clear, Error] {
            let lost = Sources {
                memory: Clear,
                status: redis,
                set: redis,
                cache: redis,
                db: Revoked,
            };
            assert!(decide(Variant::DocFix, lost).1);
            assert!(!decide(Variant::Correct, lost).1);
        }
    }

    fn op(at_ms: u64, tag: KeyTag, succeeded: bool) -> OpRecord {
        let at = Timestamp::from_ms(at_ms);
        let result = if succeeded {
            Reply::Kv(racelab_core::KvReply::Int(1))
        } else {
            Reply::Timeout
        };
        OpRecord {
            process: ProcessId(9),
            id: OpId(at_ms),
            tag: Tag::new(tag),
            op: StoreOp::Kv(KvOp::SAdd {
                key: "apikey:blacklist".into(),
                members: vec!["k1".into()],
            }),
            invoked_at: at,
            applied_at: Some(at),
            durable_at: Some(at),
            lost_at: None,
            result: Some(result),
            completed_at: Some(at),
            timed_out: !succeeded,
        }
    }

    fn decision(h: &mut History, request: u32, at_ms: u64, accepted: bool, probe: bool) {
        h.ops.push(OpRecord {
            process: ProcessId(request as u16),
            ..op(
                at_ms,
                KeyTag::Check {
                    request,
                    source: Source::Set,
                },
                true,
            )
        });
        h.notes.push(NoteRecord {
            at: Timestamp::from_ms(at_ms),
            process: ProcessId(request as u16),
            note: Note::new(KeyDecision {
                request,
                instance: 0,
                accepted,
                probe,
                by: Source::Set,
            }),
        });
    }

    #[test]
    fn accepting_a_key_revoked_more_than_delta_before_breaks_b1() {
        let mut h = History::default();
        h.ops.push(op(500, KeyTag::Decide { revoked: true }, true));
        decision(&mut h, 1, 800, true, false);
        decision(&mut h, 2, 1_500, true, false);
        let verdict = revocation(&h, REVOKE_DELTA);
        assert_eq!(verdict.broken(), [B1.name], "{}", verdict.explanation());
        assert_eq!(verdict.violations.len(), 1, "r1 is within Δ");
        assert!(verdict.explanation().contains("r2"));
    }

    #[test]
    fn a_final_probe_rejecting_an_unrevoked_key_breaks_b2() {
        let mut h = History::default();
        h.ops.push(op(500, KeyTag::Decide { revoked: true }, true));
        h.ops
            .push(op(1_000, KeyTag::Decide { revoked: false }, true));
        decision(&mut h, 1, 8_000, false, true);
        let verdict = revocation(&h, REVOKE_DELTA);
        assert_eq!(verdict.broken(), [B2.name], "{}", verdict.explanation());
    }

    #[test]
    fn a_revocation_the_admin_never_got_acknowledged_is_not_one() {
        let mut h = History::default();
        h.ops.push(op(500, KeyTag::Decide { revoked: true }, false));
        decision(&mut h, 1, 1_500, true, true);
        assert!(revocation(&h, REVOKE_DELTA).holds());
    }
}
