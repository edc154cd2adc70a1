//! Crash recovery: a torn tail at every byte offset of the newest segment, and a table of
//! named corruption cases with their expected outcomes (STYLE.md practice 7). Each runs
//! twice: with preallocated segments (the default; a torn write leaves zeroes in space the
//! file already has) and with segments that grow (a torn write leaves a short file).

use std::path::{Path, PathBuf};

use kvstore::Error;
use kvstore::raft::{Entry, HardState};
use kvstore::wal::format::{self, SEGMENT_HEADER_BYTES};
use kvstore::wal::{Options, Record, RecordRef, Wal};

fn options(preallocate: bool) -> Options {
    sized(600, preallocate)
}

fn sized(segment_bytes_max: u64, preallocate: bool) -> Options {
    Options {
        segment_bytes_max,
        preallocate,
        ..Options::default()
    }
}

/// Opens `dir`, which must fail with corruption: (file, offset, detail). Otherwise panics
/// with what did open (each entry's index and term).
fn corruption_opening(dir: &Path, options: Options, context: &str) -> (PathBuf, u64, String) {
    match Wal::open(dir, options) {
        Err(Error::Corruption {
            file,
            offset,
            detail,
            ..
        }) => (file, offset, detail),
        other => panic!(
            "{context}: expected corruption, got {:?}",
            other.map(|(_, recovered)| recovered
                .entries
                .iter()
                .map(|entry| (entry.index, entry.term))
                .collect::<Vec<_>>())
        ),
    }
}

/// Both ways segments can be laid out.
const MODES: [bool; 2] = [true, false];

/// One `save` call of the workload.
#[derive(Clone)]
struct Batch {
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
}

/// What the log must look like after a prefix of batches.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
struct Model {
    hard_state: HardState,
    entries: Vec<Entry>,
}

impl Model {
    fn apply(&mut self, batch: &Batch) {
        if let Some(state) = &batch.hard_state {
            self.hard_state = state.clone();
        }
        if let Some(first) = batch.entries.first() {
            self.entries.truncate((first.index - 1) as usize);
            self.entries.extend(batch.entries.iter().cloned());
        }
    }
}

/// A deterministic workload: appends, hard-state changes and conflicting overwrites, with
/// commands of varied length.
fn workload() -> Vec<Batch> {
    let mut batches = Vec::new();
    let mut last = 0u64;
    for step in 1..=40u64 {
        let term = 1 + step / 8;
        let (from, count) = if step % 9 == 0 && last > 3 {
            (last - 2, 2)
        } else {
            (last + 1, 1 + step % 3)
        };
        let entries: Vec<Entry> = (from..from + count)
            .map(|index| Entry {
                index,
                term,
                command: vec![b'a' + (index % 26) as u8; (index * 7 % 50) as usize],
            })
            .collect();
        last = from + count - 1;
        let hard_state = (step % 4 == 0).then(|| HardState {
            term,
            vote: Some(format!("n{}", step % 3 + 1)),
            commit: last.saturating_sub(2),
        });
        batches.push(Batch {
            hard_state,
            entries,
        });
    }
    batches
}

/// Writes the workload; returns, per batch, (segment sequence, end offset in it).
fn write_log(dir: &Path, batches: &[Batch], preallocate: bool) -> Vec<(u64, u64)> {
    let (mut wal, _) = Wal::open(dir, options(preallocate)).unwrap();
    batches
        .iter()
        .map(|batch| {
            wal.save(batch.hard_state.as_ref(), &batch.entries).unwrap();
            let active = wal.segments().last().unwrap();
            (active.sequence, active.bytes)
        })
        .collect()
}

fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    paths.sort();
    paths
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn model_after(batches: &[Batch], count: usize) -> Model {
    let mut model = Model::default();
    batches[..count].iter().for_each(|batch| model.apply(batch));
    model
}

/// A write torn at `cut`: a growing segment ends there; in a preallocated one every byte
/// from `cut` to the end of the records is zero again (the file keeps its length).
fn tear(segment: &Path, cut: u64, records_end: u64, preallocate: bool) {
    if preallocate {
        edit(segment, |bytes| {
            bytes[cut as usize..records_end as usize].fill(0)
        });
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .open(segment)
            .unwrap()
            .set_len(cut)
            .unwrap();
    }
}

#[test]
fn torn_tail_at_every_byte_of_the_newest_segment_keeps_exactly_a_prefix_of_batches() {
    for preallocate in MODES {
        torn_tail_at_every_byte(preallocate);
    }
}

fn torn_tail_at_every_byte(preallocate: bool) {
    let template = tempfile::tempdir().unwrap();
    let batches = workload();
    let ends = write_log(template.path(), &batches, preallocate);
    let paths = segment_paths(template.path());
    assert!(
        paths.len() >= 3,
        "workload must span segments: {}",
        paths.len()
    );
    let newest = paths.last().unwrap();
    let newest_sequence = ends.last().unwrap().0;
    let length = std::fs::metadata(newest).unwrap().len();
    let boundaries = batch_boundaries(newest);
    let records_end = *boundaries.last().unwrap();
    // Where the newest segment's start records (hard state, seal) end.
    let start_records_end = boundaries[1];
    assert_eq!(records_end, ends.last().unwrap().1);
    if preallocate {
        assert_eq!(length, 600, "the segment is preallocated");
        assert!(records_end < length);
    } else {
        assert_eq!(records_end, length);
    }
    let template_bytes = std::fs::read(newest).unwrap();
    for cut in 0..=records_end {
        let temp = tempfile::tempdir().unwrap();
        copy_dir(template.path(), temp.path());
        let segment = temp.path().join(newest.file_name().unwrap());
        tear(&segment, cut, records_end, preallocate);
        let opened = Wal::open(temp.path(), options(preallocate));
        let context = format!("cut {cut}, preallocate {preallocate}");
        if cut < start_records_end {
            // Segments are created whole (header and start records in a temporary file,
            // fdatasync, rename), so a short header or damaged start records are damage,
            // not a torn write; and without its start records the newest segment cannot
            // vouch, with its seal, for the end of the segment before. (Zeroing bytes that
            // were zero changes nothing: the header's reserved bytes, a trailing zero.)
            let start_changed = !preallocate
                || template_bytes[cut as usize..start_records_end as usize]
                    .iter()
                    .any(|&byte| byte != 0);
            if start_changed {
                assert!(matches!(opened, Err(Error::Corruption { .. })), "{context}");
                continue;
            }
        }
        let (mut wal, recovered) = opened.unwrap_or_else(|error| panic!("{context}: {error}"));
        let survivors = ends
            .iter()
            .filter(|(sequence, end)| *sequence < newest_sequence || *end <= cut)
            .count();
        let expected = model_after(&batches, survivors);
        assert_eq!(recovered.entries, expected.entries, "{context}");
        assert_eq!(recovered.hard_state, expected.hard_state, "{context}");
        // Cut exactly at a batch boundary there is nothing to repair. In preallocated space
        // neither is there when every byte written of the torn batch is zero: that reads
        // as unwritten space (and the batch is dropped all the same).
        let batch_start = *boundaries.iter().filter(|&&end| end <= cut).max().unwrap();
        let nothing_written = preallocate
            && template_bytes[batch_start as usize..cut as usize]
                .iter()
                .all(|&byte| byte == 0);
        let clean = boundaries.contains(&cut) || nothing_written;
        assert_eq!(
            recovered.repaired.is_none(),
            clean,
            "{context}: {:?}",
            recovered.repaired
        );
        // The repaired log takes new writes and reopens clean.
        let next = wal.last_index() + 1;
        let extra = Entry {
            index: next,
            term: wal.last_term(),
            command: b"after repair".to_vec(),
        };
        wal.save(None, std::slice::from_ref(&extra)).unwrap();
        drop(wal);
        if preallocate {
            let length = std::fs::metadata(&segment).unwrap().len();
            assert!(length >= 600, "{context}: preallocated again after repair");
        }
        let (_, again) = Wal::open(temp.path(), options(preallocate)).unwrap();
        assert_eq!(again.repaired, None, "{context}");
        assert_eq!(again.entries.last(), Some(&extra), "{context}");
    }
}

/// Offsets where a batch ends (and the first batch starts) in a segment file.
fn batch_boundaries(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    let mut boundaries = vec![SEGMENT_HEADER_BYTES as u64];
    let mut offset = SEGMENT_HEADER_BYTES;
    while let Ok(frame) = format::decode_frame(&bytes[offset..]) {
        offset += frame.frame_bytes;
        if frame.batch_end {
            boundaries.push(offset as u64);
        }
    }
    boundaries
}

/// What a corruption case must lead to.
#[derive(Debug)]
enum Expected {
    /// Nothing is damaged: open keeps every batch and repairs nothing.
    Intact,
    /// Open repairs a torn tail and keeps this many batches.
    Repaired { batches_kept: usize },
    /// Open fails with corruption in the segment at this position (0 = oldest).
    Corruption { segment: usize },
}

struct Case {
    name: &'static str,
    damage: fn(&[PathBuf]),
    expected: Expected,
}

/// Offsets of the frames of a segment file (after the header).
fn frame_offsets(path: &Path) -> Vec<usize> {
    let bytes = std::fs::read(path).unwrap();
    let mut offsets = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    while let Ok(frame) = format::decode_frame(&bytes[offset..]) {
        offsets.push(offset);
        offset += frame.frame_bytes;
    }
    offsets
}

fn edit(path: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    change(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

/// Where the last whole frame of a segment file ends.
fn records_end(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let last = *frame_offsets(path).last().unwrap();
    last + format::decode_frame(&bytes[last..]).unwrap().frame_bytes
}

fn middle_frame(path: &Path) -> usize {
    let offsets = frame_offsets(path);
    offsets[offsets.len() / 2]
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "bit flip mid sealed segment",
            damage: |paths| {
                let at = middle_frame(&paths[1]) + 12;
                edit(&paths[1], |bytes| bytes[at] ^= 0x10);
            },
            expected: Expected::Corruption { segment: 1 },
        },
        Case {
            name: "bit flip mid newest segment, valid records after it",
            damage: |paths| {
                let newest = paths.last().unwrap();
                let at = frame_offsets(newest)[2] + 10;
                edit(newest, |bytes| bytes[at] ^= 0x01);
            },
            expected: Expected::Corruption {
                segment: usize::MAX,
            },
        },
        Case {
            name: "zeroed tail (last record zeroed)",
            damage: |paths| {
                let newest = paths.last().unwrap();
                let last = *frame_offsets(newest).last().unwrap();
                edit(newest, |bytes| bytes[last..].fill(0));
            },
            // The last batch has three records: two whole ones are left of it.
            expected: Expected::Repaired { batches_kept: 39 },
        },
        Case {
            // What preallocation looks like, and so not damage.
            name: "zeroes appended after a valid tail",
            damage: |paths| edit(paths.last().unwrap(), |bytes| bytes.extend([0u8; 4096])),
            expected: Expected::Intact,
        },
        Case {
            name: "length past end of file in the last record",
            damage: |paths| {
                let newest = paths.last().unwrap();
                let last = *frame_offsets(newest).last().unwrap();
                edit(newest, |bytes| {
                    bytes[last..last + 4].copy_from_slice(&60_000u32.to_le_bytes())
                });
            },
            expected: Expected::Repaired { batches_kept: 39 },
        },
        Case {
            name: "length past end of file mid sealed segment",
            damage: |paths| {
                let at = middle_frame(&paths[0]);
                edit(&paths[0], |bytes| {
                    bytes[at..at + 4].copy_from_slice(&60_000u32.to_le_bytes())
                });
            },
            expected: Expected::Corruption { segment: 0 },
        },
        Case {
            name: "bad CRC in a sealed segment",
            damage: |paths| {
                let at = middle_frame(&paths[1]) + 4;
                edit(&paths[1], |bytes| bytes[at] = bytes[at].wrapping_add(1));
            },
            expected: Expected::Corruption { segment: 1 },
        },
        Case {
            name: "sealed segment cut short",
            damage: |paths| {
                let end = records_end(&paths[0]);
                edit(&paths[0], |bytes| bytes.truncate(end - 5));
            },
            expected: Expected::Corruption { segment: 0 },
        },
        Case {
            // Reads as unwritten space: only the next segment's seal shows it is lost.
            name: "last batch of a sealed segment zeroed",
            damage: |paths| {
                let boundaries = batch_boundaries(&paths[0]);
                let (start, end) = (
                    boundaries[boundaries.len() - 2],
                    boundaries[boundaries.len() - 1],
                );
                edit(&paths[0], |bytes| {
                    bytes[start as usize..end as usize].fill(0)
                });
            },
            expected: Expected::Corruption { segment: 0 },
        },
        Case {
            name: "start records of a sealed segment zeroed",
            damage: |paths| {
                let start_records_end = batch_boundaries(&paths[1])[1] as usize;
                edit(&paths[1], |bytes| {
                    bytes[SEGMENT_HEADER_BYTES..start_records_end].fill(0)
                });
            },
            expected: Expected::Corruption { segment: 1 },
        },
        Case {
            name: "missing middle segment",
            damage: |paths| std::fs::remove_file(&paths[1]).unwrap(),
            expected: Expected::Corruption { segment: 1 },
        },
        Case {
            name: "missing first segment",
            // Named by the oldest segment left, which starts too late.
            damage: |paths| std::fs::remove_file(&paths[0]).unwrap(),
            expected: Expected::Corruption { segment: 1 },
        },
        Case {
            name: "garbage appended after a valid tail",
            damage: |paths| {
                let garbage: Vec<u8> = (0..777u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect();
                edit(paths.last().unwrap(), |bytes| bytes.extend(garbage));
            },
            expected: Expected::Repaired { batches_kept: 40 },
        },
        Case {
            name: "bad segment header magic",
            damage: |paths| edit(&paths[1], |bytes| bytes[0] = b'X'),
            expected: Expected::Corruption { segment: 1 },
        },
    ]
}

#[test]
fn named_corruption_cases() {
    for preallocate in MODES {
        named_corruption_cases_in(preallocate);
    }
}

fn named_corruption_cases_in(preallocate: bool) {
    let template = tempfile::tempdir().unwrap();
    let batches = workload();
    write_log(template.path(), &batches, preallocate);
    for case in cases() {
        let temp = tempfile::tempdir().unwrap();
        copy_dir(template.path(), temp.path());
        let paths = segment_paths(temp.path());
        (case.damage)(&paths);
        let report = kvstore::wal::verify(temp.path()).unwrap();
        let opened = Wal::open(temp.path(), options(preallocate));
        match (&case.expected, opened) {
            (Expected::Intact, Ok((_, recovered))) => {
                let model = model_after(&batches, batches.len());
                assert_eq!(recovered.entries, model.entries, "{}", case.name);
                assert_eq!(recovered.repaired, None, "{}", case.name);
                assert!(report.is_clean(), "{}", case.name);
            }
            (Expected::Repaired { batches_kept }, Ok((_, recovered))) => {
                let model = model_after(&batches, *batches_kept);
                assert_eq!(recovered.entries, model.entries, "{}", case.name);
                assert_eq!(recovered.hard_state, model.hard_state, "{}", case.name);
                let repaired = recovered.repaired.unwrap_or_default();
                assert!(repaired.contains("torn-"), "{}: {repaired}", case.name);
                assert!(
                    report.torn_tail.is_some() && report.corruption.is_none(),
                    "{}",
                    case.name
                );
                let saved = std::fs::read_dir(temp.path())
                    .unwrap()
                    .filter(|entry| {
                        entry
                            .as_ref()
                            .unwrap()
                            .file_name()
                            .to_string_lossy()
                            .starts_with("torn-")
                    })
                    .count();
                assert_eq!(saved, 1, "{}", case.name);
            }
            (
                Expected::Corruption { segment },
                Err(Error::Corruption {
                    file,
                    offset,
                    index_range,
                    detail,
                }),
            ) => {
                let wanted = if *segment == usize::MAX {
                    paths.last().unwrap()
                } else {
                    &paths[*segment]
                };
                if case.name.starts_with("missing middle") {
                    // Named by the segment after the gap.
                    assert_eq!(&file, &paths[2], "{}: {detail}", case.name);
                    assert!(detail.contains("missing"), "{}: {detail}", case.name);
                } else {
                    assert_eq!(&file, wanted, "{}: {detail}", case.name);
                }
                let damage = report.corruption.expect(case.name);
                assert_eq!(
                    (&damage.file, damage.offset),
                    (&file, offset),
                    "{}",
                    case.name
                );
                if !case.name.contains("header") {
                    assert!(index_range.is_some(), "{}: no index range", case.name);
                }
            }
            (expected, outcome) => panic!(
                "{} (preallocate {preallocate}): expected {expected:?}, got {:?}",
                case.name,
                outcome.map(|(_, r)| r)
            ),
        }
    }
}

#[test]
fn corruption_error_names_file_offset_and_indexes() {
    let temp = tempfile::tempdir().unwrap();
    write_log(temp.path(), &workload(), true);
    let paths = segment_paths(temp.path());
    let at = middle_frame(&paths[0]);
    edit(&paths[0], |bytes| bytes[at + 9] ^= 0xff);
    let error = Wal::open(temp.path(), options(true)).unwrap_err();
    let text = error.to_string();
    assert!(text.contains(&paths[0].display().to_string()), "{text}");
    assert!(text.contains(&format!("byte offset {at}")), "{text}");
    assert!(text.contains("log indexes"), "{text}");
}

/// The review's case: a follower overwrites a conflicting suffix with as many entries of a
/// newer term, acknowledges it, and rotates; later that batch reads back as zeros. The
/// sealed segment then still ends at the same index, so only the seal in the next segment
/// shows that records were lost (before seals, replay returned the old, uncommitted
/// entries as if nothing had happened).
#[test]
fn a_sealed_segment_that_lost_an_overwrite_of_equal_length_is_corruption() {
    for preallocate in MODES {
        let temp = tempfile::tempdir().unwrap();
        let options = sized(4096, preallocate);
        let entry = |index, term| Entry {
            index,
            term,
            command: vec![term as u8; 8],
        };
        let (mut wal, _) = Wal::open(temp.path(), options.clone()).unwrap();
        for index in 1..=10 {
            wal.save(None, &[entry(index, 1)]).unwrap();
        }
        let before = wal.segments()[0].bytes;
        let state = |commit| HardState {
            term: 2,
            vote: Some("n2".to_string()),
            commit,
        };
        let overwrite: Vec<Entry> = (5..=10).map(|index| entry(index, 2)).collect();
        wal.save(Some(&state(4)), &overwrite).unwrap();
        let after = wal.segments()[0].bytes;
        let big = Entry {
            index: 11,
            term: 2,
            command: vec![7; 4000],
        };
        wal.save(Some(&state(10)), &[big]).unwrap();
        assert_eq!(wal.segments().len(), 2, "rotated");
        let sealed = wal.segments()[0].path.clone();
        drop(wal);
        edit(&sealed, |bytes| {
            bytes[before as usize..after as usize].fill(0)
        });
        let context = format!("preallocate {preallocate}");
        let (file, offset, detail) = corruption_opening(temp.path(), options, &context);
        assert_eq!(file, sealed, "{context}: {detail}");
        assert_eq!(offset, before, "{context}: {detail}");
        assert!(detail.contains("lost records"), "{context}: {detail}");
        let report = kvstore::wal::verify(temp.path()).unwrap();
        let damage = report.corruption.expect("verify reports it too");
        assert_eq!((damage.file, damage.offset), (sealed, before), "{context}");
    }
}

/// Rewrites every segment in `dir` as format version 1 wrote it: version 1 in the header
/// (CRC recomputed) and no seal in the start records.
fn downgrade_to_version_1(dir: &Path, preallocate: bool) {
    for path in segment_paths(dir) {
        edit(&path, |bytes| {
            bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
            let crc = crc32fast::hash(&bytes[0..32]);
            bytes[32..36].copy_from_slice(&crc.to_le_bytes());
            let frame = format::decode_frame(&bytes[SEGMENT_HEADER_BYTES..]).unwrap();
            if matches!(frame.record, RecordRef::Seal(_)) {
                let length = bytes.len();
                bytes.drain(SEGMENT_HEADER_BYTES..SEGMENT_HEADER_BYTES + frame.frame_bytes);
                // A preallocated file keeps its length; a growing one ends at its records.
                if preallocate {
                    bytes.resize(length, 0);
                }
            }
        });
    }
}

/// A log written before seals (segment version 1) opens as it did, takes new writes in
/// version 2 segments whose seals vouch for the version 1 segment before them, and a lost
/// batch in that sealed version 1 segment is then caught.
#[test]
fn version_1_segments_still_open_and_the_next_seal_checks_them() {
    for preallocate in MODES {
        let temp = tempfile::tempdir().unwrap();
        let batches = workload();
        write_log(temp.path(), &batches, preallocate);
        downgrade_to_version_1(temp.path(), preallocate);
        let old = segment_paths(temp.path());
        assert!(old.len() >= 3);
        let context = format!("preallocate {preallocate}");
        let (mut wal, recovered) = Wal::open(temp.path(), options(preallocate))
            .unwrap_or_else(|error| panic!("{context}: {error}"));
        let model = model_after(&batches, batches.len());
        assert_eq!(recovered.entries, model.entries, "{context}");
        assert_eq!(recovered.hard_state, model.hard_state, "{context}");
        assert_eq!(recovered.repaired, None, "{context}");
        // Enough new entries to rotate out of the newest version 1 segment.
        let mut last = wal.last_index();
        while wal.segments().len() == old.len() {
            last += 1;
            let entry = Entry {
                index: last,
                term: wal.last_term(),
                command: vec![b'n'; 40],
            };
            wal.save(None, &[entry]).unwrap();
        }
        drop(wal);
        let (wal, _) = Wal::open(temp.path(), options(preallocate))
            .unwrap_or_else(|error| panic!("{context}: reopen: {error}"));
        assert_eq!(wal.last_index(), last, "{context}");
        drop(wal);
        // The newest version 1 segment is sealed now: losing its last batch is caught.
        let sealed = old.last().unwrap();
        let boundaries = batch_boundaries(sealed);
        let (start, end) = (
            boundaries[boundaries.len() - 2],
            boundaries[boundaries.len() - 1],
        );
        edit(sealed, |bytes| bytes[start as usize..end as usize].fill(0));
        let (file, _, detail) = corruption_opening(temp.path(), options(preallocate), &context);
        assert_eq!(&file, sealed, "{context}: {detail}");
    }
}

/// The review's false alarm: segments holding only hard states (a node campaigning through
/// many terms) start at the same index as the segment after them. A crash while a snapshot
/// install drops the segments before its `Reset` can leave such a segment oldest on disk,
/// where replay cannot know the term of the index before it; its successor's seal names
/// that term, and must not be called a mismatch for it.
#[test]
fn a_crash_in_a_snapshot_install_leaving_an_entryless_oldest_segment_opens() {
    for preallocate in MODES {
        let temp = tempfile::tempdir().unwrap();
        let options = sized(512, preallocate);
        let (mut wal, _) = Wal::open(temp.path(), options.clone()).unwrap();
        let mut index = 0;
        while wal.segments().len() < 2 {
            index += 1;
            let entry = Entry {
                index,
                term: 3,
                command: vec![b'x'; 40],
            };
            wal.save(None, &[entry]).unwrap();
        }
        let mut term = 3;
        while wal.segments().len() < 4 {
            term += 1;
            let state = HardState {
                term,
                vote: Some("n1".to_string()),
                commit: 0,
            };
            wal.save(Some(&state), &[]).unwrap();
        }
        wal.append(&[Record::Reset { index: 100, term }]).unwrap();
        drop(wal);
        let paths = segment_paths(temp.path());
        assert_eq!(
            paths.len(),
            4,
            "the reset is durable, no segment dropped yet"
        );
        // The crash: the first two segments dropped, the third not yet.
        std::fs::remove_file(&paths[0]).unwrap();
        std::fs::remove_file(&paths[1]).unwrap();
        let context = format!("preallocate {preallocate}");
        let (_, recovered) =
            Wal::open(temp.path(), options).unwrap_or_else(|error| panic!("{context}: {error}"));
        assert_eq!(recovered.base, Some((100, term)), "{context}");
        assert!(recovered.entries.is_empty(), "{context}");
        assert!(
            kvstore::wal::verify(temp.path()).unwrap().is_clean(),
            "{context}"
        );
    }
}

/// The start records' frame holding the seal, in the segment at `path`.
fn seal_frame(path: &Path) -> (kvstore::wal::format::Seal, usize) {
    let bytes = std::fs::read(path).unwrap();
    let frame = format::decode_frame(&bytes[SEGMENT_HEADER_BYTES..]).unwrap();
    match frame.record {
        RecordRef::Seal(seal) => (seal, frame.frame_bytes),
        other => panic!("the first start record is {other:?}"),
    }
}

/// A seal that disagrees only in its term, a seal outside the start records, and start
/// records without their seal: each is corruption, named where the damage is.
#[test]
fn seals_that_disagree_are_misplaced_or_missing_are_corruption() {
    for preallocate in MODES {
        let template = tempfile::tempdir().unwrap();
        write_log(template.path(), &workload(), preallocate);
        type Damage = fn(&[PathBuf]);
        let cases: [(&str, Damage, usize, &str); 3] = [
            (
                "term only",
                |paths| {
                    let (mut seal, frame_bytes) = seal_frame(&paths[1]);
                    seal.last_term += 1;
                    let mut frame = Vec::new();
                    format::encode_record(&RecordRef::Seal(seal), false, &mut frame).unwrap();
                    assert_eq!(frame.len(), frame_bytes);
                    edit(&paths[1], |bytes| {
                        bytes[SEGMENT_HEADER_BYTES..SEGMENT_HEADER_BYTES + frame_bytes]
                            .copy_from_slice(&frame)
                    });
                },
                0,
                "does not match its seal",
            ),
            (
                "outside the start records",
                |paths| {
                    let newest = paths.last().unwrap();
                    let (seal, _) = seal_frame(newest);
                    let mut frame = Vec::new();
                    format::encode_record(&RecordRef::Seal(seal), true, &mut frame).unwrap();
                    let end = *batch_boundaries(newest).last().unwrap() as usize;
                    edit(newest, |bytes| {
                        bytes.resize(bytes.len().max(end + frame.len()), 0);
                        bytes[end..end + frame.len()].copy_from_slice(&frame);
                    });
                },
                usize::MAX,
                "outside the segment's start records",
            ),
            (
                "missing from the start records",
                |paths| {
                    let (_, frame_bytes) = seal_frame(&paths[1]);
                    edit(&paths[1], |bytes| {
                        bytes.drain(SEGMENT_HEADER_BYTES..SEGMENT_HEADER_BYTES + frame_bytes);
                    });
                },
                1,
                "lack the seal of segment 1",
            ),
        ];
        for (name, damage, segment, needle) in cases {
            let temp = tempfile::tempdir().unwrap();
            copy_dir(template.path(), temp.path());
            let paths = segment_paths(temp.path());
            damage(&paths);
            let wanted = paths.get(segment).unwrap_or_else(|| paths.last().unwrap());
            let context = format!("{name}, preallocate {preallocate}");
            let (file, _, detail) = corruption_opening(temp.path(), options(preallocate), &context);
            assert_eq!(&file, wanted, "{context}: {detail}");
            assert!(detail.contains(needle), "{context}: {detail}");
        }
    }
}
