//! End-to-end tests over real `kvnode` processes on loopback: elections, replication,
//! redirects, SIGKILL of leaders and followers, an isolated old leader, loss of quorum,
//! whole-cluster crash and restart, and racing conditional writes.

use std::time::Duration;

use crate::common::{ELECTION_DEADLINE, TestCluster, client, direct, http_get, runtime};
use kvstore::client::{Client, ClientError, Consistency};
use kvstore::store::Condition;
use serde_json::Value;

fn raw(method: reqwest::Method, url: &str, body: &str) -> (u16, Value) {
    runtime().block_on(async {
        let response = reqwest::Client::new()
            .request(method, url)
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let json = response.json().await.unwrap_or(Value::Null);
        (status, json)
    })
}

#[test]
fn exactly_one_leader_is_elected() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let leaders: Vec<usize> = (0..3)
        .filter(|&index| {
            cluster
                .status(index)
                .is_some_and(|status| status["state"] == "leader")
        })
        .collect();
    assert_eq!(leaders, vec![leader]);
    let (status, body) = http_get(&format!("{}/health", cluster.url(leader))).expect("health");
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["role"], "leader");
    assert_eq!(health["leaderId"], cluster.nodes[leader].id);
}

#[test]
fn write_on_leader_is_readable_everywhere() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let runtime = runtime();
    let revision = runtime
        .block_on(direct(cluster.url(leader), ELECTION_DEADLINE).put(
            "greeting",
            b"hello",
            Condition::None,
        ))
        .expect("put on the leader");
    for index in 0..3 {
        let node = direct(cluster.url(index), ELECTION_DEADLINE);
        let linearizable = runtime
            .block_on(node.get("greeting", Consistency::Linearizable))
            .expect("read");
        let linearizable = linearizable.expect("linearizable read sees the acknowledged write");
        assert_eq!(
            (linearizable.value.as_slice(), linearizable.revision),
            (&b"hello"[..], revision)
        );
    }
    cluster.wait_applied(&[0, 1, 2], revision);
    for index in 0..3 {
        let node = direct(cluster.url(index), ELECTION_DEADLINE);
        let stale = runtime
            .block_on(node.get("greeting", Consistency::Stale))
            .expect("stale read");
        assert_eq!(stale.expect("applied everywhere").value, b"hello");
    }
}

#[test]
fn write_on_follower_gets_not_leader_with_hint() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let follower = (leader + 1) % 3;
    let (status, body) = raw(
        reqwest::Method::PUT,
        &format!("{}/kv/k", cluster.url(follower)),
        "v",
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["ok"], false);
    assert_eq!(body["error"], "not_leader");
    assert_eq!(body["leaderId"], cluster.nodes[leader].id);
    assert_eq!(body["leader"], cluster.url(leader));
    // The client follows the hint.
    let revision =
        runtime().block_on(client(vec![cluster.url(follower)]).put("k", b"v", Condition::None));
    assert!(revision.is_ok(), "{revision:?}");
}

#[test]
fn killed_leader_is_replaced_and_no_acknowledged_write_is_lost() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let runtime = runtime();
    let client = client(cluster.urls());
    for number in 0..20 {
        runtime
            .block_on(client.put(
                &format!("key{number}"),
                format!("v{number}").as_bytes(),
                Condition::None,
            ))
            .unwrap();
    }
    let old_term = cluster.status(leader).unwrap()["term"].as_u64().unwrap();
    cluster.kill(leader);
    cluster.wait_for_new_leader(leader, old_term);
    for number in 0..20 {
        let found = runtime
            .block_on(client.get(&format!("key{number}"), Consistency::Linearizable))
            .unwrap();
        assert_eq!(
            found.expect("acknowledged write survives").value,
            format!("v{number}").as_bytes()
        );
    }
}

#[test]
fn entries_of_an_isolated_old_leader_are_discarded() {
    let mut cluster = TestCluster::start(3);
    let old_leader = cluster.wait_for_leader(&[0, 1, 2]);
    let runtime = runtime();
    runtime
        .block_on(client(cluster.urls()).put("k", b"before", Condition::None))
        .unwrap();
    cluster.isolate(old_leader);
    // The isolated leader accepts the proposal but can never commit it.
    let lost = runtime.block_on(
        direct(cluster.url(old_leader), Duration::from_millis(1500)).put(
            "k",
            b"from-isolated-leader",
            Condition::None,
        ),
    );
    assert!(
        matches!(
            lost,
            Err(ClientError::Indeterminate(_) | ClientError::Unavailable(_))
        ),
        "{lost:?}"
    );
    let majority: Vec<usize> = (0..3).filter(|&index| index != old_leader).collect();
    let new_leader = cluster.wait_for_leader(&majority);
    let revision = runtime
        .block_on(direct(cluster.url(new_leader), ELECTION_DEADLINE).put(
            "k",
            b"after",
            Condition::None,
        ))
        .unwrap();
    cluster.heal();
    cluster.wait_for_leader(&[0, 1, 2]);
    cluster.wait_applied(&[0, 1, 2], revision);
    for index in 0..3 {
        let value = runtime
            .block_on(direct(cluster.url(index), ELECTION_DEADLINE).get("k", Consistency::Stale));
        assert_eq!(value.unwrap().unwrap().value, b"after", "node {index}");
    }
}

#[test]
fn follower_that_was_down_catches_up() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    let runtime = runtime();
    let client = client(cluster.urls());
    let mut last = 0;
    for number in 0..50 {
        last = runtime
            .block_on(client.put(&format!("k{number}"), b"x", Condition::None))
            .unwrap();
    }
    cluster.restart(follower);
    cluster.wait_applied(&[follower], last);
    let keys = runtime.block_on(direct(cluster.url(follower), ELECTION_DEADLINE).list(
        "k",
        100,
        Consistency::Stale,
    ));
    assert_eq!(keys.unwrap().len(), 50);
}

#[test]
fn without_quorum_writes_fail_and_nothing_commits_until_a_node_returns() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let runtime = runtime();
    runtime
        .block_on(client(cluster.urls()).put("a", b"1", Condition::None))
        .unwrap();
    let down: Vec<usize> = (0..3).filter(|&index| index != leader).collect();
    for &index in &down {
        cluster.kill(index);
    }
    let commit_before = cluster.status(leader).unwrap()["commitIndex"]
        .as_u64()
        .unwrap();
    let failed = runtime.block_on(direct(cluster.url(leader), Duration::from_secs(2)).put(
        "b",
        b"2",
        Condition::None,
    ));
    assert!(
        failed.is_err(),
        "a write without quorum must not be acknowledged: {failed:?}"
    );
    let (status, body) = raw(
        reqwest::Method::PUT,
        &format!("{}/kv/c", cluster.url(leader)),
        "3",
    );
    assert!(status == 503 || status == 409, "{status} {body}");
    let commit_after = cluster.status(leader).unwrap()["commitIndex"]
        .as_u64()
        .unwrap();
    assert_eq!(
        commit_before, commit_after,
        "nothing commits without a quorum"
    );
    cluster.restart(down[0]);
    let revision = runtime
        .block_on(client(cluster.urls()).put("d", b"4", Condition::None))
        .expect("recovers");
    assert!(revision > commit_after);
}

#[test]
fn all_nodes_killed_and_restarted_keep_every_acknowledged_write() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(&[0, 1, 2]);
    let runtime = runtime();
    let client = client(cluster.urls());
    for number in 0..30 {
        runtime
            .block_on(client.put(
                &format!("durable{number}"),
                format!("{number}").as_bytes(),
                Condition::None,
            ))
            .unwrap();
    }
    for index in 0..3 {
        cluster.kill(index);
    }
    for index in 0..3 {
        cluster.restart(index);
    }
    cluster.wait_for_leader(&[0, 1, 2]);
    for number in 0..30 {
        let found = runtime
            .block_on(client.get(&format!("durable{number}"), Consistency::Linearizable))
            .unwrap();
        assert_eq!(
            found.expect("survives a full crash").value,
            format!("{number}").as_bytes()
        );
    }
}

#[test]
fn racing_conditional_writes_have_one_winner() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(&[0, 1, 2]);
    let runtime = runtime();
    let urls = cluster.urls();
    let revision = runtime
        .block_on(client(urls.clone()).put("counter", b"0", Condition::None))
        .unwrap();
    for round in 0..5 {
        let (one, two) = (client(urls.clone()), client(urls.clone()));
        let current = revision_of(&runtime, &one, "counter");
        let (value_one, value_two) = (format!("a{round}"), format!("b{round}"));
        let (first, second) = runtime.block_on(async {
            tokio::join!(
                one.put(
                    "counter",
                    value_one.as_bytes(),
                    Condition::Revision(current)
                ),
                two.put(
                    "counter",
                    value_two.as_bytes(),
                    Condition::Revision(current)
                ),
            )
        });
        let winners = [&first, &second]
            .iter()
            .filter(|result| result.is_ok())
            .count();
        assert_eq!(winners, 1, "round {round}: {first:?} {second:?}");
        let loser = if first.is_ok() { second } else { first };
        assert!(
            matches!(
                loser,
                Err(ClientError::PreconditionFailed { current: Some(_) })
            ),
            "{loser:?}"
        );
    }
    assert!(revision > 0);
}

fn revision_of(runtime: &tokio::runtime::Runtime, client: &Client, key: &str) -> u64 {
    runtime
        .block_on(client.get(key, Consistency::Linearizable))
        .unwrap()
        .expect("key exists")
        .revision
}
