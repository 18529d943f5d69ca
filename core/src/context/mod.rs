//! Document 000's request context (R-000-13): the steps and plugins of one gateway request
//! share a `WorkflowContext`, and run in parallel where the pipeline `gather`s them.
//!
//! The context is the family's local memory ([`ContextMemory`], one per request host); each
//! step or plugin is a [`StepTask`], a machine running a short plan (wait for its await,
//! write its fields, mark itself finished, or read a field once its owner has finished) as
//! synchronous blocks on it. The variant is the context's implementation:
//!
//! | Variant  | a write of `key` by step `s`                        | a read of `key`                  |
//! |----------|-----------------------------------------------------|----------------------------------|
//! | `Buggy`  | `ctx[key] = v`: one shared dict, last writer wins   | `ctx[key]`                       |
//! | `DocFix` | typed, namespaced: lands in `s`'s own field `s.key` | the declared owner's field       |
//! | `Correct`| declared owner and write-once: a foreign or second write is refused and reported | the owner's cell |
//!
//! The document's fix (typed fields or namespace validation) is sufficient: a plugin that
//! writes `usage` no longer touches `upstream_call`'s usage. Correct adds the write-once,
//! owner-declared cells RACES.md asks for, so that a double or foreign write is detected at
//! run time instead of silently redirected.
//!
//! Drain order as for every [`Machine`]: `poll_op`, then `poll_note`, then `poll_timeout`.

mod oracle;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use crate::ids::OpId;
use crate::machine::{Machine, Outgoing};
use crate::ops::{FamilyMemory, LocalBlock, Reply, StoreOp};
use crate::tag::{FamilyNote, FamilyTag, Note, Tag, TagKind};
use crate::time::{Duration, Timestamp};
use crate::variant::Variant;

pub use oracle::{
    FOREIGN_WRITE_REFUSED, I_CTX_ONCE, I_CTX_OWNER, I_CTX_READ, WRITE_IN_WINDOW, context_integrity,
    coverage,
};

/// A step or plugin of the request pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepId {
    /// `upstream_call`: calls the model and records its usage.
    Upstream,
    /// `billing`: charges the usage `upstream_call` recorded.
    Billing,
    /// The n-th plugin (post-processing, moderation, caching, tracing).
    Plugin(u8),
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepId::Upstream => f.write_str("upstream_call"),
            StepId::Billing => f.write_str("billing"),
            StepId::Plugin(n) => write!(f, "plugin{n}"),
        }
    }
}

/// The context keys the pipeline knows, with their declared owners ([`owner_of`]).
pub const KEYS: [&str; 4] = ["usage", "moderation", "cache_hit", "trace"];

/// Plugins a request may run at most (one declared key each after `usage`).
pub const PLUGINS_MAX: u8 = 3;

/// The step that owns `key`: `usage` is `upstream_call`'s, the others one plugin's each;
/// `None` for an undeclared key.
pub fn owner_of(key: &str) -> Option<StepId> {
    match key {
        "usage" => Some(StepId::Upstream),
        "moderation" => Some(StepId::Plugin(0)),
        "cache_hit" => Some(StepId::Plugin(1)),
        "trace" => Some(StepId::Plugin(2)),
        _ => None,
    }
}

/// Where a value lives: the shared dict (Buggy, and Correct's declared cells) or a step's
/// own namespace (DocFix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Namespace {
    /// One flat namespace for every step.
    Shared,
    /// The step's own fields.
    Step(StepId),
}

/// A field of the context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    /// Its namespace.
    pub namespace: Namespace,
    /// Its key.
    pub key: &'static str,
}

impl Slot {
    /// The step allowed to write this field: the key's declared owner in the shared
    /// namespace, the namespace's step in its own.
    pub fn owner(&self) -> Option<StepId> {
        match self.namespace {
            Namespace::Shared => owner_of(self.key),
            Namespace::Step(s) => Some(s),
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.namespace {
            Namespace::Shared => write!(f, "ctx[{:?}]", self.key),
            Namespace::Step(s) => write!(f, "ctx.{s}.{}", self.key),
        }
    }
}

/// A field's value and who wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cell {
    /// The value (token counts, flags: an integer is enough to tell writers apart).
    pub value: i64,
    /// The step whose write it is.
    pub writer: StepId,
}

/// Why Correct's context refused a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The key belongs to another step (or to none).
    Foreign {
        /// The declared owner, if any.
        owner: Option<StepId>,
    },
    /// The field was written already and is not declared mutable.
    Twice,
}

/// One synchronous block on the context.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CtxBlock {
    /// `ctx.set(key, value)` by `step`.
    Write {
        /// The writer.
        step: StepId,
        /// The key.
        key: &'static str,
        /// The value.
        value: i64,
    },
    /// The pipeline marks `step` finished (its awaitable returned).
    Finish {
        /// The step.
        step: StepId,
    },
    /// `ctx.get(key)` by `step`, once `after` has finished (the pipeline's ordering).
    Read {
        /// The reader.
        step: StepId,
        /// The key.
        key: &'static str,
        /// The step the read waits for.
        after: StepId,
    },
}

impl fmt::Display for CtxBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtxBlock::Write { step, key, value } => write!(f, "{step}: ctx.set({key:?}, {value})"),
            CtxBlock::Finish { step } => write!(f, "{step} finished"),
            CtxBlock::Read { step, key, after } => {
                write!(f, "{step}: ctx.get({key:?}) after {after}")
            }
        }
    }
}

/// A block's result.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CtxOut {
    /// The write landed in `slot`, replacing `previous`.
    Written {
        /// Where it landed.
        slot: Slot,
        /// The cell it replaced.
        previous: Option<Cell>,
    },
    /// Correct refused the write.
    Refused {
        /// The field it aimed at.
        slot: Slot,
        /// Why.
        why: Refusal,
    },
    /// The step is marked finished.
    Finished,
    /// The step a read waits for has not finished yet.
    NotYet,
    /// The read's field, empty if unset.
    Value {
        /// The field read.
        slot: Slot,
        /// Its cell.
        cell: Option<Cell>,
    },
}

impl fmt::Display for CtxOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtxOut::Written { slot, previous } => match previous {
                Some(p) => write!(f, "{slot} written over {}'s {}", p.writer, p.value),
                None => write!(f, "{slot} written"),
            },
            CtxOut::Refused { slot, why } => match why {
                Refusal::Foreign { owner: Some(o) } => write!(f, "refused: {slot} is {o}'s"),
                Refusal::Foreign { owner: None } => write!(f, "refused: {slot} is undeclared"),
                Refusal::Twice => write!(f, "refused: {slot} is written already"),
            },
            CtxOut::Finished => f.write_str("finished"),
            CtxOut::NotYet => f.write_str("not yet"),
            CtxOut::Value { slot, cell } => match cell {
                Some(c) => write!(f, "{slot} = {} (by {})", c.value, c.writer),
                None => write!(f, "{slot} unset"),
            },
        }
    }
}

/// One request's `WorkflowContext`, in the variant's implementation (see the module table).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContextMemory {
    variant: Variant,
    cells: BTreeMap<Slot, Cell>,
    finished: BTreeSet<StepId>,
}

impl ContextMemory {
    /// An empty context.
    pub fn new(variant: Variant) -> ContextMemory {
        ContextMemory {
            variant,
            cells: BTreeMap::new(),
            finished: BTreeSet::new(),
        }
    }

    /// The field `step` writes when it sets `key`.
    pub fn write_slot(&self, step: StepId, key: &'static str) -> Slot {
        let namespace = match self.variant {
            Variant::DocFix => Namespace::Step(step),
            Variant::Buggy | Variant::Correct => Namespace::Shared,
        };
        Slot { namespace, key }
    }

    /// The field a reader gets for `key`.
    pub fn read_slot(&self, key: &'static str) -> Slot {
        match (self.variant, owner_of(key)) {
            (Variant::DocFix, Some(owner)) => Slot {
                namespace: Namespace::Step(owner),
                key,
            },
            _ => Slot {
                namespace: Namespace::Shared,
                key,
            },
        }
    }

    /// The context's fields.
    pub fn cells(&self) -> &BTreeMap<Slot, Cell> {
        &self.cells
    }

    fn write(&mut self, step: StepId, key: &'static str, value: i64) -> CtxOut {
        let slot = self.write_slot(step, key);
        if self.variant == Variant::Correct {
            if slot.owner() != Some(step) {
                let owner = slot.owner();
                return CtxOut::Refused {
                    slot,
                    why: Refusal::Foreign { owner },
                };
            }
            if self.cells.contains_key(&slot) {
                return CtxOut::Refused {
                    slot,
                    why: Refusal::Twice,
                };
            }
        }
        let previous = self.cells.insert(
            slot,
            Cell {
                value,
                writer: step,
            },
        );
        CtxOut::Written { slot, previous }
    }
}

impl FamilyMemory for ContextMemory {
    type Block = CtxBlock;
    type Output = CtxOut;

    fn run(&mut self, block: &CtxBlock) -> CtxOut {
        match *block {
            CtxBlock::Write { step, key, value } => self.write(step, key, value),
            CtxBlock::Finish { step } => {
                self.finished.insert(step);
                CtxOut::Finished
            }
            CtxBlock::Read { key, after, .. } => {
                if !self.finished.contains(&after) {
                    return CtxOut::NotYet;
                }
                let slot = self.read_slot(key);
                CtxOut::Value {
                    slot,
                    cell: self.cells.get(&slot).copied(),
                }
            }
        }
    }
}

/// What an operation of the context family means.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CtxTag {
    /// A step sets a key.
    Write {
        /// The writer.
        step: StepId,
        /// The key.
        key: &'static str,
        /// The value.
        value: i64,
    },
    /// A step reads a key.
    Read {
        /// The reader.
        step: StepId,
        /// The key.
        key: &'static str,
    },
    /// A step is marked finished.
    Finish {
        /// The step.
        step: StepId,
    },
}

impl CtxTag {
    /// [`CtxTag::Write`].
    pub const WRITE: TagKind = TagKind::new("ctx-write");
    /// [`CtxTag::Read`].
    pub const READ: TagKind = TagKind::new("ctx-read");
    /// [`CtxTag::Finish`].
    pub const FINISH: TagKind = TagKind::new("ctx-finish");
}

impl FamilyTag for CtxTag {
    fn kind(&self) -> TagKind {
        match self {
            CtxTag::Write { .. } => CtxTag::WRITE,
            CtxTag::Read { .. } => CtxTag::READ,
            CtxTag::Finish { .. } => CtxTag::FINISH,
        }
    }
}

/// What a step reports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CtxNote {
    /// The context refused the step's write (Correct): reported, not swallowed.
    Refused {
        /// The writer.
        step: StepId,
        /// The field.
        slot: Slot,
        /// Why.
        why: Refusal,
    },
    /// `billing` charged this many tokens.
    Charged {
        /// The amount.
        amount: i64,
    },
    /// A read gave up waiting for its step (bounded by [`READ_POLLS_MAX`]).
    GaveUp {
        /// The reader.
        step: StepId,
    },
}

impl FamilyNote for CtxNote {
    fn alarm(&self) -> bool {
        matches!(self, CtxNote::Refused { .. })
    }
}

impl fmt::Display for CtxNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtxNote::Refused { step, slot, why } => {
                write!(f, "{step}'s write refused: ")?;
                fmt::Display::fmt(
                    &CtxOut::Refused {
                        slot: *slot,
                        why: *why,
                    },
                    f,
                )
            }
            CtxNote::Charged { amount } => write!(f, "charges {amount} tokens"),
            CtxNote::GaveUp { step } => write!(f, "{step} gave up waiting"),
        }
    }
}

/// A read polls at most this many times before giving up (its step never finished).
pub const READ_POLLS_MAX: u32 = 500;

/// One action of a step's plan.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// An `await` (an upstream call, a plugin's IO): the step sleeps this long.
    Wait(Duration),
    /// `ctx.set(key, value)`.
    Write {
        /// The key.
        key: &'static str,
        /// The value.
        value: i64,
    },
    /// `ctx.get(key)` once `after` finished, polling every `poll`; `billing` charges it.
    Read {
        /// The key.
        key: &'static str,
        /// The step to wait for.
        after: StepId,
        /// The polling period.
        poll: Duration,
    },
    /// The step's awaitable returns.
    Finish,
}

/// A step or plugin: runs its plan on the context. Inputs: `handle_start`, `handle_reply`
/// (a local block's result), `handle_timeout` (the end of a wait or a poll period).
#[derive(Debug)]
pub struct StepTask {
    step: StepId,
    plan: Vec<Action>,
    pc: usize,
    polls: u32,
    next: u64,
    pending: Option<OpId>,
    timer: Option<Timestamp>,
    out: VecDeque<Outgoing>,
    notes: VecDeque<Note>,
}

impl StepTask {
    /// A step running `plan` (at most [`PLAN_LEN_MAX`] actions; the rest is dropped).
    pub fn new(step: StepId, mut plan: Vec<Action>) -> StepTask {
        plan.truncate(PLAN_LEN_MAX);
        StepTask {
            step,
            plan,
            pc: 0,
            polls: 0,
            next: 0,
            pending: None,
            timer: None,
            out: VecDeque::new(),
            notes: VecDeque::new(),
        }
    }

    fn send(&mut self, block: CtxBlock, tag: CtxTag) {
        self.next += 1;
        let id = OpId(self.next);
        self.pending = Some(id);
        self.out.push_back(Outgoing {
            id,
            op: StoreOp::Local(LocalBlock::new(block)),
            tag: Tag::new(tag),
        });
    }

    /// Starts the current action, unless one is in flight or waiting.
    fn advance(&mut self, now: Timestamp) {
        if self.pending.is_some() || self.timer.is_some() {
            return;
        }
        let step = self.step;
        match self.plan.get(self.pc).cloned() {
            None => {}
            Some(Action::Wait(d)) => self.timer = Some(now + d),
            Some(Action::Write { key, value }) => self.send(
                CtxBlock::Write { step, key, value },
                CtxTag::Write { step, key, value },
            ),
            Some(Action::Read { key, after, .. }) => self.send(
                CtxBlock::Read { step, key, after },
                CtxTag::Read { step, key },
            ),
            Some(Action::Finish) => self.send(CtxBlock::Finish { step }, CtxTag::Finish { step }),
        }
    }
}

/// A plan has at most this many actions.
pub const PLAN_LEN_MAX: usize = 16;

impl Machine for StepTask {
    fn handle_start(&mut self, now: Timestamp) {
        self.pc = 0;
        self.polls = 0;
        self.advance(now);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        if self.pending != Some(op) {
            return;
        }
        self.pending = None;
        let out = match &reply {
            Reply::Local(r) => r.result.get::<CtxOut>().cloned(),
            _ => None,
        };
        let poll = match self.plan.get(self.pc) {
            Some(Action::Read { poll, .. }) => Some(*poll),
            _ => None,
        };
        match (out, poll) {
            (Some(CtxOut::NotYet), Some(poll)) | (None, Some(poll)) => {
                self.polls += 1;
                if self.polls >= READ_POLLS_MAX {
                    self.notes
                        .push_back(Note::new(CtxNote::GaveUp { step: self.step }));
                    self.pc = self.plan.len();
                } else {
                    self.timer = Some(now + poll);
                }
                return;
            }
            (Some(CtxOut::Refused { slot, why }), _) => {
                self.notes.push_back(Note::new(CtxNote::Refused {
                    step: self.step,
                    slot,
                    why,
                }));
            }
            (Some(CtxOut::Value { cell, .. }), _) if self.step == StepId::Billing => {
                let amount = cell.map_or(0, |c| c.value);
                self.notes.push_back(Note::new(CtxNote::Charged { amount }));
            }
            _ => {}
        }
        self.pc += 1;
        self.advance(now);
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        match self.timer {
            Some(due) if now >= due => {
                self.timer = None;
                if matches!(self.plan.get(self.pc), Some(Action::Wait(_))) {
                    self.pc += 1;
                }
                self.advance(now);
            }
            _ => {}
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.timer
    }

    fn is_idle(&self) -> bool {
        self.pc >= self.plan.len() && self.pending.is_none() && self.timer.is_none()
    }
}
