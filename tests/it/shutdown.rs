//! Graceful shutdown of real `kvnode` processes: SIGTERM makes a node finish what it is
//! writing, stop, and exit 0 within a few seconds; a terminated leader is replaced (it
//! simply stops heartbeating) and no acknowledged write is lost, also with writes in flight
//! when the signal arrives; a whole cluster stopped with SIGTERM restarts with everything.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{ELECTION_DEADLINE, TestCluster, client, runtime};
use kvstore::client::{Client, Consistency, Options};
use kvstore::store::Condition;

/// How long a node may take to exit after SIGTERM ("a few seconds"; typically well under
/// one, this leaves room for a loaded 2-core machine running debug builds).
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// SIGTERM to node `index`; asserts that it exits 0 within `SHUTDOWN_DEADLINE`.
fn terminate_gracefully(cluster: &mut TestCluster, index: usize) -> Duration {
    let started = Instant::now();
    let code = cluster.terminate(index);
    let took = started.elapsed();
    assert_eq!(
        code,
        Some(0),
        "{} exited with {code:?} on SIGTERM:\n{}",
        cluster.nodes[index].id,
        cluster.log(index)
    );
    assert!(
        took < SHUTDOWN_DEADLINE,
        "{} took {took:?} to exit after SIGTERM:\n{}",
        cluster.nodes[index].id,
        cluster.log(index)
    );
    took
}

/// Checks that every `(key, value)` reads back with a linearizable read.
fn assert_all_readable(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    acked: &[(String, String)],
) {
    for (key, value) in acked {
        let found = runtime
            .block_on(client.get(key, Consistency::Linearizable))
            .unwrap_or_else(|error| panic!("reading acknowledged key {key}: {error}"));
        assert_eq!(
            found
                .unwrap_or_else(|| panic!("acknowledged key {key} is gone"))
                .value,
            value.as_bytes(),
            "key {key}"
        );
    }
}

#[test]
fn sigterm_on_leader_exits_zero_and_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let old_term = cluster.status(leader).unwrap()["term"].as_u64().unwrap();
    let runtime = runtime();
    let client = Arc::new(client(cluster.urls()));
    let mut acked: Vec<(String, String)> = Vec::new();
    for number in 0..20 {
        let (key, value) = (format!("before{number}"), format!("v{number}"));
        runtime
            .block_on(client.put(&key, value.as_bytes(), Condition::None))
            .expect("put before SIGTERM");
        acked.push((key, value));
    }

    // A writer keeps proposing while the leader receives SIGTERM, so that the signal lands
    // with writes (and their fsyncs) in flight. Only acknowledged writes are recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let acked_during = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (client, stop, count) = (
            Arc::clone(&client),
            Arc::clone(&stop),
            Arc::clone(&acked_during),
        );
        std::thread::spawn(move || {
            let runtime = self::runtime();
            let mut acked = Vec::new();
            let mut number = 0;
            while !stop.load(Ordering::Relaxed) {
                let (key, value) = (format!("during{number}"), format!("w{number}"));
                number += 1;
                if runtime
                    .block_on(client.put(&key, value.as_bytes(), Condition::None))
                    .is_ok()
                {
                    acked.push((key, value));
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            acked
        })
    };
    wait_until_acked(&acked_during, 5);
    let took = terminate_gracefully(&mut cluster, leader);
    eprintln!(
        "leader {} exited 0 {took:?} after SIGTERM",
        cluster.nodes[leader].id
    );
    assert!(
        cluster.log(leader).contains("driver stopped on request"),
        "the driver did not stop cleanly:\n{}",
        cluster.log(leader)
    );

    cluster.wait_for_new_leader(leader, old_term);
    // Let the writer succeed against the new leader too, then stop it.
    let acked_before = acked_during.load(Ordering::Relaxed);
    wait_until_acked(&acked_during, acked_before + 5);
    stop.store(true, Ordering::Relaxed);
    let during = writer.join().expect("writer thread");
    assert!(
        !during.is_empty(),
        "no write was acknowledged around the SIGTERM"
    );
    acked.extend(during);
    assert_all_readable(&runtime, &client, &acked);

    // The terminated node starts again from its data dir and catches up.
    let last = runtime
        .block_on(client.put("after", b"restart", Condition::None))
        .expect("put after the new election");
    acked.push(("after".into(), "restart".into()));
    cluster.restart(leader);
    cluster.wait_applied(&[0, 1, 2], last);
    let restarted = Client::new(
        vec![cluster.url(leader)],
        Options {
            timeout: ELECTION_DEADLINE,
            ..Options::default()
        },
    );
    for (key, value) in &acked {
        let found = runtime
            .block_on(restarted.get(key, Consistency::Stale))
            .expect("stale read on the restarted node");
        assert_eq!(found.expect("replicated").value, value.as_bytes(), "{key}");
    }
}

#[test]
fn whole_cluster_stopped_with_sigterm_restarts_with_everything() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let runtime = runtime();
    let client = client(cluster.urls());
    let mut acked = Vec::new();
    let mut last = 0;
    for number in 0..30 {
        let (key, value) = (format!("k{number}"), format!("v{number}"));
        last = runtime
            .block_on(client.put(&key, value.as_bytes(), Condition::None))
            .expect("put");
        acked.push((key, value));
    }
    cluster.wait_applied(&[0, 1, 2], last);
    // Followers first, then the leader, as an orchestrator stopping a whole cluster might.
    let order: Vec<usize> = (0..3)
        .filter(|&index| index != leader)
        .chain(std::iter::once(leader))
        .collect();
    for index in order {
        terminate_gracefully(&mut cluster, index);
    }
    for index in 0..3 {
        cluster.restart(index);
    }
    cluster.wait_for_leader(&[0, 1, 2]);
    assert_all_readable(&runtime, &client, &acked);
    let revision = runtime
        .block_on(client.put("after", b"restart", Condition::None))
        .expect("put after the restart");
    assert!(revision > last, "revision {revision} after {last}");
}

/// Waits (with a deadline) until the writer thread has had `count` writes acknowledged.
fn wait_until_acked(acked: &AtomicUsize, count: usize) {
    let deadline = Instant::now() + ELECTION_DEADLINE;
    while acked.load(Ordering::Relaxed) < count {
        assert!(
            Instant::now() < deadline,
            "the writer got fewer than {count} writes acknowledged"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
