//! The driver loop: see the module doc of [`crate::node`] for the protocol it follows.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::snapshots::{SnapshotPolicy, SnapshotState};
use super::storage::{Job, Storage, UNPERSISTED_BYTES_MAX};
use super::{Event, NodeStatus};
use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::raft::{Entry, HardState, Index, Message, NodeId, Raft, ReadState, Role, Term};
use crate::snapshot::SnapshotDir;
use crate::store::{Outcome, Store};
use crate::transport::{Peers, SnapshotReceiver};

/// Events handled per iteration at most before the driver persists and replies. Bounds the
/// latency one iteration adds while still batching many proposals into one fsync.
pub const EVENTS_PER_ITERATION_MAX: usize = 4096;

/// Times the driver yields at most before an iteration while events keep arriving.
const YIELDS_MAX: usize = 4;

/// Ticks the driver catches up at most after a stall (a slow fsync, a paused process).
/// Beyond this it skips ahead rather than firing a burst of elections and heartbeats.
const TICKS_CATCH_UP_MAX: u32 = 4;

/// What the driver is built from.
pub(super) struct Parts {
    pub raft: Raft,
    /// The WAL, on its own thread. Before `data_dir`: dropping it waits for the thread.
    pub storage: Storage,
    /// Never read: held so the data directory stays locked for as long as the driver runs.
    #[allow(dead_code)]
    pub data_dir: DataDir,
    pub store: Arc<RwLock<Store>>,
    pub events: mpsc::Receiver<Event>,
    /// For background work (the snapshot thread) to report back.
    pub events_sender: mpsc::Sender<Event>,
    pub peers: Arc<Peers>,
    pub voters: Vec<NodeId>,
    pub snapshot_dir: Arc<SnapshotDir>,
    pub snapshot_receiver: Arc<SnapshotReceiver>,
    pub snapshot_policy: SnapshotPolicy,
    pub status: watch::Sender<NodeStatus>,
    /// The open batch of read barriers the API fills and [`Event::Read`] announces.
    pub reads: Arc<super::ReadBatch>,
    /// Set once, when the driver stops because of an error.
    pub failed: watch::Sender<Option<String>>,
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
    /// Batches of read barriers handed to the core, by context.
    reads_requested: HashMap<u64, Vec<oneshot::Sender<Result<()>>>>,
    /// Batches whose read index is known, waiting for apply to reach it.
    reads_confirmed: Vec<(Index, Vec<oneshot::Sender<Result<()>>>)>,
    /// The next read batch's context; counts from [`first_read_context`].
    next_read_context: u64,
    /// A hard state newer than the WAL's only in its commit index, not yet written (see
    /// [`Driver::hard_state_to_save`]).
    commit_unsaved: Option<HardState>,
    next_tick: Instant,
    /// Fires at `next_tick`; one timer, reset per tick rather than made per iteration.
    tick_timer: Pin<Box<tokio::time::Sleep>>,
    /// Events taken from the queue in one iteration (kept for its allocation).
    received: Vec<Event>,
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
            next_read_context: first_read_context(),
            commit_unsaved: None,
            next_tick,
            tick_timer: Box::pin(tokio::time::sleep_until(next_tick.into())),
            received: Vec::with_capacity(EVENTS_PER_ITERATION_MAX),
            leader: None,
            shutdown: false,
        }
    }

    /// Runs until shutdown or a fail-stop error.
    pub(super) async fn run(mut self) -> Result<()> {
        let mut result = self.run_loop().await;
        if let Err(error) = &result {
            // Writes applied earlier in the failed iteration did commit: their answers are
            // true, and a client should not be told "outcome unknown" for them.
            self.send_replies();
            self.publish_failure(error);
        }
        // From here on a request fails at once (its queue is closed) rather than waiting
        // for an answer no one will give, such as a read that opens a batch no one takes.
        self.parts.events.close();
        // Whatever was handed to the WAL thread is written (and its messages sent) first;
        // a write that fails meanwhile stops the node like any other WAL error.
        blocking(|| self.parts.storage.stop());
        if result.is_ok()
            && let Err(error) = self.parts.storage.poll()
        {
            self.publish_failure(&error);
            result = Err(error);
        }
        // Reads that joined a batch before the queue closed learn now that the node stopped.
        self.parts
            .reads
            .lock()
            .expect("read batch lock poisoned")
            .take();
        result
    }

    fn publish_failure(&self, error: &Error) {
        tracing::error!(%error, "driver stopped: the node can no longer make progress");
        let reason = error.to_string();
        self.parts
            .status
            .send_modify(|status| status.failed = Some(reason.clone()));
        self.parts.failed.send_replace(Some(reason));
    }

    async fn run_loop(&mut self) -> Result<()> {
        while !self.shutdown {
            self.receive_events().await?;
            self.poll_storage()?;
            self.tick();
            while self.parts.raft.has_ready() {
                self.handle_ready()?;
            }
            self.release_refused_offers();
            self.answer();
        }
        tracing::info!("driver stopped on request");
        Ok(())
    }

    /// Waits for the first event or the next tick, then drains the queue.
    async fn receive_events(&mut self) -> Result<()> {
        let mut received = std::mem::take(&mut self.received);
        let count = tokio::select! {
            biased;
            count = self.parts.events.recv_many(&mut received, EVENTS_PER_ITERATION_MAX) => count,
            () = &mut self.tick_timer => {
                self.received = received;
                return Ok(());
            }
        };
        // `count` is never 0: the driver holds a sender itself, so the queue stays open.
        if count < EVENTS_PER_ITERATION_MAX {
            // Let the tasks that are ready to run (HTTP handlers with their proposals, peer
            // streams) run first, then take what they queued too: one iteration, one append
            // per follower and one WAL write for all of it. Otherwise a handler's wake-up
            // runs the driver at once and every proposal becomes an append of its own.
            for _ in 0..YIELDS_MAX {
                tokio::task::yield_now().await;
                let before = received.len();
                while received.len() < EVENTS_PER_ITERATION_MAX {
                    match self.parts.events.try_recv() {
                        Ok(event) => received.push(event),
                        Err(_) => break,
                    }
                }
                if received.len() == before {
                    break;
                }
            }
        }
        for event in received.drain(..) {
            self.handle_event(event)?;
        }
        self.received = received;
        Ok(())
    }

    fn handle_event(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Messages(messages) => {
                for message in messages {
                    self.step(message);
                }
            }
            Event::Propose { command, reply } => self.propose(command, reply),
            Event::Read => self.read(),
            Event::TakeSnapshot { reply } => {
                let applied = self.store_applied_index();
                self.snapshots.waiters.push((applied, reply));
                self.maybe_snapshot(true);
            }
            Event::SnapshotDone(result) => self.snapshot_done(result)?,
            // Only a wake-up: the loop polls the WAL thread after every drain.
            Event::Storage => {}
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
        if self.parts.storage.unpersisted_bytes() > UNPERSISTED_BYTES_MAX {
            let overloaded = "node overloaded: its disk is behind; retry later";
            let _ = reply.send(Err(Error::Unavailable(overloaded.into())));
            return;
        }
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

    /// Takes the open batch of read barriers and asks the core for one read index for it.
    fn read(&mut self) {
        let taken = self
            .parts
            .reads
            .lock()
            .expect("read batch lock poisoned")
            .take();
        let Some(waiters) = taken else {
            return;
        };
        let context = self.next_read_context;
        self.next_read_context = context.wrapping_add(1);
        match self.parts.raft.read_index(context) {
            Ok(()) => {
                self.reads_requested.insert(context, waiters);
            }
            Err(Error::NotLeader { leader }) => answer_all(waiters, || {
                Err(Error::NotLeader {
                    leader: leader.clone(),
                })
            }),
            Err(error) => answer_all(waiters, || Err(Error::Unavailable(error.to_string()))),
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
            self.tick_timer.as_mut().reset(self.next_tick.into());
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
        self.send_replies();
    }

    fn send_replies(&mut self) {
        for (reply, result) in self.replies.drain(..) {
            let _ = reply.send(result);
        }
    }

    /// Tells the core what the WAL thread made durable since the last poll.
    fn poll_storage(&mut self) -> Result<()> {
        if let Some((index, term)) = self.parts.storage.poll()?.persisted {
            self.parts.raft.persisted(index, term);
        }
        Ok(())
    }

    /// Handles one `Ready` in the order the node module doc describes.
    fn handle_ready(&mut self) -> Result<()> {
        let ready = self.parts.raft.ready();
        self.send(ready.messages);
        if let Some(meta) = &ready.snapshot {
            self.install_snapshot(meta)?;
        }
        // The core hands out only committed entries that are already durable here, so they
        // never wait for this ready's write (of newer entries).
        self.apply(ready.committed_entries);
        self.confirm_reads(ready.read_states, ready.aborted_reads);
        let must_save = !ready.entries.is_empty() || ready.snapshot.is_some();
        let hard_state = self.hard_state_to_save(ready.hard_state, must_save);
        if hard_state.is_none() && ready.entries.is_empty() {
            if ready.persisted_messages.is_empty() {
                return Ok(());
            }
            if self.parts.storage.idle() {
                // Nothing of this ready to write and nothing earlier still being written:
                // what these messages reveal is durable already.
                self.send(ready.persisted_messages);
                return Ok(());
            }
        }
        let job = Job::Save {
            hard_state,
            entries: ready.entries,
            messages: ready.persisted_messages,
        };
        if self.parts.raft.role() != Role::Leader && self.parts.storage.idle() {
            // A follower's reply waits for this write anyway: made here, it costs no
            // wake-up of the WAL thread and none back (see the storage module doc).
            self.parts.storage.run_here(job)?;
            return self.poll_storage();
        }
        self.parts.storage.submit(job)
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
        let saved = self.parts.storage.hard_state();
        if must_save || state.term != saved.term || state.vote != saved.vote {
            self.commit_unsaved = None;
            return Some(state);
        }
        self.commit_unsaved = Some(state);
        None
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
            if let Some(waiters) = self.reads_requested.remove(&context) {
                self.reads_confirmed.push((index, waiters));
            }
        }
        for context in aborted {
            if let Some(waiters) = self.reads_requested.remove(&context) {
                // The callers wait for a (new) leader and ask again.
                answer_all(waiters, || Err(Error::NotLeader { leader: None }));
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
        for (_, waiters) in ready {
            answer_all(waiters, || Ok(()));
        }
    }

    fn publish_status(&mut self) {
        let raft = self.parts.raft.status();
        let metrics = &self.parts.metrics;
        metrics.term.set(raft.term as i64);
        metrics.is_leader.set(i64::from(raft.role == Role::Leader));
        self.parts
            .peers
            .set_leading((raft.role == Role::Leader).then_some(raft.term));
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
        let wal_bytes = self.parts.storage.wal_bytes();
        let snapshot_index = self.snapshots.latest_index();
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

/// Where this boot's read contexts start. A follower matches the leader's answer to a read
/// it forwarded by context alone, and the leader may still hold a read that the follower
/// forwarded before it restarted (a read round waits for a quorum of acknowledgements,
/// which a partition can hold back): were every boot to count from 1, the answer to that
/// old read, with a read index from before the restart, could complete a new read that
/// must see writes acknowledged since, and the follower would serve a stale value. So each
/// boot starts at a random point of the 64-bit space (std's `RandomState` is keyed from
/// the operating system's randomness), and two boots' ranges overlap with negligible
/// probability; etcd's request ids carry a timestamp for the same reason.
fn first_read_context() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}

/// Sends each waiter of a read batch its answer.
fn answer_all(waiters: Vec<oneshot::Sender<Result<()>>>, answer: impl Fn() -> Result<()>) {
    for waiter in waiters {
        let _ = waiter.send(answer());
    }
}

/// Runs blocking work (a thread join, a large file read) on the driver's task without
/// stalling the other tasks of its worker: the multi-threaded runtime moves them elsewhere.
pub(super) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_contexts_start_anew_at_each_boot() {
        let starts: std::collections::HashSet<u64> =
            (0..16).map(|_| first_read_context()).collect();
        assert_eq!(starts.len(), 16, "each start is drawn afresh");
    }
}
