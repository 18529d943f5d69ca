//! The queue consumer both billing queues use (R-000-01's charging consumer, R-000-08's usage
//! worker): poll the queue every `poll_every`, hand a delivered message to the handler, run
//! the handler's operations one at a time, then acknowledge or return the message, and poll
//! again at once. Only what is done with a message differs, and that is the [`Handler`].

use super::{Amount, BillNote, BillTag, Outbox};
use crate::ids::OpId;
use crate::machine::{Machine, Outgoing};
use crate::ops::{Delivery, DeliveryId, QueueOp, QueueReply, Reply, RequestId, StoreOp};
use crate::tag::Note;
use crate::time::{Duration, Timestamp};

/// What a handler does next with the message in hand.
#[derive(Debug)]
pub enum Next<W> {
    /// Send an operation and wait for its reply in state `W`.
    Send(StoreOp, BillTag, W),
    /// Done with the message: acknowledge it (`true`) or return it for redelivery.
    Finish(DeliveryId, bool),
}

/// What a consumer does with each message.
pub trait Handler: std::fmt::Debug {
    /// What the handler waits for between its operations.
    type Wait: std::fmt::Debug + Clone;

    /// A message for `request` with `amount` arrived (a message without both is poison and
    /// is acknowledged without reaching the handler).
    fn delivered(
        &mut self,
        delivery: DeliveryId,
        request: RequestId,
        amount: Amount,
    ) -> Next<Self::Wait>;

    /// The reply to the operation sent in `wait`; `notes` takes the handler's notes.
    fn reply(&mut self, wait: Self::Wait, reply: Reply, notes: &mut Notes<'_>) -> Next<Self::Wait>;
}

/// Where a handler reports outcomes.
pub struct Notes<'a>(&'a mut Outbox);

impl Notes<'_> {
    /// Reports `note`.
    pub fn note(&mut self, note: BillNote) {
        self.0.note(note);
    }
}

#[derive(Debug, Clone)]
enum Wait<W> {
    Fetch,
    Handler(W),
    Finish,
}

/// A queue consumer running `H` on each message.
#[derive(Debug)]
pub struct QueueConsumer<H: Handler> {
    handler: H,
    poll_every: Duration,
    out: Outbox,
    timer: Option<Timestamp>,
    pending: Option<(OpId, Wait<H::Wait>)>,
}

/// The request and amount a billing message carries, if it carries both.
fn parse(d: &Delivery) -> Option<(RequestId, i64)> {
    let request = d
        .fields
        .get("request")
        .and_then(|r| r.strip_prefix('r'))
        .and_then(|n| n.parse().ok())
        .map(RequestId)?;
    let amount = d.fields.get("amount").and_then(|a| a.parse::<i64>().ok())?;
    Some((request, amount))
}

impl<H: Handler> QueueConsumer<H> {
    /// A consumer running `handler`, polling every `poll_every` while the queue is empty.
    pub fn with(handler: H, poll_every: Duration) -> QueueConsumer<H> {
        QueueConsumer {
            handler,
            poll_every,
            out: Outbox::default(),
            timer: None,
            pending: None,
        }
    }

    fn send(&mut self, op: StoreOp, tag: BillTag, wait: Wait<H::Wait>) {
        let id = self.out.send(op, tag);
        self.pending = Some((id, wait));
    }

    fn next(&mut self, next: Next<H::Wait>) {
        match next {
            Next::Send(op, tag, wait) => self.send(op, tag, Wait::Handler(wait)),
            Next::Finish(delivery, ack) => {
                let op = if ack {
                    QueueOp::Ack { delivery }
                } else {
                    QueueOp::Nack { delivery }
                };
                self.send(StoreOp::Queue(op), BillTag::Queue, Wait::Finish);
            }
        }
    }
}

impl<H: Handler> Machine for QueueConsumer<H> {
    fn handle_start(&mut self, now: Timestamp) {
        if self.timer.is_none() && self.pending.is_none() {
            self.timer = Some(now);
        }
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        let wait = match self.pending.take() {
            Some((id, wait)) if id == op => wait,
            other => {
                self.pending = other;
                return;
            }
        };
        match (wait, reply) {
            (Wait::Fetch, Reply::Queue(QueueReply::Delivered(Some(d)))) => {
                let next = match parse(&d) {
                    Some((request, amount)) => {
                        self.handler.delivered(d.id, request, Amount(amount))
                    }
                    // A poison message: completed, not retried.
                    None => Next::Finish(d.id, true),
                };
                self.next(next);
            }
            (Wait::Fetch, _) => self.timer = Some(now + self.poll_every),
            (Wait::Handler(wait), reply) => {
                let next = self.handler.reply(wait, reply, &mut Notes(&mut self.out));
                self.next(next);
            }
            (Wait::Finish, _) => self.timer = Some(now),
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.pending.is_some() || self.timer.is_none_or(|t| t > now) {
            return;
        }
        self.timer = None;
        self.send(StoreOp::Queue(QueueOp::Fetch), BillTag::Queue, Wait::Fetch);
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.ops.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.out.pop_note()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        if self.pending.is_some() {
            None
        } else {
            self.timer
        }
    }

    fn is_idle(&self) -> bool {
        self.pending.is_none() && self.timer.is_none()
    }
}
