//! A linearizability checker for per-key register histories: the Wing-Gong search with
//! Lowe's memoization, as in Porcupine and Knossos.
//!
//! # Why per key
//!
//! Linearizability is compositional (Herlihy and Wing, "locality"): a history is
//! linearizable iff its restriction to each object is. Every key is an independent
//! register, so the search runs once per key, which keeps each search small.
//!
//! # The model
//!
//! A register holding a value with a revision (the raft index of the write), or absent:
//! read, write, CAS by revision (`If-Match`) and delete. Revisions of successive writes
//! strictly increase (they are raft indexes in apply order). An indeterminate write's
//! revision is not known until a read reveals it, so the state keeps it as unknown and the
//! first observation pins it.
//!
//! # Indeterminate operations
//!
//! An operation whose outcome is unknown may take effect at any point after its invocation
//! or never. It has no return event, so the search never has to place it; taking effect
//! "never" is the same as being placed after every determinate operation. The search
//! therefore succeeds as soon as every determinate operation is placed.
//!
//! # The search (Lowe, "Testing for linearizability", 2017)
//!
//! Events (calls and returns) sorted by time form a linked list. Walking it, a call is tried
//! against the model; if the model accepts and (set of placed operations, state) was not
//! seen before, the operation is *lifted* out of the list and pushed on a stack, and the walk
//! restarts from the head. Reaching a return whose operation is not placed means the current
//! prefix cannot be extended: pop the last operation, restore it, and try the next call
//! after it. The memo of (placed set, state) bounds the search to the distinct
//! configurations; a step budget turns a search that is still too large into
//! [`KeyVerdict::Unknown`] rather than a pass.
//!
//! # Implementation caveats
//!
//! - Equal timestamps are treated as concurrent (calls sort before returns), which can only
//!   accept more histories than strict precedence would, never reject a linearizable one.
//! - The smallest failing window is found greedily (the earliest cut time whose history
//!   fails, with operations still running then relaxed, then the latest start that still
//!   fails from an arbitrary initial state); it is small and a witness on its own, not
//!   necessarily minimal.

use std::collections::{BTreeMap, HashSet};

use super::history::{Input, Operation, Output, ValueId};

/// The default step budget per key: a few seconds of search at most.
pub const STEPS_MAX_DEFAULT: u64 = 5_000_000;

/// Memory the memo of one key's search may use; past it the answer is "unknown" (each
/// entry holds a bit set of the key's operations, so long histories make big entries).
pub const MEMO_BYTES_MAX: usize = 512 * 1024 * 1024;

/// The register's state as far as the history has revealed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Anything (the start of a window cut out of the middle of a history).
    Any,
    /// The key does not exist.
    Absent,
    /// The key exists; its value and revision are known once observed.
    Present {
        /// The value, if known.
        value: Option<ValueId>,
        /// The revision, if known.
        revision: Option<u64>,
    },
}

fn matches<T: PartialEq>(known: Option<T>, seen: T) -> bool {
    known.is_none_or(|known| known == seen)
}

/// Whether a write with revision `new` may follow `state` (revisions increase).
fn revision_after(state: State, new: u64) -> bool {
    match state {
        State::Present {
            revision: Some(old),
            ..
        } => new > old,
        _ => true,
    }
}

/// The model: the state after `input` with `output` applied to `state`, or `None` if the
/// register could not have answered so. An indeterminate operation is stepped as "applied";
/// "not applied" needs no step (see the module doc).
pub fn step(state: State, input: Input, output: Output) -> Option<State> {
    let present = |value, revision| State::Present { value, revision };
    match (input, output) {
        (Input::Read, Output::Read(None)) => match state {
            State::Any | State::Absent => Some(State::Absent),
            State::Present { .. } => None,
        },
        (Input::Read, Output::Read(Some((value, revision)))) => match state {
            State::Any => Some(present(Some(value), Some(revision))),
            State::Absent => None,
            State::Present {
                value: known_value,
                revision: known_revision,
            } => (matches(known_value, value) && matches(known_revision, revision))
                .then_some(present(Some(value), Some(revision))),
        },
        (Input::Write { value }, Output::Written { revision }) => {
            revision_after(state, revision).then_some(present(Some(value), Some(revision)))
        }
        (Input::Write { value }, Output::Unknown) => Some(present(Some(value), None)),
        (Input::Cas { expected, value }, Output::Written { revision }) => {
            let holds = match state {
                State::Any => true,
                State::Absent => false,
                State::Present {
                    revision: known, ..
                } => matches(known, expected),
            };
            (holds && revision > expected).then_some(present(Some(value), Some(revision)))
        }
        (Input::Cas { expected, value }, Output::Unknown) => match state {
            State::Absent => None,
            State::Present {
                revision: known, ..
            } if !matches(known, expected) => None,
            _ => Some(present(Some(value), None)),
        },
        (Input::Cas { expected, .. }, Output::CasFailed { current }) => match (state, current) {
            (State::Any | State::Absent, None) => Some(State::Absent),
            (_, None) | (State::Absent, Some(_)) => None,
            (_, Some(current)) if current == expected => None,
            (State::Any, Some(current)) => Some(present(None, Some(current))),
            (State::Present { value, revision }, Some(current)) => {
                matches(revision, current).then_some(present(value, Some(current)))
            }
        },
        (Input::Delete, Output::Deleted { existed }) => match (state, existed) {
            (State::Any, _) | (State::Absent, false) | (State::Present { .. }, true) => {
                Some(State::Absent)
            }
            _ => None,
        },
        (Input::Delete, Output::Unknown) => Some(State::Absent),
        // An output that does not belong to the input: the recorder is broken.
        _ => None,
    }
}

/// The verdict on one key's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    Violation,
    /// The search budget ran out first.
    Unknown,
}

/// The verdict on a whole history.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Keys checked and found linearizable.
    pub keys_ok: usize,
    /// Operations checked (determinate and indeterminate).
    pub operations: usize,
    /// Keys whose search ran out of budget.
    pub unknown_keys: Vec<String>,
    /// Keys with a violation, each with its smallest failing window found.
    pub violations: Vec<Violation>,
}

impl Report {
    /// Every key is proven linearizable.
    pub fn is_linearizable(&self) -> bool {
        self.violations.is_empty() && self.unknown_keys.is_empty()
    }
}

/// A non-linearizable key and a small window of its history that shows it.
#[derive(Clone, Debug)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// The operations of the window, in invocation order.
    pub window: Vec<Operation>,
    /// Whether the window starts from an arbitrary state (cut from the middle) or from the
    /// empty store.
    pub from_any_state: bool,
}

/// Checks a whole history, key by key, with `steps_max` model steps per key.
pub fn check(history: &[Operation], steps_max: u64) -> Report {
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for operation in history {
        by_key
            .entry(&operation.key)
            .or_default()
            .push(operation.clone());
    }
    let mut report = Report {
        operations: history.len(),
        ..Report::default()
    };
    for (key, mut operations) in by_key {
        operations.sort_by_key(|operation| operation.invoke_ns);
        match check_pruned_then_full(&operations, steps_max) {
            KeyVerdict::Linearizable => report.keys_ok += 1,
            KeyVerdict::Unknown => report.unknown_keys.push(key.to_string()),
            KeyVerdict::Violation => report.violations.push(Violation {
                key: key.to_string(),
                ..smallest_window(&operations, steps_max)
            }),
        }
    }
    report
}

/// Checks without the indeterminate writes whose value no read saw first (sound for a
/// pass: a linearization without them is one where they never took effect), and only if
/// that fails, with everything (each unobserved indeterminate write can double the search).
fn check_pruned_then_full(operations: &[Operation], steps_max: u64) -> KeyVerdict {
    let observed: HashSet<ValueId> = operations
        .iter()
        .filter_map(|operation| match operation.output {
            Output::Read(Some((value, _))) => Some(value),
            _ => None,
        })
        .collect();
    let pruned: Vec<Operation> = operations
        .iter()
        .filter(|operation| match (operation.input, operation.output) {
            (Input::Write { value } | Input::Cas { value, .. }, Output::Unknown) => {
                observed.contains(&value)
            }
            _ => true,
        })
        .cloned()
        .collect();
    if pruned.len() < operations.len()
        && check_key(&pruned, State::Absent, steps_max) == KeyVerdict::Linearizable
    {
        return KeyVerdict::Linearizable;
    }
    check_key(operations, State::Absent, steps_max)
}

/// Shrinks a failing key history (sorted by invocation) to a small failing window that is
/// a witness on its own: if the window is not linearizable, neither is the history.
fn smallest_window(operations: &[Operation], steps_max: u64) -> Violation {
    let fails = |window: &[Operation], initial| {
        check_key(window, initial, steps_max) == KeyVerdict::Violation
    };
    // The earliest cut time T whose history up to T fails (binary search over completion
    // times; failure is nearly monotone in T, and the result is confirmed).
    let mut times: Vec<u64> = operations
        .iter()
        .filter_map(|operation| operation.complete_ns)
        .collect();
    times.sort_unstable();
    let (mut low, mut high) = (0, times.len());
    while low < high {
        let middle = (low + high) / 2;
        if fails(&history_until(operations, times[middle]), State::Absent) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    let prefix = match times.get(high) {
        Some(&until) if fails(&history_until(operations, until), State::Absent) => {
            history_until(operations, until)
        }
        _ => operations.to_vec(),
    };
    // The latest start that still fails from any state, keeping every earlier operation
    // that may overlap the window (so cutting it off cannot explain the failure away).
    for start in (1..prefix.len()).rev() {
        let window = window_from(&prefix, start);
        if fails(&window, State::Any) {
            return Violation {
                key: String::new(),
                window,
                from_any_state: true,
            };
        }
    }
    Violation {
        key: String::new(),
        window: prefix,
        from_any_state: false,
    }
}

/// The history as it stood at time `until`: operations invoked by then; one still running
/// then is relaxed (a read dropped, a write made indeterminate), since what it saw may
/// depend on operations invoked later. A violation here is a violation of the whole history:
/// everything invoked later can only be linearized after `until`, after every operation
/// kept determinate.
fn history_until(operations: &[Operation], until: u64) -> Vec<Operation> {
    operations
        .iter()
        .filter(|operation| operation.invoke_ns <= until)
        .filter_map(|operation| match operation.complete_ns {
            Some(done) if done <= until => Some(operation.clone()),
            _ if operation.input == Input::Read => None,
            _ => Some(Operation {
                output: Output::Unknown,
                complete_ns: None,
                ..operation.clone()
            }),
        })
        .collect()
}

/// Operations `start..` plus every earlier one that completes after `start` is invoked.
fn window_from(operations: &[Operation], start: usize) -> Vec<Operation> {
    let begin = operations[start].invoke_ns;
    operations
        .iter()
        .enumerate()
        .filter(|(index, operation)| {
            *index >= start || operation.complete_ns.is_none_or(|done| done >= begin)
        })
        .map(|(_, operation)| operation.clone())
        .collect()
}

/// One event of the search list.
#[derive(Clone, Copy)]
struct Event {
    operation: usize,
    is_call: bool,
    /// For a call, the index of its return event (None: indeterminate).
    matching: Option<usize>,
    previous: Option<usize>,
    next: Option<usize>,
}

/// The linked event list, with lift and unlift of an operation's call and return.
struct Events {
    events: Vec<Event>,
    head: Option<usize>,
}

impl Events {
    fn new(operations: &[Operation]) -> Events {
        // (time, return-after-call, operation, is_call)
        let mut order: Vec<(u64, bool, usize)> = Vec::new();
        for (index, operation) in operations.iter().enumerate() {
            order.push((operation.invoke_ns, false, index));
            if let Some(done) = operation
                .complete_ns
                .filter(|_| !operation.is_indeterminate())
            {
                order.push((done, true, index));
            }
        }
        order.sort();
        let mut call_at = vec![usize::MAX; operations.len()];
        let mut events: Vec<Event> = Vec::with_capacity(order.len());
        for (position, &(_, is_return, operation)) in order.iter().enumerate() {
            if is_return {
                events[call_at[operation]].matching = Some(position);
            } else {
                call_at[operation] = position;
            }
            events.push(Event {
                operation,
                is_call: !is_return,
                matching: None,
                previous: position.checked_sub(1),
                next: (position + 1 < order.len()).then_some(position + 1),
            });
        }
        let head = (!events.is_empty()).then_some(0);
        Events { events, head }
    }

    fn unlink(&mut self, at: usize) {
        let Event { previous, next, .. } = self.events[at];
        match previous {
            Some(previous) => self.events[previous].next = next,
            None => self.head = next,
        }
        if let Some(next) = next {
            self.events[next].previous = previous;
        }
    }

    fn relink(&mut self, at: usize) {
        let Event { previous, next, .. } = self.events[at];
        match previous {
            Some(previous) => self.events[previous].next = Some(at),
            None => self.head = Some(at),
        }
        if let Some(next) = next {
            self.events[next].previous = Some(at);
        }
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(done) = self.events[call].matching {
            self.unlink(done);
        }
    }

    fn unlift(&mut self, call: usize) {
        // Reverse order of lift, so the neighbours recorded at unlink time are valid.
        if let Some(done) = self.events[call].matching {
            self.relink(done);
        }
        self.relink(call);
    }
}

/// Bit set of placed operations (the memo key, with the state).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Placed(Vec<u64>);

impl Placed {
    fn flip(&mut self, operation: usize) {
        self.0[operation / 64] ^= 1 << (operation % 64);
    }
}

/// Checks one key's operations from `initial`.
pub fn check_key(operations: &[Operation], initial: State, steps_max: u64) -> KeyVerdict {
    let mut events = Events::new(operations);
    let mut determinate_left = operations
        .iter()
        .filter(|operation| !operation.is_indeterminate())
        .count();
    let mut placed = Placed(vec![0; operations.len().div_ceil(64)]);
    let memo_entries_max = MEMO_BYTES_MAX / (8 * placed.0.len() + 64);
    let mut seen: HashSet<(Placed, State)> = HashSet::new();
    // (call event, state before it)
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state = initial;
    let mut cursor = events.head;
    let mut steps = 0u64;
    while determinate_left > 0 {
        steps += 1;
        if steps > steps_max {
            return KeyVerdict::Unknown;
        }
        // The end of the list cannot be reached while a determinate operation is unplaced
        // (its return comes first), but if it were, backtracking is the safe reading.
        let event = cursor.map(|at| events.events[at]);
        if let Some(event) = event.filter(|event| event.is_call) {
            let at = cursor.expect("an event was read at the cursor");
            let operation = &operations[event.operation];
            if let Some(next) = step(state, operation.input, operation.output) {
                placed.flip(event.operation);
                if seen.len() >= memo_entries_max {
                    return KeyVerdict::Unknown;
                }
                if seen.insert((placed.clone(), next)) {
                    stack.push((at, state));
                    state = next;
                    events.lift(at);
                    if !operation.is_indeterminate() {
                        determinate_left -= 1;
                    }
                    cursor = events.head;
                    continue;
                }
                placed.flip(event.operation);
            }
            cursor = event.next;
        } else {
            // A return of an unplaced operation: backtrack.
            let Some((call, before)) = stack.pop() else {
                return KeyVerdict::Violation;
            };
            events.unlift(call);
            let operation = events.events[call].operation;
            placed.flip(operation);
            if !operations[operation].is_indeterminate() {
                determinate_left += 1;
            }
            state = before;
            cursor = events.events[call].next;
        }
    }
    KeyVerdict::Linearizable
}
