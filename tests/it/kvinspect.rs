//! kvinspect through the built binary, on a data directory the WAL wrote and on damaged
//! ones. It must be read-only: it runs while the directory is locked, and changes nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kvstore::datadir::{DataDir, Identity};
use kvstore::raft::{Entry, HardState, SnapshotMeta};
use kvstore::snapshot::SnapshotDir;
use kvstore::store::{Command as StoreCommand, Condition};
use kvstore::wal::{Options, Wal};

fn kvinspect(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvinspect"))
        .arg(data_dir)
        .args(args)
        .output()
        .expect("run kvinspect")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn identity() -> Identity {
    Identity {
        node_id: "n2".to_string(),
        cluster_id: "cluster-a".to_string(),
        voters: vec!["n1".to_string(), "n2".to_string(), "n3".to_string()],
    }
}

/// A data dir with 30 entries over several segments; returns the locked DataDir too.
fn populated(path: &Path) -> DataDir {
    let data_dir = DataDir::open(path, &identity()).unwrap();
    let options = Options {
        segment_bytes_max: 400,
        ..Options::default()
    };
    let (mut wal, _) = Wal::open(&data_dir.wal_dir(), options).unwrap();
    let state = HardState {
        term: 4,
        vote: Some("n1".to_string()),
        commit: 25,
    };
    wal.save(Some(&state), &[]).unwrap();
    for index in 1..=30u64 {
        let key = format!("key{index}");
        let command = match index {
            // A new leader's no-op, a conditional delete, a create-only put, and bytes that
            // are no store command at all; the rest plain puts.
            1 => Vec::new(),
            7 => StoreCommand::Delete {
                key,
                condition: Condition::Revision(5),
            }
            .encode(),
            8 => StoreCommand::Put {
                key,
                value: b"eight".to_vec(),
                condition: Condition::Absent,
            }
            .encode(),
            9 => b"\xffnot a command".to_vec(),
            _ => StoreCommand::Put {
                key,
                value: format!("value{index}").into_bytes(),
                condition: Condition::None,
            }
            .encode(),
        };
        wal.save(
            None,
            &[Entry {
                index,
                term: 4,
                command,
            }],
        )
        .unwrap();
    }
    data_dir
}

fn segment_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(path.join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    files.sort();
    files
}

/// Every file of `dir` with its bytes, sorted: to show kvinspect changed nothing.
fn dir_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn summary_is_the_default_and_shows_identity_state_and_segments() {
    let temp = tempfile::tempdir().unwrap();
    let _locked = populated(temp.path());
    let output = kvinspect(temp.path(), &[]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    for expected in [
        "node id:     n2",
        "cluster-a",
        "n1, n2, n3",
        "term 4 vote n1 commit 25",
        "first index 1, last index 30",
        ".wal",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert_eq!(stdout(&kvinspect(temp.path(), &["summary"])), text);
}

#[test]
fn segments_lists_every_segment_with_ranges() {
    let temp = tempfile::tempdir().unwrap();
    let _locked = populated(temp.path());
    let output = kvinspect(temp.path(), &["segments"]);
    assert!(output.status.success());
    let text = stdout(&output);
    assert_eq!(
        text.lines().count(),
        segment_files(temp.path()).len(),
        "{text}"
    );
    assert!(text.contains("indexes 1..="), "{text}");
}

#[test]
fn entries_as_text_and_json() {
    let temp = tempfile::tempdir().unwrap();
    let _locked = populated(temp.path());
    let output = kvinspect(temp.path(), &["entries", "--from", "2", "--to", "4"]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 3);
    assert!(text.contains(r#"put "key3" = 6 bytes "value3""#), "{text}");
    let output = kvinspect(temp.path(), &["entries", "--from", "1", "--to", "9"]);
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].ends_with("(empty: no-op entry)"), "{text}");
    assert!(
        lines[6].ends_with(r#"delete "key7" if-match "5""#),
        "{text}"
    );
    assert!(
        lines[7].ends_with(r#"put "key8" = 5 bytes "eight" if-none-match *"#),
        "{text}"
    );
    assert!(lines[8].contains("14 bytes, not a store command"), "{text}");
    let output = kvinspect(
        temp.path(),
        &["entries", "--from", "29", "--to", "30", "--json"],
    );
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows[0]["index"], 29);
    assert_eq!(rows[1]["term"], 4);
    assert_eq!(rows[1]["op"], "put");
    assert_eq!(rows[1]["key"], "key30");
    assert_eq!(rows[1]["value_utf8_lossy"], "value30");
    assert_eq!(rows[1]["value_bytes"], 7);
    assert_eq!(rows[1]["condition"], serde_json::Value::Null);
    assert_eq!(rows[1]["command_bytes"], 16);
    let output = kvinspect(
        temp.path(),
        &["entries", "--from", "7", "--to", "9", "--json"],
    );
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows[0]["op"], "delete");
    assert_eq!(rows[0]["condition"]["ifMatch"], 5);
    assert_eq!(rows[1]["condition"]["ifNoneMatch"], "*");
    assert_eq!(rows[2]["op"], "unknown");
}

#[test]
fn verify_passes_on_a_clean_log_while_the_node_holds_the_lock() {
    let temp = tempfile::tempdir().unwrap();
    let _locked = populated(temp.path());
    let before = dir_bytes(&temp.path().join("wal"));
    let output = kvinspect(temp.path(), &["verify"]);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout(&output).starts_with("ok:"));
    assert_eq!(dir_bytes(&temp.path().join("wal")), before);
}

#[test]
fn verify_fails_on_corruption_naming_file_offset_and_indexes() {
    let temp = tempfile::tempdir().unwrap();
    drop(populated(temp.path()));
    let sealed = segment_files(temp.path())[1].clone();
    let mut bytes = std::fs::read(&sealed).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x20;
    std::fs::write(&sealed, bytes).unwrap();
    let before = dir_bytes(&temp.path().join("wal"));
    let output = kvinspect(temp.path(), &["verify"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let text = stdout(&output);
    let name = sealed.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        text.contains("CORRUPTION") && text.contains(&name),
        "{text}"
    );
    assert!(
        text.contains("byte offset") && text.contains("log indexes"),
        "{text}"
    );
    assert!(kvinspect(temp.path(), &["summary"]).status.success());
    assert_eq!(
        dir_bytes(&temp.path().join("wal")),
        before,
        "kvinspect changed nothing"
    );
}

#[test]
fn verify_reports_a_torn_tail_without_repairing_it() {
    let temp = tempfile::tempdir().unwrap();
    drop(populated(temp.path()));
    let newest = segment_files(temp.path()).pop().unwrap();
    // Tear the last record: its final 4 written bytes back to zero (the segment is
    // preallocated, so the file keeps its length).
    let mut bytes = std::fs::read(&newest).unwrap();
    let last_written = bytes.iter().rposition(|&byte| byte != 0).unwrap();
    bytes[last_written - 3..=last_written].fill(0);
    std::fs::write(&newest, bytes).unwrap();
    let before = dir_bytes(&temp.path().join("wal"));
    let output = kvinspect(temp.path(), &["verify"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stdout(&output).contains("TORN TAIL"), "{}", stdout(&output));
    let output = kvinspect(temp.path(), &["entries", "--from", "28"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output).lines().count(), 2, "entry 30 was torn off");
    assert_eq!(
        dir_bytes(&temp.path().join("wal")),
        before,
        "no repair, no torn-*.bin"
    );
}

#[test]
fn not_a_data_dir_is_an_error() {
    let temp = tempfile::tempdir().unwrap();
    let output = kvinspect(temp.path(), &["summary"]);
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a kvstore data directory"));
}

/// Two snapshots (index 10 with 3 keys, index 20 with 5 keys) next to the WAL, plus a
/// temporary file left by an interrupted write, which kvinspect must neither list nor
/// remove.
fn with_snapshots(data_dir: &DataDir) -> Vec<PathBuf> {
    let snapshots = SnapshotDir::open(&data_dir.snapshot_dir(), 3).unwrap();
    let mut paths = Vec::new();
    for (index, count) in [(10u64, 3usize), (20, 5)] {
        let meta = SnapshotMeta {
            index,
            term: 4,
            voters: identity().voters,
        };
        let keys: Vec<String> = (0..count).map(|n| format!("key{n}")).collect();
        let entries = keys.iter().map(|key| (key.as_str(), &b"value"[..], index));
        paths.push(snapshots.write(&meta, count as u64, entries).unwrap().path);
    }
    let leftover = data_dir.snapshot_dir().join("snap-x.snap.1.tmp");
    std::fs::write(leftover, b"half a snapshot").unwrap();
    paths
}

#[test]
fn snapshots_lists_index_term_size_keys_and_crc_as_text_and_json() {
    let temp = tempfile::tempdir().unwrap();
    let locked = populated(temp.path());
    let paths = with_snapshots(&locked);
    let output = kvinspect(temp.path(), &["snapshots"]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("snap-00000000000000000020-00000000000000000004.snap"),
        "newest first: {text}"
    );
    assert!(
        lines[0].contains("index         20") && lines[0].contains("term      4"),
        "{text}"
    );
    assert!(
        lines[0].contains("5 keys") && lines[0].contains("crc ok"),
        "{text}"
    );
    let size = std::fs::metadata(&paths[1]).unwrap().len();
    assert!(lines[0].contains(&format!("{size} bytes")), "{text}");
    assert!(lines[1].contains("3 keys"), "{text}");
    let output = kvinspect(temp.path(), &["snapshots", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows[0]["index"], 20);
    assert_eq!(rows[0]["term"], 4);
    assert_eq!(rows[0]["key_count"], 5);
    assert_eq!(rows[0]["bytes"], size);
    assert_eq!(rows[0]["crc_ok"], true);
    assert_eq!(rows[1]["index"], 10);
    assert_eq!(rows[1]["voters"], serde_json::json!(["n1", "n2", "n3"]));
    let summary = stdout(&kvinspect(temp.path(), &["summary"]));
    assert!(summary.contains("snapshots:   2 (2 valid)"), "{summary}");
    assert!(summary.contains("index         10"), "{summary}");
    let output = kvinspect(temp.path(), &["verify"]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout(&output).contains("2 snapshots, every CRC valid"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn verify_fails_on_a_damaged_snapshot_naming_file_and_offset_and_changes_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let locked = populated(temp.path());
    let paths = with_snapshots(&locked);
    let mut bytes = std::fs::read(&paths[1]).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x01;
    std::fs::write(&paths[1], &bytes).unwrap();
    let before = dir_bytes(&temp.path().join("snapshots"));
    let output = kvinspect(temp.path(), &["verify"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let text = stdout(&output);
    let name = paths[1].file_name().unwrap().to_string_lossy().into_owned();
    assert!(text.contains("SNAPSHOT") && text.contains(&name), "{text}");
    assert!(
        text.contains("byte offset") && text.contains("body CRC"),
        "{text}"
    );
    let output = kvinspect(temp.path(), &["snapshots", "--json"]);
    assert!(output.status.success(), "{output:?}");
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows[0]["crc_ok"], false);
    assert_eq!(rows[0]["index"], 20, "from the file name");
    assert!(rows[0]["offset"].is_u64(), "{rows}");
    assert_eq!(rows[1]["crc_ok"], true);
    let text = stdout(&kvinspect(temp.path(), &["snapshots"]));
    assert!(text.lines().next().unwrap().contains("DAMAGED"), "{text}");
    assert!(stdout(&kvinspect(temp.path(), &["summary"])).contains("snapshots:   2 (1 valid)"));
    assert_eq!(
        dir_bytes(&temp.path().join("snapshots")),
        before,
        "kvinspect changed nothing"
    );
}
