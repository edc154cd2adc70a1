//! Snapshots end to end over real `kvnode` processes: taken on schedule and on request,
//! compacting the WAL, surviving restart, and streamed to a follower that fell behind the
//! leader's compacted log.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{ELECTION_DEADLINE, TestCluster, client, direct, runtime};
use kvstore::client::Consistency;
use kvstore::store::Condition;
use serde_json::Value;

/// Writes `count` keys `prefix{n}` (values unique per key) with a few concurrent writers;
/// returns the highest revision acknowledged.
fn write_keys(
    runtime: &tokio::runtime::Runtime,
    urls: Vec<String>,
    prefix: &str,
    count: usize,
) -> u64 {
    runtime.block_on(async {
        let client = std::sync::Arc::new(client(urls));
        let writers: Vec<_> = (0..8)
            .map(|writer| {
                let client = client.clone();
                let prefix = prefix.to_string();
                tokio::spawn(async move {
                    let mut highest = 0;
                    for number in (writer..count).step_by(8) {
                        let value = format!("value-{number}");
                        let revision = client
                            .put(
                                &format!("{prefix}{number}"),
                                value.as_bytes(),
                                Condition::None,
                            )
                            .await;
                        highest = highest.max(revision.expect("acknowledged write"));
                    }
                    highest
                })
            })
            .collect();
        let mut highest = 0;
        for writer in writers {
            highest = highest.max(writer.await.expect("writer task"));
        }
        highest
    })
}

/// Polls node `index`'s status until `check` holds.
fn wait_status(
    cluster: &TestCluster,
    index: usize,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + ELECTION_DEADLINE;
    loop {
        if let Some(status) = cluster.status(index).filter(|status| check(status)) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "node {index}: {what}; last status {:?}",
            cluster.status(index)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn number(status: &Value, field: &str) -> u64 {
    status[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {status}"))
}

#[test]
fn snapshots_compact_the_wal_and_survive_restart() {
    let flags = [
        "--snapshot-entries",
        "100",
        "--snapshot-catch-up-entries",
        "10",
        "--segment-bytes",
        "8192",
    ];
    let mut cluster = TestCluster::start_with(1, &flags);
    cluster.wait_for_leader(&[0]);
    let runtime = runtime();
    let last = write_keys(&runtime, cluster.urls(), "k", 600);
    let status = wait_status(&cluster, 0, "a snapshot and a compacted log", |status| {
        number(status, "snapshotIndex") >= 100 && number(status, "compactedIndex") > 0
    });
    assert!(
        number(&status, "firstIndex") > 1,
        "the log was compacted: {status}"
    );

    // On request too, through kvctl and the admin route.
    let output = Command::new(env!("CARGO_BIN_EXE_kvctl"))
        .args(["--seeds", &cluster.url(0), "--json", "snapshot"])
        .output()
        .expect("run kvctl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let taken: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        taken[0]["snapshot"]["index"].as_u64(),
        Some(last),
        "{taken}"
    );
    let hash = wait_status(&cluster, 0, "applied", |status| {
        number(status, "lastApplied") >= last
    })["stateHash"]
        .clone();

    cluster.kill(0);
    cluster.restart(0);
    cluster.wait_for_leader(&[0]);
    let status = wait_status(&cluster, 0, "restarted from its snapshot", |status| {
        number(status, "lastApplied") >= last
    });
    assert_eq!(status["stateHash"], hash, "same state after restart");
    assert_eq!(number(&status, "snapshotIndex"), last);
    let keys = runtime
        .block_on(client(cluster.urls()).list("k", 1000, Consistency::Linearizable))
        .unwrap();
    assert_eq!(keys.len(), 600);
}

#[test]
fn a_follower_behind_the_compacted_log_receives_the_snapshot() {
    let flags = [
        "--snapshot-entries",
        "200",
        "--snapshot-catch-up-entries",
        "0",
    ];
    let mut cluster = TestCluster::start_with(3, &flags);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    let runtime = runtime();
    let last = write_keys(&runtime, cluster.urls(), "s", 1000);
    let leader_status = wait_status(&cluster, leader, "a compacted log", |status| {
        number(status, "compactedIndex") >= 200
    });
    assert!(number(&leader_status, "firstIndex") > 1);

    cluster.restart(follower);
    cluster.wait_applied(&[follower], last);
    let expected = wait_status(&cluster, leader, "applied", |status| {
        number(status, "lastApplied") >= last
    })["stateHash"]
        .clone();
    let status = wait_status(&cluster, follower, "the leader's state", |status| {
        status["stateHash"] == expected
    });
    assert!(
        number(&status, "snapshotIndex") >= 200,
        "the follower installed a snapshot: {status}"
    );
    cluster.wait_for_log(
        follower,
        "installed snapshot from the leader",
        "the follower did not log the install",
    );

    // The installed follower keeps replicating, and survives its own restart.
    let more = write_keys(&runtime, cluster.urls(), "t", 50);
    cluster.wait_applied(&[follower], more);
    cluster.kill(follower);
    cluster.restart(follower);
    cluster.wait_applied(&[follower], more);
    let keys = runtime
        .block_on(direct(cluster.url(follower), ELECTION_DEADLINE).list(
            "",
            5000,
            Consistency::Stale,
        ))
        .unwrap();
    assert_eq!(keys.len(), 1050);
}
