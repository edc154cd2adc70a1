//! Measures what issue 5 asks about snapshots, on a real single-node `Node` (WAL on disk,
//! every write fsync'd; in process, so HTTP does not blur the numbers):
//!
//! 1. restart time of a node holding `KEYS` keys of 100-byte values with a compacted log:
//!    from `Node::start` until it is leader with everything applied (ready to serve);
//! 2. write latency (p50, p99) of concurrent writers without a snapshot, and while
//!    snapshots of that size are taken back to back: three 4-second windows of each,
//!    alternating, merged per kind (the disk's latency drifts on a shared machine, so
//!    only windows close in time compare fairly), each starting once background deletes
//!    of the previous window are done.
//!
//! ```sh
//! cargo run --release --example snapshot_restart            # 1,000,000 keys
//! KEYS=100000 cargo run --release --example snapshot_restart
//! DATA_DIR=/tmp/kv1m cargo run --release --example snapshot_restart   # keep the data;
//!                                      # run again with the same DATA_DIR to time restarts only
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kvstore::node::{Node, NodeConfig, NodeHandle, SnapshotPolicy};
use kvstore::raft::Role;
use kvstore::store::{Command, Condition};

const WRITERS: usize = 64;
const VALUE_BYTES: usize = 100;

fn config(dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        id: "n1".into(),
        cluster_id: "bench".into(),
        peers: Default::default(),
        client_url: "http://127.0.0.1:1".into(),
        raft_url: "http://127.0.0.1:2".into(),
        data_dir: dir.join("n1"),
        tick: Duration::from_millis(50),
        election_timeout_ticks: 4,
        heartbeat_interval_ticks: 1,
        segment_bytes_max: 64 * 1024 * 1024,
        seed: 1,
        // Only the snapshots this program asks for.
        snapshot_policy: SnapshotPolicy {
            entries: u64::MAX,
            bytes: u64::MAX,
            catch_up_entries: 0,
        },
        snapshots_kept: 2,
    }
}

fn put(key: usize, round: usize) -> Command {
    let mut value = format!("{round}:{key}:").into_bytes();
    value.resize(VALUE_BYTES, b'x');
    Command::Put {
        key: format!("key/{key:08}"),
        value,
        condition: Condition::None,
    }
}

async fn wait_ready(handle: &NodeHandle, applied: u64) {
    loop {
        let status = handle.status();
        if status.raft.role == Role::Leader && handle.applied_index() >= applied {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `WRITERS` tasks writing `keys` keys (each key once), returning the last revision.
async fn fill(handle: &NodeHandle, keys: usize) -> u64 {
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let handle = handle.clone();
            tokio::spawn(async move {
                let mut last = 0;
                for key in (writer..keys).step_by(WRITERS) {
                    let outcome = handle
                        .propose(&put(key, 0), Duration::from_secs(30))
                        .await
                        .expect("write");
                    if let kvstore::store::Outcome::Put { revision } = outcome {
                        last = last.max(revision);
                    }
                }
                last
            })
        })
        .collect();
    let mut last = 0;
    for task in tasks {
        last = last.max(task.await.expect("writer"));
    }
    last
}

/// Latencies (µs) of `WRITERS` writers overwriting random keys for `duration`.
async fn write_latencies(
    handle: &NodeHandle,
    keys: usize,
    duration: Duration,
) -> hdrhistogram::Histogram<u64> {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let handle = handle.clone();
            tokio::spawn(async move {
                let mut histogram = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
                let mut state = writer as u64 * 0x9e37_79b9_7f4a_7c15 + 1;
                while Instant::now() < deadline {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let started = Instant::now();
                    handle
                        .propose(&put(state as usize % keys, 1), Duration::from_secs(30))
                        .await
                        .expect("write");
                    histogram
                        .record(started.elapsed().as_micros() as u64)
                        .expect("record");
                }
                histogram
            })
        })
        .collect();
    let mut all = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for task in tasks {
        all.add(task.await.expect("writer")).expect("merge");
    }
    all
}

/// Write latencies while snapshots are taken back to back for `window`; the snapshots
/// taken (duration, file size).
async fn with_snapshots(
    handle: &NodeHandle,
    keys: usize,
    window: Duration,
) -> (hdrhistogram::Histogram<u64>, Vec<(Duration, u64)>) {
    let snapshotting = Arc::new(AtomicBool::new(true));
    let snapshots = {
        let (handle, running) = (handle.clone(), snapshotting.clone());
        tokio::spawn(async move {
            let mut taken = Vec::new();
            while running.load(Ordering::Relaxed) {
                let started = Instant::now();
                let info = handle
                    .take_snapshot(Duration::from_secs(300))
                    .await
                    .expect("snapshot");
                taken.push((started.elapsed(), info.file_bytes));
            }
            taken
        })
    };
    let histogram = write_latencies(handle, keys, window).await;
    snapshotting.store(false, Ordering::Relaxed);
    (histogram, snapshots.await.expect("snapshot task"))
}

/// Waits until the WAL and snapshot directories hold no files being deleted in the
/// background (dropped segments, old snapshots), so a window starts on a quiet disk.
async fn wait_for_background_deletes(node_dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let busy = || {
        ["wal", "snapshots"].iter().any(|sub| {
            std::fs::read_dir(node_dir.join(sub)).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|entry| entry.file_name().to_string_lossy().ends_with(".tmp"))
            })
        })
    };
    while busy() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn report(name: &str, histogram: &hdrhistogram::Histogram<u64>, seconds: f64) {
    println!(
        "{name:<28} {:>8.0} writes/s  p50 {:>6} µs  p99 {:>6} µs  max {:>7} µs",
        histogram.len() as f64 / seconds,
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.max()
    );
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,kvstore::node=info",
        ))
        .with_writer(std::io::stderr)
        .init();
    let keys: usize = std::env::var("KEYS")
        .ok()
        .and_then(|keys| keys.parse().ok())
        .unwrap_or(1_000_000);
    let temporary = tempfile::tempdir().expect("temp dir");
    let kept = std::env::var_os("DATA_DIR").map(std::path::PathBuf::from);
    let dir = kept.as_deref().unwrap_or(temporary.path());
    if dir.join("n1").exists() {
        return restart(dir, 0).await;
    }
    let node = Node::start(config(dir)).expect("start");
    wait_ready(&node.handle, 0).await;
    let started = Instant::now();
    let last = fill(&node.handle, keys).await;
    println!(
        "filled {keys} keys ({VALUE_BYTES} B values) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Measure from a compacted log, as the steady state of a node with the default policy
    // is: otherwise the first snapshot below also drops the whole fill from the log.
    let started = Instant::now();
    let first = node
        .handle
        .take_snapshot(Duration::from_secs(300))
        .await
        .expect("first snapshot");
    println!(
        "first snapshot ({:.0} MiB) and compaction in {:.2} s",
        first.file_bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );

    wait_for_background_deletes(&dir.join("n1")).await;

    // Alternate windows without and with snapshots running, so both see the same disk
    // (whose latency drifts on a shared machine), and merge each kind.
    let window = Duration::from_secs(4);
    let rounds = 3;
    let mut quiet = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let mut busy = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let mut taken = Vec::new();
    for _ in 0..rounds {
        quiet
            .add(write_latencies(&node.handle, keys, window).await)
            .expect("merge");
        let (histogram, snapshots) = with_snapshots(&node.handle, keys, window).await;
        busy.add(histogram).expect("merge");
        taken.extend(snapshots);
        wait_for_background_deletes(&dir.join("n1")).await;
    }
    let seconds = (window * rounds).as_secs_f64();
    report("writes, no snapshot", &quiet, seconds);
    report("writes, snapshots running", &busy, seconds);
    for (elapsed, bytes) in &taken {
        println!(
            "snapshot of {:.0} MiB took {:.2} s",
            *bytes as f64 / 1048576.0,
            elapsed.as_secs_f64()
        );
    }
    let final_snapshot = node
        .handle
        .take_snapshot(Duration::from_secs(300))
        .await
        .expect("final snapshot");
    let applied = node.handle.applied_index();
    node.shutdown().await.expect("shutdown");
    println!(
        "last fill revision {last}, applied {applied}, snapshot at {}",
        final_snapshot.meta.index
    );

    restart(dir, applied).await;
}

async fn restart(dir: &std::path::Path, applied: u64) {
    let started = Instant::now();
    let node = Node::start(config(dir)).expect("restart");
    let opened = started.elapsed();
    wait_ready(&node.handle, applied).await;
    println!(
        "restart: opened in {:.3} s, ready to serve (leader, {} keys applied) in {:.3} s",
        opened.as_secs_f64(),
        node.handle.status().keys,
        started.elapsed().as_secs_f64()
    );
    node.shutdown().await.expect("shutdown");
}
