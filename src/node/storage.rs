//! The WAL thread: every write to the WAL, off the driver thread.
//!
//! # Why a thread of its own
//!
//! An fdatasync takes 0.15-0.5 ms here. When the driver made it in place, nothing else
//! happened on the node meanwhile: a leader stepped its followers' answers, committed,
//! applied and answered clients only between two of its own fsyncs, so under load a write
//! waited for one or two fsyncs more than Raft requires. Now the driver hands each `Ready`'s
//! durable part to this thread as a [`Job`] and goes on; the leader commits as soon as a
//! majority has the entry durable, its own disk included or not (thesis §10.2.1: the
//! leader's write is just one of the replicas' writes). This is etcd's "async storage
//! writes".
//!
//! # Protocol
//!
//! 1. The driver submits jobs in `Ready` order. A [`Job::Save`] carries the hard state and
//!    entries to persist and the `persisted_messages` that MUST NOT leave before them.
//! 2. The thread takes every job queued and merges consecutive saves into one write and
//!    ONE fdatasync (group commit): the entries are spliced in order (a later save that
//!    starts at or below an earlier one's tail replaces that tail, as a conflict
//!    truncation does), the latest hard state wins (terms only grow, so an earlier term's
//!    vote no longer matters once a later term is durable). Resets and prefix truncations
//!    are done in their place, between merged saves.
//! 3. Only after the fdatasync returns: the merged saves' messages go to the peers, in
//!    order, straight from this thread; then [`Shared`] records the last durable entry
//!    and the count of finished jobs, and the driver is woken to call `Raft::persisted`.
//! 4. A WAL error is recorded in [`Shared`] and ends the thread (fail-stop). Nothing
//!    queued after it is written or sent.
//!
//! The thread never waits on the driver (it only `try_send`s a wake-up), so the driver
//! may block on nothing here: jobs queue without bound, and the driver bounds them itself
//! by refusing proposals while [`UNPERSISTED_BYTES_MAX`] of commands are still unwritten.
//!
//! # Followers write in place
//!
//! The thread is for the leader, whose own write runs beside its followers' and beside
//! the HTTP requests it keeps serving meanwhile. A follower has nothing to overlap: its
//! answer to an append waits for the write, and the next append waits for the answer. So
//! when the driver is not the leader and the thread has nothing queued
//! ([`Storage::idle`]), it runs the save itself ([`Storage::run_here`]): the same write,
//! the same fdatasync and then the same messages, on the driver's tokio worker, which
//! blocks for it. That saves, per append, the wake-up of the WAL thread and the wake-up of
//! the worker that the thread's reply and "done" cost, and the thread's own context
//! switches (on the 2-core machine of the README about a third of a follower's CPU per
//! append went to sleeping and waking). It does not use `block_in_place`: that hands the
//! worker's other tasks to another thread, the very wake-ups this avoids; what waits on
//! this worker meanwhile (the peer streams, a status request) waits for one fdatasync.
//! A slow disk delays such a follower's answers to heartbeats too, which the thread's
//! way did not; a follower whose disk stalls cannot acknowledge appends either way.
//!
//! A node that has just lost its leadership may still have saves queued: they go on
//! through the thread until it is idle, so nothing is overtaken. A job in place reports
//! like one on the thread (`done`), only without waking the driver, which polls right
//! after it.
//!
//! This is etcd's split too (its raft loop sends a leader's appends before the leader's
//! own save, and a follower's answers only after the save, in the same loop).
//!
//! Measured (3 nodes of one worker each on the README's 2-core machine, `wrk -t1 -c64`
//! puts, CPU from `/proc/PID/stat`, three alternating pairs): a follower's CPU per put
//! 3.1-3.3 µs against 3.4-4.5 µs, lower in every pair; the leader's the same (15.5-17.5
//! µs); puts/s and one client's p50 within the machine's noise (`scripts/bench-ab.sh`:
//! higher puts/s in 10 of 16 rounds, medians a few percent apart). Writing the leader's
//! own entries in place too was worse (fewer puts/s in 3 of 4 rounds, one client's p50 up
//! to 0.71 ms): its worker would stop serving clients for every fdatasync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use std::time::Instant;
use tokio::sync::mpsc as events;

use super::Event;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::raft::{Entry, HardState, Index, Message, Term};
use crate::transport::Peers;
use crate::wal::Wal;

/// Command bytes handed to the WAL thread and not yet durable, at most, before the driver
/// answers new proposals `503`: a disk that falls behind turns into quick refusals instead
/// of an ever longer queue in memory. 64 MiB is hundreds of fsync batches at full load.
pub const UNPERSISTED_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Work for the WAL thread, in `Ready` order.
pub(super) enum Job {
    /// Persist the hard state (if any) and entries, then send `messages`.
    Save {
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
        messages: Vec<Message>,
    },
    /// Discard the whole log; it restarts after `(index, term)` (a snapshot was installed).
    Reset { index: Index, term: Term },
    /// Drop whole segments up to `upto` (covered by a durable snapshot).
    TruncatePrefix { upto: Index },
}

/// What the WAL thread reports back.
#[derive(Default)]
pub(super) struct Shared {
    state: Mutex<Reported>,
    /// WAL bytes on disk after the last job.
    pub(super) wal_bytes: AtomicU64,
}

#[derive(Default)]
struct Reported {
    /// The last entry durable, if it changed since the driver last looked.
    persisted: Option<(Index, Term)>,
    /// Jobs finished so far.
    jobs_done: u64,
    /// Command bytes of finished saves so far.
    bytes_done: u64,
    /// Set when the WAL failed; the thread has stopped.
    failed: Option<Error>,
}

/// What the driver learns from [`Storage::poll`].
pub(super) struct Progress {
    /// The last entry made durable since the previous poll, if any.
    pub(super) persisted: Option<(Index, Term)>,
}

/// The driver's handle on the WAL thread.
pub(super) struct Storage {
    jobs: Option<mpsc::Sender<Job>>,
    writer: Arc<Mutex<Writer>>,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    jobs_submitted: u64,
    jobs_done: u64,
    bytes_submitted: u64,
    bytes_done: u64,
    /// The hard state of the latest save submitted (what the WAL will hold).
    hard_state: HardState,
}

impl Storage {
    /// Starts the WAL thread for node `id`. It wakes the driver through `events`.
    pub(super) fn start(
        id: &str,
        wal: Wal,
        peers: Arc<Peers>,
        events: events::Sender<Event>,
        metrics: Arc<Metrics>,
    ) -> Result<Storage> {
        let shared = Arc::new(Shared::default());
        shared.wal_bytes.store(wal.size_bytes(), Ordering::Relaxed);
        let hard_state = wal.hard_state().clone();
        let (jobs, queue) = mpsc::channel();
        let writer = Arc::new(Mutex::new(Writer {
            wal,
            peers,
            events,
            metrics,
            shared: shared.clone(),
        }));
        let thread_writer = writer.clone();
        let thread = std::thread::Builder::new()
            .name(format!("wal-{id}"))
            .spawn(move || run(thread_writer, queue))
            .map_err(|error| Error::io("spawn WAL thread", "", error))?;
        Ok(Storage {
            jobs: Some(jobs),
            writer,
            shared,
            thread: Some(thread),
            jobs_submitted: 0,
            jobs_done: 0,
            bytes_submitted: 0,
            bytes_done: 0,
            hard_state,
        })
    }

    /// Queues a job. Fails only if the thread has stopped (its error is in [`Storage::poll`]).
    pub(super) fn submit(&mut self, job: Job) -> Result<()> {
        self.record(&job);
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if !sent {
            return Err(self.failure());
        }
        Ok(())
    }

    /// Does a job on the caller's thread, blocking it for the write and the fdatasync
    /// (see "Followers write in place" in the module doc). Only when [`Storage::idle`], so
    /// it overtakes nothing queued; done when this returns, as the next poll reports.
    pub(super) fn run_here(&mut self, job: Job) -> Result<()> {
        assert!(
            self.idle(),
            "a job run in place while the WAL thread has jobs"
        );
        self.record(&job);
        let Ok(mut writer) = self.writer.lock() else {
            // The WAL thread panicked while writing.
            return Err(self.failure());
        };
        writer.handle(vec![job], false).inspect_err(|error| {
            tracing::error!(%error, "WAL write failed; the node stops");
        })
    }

    /// Notes a job submitted (to the thread or in place): one more job, the hard state the
    /// WAL will hold, the bytes it will write. A job that cannot be submitted stops the node,
    /// so it need not be taken back.
    fn record(&mut self, job: &Job) {
        self.jobs_submitted += 1;
        if let Job::Save {
            hard_state,
            entries,
            ..
        } = job
        {
            if let Some(state) = hard_state {
                self.hard_state = state.clone();
            }
            self.bytes_submitted += command_bytes(entries);
        }
    }

    /// What the thread finished since the last poll; `Err` once it failed.
    pub(super) fn poll(&mut self) -> Result<Progress> {
        let mut reported = self.shared.state.lock().expect("storage lock poisoned");
        if let Some(error) = reported.failed.take() {
            return Err(error);
        }
        self.jobs_done = reported.jobs_done;
        self.bytes_done = reported.bytes_done;
        Ok(Progress {
            persisted: reported.persisted.take(),
        })
    }

    /// Whether every job submitted has finished (as of the last poll).
    pub(super) fn idle(&self) -> bool {
        self.jobs_done == self.jobs_submitted
    }

    /// Command bytes submitted and not yet durable (as of the last poll).
    pub(super) fn unpersisted_bytes(&self) -> u64 {
        self.bytes_submitted - self.bytes_done
    }

    /// The hard state the WAL holds once every submitted job is done.
    pub(super) fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// WAL bytes on disk.
    pub(super) fn wal_bytes(&self) -> u64 {
        self.shared.wal_bytes.load(Ordering::Relaxed)
    }

    /// Lets the thread finish what is queued (fsyncs included) and waits for it.
    pub(super) fn stop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn failure(&self) -> Error {
        let mut reported = self.shared.state.lock().expect("storage lock poisoned");
        reported
            .failed
            .take()
            .unwrap_or_else(|| Error::Unavailable("the WAL thread stopped".into()))
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.stop();
    }
}

fn command_bytes(entries: &[Entry]) -> u64 {
    entries.iter().map(|entry| entry.command.len() as u64).sum()
}

/// The writing side: the WAL thread's, or the driver's for a job it runs in place.
struct Writer {
    wal: Wal,
    peers: Arc<Peers>,
    events: events::Sender<Event>,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
}

/// Consecutive saves merged into one write.
#[derive(Default)]
struct Merged {
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
    messages: Vec<Message>,
    jobs: u64,
    /// Command bytes of the jobs as submitted (spliced-away entries included), as the
    /// driver counted them.
    bytes: u64,
}

impl Merged {
    fn add(&mut self, hard_state: Option<HardState>, entries: Vec<Entry>, messages: Vec<Message>) {
        self.bytes += command_bytes(&entries);
        if hard_state.is_some() {
            self.hard_state = hard_state;
        }
        if let Some(first) = entries.first() {
            let keep = self
                .entries
                .iter()
                .take_while(|entry| entry.index < first.index)
                .count();
            self.entries.truncate(keep);
        }
        if self.entries.is_empty() {
            self.entries = entries;
        } else {
            self.entries.extend(entries);
        }
        if self.messages.is_empty() {
            self.messages = messages;
        } else {
            self.messages.extend(messages);
        }
        self.jobs += 1;
    }
}

/// The WAL thread: takes every job queued, writes, reports; ends when the queue closes or
/// a write fails.
fn run(writer: Arc<Mutex<Writer>>, queue: mpsc::Receiver<Job>) {
    let shared = writer
        .lock()
        .expect("WAL writer lock poisoned")
        .shared
        .clone();
    let _guard = PanicGuard(shared.clone());
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        jobs.extend(queue.try_iter());
        let mut writer = writer.lock().expect("WAL writer lock poisoned");
        if let Err(error) = writer.handle(jobs, true) {
            tracing::error!(%error, "WAL write failed; the node stops");
            shared.state.lock().expect("storage lock poisoned").failed = Some(error);
            let _ = writer.events.try_send(Event::Storage);
            return;
        }
    }
}

impl Writer {
    /// Handles a run of jobs: saves merged, the others in their place.
    fn handle(&mut self, jobs: Vec<Job>, wake: bool) -> Result<()> {
        let mut merged = Merged::default();
        for job in jobs {
            match job {
                Job::Save {
                    hard_state,
                    entries,
                    messages,
                } => merged.add(hard_state, entries, messages),
                Job::Reset { index, term } => {
                    self.flush(std::mem::take(&mut merged))?;
                    self.wal.reset(index, term)?;
                    self.done(1, 0, None);
                }
                Job::TruncatePrefix { upto } => {
                    self.flush(std::mem::take(&mut merged))?;
                    self.wal.truncate_prefix(upto)?;
                    self.done(1, 0, None);
                }
            }
        }
        self.flush(merged)?;
        if wake {
            let _ = self.events.try_send(Event::Storage);
        }
        Ok(())
    }

    /// Writes merged saves (one fdatasync), then sends their messages and reports them.
    fn flush(&mut self, merged: Merged) -> Result<()> {
        if merged.jobs == 0 {
            return Ok(());
        }
        if merged.hard_state.is_some() || !merged.entries.is_empty() {
            let started = Instant::now();
            self.wal.save(merged.hard_state.as_ref(), &merged.entries)?;
            self.metrics
                .wal_fsync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        self.peers.send(merged.messages);
        let last = merged.entries.last().map(|entry| (entry.index, entry.term));
        self.done(merged.jobs, merged.bytes, last);
        Ok(())
    }

    fn done(&self, jobs: u64, bytes: u64, persisted: Option<(Index, Term)>) {
        let wal_bytes = self.wal.size_bytes();
        self.shared.wal_bytes.store(wal_bytes, Ordering::Relaxed);
        self.metrics.wal_bytes.set(wal_bytes as i64);
        let mut reported = self.shared.state.lock().expect("storage lock poisoned");
        reported.jobs_done += jobs;
        reported.bytes_done += bytes;
        if persisted.is_some() {
            reported.persisted = persisted;
        }
    }
}

/// Reports a panic of the WAL thread (a broken invariant) as a failure, so the driver stops
/// instead of waiting for jobs that will never finish.
struct PanicGuard(Arc<Shared>);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut reported = match self.0.state.lock() {
                Ok(reported) => reported,
                Err(poisoned) => poisoned.into_inner(),
            };
            reported.failed = Some(Error::Unavailable("the WAL thread panicked".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            command: vec![index as u8],
        }
    }

    fn indexes(merged: &Merged) -> Vec<(Index, Term)> {
        merged.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn merged_saves_splice_like_conflict_truncations() {
        let mut merged = Merged::default();
        merged.add(None, vec![entry(5, 1), entry(6, 1), entry(7, 1)], vec![]);
        merged.add(None, vec![entry(8, 1)], vec![]);
        assert_eq!(indexes(&merged), [(5, 1), (6, 1), (7, 1), (8, 1)]);
        // A later save from index 7 replaces the tail from 7.
        merged.add(None, vec![entry(7, 2), entry(8, 2)], vec![]);
        assert_eq!(indexes(&merged), [(5, 1), (6, 1), (7, 2), (8, 2)]);
        // One below everything merged: only it remains (the WAL truncates its own tail).
        merged.add(None, vec![entry(3, 3)], vec![]);
        assert_eq!(indexes(&merged), [(3, 3)]);
        assert_eq!(merged.jobs, 4);
        // Counted as submitted, so the driver's count of unwritten bytes returns to zero.
        assert_eq!(merged.bytes, 7);
    }

    /// A WAL thread over a fresh log in `dir`, for a node with no peers.
    fn storage(dir: &std::path::Path) -> (Storage, events::Receiver<Event>) {
        let (wal, _) = Wal::open(dir, crate::wal::Options::default()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let directory = Arc::new(crate::transport::Directory::new(
            "n1".into(),
            "test".into(),
            "http://127.0.0.1:1".into(),
            Default::default(),
        ));
        let peers = Arc::new(Peers::spawn(
            directory,
            metrics.clone(),
            &tokio::runtime::Handle::current(),
        ));
        let (sender, receiver) = events::channel(16);
        let storage = Storage::start("n1", wal, peers, sender, metrics).unwrap();
        (storage, receiver)
    }

    fn save(entries: Vec<Entry>) -> Job {
        Job::Save {
            hard_state: None,
            entries,
            messages: vec![],
        }
    }

    #[tokio::test]
    async fn a_job_in_place_follows_the_queued_ones_and_reports_like_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut storage, mut events) = storage(dir.path());
        storage
            .submit(save(vec![entry(1, 1), entry(2, 1)]))
            .unwrap();
        // The thread wakes the driver when it is done.
        assert!(matches!(events.recv().await, Some(Event::Storage)));
        assert_eq!(storage.poll().unwrap().persisted, Some((2, 1)));
        assert!(storage.idle());
        assert_eq!(storage.unpersisted_bytes(), 0);

        let state = HardState {
            term: 2,
            vote: Some("n2".into()),
            commit: 1,
        };
        storage
            .run_here(Job::Save {
                hard_state: Some(state.clone()),
                entries: vec![entry(3, 2)],
                messages: vec![],
            })
            .unwrap();
        // Done when it returns, without a wake-up.
        assert_eq!(storage.poll().unwrap().persisted, Some((3, 2)));
        assert!(storage.idle());
        assert_eq!(storage.unpersisted_bytes(), 0);
        assert_eq!(storage.hard_state(), &state);
        assert!(events.try_recv().is_err());

        drop(storage); // waits for the thread
        let (_, recovered) = Wal::open(dir.path(), crate::wal::Options::default()).unwrap();
        let indexes: Vec<_> = recovered
            .entries
            .iter()
            .map(|e| (e.index, e.term))
            .collect();
        assert_eq!(indexes, [(1, 1), (2, 1), (3, 2)]);
        assert_eq!(recovered.hard_state, state);
    }

    #[tokio::test]
    #[should_panic(expected = "a job run in place while the WAL thread has jobs")]
    async fn a_job_in_place_never_overtakes_a_queued_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut storage, _events) = storage(dir.path());
        storage.submit(save(vec![entry(1, 1)])).unwrap();
        // Not polled since: as far as the driver knows, the first job is still queued.
        let _ = storage.run_here(save(vec![entry(2, 1)]));
    }

    #[test]
    fn merged_saves_keep_the_latest_hard_state() {
        let state = |term| HardState {
            term,
            vote: None,
            commit: 0,
        };
        let mut merged = Merged::default();
        merged.add(Some(state(2)), vec![], vec![]);
        merged.add(None, vec![entry(1, 2)], vec![]);
        assert_eq!(merged.hard_state, Some(state(2)));
        merged.add(Some(state(3)), vec![], vec![]);
        assert_eq!(merged.hard_state, Some(state(3)));
    }
}
