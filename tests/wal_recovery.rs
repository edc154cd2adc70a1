//! Crash recovery: a torn tail at every byte offset of the newest segment, and a table of
//! named corruption cases with their expected outcomes (STYLE.md practice 7).

use std::path::{Path, PathBuf};

use kvstore::Error;
use kvstore::raft::{Entry, HardState};
use kvstore::wal::format::{self, SEGMENT_HEADER_BYTES};
use kvstore::wal::{Options, Wal};

fn options() -> Options {
    Options {
        segment_bytes_max: 600,
        ..Options::default()
    }
}

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
fn write_log(dir: &Path, batches: &[Batch]) -> Vec<(u64, u64)> {
    let (mut wal, _) = Wal::open(dir, options()).unwrap();
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

#[test]
fn torn_tail_at_every_byte_of_the_newest_segment_keeps_exactly_a_prefix_of_batches() {
    let template = tempfile::tempdir().unwrap();
    let batches = workload();
    let ends = write_log(template.path(), &batches);
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
    assert!(boundaries.contains(&length));
    for cut in 0..=length {
        let temp = tempfile::tempdir().unwrap();
        copy_dir(template.path(), temp.path());
        let segment = temp.path().join(newest.file_name().unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let opened = Wal::open(temp.path(), options());
        if cut < SEGMENT_HEADER_BYTES as u64 {
            // Segments are created whole (temporary file + rename), so a short header is
            // damage, not a torn write.
            assert!(matches!(opened, Err(Error::Corruption { .. })), "cut {cut}");
            continue;
        }
        let (mut wal, recovered) = opened.unwrap_or_else(|error| panic!("cut {cut}: {error}"));
        let survivors = ends
            .iter()
            .filter(|(sequence, end)| *sequence < newest_sequence || *end <= cut)
            .count();
        let expected = model_after(&batches, survivors);
        assert_eq!(recovered.entries, expected.entries, "cut {cut}");
        assert_eq!(recovered.hard_state, expected.hard_state, "cut {cut}");
        let at_boundary = boundaries.contains(&cut);
        assert_eq!(
            recovered.repaired.is_none(),
            at_boundary,
            "cut {cut}: {:?}",
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
        let (_, again) = Wal::open(temp.path(), options()).unwrap();
        assert_eq!(again.repaired, None, "cut {cut}");
        assert_eq!(again.entries.last(), Some(&extra), "cut {cut}");
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
            expected: Expected::Repaired { batches_kept: 39 },
        },
        Case {
            name: "zeroes appended after a valid tail",
            damage: |paths| edit(paths.last().unwrap(), |bytes| bytes.extend([0u8; 4096])),
            expected: Expected::Repaired { batches_kept: 40 },
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
            damage: |paths| edit(&paths[0], |bytes| bytes.truncate(bytes.len() - 5)),
            expected: Expected::Corruption { segment: 0 },
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
    let template = tempfile::tempdir().unwrap();
    let batches = workload();
    write_log(template.path(), &batches);
    for case in cases() {
        let temp = tempfile::tempdir().unwrap();
        copy_dir(template.path(), temp.path());
        let paths = segment_paths(temp.path());
        (case.damage)(&paths);
        let report = kvstore::wal::verify(temp.path()).unwrap();
        let opened = Wal::open(temp.path(), options());
        match (&case.expected, opened) {
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
                "{}: expected {expected:?}, got {:?}",
                case.name,
                outcome.map(|(_, r)| r)
            ),
        }
    }
}

#[test]
fn corruption_error_names_file_offset_and_indexes() {
    let temp = tempfile::tempdir().unwrap();
    write_log(temp.path(), &workload());
    let paths = segment_paths(temp.path());
    let at = middle_frame(&paths[0]);
    edit(&paths[0], |bytes| bytes[at + 9] ^= 0xff);
    let error = Wal::open(temp.path(), options()).unwrap_err();
    let text = error.to_string();
    assert!(text.contains(&paths[0].display().to_string()), "{text}");
    assert!(text.contains(&format!("byte offset {at}")), "{text}");
    assert!(text.contains("log indexes"), "{text}");
}
