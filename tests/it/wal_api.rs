//! The WAL's API: save/reopen round trips, group commit, suffix and prefix truncation,
//! reset, rotation and range reads.

use std::path::Path;

use kvstore::Error;
use kvstore::raft::{Entry, HardState};
use kvstore::wal::fs::FaultyFs;
use kvstore::wal::{Options, Record, Wal};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        command: format!("command {index} at term {term}").into_bytes(),
    }
}

fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to).map(|index| entry(index, term)).collect()
}

fn small_segments() -> Options {
    Options {
        segment_bytes_max: 512,
        ..Options::default()
    }
}

/// A log of entries `1..=last` (term 1), one save each, in small segments.
fn filled(dir: &Path, last: u64) -> Wal {
    let (mut wal, _) = reopen(dir, small_segments());
    for index in 1..=last {
        wal.save(None, &[entry(index, 1)]).unwrap();
    }
    wal
}

/// The oldest segment file in `dir`.
fn oldest_segment(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .min()
        .unwrap()
}

fn reopen(dir: &Path, options: Options) -> (Wal, kvstore::wal::Recovered) {
    Wal::open(dir, options).expect("reopen")
}

#[test]
fn empty_log_opens_empty() {
    let temp = tempfile::tempdir().unwrap();
    let (wal, recovered) = reopen(temp.path(), Options::default());
    assert_eq!(recovered, kvstore::wal::Recovered::default());
    assert_eq!(
        (wal.first_index(), wal.last_index(), wal.last_term()),
        (1, 0, 0)
    );
    assert_eq!(wal.segments().len(), 1);
}

#[test]
fn save_then_reopen_returns_hard_state_and_entries() {
    let temp = tempfile::tempdir().unwrap();
    let state = HardState {
        term: 3,
        vote: Some("n2".to_string()),
        commit: 4,
    };
    {
        let (mut wal, _) = reopen(temp.path(), Options::default());
        wal.save(Some(&state), &entries(1, 5, 3)).unwrap();
        assert_eq!(wal.hard_state(), &state);
        assert_eq!((wal.last_index(), wal.last_term()), (5, 3));
        assert_eq!(wal.entries(2, 4).unwrap(), entries(2, 4, 3));
    }
    let (wal, recovered) = reopen(temp.path(), Options::default());
    assert_eq!(recovered.hard_state, state);
    assert_eq!(recovered.entries, entries(1, 5, 3));
    assert_eq!(recovered.base, None);
    assert_eq!(recovered.repaired, None);
    assert_eq!(wal.entries(1, 5).unwrap(), entries(1, 5, 3));
}

#[test]
fn one_save_is_one_write_and_one_fdatasync() {
    let temp = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let options = Options {
        file_system: std::sync::Arc::new(fs.clone()),
        ..Options::default()
    };
    let (mut wal, _) = reopen(temp.path(), options);
    let before = fs.with_faults(|faults| (faults.writes, faults.syncs));
    wal.save(Some(&HardState::default()), &entries(1, 256, 1))
        .unwrap();
    let after = fs.with_faults(|faults| (faults.writes, faults.syncs));
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1));
}

#[test]
fn conflicting_suffix_is_replaced_and_survives_reopen() {
    let temp = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = reopen(temp.path(), small_segments());
        wal.save(None, &entries(1, 10, 1)).unwrap();
        wal.save(None, &entries(6, 8, 2)).unwrap();
        assert_eq!((wal.last_index(), wal.last_term()), (8, 2));
        assert_eq!(wal.entries(5, 8).unwrap()[1], entry(6, 2));
    }
    let (_, recovered) = reopen(temp.path(), small_segments());
    let mut expected = entries(1, 5, 1);
    expected.extend(entries(6, 8, 2));
    assert_eq!(recovered.entries, expected);
}

#[test]
fn segments_rotate_and_reads_span_them() {
    let temp = tempfile::tempdir().unwrap();
    {
        let wal = filled(temp.path(), 60);
        assert!(
            wal.segments().len() > 3,
            "{} segments",
            wal.segments().len()
        );
        assert_eq!(wal.entries(1, 60).unwrap(), entries(1, 60, 1));
        // Each segment holds `bytes` of records inside its preallocated space (a segment
        // may pass its maximum by one batch).
        for segment in wal.segments() {
            let length = std::fs::metadata(&segment.path).unwrap().len();
            assert!(length >= 512, "{segment:?} is preallocated");
            assert!(segment.bytes <= length, "{segment:?} within {length}");
        }
        let records: u64 = wal.segments().iter().map(|segment| segment.bytes).sum();
        assert_eq!(wal.size_bytes(), records);
    }
    let mut names: Vec<String> = std::fs::read_dir(temp.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names[0].starts_with("00000000000000000001-00000000000000000001"));
    let (_, recovered) = reopen(temp.path(), small_segments());
    assert_eq!(recovered.entries, entries(1, 60, 1));
}

#[test]
fn prefix_truncation_deletes_whole_segments_and_keeps_state() {
    let temp = tempfile::tempdir().unwrap();
    let state = HardState {
        term: 1,
        vote: Some("n1".to_string()),
        commit: 40,
    };
    {
        let (mut wal, _) = reopen(temp.path(), small_segments());
        wal.save(Some(&state), &[]).unwrap();
        for index in 1..=60 {
            wal.save(None, &[entry(index, 1)]).unwrap();
        }
        let segments_before = wal.segments().len();
        wal.truncate_prefix(40).unwrap();
        assert!(wal.segments().len() < segments_before);
        assert_eq!(wal.first_index(), 41);
        assert_eq!(wal.entries(41, 60).unwrap(), entries(41, 60, 1));
        assert!(wal.entries(40, 41).is_err());
        let kept: Vec<_> = wal.segments().iter().map(|s| s.path.clone()).collect();
        drop(wal);
        // Dropping waits for the background deleter: only the kept segments are left (and
        // perhaps the spare for the next segment, a temporary that `open` deletes).
        let mut files: Vec<_> = std::fs::read_dir(temp.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| !path.to_string_lossy().ends_with(".tmp"))
            .collect();
        files.sort();
        assert_eq!(files, kept);
    }
    let (wal, recovered) = reopen(temp.path(), small_segments());
    assert_eq!(recovered.hard_state, state);
    assert_eq!(recovered.base, Some((40, 1)));
    assert_eq!(recovered.entries, entries(41, 60, 1));
    assert_eq!((wal.first_index(), wal.last_index()), (41, 60));
}

#[test]
fn a_dropped_segment_left_behind_by_a_crash_is_deleted_on_open_and_never_replayed() {
    let temp = tempfile::tempdir().unwrap();
    // As if the process died right after the rename that drops the oldest segment (the
    // compaction record is written first, so the log no longer needs it).
    filled(temp.path(), 60)
        .append(&[Record::Compact { index: 40, term: 1 }])
        .unwrap();
    let oldest = oldest_segment(temp.path());
    let mut dead = oldest.clone().into_os_string();
    dead.push(".dead.tmp");
    std::fs::rename(&oldest, &dead).unwrap();
    let (wal, recovered) = reopen(temp.path(), small_segments());
    assert_eq!(recovered.base, Some((40, 1)));
    assert_eq!(recovered.entries, entries(41, 60, 1));
    assert_eq!(wal.first_index(), 41);
    assert!(!std::path::Path::new(&dead).exists(), "deleted on open");
}

#[test]
fn reset_replaces_the_log() {
    let temp = tempfile::tempdir().unwrap();
    {
        let mut wal = filled(temp.path(), 30);
        wal.reset(100, 7).unwrap();
        assert_eq!(wal.segments().len(), 1);
        assert_eq!(
            (wal.first_index(), wal.last_index(), wal.last_term()),
            (101, 100, 7)
        );
        wal.save(None, &entries(101, 102, 7)).unwrap();
    }
    let (wal, recovered) = reopen(temp.path(), small_segments());
    assert_eq!(recovered.base, Some((100, 7)));
    assert_eq!(recovered.entries, entries(101, 102, 7));
    assert_eq!(wal.last_term(), 7);
}

#[test]
fn state_survives_many_rotations_after_compaction() {
    let temp = tempfile::tempdir().unwrap();
    let state = HardState {
        term: 2,
        vote: None,
        commit: 10,
    };
    {
        let (mut wal, _) = reopen(temp.path(), small_segments());
        wal.save(Some(&state), &entries(1, 10, 2)).unwrap();
        wal.truncate_prefix(10).unwrap();
        for index in 11..=80 {
            wal.save(None, &[entry(index, 2)]).unwrap();
            wal.truncate_prefix(index - 5).unwrap();
        }
    }
    let (_, recovered) = reopen(temp.path(), small_segments());
    assert_eq!(recovered.hard_state, state);
    assert_eq!(recovered.base, Some((75, 2)));
    assert_eq!(recovered.entries, entries(76, 80, 2));
}

#[test]
fn low_level_append_of_typed_records() {
    let temp = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = reopen(temp.path(), Options::default());
        wal.append(&[
            Record::Entry(entry(1, 1)),
            Record::Entry(entry(2, 1)),
            Record::Truncate { from: 2 },
            Record::Entry(entry(2, 2)),
        ])
        .unwrap();
        let bad = wal.append(&[Record::Entry(entry(9, 2))]).unwrap_err();
        assert!(matches!(bad, Error::InvalidInput(_)), "{bad}");
    }
    let (_, recovered) = reopen(temp.path(), Options::default());
    assert_eq!(recovered.entries, vec![entry(1, 1), entry(2, 2)]);
}

#[test]
fn oversized_command_is_refused_before_writing() {
    let temp = tempfile::tempdir().unwrap();
    let (mut wal, _) = reopen(temp.path(), Options::default());
    let huge = Entry {
        index: 1,
        term: 1,
        command: vec![0; kvstore::wal::ENTRY_BYTES_MAX + 1],
    };
    let before = wal.size_bytes();
    assert!(matches!(
        wal.save(None, &[huge]),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(
        (wal.size_bytes(), wal.last_index(), wal.is_poisoned()),
        (before, 0, false)
    );
}

#[test]
fn read_only_open_refuses_writes() {
    let temp = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = reopen(temp.path(), Options::default());
        wal.save(None, &entries(1, 3, 1)).unwrap();
    }
    let options = Options {
        read_only: true,
        ..Options::default()
    };
    let (mut wal, recovered) = reopen(temp.path(), options);
    assert_eq!(recovered.entries.len(), 3);
    assert_eq!(wal.entries(1, 3).unwrap(), entries(1, 3, 1));
    assert!(wal.save(None, &[entry(4, 1)]).is_err());
}

#[test]
fn large_commands_written_in_place_round_trip() {
    let temp = tempfile::tempdir().unwrap();
    // Commands of 1 KiB and more go out by vectored write straight from the entries.
    let batch: Vec<Entry> = (1..=40u64)
        .map(|index| Entry {
            index,
            term: 3,
            command: vec![
                (index % 251) as u8;
                [0, 10, 1023, 1024, 4096, 70_000][index as usize % 6]
            ],
        })
        .collect();
    {
        let (mut wal, _) = reopen(temp.path(), Options::default());
        wal.save(Some(&HardState::default()), &batch[..17]).unwrap();
        wal.save(None, &batch[17..]).unwrap();
        assert_eq!(wal.entries(1, 40).unwrap(), batch);
        let written = std::fs::read(&wal.segments()[0].path).unwrap();
        let records = written.len() - written.iter().rev().take_while(|&&b| b == 0).count();
        assert!(wal.size_bytes() >= records as u64, "every record counted");
        assert!(written[wal.size_bytes() as usize..].iter().all(|&b| b == 0));
    }
    let (_, recovered) = reopen(temp.path(), Options::default());
    assert_eq!(recovered.entries, batch);
    assert!(kvstore::wal::verify(temp.path()).unwrap().is_clean());
}

/// Entries 1..=60 in small segments and a durable `Compact{40}` record alone: as if the
/// node died, or had not yet got round, to dropping the segments it covers.
fn compacted_to_40_with_segments_kept(dir: &Path) {
    let mut wal = filled(dir, 60);
    wal.append(&[Record::Compact { index: 40, term: 1 }])
        .unwrap();
    assert!(wal.segments().len() > 3);
}

/// A crash between a durable `Compact`/`Reset` record and the segment deletions that
/// follow it (TRUNCATION commit points): replay gives the truncated log with or without
/// the dead segments, and with only the oldest of them deleted.
#[test]
fn crash_between_truncation_record_and_segment_deletion() {
    let temp = tempfile::tempdir().unwrap();
    compacted_to_40_with_segments_kept(temp.path());
    let (_, recovered) = reopen(temp.path(), small_segments());
    assert_eq!(
        (recovered.base, recovered.entries),
        (Some((40, 1)), entries(41, 60, 1))
    );
    let oldest = oldest_segment(temp.path());
    std::fs::remove_file(oldest).unwrap();
    let (mut wal, recovered) = reopen(temp.path(), small_segments());
    assert_eq!(recovered.entries, entries(41, 60, 1));
    wal.append(&[Record::Reset { index: 90, term: 4 }]).unwrap();
    drop(wal);
    let (wal, recovered) = reopen(temp.path(), small_segments());
    assert_eq!(
        (recovered.base, recovered.entries.len()),
        (Some((90, 4)), 0)
    );
    assert_eq!(
        (wal.first_index(), wal.last_index(), wal.last_term()),
        (91, 90, 4)
    );
}

/// kvinspect opens read-only next to a live node, without the lock: the node may drop a
/// segment (compaction) between the reader's listing and its read. The reader starts over
/// on the new list instead of failing with the vanished file.
#[test]
fn a_read_only_open_starts_over_when_a_segment_is_dropped_under_it() {
    let temp = tempfile::tempdir().unwrap();
    compacted_to_40_with_segments_kept(temp.path());
    let oldest = oldest_segment(temp.path());
    let mut dead = oldest.clone().into_os_string();
    dead.push(".dead.tmp");
    let file_system = FaultyFs::new();
    file_system.with_faults(|faults| {
        faults.rename_before_next_read = Some((oldest.clone(), dead.into()));
    });
    let options = Options {
        read_only: true,
        file_system: std::sync::Arc::new(file_system.clone()),
        ..small_segments()
    };
    let (_, recovered) = reopen(temp.path(), options);
    assert!(!oldest.exists(), "the node dropped it during the read");
    assert_eq!(
        (recovered.base, recovered.entries),
        (Some((40, 1)), entries(41, 60, 1))
    );
}
