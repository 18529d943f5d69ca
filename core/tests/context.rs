//! The request context (R-000-13): known-bad histories for the I-CTX oracle, and the property
//! test RACES.md asks for: over random step orders and plugin sets, the Correct context
//! accepts every write only from its owner and at most once, and the DocFix context's typed
//! fields keep upstream_call's usage intact; the Buggy dict does not.
//!
//! Deterministic in CI: `scripts/test.sh` sets `PROPTEST_RNG_SEED`.

use proptest::prelude::*;
use racelab_core::context::{
    ContextMemory, CtxBlock, CtxOut, CtxTag, I_CTX_ONCE, I_CTX_OWNER, I_CTX_READ, KEYS,
    PLUGINS_MAX, StepId, context_integrity, coverage, owner_of,
};
use racelab_core::{
    FamilyMemory, History, LocalBlock, LocalReply, LocalValue, OpId, OpRecord, ProcessId, Reply,
    StoreOp, Tag, Timestamp, Variant,
};

/// Runs blocks on a context and records them as a history, one block per millisecond.
struct Recorder {
    memory: ContextMemory,
    history: History,
}

impl Recorder {
    fn new(variant: Variant) -> Recorder {
        Recorder {
            memory: ContextMemory::new(variant),
            history: History::default(),
        }
    }

    fn run(&mut self, block: CtxBlock) -> CtxOut {
        let out = self.memory.run(&block);
        let tag = match block {
            CtxBlock::Write { step, key, value } => CtxTag::Write { step, key, value },
            CtxBlock::Read { step, key, .. } => CtxTag::Read { step, key },
            CtxBlock::Finish { step } => CtxTag::Finish { step },
        };
        let seq = self.history.ops.len() as u64 + 1;
        let at = Timestamp::from_ms(seq);
        self.history.ops.push(OpRecord {
            process: ProcessId(0),
            id: OpId(seq),
            tag: Tag::new(tag),
            op: StoreOp::Local(LocalBlock::new(block)),
            invoked_at: at,
            applied_at: Some(at),
            durable_at: Some(at),
            lost_at: None,
            result: Some(Reply::Local(LocalReply {
                seq,
                result: LocalValue::new(out.clone()),
            })),
            completed_at: Some(at),
            timed_out: false,
        });
        out
    }

    fn write(&mut self, step: StepId, key: &'static str, value: i64) -> CtxOut {
        self.run(CtxBlock::Write { step, key, value })
    }

    fn finish(&mut self, step: StepId) {
        self.run(CtxBlock::Finish { step });
    }

    fn read_usage(&mut self) -> CtxOut {
        self.run(CtxBlock::Read {
            step: StepId::Billing,
            key: "usage",
            after: StepId::Upstream,
        })
    }
}

/// The document's T1..T3: upstream_call sets usage, a plugin overwrites it, billing reads.
fn overwrite(variant: Variant) -> Recorder {
    let mut r = Recorder::new(variant);
    r.write(StepId::Upstream, "usage", 800);
    r.finish(StepId::Upstream);
    r.write(StepId::Plugin(0), "usage", 100);
    r.read_usage();
    r
}

#[test]
fn a_plugin_overwriting_usage_breaks_every_clause_of_i_ctx() {
    let r = overwrite(Variant::Buggy);
    let verdict = context_integrity(&r.history);
    assert_eq!(
        verdict.broken(),
        [I_CTX_OWNER.name, I_CTX_ONCE.name, I_CTX_READ.name],
        "{}",
        verdict.explanation()
    );
    let text = verdict.explanation();
    assert!(text.contains("plugin0 wrote 100 into ctx[\"usage\"], which upstream_call owns"));
    assert!(text.contains("got 100 written by plugin0, not upstream_call's 800"));
}

#[test]
fn a_foreign_write_before_the_owner_breaks_ownership_but_not_the_read() {
    let mut r = Recorder::new(Variant::Buggy);
    r.write(StepId::Plugin(1), "usage", 101);
    r.write(StepId::Upstream, "usage", 800);
    r.finish(StepId::Upstream);
    assert_eq!(
        r.read_usage(),
        CtxOut::Value {
            slot: r.memory.read_slot("usage"),
            cell: r.memory.cells().values().next().copied(),
        }
    );
    let verdict = context_integrity(&r.history);
    assert_eq!(verdict.broken(), [I_CTX_OWNER.name, I_CTX_ONCE.name]);
}

#[test]
fn an_owner_writing_twice_breaks_write_once() {
    let mut r = Recorder::new(Variant::DocFix);
    r.write(StepId::Upstream, "usage", 800);
    r.write(StepId::Upstream, "usage", 801);
    r.finish(StepId::Upstream);
    r.read_usage();
    let verdict = context_integrity(&r.history);
    assert_eq!(verdict.broken(), [I_CTX_ONCE.name, I_CTX_READ.name]);
}

#[test]
fn a_read_of_an_unset_field_after_the_owner_finished_breaks_the_read() {
    let mut r = Recorder::new(Variant::Correct);
    r.finish(StepId::Upstream);
    r.read_usage();
    assert_eq!(context_integrity(&r.history).broken(), [I_CTX_READ.name]);
}

#[test]
fn docfix_and_correct_hold_on_the_documents_timeline_and_correct_reports_the_refusal() {
    for variant in [Variant::DocFix, Variant::Correct] {
        let r = overwrite(variant);
        let mut verdict = context_integrity(&r.history);
        assert!(verdict.holds(), "{variant:?}: {}", verdict.explanation());
        coverage(&r.history, &mut verdict);
        assert_eq!(verdict.sometimes.get("write-in-window"), Some(&1));
        let refused = verdict.sometimes.get("foreign-write-refused").copied();
        assert_eq!(refused, (variant == Variant::Correct).then_some(1));
    }
}

#[test]
fn a_read_before_the_owner_finished_waits() {
    let mut r = Recorder::new(Variant::Correct);
    assert_eq!(r.read_usage(), CtxOut::NotYet);
}

// ---------------------------------------------------------------------------------------------
// The property test over step orders and plugin sets.

/// One step's write: who, which key, which value.
type Write = (StepId, &'static str, i64);

/// upstream_call's usage write (possibly retried) and 0-3 plugins each writing 1-2 keys of
/// any kind (its own, `usage`, another plugin's, an undeclared one), in a random order.
fn writes() -> impl Strategy<Value = (Vec<Write>, usize)> {
    let key = prop_oneof![
        Just("usage"),
        Just(KEYS[1]),
        Just(KEYS[2]),
        Just(KEYS[3]),
        Just("scratch"),
    ];
    let plugin = proptest::collection::vec(key, 1..=2);
    (
        proptest::collection::vec(plugin, 0..=usize::from(PLUGINS_MAX)),
        1..=2usize,
        any::<u64>(),
    )
        .prop_map(|(plugins, upstream_writes, shuffle)| {
            let mut all: Vec<Write> = (0..upstream_writes)
                .map(|i| (StepId::Upstream, "usage", 800 + i as i64))
                .collect();
            for (p, keys) in plugins.iter().enumerate() {
                for k in keys {
                    all.push((StepId::Plugin(p as u8), k, 100 + p as i64));
                }
            }
            // A deterministic permutation from the drawn number (Fisher-Yates).
            let mut state = shuffle;
            for i in (1..all.len()).rev() {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                all.swap(i, (state >> 33) as usize % (i + 1));
            }
            let upstream_last = all
                .iter()
                .rposition(|w| w.0 == StepId::Upstream)
                .unwrap_or(0);
            (all, upstream_last)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn correct_accepts_only_owners_once_in_any_order((writes, upstream_last) in writes()) {
        let mut r = Recorder::new(Variant::Correct);
        for (i, (step, key, value)) in writes.iter().enumerate() {
            let out = r.write(*step, key, *value);
            if let CtxOut::Written { slot, previous } = out {
                prop_assert_eq!(slot.owner(), Some(*step));
                prop_assert_eq!(owner_of(key), Some(*step));
                prop_assert_eq!(previous, None);
            }
            if i == upstream_last {
                r.finish(StepId::Upstream);
            }
        }
        let read = r.read_usage();
        let CtxOut::Value { cell: Some(cell), .. } = read else {
            return Err(TestCaseError::fail(format!("billing read {read:?}")));
        };
        let first = writes.iter().find(|w| w.0 == StepId::Upstream).map(|w| w.2);
        prop_assert_eq!(cell.writer, StepId::Upstream);
        prop_assert_eq!(Some(cell.value), first);
        let verdict = context_integrity(&r.history);
        prop_assert!(verdict.holds(), "{}", verdict.explanation());
    }

    #[test]
    fn docfix_keeps_usage_with_its_owner_in_any_order((writes, upstream_last) in writes()) {
        let mut r = Recorder::new(Variant::DocFix);
        for (i, (step, key, value)) in writes.iter().enumerate() {
            if let CtxOut::Written { slot, .. } = r.write(*step, key, *value) {
                prop_assert_eq!(slot.owner(), Some(*step));
            }
            if i == upstream_last {
                r.finish(StepId::Upstream);
            }
        }
        let CtxOut::Value { cell: Some(cell), .. } = r.read_usage() else {
            return Err(TestCaseError::fail("billing read nothing"));
        };
        prop_assert_eq!(cell.writer, StepId::Upstream);
        let verdict = context_integrity(&r.history);
        // Typed fields stop collisions between steps; only a step writing one of its own
        // keys twice (a retry: DocFix has no write-once cells) writes a field twice.
        let retried = writes
            .iter()
            .enumerate()
            .any(|(i, w)| writes[..i].iter().any(|v| v.0 == w.0 && v.1 == w.1));
        prop_assert!(
            verdict.broken().iter().all(|b| retried && (*b == I_CTX_ONCE.name || *b == I_CTX_READ.name)),
            "{}",
            verdict.explanation()
        );
    }

    #[test]
    fn buggy_is_caught_whenever_another_step_writes_usage((writes, upstream_last) in writes()) {
        let mut r = Recorder::new(Variant::Buggy);
        for (i, (step, key, value)) in writes.iter().enumerate() {
            r.write(*step, key, *value);
            if i == upstream_last {
                r.finish(StepId::Upstream);
            }
        }
        r.read_usage();
        let verdict = context_integrity(&r.history);
        let foreign = writes
            .iter()
            .any(|(s, k, _)| owner_of(k).is_some_and(|o| o != *s) || owner_of(k).is_none());
        prop_assert_eq!(verdict.broke(I_CTX_OWNER.name), foreign, "{}", verdict.explanation());
    }
}
