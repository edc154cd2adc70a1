//! One torture run: cluster, clients, nemesis, then the end-of-run checks (see the module
//! doc of [`crate::torture`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use super::nemesis::Fault;

use super::checker::{self, Report};
pub use super::cluster::Network;

use super::cluster::Cluster;
use super::history::{FOREIGN_VALUE, Input, Operation, Output, ValueId};
use super::nemesis::{self, Counts};
use super::rng::Rng;
use crate::client::{Client, ClientError, Consistency, Options};
use crate::store::Condition;

/// How long the cluster may take to agree on applied index and state hash after healing.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(40);

/// How a run is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// The `kvnode` binary.
    pub kvnode: PathBuf,
    /// Cluster size (3 or 5).
    pub nodes: usize,
    /// Seeds the nemesis schedule and the clients' choices.
    pub seed: u64,
    /// How long clients and nemesis run.
    pub duration: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys the clients share.
    pub keys: usize,
    /// Faults the nemesis may inject.
    pub faults: Vec<Fault>,
    /// Model steps per key before the checker answers "unknown".
    pub steps_max: u64,
    /// Print nemesis actions as they happen.
    pub verbose: bool,
    /// How nodes are connected and partitioned.
    pub network: Network,
    /// Read with `?consistency=stale` instead of linearizably: a self-check of the harness
    /// (such runs are expected to fail the linearizability check).
    pub stale_reads: bool,
    /// `kvnode --snapshot-entries` (default: the node's own default, 10,000): a small value
    /// makes snapshots, compactions and snapshot transfers part of the run.
    pub snapshot_entries: Option<u64>,
    /// `kvnode --snapshot-catch-up-entries` (default: the node's own, 5,000).
    pub snapshot_catch_up_entries: Option<u64>,
    /// `kvnode --snapshots-kept` (default: the node's own, 3): 1 makes every transfer and
    /// every snapshot taken prune the file before it, the tightest retention there is.
    pub snapshots_kept: Option<u64>,
}

impl Config {
    /// A config with the defaults used by the tests.
    pub fn new(kvnode: PathBuf, nodes: usize, seed: u64, duration: Duration) -> Config {
        Config {
            kvnode,
            nodes,
            seed,
            duration,
            clients: 4,
            keys: 4,
            faults: vec![Fault::Kill, Fault::Pause, Fault::Partition, Fault::Crash],
            steps_max: checker::STEPS_MAX_DEFAULT,
            verbose: false,
            network: Network::FaultSwitch,
            stale_reads: false,
            snapshot_entries: None,
            snapshot_catch_up_entries: None,
            snapshots_kept: None,
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Summary {
    /// The seed.
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// Operations with a determinate outcome (ok, 412, delete result, read).
    pub ok_operations: u64,
    /// Operations that provably had no effect: writes refused before being applied, reads
    /// that got no answer (not in the history).
    pub failed_operations: u64,
    /// Indeterminate writes.
    pub indeterminate_operations: u64,
    /// What the nemesis did.
    pub kills: u64,
    /// Pauses.
    pub pauses: u64,
    /// Partitions.
    pub partitions: u64,
    /// Crashes of several nodes at once.
    pub crashes: u64,
    /// How partitions were made.
    pub partition_mode: String,
    /// The linearizability report.
    pub report: Report,
    /// Acknowledged writes neither present nor overwritten at the end, described.
    pub lost_writes: Vec<String>,
    /// Convergence problem after healing, if any.
    pub divergence: Option<String>,
    /// The nemesis log.
    pub nemesis_log: Vec<String>,
    /// Snapshots the nodes took, and installed from a leader, over the run (from their logs).
    pub snapshots: Snapshots,
    /// Where the node logs are (kept on failure).
    pub run_dir: Option<PathBuf>,
}

/// Snapshot activity over a run, counted from the node logs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshots {
    /// Snapshots taken by the nodes themselves.
    pub taken: u64,
    /// Snapshots a follower received from a leader and installed.
    pub installed: u64,
}

impl Snapshots {
    /// Counts them in the logs of every node of `cluster`.
    fn count(cluster: &Cluster) -> Snapshots {
        let mut snapshots = Snapshots::default();
        for node in &cluster.nodes {
            let text = std::fs::read_to_string(&node.log_path).unwrap_or_default();
            for line in text.lines() {
                if line.contains("snapshot taken") {
                    snapshots.taken += 1;
                } else if line.contains("installed snapshot from the leader") {
                    snapshots.installed += 1;
                }
            }
        }
        snapshots
    }
}

impl Summary {
    /// No violation, nothing lost, converged, nothing unknown.
    pub fn passed(&self) -> bool {
        self.report.is_linearizable() && self.lost_writes.is_empty() && self.divergence.is_none()
    }

    /// A multi-line human summary; with the failing windows on a violation.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let report = &self.report;
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        let _ = writeln!(
            out,
            "kvtorture {verdict}: seed={} nodes={} partitions: {}",
            self.seed, self.nodes, self.partition_mode
        );
        let _ = writeln!(
            out,
            "  operations: {} checked ({} determinate, {} indeterminate); {} without effect, not recorded (refused writes, unanswered reads)",
            report.operations,
            self.ok_operations,
            self.indeterminate_operations,
            self.failed_operations
        );
        let _ = writeln!(
            out,
            "  nemesis: {} node kills ({} multi-node crashes among them), {} pauses, {} partitions",
            self.kills, self.crashes, self.pauses, self.partitions
        );
        let _ = writeln!(
            out,
            "  snapshots: {} taken, {} installed from a leader",
            self.snapshots.taken, self.snapshots.installed
        );
        let _ = writeln!(
            out,
            "  linearizability: {} keys ok, {} violations, {} unknown (budget) {:?}",
            report.keys_ok,
            report.violations.len(),
            report.unknown_keys.len(),
            report.unknown_keys
        );
        let _ = writeln!(
            out,
            "  acknowledged writes lost: {}",
            self.lost_writes.len()
        );
        for lost in &self.lost_writes {
            let _ = writeln!(out, "    {lost}");
        }
        match &self.divergence {
            Some(problem) => {
                let _ = writeln!(out, "  convergence: FAILED: {problem}");
            }
            None => {
                let _ = writeln!(out, "  convergence: same applied index and state hash");
            }
        }
        for violation in &report.violations {
            let _ = writeln!(
                out,
                "  VIOLATION seed={} key={:?}: smallest failing window ({} ops, {}):",
                self.seed,
                violation.key,
                violation.window.len(),
                if violation.from_any_state {
                    "from any initial state"
                } else {
                    "from the empty store"
                }
            );
            for operation in &violation.window {
                let _ = writeln!(out, "    {operation}");
            }
        }
        if !self.passed() {
            for line in &self.nemesis_log {
                let _ = writeln!(out, "  nemesis {line}");
            }
            if let Some(dir) = &self.run_dir {
                let _ = writeln!(out, "  node logs and data kept in {}", dir.display());
            }
        }
        out
    }
}

/// Runs one torture run. `Err` is a harness problem (a node that cannot start, a fault
/// switch that does not answer): also a failure, but not a verdict on the history.
pub async fn run(config: &Config) -> Result<Summary, String> {
    let mut extra: Vec<String> = ["--request-timeout-ms", "1500", "--segment-bytes", "262144"]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
    let snapshot_flags = [
        ("--snapshot-entries", config.snapshot_entries),
        (
            "--snapshot-catch-up-entries",
            config.snapshot_catch_up_entries,
        ),
        ("--snapshots-kept", config.snapshots_kept),
    ];
    for (flag, value) in snapshot_flags {
        if let Some(value) = value {
            extra.extend([flag.to_string(), value.to_string()]);
        }
    }
    let mut cluster = Cluster::start(&config.kvnode, config.nodes, &extra, config.network).await?;
    let outcome = run_on(&mut cluster, config).await;
    match outcome {
        Ok(mut summary) => {
            if !summary.passed() || std::env::var_os("KVTORTURE_KEEP").is_some() {
                cluster.keep();
                summary.run_dir = Some(cluster.dir().to_path_buf());
            }
            Ok(summary)
        }
        Err(problem) => {
            cluster.keep();
            Err(format!(
                "{problem} (seed {}; node logs in {})",
                config.seed,
                cluster.dir().display()
            ))
        }
    }
}

async fn run_on(cluster: &mut Cluster, config: &Config) -> Result<Summary, String> {
    wait_leader(cluster).await?;
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let values = Arc::new(AtomicU64::new(1));
    let keys: Vec<String> = (0..config.keys).map(|key| format!("k{key}")).collect();
    let mut clients = Vec::new();
    for number in 0..config.clients {
        let worker = Worker {
            number,
            client: Client::new(rotated(cluster.urls(), number), torture_options()),
            readers: cluster
                .urls()
                .into_iter()
                .map(|url| Client::new(vec![url], reader_options()))
                .collect(),
            rng: Rng::new(
                config
                    .seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add(number as u64),
            ),
            keys: keys.clone(),
            values: values.clone(),
            stop: stop.clone(),
            start,
            consistency: if config.stale_reads {
                Consistency::Stale
            } else {
                Consistency::Linearizable
            },
        };
        clients.push(tokio::spawn(worker.run()));
    }
    let mut counts = Counts::default();
    let mut log = Vec::new();
    let nemesis_result = run_nemesis(cluster, config, start, &mut counts, &mut log).await;
    tokio::time::sleep(config.duration.saturating_sub(start.elapsed())).await;
    stop.store(true, Ordering::SeqCst);
    let mut history = Vec::new();
    let mut failed = 0;
    for client in clients {
        let (operations, client_failed) = client
            .await
            .map_err(|error| format!("client task: {error}"))?;
        history.extend(operations);
        failed += client_failed;
    }
    nemesis_result?;
    heal_all(cluster).await?;
    wait_leader(cluster).await?;
    let divergence = converge(cluster).await.err();
    let finals = final_reads(cluster, &keys, config.clients, start, &mut history).await?;
    let lost_writes = lost_writes(&history, &finals);
    let report = checker::check(&history, config.steps_max);
    let indeterminate = history.iter().filter(|op| op.is_indeterminate()).count() as u64;
    Ok(Summary {
        seed: config.seed,
        nodes: config.nodes,
        ok_operations: history.len() as u64 - indeterminate,
        failed_operations: failed,
        indeterminate_operations: indeterminate,
        kills: counts.kills,
        pauses: counts.pauses,
        partitions: counts.partitions,
        crashes: counts.crashes,
        partition_mode: cluster.partition_mode(),
        report,
        lost_writes,
        divergence,
        nemesis_log: log,
        snapshots: Snapshots::count(cluster),
        run_dir: None,
    })
}

/// Client options for the torture: never retry an indeterminate write (it would hide
/// what happened), short deadlines so a fault shows up as an outcome, not a stall.
fn torture_options() -> Options {
    Options {
        timeout: Duration::from_secs(4),
        request_timeout: Duration::from_millis(2500),
        retry_indeterminate: false,
    }
}

/// Options for the one-node read clients: a read that a dead or paused node cannot serve
/// is given up soon (it is simply not recorded) so the client gets on with its work.
fn reader_options() -> Options {
    Options {
        timeout: Duration::from_millis(1200),
        request_timeout: Duration::from_millis(1000),
        retry_indeterminate: false,
    }
}

/// The URLs starting at a different node for each client, to spread the load.
fn rotated(mut urls: Vec<String>, by: usize) -> Vec<String> {
    let length = urls.len();
    urls.rotate_left(by % length);
    urls
}

async fn run_nemesis(
    cluster: &mut Cluster,
    config: &Config,
    start: Instant,
    counts: &mut Counts,
    log: &mut Vec<String>,
) -> Result<(), String> {
    let mut rng = Rng::new(config.seed ^ 0x6e65_6d65_7369_7321);
    let schedule = nemesis::schedule(&mut rng, config.nodes, config.duration, &config.faults);
    for fault in schedule {
        tokio::time::sleep(fault.start.saturating_sub(start.elapsed())).await;
        let (active, line) = nemesis::inject(cluster, &fault.action, &mut rng, counts).await?;
        note(log, start, line, config.verbose);
        tokio::time::sleep(fault.hold).await;
        let line = nemesis::heal(cluster, active).await?;
        note(log, start, line, config.verbose);
    }
    Ok(())
}

fn note(log: &mut Vec<String>, start: Instant, line: String, verbose: bool) {
    let line = format!("{:>8.3}s {line}", start.elapsed().as_secs_f64());
    if verbose {
        eprintln!("nemesis {line}");
    }
    log.push(line);
}

async fn heal_all(cluster: &mut Cluster) -> Result<(), String> {
    for index in 0..cluster.nodes.len() {
        if cluster.is_running(index) {
            cluster.resume(index);
        } else {
            cluster.restart(index).await?;
        }
    }
    cluster.heal().await
}

async fn wait_leader(cluster: &mut Cluster) -> Result<usize, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(leader) = cluster.leader().await {
            return Ok(leader);
        }
        if Instant::now() > deadline {
            return Err("no leader within 30 s".to_string());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every node reports the same applied index (= its commit index) and the
/// same state hash.
async fn converge(cluster: &mut Cluster) -> Result<(), String> {
    let deadline = Instant::now() + CONVERGE_DEADLINE;
    loop {
        let mut seen = Vec::new();
        for index in 0..cluster.nodes.len() {
            let status = cluster.status(index).await;
            let field = |name: &str| status.as_ref().map(|status| status[name].clone());
            seen.push((
                cluster.nodes[index].id.clone(),
                field("lastApplied"),
                field("commitIndex"),
                field("stateHash"),
            ));
        }
        let first = (&seen[0].1, &seen[0].3);
        let agreed = seen.iter().all(|(_, applied, commit, hash)| {
            applied.is_some() && applied == commit && (applied, hash) == first
        });
        if agreed {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "after {CONVERGE_DEADLINE:?}: (id, lastApplied, commitIndex, stateHash) = {seen:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every key once more, linearizably, after healing; the reads join the history (as
/// one more client) so the checker sees the final state too.
async fn final_reads(
    cluster: &Cluster,
    keys: &[String],
    client_number: usize,
    start: Instant,
    history: &mut Vec<Operation>,
) -> Result<BTreeMap<String, Option<(ValueId, u64)>>, String> {
    let client = Client::new(cluster.urls(), Options::default());
    let mut finals = BTreeMap::new();
    for key in keys {
        let invoke_ns = start.elapsed().as_nanos() as u64;
        let read = client
            .get(key, Consistency::Linearizable)
            .await
            .map_err(|error| format!("final read of {key}: {error}"))?;
        let seen = read.map(|read| (parse_value(&read.value), read.revision));
        history.push(Operation {
            client: client_number,
            key: key.clone(),
            input: Input::Read,
            output: Output::Read(seen),
            invoke_ns,
            complete_ns: Some(start.elapsed().as_nanos() as u64),
        });
        finals.insert(key.clone(), seen);
    }
    Ok(finals)
}

/// Acknowledged writes that are neither in the final state nor overwritten by a later one.
pub fn lost_writes(
    history: &[Operation],
    finals: &BTreeMap<String, Option<(ValueId, u64)>>,
) -> Vec<String> {
    let mut lost = Vec::new();
    for write in history {
        let (value, revision) = match (write.input, write.output) {
            (Input::Write { value } | Input::Cas { value, .. }, Output::Written { revision }) => {
                (value, revision)
            }
            _ => continue,
        };
        let kept = match finals.get(&write.key).copied().flatten() {
            Some((final_value, final_revision)) => {
                final_revision > revision || (final_revision == revision && final_value == value)
            }
            // Absent at the end: only a delete not finished before this write began
            // explains it.
            None => history.iter().any(|delete| {
                delete.key == write.key
                    && delete.input == Input::Delete
                    && delete
                        .complete_ns
                        .is_none_or(|done| done >= write.invoke_ns)
            }),
        };
        if !kept {
            lost.push(format!("{write}: final state {:?}", finals.get(&write.key)));
        }
    }
    lost
}

/// The value id in bytes written as `v<id>`; [`FOREIGN_VALUE`] for anything else.
pub fn parse_value(bytes: &[u8]) -> ValueId {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.strip_prefix('v'))
        .and_then(|id| id.parse().ok())
        .unwrap_or(FOREIGN_VALUE)
}

/// One client: a sequential process issuing random operations until told to stop.
struct Worker {
    number: usize,
    /// Writes and some reads: follows the leader.
    client: Client,
    /// One client per node, for reads served by that node (a follower answers a
    /// linearizable read through ReadIndex).
    readers: Vec<Client>,
    rng: Rng,
    keys: Vec<String>,
    values: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    start: Instant,
    consistency: Consistency,
}

impl Worker {
    /// Returns the recorded operations and how many failed without effect.
    async fn run(mut self) -> (Vec<Operation>, u64) {
        let mut history = Vec::new();
        let mut failed = 0;
        // The last revision this client saw per key, for its CAS.
        let mut known: BTreeMap<String, u64> = BTreeMap::new();
        while !self.stop.load(Ordering::SeqCst) {
            let key = self.keys[self.rng.index(self.keys.len())].clone();
            let input = self.choose(known.get(&key).copied());
            let invoke_ns = self.now();
            let output = self.perform(&key, input).await;
            let complete_ns = self.now();
            let Some(output) = output else {
                failed += 1;
                continue;
            };
            match output {
                Output::Read(Some((_, revision))) | Output::Written { revision } => {
                    known.insert(key.clone(), revision);
                }
                Output::CasFailed {
                    current: Some(revision),
                } => {
                    known.insert(key.clone(), revision);
                }
                Output::Read(None) | Output::Deleted { .. } | Output::CasFailed { .. } => {
                    known.remove(&key);
                }
                Output::Unknown => {}
            }
            history.push(Operation {
                client: self.number,
                key,
                input,
                output,
                invoke_ns,
                complete_ns: (output != Output::Unknown).then_some(complete_ns),
            });
        }
        (history, failed)
    }

    /// Half the reads go through the leader-following client, half to a random node.
    fn reader(&mut self) -> &Client {
        if self.rng.chance(50) {
            &self.client
        } else {
            let index = self.rng.index(self.readers.len());
            &self.readers[index]
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn choose(&mut self, known: Option<u64>) -> Input {
        let roll = self.rng.below(100);
        if roll < 40 {
            return Input::Read;
        }
        if roll < 50 {
            return Input::Delete;
        }
        let value = self.values.fetch_add(1, Ordering::SeqCst);
        match known {
            Some(expected) if roll < 80 => Input::Cas { expected, value },
            // No revision known yet: guess a small one (usually a 412, sometimes a hit).
            None if roll < 65 => Input::Cas {
                expected: self.rng.between(1, 50),
                value,
            },
            _ => Input::Write { value },
        }
    }

    /// Performs `input`; `None` if it failed without effect (not recorded).
    async fn perform(&mut self, key: &str, input: Input) -> Option<Output> {
        let bytes = |value: ValueId| format!("v{value}").into_bytes();
        let written = |result: Result<u64, ClientError>| match result {
            Ok(revision) => Some(Output::Written { revision }),
            Err(ClientError::PreconditionFailed { current }) => Some(Output::CasFailed { current }),
            Err(error) => write_failure(error),
        };
        let consistency = self.consistency;
        match input {
            Input::Read => {
                let read = self.reader().get(key, consistency).await;
                read.ok().map(|read| {
                    Output::Read(read.map(|read| (parse_value(&read.value), read.revision)))
                })
            }
            Input::Write { value } => {
                written(self.client.put(key, &bytes(value), Condition::None).await)
            }
            Input::Cas { expected, value } => written(
                self.client
                    .put(key, &bytes(value), Condition::Revision(expected))
                    .await,
            ),
            Input::Delete => match self.client.delete(key, Condition::None).await {
                Ok(existed) => Some(Output::Deleted { existed }),
                Err(error) => write_failure(error),
            },
        }
    }
}

/// A write's failure: indeterminate unless it provably did nothing.
fn write_failure(error: ClientError) -> Option<Output> {
    match error {
        // Refused outright (4xx) or never accepted by any node: nothing was applied.
        ClientError::Unavailable(_) => None,
        ClientError::Rejected { status, .. } if status < 500 => None,
        _ => Some(Output::Unknown),
    }
}
