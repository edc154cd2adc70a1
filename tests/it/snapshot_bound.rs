//! 200,000 updates to 1,000 keys leave a data directory of bounded size: snapshots compact
//! the WAL, old segments are deleted, old snapshots are pruned.
//!
//! The bound, for the configuration below (1 MiB segments, a snapshot every 10,000
//! entries, 5,000 entries kept behind it, 3 snapshots kept, 100-byte values):
//!
//! - WAL: the log since the compaction point, at most 10,000 + 5,000 entries plus what
//!   arrives while a snapshot is written (say 5,000 more), at under 200 bytes per entry on
//!   disk (a ~115-byte command, a 9-byte frame, index, term), is under 4 MB; whole-segment
//!   deletion keeps at most one more segment (1 MiB) of older entries: 5 MiB;
//! - snapshots: 3 of 1,000 keys at under 200 bytes each: well under 1 MiB;
//! - identity and lock files: bytes.
//!
//! So the directory must stay under 6 MiB at every point of the run, whereas without
//! compaction it would reach about 30 MB.

use std::path::Path;
use std::time::Duration;

use kvstore::node::{Node, NodeConfig, SnapshotPolicy};
use kvstore::store::{Command, Condition, Outcome};

const UPDATES: usize = 200_000;
const KEYS: usize = 1_000;
const WRITERS: usize = 32;
const BOUND_BYTES: u64 = 6 * 1024 * 1024;

/// The bytes under `path`, while the node writes and deletes in it: a file deleted between
/// the listing and its `stat` (a compacted segment, a pruned snapshot) counts as gone.
fn directory_bytes(path: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).expect("read dir").flatten() {
        let metadata = match entry.metadata() {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => panic!("metadata of {}: {error}", entry.path().display()),
        };
        total += if metadata.is_dir() {
            directory_bytes(&entry.path())
        } else {
            metadata.len()
        };
    }
    total
}

fn config(dir: &Path) -> NodeConfig {
    NodeConfig {
        id: "n1".into(),
        cluster_id: "bound".into(),
        peers: Default::default(),
        client_url: "http://127.0.0.1:1".into(),
        raft_url: "http://127.0.0.1:2".into(),
        data_dir: dir.join("n1"),
        tick: Duration::from_millis(20),
        election_timeout_ticks: 5,
        heartbeat_interval_ticks: 1,
        segment_bytes_max: 1024 * 1024,
        seed: 7,
        snapshot_policy: SnapshotPolicy {
            entries: 10_000,
            bytes: 64 * 1024 * 1024,
            catch_up_entries: 5_000,
        },
        snapshots_kept: 3,
    }
}

fn put(update: usize) -> Command {
    let mut value = format!("{update}:").into_bytes();
    value.resize(100, b'v');
    Command::Put {
        key: format!("key/{:04}", update % KEYS),
        value,
        condition: Condition::None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_to_a_small_key_set_keep_the_data_dir_bounded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(config(dir.path())).expect("start node");
    let data_dir = dir.path().join("n1");
    let mut largest = 0;
    for batch in 0..UPDATES / 10_000 {
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let handle = node.handle.clone();
                tokio::spawn(async move {
                    for update in (batch * 10_000 + writer..(batch + 1) * 10_000).step_by(WRITERS) {
                        let outcome = handle.propose(&put(update), Duration::from_secs(30)).await;
                        assert!(matches!(outcome, Ok(Outcome::Put { .. })), "{outcome:?}");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.expect("writer");
        }
        largest = largest.max(directory_bytes(&data_dir));
    }
    let status = node.handle.status();
    assert_eq!(status.keys, KEYS);
    assert!(
        status.snapshot_index > 150_000,
        "snapshots were taken: {}",
        status.snapshot_index
    );
    assert!(
        largest <= BOUND_BYTES,
        "data dir reached {largest} bytes; bound {BOUND_BYTES}"
    );
    let applied = node.handle.applied_index();
    let hash = status.state_hash;
    node.shutdown().await.expect("shutdown");

    // And it restarts to the same state.
    let node = Node::start(config(dir.path())).expect("restart");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while node.handle.applied_index() < applied {
        assert!(
            std::time::Instant::now() < deadline,
            "restart did not re-apply"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(node.handle.status().state_hash, hash);
    eprintln!("largest data dir: {largest} bytes (bound {BOUND_BYTES})");
    node.shutdown().await.expect("shutdown");
}
