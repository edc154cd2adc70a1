//! A cluster of real `kvnode` processes for the torture runner: one data dir per node under
//! a fresh run directory, SIGKILL / restart, SIGSTOP / SIGCONT, and partitions.
//!
//! # Networks
//!
//! - [`Network::FaultSwitch`] (the default, and what CI runs): every node on loopback with
//!   free ports; partitions through the transport's test-only fault switch
//!   (`--test-faults`, `POST /test/partition`), which drops raft messages to and from the
//!   named peers inside the process.
//! - [`Network::Namespaces`] (root only): real network separation. Each node runs in its own
//!   network namespace (`kvt<S>n<i>`, address `10.77.<S>.<i>`) with a veth pair into a
//!   bridge that lives in a separate "switch" namespace (`kvts<S>`); the host reaches the
//!   bridge over one more veth (`kvtr<S>`, `10.77.<S>.254`). The bridge is kept out of the
//!   host's namespace on purpose: with Docker installed the host's FORWARD chain drops
//!   bridged traffic (`br_netfilter`). A partition loads DROP rules for the cut peers into
//!   each node's own iptables (`iptables-restore`, INPUT by source, OUTPUT by destination),
//!   so established TCP connections stall as on a real network; healing flushes them. The
//!   subnet number `<S>` is claimed by creating the switch namespace, so concurrent runs
//!   never share one. Everything is deleted on drop.
//!
//! Processes are killed when the [`Cluster`] is dropped. The run directory is removed then
//! too, unless [`Cluster::keep`] was called (a failed run keeps its node logs and data).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Timing flags: elections in a fraction of a second, with room for a loaded 2-core machine.
pub const TIMING: [&str; 6] = [
    "--tick-ms",
    "20",
    "--heartbeat-ms",
    "60",
    "--election-timeout-ms",
    "500",
];

/// How long a started node may take to answer `/health`.
pub const LISTEN_DEADLINE: Duration = Duration::from_secs(20);

/// How long a status request may take (a paused node never answers).
const STATUS_TIMEOUT: Duration = Duration::from_millis(800);

/// One node.
pub struct NodeProcess {
    /// Its id (n1, n2, ...).
    pub id: String,
    /// The address it listens on (127.0.0.1, or its namespace's address).
    pub host: String,
    /// Client port on 127.0.0.1.
    pub client_port: u16,
    /// Raft port on 127.0.0.1.
    pub raft_port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Where its stdout and stderr go.
    pub log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl NodeProcess {
    /// The client URL.
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.client_port)
    }

    /// The raft URL.
    pub fn raft_url(&self) -> String {
        format!("http://{}:{}", self.host, self.raft_port)
    }
}

/// How the nodes are connected and partitions are made (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// Loopback, partitions by the transport's fault switch.
    FaultSwitch,
    /// One network namespace per node, partitions by iptables DROP rules.
    Namespaces,
}

/// The namespaces of a [`Network::Namespaces`] cluster.
struct Namespaces {
    /// The subnet number S of 10.77.S.0/24.
    subnet: u8,
}

impl Namespaces {
    fn switch(&self) -> String {
        format!("kvts{}", self.subnet)
    }

    fn node(&self, index: usize) -> String {
        format!("kvt{}n{}", self.subnet, index + 1)
    }

    fn address(&self, index: usize) -> String {
        format!("10.77.{}.{}", self.subnet, index + 1)
    }

    /// Claims a free subnet and builds the switch and `size` node namespaces.
    fn create(size: usize) -> Result<Namespaces, String> {
        let first = (std::process::id() % 200) as u8;
        for offset in 0..200u8 {
            let subnet = 20 + (first + offset) % 200;
            let namespaces = Namespaces { subnet };
            // Creating the switch namespace is the claim: it fails if another run has it.
            if ip(&["netns", "add", &namespaces.switch()]).is_err() {
                continue;
            }
            return match namespaces.build(size) {
                Ok(()) => Ok(namespaces),
                Err(problem) => {
                    namespaces.destroy(size);
                    Err(problem)
                }
            };
        }
        Err("no free 10.77.S.0/24 subnet (or `ip netns add` is not permitted)".into())
    }

    fn build(&self, size: usize) -> Result<(), String> {
        let switch = self.switch();
        let host = format!("kvtr{}", self.subnet);
        let host_address = format!("10.77.{}.254/24", self.subnet);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", "up0", "netns", &switch,
        ])?;
        ip(&["-n", &switch, "link", "set", "up0", "master", "br0", "up"])?;
        ip(&["addr", "add", &host_address, "dev", &host])?;
        ip(&["link", "set", &host, "up"])?;
        for index in 0..size {
            let node = self.node(index);
            let port = format!("p{}", index + 1);
            let address = format!("{}/24", self.address(index));
            ip(&["netns", "add", &node])?;
            ip(&[
                "-n", &node, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                &switch,
            ])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &node, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", &node, "link", "set", "eth0", "up"])?;
            ip(&["-n", &node, "link", "set", "lo", "up"])?;
            self.drop_rules(index, &[])?;
        }
        Ok(())
    }

    /// Replaces node `index`'s filter table: DROP to and from each address in `cut`.
    fn drop_rules(&self, index: usize, cut: &[String]) -> Result<(), String> {
        let mut rules = String::from(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
        );
        for address in cut {
            rules.push_str(&format!(
                "-A INPUT -s {address} -j DROP\n-A OUTPUT -d {address} -j DROP\n"
            ));
        }
        rules.push_str("COMMIT\n");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.node(index), "iptables-restore"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("iptables-restore: {error}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin
                .write_all(rules.as_bytes())
                .map_err(|error| format!("iptables-restore: {error}"))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|error| format!("iptables-restore: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "iptables-restore in {}: {}",
                self.node(index),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    fn destroy(&self, size: usize) {
        for index in 0..size {
            let _ = ip(&["netns", "del", &self.node(index)]);
        }
        let _ = ip(&["netns", "del", &self.switch()]);
        let _ = ip(&["link", "del", &format!("kvtr{}", self.subnet)]);
    }
}

/// Runs `ip ARGS`; the error carries its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("ip {}: {error}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A cluster of `kvnode` processes.
pub struct Cluster {
    /// The nodes, n1 first.
    pub nodes: Vec<NodeProcess>,
    namespaces: Option<Namespaces>,
    kvnode: PathBuf,
    extra_args: Vec<String>,
    dir: PathBuf,
    keep: bool,
    http: reqwest::Client,
}

/// A free TCP port on 127.0.0.1 (the listener is closed at once).
///
/// The port comes from below Linux's ephemeral range (32768-60999 by default), not from
/// `bind(0)`: a port the kernel hands out for `bind(0)` may be given to some outgoing
/// connection (another node's, another test's) between this check and the moment kvnode
/// binds it, and that node then fails to start. Ports below the range are never assigned
/// to outgoing connections. The starting point is spread by process id and a counter so
/// concurrent tests rarely even try the same port.
pub fn free_port() -> std::io::Result<u16> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    const COUNT: u32 = 22_000;
    let spread = std::process::id().wrapping_mul(7919);
    for _ in 0..COUNT {
        let turn = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (FIRST + spread.wrapping_add(turn.wrapping_mul(37)) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A fresh, unique directory under the system temp dir.
pub fn fresh_dir(prefix: &str) -> std::io::Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl Cluster {
    /// Starts `size` nodes of the `kvnode` binary at `kvnode`, with `extra_args` for each,
    /// and returns once every node answers `/health`.
    pub async fn start(
        kvnode: &Path,
        size: usize,
        extra_args: &[String],
        network: Network,
    ) -> Result<Cluster, String> {
        let namespaces = match network {
            Network::FaultSwitch => None,
            Network::Namespaces => Some(Namespaces::create(size)?),
        };
        let dir = fresh_dir("kvtorture").map_err(|error| format!("run dir: {error}"))?;
        let mut nodes = Vec::new();
        for index in 0..size {
            let id = format!("n{}", index + 1);
            let (host, client_port, raft_port) = match &namespaces {
                Some(namespaces) => (namespaces.address(index), 7000, 8000),
                None => (
                    "127.0.0.1".to_string(),
                    free_port().map_err(|error| error.to_string())?,
                    free_port().map_err(|error| error.to_string())?,
                ),
            };
            nodes.push(NodeProcess {
                data_dir: dir.join(&id),
                log_path: dir.join(format!("{id}.log")),
                id,
                host,
                client_port,
                raft_port,
                child: None,
                paused: false,
            });
        }
        let http = reqwest::Client::builder()
            .timeout(STATUS_TIMEOUT)
            .build()
            .map_err(|error| error.to_string())?;
        let mut cluster = Cluster {
            nodes,
            namespaces,
            kvnode: kvnode.to_path_buf(),
            extra_args: extra_args.to_vec(),
            dir,
            keep: false,
            http,
        };
        for index in 0..size {
            cluster.spawn(index)?;
        }
        for index in 0..size {
            cluster.wait_listening(index).await?;
        }
        Ok(cluster)
    }

    /// How partitions are made, for the summary.
    pub fn partition_mode(&self) -> String {
        match &self.namespaces {
            Some(namespaces) => format!(
                "network namespaces + iptables DROP (10.77.{}.0/24)",
                namespaces.subnet
            ),
            None => "transport fault switch (kvnode --test-faults)".to_string(),
        }
    }

    /// The run directory (node logs and data dirs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keep the run directory after drop (for a failed run).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Client URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NodeProcess::url).collect()
    }

    fn command(&self, index: usize) -> Command {
        let node = &self.nodes[index];
        let peers: Vec<String> = self
            .nodes
            .iter()
            .filter(|other| other.id != node.id)
            .map(|other| format!("{}={}", other.id, other.raft_url()))
            .collect();
        let mut command = match &self.namespaces {
            Some(namespaces) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", &namespaces.node(index)])
                    .arg(&self.kvnode);
                command
            }
            None => Command::new(&self.kvnode),
        };
        command
            .arg("--id")
            .arg(&node.id)
            .arg("--addr")
            .arg(format!("{}:{}", node.host, node.client_port))
            .arg("--raft-addr")
            .arg(format!("{}:{}", node.host, node.raft_port))
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

    fn spawn(&mut self, index: usize) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.nodes[index].log_path)
            .map_err(|error| format!("node log: {error}"))?;
        let stderr = log.try_clone().map_err(|error| error.to_string())?;
        let child = self
            .command(index)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|error| format!("spawn {}: {error}", self.kvnode.display()))?;
        self.nodes[index].child = Some(child);
        self.nodes[index].paused = false;
        Ok(())
    }

    /// Whether node `index`'s process is alive (paused counts as alive).
    pub fn is_running(&mut self, index: usize) -> bool {
        match &mut self.nodes[index].child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Whether node `index` is alive and not paused.
    pub fn is_serving(&mut self, index: usize) -> bool {
        !self.nodes[index].paused && self.is_running(index)
    }

    async fn wait_listening(&mut self, index: usize) -> Result<(), String> {
        let url = format!("{}/health", self.nodes[index].url());
        let deadline = Instant::now() + LISTEN_DEADLINE;
        loop {
            if self.http.get(&url).send().await.is_ok() {
                return Ok(());
            }
            if !self.is_running(index) {
                return Err(format!(
                    "{} exited at start:\n{}",
                    self.nodes[index].id,
                    self.log_tail(index, 30)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("{} never listened", self.nodes[index].id));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL node `index` and reap it.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[index].paused = false;
    }

    /// Starts node `index` again (same id, ports, data dir) and waits until it listens.
    pub async fn restart(&mut self, index: usize) -> Result<(), String> {
        if self.nodes[index].child.is_some() {
            return Ok(());
        }
        self.spawn(index)?;
        self.wait_listening(index).await
    }

    /// SIGSTOP node `index`.
    pub fn pause(&mut self, index: usize) {
        if let Some(child) = &self.nodes[index].child {
            signal(child.id(), "STOP");
            self.nodes[index].paused = true;
        }
    }

    /// SIGCONT node `index`.
    pub fn resume(&mut self, index: usize) {
        if let Some(child) = &self.nodes[index].child {
            signal(child.id(), "CONT");
        }
        self.nodes[index].paused = false;
    }

    /// Sets the peers node `index` drops messages to and from (empty: heal that node).
    pub async fn set_blocked(&self, index: usize, blocked: &[String]) -> Result<(), String> {
        let url = format!("{}/test/partition", self.nodes[index].raft_url());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sent = self
                .http
                .post(&url)
                .json(&json!({ "blocked": blocked }))
                .send()
                .await;
            match sent {
                Ok(response) if response.status().as_u16() == 204 => return Ok(()),
                Ok(response) => {
                    return Err(format!("fault switch on {url}: {}", response.status()));
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(error) => return Err(format!("fault switch on {url}: {error}")),
            }
        }
    }

    /// Partitions the cluster into groups: every node drops messages from nodes outside its
    /// own group. Groups given as node indexes; a node in no group keeps all its links.
    pub async fn partition(&self, blocked: &[Vec<usize>]) -> Result<(), String> {
        if let Some(namespaces) = &self.namespaces {
            for (index, peers) in blocked.iter().enumerate() {
                let cut: Vec<String> = peers.iter().map(|&peer| namespaces.address(peer)).collect();
                namespaces.drop_rules(index, &cut)?;
            }
            return Ok(());
        }
        for (index, peers) in blocked.iter().enumerate() {
            let ids: Vec<String> = peers
                .iter()
                .map(|&peer| self.nodes[peer].id.clone())
                .collect();
            self.set_blocked(index, &ids).await?;
        }
        Ok(())
    }

    /// Heals every partition on every running node.
    pub async fn heal(&mut self) -> Result<(), String> {
        if let Some(namespaces) = &self.namespaces {
            for index in 0..self.nodes.len() {
                namespaces.drop_rules(index, &[])?;
            }
            return Ok(());
        }
        for index in 0..self.nodes.len() {
            if self.is_serving(index) {
                self.set_blocked(index, &[]).await?;
            }
        }
        Ok(())
    }

    /// `/raft/status` of node `index`, if it answers in time.
    pub async fn status(&self, index: usize) -> Option<Value> {
        let url = format!("{}/raft/status", self.nodes[index].url());
        self.http.get(url).send().await.ok()?.json().await.ok()
    }

    /// The node that says it is leader with the highest term, among serving nodes.
    pub async fn leader(&mut self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for index in 0..self.nodes.len() {
            if !self.is_serving(index) {
                continue;
            }
            if let Some(status) = self.status(index).await
                && status["state"] == "leader"
            {
                let term = status["term"].as_u64().unwrap_or(0);
                if best.is_none_or(|(best_term, _)| term > best_term) {
                    best = Some((term, index));
                }
            }
        }
        best.map(|(_, index)| index)
    }

    /// The last `lines` lines of node `index`'s log.
    pub fn log_tail(&self, index: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[index].log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(namespaces) = &self.namespaces {
            namespaces.destroy(self.nodes.len());
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Sends signal `name` (e.g. "STOP") to `pid` with kill(1): the crate does not link libc.
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
