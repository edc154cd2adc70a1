//! A cluster of real `kvnode` processes on loopback for the end-to-end tests.
//!
//! Each node gets two free ports and its own data dir under one temporary directory. The
//! processes are killed when the cluster is dropped, so a failing test leaves nothing
//! behind. Every wait is a condition polled against a deadline; nothing sleeps blindly.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Timing flags for test clusters: short, so elections take a fraction of a second, but
/// with room for a loaded 2-core machine running debug builds.
pub const TIMING: [&str; 6] = [
    "--tick-ms",
    "20",
    "--heartbeat-ms",
    "60",
    "--election-timeout-ms",
    "500",
];

/// Generous deadline for anything that involves an election.
pub const ELECTION_DEADLINE: Duration = Duration::from_secs(20);

/// A two-worker tokio runtime for driving the async client from synchronous tests.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A client for the whole cluster that waits out elections.
pub fn client(urls: Vec<String>) -> kvstore::client::Client {
    let options = kvstore::client::Options {
        timeout: ELECTION_DEADLINE,
        ..Default::default()
    };
    kvstore::client::Client::new(urls, options)
}

/// A client that talks to exactly one node and never retries a write whose outcome is
/// unknown.
pub fn direct(url: String, timeout: Duration) -> kvstore::client::Client {
    let options = kvstore::client::Options {
        timeout,
        request_timeout: timeout,
        retry_indeterminate: false,
    };
    kvstore::client::Client::new(vec![url], options)
}

/// Picks a currently free TCP port on 127.0.0.1 (below the ephemeral range: see
/// [`kvstore::torture::cluster::free_port`]).
pub fn free_port() -> u16 {
    kvstore::torture::cluster::free_port().expect("a free port")
}

/// One node of a test cluster.
pub struct TestNode {
    pub id: String,
    pub client_port: u16,
    pub raft_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl TestNode {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn raft_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.raft_port)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }
}

/// A cluster of `kvnode` processes.
pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    pub extra_args: Vec<String>,
    dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts `size` nodes named n1..nN and returns once every process is listening.
    pub fn start(size: usize) -> TestCluster {
        TestCluster::start_with(size, &[])
    }

    /// Like `start`, with extra `kvnode` flags for every node.
    pub fn start_with(size: usize, extra_args: &[&str]) -> TestCluster {
        let mut cluster = TestCluster::new_stopped(size, extra_args);
        cluster.start_all();
        cluster
    }

    /// Like `start_with`, but spawns nothing yet (so a test can prepare a data dir, e.g.
    /// mount a small tmpfs on it); call `start_all` next.
    pub fn new_stopped(size: usize, extra_args: &[&str]) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes = (1..=size)
            .map(|number| {
                let id = format!("n{number}");
                TestNode {
                    data_dir: dir.path().join(&id),
                    log_path: dir.path().join(format!("{id}.log")),
                    id,
                    client_port: free_port(),
                    raft_port: free_port(),
                    child: None,
                }
            })
            .collect();
        TestCluster {
            nodes,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            dir,
        }
    }

    /// Spawns every node of a `new_stopped` cluster and waits until each listens.
    pub fn start_all(&mut self) {
        for index in 0..self.nodes.len() {
            self.spawn(index);
        }
        for index in 0..self.nodes.len() {
            self.wait_listening(index);
        }
    }

    /// Spawns node `index` without waiting for it to listen (for a node expected to
    /// refuse to start); see `wait_exit`.
    pub fn spawn_only(&mut self, index: usize) {
        assert!(
            self.nodes[index].child.is_none(),
            "node {index} is still running"
        );
        self.spawn(index);
    }

    /// Waits up to `timeout` for node `index` to exit by itself; its exit code (None if
    /// still running at the deadline, or killed by a signal).
    pub fn wait_exit(&mut self, index: usize, timeout: Duration) -> Option<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.nodes[index].child.as_mut()?;
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.nodes[index].child = None;
                return Some(status.code());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id of node `index`, if running.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.nodes[index].child.as_ref().map(Child::id)
    }

    /// The command line of node `index`.
    pub fn command(&self, index: usize) -> Command {
        let node = &self.nodes[index];
        let peers: Vec<String> = self
            .nodes
            .iter()
            .filter(|other| other.id != node.id)
            .map(|other| format!("{}={}", other.id, other.raft_url()))
            .collect();
        let mut command = Command::new(env!("CARGO_BIN_EXE_kvnode"));
        command
            .arg("--id")
            .arg(&node.id)
            .arg("--addr")
            .arg(format!("127.0.0.1:{}", node.client_port))
            .arg("--raft-addr")
            .arg(format!("127.0.0.1:{}", node.raft_port))
            .arg("--data")
            .arg(&node.data_dir)
            .args(TIMING)
            .arg("--test-faults")
            .args(&self.extra_args)
            .env("RUST_LOG", "info,kvstore::access=warn");
        if !peers.is_empty() {
            command.arg("--peers").arg(peers.join(","));
        }
        command
    }

    fn spawn(&mut self, index: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.nodes[index].log_path)
            .expect("open node log");
        let child = self
            .command(index)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn kvnode");
        self.nodes[index].child = Some(child);
    }

    fn wait_listening(&mut self, index: usize) {
        let url = format!("{}/health", self.nodes[index].url());
        let deadline = Instant::now() + ELECTION_DEADLINE;
        loop {
            if http_get(&url).is_some() {
                return;
            }
            assert!(
                self.nodes[index].is_running(),
                "{} exited:\n{}",
                self.nodes[index].id,
                self.log(index)
            );
            assert!(
                Instant::now() < deadline,
                "{} never listened:\n{}",
                self.nodes[index].id,
                self.log(index)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills node `index` with SIGKILL and reaps it.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            child.kill().expect("kill kvnode");
            child.wait().expect("reap kvnode");
        }
    }

    /// Stops node `index` with SIGTERM and returns its exit code.
    pub fn terminate(&mut self, index: usize) -> Option<i32> {
        let mut child = self.nodes[index].child.take()?;
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                child.kill().expect("kill after SIGTERM timeout");
                child.wait().expect("reap");
                panic!(
                    "{} did not exit within 15 s of SIGTERM",
                    self.nodes[index].id
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts node `index` again (same id, ports and data dir).
    pub fn restart(&mut self, index: usize) {
        assert!(
            self.nodes[index].child.is_none(),
            "node {index} is still running"
        );
        self.spawn(index);
        self.wait_listening(index);
    }

    pub fn url(&self, index: usize) -> String {
        self.nodes[index].url()
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(TestNode::url).collect()
    }

    pub fn index_of(&self, id: &str) -> usize {
        self.nodes
            .iter()
            .position(|node| node.id == id)
            .expect("known node id")
    }

    /// The node's log so far (for failure messages).
    pub fn log(&self, index: usize) -> String {
        std::fs::read_to_string(&self.nodes[index].log_path).unwrap_or_default()
    }

    /// Waits until node `index`'s log contains `needle`, and fails with `what` and the log if
    /// it does not within 5 s. A running kvnode logs through a background writer, so a line
    /// can reach the file a little after the node answers for what it logged.
    pub fn wait_for_log(&self, index: usize, needle: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log(index).contains(needle) {
            assert!(Instant::now() < deadline, "{what}:\n{}", self.log(index));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `/raft/status` of node `index`, if it answers.
    pub fn status(&self, index: usize) -> Option<Value> {
        http_get(&format!("{}/raft/status", self.url(index)))
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
    }

    /// Waits until every running node among `among` agrees on one leader in one term, and
    /// that leader is among them; returns its index.
    pub fn wait_for_leader(&mut self, among: &[usize]) -> usize {
        let deadline = Instant::now() + ELECTION_DEADLINE;
        loop {
            if let Some(leader) = self.agreed_leader(among) {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader among {among:?}:\n{}",
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the nodes other than `old` (of three) to agree on a new leader in a term
    /// after `old_term`, and returns it.
    pub fn wait_for_new_leader(&mut self, old: usize, old_term: u64) -> usize {
        let survivors: Vec<usize> = (0..3).filter(|&index| index != old).collect();
        let new_leader = self.wait_for_leader(&survivors);
        assert_ne!(new_leader, old);
        let term = self.status(new_leader).unwrap()["term"].as_u64().unwrap();
        assert!(term > old_term, "term {term} after {old_term}");
        new_leader
    }

    fn agreed_leader(&self, among: &[usize]) -> Option<usize> {
        let statuses: Vec<Value> = among
            .iter()
            .map(|&index| self.status(index))
            .collect::<Option<_>>()?;
        let leader_id = statuses[0]["leaderId"].as_str()?;
        let term = statuses[0]["term"].as_u64()?;
        let agreed = statuses.iter().all(|status| {
            status["leaderId"].as_str() == Some(leader_id) && status["term"].as_u64() == Some(term)
        });
        let leader = self.index_of(leader_id);
        (agreed && among.contains(&leader) && self.status(leader)?["state"] == "leader")
            .then_some(leader)
    }

    /// Waits until every node in `among` has applied at least `index`.
    pub fn wait_applied(&self, among: &[usize], index: u64) {
        let deadline = Instant::now() + ELECTION_DEADLINE;
        for &node in among {
            loop {
                let applied = self
                    .status(node)
                    .and_then(|status| status["lastApplied"].as_u64());
                if applied.is_some_and(|applied| applied >= index) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {node} did not apply {index} (at {applied:?})"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Cuts node `index` off from every other node, in both directions.
    pub fn isolate(&self, index: usize) {
        let others: Vec<String> = self
            .nodes
            .iter()
            .filter(|node| node.id != self.nodes[index].id)
            .map(|node| node.id.clone())
            .collect();
        self.set_blocked(index, &others);
        for other in (0..self.nodes.len()).filter(|&other| other != index) {
            self.set_blocked(other, &[self.nodes[index].id.clone()]);
        }
    }

    /// Heals every partition.
    pub fn heal(&self) {
        for index in 0..self.nodes.len() {
            self.set_blocked(index, &[]);
        }
    }

    fn set_blocked(&self, index: usize, blocked: &[String]) {
        let url = format!("{}/test/partition", self.nodes[index].raft_url());
        let status = http_post_json(&url, &json!({"blocked": blocked}));
        assert_eq!(status, Some(204), "fault switch on node {index}");
    }

    pub fn all_logs(&self) -> String {
        (0..self.nodes.len())
            .map(|index| format!("--- {} ---\n{}", self.nodes[index].id, self.log(index)))
            .collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.all_logs());
        }
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// A blocking GET with a short timeout: `(status, body)`, or None if unreachable.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    blocking(reqwest::Method::GET, url, &[], None)
}

/// A blocking request with a raw body: `(status, body)`, or None if unreachable.
pub fn http_send(method: &str, url: &str, body: &[u8]) -> Option<(u16, String)> {
    http_send_with(method, url, &[], body)
}

/// [`http_send`] with extra request headers.
pub fn http_send_with(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    blocking(method, url, headers, Some(body.to_vec()))
}

fn http_post_json(url: &str, body: &Value) -> Option<u16> {
    let bytes = serde_json::to_vec(body).expect("encode json");
    blocking(reqwest::Method::POST, url, &[], Some(bytes)).map(|(status, _)| status)
}

/// One HTTP request from synchronous test code, on a throwaway single-thread runtime.
fn blocking(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    json_body: Option<Vec<u8>>,
) -> Option<(u16, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .ok()?;
        let mut request = client.request(method, url);
        for &(name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(body) = json_body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    })
}
