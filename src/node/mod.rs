//! The node: the one place where the raft core, the WAL, the store, the network and time
//! meet.
//!
//! # Tasks and threads
//!
//! The driver (`driver.rs`) is one tokio task that owns the raft core. Everything that
//! talks to it (HTTP handlers, the peer streams, the WAL thread, the snapshot thread) does
//! so through one bounded queue of `Event`s ([`EVENTS_MAX`]); a full queue is
//! back-pressure: the HTTP layer answers `503` at once instead of letting requests pile up.
//! The WAL lives on a thread of its own (`storage.rs`), since an fdatasync blocks; the
//! leader's driver never waits for it (a follower's writes in place, see `storage.rs`).
//!
//! The driver was an OS thread of its own while it also made the fsyncs. With the fsyncs
//! gone from it, a thread only cost wake-ups: every request crossed from a tokio worker to
//! the driver thread and back, two futex wake-ups and two context switches, which took
//! about a third of the leader's CPU under 64 readers. As a task, a handler wakes the
//! driver and the driver wakes the handler on the same worker's run queue. The few
//! blocking things it still does (loading an installed snapshot, joining the WAL thread at
//! shutdown) run in `block_in_place`, so its worker's other tasks move elsewhere.
//!
//! # One iteration of the driver (the write path, ARCHITECTURE.md)
//!
//! 1. Wait for an event or the next tick; then drain the queue (up to
//!    `EVENTS_PER_ITERATION_MAX`): proposals, read barriers, peer messages, and the WAL
//!    thread's "done" (after which the driver tells the core what is durable: the leader
//!    counts itself toward a quorum only then).
//! 2. Tick the core for each elapsed tick interval.
//! 3. While the core has a `Ready`, handle it:
//!    - send `messages` at once (the leader's appends go out before its own write, so
//!      followers persist in parallel with it, thesis §10.2.1);
//!    - apply committed entries to the store and complete the linearizable reads whose
//!      read index is now applied. The core hands out only committed entries that are
//!      already durable on this node, so they never wait for a write still under way;
//!    - hand the hard state, the entries and `persisted_messages` (vote and append
//!      responses, thesis §3.8) to the WAL thread, which writes them with **one** write and
//!      **one** fdatasync together with whatever else queued meanwhile (group commit) and
//!      only then sends those messages. A follower (any node but the leader) with nothing
//!      queued on the thread makes that write and sends those messages itself, in place
//!      (`storage.rs`, "Followers write in place"). A ready with nothing to write sends its
//!      `persisted_messages` itself when no write is under way (nothing they reveal can
//!      still be unwritten).
//! 4. Publish the status, then answer the proposals applied (so `/raft/status` never lags
//!    a write a client already saw acknowledged).
//!
//! Reads: concurrent linearizable reads share one read index (see
//! [`NodeHandle::read_barrier`]), and the core keeps one read round in flight at a time.
//!
//! # Failure
//!
//! A WAL error is fail-stop (STYLE.md practice 9): the driver stops, every waiting request
//! gets `503`, `/health` reports the error, and `kvnode` exits non-zero so a supervisor
//! restarts it and recovery re-reads what is really on disk. A failed fsync is never retried
//! as if the data were safe.
//!
//! # Implementation caveats
//!
//! - A proposal is matched to its result by (index, term). If leadership changes before it
//!   commits, the request gets `503` ("may or may not have been applied") at its deadline
//!   or as soon as another entry is applied at its index.

mod driver;
mod recover;
mod snapshots;
mod storage;

pub use snapshots::{SNAPSHOT_CATCH_UP_ENTRIES, SnapshotPolicy};
pub use storage::UNPERSISTED_BYTES_MAX;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::datadir::{DataDir, Identity};
use crate::error::{Error, Result};
use crate::metrics::{Metrics, PeerLabels};
use crate::raft::{self, Index, Message, NodeId, Role, Term};
use crate::snapshot::{SnapshotDir, SnapshotInfo};
use crate::store::{Command, Outcome, Store};
use crate::transport::{Directory, Peers, SnapshotReceiver};
use crate::wal::{self, Wal};

/// Events queued for the driver at most. Bounded so that overload turns into quick `503`s
/// rather than unbounded memory and latency.
pub const EVENTS_MAX: usize = 16 * 1024;

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id.
    pub id: NodeId,
    /// The cluster id (shared by all members; envelopes from other clusters are rejected).
    pub cluster_id: String,
    /// Raft URLs of the other members (empty: a single-node cluster).
    pub peers: BTreeMap<NodeId, String>,
    /// The URL clients should use to reach this node.
    pub client_url: String,
    /// The URL peers use to reach this node's raft port (reported in `/raft/status`).
    pub raft_url: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Wall-clock length of one raft tick.
    pub tick: Duration,
    /// Election timeout, in ticks (randomized up to twice this).
    pub election_timeout_ticks: u64,
    /// Heartbeat interval, in ticks.
    pub heartbeat_interval_ticks: u64,
    /// WAL segment size.
    pub segment_bytes_max: u64,
    /// Seed for the raft core's election timeout randomness.
    pub seed: u64,
    /// When to take snapshots.
    pub snapshot_policy: SnapshotPolicy,
    /// How many snapshot files to keep.
    pub snapshots_kept: usize,
}

impl NodeConfig {
    /// All voters: this node and its peers, sorted.
    pub fn voters(&self) -> Vec<NodeId> {
        let mut voters: Vec<NodeId> = self.peers.keys().cloned().collect();
        voters.push(self.id.clone());
        voters.sort();
        voters
    }
}

/// A request to the driver.
pub(crate) enum Event {
    /// Messages from a peer, in the order they were sent.
    Messages(Vec<Message>),
    /// A client write.
    Propose {
        command: Vec<u8>,
        reply: oneshot::Sender<Result<Outcome>>,
    },
    /// Linearizable read barriers: the driver takes the open [`ReadBatch`] and asks the core
    /// for one read index for all of it; each waiter is answered once the store has applied
    /// that index.
    Read,
    /// Take a snapshot now (an operator asked); replies once it is durable.
    TakeSnapshot {
        reply: oneshot::Sender<Result<SnapshotInfo>>,
    },
    /// The background snapshot write finished.
    SnapshotDone(Result<SnapshotInfo>),
    /// The WAL thread finished jobs (or failed): poll it.
    Storage,
    /// Stop after finishing the current iteration.
    Shutdown,
}

/// What the node publishes about itself after every driver iteration.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// The raft core's status.
    pub raft: raft::Status,
    /// The store's state hash (see [`Store::state_hash`]).
    pub state_hash: u64,
    /// Keys in the store.
    pub keys: usize,
    /// WAL bytes on disk.
    pub wal_bytes: u64,
    /// Index of the newest durable snapshot (0 if none).
    pub snapshot_index: Index,
    /// Set when the driver has stopped because of an error.
    pub failed: Option<String>,
}

/// Read barriers waiting for the driver to take them (see [`NodeHandle::read_barrier`]).
pub(crate) type ReadBatch = Mutex<Option<Vec<oneshot::Sender<Result<()>>>>>;

/// A running node, as seen by the HTTP API and by tests. Cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    events: mpsc::Sender<Event>,
    /// The open batch of read barriers: queued for the driver, not yet taken.
    reads: Arc<ReadBatch>,
    store: Arc<RwLock<Store>>,
    status: watch::Receiver<NodeStatus>,
    /// Changes once, when the driver stops because of an error. Apart from `status`, which
    /// changes on every driver iteration: a task waiting for a failure should not wake
    /// that often.
    failed: watch::Receiver<Option<String>>,
    /// Membership and addresses.
    pub directory: Arc<Directory>,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
    /// Where snapshots streamed from the leader arrive (served on the raft port).
    pub snapshot_receiver: Arc<SnapshotReceiver>,
    /// This node's raft URL.
    pub raft_url: String,
}

/// A started node: the handle, and the driver task to wait for on shutdown.
pub struct Node {
    /// The handle for the API.
    pub handle: NodeHandle,
    driver: tokio::task::JoinHandle<Result<()>>,
}

impl Node {
    /// Opens the data directory, replays the WAL and starts the driver thread and the peer
    /// senders (on the current tokio runtime).
    pub fn start(config: NodeConfig) -> Result<Node> {
        let identity = Identity {
            node_id: config.id.clone(),
            cluster_id: config.cluster_id.clone(),
            voters: config.voters(),
        };
        let data_dir = DataDir::open(&config.data_dir, &identity)?;
        let options = wal::Options {
            segment_bytes_max: config.segment_bytes_max,
            ..Default::default()
        };
        let replay_started = std::time::Instant::now();
        let (mut wal, recovered) = Wal::open(&data_dir.wal_dir(), options)?;
        tracing::info!(
            entries = recovered.entries.len(),
            replay_ms = replay_started.elapsed().as_millis() as u64,
            "replayed the WAL"
        );
        if let Some(repaired) = &recovered.repaired {
            tracing::warn!(%repaired, "repaired a torn WAL tail");
        }
        let snapshot_path = data_dir.snapshot_dir();
        let snapshot_dir = Arc::new(SnapshotDir::open(&snapshot_path, config.snapshots_kept)?);
        let rebuilt = recover::rebuild(
            &snapshot_dir,
            &snapshot_path,
            &mut wal,
            recovered,
            &config.snapshot_policy,
        )?;
        let metrics = Arc::new(Metrics::new());
        let directory = Arc::new(Directory::new(
            config.id.clone(),
            config.cluster_id.clone(),
            config.client_url.clone(),
            config.peers.clone(),
        ));
        let raft = raft::Raft::new(raft_config(&config), rebuilt.restore)?;
        let snapshot_index = rebuilt.snapshot.as_ref().map_or(0, |info| info.meta.index);
        let (status_sender, status) = watch::channel(NodeStatus {
            raft: raft.status(),
            state_hash: rebuilt.store.state_hash(),
            keys: rebuilt.store.len(),
            wal_bytes: wal.size_bytes(),
            snapshot_index,
            failed: None,
        });
        let (failed_sender, failed) = watch::channel(None);
        let reads = Arc::new(ReadBatch::default());
        let store = Arc::new(RwLock::new(rebuilt.store));
        let (events, receiver) = mpsc::channel(EVENTS_MAX);
        let peers = Arc::new(Peers::spawn(
            directory.clone(),
            metrics.clone(),
            &tokio::runtime::Handle::current(),
        ));
        let storage = storage::Storage::start(
            &config.id,
            wal,
            peers.clone(),
            events.clone(),
            metrics.clone(),
        )?;
        let snapshot_receiver = Arc::new(SnapshotReceiver::new(snapshot_dir.clone()));
        let parts = driver::Parts {
            raft,
            storage,
            data_dir,
            store: store.clone(),
            events: receiver,
            events_sender: events.clone(),
            peers,
            voters: config.voters(),
            snapshot_dir,
            snapshot_receiver: snapshot_receiver.clone(),
            snapshot_policy: config.snapshot_policy,
            status: status_sender,
            failed: failed_sender,
            reads: reads.clone(),
            metrics: metrics.clone(),
            tick: config.tick,
        };
        let snapshots = snapshots::SnapshotState {
            latest: rebuilt
                .snapshot
                .and_then(|info| snapshots::Held::offered(&parts.snapshot_dir, info)),
            ..Default::default()
        };
        let driver = tokio::spawn(driver::Driver::new(parts, snapshots).run());
        let handle = NodeHandle {
            events,
            reads,
            store,
            status,
            failed,
            directory,
            metrics,
            snapshot_receiver,
            raft_url: config.raft_url.clone(),
        };
        Ok(Node { handle, driver })
    }

    /// Asks the driver to stop and waits for it (the WAL thread's queued writes included).
    /// Returns the error that stopped it, if any.
    ///
    /// Waits for room in the event queue rather than failing on a full one: a lost request
    /// would leave the driver running.
    pub async fn shutdown(self) -> Result<()> {
        // An error means the driver is already gone; waiting for it reports why.
        let _ = self.handle.events.send(Event::Shutdown).await;
        self.driver
            .await
            .unwrap_or_else(|_| Err(Error::Unavailable("driver panicked".into())))
    }
}

fn raft_config(config: &NodeConfig) -> raft::Config {
    raft::Config {
        id: config.id.clone(),
        voters: config.voters(),
        election_timeout_ticks: config.election_timeout_ticks,
        heartbeat_interval_ticks: config.heartbeat_interval_ticks,
        seed: config.seed,
        ..Default::default()
    }
}

impl NodeHandle {
    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.directory.id
    }

    /// The latest published status.
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// Read access to the store. Hold it briefly: the driver needs the write lock to apply.
    pub fn store(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().expect("store lock poisoned")
    }

    /// Replicates a write and waits until it is committed and applied, or the deadline.
    ///
    /// While no leader is known (an election is running) it waits for one rather than
    /// failing at once; if another node leads, it returns `NotLeader` with that node.
    pub async fn propose(&self, command: &Command, timeout: Duration) -> Result<Outcome> {
        let bytes = command.encode();
        let deadline = tokio::time::Instant::now() + timeout;
        let attempt = Attempt {
            timeout: None,
            timeout_message: TIMEOUT_MESSAGE,
        };
        self.until_leader_known(deadline, attempt, |reply| {
            self.submit(Event::Propose {
                command: bytes.clone(),
                reply,
            })
        })
        .await
    }

    /// Waits until a linearizable read may be served from the local store: the read index
    /// was confirmed by a quorum and this node has applied up to it (thesis §6.4).
    ///
    /// Concurrent reads share one read index: a read joins the open batch if the driver
    /// has not taken it yet, and otherwise opens a new one and wakes the driver. That is
    /// safe because the driver records the read index only when it takes the batch, which
    /// is after every read in it arrived; and it costs the driver one event and the core
    /// one read per batch, not per request.
    pub async fn read_barrier(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let attempt = Attempt {
            timeout: Some(READ_ATTEMPT_TIMEOUT),
            timeout_message: "timed out waiting for a quorum to confirm the read index",
        };
        self.until_leader_known(deadline, attempt, |reply| self.join_reads(reply))
            .await
    }

    /// Adds a read barrier to the open batch, or opens one and tells the driver.
    fn join_reads(&self, reply: oneshot::Sender<Result<()>>) -> Result<()> {
        let mut open = self.reads.lock().expect("read batch lock poisoned");
        if let Some(waiters) = open.as_mut() {
            waiters.push(reply);
            return Ok(());
        }
        // Under the lock, so that no read joins a batch the driver will never hear of.
        self.submit(Event::Read)?;
        *open = Some(vec![reply]);
        Ok(())
    }

    /// Submits a request until it gets an answer other than "no leader known", waiting for a
    /// leader in between, and (for idempotent requests) re-submitting an attempt that got no
    /// answer in time.
    async fn until_leader_known<T>(
        &self,
        deadline: tokio::time::Instant,
        attempt: Attempt,
        submit: impl Fn(oneshot::Sender<Result<T>>) -> Result<()>,
    ) -> Result<T> {
        let mut status = self.status.clone();
        loop {
            status.mark_unchanged();
            let (reply, result) = oneshot::channel();
            submit(reply)?;
            let attempt_deadline = match attempt.timeout {
                Some(timeout) => deadline.min(tokio::time::Instant::now() + timeout),
                None => deadline,
            };
            let outcome = match tokio::time::timeout_at(attempt_deadline, result).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => return Err(self.stopped_error()),
                Err(_) if attempt_deadline < deadline => continue,
                Err(_) => return Err(Error::Unavailable(attempt.timeout_message.into())),
            };
            match outcome {
                Err(Error::NotLeader { leader: None }) => {
                    wait_for_leader(&mut status, deadline).await?;
                }
                other => return other,
            }
        }
    }

    fn submit(&self, event: Event) -> Result<()> {
        self.events.try_send(event).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => {
                Error::Unavailable("node overloaded; retry later".into())
            }
            mpsc::error::TrySendError::Closed(_) => self.stopped_error(),
        })
    }

    fn stopped_error(&self) -> Error {
        match &self.status.borrow().failed {
            Some(reason) => Error::Unavailable(format!("node stopped: {reason}")),
            None => Error::ShuttingDown,
        }
    }

    /// Waits until the driver stops because of an error, and returns it.
    pub async fn failure(&self) -> String {
        let mut failed = self.failed.clone();
        match failed.wait_for(|failed| failed.is_some()).await {
            Ok(failed) => failed.clone().unwrap_or_default(),
            Err(_) => "driver stopped".to_string(),
        }
    }

    /// Takes a snapshot now and waits until it is durable (the WAL is compacted after it).
    pub async fn take_snapshot(&self, timeout: Duration) -> Result<SnapshotInfo> {
        let (reply, result) = oneshot::channel();
        self.submit(Event::TakeSnapshot { reply })?;
        match tokio::time::timeout(timeout, result).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.stopped_error()),
            Err(_) => Err(Error::Unavailable(
                "snapshot still running after the deadline".into(),
            )),
        }
    }

    /// Hands a batch of peer messages to the driver; false if its queue is full (the batch
    /// is dropped, counted in `peer_messages_refused`, and Raft resends what matters).
    pub fn deliver(&self, messages: Vec<Message>) -> bool {
        if messages.is_empty() {
            return true;
        }
        let Err(error) = self.events.try_send(Event::Messages(messages)) else {
            return true;
        };
        let Event::Messages(refused) = error.into_inner() else {
            unreachable!("try_send hands back the event it was given")
        };
        let labels = PeerLabels {
            peer: refused[0].from.clone(),
        };
        let count = refused.len() as u64;
        self.metrics
            .peer_messages_refused
            .get_or_create(&labels)
            .inc_by(count);
        false
    }

    /// The client URL of a node, if known.
    pub fn client_url(&self, id: &str) -> Option<String> {
        self.directory.client_url(id)
    }

    /// The current role, term and leader, from the latest status.
    pub fn role_term_leader(&self) -> (Role, Term, Option<NodeId>) {
        let status = self.status.borrow();
        (
            status.raft.role,
            status.raft.term,
            status.raft.leader.clone(),
        )
    }

    /// The last applied index.
    pub fn applied_index(&self) -> Index {
        self.store().applied_index()
    }
}

/// How one request to the driver is attempted.
struct Attempt {
    /// Give up on one attempt after this long and submit again (idempotent requests only).
    timeout: Option<Duration>,
    /// The `503` message when the overall deadline passes.
    timeout_message: &'static str,
}

/// How long one linearizable read attempt may wait before it is asked again. A read
/// forwarded to a leader that died, or whose message was lost, is otherwise only failed at
/// the request deadline (the raft core does not time reads out); asking again goes to the
/// current leader. Reads take milliseconds when the cluster is healthy.
const READ_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// Message of a `503` that may hide an applied write.
pub const TIMEOUT_MESSAGE: &str =
    "timed out waiting for commit; the write may or may not have been applied";

/// Waits for a status published after the core said it knows no leader, in which a leader
/// is known (or the node failed).
async fn wait_for_leader(
    status: &mut watch::Receiver<NodeStatus>,
    deadline: tokio::time::Instant,
) -> Result<()> {
    loop {
        match tokio::time::timeout_at(deadline, status.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Error::ShuttingDown),
            Err(_) => {
                return Err(Error::Unavailable(
                    "no leader elected within the deadline".into(),
                ));
            }
        }
        let current = status.borrow_and_update();
        if current.raft.leader.is_some() || current.failed.is_some() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::raft::Body;

    /// A single-node configuration with kvnode's defaults, from the real flag parser.
    fn config(dir: &std::path::Path) -> NodeConfig {
        let data = dir.join("n1");
        let argv = ["kvnode", "--id", "n1", "--data", data.to_str().unwrap()];
        let args = crate::config::Args::try_parse_from(argv).unwrap();
        crate::config::resolve(&args, |_| None).unwrap().node
    }

    #[tokio::test]
    async fn messages_the_driver_cannot_take_are_counted_as_refused() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(config(dir.path())).unwrap();
        let handle = node.handle.clone();
        let message = Message {
            from: "n2".into(),
            to: "n1".into(),
            term: 1,
            body: Body::PreVoteResponse { granted: false },
        };
        assert!(
            handle.deliver(Vec::new()),
            "nothing to deliver is never refused"
        );
        node.shutdown().await.unwrap();
        assert!(!handle.deliver(vec![message.clone(), message.clone(), message]));
        let metrics = handle.metrics.encode();
        assert!(
            metrics.contains("kvstore_peer_messages_refused_total{peer=\"n2\"} 3"),
            "{metrics}"
        );
    }
}
