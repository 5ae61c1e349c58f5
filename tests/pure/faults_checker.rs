//! The linearizability checker of `faults_common/linearizability.rs`, tested
//! on known-good and known-bad register histories and with property tests, so a
//! "0 anomalies" from the fault tests means something.

use crate::linearizability::{
    check, check_registers, prune_registers, Register, RegisterInput, RegisterOp, RegisterOutput,
    Verdict, DEFAULT_BUDGET,
};
use proptest::prelude::*;

fn write(client: usize, v: u64, invoke: u64, complete: u64) -> RegisterOp {
    RegisterOp {
        client,
        input: RegisterInput::Write(v),
        output: Some(RegisterOutput::Written),
        invoke,
        complete: Some(complete),
    }
}

fn unknown_write(client: usize, v: u64, invoke: u64) -> RegisterOp {
    RegisterOp {
        client,
        input: RegisterInput::Write(v),
        output: None,
        invoke,
        complete: None,
    }
}

fn read(client: usize, seen: Option<u64>, invoke: u64, complete: u64) -> RegisterOp {
    RegisterOp {
        client,
        input: RegisterInput::Read,
        output: Some(RegisterOutput::Value(seen)),
        invoke,
        complete: Some(complete),
    }
}

fn verdict(history: &[RegisterOp]) -> Verdict {
    check(&Register, &prune_registers(history), DEFAULT_BUDGET)
}

fn linearizable(history: &[RegisterOp]) -> bool {
    match verdict(history) {
        Verdict::Linearizable => true,
        Verdict::NotLinearizable { .. } => false,
        Verdict::Inconclusive { budget } => panic!("inconclusive after {budget} states"),
    }
}

#[test]
fn sequential_and_concurrent_good_histories_pass() {
    assert!(linearizable(&[]));
    assert!(linearizable(&[read(0, None, 0, 1)]));
    assert!(linearizable(&[
        write(0, 1, 0, 10),
        read(1, Some(1), 20, 30),
        write(0, 2, 40, 50),
        read(1, Some(2), 60, 70),
    ]));
    // A read concurrent with a write may see either value...
    assert!(linearizable(&[
        write(0, 1, 0, 10),
        write(0, 2, 20, 50),
        read(1, Some(1), 25, 30),
        read(2, Some(2), 26, 31),
    ]));
    // ...even when the one seeing the new value returns first.
    assert!(linearizable(&[
        write(0, 1, 0, 10),
        write(0, 2, 20, 50),
        read(1, Some(2), 21, 22),
        read(2, Some(2), 30, 40),
    ]));
    // Two concurrent writes can take effect in either order.
    assert!(linearizable(&[
        write(0, 1, 0, 10),
        write(1, 2, 0, 10),
        read(2, Some(1), 20, 30),
    ]));
}

#[test]
fn unknown_writes_may_take_effect_late_or_never() {
    // Seen long after its client gave up: allowed, it completes at +infinity.
    assert!(linearizable(&[
        write(0, 1, 0, 10),
        unknown_write(0, 2, 20),
        read(1, Some(1), 100, 110),
        read(1, Some(2), 200, 210),
    ]));
    // Never seen: allowed.
    assert!(linearizable(&[
        write(0, 1, 0, 10),
        unknown_write(0, 2, 20),
        read(1, Some(1), 100, 110),
    ]));
    // But once seen and then overwritten, it cannot come back.
    assert!(!linearizable(&[
        unknown_write(0, 2, 0),
        read(1, Some(2), 10, 20),
        write(1, 3, 30, 40),
        read(1, Some(2), 50, 60),
    ]));
    // And it cannot be seen before it was invoked.
    assert!(!linearizable(&[
        read(1, Some(2), 0, 10),
        unknown_write(0, 2, 20),
    ]));
}

#[test]
fn stale_read_fails() {
    let history = [
        write(0, 1, 0, 10),
        write(0, 2, 20, 30),
        read(1, Some(1), 40, 50),
    ];
    assert!(matches!(verdict(&history), Verdict::NotLinearizable { .. }));
}

#[test]
fn lost_acknowledged_write_fails() {
    assert!(!linearizable(&[write(0, 1, 0, 10), read(1, None, 20, 30)]));
}

#[test]
fn write_visible_then_gone_fails() {
    assert!(!linearizable(&[
        write(0, 1, 0, 10),
        write(0, 2, 20, 100),
        read(1, Some(2), 30, 40),
        read(2, Some(1), 50, 60),
    ]));
}

#[test]
fn reordered_writes_fail() {
    // Client 0 wrote 1 then 2; everyone then sees 2 overwritten by 1.
    assert!(!linearizable(&[
        write(0, 1, 0, 10),
        write(0, 2, 20, 30),
        read(1, Some(2), 40, 50),
        read(1, Some(1), 60, 70),
    ]));
    // Two readers disagree on the order of two concurrent writes, in sequence.
    assert!(!linearizable(&[
        write(0, 1, 0, 100),
        write(1, 2, 0, 100),
        read(2, Some(1), 10, 20),
        read(2, Some(2), 30, 40),
        read(3, Some(1), 50, 60),
    ]));
}

#[test]
fn a_value_never_written_fails() {
    assert!(!linearizable(&[
        write(0, 1, 0, 10),
        read(1, Some(7), 5, 30)
    ]));
}

#[test]
fn keys_are_checked_separately() {
    let history = vec![
        ("a", write(0, 1, 0, 10)),
        ("b", write(0, 2, 20, 30)),
        ("a", read(1, Some(1), 40, 50)),
        ("b", read(1, None, 40, 50)),
    ];
    let verdicts = check_registers(&history, DEFAULT_BUDGET);
    assert_eq!(verdicts["a"].0, Verdict::Linearizable);
    assert!(matches!(verdicts["b"].0, Verdict::NotLinearizable { .. }));
}

#[test]
fn the_budget_bounds_the_search() {
    // Many mutually concurrent unknown writes, all observed, and an impossible
    // read at the end: exhausting every order takes more than a tiny budget.
    let mut history: Vec<RegisterOp> = (0..12).map(|v| unknown_write(v as usize, v, 0)).collect();
    for v in 0..12 {
        history.push(read(20, Some(v), 10 + v * 10, 15 + v * 10));
    }
    history.push(read(21, Some(99), 1000, 1010));
    assert_eq!(
        check(&Register, &prune_registers(&history), 100),
        Verdict::Inconclusive { budget: 100 }
    );
}

#[test]
fn long_histories_do_not_overflow_the_stack() {
    // One recursion level per operation: 20,000 sequential operations.
    let history: Vec<RegisterOp> = (0..10_000u64)
        .flat_map(|v| {
            [
                write(0, v, v * 40, v * 40 + 10),
                read(1, Some(v), v * 40 + 20, v * 40 + 30),
            ]
        })
        .collect();
    assert!(linearizable(&history));
}

/// A sequential execution of register operations (one linearization point each,
/// strictly increasing), turned into a history whose intervals overlap at random
/// around those points. Values are unique: write i writes i + 1.
fn history_from_execution(kinds: &[(bool, u8, u8, usize)]) -> Vec<RegisterOp> {
    let mut value = None;
    let mut next = 1u64;
    kinds
        .iter()
        .enumerate()
        .map(|(i, &(is_write, before, after, client))| {
            let point = 1_000 + i as u64 * 100;
            // Up to 5 neighbours either side: wide overlap, still around the point.
            let invoke = point - u64::from(before) * 5;
            let complete = point + u64::from(after) * 5;
            if is_write {
                value = Some(next);
                next += 1;
                write(client, next - 1, invoke, complete)
            } else {
                read(client, value, invoke, complete)
            }
        })
        .collect()
}

fn execution() -> impl Strategy<Value = Vec<(bool, u8, u8, usize)>> {
    prop::collection::vec((any::<bool>(), 0u8..100, 0u8..100, 0usize..4), 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn histories_from_sequential_executions_are_linearizable(kinds in execution()) {
        prop_assert_eq!(verdict(&history_from_execution(&kinds)), Verdict::Linearizable);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught(kinds in execution(), pick in any::<prop::sample::Index>()) {
        let mut history = history_from_execution(&kinds);
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| history[i].input == RegisterInput::Read)
            .collect();
        prop_assume!(!reads.is_empty());
        let i = reads[pick.index(reads.len())];
        history[i].output = Some(RegisterOutput::Value(Some(1_000_000)));
        prop_assert!(!linearizable(&history));
    }

    #[test]
    fn without_overlap_any_other_read_value_is_caught(
        kinds in execution(),
        pick in any::<prop::sample::Index>(),
        other in any::<prop::sample::Index>(),
    ) {
        // No overlap: the history is sequential, so exactly one value is right.
        let flat: Vec<_> = kinds.iter().map(|&(w, _, _, c)| (w, 0, 0, c)).collect();
        let mut history = history_from_execution(&flat);
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| history[i].input == RegisterInput::Read)
            .collect();
        prop_assume!(!reads.is_empty());
        let i = reads[pick.index(reads.len())];
        let written = history.iter().filter(|op| op.input != RegisterInput::Read).count() as u64;
        // Any value in None, 1..=written other than the right one.
        let choices: Vec<Option<u64>> = std::iter::once(None)
            .chain((1..=written).map(Some))
            .filter(|v| history[i].output != Some(RegisterOutput::Value(*v)))
            .collect();
        prop_assume!(!choices.is_empty());
        history[i].output = Some(RegisterOutput::Value(choices[other.index(choices.len())]));
        prop_assert!(!linearizable(&history));
    }
}
