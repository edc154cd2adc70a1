//! The driver loop: see the module doc of [`crate::node`] for the protocol it follows.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::snapshots::{SnapshotPolicy, SnapshotState};
use super::{Event, NodeStatus};
use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::raft::{Entry, HardState, Index, Message, NodeId, Raft, ReadState, Role, Term};
use crate::snapshot::SnapshotDir;
use crate::store::{Outcome, Store};
use crate::transport::{Peers, SnapshotReceiver};
use crate::wal::Wal;

/// Events handled per iteration at most before the driver persists and replies. Bounds the
/// latency one iteration adds while still batching many proposals into one fsync.
pub const EVENTS_PER_ITERATION_MAX: usize = 4096;

/// Ticks the driver catches up at most after a stall (a slow fsync, a paused process).
/// Beyond this it skips ahead rather than firing a burst of elections and heartbeats.
const TICKS_CATCH_UP_MAX: u32 = 4;

/// What the driver is built from.
pub(super) struct Parts {
    pub raft: Raft,
    pub wal: Wal,
    /// Never read: held so the data directory stays locked for as long as the driver runs.
    #[allow(dead_code)]
    pub data_dir: DataDir,
    pub store: Arc<RwLock<Store>>,
    pub events: mpsc::Receiver<Event>,
    /// For background work (the snapshot thread) to report back.
    pub events_sender: mpsc::SyncSender<Event>,
    pub peers: Peers,
    pub voters: Vec<NodeId>,
    pub snapshot_dir: Arc<SnapshotDir>,
    pub snapshot_receiver: Arc<SnapshotReceiver>,
    pub snapshot_policy: SnapshotPolicy,
    pub status: watch::Sender<NodeStatus>,
    pub metrics: Arc<Metrics>,
    pub tick: Duration,
}

/// A client write waiting for its entry to be applied.
struct Proposal {
    term: Term,
    reply: oneshot::Sender<Result<Outcome>>,
}

/// The driver: owns the raft core and the WAL.
pub(super) struct Driver {
    pub(super) parts: Parts,
    pub(super) snapshots: SnapshotState,
    /// Proposals by log index.
    proposals: BTreeMap<Index, Proposal>,
    /// Answers to proposals applied in this iteration, sent after the status is published.
    replies: Vec<(oneshot::Sender<Result<Outcome>>, Result<Outcome>)>,
    /// Read requests handed to the core, by context.
    reads_requested: HashMap<u64, oneshot::Sender<Result<()>>>,
    /// Reads whose index is known, waiting for apply to reach it.
    reads_confirmed: Vec<(Index, oneshot::Sender<Result<()>>)>,
    next_read_context: u64,
    /// A hard state newer than the WAL's only in its commit index, not yet written (see
    /// [`Driver::hard_state_to_save`]).
    commit_unsaved: Option<HardState>,
    next_tick: Instant,
    leader: Option<NodeId>,
    shutdown: bool,
}

impl Driver {
    pub(super) fn new(parts: Parts, snapshots: SnapshotState) -> Driver {
        let next_tick = Instant::now() + parts.tick;
        Driver {
            parts,
            snapshots,
            proposals: BTreeMap::new(),
            replies: Vec::new(),
            reads_requested: HashMap::new(),
            reads_confirmed: Vec::new(),
            next_read_context: 1,
            commit_unsaved: None,
            next_tick,
            leader: None,
            shutdown: false,
        }
    }

    /// Runs until shutdown or a fail-stop error.
    pub(super) fn run(mut self) -> Result<()> {
        let result = self.run_loop();
        if let Err(error) = &result {
            tracing::error!(%error, "driver stopped: the node can no longer make progress");
            let reason = error.to_string();
            self.parts
                .status
                .send_modify(|status| status.failed = Some(reason));
        }
        result
    }

    fn run_loop(&mut self) -> Result<()> {
        while !self.shutdown {
            self.receive_events()?;
            self.tick();
            while self.parts.raft.has_ready() {
                self.handle_ready()?;
            }
            self.answer();
        }
        tracing::info!("driver stopped on request");
        Ok(())
    }

    /// Waits for the first event or the next tick, then drains the queue.
    fn receive_events(&mut self) -> Result<()> {
        let timeout = self.next_tick.saturating_duration_since(Instant::now());
        match self.parts.events.recv_timeout(timeout) {
            Ok(event) => self.handle_event(event)?,
            Err(mpsc::RecvTimeoutError::Timeout) => return Ok(()),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.shutdown = true;
                return Ok(());
            }
        }
        for _ in 1..EVENTS_PER_ITERATION_MAX {
            match self.parts.events.try_recv() {
                Ok(event) => self.handle_event(event)?,
                Err(_) => break,
            }
        }
        Ok(())
    }

    fn handle_event(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Message(message) => self.step(message),
            Event::Propose { command, reply } => self.propose(command, reply),
            Event::Read { reply } => self.read(reply),
            Event::TakeSnapshot { reply } => {
                let applied = self.store_applied_index();
                self.snapshots.waiters.push((applied, reply));
                self.maybe_snapshot(true);
            }
            Event::SnapshotDone(result) => self.snapshot_done(result)?,
            Event::Shutdown => self.shutdown = true,
        }
        Ok(())
    }

    fn step(&mut self, message: Message) {
        if !self.may_step(&message) {
            return;
        }
        let from = message.from.clone();
        if let Err(error) = self.parts.raft.step(message) {
            tracing::warn!(%from, %error, "rejected raft message");
        }
    }

    fn propose(&mut self, command: Vec<u8>, reply: oneshot::Sender<Result<Outcome>>) {
        match self.parts.raft.propose(command) {
            Ok((index, term)) => {
                self.parts.metrics.proposals.inc();
                self.proposals.insert(index, Proposal { term, reply });
            }
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }

    fn read(&mut self, reply: oneshot::Sender<Result<()>>) {
        let context = self.next_read_context;
        self.next_read_context += 1;
        match self.parts.raft.read_index(context) {
            Ok(()) => {
                self.reads_requested.insert(context, reply);
            }
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let mut ticks = 0;
        while now >= self.next_tick {
            if ticks == TICKS_CATCH_UP_MAX {
                self.next_tick = now + self.parts.tick;
                break;
            }
            self.parts.raft.tick();
            self.next_tick += self.parts.tick;
            ticks += 1;
        }
        if ticks > 0 {
            // Forget requests whose HTTP handler has given up (deadline passed).
            self.proposals
                .retain(|_, proposal| !proposal.reply.is_closed());
        }
    }

    /// Publishes the status, then answers the proposals applied so far: only now, so a
    /// client that got its answer sees at least that state in /raft/status, and outside the
    /// store lock so woken readers do not wait on it.
    fn answer(&mut self) {
        self.publish_status();
        for (reply, result) in self.replies.drain(..) {
            let _ = reply.send(result);
        }
    }

    /// Handles one `Ready` in the order the node module doc describes.
    fn handle_ready(&mut self) -> Result<()> {
        let ready = self.parts.raft.ready();
        self.send(ready.messages);
        if let Some(meta) = &ready.snapshot {
            self.install_snapshot(meta)?;
        }
        // The core hands out only committed entries that are already durable here, so they
        // need not wait for this ready's fsync (of newer entries): apply them and answer
        // their clients first. Under load this took a whole fsync off every write's latency.
        self.apply(ready.committed_entries);
        self.confirm_reads(ready.read_states, ready.aborted_reads);
        let must_save = !ready.entries.is_empty() || ready.snapshot.is_some();
        let hard_state = self.hard_state_to_save(ready.hard_state, must_save);
        if hard_state.is_some() || !ready.entries.is_empty() {
            if !self.replies.is_empty() {
                self.answer();
            }
            let started = Instant::now();
            self.parts.wal.save(hard_state.as_ref(), &ready.entries)?;
            self.parts
                .metrics
                .wal_fsync_seconds
                .observe(started.elapsed().as_secs_f64());
            self.parts
                .metrics
                .wal_bytes
                .set(self.parts.wal.size_bytes() as i64);
        }
        self.send(ready.persisted_messages);
        if let Some(last) = ready.entries.last() {
            self.parts.raft.persisted(last.index, last.term);
        }
        Ok(())
    }

    /// The hard state to write with this ready's entries, if any. A change of the commit
    /// index alone does not get a write and an fdatasync of its own: the persisted commit
    /// may lag the true one (see [`HardState::commit`]), so it is held back and written
    /// with the next save that happens anyway, like etcd's `MustSync`. A new term or vote
    /// is saved at once, before the messages that depend on it.
    fn hard_state_to_save(
        &mut self,
        ready: Option<HardState>,
        must_save: bool,
    ) -> Option<HardState> {
        let Some(state) = ready else {
            return if must_save {
                self.commit_unsaved.take()
            } else {
                None
            };
        };
        let saved = self.parts.wal.hard_state();
        if must_save || state.term != saved.term || state.vote != saved.vote {
            self.commit_unsaved = None;
            return Some(state);
        }
        self.commit_unsaved = Some(state);
        None
    }

    fn send(&self, messages: Vec<Message>) {
        for message in messages {
            self.send_message(message);
        }
    }

    /// The store's applied index.
    pub(super) fn store_applied_index(&self) -> Index {
        self.parts
            .store
            .read()
            .expect("store lock poisoned")
            .applied_index()
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last().map(|entry| entry.index) else {
            return;
        };
        {
            let mut store = self.parts.store.write().expect("store lock poisoned");
            for entry in &entries {
                self.snapshots.bytes_since += entry.command.len() as u64;
                let outcome = store.apply(entry);
                if let Some(proposal) = self.proposals.remove(&entry.index) {
                    let result = if proposal.term == entry.term {
                        Ok(outcome)
                    } else {
                        Err(Error::Unavailable(
                            "leadership changed before the write committed; it was not applied"
                                .into(),
                        ))
                    };
                    self.replies.push((proposal.reply, result));
                }
            }
        }
        self.parts.raft.applied(last);
        self.parts.metrics.commits.inc_by(entries.len() as u64);
        self.parts.metrics.applied_index.set(last as i64);
        self.release_reads();
        self.maybe_snapshot(false);
    }

    fn confirm_reads(&mut self, confirmed: Vec<ReadState>, aborted: Vec<u64>) {
        for ReadState { context, index } in confirmed {
            if let Some(reply) = self.reads_requested.remove(&context) {
                self.reads_confirmed.push((index, reply));
            }
        }
        for context in aborted {
            if let Some(reply) = self.reads_requested.remove(&context) {
                // The caller waits for a (new) leader and asks again.
                let _ = reply.send(Err(Error::NotLeader { leader: None }));
            }
        }
        self.release_reads();
    }

    fn release_reads(&mut self) {
        if self.reads_confirmed.is_empty() {
            return;
        }
        let applied = self
            .parts
            .store
            .read()
            .expect("store lock poisoned")
            .applied_index();
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .reads_confirmed
            .drain(..)
            .partition(|(index, _)| *index <= applied);
        self.reads_confirmed = waiting;
        for (_, reply) in ready {
            let _ = reply.send(Ok(()));
        }
    }

    fn publish_status(&mut self) {
        let raft = self.parts.raft.status();
        let metrics = &self.parts.metrics;
        metrics.term.set(raft.term as i64);
        metrics.is_leader.set(i64::from(raft.role == Role::Leader));
        if raft.leader != self.leader {
            if raft.leader.is_some() {
                metrics.leader_changes.inc();
                tracing::info!(leader = ?raft.leader, term = raft.term, "leader changed");
            }
            self.leader = raft.leader.clone();
        }
        let (state_hash, keys) = {
            let store = self.parts.store.read().expect("store lock poisoned");
            (store.state_hash(), store.len())
        };
        let wal_bytes = self.parts.wal.size_bytes();
        let snapshot_index = self
            .snapshots
            .latest
            .as_ref()
            .map_or(0, |info| info.meta.index);
        self.parts.status.send_replace(NodeStatus {
            raft,
            state_hash,
            keys,
            wal_bytes,
            snapshot_index,
            failed: None,
        });
    }
}
