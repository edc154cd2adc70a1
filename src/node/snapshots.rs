//! The driver's part in snapshots (ARCHITECTURE.md, "Snapshots").
//!
//! # Taking one
//!
//! 1. After applying, if the applied index is [`SnapshotPolicy::entries`] past the last
//!    snapshot, or the commands applied since weigh [`SnapshotPolicy::bytes`] (or an operator
//!    asked), the driver takes a point-in-time view of the store (`Store::view`, O(1)) and
//!    hands it to a background thread. The driver keeps applying writes meanwhile.
//! 2. The thread writes the snapshot file (temp file, fsync, rename, directory fsync: the
//!    commit point) and reports back through the event queue.
//! 3. The driver then compacts: the raft core drops its in-memory log, and the WAL deletes
//!    whole segments, up to [`SnapshotPolicy::catch_up_entries`] before the snapshot. Keeping that
//!    margin lets a follower that is a little behind catch up from the log instead of
//!    receiving the whole snapshot (etcd keeps 5,000 for the same reason).
//!
//! A failed snapshot write is logged and retried at the next trigger: nothing was compacted,
//! so the WAL still holds everything.
//!
//! # Sending and installing
//!
//! When the leader's core emits `Body::Snapshot`, the driver streams its newest snapshot
//! file (transport `stream_snapshot`). A follower steps the `Snapshot` message into its
//! core only once that file has arrived complete; when the core then asks to install it
//! (`Ready::snapshot`), the driver loads it into a fresh store and resets the WAL to it,
//! both before any later entry is persisted or any response sent. From the step to the
//! load the file is pinned in the snapshot directory, so that a newer transfer committing
//! in between cannot prune it (with `--snapshots-kept 1` it otherwise would, and the load
//! would fail and stop the node).
//!
//! The snapshot a node offers to lagging followers ([`SnapshotState::latest`], the newest it
//! took or installed) stays pinned for as long as it is the one offered. Otherwise a
//! transfer that completed but that the core then refused (a follower that caught up from
//! the log meanwhile) would, with `--snapshots-kept 1`, prune it as the newer file, and
//! were the node to lead, every offer would fail on a missing file until its next snapshot.
//! The price: a replaced snapshot's file stays until the next retention, so the directory
//! may hold one file more than `--snapshots-kept` for a while.

use std::borrow::Borrow;

use tokio::sync::oneshot;

use super::Event;
use super::driver::Driver;
use super::storage::Job;
use crate::error::{Error, Result};
use crate::raft::{Body, Message, SnapshotMeta, Term};
use crate::snapshot::{Pin, SnapshotDir, SnapshotInfo};
use crate::store::Map;

/// Log entries kept behind a snapshot when compacting, by default (see the module doc).
pub const SNAPSHOT_CATCH_UP_ENTRIES: u64 = 5_000;

/// When to take a snapshot.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotPolicy {
    /// Take one when the applied index is this far past the last one.
    pub entries: u64,
    /// Or when the commands applied since the last one add up to this many bytes.
    pub bytes: u64,
    /// Log entries kept behind a snapshot when compacting.
    pub catch_up_entries: u64,
}

impl SnapshotPolicy {
    /// Where compaction cuts the log for a snapshot at `snapshot_index`: the catch-up
    /// margin before it. The running driver compacts to it, and a restart starts the log
    /// there (`node::recover`).
    pub fn compaction_point(&self, snapshot_index: u64) -> u64 {
        snapshot_index.saturating_sub(self.catch_up_entries)
    }
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        // 10,000 entries or 64 MiB: the raft core keeps the log since the last compaction
        // in memory, so these bound that memory and how much a restart replays.
        SnapshotPolicy {
            entries: 10_000,
            bytes: 64 * 1024 * 1024,
            catch_up_entries: SNAPSHOT_CATCH_UP_ENTRIES,
        }
    }
}

/// A snapshot file held back from retention ([`SnapshotDir::pin`]) for as long as this
/// lives: an offer the core may install, or the snapshot the node offers to lagging
/// followers (see the module doc). Installing moves the one from the first role to the
/// second.
pub(super) struct Held {
    pub info: SnapshotInfo,
    _pin: Pin,
}

impl Held {
    /// Pins `info`'s file; `None` if it is gone.
    fn new(dir: &SnapshotDir, info: SnapshotInfo) -> Result<Option<Held>> {
        Ok(dir.pin(&info.path)?.map(|pin| Held { info, _pin: pin }))
    }

    /// [`Held::new`] for the snapshot to offer; `None` (logged) if its file is gone or
    /// cannot be looked at, so that the node never offers a file it does not have.
    pub fn offered(dir: &SnapshotDir, info: SnapshotInfo) -> Option<Held> {
        let path = info.path.clone();
        match Held::new(dir, info) {
            Ok(Some(held)) => Some(held),
            Ok(None) => {
                tracing::warn!(file = %path.display(), "the snapshot file is gone; not offering it");
                None
            }
            Err(error) => {
                tracing::warn!(%error, "cannot hold the snapshot file; not offering it");
                None
            }
        }
    }
}

impl Borrow<SnapshotInfo> for Held {
    fn borrow(&self) -> &SnapshotInfo {
        &self.info
    }
}

/// The driver's snapshot bookkeeping.
#[derive(Default)]
pub(super) struct SnapshotState {
    /// The newest durable snapshot (taken or installed), the one offered to lagging
    /// followers; its file pinned.
    pub latest: Option<Held>,
    /// Command bytes applied since the last snapshot was started.
    pub bytes_since: u64,
    /// A snapshot is being written in the background.
    pub running: bool,
    /// The received snapshots whose `Snapshot` messages were stepped into the core in this
    /// iteration ([`Driver::may_step`]; more than one only when offers cross), until one is
    /// installed or the iteration ends; their files are pinned meanwhile
    /// ([`SnapshotDir::pin`]).
    pub admitted: Vec<Held>,
    /// Operators waiting for a snapshot (`POST /admin/snapshot`), each with the applied
    /// index when it asked: a snapshot that started earlier does not answer it.
    pub waiters: Vec<(u64, oneshot::Sender<Result<SnapshotInfo>>)>,
}

impl SnapshotState {
    pub fn latest_index(&self) -> u64 {
        self.latest
            .as_ref()
            .map_or(0, |latest| latest.info.meta.index)
    }

    fn latest_info(&self) -> Option<&SnapshotInfo> {
        self.latest.as_ref().map(|latest| &latest.info)
    }
}

impl Driver {
    /// Starts a snapshot if one is due (or `forced`) and none is running.
    pub(super) fn maybe_snapshot(&mut self, forced: bool) {
        let state = &self.snapshots;
        let applied = self.store_applied_index();
        let since = applied.saturating_sub(state.latest_index());
        let due = since >= self.parts.snapshot_policy.entries
            || state.bytes_since >= self.parts.snapshot_policy.bytes;
        if state.running || since == 0 || !(due || forced) {
            if forced && !state.running && since == 0 {
                self.answer_snapshot_waiters(state.latest_info().cloned().ok_or_else(|| {
                    Error::Unavailable("nothing applied yet: no snapshot to take".into())
                }));
            }
            return;
        }
        let Some(term) = self.parts.raft.term_at(applied) else {
            tracing::warn!(
                applied,
                "cannot snapshot: the term of the applied entry is unknown"
            );
            return;
        };
        let (view, index) = self.parts.store.read().expect("store lock poisoned").view();
        let meta = SnapshotMeta {
            index,
            term,
            voters: self.parts.voters.clone(),
        };
        self.snapshots.running = true;
        self.snapshots.bytes_since = 0;
        let dir = self.parts.snapshot_dir.clone();
        let events = self.parts.events_sender.clone();
        let spawned = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                lower_thread_priority();
                let result = write_snapshot(&dir, &meta, &view);
                let _ = events.blocking_send(Event::SnapshotDone(result));
            });
        if let Err(error) = spawned {
            self.snapshots.running = false;
            tracing::error!(%error, "cannot start the snapshot thread");
        }
    }

    /// The background write finished: compact on success, answer waiting operators.
    pub(super) fn snapshot_done(&mut self, result: Result<SnapshotInfo>) -> Result<()> {
        self.snapshots.running = false;
        let info = match result {
            Ok(info) => info,
            Err(error) => {
                tracing::error!(%error, "snapshot failed; the WAL still holds everything, will retry");
                self.answer_snapshot_waiters(Err(error));
                return Ok(());
            }
        };
        tracing::info!(
            index = info.meta.index,
            bytes = info.file_bytes,
            keys = info.key_count,
            "snapshot taken"
        );
        // A snapshot installed from the leader while this one was being written is newer:
        // it stays the one offered to lagging followers (the raft core's log starts after
        // it, so an offer of this older one would never let a follower catch up).
        if supersedes(self.snapshots.latest_info(), &info) {
            // A file pruned meanwhile (a newer transfer, refused by the core) keeps the
            // previous one offered.
            if let Some(latest) = Held::offered(&self.parts.snapshot_dir, info.clone()) {
                self.snapshots.latest = Some(latest);
            }
        } else {
            tracing::info!(
                index = info.meta.index,
                "a snapshot installed meanwhile is newer; it stays the latest"
            );
        }
        let point = self.parts.snapshot_policy.compaction_point(info.meta.index);
        self.compact(point)?;
        self.answer_snapshot_waiters(Ok(info));
        if !self.snapshots.waiters.is_empty() {
            // Asked for while this one was being written: take the next one now.
            self.maybe_snapshot(true);
        }
        Ok(())
    }

    /// Drops the raft log and WAL segments up to `index` (already covered by a snapshot).
    fn compact(&mut self, index: u64) -> Result<()> {
        let compacted = self.parts.raft.status().snapshot_index;
        if index <= compacted {
            return Ok(());
        }
        let Some(term) = self.parts.raft.term_at(index) else {
            return Ok(());
        };
        let meta = SnapshotMeta {
            index,
            term,
            voters: self.parts.voters.clone(),
        };
        let dropped = self.parts.raft.compact(meta)?;
        drop_elsewhere(dropped);
        self.parts
            .storage
            .submit(Job::TruncatePrefix { upto: index })
    }

    /// Answers the waiters `result` covers: on success those that asked at or before its
    /// index (the others wait for the next one), on failure all.
    fn answer_snapshot_waiters(&mut self, result: Result<SnapshotInfo>) {
        let (answered, waiting) = std::mem::take(&mut self.snapshots.waiters)
            .into_iter()
            .partition(|(asked_at, _)| match &result {
                Ok(info) => *asked_at <= info.meta.index,
                Err(_) => true,
            });
        self.snapshots.waiters = waiting;
        for (_, waiter) in answered {
            let answer = match &result {
                Ok(info) => Ok(info.clone()),
                Err(error) => Err(Error::Unavailable(format!("snapshot failed: {error}"))),
            };
            let _ = waiter.send(answer);
        }
    }

    /// Sends messages: `Snapshot` offers go to the snapshot streamer (data first, then the
    /// message), everything else to the peers' queues in one batch per peer.
    pub(super) fn send(&self, mut messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        if messages
            .iter()
            .any(|message| matches!(message.body, Body::Snapshot { .. }))
        {
            let (offers, rest): (Vec<_>, Vec<_>) = messages
                .into_iter()
                .partition(|message| matches!(message.body, Body::Snapshot { .. }));
            for offer in offers {
                match self.snapshots.latest_info() {
                    Some(info) => self.parts.peers.stream_snapshot(offer, info.clone()),
                    None => tracing::error!(
                        to = %offer.to,
                        "the core asked to send a snapshot, but none exists"
                    ),
                }
            }
            messages = rest;
        }
        self.parts.peers.send(messages);
    }

    /// Whether a message from a peer may be stepped: a `Snapshot` message only once its data
    /// has arrived complete. That file is then held for [`Driver::install_snapshot`], so
    /// that another transfer completing in between (which replaces the receiver's one slot,
    /// and with `--snapshots-kept 1` deletes the older file) cannot take it away after the
    /// core has accepted the message: its info is kept here and the file pinned against
    /// retention until it is loaded (or, if the core refused it, until the iteration ends:
    /// [`Driver::release_refused_offers`]). Every offer stepped in one iteration is held,
    /// since the core may install the first and refuse a later one.
    pub(super) fn may_step(&mut self, message: &Message) -> bool {
        match &message.body {
            Body::Snapshot { meta } => {
                if !may_install(message.term, self.parts.raft.term()) {
                    // The core refuses it (and its answer tells the sender the new term):
                    // it must not replace a file held for an offer the core accepted.
                    return true;
                }
                let Some(info) = self.parts.snapshot_receiver.received(meta.index, meta.term)
                else {
                    return false;
                };
                match Held::new(&self.parts.snapshot_dir, info) {
                    Ok(Some(held)) => {
                        self.snapshots.admitted.push(held);
                        true
                    }
                    // A newer transfer replaced and pruned it just now; its own offer follows.
                    Ok(None) => false,
                    Err(error) => {
                        tracing::warn!(%error, "cannot hold a received snapshot; offer refused");
                        false
                    }
                }
            }
            _ => true,
        }
    }

    /// Lets go of the snapshot offers admitted in this iteration that the core did not
    /// install (it refused them): one it accepted was installed by the end of the
    /// iteration, when the driver has handled every `Ready`.
    pub(super) fn release_refused_offers(&mut self) {
        self.snapshots.admitted.clear();
    }

    /// Installs a snapshot the core accepted: a fresh store from the file, then the WAL reset.
    pub(super) fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<()> {
        // Every offer the core may install was admitted in this iteration (`may_step`).
        let held = take_admitted(&mut self.snapshots.admitted, meta).ok_or_else(|| {
            Error::Unavailable(format!("snapshot {} to install is not on disk", meta.index))
        })?;
        let store = super::driver::blocking(|| super::recover::load_store(&held.info))?;
        *self.parts.store.write().expect("store lock poisoned") = store;
        self.parts.storage.submit(Job::Reset {
            index: meta.index,
            term: meta.term,
        })?;
        tracing::info!(
            index = meta.index,
            keys = held.info.key_count,
            "installed snapshot from the leader"
        );
        // Held on as the one offered; the previous one is let go.
        self.snapshots.latest = Some(held);
        self.snapshots.bytes_since = 0;
        Ok(())
    }
}

/// Whether a `Snapshot` message sent in `message_term` can be installed by a core in
/// `current_term`: one from a deposed leader (an older term) is refused by the core's term
/// check, so the driver holds no file for it.
fn may_install(message_term: Term, current_term: Term) -> bool {
    message_term >= current_term
}

/// The admitted snapshot `meta` names, if there is one.
fn take_admitted<T: Borrow<SnapshotInfo>>(admitted: &mut Vec<T>, meta: &SnapshotMeta) -> Option<T> {
    let position = admitted.iter().position(|held| {
        let info: &SnapshotInfo = held.borrow();
        info.meta.index == meta.index && info.meta.term == meta.term
    })?;
    Some(admitted.swap_remove(position))
}

/// Whether a snapshot just taken replaces `latest` as the one the node serves: not if a
/// snapshot installed from the leader while it was being written is as new or newer.
fn supersedes(latest: Option<&SnapshotInfo>, taken: &SnapshotInfo) -> bool {
    latest.is_none_or(|latest| taken.meta.index > latest.meta.index)
}

/// Frees compacted log entries on a short-lived thread: dropping the ~100,000 commands
/// a busy node compacts at a time took 27 ms on the driver thread (one `free` each, of
/// memory allocated on the HTTP threads), a stall every client would wait out.
fn drop_elsewhere(entries: Vec<crate::raft::Entry>) {
    if entries.len() < 1024 {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("compacted".into())
        .spawn(move || drop(entries));
    if let Err(error) = spawned {
        tracing::debug!(%error, "freeing compacted entries in place");
    }
}

/// Niceness of the snapshot thread. On a machine with few cores the snapshot's
/// serialization competes with the driver and the HTTP workers; the scheduler should prefer
/// them, since a snapshot has no deadline and a client write does.
const SNAPSHOT_THREAD_NICE: libc::c_int = 10;

/// Lowers the calling thread's scheduling priority (Linux applies `setpriority` with
/// `PRIO_PROCESS` to a single thread when given its thread id). Best effort: a failure only
/// means the snapshot competes at normal priority.
fn lower_thread_priority() {
    // SAFETY: gettid and setpriority take no pointers and only affect this thread.
    let result = unsafe {
        let thread_id = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread_id, SNAPSHOT_THREAD_NICE)
    };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the snapshot thread's priority");
    }
}

/// Writes `view` as the snapshot `meta` (on the snapshot thread).
fn write_snapshot(dir: &SnapshotDir, meta: &SnapshotMeta, view: &Map) -> Result<SnapshotInfo> {
    let entries = view
        .iter()
        .map(|(key, versioned)| (&**key, &versioned.value[..], versioned.revision));
    dir.write(meta, view.len() as u64, entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(index: u64) -> SnapshotInfo {
        SnapshotInfo {
            meta: SnapshotMeta {
                index,
                term: 1,
                voters: Vec::new(),
            },
            path: std::path::PathBuf::from(format!("{index}.snap")),
            file_bytes: 0,
            key_count: 0,
        }
    }

    /// With one snapshot kept, the one offered to lagging followers outlives the retention
    /// of a newer file (a transfer the core refused) until another takes its place, and a
    /// file already pruned is never offered.
    #[test]
    fn the_offered_snapshot_is_kept_until_another_replaces_it() {
        let temp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(temp.path(), 1).unwrap();
        let write = |index| {
            let meta = SnapshotMeta {
                index,
                term: 1,
                voters: Vec::new(),
            };
            dir.write(&meta, 0, std::iter::empty()).unwrap()
        };
        let mut latest = Held::offered(&dir, write(10));
        let first = latest.as_ref().expect("just written").info.path.clone();
        let refused = write(20);
        assert!(first.exists(), "the offered snapshot was pruned");
        // A snapshot taken later replaces it; the next retention prunes both older files.
        latest = Held::offered(&dir, write(30));
        let newest = write(40);
        assert!(!first.exists() && !refused.path.exists());
        assert!(latest.as_ref().unwrap().info.path.exists() && newest.path.exists());
        assert!(
            Held::offered(&dir, refused).is_none(),
            "a pruned file is offered"
        );
    }

    #[test]
    fn a_snapshot_taken_supersedes_only_an_older_one() {
        assert!(supersedes(None, &info(5)));
        assert!(supersedes(Some(&info(4)), &info(5)));
        // Started at 5, finished after the leader's snapshot at 9 was installed.
        assert!(!supersedes(Some(&info(9)), &info(5)));
        assert!(!supersedes(Some(&info(5)), &info(5)));
    }

    /// A deposed leader's offer, stepped in the same batch after the current leader's, must
    /// not take the place of the file held for the current one.
    #[test]
    fn only_offers_of_the_current_term_or_newer_are_held() {
        assert!(!may_install(2, 3));
        assert!(may_install(3, 3));
        assert!(
            may_install(4, 3),
            "a newer term: the core steps up and installs"
        );
    }

    /// An admitted snapshot is installed only as the snapshot it is; another (a newer
    /// index, or the same index of another term) leaves it held, and of two offers that
    /// crossed in one iteration the one the core installs is found.
    #[test]
    fn only_the_snapshot_admitted_is_taken_for_install() {
        let mut admitted = vec![info(7)];
        let other_term = SnapshotMeta {
            term: 2,
            ..info(7).meta
        };
        assert!(take_admitted(&mut admitted, &other_term).is_none());
        assert!(take_admitted(&mut admitted, &info(8).meta).is_none());
        assert_eq!(
            take_admitted(&mut admitted, &info(7).meta)
                .unwrap()
                .meta
                .index,
            7
        );
        assert!(admitted.is_empty(), "taken once");
        assert!(take_admitted(&mut admitted, &info(7).meta).is_none());
        // The core installed the first of two offers and refused the second (not newer).
        let mut crossed = vec![info(9), info(8)];
        assert_eq!(
            take_admitted(&mut crossed, &info(9).meta)
                .unwrap()
                .meta
                .index,
            9
        );
        assert_eq!(crossed.len(), 1, "the refused one is left for release");
    }
}
