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

/// `kvctl --json snapshot` against one node: the index of the snapshot it took.
fn kvctl_snapshot(url: &str) -> u64 {
    let output = Command::new(env!("CARGO_BIN_EXE_kvctl"))
        .args(["--seeds", url, "--json", "snapshot"])
        .output()
        .expect("run kvctl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let taken: Value = serde_json::from_slice(&output.stdout).unwrap();
    taken[0]["snapshot"]["index"]
        .as_u64()
        .unwrap_or_else(|| panic!("a snapshot index in {taken}"))
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
    assert_eq!(kvctl_snapshot(&cluster.url(0)), last);
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

/// Compaction keeps `--snapshot-catch-up-entries` behind the snapshot so that a follower a
/// little behind catches up from the log; a restart must keep that margin too. Here every
/// node but a lagging follower restarts after a snapshot (a rolling restart's worst case):
/// the follower must still catch up from the log, without a snapshot.
#[test]
fn a_restart_keeps_the_catch_up_margin() {
    let flags = [
        "--snapshot-entries",
        "1000000",
        "--snapshot-catch-up-entries",
        "100",
    ];
    let mut cluster = TestCluster::start_with(3, &flags);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let lagging = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let runtime = runtime();
    let first = write_keys(&runtime, cluster.urls(), "a", 300);
    cluster.wait_applied(&[0, 1, 2], first);
    cluster.kill(lagging);
    let last = write_keys(&runtime, cluster.urls(), "b", 50);
    cluster.wait_applied(&[leader, other], last);
    let mut snapshot_index = 0;
    for node in [leader, other] {
        snapshot_index = kvctl_snapshot(&cluster.url(node));
        assert!(snapshot_index >= last, "{snapshot_index} < {last}");
    }
    let margin_start = snapshot_index - 100;
    assert!(
        margin_start > 0 && margin_start < first,
        "the lagging follower ({first}) is inside the margin ({margin_start}..)"
    );

    for node in [leader, other] {
        cluster.kill(node);
    }
    for node in [leader, other] {
        cluster.restart(node);
    }
    let new_leader = cluster.wait_for_leader(&[leader, other]);
    let status = wait_status(&cluster, new_leader, "restarted", |status| {
        number(status, "lastApplied") >= last
    });
    assert_eq!(
        number(&status, "compactedIndex"),
        margin_start,
        "the restarted log starts where the running one did: {status}"
    );
    assert_eq!(number(&status, "snapshotIndex"), snapshot_index);

    cluster.restart(lagging);
    cluster.wait_applied(&[lagging], last);
    let status = cluster.status(lagging).expect("status");
    assert_eq!(
        number(&status, "snapshotIndex"),
        0,
        "caught up from the log: {status}"
    );
    assert!(
        !cluster
            .log(lagging)
            .contains("installed snapshot from the leader"),
        "{}",
        cluster.log(lagging)
    );
}
