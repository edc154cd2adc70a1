//! SnapshotDir: write/list/load round trips, retention, named corruption cases, and
//! crash safety of WRITE (faults injected at every step, leftover temporary files).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kvstore::Error;
use kvstore::raft::SnapshotMeta;
use kvstore::snapshot::{SnapshotDir, SnapshotInfo};
use kvstore::wal::fs::{Faults, FaultyFs};

/// A snapshot's content: (key, value, revision) in key order.
type Entries = Vec<(String, Vec<u8>, u64)>;
/// A named way to break the file system.
type Fault = (&'static str, fn(&mut Faults));

fn meta(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term: 2,
        voters: vec!["n1".to_string(), "n2".to_string(), "n3".to_string()],
    }
}

/// `count` entries `key00000..` with values long enough to span several write buffers
/// when `count` is large.
fn entries(count: usize, tag: u8) -> Entries {
    (0..count)
        .map(|n| (format!("key{n:06}"), vec![tag; 100 + n % 7], n as u64 + 1))
        .collect()
}

fn write(
    dir: &SnapshotDir,
    index: u64,
    data: &[(String, Vec<u8>, u64)],
) -> kvstore::Result<SnapshotInfo> {
    let iter = data.iter().map(|(k, v, r)| (k.as_str(), v.as_slice(), *r));
    dir.write(&meta(index), data.len() as u64, iter)
}

fn load_all(path: &Path) -> kvstore::Result<(SnapshotInfo, Entries)> {
    let mut loaded = Vec::new();
    let info = SnapshotDir::load(path, |key, value, revision| {
        loaded.push((key, value, revision));
        Ok(())
    })?;
    Ok((info, loaded))
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn valid_indexes(dir: &SnapshotDir) -> Vec<u64> {
    dir.list()
        .unwrap()
        .into_iter()
        .filter_map(|listed| listed.ok().map(|info| info.meta.index))
        .collect()
}

#[test]
fn write_list_load_round_trip() {
    let temp = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::open(&temp.path().join("snapshots"), 3).unwrap();
    let data = entries(30_000, 7);
    let info = write(&dir, 100, &data).unwrap();
    assert_eq!(info.key_count, 30_000);
    assert_eq!(
        info.file_bytes,
        std::fs::metadata(&info.path).unwrap().len()
    );
    let listed = dir.list().unwrap();
    assert_eq!(listed.len(), 1);
    let listed = listed.into_iter().next().unwrap().unwrap();
    assert_eq!(
        (listed.meta, listed.path.clone()),
        (meta(100), info.path.clone())
    );
    let (loaded_info, loaded) = load_all(&info.path).unwrap();
    assert_eq!(loaded_info.meta, meta(100));
    assert_eq!(loaded, data);
}

#[test]
fn empty_snapshot_round_trips() {
    let temp = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::open(temp.path(), 3).unwrap();
    let info = write(&dir, 0, &[]).unwrap();
    let (info, loaded) = load_all(&info.path).unwrap();
    assert!(loaded.is_empty());
    assert_eq!(info.key_count, 0);
}

#[test]
fn retention_keeps_the_newest_and_list_is_newest_first() {
    let temp = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::open(temp.path(), 2).unwrap();
    for index in [10, 20, 30, 40] {
        write(&dir, index, &entries(10, index as u8)).unwrap();
    }
    assert_eq!(valid_indexes(&dir), vec![40, 30]);
    assert_eq!(files(temp.path()).len(), 2);
    // Writing the same snapshot again replaces it atomically.
    write(&dir, 40, &entries(10, 40)).unwrap();
    assert_eq!(valid_indexes(&dir), vec![40, 30]);
}

#[test]
fn a_pinned_snapshot_outlives_retention_until_unpinned() {
    let temp = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::open(temp.path(), 1).unwrap();
    let accepted = write(&dir, 10, &entries(10, 1)).unwrap();
    let pin = dir.pin(&accepted.path).unwrap().expect("the file is there");
    // A newer snapshot commits while the accepted one waits to be loaded.
    write(&dir, 20, &entries(10, 2)).unwrap();
    assert_eq!(valid_indexes(&dir), vec![20, 10]);
    let (_, loaded) = load_all(&accepted.path).unwrap();
    assert_eq!(loaded, entries(10, 1));
    // Pins count: two offers of the same file, one let go, still hold it.
    let second = dir.pin(&accepted.path).unwrap();
    assert!(second.is_some());
    drop(second);
    write(&dir, 25, &entries(10, 2)).unwrap();
    assert_eq!(valid_indexes(&dir), vec![25, 10]);
    drop(pin);
    write(&dir, 30, &entries(10, 3)).unwrap();
    assert_eq!(valid_indexes(&dir), vec![30]);
    assert!(
        dir.pin(&accepted.path).unwrap().is_none(),
        "a pruned file cannot be pinned"
    );
    // A pin of a file that is gone holds nothing back.
    write(&dir, 40, &entries(10, 4)).unwrap();
    assert_eq!(valid_indexes(&dir), vec![40]);
}

#[test]
fn bad_input_leaves_no_file() {
    let temp = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::open(temp.path(), 3).unwrap();
    let data = entries(5, 1);
    let iter = data.iter().map(|(k, v, r)| (k.as_str(), v.as_slice(), *r));
    let error = dir.write(&meta(5), 4, iter).unwrap_err().to_string();
    assert!(error.contains("key_count"), "{error}");
    let unordered = [("b", &b"1"[..], 1u64), ("a", &b"2"[..], 2)];
    let error = dir
        .write(&meta(5), 2, unordered.into_iter())
        .unwrap_err()
        .to_string();
    assert!(error.contains("key order"), "{error}");
    let duplicate = [("a", &b"1"[..], 1u64), ("a", &b"2"[..], 2)];
    assert!(dir.write(&meta(5), 2, duplicate.into_iter()).is_err());
    assert!(files(temp.path()).is_empty(), "{:?}", files(temp.path()));
}

#[test]
fn open_removes_leftover_temporary_files_and_keeps_snapshots() {
    let temp = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::open(temp.path(), 3).unwrap();
    let info = write(&dir, 10, &entries(100, 1)).unwrap();
    // A crash in the middle of a write (half a file) and of an install.
    let bytes = std::fs::read(&info.path).unwrap();
    let half = temp
        .path()
        .join("snap-00000000000000000020-00000000000000000002.snap.9.tmp");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let incoming = temp
        .path()
        .join("incoming-00000000000000000030-00000000000000000002.4.tmp");
    std::fs::write(&incoming, &bytes[..10]).unwrap();
    assert_eq!(
        valid_indexes(&dir),
        vec![10],
        "temporary files are never listed"
    );
    drop(dir);
    let dir = SnapshotDir::open(temp.path(), 3).unwrap();
    assert_eq!(
        files(temp.path()),
        vec![
            info.path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        ]
    );
    assert_eq!(valid_indexes(&dir), vec![10]);
}

/// Every fault the file-system seam can inject during `write` leaves exactly the old set
/// of snapshots (plus, after a failed directory fsync, possibly the complete new one):
/// never a file `list` accepts that is not whole, and no temporary file after reopen.
#[test]
fn a_fault_at_any_step_of_write_leaves_old_or_new_set() {
    let faults: Vec<Fault> = vec![
        ("create", |f| f.fail_next_create = true),
        ("first write", |f| f.fail_next_write = true),
        ("short write", |f| f.short_next_write_bytes = Some(30)),
        ("fdatasync", |f| f.fail_next_sync = true),
        ("directory fsync", |f| f.fail_next_dir_sync = true),
    ];
    for (name, arm) in faults {
        let temp = tempfile::tempdir().unwrap();
        let file_system = FaultyFs::new();
        let dir = SnapshotDir::open_with(temp.path(), 3, Arc::new(file_system.clone())).unwrap();
        let old = entries(20_000, 1);
        write(&dir, 10, &old).unwrap();
        file_system.with_faults(arm);
        let result = write(&dir, 20, &entries(20_000, 2));
        assert!(result.is_err(), "{name}: the write must fail");
        let valid = valid_indexes(&dir);
        assert!(
            valid == vec![10] || valid == vec![20, 10],
            "{name}: {valid:?}"
        );
        for listed in dir.list().unwrap() {
            let info = listed.unwrap();
            let (_, loaded) = load_all(&info.path).unwrap();
            assert_eq!(loaded.len(), 20_000, "{name}");
        }
        drop(dir);
        SnapshotDir::open(temp.path(), 3).unwrap();
        assert!(
            files(temp.path()).iter().all(|f| f.ends_with(".snap")),
            "{name}: {:?}",
            files(temp.path())
        );
    }
}

/// A crash can stop the temporary file at any length; whatever the length, it is never
/// taken for a snapshot, even if it were renamed (a torn file under a snapshot name).
#[test]
fn a_snapshot_cut_at_any_length_is_never_valid() {
    let temp = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::open(temp.path(), 3).unwrap();
    let info = write(&dir, 7, &entries(3, 1)).unwrap();
    let bytes = std::fs::read(&info.path).unwrap();
    for length in 0..bytes.len() {
        std::fs::write(&info.path, &bytes[..length]).unwrap();
        let listed = dir.list().unwrap();
        assert!(
            matches!(listed[0], Err(Error::Corruption { .. })),
            "length {length}"
        );
        assert!(load_all(&info.path).is_err(), "length {length}");
    }
}

struct Case {
    name: &'static str,
    damage: fn(&mut Vec<u8>),
    /// Expected offset of the reported damage; `None` = the footer's offset.
    offset: Option<u64>,
    detail: &'static str,
}

/// Header is 48 + 11 bytes for three voters `n1..n3`.
const BODY_OFFSET: u64 = 59;

#[test]
fn named_corruption_cases_are_reported_with_file_and_offset() {
    let cases = [
        Case {
            name: "wrong magic",
            damage: |b| b[0..8].copy_from_slice(b"KVSWAL\r\n"),
            offset: Some(0),
            detail: "magic",
        },
        Case {
            name: "bit flip in header index",
            damage: |b| b[17] ^= 0x01,
            offset: Some(0),
            detail: "header CRC",
        },
        Case {
            name: "bit flip in voters",
            damage: |b| b[51] ^= 0x01,
            offset: Some(0),
            detail: "header CRC",
        },
        Case {
            name: "bit flip in body",
            damage: |b| {
                let at = b.len() / 2;
                b[at] ^= 0x10
            },
            offset: Some(BODY_OFFSET),
            detail: "body CRC",
        },
        Case {
            name: "bit flip in footer",
            damage: |b| {
                let at = b.len() - 10;
                b[at] ^= 0x01
            },
            offset: None,
            detail: "footer CRC",
        },
        Case {
            name: "truncated by one byte",
            damage: |b| {
                b.pop();
            },
            offset: None,
            detail: "footer CRC",
        },
        Case {
            name: "truncated by half",
            damage: |b| {
                let half = b.len() / 2;
                b.truncate(half)
            },
            offset: None,
            detail: "footer CRC",
        },
        Case {
            name: "extended by zeros",
            damage: |b| b.extend([0u8; 64]),
            offset: None,
            detail: "footer CRC",
        },
        Case {
            name: "truncated to the header",
            damage: |b| b.truncate(40),
            offset: Some(40),
            detail: "truncated",
        },
        Case {
            name: "empty file",
            damage: |b| b.clear(),
            offset: Some(0),
            detail: "truncated",
        },
    ];
    for case in cases {
        let temp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(temp.path(), 3).unwrap();
        write(&dir, 5, &entries(1000, 3)).unwrap();
        let info = write(&dir, 9, &entries(1000, 4)).unwrap();
        let mut bytes = std::fs::read(&info.path).unwrap();
        (case.damage)(&mut bytes);
        std::fs::write(&info.path, &bytes).unwrap();
        let listed = dir.list().unwrap();
        assert_eq!(listed.len(), 2, "{}", case.name);
        let expected_offset = case.offset.unwrap_or_else(|| bytes.len() as u64 - 16);
        match &listed[0] {
            Err(Error::Corruption {
                file,
                offset,
                detail,
                ..
            }) => {
                assert_eq!(file, &info.path, "{}", case.name);
                assert_eq!(*offset, expected_offset, "{}: {detail}", case.name);
                assert!(detail.contains(case.detail), "{}: {detail}", case.name);
            }
            other => panic!("{}: {other:?}", case.name),
        }
        assert_eq!(
            listed[1].as_ref().unwrap().meta.index,
            5,
            "{}: the older one is fine",
            case.name
        );
        let error = load_all(&info.path).unwrap_err();
        assert!(
            matches!(error, Error::Corruption { .. }),
            "{}: {error}",
            case.name
        );
    }
}

#[test]
fn a_file_whose_name_disagrees_with_its_header_is_corrupt() {
    let temp = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::open(temp.path(), 3).unwrap();
    let info = write(&dir, 5, &entries(10, 3)).unwrap();
    let renamed: PathBuf = temp
        .path()
        .join("snap-00000000000000000006-00000000000000000002.snap");
    std::fs::rename(&info.path, &renamed).unwrap();
    let error = dir.list().unwrap().remove(0).unwrap_err().to_string();
    assert!(error.contains("name says index 6"), "{error}");
}

#[test]
fn load_stops_on_the_callers_error() {
    let temp = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::open(temp.path(), 3).unwrap();
    let info = write(&dir, 5, &entries(10, 3)).unwrap();
    let mut seen = 0;
    let error = SnapshotDir::load(&info.path, |_, _, _| {
        seen += 1;
        if seen == 3 {
            Err(Error::InvalidInput("enough".to_string()))
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert!(matches!(error, Error::InvalidInput(_)));
    assert_eq!(seen, 3);
}

#[test]
fn concurrent_writes_from_clones_commit_and_prune_consistently() {
    let temp = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::open(temp.path(), 2).unwrap();
    let threads: Vec<_> = (1..=6u64)
        .map(|index| {
            let dir = dir.clone();
            std::thread::spawn(move || write(&dir, index * 10, &entries(2_000, index as u8)))
        })
        .collect();
    for thread in threads {
        thread.join().unwrap().unwrap();
    }
    let valid = valid_indexes(&dir);
    // Retention never deletes the file just written, so an older snapshot committed
    // after newer ones may leave one extra until the next retention.
    assert!(valid.len() == 2 || valid.len() == 3, "{valid:?}");
    assert_eq!(
        &valid[..2],
        &[60, 50],
        "the newest survive whatever the commit order"
    );
    write(&dir, 70, &entries(10, 7)).unwrap();
    assert_eq!(valid_indexes(&dir), vec![70, 60]);
    assert!(files(temp.path()).iter().all(|f| f.ends_with(".snap")));
}
