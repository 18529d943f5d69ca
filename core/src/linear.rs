//! A linearizability checker for any sequential specification: Wing and Gong's search for a
//! total order of the operations that respects real time and the specification, with Lowe's
//! memoisation of (set of operations linearized, state) pairs, as Porcupine and Jepsen's
//! Knossos do. Histories are split by their caller (for Redis, by key: see
//! `racelab_sim::explore::linear`), because linearizability is compositional: a history is
//! linearizable exactly when each object's sub-history is.
//!
//! An operation whose outcome the client never learnt (a timeout, a cut connection, a crash)
//! may have taken effect at any moment after its invocation, or never: the search may place
//! it anywhere after its call or leave it out. Operations whose intervals touch (one returns at
//! the millisecond another is invoked) count as concurrent, so that the coarse timestamps of a
//! recorded run can never make a linearizable history look otherwise.
//!
//! The search is exponential in the worst case; [`check`] takes a bound on the number of
//! steps and answers [`Outcome::Unknown`] when it is spent, never a guess.

use std::collections::BTreeSet;

use crate::Timestamp;

/// A sequential specification: the state of one object and what each operation does to it.
pub trait Spec {
    /// The object's state. `Ord` because the memo table is ordered (no hash iteration in core).
    type State: Clone + Ord;
    /// An operation as invoked.
    type Input;
    /// What the object answered.
    type Output;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `input`, invoked at `call` and answered at `ret` (`None`: never answered), to
    /// `state`: every state the specification can be in afterwards when it answers `output`
    /// (any answer when `output` is `None`, the outcome unknown); empty when it cannot answer
    /// that. Several states when the specification is nondeterministic (a TTL that may or may
    /// not have run out by then).
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        call: Timestamp,
        ret: Option<Timestamp>,
        output: Option<&Self::Output>,
    ) -> Vec<Self::State>;
}

/// One operation of a history, from the client's point of view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// When the client invoked it.
    pub call: Timestamp,
    /// When the client learnt the outcome, and the outcome; `None` when it never did.
    pub ret: Option<(Timestamp, O)>,
    /// The operation.
    pub input: I,
}

/// Why a history is not linearizable: the longest order the search found that respects real
/// time and the specification, and an operation that could not come next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counterexample {
    /// Indexes (into the checked slice) of the longest linearizable prefix found, in order.
    pub prefix: Vec<usize>,
    /// A completed operation that no extension of that prefix could place before its return.
    pub stuck: usize,
}

/// The checker's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Some total order respects real time and the specification.
    Linearizable,
    /// No order does.
    NotLinearizable(Counterexample),
    /// The search spent its bound of steps before it could decide.
    Unknown {
        /// Steps taken.
        steps: u64,
    },
}

/// One entry of the time-ordered list: an operation's call or return.
#[derive(Clone, Copy, Debug)]
struct Entry {
    op: usize,
    call: bool,
}

/// A doubly linked list over the entries, by index, with a sentinel head (index `n`).
struct List {
    next: Vec<Option<usize>>,
    prev: Vec<usize>,
    head: usize,
}

impl List {
    fn new(n: usize) -> List {
        let head = n;
        let mut next = vec![None; n + 1];
        let mut prev = vec![head; n + 1];
        let mut last = head;
        for (i, p) in prev.iter_mut().enumerate().take(n) {
            next[last] = Some(i);
            *p = last;
            last = i;
        }
        next[last] = None;
        List { next, prev, head }
    }

    fn remove(&mut self, i: usize) {
        let p = self.prev[i];
        let n = self.next[i];
        self.next[p] = n;
        if let Some(n) = n {
            self.prev[n] = p;
        }
    }

    /// Puts `i` back where it was; entries must be restored in the reverse order of removal.
    fn restore(&mut self, i: usize) {
        let p = self.prev[i];
        let n = self.next[i];
        self.next[p] = Some(i);
        if let Some(n) = n {
            self.prev[n] = i;
        }
    }

    fn first(&self) -> Option<usize> {
        self.next[self.head]
    }
}

/// A set of operation indexes as bits, ordered (for the memo table).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Checks one object's history against `spec`, taking at most `bound` steps (one step: one
/// attempt to place an operation, or one backtrack).
pub fn check<S: Spec>(spec: &S, ops: &[Operation<S::Input, S::Output>], bound: u64) -> Outcome {
    // Calls before returns at the same instant: touching intervals are concurrent.
    let mut order: Vec<(Timestamp, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        order.push((op.call, false, i));
        if let Some((at, _)) = &op.ret {
            order.push((*at.max(&op.call), true, i));
        }
    }
    order.sort();
    let entries: Vec<Entry> = order
        .iter()
        .map(|&(_, is_return, op)| Entry {
            op,
            call: !is_return,
        })
        .collect();
    let mut return_of = vec![None; ops.len()];
    for (e, entry) in entries.iter().enumerate() {
        if !entry.call {
            return_of[entry.op] = Some(e);
        }
    }

    let mut list = List::new(entries.len());
    let mut pending_returns = ops.iter().filter(|o| o.ret.is_some()).count();
    let mut linearized = Bits::new(ops.len());
    let mut memo: BTreeSet<(Bits, S::State)> = BTreeSet::new();
    // Each frame: the call entry placed, the state before it, and the other states it could
    // have led to, tried on backtracking before the operation is taken out again.
    let mut stack: Vec<(usize, S::State, Vec<S::State>)> = Vec::new();
    let mut state = spec.init();
    let mut best: Counterexample = Counterexample {
        prefix: Vec::new(),
        stuck: 0,
    };
    let mut cursor = list.first();
    let mut steps: u64 = 0;

    loop {
        if pending_returns == 0 {
            return Outcome::Linearizable;
        }
        if steps >= bound {
            return Outcome::Unknown { steps };
        }
        steps += 1;
        match cursor {
            Some(e) if entries[e].call => {
                let i = entries[e].op;
                let op = &ops[i];
                let (ret, output) = match &op.ret {
                    Some((at, o)) => (Some(*at), Some(o)),
                    None => (None, None),
                };
                let mut next = spec.step(&state, &op.input, op.call, ret, output);
                linearized.set(i);
                let mut placed = None;
                while let Some(candidate) = next.pop() {
                    if memo.insert((linearized.clone(), candidate.clone())) {
                        placed = Some(candidate);
                        break;
                    }
                }
                match placed {
                    Some(after) => {
                        stack.push((e, std::mem::replace(&mut state, after), next));
                        list.remove(e);
                        if let Some(r) = return_of[i] {
                            list.remove(r);
                            pending_returns -= 1;
                        }
                        cursor = list.first();
                    }
                    None => {
                        linearized.clear(i);
                        cursor = list.next[e];
                    }
                }
            }
            // A return reached with its call still in the list (or, which cannot happen while
            // returns are pending, the end): nothing placed so far can be extended; backtrack.
            other => {
                if let Some(r) = other
                    && stack.len() >= best.prefix.len()
                {
                    best = Counterexample {
                        prefix: stack.iter().map(|&(e, _, _)| entries[e].op).collect(),
                        stuck: entries[r].op,
                    };
                }
                let Some((e, before, mut rest)) = stack.pop() else {
                    return Outcome::NotLinearizable(best);
                };
                // Another state the same placement could have led to.
                let mut retried = None;
                while let Some(candidate) = rest.pop() {
                    if memo.insert((linearized.clone(), candidate.clone())) {
                        retried = Some(candidate);
                        break;
                    }
                }
                if let Some(after) = retried {
                    state = after;
                    stack.push((e, before, rest));
                    cursor = list.first();
                    continue;
                }
                let i = entries[e].op;
                linearized.clear(i);
                if let Some(r) = return_of[i] {
                    list.restore(r);
                    pending_returns += 1;
                }
                list.restore(e);
                state = before;
                cursor = list.next[e];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register of `u8`: `Some(v)` writes, `None` reads.
    struct Register;

    impl Spec for Register {
        type State = u8;
        type Input = Option<u8>;
        type Output = u8;
        fn init(&self) -> u8 {
            0
        }
        fn step(
            &self,
            state: &u8,
            input: &Option<u8>,
            _call: Timestamp,
            _ret: Option<Timestamp>,
            output: Option<&u8>,
        ) -> Vec<u8> {
            match input {
                Some(v) => vec![*v],
                None if output.is_none_or(|o| o == state) => vec![*state],
                None => Vec::new(),
            }
        }
    }

    fn op(call: u64, ret: Option<u64>, input: Option<u8>, out: u8) -> Operation<Option<u8>, u8> {
        Operation {
            call: Timestamp::from_ms(call),
            ret: ret.map(|r| (Timestamp::from_ms(r), out)),
            input,
        }
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        for seen in [0, 1] {
            let h = [op(0, Some(10), Some(1), 0), op(5, Some(15), None, seen)];
            assert_eq!(check(&Register, &h, 1_000), Outcome::Linearizable);
        }
    }

    #[test]
    fn a_read_after_a_completed_write_must_see_it() {
        let h = [op(0, Some(10), Some(1), 0), op(11, Some(15), None, 0)];
        let Outcome::NotLinearizable(c) = check(&Register, &h, 1_000) else {
            panic!("a stale read after the write's return must be refused");
        };
        assert_eq!(c.prefix, vec![0]);
        assert_eq!(c.stuck, 1);
    }

    #[test]
    fn an_unknown_write_may_apply_late_or_never() {
        // The write timed out: a later read may see it, or not.
        for seen in [0, 1] {
            let h = [op(0, None, Some(1), 0), op(20, Some(25), None, seen)];
            assert_eq!(check(&Register, &h, 1_000), Outcome::Linearizable);
        }
        // But once a read saw it, a later read cannot miss it.
        let h = [
            op(0, None, Some(1), 0),
            op(20, Some(25), None, 1),
            op(30, Some(35), None, 0),
        ];
        assert!(matches!(
            check(&Register, &h, 1_000),
            Outcome::NotLinearizable(_)
        ));
    }

    #[test]
    fn touching_intervals_are_concurrent() {
        let h = [op(0, Some(10), Some(1), 0), op(10, Some(12), None, 0)];
        assert_eq!(check(&Register, &h, 1_000), Outcome::Linearizable);
    }

    #[test]
    fn reads_must_agree_on_one_order_of_concurrent_writes() {
        // Writes of 1 and 2 overlap; one reader sees 1 then 2, another 2 then 1, both after
        // the writes returned: no single order explains both.
        let h = [
            op(0, Some(10), Some(1), 0),
            op(0, Some(10), Some(2), 0),
            op(20, Some(21), None, 1),
            op(22, Some(23), None, 2),
        ];
        assert!(matches!(
            check(&Register, &h, 1_000),
            Outcome::NotLinearizable(_)
        ));
    }

    #[test]
    fn the_bound_gives_unknown_not_a_verdict() {
        let mut h: Vec<_> = (1..=12).map(|v| op(0, Some(100), Some(v), 0)).collect();
        h.push(op(200, Some(201), None, 99));
        assert_eq!(check(&Register, &h, 50), Outcome::Unknown { steps: 50 });
        // With room, the impossible read is refused.
        assert!(matches!(
            check(&Register, &h, 10_000_000),
            Outcome::NotLinearizable(_)
        ));
    }

    /// A register whose writes may or may not take (two successor states).
    struct Lossy;

    impl Spec for Lossy {
        type State = u8;
        type Input = Option<u8>;
        type Output = u8;
        fn init(&self) -> u8 {
            0
        }
        fn step(
            &self,
            state: &u8,
            input: &Option<u8>,
            _call: Timestamp,
            _ret: Option<Timestamp>,
            output: Option<&u8>,
        ) -> Vec<u8> {
            match input {
                // Tried last first: the lost write, so the kept one is found by backtracking.
                Some(v) => vec![*v, *state],
                None if output.is_none_or(|o| o == state) => vec![*state],
                None => Vec::new(),
            }
        }
    }

    #[test]
    fn backtracking_tries_every_successor_state() {
        let h = [op(0, Some(1), Some(1), 0), op(2, Some(3), None, 1)];
        assert_eq!(check(&Lossy, &h, 1_000), Outcome::Linearizable);
        // Either the write took or it did not; one write cannot be seen and then unseen.
        let h = [
            op(0, Some(1), Some(1), 0),
            op(2, Some(3), None, 1),
            op(4, Some(5), None, 0),
        ];
        assert!(matches!(
            check(&Lossy, &h, 1_000),
            Outcome::NotLinearizable(_)
        ));
    }

    #[test]
    fn an_empty_history_is_linearizable() {
        assert_eq!(check(&Register, &[], 0), Outcome::Linearizable);
    }
}
