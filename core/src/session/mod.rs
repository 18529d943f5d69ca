//! Document 000's conversation window under concurrent turns (R-000-06).
//!
//! A [`Turn`] is one chat request on a session: it reads the stored log, streams the
//! assistant's answer from upstream (seconds), and stores the user's message and the answer.
//! The variants:
//!
//! | Variant  | a turn                                                                    |
//! |----------|---------------------------------------------------------------------------|
//! | `Buggy`  | read the version `v`; append `u` (`version + 1`, the message at the new version); stream; append `a` the same way: no coordination |
//! | `DocFix` | the same inside a Redis lock `SET lock NX PX ttl`, retried while taken, released by a plain `DEL` |
//! | `Correct`| read `v`; stream; one transaction: `UPDATE sessions SET version = v + 2 WHERE version = v`, `INSERT` messages `v + 1` and `v + 2` (unique per session and seq); a lost CAS or a duplicate is a 409 |
//!
//! The lock does not fence: a stream longer than its TTL, or a pause past it, lets a second
//! turn in on the same prefix, and the first turn's plain `DEL` then frees the second's lock.
//!
//! Drain order as for every [`Machine`]: `poll_op`, then `poll_note`, then `poll_timeout`.

mod oracle;

use std::collections::VecDeque;
use std::fmt;

use crate::ids::{EndpointId, OpId};
use crate::machine::{Machine, Outgoing};
use crate::ops::{
    Assign, CallKind, CmpOp, ColumnType, Cond, KvOp, KvReply, Reply, Row, SetCondition, SqlOp,
    SqlReply, SqlStmt, StoreOp, Table, TableDef, UpstreamOp, Value,
};
use crate::tag::{FamilyNote, FamilyTag, Note, Tag, TagKind};
use crate::time::{Duration, Timestamp};
use crate::variant::Variant;

pub use oracle::{
    CONFLICT_REFUSED, I_CONV, I_CONV_ACKED, TURNS_OVERLAPPED, conversation, session_coverage,
};

static SESSION_SESSIONS_DEF: TableDef = TableDef {
    name: "session_sessions",
    columns: &[("version", ColumnType::Int)],
};

static SESSION_MESSAGES_DEF: TableDef = TableDef {
    name: "session_messages",
    columns: &[
        ("session", ColumnType::Text),
        ("seq", ColumnType::Int),
        ("turn", ColumnType::Int),
        ("role", ColumnType::Text),
        ("base", ColumnType::Int),
    ],
};

/// The sessions, keyed by session id: `version`, the number of messages stored.
pub const SESSION_SESSIONS: Table = Table::declare(&SESSION_SESSIONS_DEF);

/// The stored messages, keyed by [`message_key`] (so `(session, seq)` is unique): the turn
/// that wrote it, its role (`user` or `assistant`) and the version the turn read (`base`).
pub const SESSION_MESSAGES: Table = Table::declare(&SESSION_MESSAGES_DEF);

/// The primary key of message `seq` of `session`.
pub fn message_key(session: &str, seq: i64) -> String {
    format!("{session}:{seq:06}")
}

/// DocFix's lock key.
pub fn lock_key(session: &str) -> String {
    format!("lock:session:{session}")
}

/// How often DocFix retries a taken lock.
pub const LOCK_RETRY: Duration = Duration::from_ms(100);
/// DocFix gives up (a busy error) after this many attempts.
pub const LOCK_TRIES_MAX: u32 = 200;

/// One turn's parameters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TurnConfig {
    /// The turn's number (unique in the run).
    pub turn: u32,
    /// The session.
    pub session: String,
    /// How long the upstream answer streams.
    pub stream: Duration,
    /// DocFix's lock TTL.
    pub lock_ttl: Duration,
}

/// What an operation of R-000-06 means.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SessionTag {
    /// DocFix takes or releases the lock.
    Lock {
        /// The turn.
        turn: u32,
    },
    /// The turn reads the session's version.
    Read {
        /// The turn.
        turn: u32,
    },
    /// The upstream call.
    Stream {
        /// The turn.
        turn: u32,
    },
    /// A write of the turn's (version bump, message insert, transaction control).
    Append {
        /// The turn.
        turn: u32,
    },
    /// Correct's `COMMIT`.
    Commit {
        /// The turn.
        turn: u32,
    },
}

impl SessionTag {
    /// [`SessionTag::Lock`].
    pub const LOCK: TagKind = TagKind::new("session-lock");
    /// [`SessionTag::Read`].
    pub const READ: TagKind = TagKind::new("session-read");
    /// [`SessionTag::Stream`].
    pub const STREAM: TagKind = TagKind::new("session-stream");
    /// [`SessionTag::Append`].
    pub const APPEND: TagKind = TagKind::new("session-append");
    /// [`SessionTag::Commit`].
    pub const COMMIT: TagKind = TagKind::new("session-commit");

    /// The turn.
    pub fn turn(&self) -> u32 {
        match self {
            SessionTag::Lock { turn }
            | SessionTag::Read { turn }
            | SessionTag::Stream { turn }
            | SessionTag::Append { turn }
            | SessionTag::Commit { turn } => *turn,
        }
    }
}

impl FamilyTag for SessionTag {
    fn kind(&self) -> TagKind {
        match self {
            SessionTag::Lock { .. } => SessionTag::LOCK,
            SessionTag::Read { .. } => SessionTag::READ,
            SessionTag::Stream { .. } => SessionTag::STREAM,
            SessionTag::Append { .. } => SessionTag::APPEND,
            SessionTag::Commit { .. } => SessionTag::COMMIT,
        }
    }
}

/// What a turn tells its client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SessionNote {
    /// 200: the turn is stored.
    Acked {
        /// The turn.
        turn: u32,
    },
    /// 409: another turn committed first; the client re-sends on the new log.
    Conflict {
        /// The turn.
        turn: u32,
    },
    /// The turn failed (the lock never came, a store failed): not stored, as far as the
    /// client knows.
    Failed {
        /// The turn.
        turn: u32,
    },
}

impl FamilyNote for SessionNote {}

impl fmt::Display for SessionNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionNote::Acked { turn } => write!(f, "turn {turn}: 200"),
            SessionNote::Conflict { turn } => write!(f, "turn {turn}: 409 conflict"),
            SessionNote::Failed { turn } => write!(f, "turn {turn}: failed"),
        }
    }
}

/// Where a turn is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Lock,
    Read,
    BumpUser,
    InsertUser { seq: i64 },
    Stream,
    BumpAssistant,
    InsertAssistant { seq: i64 },
    Unlock,
    Begin,
    Cas,
    InsertPair { second: bool },
    Commit,
    Rollback,
    Done,
}

/// One turn on a session. Inputs: `handle_start`, `handle_reply`, `handle_timeout` (DocFix's
/// lock retry).
#[derive(Debug)]
pub struct Turn {
    variant: Variant,
    cfg: TurnConfig,
    stage: Stage,
    base: i64,
    tries: u32,
    outcome: Option<SessionNote>,
    next: u64,
    pending: Option<OpId>,
    timer: Option<Timestamp>,
    out: VecDeque<Outgoing>,
    notes: VecDeque<Note>,
}

impl Turn {
    /// A turn with `cfg`.
    pub fn new(variant: Variant, cfg: TurnConfig) -> Turn {
        Turn {
            variant,
            cfg,
            stage: Stage::Done,
            base: 0,
            tries: 0,
            outcome: None,
            next: 0,
            pending: None,
            timer: None,
            out: VecDeque::new(),
            notes: VecDeque::new(),
        }
    }

    fn send(&mut self, op: StoreOp, tag: SessionTag) {
        self.next += 1;
        let id = OpId(self.next);
        self.pending = Some(id);
        self.out.push_back(Outgoing {
            id,
            op,
            tag: Tag::new(tag),
        });
    }

    fn sql(&mut self, stmt: SqlStmt, tag: SessionTag) {
        self.send(StoreOp::Sql(SqlOp::exec(stmt)), tag);
    }

    fn message(&self, seq: i64, role: &str) -> SqlStmt {
        SqlStmt::Insert {
            table: SESSION_MESSAGES,
            key: message_key(&self.cfg.session, seq),
            row: Row::from([
                ("session".to_string(), Value::Text(self.cfg.session.clone())),
                ("seq".to_string(), Value::Int(seq)),
                ("turn".to_string(), Value::Int(i64::from(self.cfg.turn))),
                ("role".to_string(), Value::Text(role.into())),
                ("base".to_string(), Value::Int(self.base)),
            ]),
        }
    }

    fn bump(&self) -> SqlStmt {
        SqlStmt::Update {
            table: SESSION_SESSIONS,
            key: self.cfg.session.clone(),
            guard: Cond::True,
            set: vec![Assign::Add {
                column: "version".into(),
                delta: 1,
            }],
        }
    }

    fn enter(&mut self, stage: Stage) {
        self.stage = stage;
        let turn = self.cfg.turn;
        let append = SessionTag::Append { turn };
        match stage {
            Stage::Lock => self.send(
                StoreOp::Kv(KvOp::Set {
                    key: lock_key(&self.cfg.session),
                    value: format!("turn{turn}"),
                    condition: SetCondition::IfAbsent,
                    ttl: Some(self.cfg.lock_ttl),
                }),
                SessionTag::Lock { turn },
            ),
            Stage::Read => self.sql(
                SqlStmt::Select {
                    table: SESSION_SESSIONS,
                    key: self.cfg.session.clone(),
                    for_update: false,
                },
                SessionTag::Read { turn },
            ),
            Stage::BumpUser | Stage::BumpAssistant => self.sql(self.bump(), append),
            Stage::InsertUser { seq } => self.sql(self.message(seq, "user"), append),
            Stage::InsertAssistant { seq } => self.sql(self.message(seq, "assistant"), append),
            Stage::Stream => self.send(
                StoreOp::Upstream(UpstreamOp {
                    endpoint: EndpointId(1),
                    kind: CallKind::Request {
                        stream: self.cfg.stream,
                    },
                }),
                SessionTag::Stream { turn },
            ),
            Stage::Unlock => self.send(
                StoreOp::Kv(KvOp::Del {
                    key: lock_key(&self.cfg.session),
                }),
                SessionTag::Lock { turn },
            ),
            Stage::Begin => self.send(StoreOp::Sql(SqlOp::Begin), append),
            Stage::Cas => self.sql(
                SqlStmt::Update {
                    table: SESSION_SESSIONS,
                    key: self.cfg.session.clone(),
                    guard: Cond::cmp("version", CmpOp::Eq, Value::Int(self.base)),
                    set: vec![Assign::Set {
                        column: "version".into(),
                        value: Value::Int(self.base.saturating_add(2)),
                    }],
                },
                append,
            ),
            Stage::InsertPair { second } => {
                let (seq, role) = if second {
                    (self.base.saturating_add(2), "assistant")
                } else {
                    (self.base.saturating_add(1), "user")
                };
                self.sql(self.message(seq, role), append);
            }
            Stage::Commit => self.send(StoreOp::Sql(SqlOp::Commit), SessionTag::Commit { turn }),
            Stage::Rollback => self.send(StoreOp::Sql(SqlOp::Rollback), append),
            Stage::Done => {
                if let Some(note) = self.outcome.take() {
                    self.notes.push_back(Note::new(note));
                }
            }
        }
    }

    /// Ends the turn with `note`, releasing DocFix's lock first.
    fn finish(&mut self, note: SessionNote) {
        self.outcome = Some(note);
        if self.variant == Variant::DocFix && self.stage != Stage::Lock {
            self.enter(Stage::Unlock);
        } else {
            self.enter(Stage::Done);
        }
    }

    fn fail(&mut self) {
        let turn = self.cfg.turn;
        self.finish(SessionNote::Failed { turn });
    }
}

/// The new version an `UPDATE ... RETURNING` answered.
fn returned_version(reply: &Reply) -> Option<i64> {
    match reply {
        Reply::Sql(SqlReply::Rows(rows)) => rows.first().and_then(|r| r.int("version")),
        _ => None,
    }
}

impl Machine for Turn {
    fn handle_start(&mut self, _now: Timestamp) {
        self.tries = 0;
        self.outcome = None;
        match self.variant {
            Variant::DocFix => self.enter(Stage::Lock),
            Variant::Buggy | Variant::Correct => self.enter(Stage::Read),
        }
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        if self.pending != Some(op) {
            return;
        }
        self.pending = None;
        let turn = self.cfg.turn;
        let ok = reply.is_success();
        match self.stage {
            Stage::Lock => match reply {
                Reply::Kv(KvReply::Ok) => self.enter(Stage::Read),
                _ if self.tries + 1 < LOCK_TRIES_MAX => {
                    self.tries += 1;
                    self.timer = Some(now + LOCK_RETRY);
                }
                _ => self.fail(),
            },
            Stage::Read => match returned_version(&reply) {
                Some(v) => {
                    self.base = v;
                    match self.variant {
                        Variant::Correct => self.enter(Stage::Stream),
                        Variant::Buggy | Variant::DocFix => self.enter(Stage::BumpUser),
                    }
                }
                None => self.fail(),
            },
            Stage::BumpUser => match returned_version(&reply) {
                Some(seq) => self.enter(Stage::InsertUser { seq }),
                None => self.fail(),
            },
            Stage::InsertUser { .. } if ok => self.enter(Stage::Stream),
            Stage::Stream if ok => match self.variant {
                Variant::Correct => self.enter(Stage::Begin),
                Variant::Buggy | Variant::DocFix => self.enter(Stage::BumpAssistant),
            },
            Stage::BumpAssistant => match returned_version(&reply) {
                Some(seq) => self.enter(Stage::InsertAssistant { seq }),
                None => self.fail(),
            },
            Stage::InsertAssistant { .. } if ok => self.finish(SessionNote::Acked { turn }),
            Stage::Unlock | Stage::Rollback => self.enter(Stage::Done),
            Stage::Begin if ok => self.enter(Stage::Cas),
            Stage::Cas => match reply {
                Reply::Sql(SqlReply::Rows(rows)) if !rows.is_empty() => {
                    self.enter(Stage::InsertPair { second: false })
                }
                Reply::Sql(SqlReply::Rows(_)) => {
                    self.outcome = Some(SessionNote::Conflict { turn });
                    self.enter(Stage::Rollback);
                }
                _ => {
                    self.outcome = Some(SessionNote::Failed { turn });
                    self.enter(Stage::Rollback);
                }
            },
            Stage::InsertPair { second } => match reply {
                Reply::Sql(SqlReply::Affected(_)) if second => self.enter(Stage::Commit),
                Reply::Sql(SqlReply::Affected(_)) => self.enter(Stage::InsertPair { second: true }),
                Reply::Sql(SqlReply::UniqueViolation { .. }) => {
                    self.outcome = Some(SessionNote::Conflict { turn });
                    self.enter(Stage::Rollback);
                }
                _ => {
                    self.outcome = Some(SessionNote::Failed { turn });
                    self.enter(Stage::Rollback);
                }
            },
            Stage::Commit => match reply {
                Reply::Sql(SqlReply::Committed) => {
                    self.outcome = Some(SessionNote::Acked { turn });
                    self.enter(Stage::Done);
                }
                Reply::Sql(SqlReply::RolledBack) => {
                    self.outcome = Some(SessionNote::Conflict { turn });
                    self.enter(Stage::Done);
                }
                // A lost answer: the client does not know; no claim either way.
                _ => {
                    self.outcome = Some(SessionNote::Failed { turn });
                    self.enter(Stage::Done);
                }
            },
            Stage::InsertUser { .. }
            | Stage::Stream
            | Stage::InsertAssistant { .. }
            | Stage::Begin => self.fail(),
            Stage::Done => {}
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.timer.is_some_and(|t| now >= t) && self.stage == Stage::Lock {
            self.timer = None;
            self.enter(Stage::Lock);
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
        self.stage == Stage::Done && self.pending.is_none() && self.timer.is_none()
    }
}
