//! `kvnode`, `kvctl` and `kvtorture` as a user runs them: bad configuration exits non-zero
//! with one clear line; `kvctl` talks to a real cluster and fails with one line when it
//! cannot.

use std::process::{Command, Output};

use crate::common::{TestCluster, free_port};

fn kvnode(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvnode"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run kvnode")
}

fn kvctl(seeds: &str, args: &[&str]) -> Output {
    kvctl_args(&[&["--seeds", seeds], args].concat())
}

/// `kvctl ARGS` with no seeds but those in `args`: `KVCTL_SEEDS` is not inherited.
fn kvctl_args(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvctl"))
        .args(args)
        .env_remove("KVCTL_SEEDS")
        .output()
        .expect("run kvctl")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts a failed run whose stderr is exactly one line containing `expected`.
fn assert_one_line_failure(output: &Output, expected: &str) {
    assert!(
        !output.status.success(),
        "expected failure, got success: {}",
        stdout(output)
    );
    let text = stderr(output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "want one line, got:\n{text}");
    assert!(
        lines[0].contains(expected),
        "want {expected:?} in {:?}",
        lines[0]
    );
}

#[test]
fn bad_configuration_exits_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let data = data.to_str().unwrap();
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    assert_one_line_failure(
        &kvnode(&[
            "--id", "n1", "--data", data, "--addr", &addr, "--peers", "n2",
        ]),
        "ID=URL",
    );
    assert_one_line_failure(
        &kvnode(&[
            "--id",
            "n1",
            "--data",
            data,
            "--addr",
            &addr,
            "--peers",
            "n1=http://127.0.0.1:1",
        ]),
        "own id",
    );
    assert_one_line_failure(
        &kvnode(&["--id", "n1", "--data", data, "--addr", "nowhere"]),
        "not an address",
    );
    for (flag, value, expected) in [
        ("--segment-bytes", "1", "--segment-bytes must be"),
        ("--request-timeout-ms", "0", "--request-timeout-ms must be"),
    ] {
        let args = ["--id", "n1", "--data", data, "--addr", &addr, flag, value];
        assert_one_line_failure(&kvnode(&args), expected);
    }
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    assert_one_line_failure(
        &kvnode(&["--id", "n1", "--data", data, "--addr", &busy_addr]),
        "cannot listen",
    );
}

#[test]
fn a_data_dir_belongs_to_one_node_and_one_process() {
    let mut cluster = TestCluster::start(1);
    cluster.wait_for_leader(&[0]);
    let data = cluster.nodes[0].data_dir.to_str().unwrap().to_string();
    let addr = format!("127.0.0.1:{}", free_port());
    let raft = format!("127.0.0.1:{}", free_port());
    // A second process on the same data dir is refused while the first runs.
    let second = kvnode(&[
        "--id",
        "n1",
        "--data",
        &data,
        "--addr",
        &addr,
        "--raft-addr",
        &raft,
    ]);
    assert_one_line_failure(&second, "lock");
    cluster.kill(0);
    // Another node id on this data dir is refused.
    let foreign = kvnode(&[
        "--id",
        "n7",
        "--data",
        &data,
        "--addr",
        &addr,
        "--raft-addr",
        &raft,
    ]);
    assert_one_line_failure(&foreign, "n1");
    // And the rightful owner starts again.
    cluster.restart(0);
    cluster.wait_for_leader(&[0]);
}

#[test]
fn kvctl_against_a_cluster() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(&[0, 1, 2]);
    let seeds = cluster.urls().join(",");
    let put = kvctl(&seeds, &["put", "fruit", "apple"]);
    assert!(put.status.success(), "{}", stderr(&put));
    assert!(stdout(&put).starts_with("OK revision "), "{}", stdout(&put));
    // `--seeds` is global: it may follow the subcommand, like `--json` and `--timeout`.
    let get = kvctl_args(&["get", "fruit", "--seeds", &seeds]);
    assert_eq!(stdout(&get), "apple\n", "{}", stderr(&get));
    let json = kvctl(&seeds, &["--json", "get", "fruit"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["value"], "apple");
    let revision = value["revision"].as_u64().unwrap().to_string();
    let stale_cas = kvctl(&seeds, &["put", "fruit", "pear", "--if-match", "1"]);
    assert_one_line_failure(&stale_cas, "precondition failed");
    assert!(
        kvctl(&seeds, &["put", "fruit", "pear", "--if-match", &revision])
            .status
            .success()
    );
    assert_eq!(stdout(&kvctl(&seeds, &["list", "fr"])), "fruit\n");
    // A key with a `..` segment is stored as given, not as the path a URL parser makes of it.
    assert!(kvctl(&seeds, &["put", "a/../b", "dots"]).status.success());
    assert_eq!(stdout(&kvctl(&seeds, &["get", "a/../b"])), "dots\n");
    assert_one_line_failure(&kvctl(&seeds, &["get", "b"]), "not found");
    assert_eq!(stdout(&kvctl(&seeds, &["list", "a/"])), "a/../b\n");
    assert_one_line_failure(&kvctl(&seeds, &["put", "..", "v"]), "cannot be sent");
    let status = stdout(&kvctl(&seeds, &["status"]));
    assert_eq!(status.lines().count(), 4, "{status}");
    let leaders = status
        .lines()
        .skip(1)
        .filter(|row| row.split_whitespace().nth(1) == Some("leader"))
        .count();
    assert_eq!(leaders, 1, "{status}");
    let leader = stdout(&kvctl(&seeds, &["leader"]));
    assert!(leader.starts_with('n'), "{leader}");
    assert!(kvctl(&seeds, &["del", "fruit"]).status.success());
    assert_one_line_failure(&kvctl(&seeds, &["get", "fruit"]), "not found");
}

#[test]
fn kvctl_fails_with_one_line_when_nothing_answers() {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let output = kvctl(&nowhere, &["--timeout", "1", "get", "k"]);
    assert_one_line_failure(&output, "kvctl: error");
}

#[test]
fn kvtorture_refuses_bad_flags_with_one_line_and_status_2() {
    let cases: [(&[&str], &str); 5] = [
        (&["--nodes", "0"], "--nodes 0"),
        (&["--clients", "0"], "--clients and --keys"),
        (
            &["--snapshot-entries", "0"],
            "--snapshot-entries must be at least 1",
        ),
        (
            &["--snapshots-kept", "0"],
            "--snapshots-kept must be at least 1",
        ),
        (&["--network", "wifi"], "--network"),
    ];
    for (args, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_kvtorture"))
            .args(args)
            .output()
            .expect("run kvtorture");
        assert_one_line_failure(&output, expected);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}
