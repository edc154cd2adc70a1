//! The linearizability checker against hand-made histories (linearizable and not), and
//! against random histories that are linearizable by construction.

use kvstore::torture::checker::{self, KeyVerdict, State, check_key};
use kvstore::torture::rng::Rng;
use kvstore::torture::{FOREIGN_VALUE, Input, Operation, Output};

const BUDGET: u64 = 1_000_000;

fn op(client: usize, input: Input, output: Output, invoke: u64, complete: u64) -> Operation {
    Operation {
        client,
        key: "k".into(),
        input,
        output,
        invoke_ns: invoke,
        complete_ns: (output != Output::Unknown).then_some(complete),
    }
}

fn write(value: u64) -> Input {
    Input::Write { value }
}

fn ok(revision: u64) -> Output {
    Output::Written { revision }
}

fn saw(value: u64, revision: u64) -> Output {
    Output::Read(Some((value, revision)))
}

fn verdict(history: &[Operation]) -> KeyVerdict {
    let report = checker::check(history, BUDGET);
    if !report.violations.is_empty() {
        KeyVerdict::Violation
    } else if !report.unknown_keys.is_empty() {
        KeyVerdict::Unknown
    } else {
        KeyVerdict::Linearizable
    }
}

#[test]
fn sequential_write_then_read() {
    let history = [
        op(0, write(1), ok(1), 0, 10),
        op(1, Input::Read, saw(1, 1), 20, 30),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Linearizable);
}

#[test]
fn a_read_concurrent_with_a_write_may_see_either() {
    let history = [
        op(0, write(1), ok(1), 0, 100),
        op(1, Input::Read, Output::Read(None), 10, 20),
        op(2, Input::Read, saw(1, 1), 30, 40),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Linearizable);
}

#[test]
fn a_value_once_seen_cannot_be_unseen() {
    // R1 saw the write finish; R2 starts after R1 ends and sees the old state.
    let history = [
        op(0, write(1), ok(1), 0, 100),
        op(1, Input::Read, saw(1, 1), 10, 20),
        op(2, Input::Read, Output::Read(None), 30, 40),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Violation);
}

#[test]
fn stale_read_after_an_acknowledged_overwrite() {
    let history = [
        op(0, write(1), ok(1), 0, 10),
        op(0, write(2), ok(2), 20, 30),
        op(1, Input::Read, saw(1, 1), 40, 50),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Violation);
}

#[test]
fn lost_acknowledged_write() {
    let history = [
        op(0, write(1), ok(1), 0, 10),
        op(1, Input::Read, Output::Read(None), 20, 30),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Violation);
}

#[test]
fn read_of_a_value_nobody_wrote() {
    let history = [
        op(0, write(1), ok(1), 0, 10),
        op(1, Input::Read, saw(FOREIGN_VALUE, 1), 20, 30),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Violation);
}

#[test]
fn revision_must_match_the_write() {
    let history = [
        op(0, write(1), ok(1), 0, 10),
        op(1, Input::Read, saw(1, 2), 20, 30),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Violation);
}

#[test]
fn revisions_increase_with_each_write() {
    let history = [
        op(0, write(1), ok(5), 0, 10),
        op(0, write(2), ok(3), 20, 30),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Violation);
}

#[test]
fn indeterminate_write_may_apply_much_later() {
    let history = [
        op(0, write(1), Output::Unknown, 0, 0),
        op(1, write(2), ok(2), 10, 20),
        op(1, Input::Read, saw(2, 2), 30, 40),
        op(1, Input::Read, saw(1, 3), 50, 60),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Linearizable);
}

#[test]
fn indeterminate_write_may_never_apply() {
    let history = [
        op(0, write(1), Output::Unknown, 0, 0),
        op(1, Input::Read, Output::Read(None), 10, 20),
        op(1, Input::Read, Output::Read(None), 30, 40),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Linearizable);
}

#[test]
fn indeterminate_write_cannot_apply_before_its_invocation() {
    let history = [
        op(1, Input::Read, saw(1, 1), 0, 10),
        op(0, write(1), Output::Unknown, 20, 0),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Violation);
}

#[test]
fn indeterminate_write_applies_at_most_once() {
    // v1 seen, overwritten by v2 (acknowledged), then v1 again: a write cannot land twice.
    let history = [
        op(0, write(1), Output::Unknown, 0, 0),
        op(1, Input::Read, saw(1, 1), 10, 20),
        op(1, write(2), ok(2), 30, 40),
        op(1, Input::Read, saw(1, 1), 50, 60),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Violation);
}

#[test]
fn compare_and_set_by_revision() {
    let history = [
        op(0, write(1), ok(1), 0, 10),
        op(
            0,
            Input::Cas {
                expected: 1,
                value: 2,
            },
            ok(2),
            20,
            40,
        ),
        op(
            1,
            Input::Cas {
                expected: 1,
                value: 3,
            },
            Output::CasFailed { current: Some(2) },
            25,
            45,
        ),
        op(1, Input::Read, saw(2, 2), 50, 60),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Linearizable);
}

#[test]
fn compare_and_set_on_a_stale_revision_succeeding_is_a_violation() {
    let history = [
        op(0, write(1), ok(1), 0, 10),
        op(0, write(2), ok(2), 20, 30),
        op(
            1,
            Input::Cas {
                expected: 1,
                value: 3,
            },
            ok(3),
            40,
            50,
        ),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Violation);
}

#[test]
fn two_compare_and_sets_on_one_revision_cannot_both_win() {
    let history = [
        op(0, write(1), ok(1), 0, 10),
        op(
            0,
            Input::Cas {
                expected: 1,
                value: 2,
            },
            ok(2),
            20,
            40,
        ),
        op(
            1,
            Input::Cas {
                expected: 1,
                value: 3,
            },
            ok(3),
            20,
            40,
        ),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Violation);
}

#[test]
fn compare_and_set_failure_on_an_absent_key() {
    let failed = Output::CasFailed { current: None };
    let history = [op(
        0,
        Input::Cas {
            expected: 4,
            value: 1,
        },
        failed,
        0,
        10,
    )];
    assert_eq!(verdict(&history), KeyVerdict::Linearizable);
    let wrong = Output::CasFailed { current: Some(4) };
    let history = [op(
        0,
        Input::Cas {
            expected: 4,
            value: 1,
        },
        wrong,
        0,
        10,
    )];
    assert_eq!(verdict(&history), KeyVerdict::Violation);
}

#[test]
fn indeterminate_cas_only_applies_when_its_condition_holds() {
    let history = [
        op(0, write(1), ok(1), 0, 10),
        op(0, write(2), ok(2), 20, 30),
        op(
            1,
            Input::Cas {
                expected: 1,
                value: 3,
            },
            Output::Unknown,
            40,
            0,
        ),
        op(1, Input::Read, saw(3, 3), 50, 60),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Violation);
}

#[test]
fn deletes() {
    let history = [
        op(0, write(1), ok(1), 0, 10),
        op(0, Input::Delete, Output::Deleted { existed: true }, 20, 30),
        op(1, Input::Read, Output::Read(None), 40, 50),
        op(1, Input::Delete, Output::Deleted { existed: false }, 60, 70),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Linearizable);
    let history = [
        op(0, write(1), ok(1), 0, 10),
        op(0, Input::Delete, Output::Deleted { existed: false }, 20, 30),
    ];
    assert_eq!(verdict(&history), KeyVerdict::Violation);
}

#[test]
fn keys_are_checked_independently() {
    let mut other = op(1, Input::Read, Output::Read(None), 20, 30);
    other.key = "other".into();
    let history = [op(0, write(1), ok(1), 0, 10), other];
    assert_eq!(verdict(&history), KeyVerdict::Linearizable);
}

#[test]
fn budget_exhaustion_is_unknown_not_a_pass() {
    let history: Vec<Operation> = (0..12)
        .map(|client| {
            op(
                client,
                write(client as u64 + 1),
                ok(client as u64 + 1),
                0,
                100,
            )
        })
        .collect();
    assert_eq!(check_key(&history, State::Absent, 3), KeyVerdict::Unknown);
    assert_eq!(
        check_key(&history, State::Absent, BUDGET),
        KeyVerdict::Linearizable
    );
}

#[test]
fn violation_window_is_small_and_still_fails() {
    // A long linearizable run, then one stale read.
    let mut history = Vec::new();
    for step in 0..200u64 {
        let at = step * 100;
        history.push(op(0, write(step + 1), ok(step + 1), at, at + 10));
        history.push(op(
            1,
            Input::Read,
            saw(step + 1, step + 1),
            at + 20,
            at + 30,
        ));
    }
    history.push(op(1, Input::Read, saw(150, 150), 30_000, 30_010));
    let report = checker::check(&history, BUDGET);
    assert_eq!(report.violations.len(), 1);
    let window = &report.violations[0].window;
    assert!(
        window.len() <= 4,
        "window of {} ops: {window:#?}",
        window.len()
    );
    assert_eq!(
        check_key(window, State::Any, BUDGET),
        KeyVerdict::Violation,
        "the reported window must fail on its own"
    );
}

/// Random histories of concurrent clients against a real register, each operation taking
/// effect at a random point inside its interval: linearizable by construction.
#[test]
fn random_linearizable_histories_pass() {
    for seed in 0..200 {
        let history = random_history(&mut Rng::new(seed), 4, 60);
        assert_eq!(
            verdict(&history),
            KeyVerdict::Linearizable,
            "seed {seed}: {history:#?}"
        );
    }
}

fn random_history(rng: &mut Rng, clients: usize, per_client: usize) -> Vec<Operation> {
    // (linearization point, client, input, invoke, complete, indeterminate)
    let mut planned = Vec::new();
    let mut value = 0;
    for client in 0..clients {
        let mut at = rng.below(50);
        for _ in 0..per_client {
            let invoke = at;
            let complete = invoke + 1 + rng.below(100);
            let point = rng.between(invoke, complete);
            value += 1;
            let input = match rng.below(10) {
                0..=3 => Input::Read,
                4 => Input::Delete,
                5..=7 => Input::Write { value },
                _ => Input::Cas {
                    expected: rng.between(1, 3 * (value + 1)),
                    value,
                },
            };
            let indeterminate = !matches!(input, Input::Read) && rng.chance(10);
            planned.push((point, client, input, invoke, complete, indeterminate));
            at = complete + 1 + rng.below(20);
        }
    }
    planned.sort_by_key(|plan| plan.0);
    let mut state: Option<(u64, u64)> = None;
    let mut revision = 0;
    let mut history = Vec::new();
    for (_, client, input, invoke, complete, indeterminate) in planned {
        // An indeterminate write sometimes never happens.
        let applies = !indeterminate || rng.chance(50);
        let output = match input {
            Input::Read => Output::Read(state),
            _ if !applies => Output::Unknown,
            Input::Write { value } => {
                revision += 1;
                state = Some((value, revision));
                ok(revision)
            }
            Input::Cas { expected, value } => match state {
                Some((_, current)) if current == expected => {
                    revision += 1;
                    state = Some((value, revision));
                    ok(revision)
                }
                _ => Output::CasFailed {
                    current: state.map(|(_, current)| current),
                },
            },
            Input::Delete => {
                revision += 1;
                let existed = state.take().is_some();
                Output::Deleted { existed }
            }
        };
        let output = if indeterminate {
            Output::Unknown
        } else {
            output
        };
        history.push(op(client, input, output, invoke, complete));
    }
    history
}

/// A long history (10,000 operations on one key, as a one-minute run produces) is decided
/// within the default budget.
#[test]
fn long_histories_fit_the_default_budget() {
    let history = random_history(&mut Rng::new(99), 4, 2500);
    let report = checker::check(&history, checker::STEPS_MAX_DEFAULT);
    assert!(report.is_linearizable(), "{report:?}");
}
