//! A linearizability checker for histories recorded against real processes: the
//! Wing & Gong search with Lowe's memoization (the approach Knossos and Porcupine
//! take), over a small [`Model`] trait, with a register model per key.
//!
//! No maintained Rust crate fits (the known checkers are Go or Clojure), so this is
//! ours; `tests/faults_checker.rs` tests it on hand-made good and bad histories and
//! with property tests.
//!
//! An operation is linearizable-checked as an interval `[invoke, complete]`. One
//! whose outcome is unknown (a timeout, a reset connection, a 503 that says the write
//! may still be stored) may or may not have taken effect: it completes at +infinity
//! and the search may place it anywhere after its invocation, or leave it out.
//! Operations known to have failed without effect are simply not recorded.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Input: Debug;
    type Output: Debug;
    fn init(&self) -> Self::State;
    /// The state after `input` when it answered `output` (`None`: not observed,
    /// the outcome is unknown), or `None` when `output` is impossible in `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;
}

/// One recorded client operation. Times are nanoseconds on one clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Op<I, O> {
    pub client: usize,
    pub input: I,
    /// `None` when the outcome is unknown; then `complete` is `None` too.
    pub output: Option<O>,
    pub invoke: u64,
    /// `None`: unknown outcome, completes at +infinity.
    pub complete: Option<u64>,
}

/// What the search concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order explains the history. `stuck_at` lists the operations (as indexes
    /// into the history) that could be linearized next at the deepest point the
    /// search reached, none of which the model accepts.
    NotLinearizable {
        linearized: usize,
        stuck_at: Vec<usize>,
    },
    /// The search gave up after exploring `budget` states: neither proved.
    Inconclusive {
        budget: usize,
    },
}

/// States explored before giving up: a bound on the checker's time, far above what
/// the recorded histories need (they are split per key and stay small).
pub const DEFAULT_BUDGET: usize = 2_000_000;

/// Stack for the search: it recurses once per linearized operation, and a long
/// run records thousands of operations per key.
const STACK_BYTES_PER_OP: usize = 4096;
const BASE_STACK_BYTES: usize = 8 << 20;

/// Checks one history against `model`, on a thread whose stack fits the search.
pub fn check<M>(model: &M, history: &[Op<M::Input, M::Output>], budget: usize) -> Verdict
where
    M: Model + Sync,
    M::Input: Sync,
    M::Output: Sync,
{
    let stack = BASE_STACK_BYTES + history.len() * STACK_BYTES_PER_OP;
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn_scoped(scope, || search(model, history, budget))
            .expect("spawn the checker thread")
            .join()
            .expect("the checker thread panicked")
    })
}

fn search<M: Model>(model: &M, history: &[Op<M::Input, M::Output>], budget: usize) -> Verdict {
    // Sorted by invocation, so the candidates at each step are a prefix of the
    // operations not yet linearized.
    let mut order: Vec<usize> = (0..history.len()).collect();
    order.sort_by_key(|&i| (history[i].invoke, i));
    let mut search = Search {
        model,
        history,
        order,
        done: vec![false; history.len()],
        seen: HashSet::new(),
        explored: 0,
        budget,
        deepest: 0,
        stuck_at: Vec::new(),
        remaining_known: history.iter().filter(|op| op.complete.is_some()).count(),
    };
    let init = model.init();
    match search.run(&init, 0) {
        Some(true) => Verdict::Linearizable,
        Some(false) => Verdict::NotLinearizable {
            linearized: search.deepest,
            stuck_at: search.stuck_at,
        },
        None => Verdict::Inconclusive { budget },
    }
}

struct Search<'a, M: Model> {
    model: &'a M,
    history: &'a [Op<M::Input, M::Output>],
    order: Vec<usize>,
    done: Vec<bool>,
    /// (linearized set, state) pairs already explored without success.
    seen: HashSet<(Vec<u64>, M::State)>,
    explored: usize,
    budget: usize,
    deepest: usize,
    stuck_at: Vec<usize>,
    remaining_known: usize,
}

impl<M: Model> Search<'_, M> {
    fn bits(&self) -> Vec<u64> {
        let mut bits = vec![0u64; self.done.len().div_ceil(64)];
        for (i, _) in self.done.iter().enumerate().filter(|(_, d)| **d) {
            bits[i / 64] |= 1 << (i % 64);
        }
        bits
    }

    /// `Some(true)`: the rest linearizes; `Some(false)`: it cannot; `None`: budget.
    fn run(&mut self, state: &M::State, depth: usize) -> Option<bool> {
        if self.remaining_known == 0 {
            // Every operation that completed is placed; unknown ones left out did
            // not take effect, which their outcome allows.
            return Some(true);
        }
        self.explored += 1;
        if self.explored > self.budget {
            return None;
        }
        if !self.seen.insert((self.bits(), state.clone())) {
            return Some(false);
        }
        // An operation may go next only if no pending operation completed before it
        // was invoked (equal times count as concurrent, never as ordered).
        let horizon = self
            .order
            .iter()
            .filter(|&&i| !self.done[i])
            .filter_map(|&i| self.history[i].complete)
            .min()
            .unwrap_or(u64::MAX);
        let mut candidates: Vec<usize> = self
            .order
            .iter()
            .copied()
            .filter(|&i| !self.done[i])
            .take_while(|&i| self.history[i].invoke <= horizon)
            .collect();
        // Completed operations first, earliest completion first: the likely order.
        candidates.sort_by_key(|&i| (self.history[i].complete.unwrap_or(u64::MAX), i));
        for &i in &candidates {
            let op = &self.history[i];
            let Some(next) = self.model.step(state, &op.input, op.output.as_ref()) else {
                continue;
            };
            self.done[i] = true;
            let known = op.complete.is_some();
            if known {
                self.remaining_known -= 1;
            }
            let result = self.run(&next, depth + 1);
            self.done[i] = false;
            if known {
                self.remaining_known += 1;
            }
            match result {
                Some(false) => {}
                other => return other,
            }
        }
        if depth >= self.deepest {
            self.deepest = depth;
            self.stuck_at = candidates;
        }
        Some(false)
    }
}

/// A register per key: writes of unique values, reads that return the current
/// value (`None` before any write).
#[derive(Debug, Clone, Copy, Default)]
pub struct Register;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterInput {
    Write(u64),
    Read,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterOutput {
    Written,
    Value(Option<u64>),
}

impl Model for Register {
    type State = Option<u64>;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> Option<u64> {
        None
    }

    fn step(
        &self,
        state: &Option<u64>,
        input: &RegisterInput,
        output: Option<&RegisterOutput>,
    ) -> Option<Option<u64>> {
        match (input, output) {
            (RegisterInput::Write(v), None | Some(RegisterOutput::Written)) => Some(Some(*v)),
            (RegisterInput::Read, None) => Some(*state),
            (RegisterInput::Read, Some(RegisterOutput::Value(seen))) => {
                (seen == state).then_some(*state)
            }
            // A write answering a value, or a read answering "written": malformed.
            _ => None,
        }
    }
}

pub type RegisterOp = Op<RegisterInput, RegisterOutput>;

/// Drops what cannot change the verdict, so the search stays small: reads whose
/// outcome is unknown constrain nothing, and an unknown write whose value no read
/// returned can be taken as never applied (no read can sit between it and the next
/// write, since such a read would return its value).
pub fn prune_registers(history: &[RegisterOp]) -> Vec<RegisterOp> {
    let observed: HashSet<u64> = history
        .iter()
        .filter_map(|op| match op.output {
            Some(RegisterOutput::Value(Some(v))) => Some(v),
            _ => None,
        })
        .collect();
    history
        .iter()
        .filter(|op| match (op.input, op.complete) {
            (_, Some(_)) => true,
            (RegisterInput::Read, None) => false,
            (RegisterInput::Write(v), None) => observed.contains(&v),
        })
        .cloned()
        .collect()
}

/// Checks each key's register history on its own (linearizability is local: the
/// whole is linearizable iff every key is). Returns, per key, the verdict and the
/// pruned history it was reached on (the verdict's indexes point into it).
pub fn check_registers<K: Ord + Clone>(
    history: &[(K, RegisterOp)],
    budget: usize,
) -> BTreeMap<K, (Verdict, Vec<RegisterOp>)> {
    let mut per_key: BTreeMap<K, Vec<RegisterOp>> = BTreeMap::new();
    for (key, op) in history {
        per_key.entry(key.clone()).or_default().push(op.clone());
    }
    per_key
        .into_iter()
        .map(|(key, ops)| {
            let pruned = prune_registers(&ops);
            (key, (check(&Register, &pruned, budget), pruned))
        })
        .collect()
}
