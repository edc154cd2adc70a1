//! Write and fsync failures injected through the file-system trait: the error reaches the
//! caller, the in-memory state is unchanged, and the log is poisoned until reopened.

use std::path::Path;
use std::sync::Arc;

use kvstore::Error;
use kvstore::raft::{Entry, HardState};
use kvstore::wal::fs::{Faults, FaultyFs};
use kvstore::wal::{Options, Wal};

fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to)
        .map(|index| Entry {
            index,
            term,
            command: format!("value-{index}").into_bytes(),
        })
        .collect()
}

fn open_faulty(dir: &Path, segment_bytes_max: u64) -> (Wal, FaultyFs) {
    open_faulty_with(dir, segment_bytes_max, true)
}

/// `preallocate: false` makes every rotation create its segment with `create_new`; with
/// it, a rotation renames the background spare instead whenever the spare is ready, which
/// depends on timing.
fn open_faulty_with(dir: &Path, segment_bytes_max: u64, preallocate: bool) -> (Wal, FaultyFs) {
    let fs = FaultyFs::new();
    let options = Options {
        segment_bytes_max,
        file_system: Arc::new(fs.clone()),
        preallocate,
        ..Options::default()
    };
    let (wal, _) = Wal::open(dir, options).unwrap();
    (wal, fs)
}

/// The visible state of a log.
fn snapshot(wal: &Wal) -> (u64, u64, u64, HardState, usize) {
    (
        wal.first_index(),
        wal.last_index(),
        wal.last_term(),
        wal.hard_state().clone(),
        wal.segments().len(),
    )
}

/// Arms `fault`, makes a save fail, and checks the failure contract. Returns the dir's
/// log as reopened afterwards.
fn failing_save(fault: fn(&mut Faults), segment_bytes_max: u64) -> kvstore::wal::Recovered {
    failing_save_with(fault, segment_bytes_max, true)
}

fn failing_save_with(
    fault: fn(&mut Faults),
    segment_bytes_max: u64,
    preallocate: bool,
) -> kvstore::wal::Recovered {
    let temp = tempfile::tempdir().unwrap();
    let (mut wal, fs) = open_faulty_with(temp.path(), segment_bytes_max, preallocate);
    let state = HardState {
        term: 1,
        vote: Some("n1".to_string()),
        commit: 0,
    };
    wal.save(Some(&state), &entries(1, 4, 1)).unwrap();
    let before = snapshot(&wal);
    fs.with_faults(fault);
    let next = HardState {
        term: 2,
        vote: None,
        commit: 3,
    };
    let error = wal.save(Some(&next), &entries(3, 12, 2)).unwrap_err();
    assert!(
        matches!(error, Error::Io { .. }),
        "the I/O error reaches the caller: {error}"
    );
    let after = snapshot(&wal);
    assert_eq!(
        (after.0, after.1, after.2, &after.3),
        (before.0, before.1, before.2, &before.3)
    );
    assert!(wal.is_poisoned());
    assert!(matches!(
        wal.save(None, &entries(5, 5, 1)),
        Err(Error::Poisoned)
    ));
    assert!(matches!(wal.entries(1, 2), Err(Error::Poisoned)));
    assert!(matches!(wal.truncate_prefix(1), Err(Error::Poisoned)));
    assert!(matches!(wal.reset(10, 1), Err(Error::Poisoned)));
    drop(wal);
    let (_, recovered) = Wal::open(temp.path(), Options::default()).unwrap();
    recovered
}

#[test]
fn failed_write_leaves_state_unchanged_and_poisons() {
    let recovered = failing_save(|faults| faults.fail_next_write = true, 1 << 20);
    assert_eq!(recovered.entries, entries(1, 4, 1));
    assert_eq!(recovered.hard_state.term, 1);
    assert_eq!(recovered.repaired, None);
}

#[test]
fn short_write_is_repaired_as_a_torn_tail_on_reopen() {
    let recovered = failing_save(|faults| faults.short_next_write_bytes = Some(30), 1 << 20);
    assert_eq!(recovered.entries, entries(1, 4, 1));
    assert!(
        recovered.repaired.is_some(),
        "the partial batch is cut and saved aside"
    );
}

#[test]
fn failed_fsync_poisons_and_is_never_treated_as_durable() {
    let recovered = failing_save(|faults| faults.fail_next_sync = true, 1 << 20);
    // The bytes reached the page cache, so after reopen the batch may or may not be there:
    // either is fine because it was never acknowledged. Only these two outcomes are.
    let mut with_batch = entries(1, 2, 1);
    with_batch.extend(entries(3, 12, 2));
    assert!(
        recovered.entries == entries(1, 4, 1) || recovered.entries == with_batch,
        "{:?}",
        recovered.entries
    );
}

#[test]
fn failed_segment_creation_during_rotation_poisons() {
    // Without preallocation, so that the rotation is sure to call `create_new`.
    let recovered = failing_save_with(|faults| faults.fail_next_create = true, 256, false);
    assert_eq!(recovered.entries, entries(1, 4, 1));
}

#[test]
fn failed_directory_fsync_during_rotation_poisons() {
    let recovered = failing_save(|faults| faults.fail_next_dir_sync = true, 256);
    assert_eq!(recovered.entries, entries(1, 4, 1));
}

#[test]
fn failed_fsync_of_reset_and_compaction_changes_nothing_in_memory() {
    let temp = tempfile::tempdir().unwrap();
    let (mut wal, fs) = open_faulty(temp.path(), 256);
    wal.save(None, &entries(1, 20, 1)).unwrap();
    for index in 21..=40 {
        wal.save(None, &entries(index, index, 1)).unwrap();
    }
    let before = snapshot(&wal);
    fs.with_faults(|faults| faults.fail_next_sync = true);
    assert!(matches!(wal.truncate_prefix(30), Err(Error::Io { .. })));
    assert_eq!(snapshot(&wal), before);
    drop(wal);
    let (mut wal, fs) = open_faulty(temp.path(), 256);
    let before = snapshot(&wal);
    fs.with_faults(|faults| faults.fail_next_write = true);
    assert!(matches!(wal.reset(100, 3), Err(Error::Io { .. })));
    assert_eq!(snapshot(&wal), before);
    assert!(matches!(wal.reset(100, 3), Err(Error::Poisoned)));
}
