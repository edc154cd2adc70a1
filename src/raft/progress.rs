//! The leader's view of each follower (Raft §5.3 nextIndex/matchIndex, thesis §10.2.1
//! pipelining), and the quorum arithmetic the leader commits and confirms reads with.

use std::collections::VecDeque;
use std::fmt;

use serde::Serialize;

use super::types::Index;

/// How the leader currently replicates to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgressState {
    /// The leader does not know where the follower's log matches its own: it sends one
    /// append at a time and waits for the answer before the next (thesis §3.5 backtracking).
    Probe,
    /// The follower's log is known to match up to `match_index`: appends are pipelined
    /// optimistically, at most `inflight_appends_max` of them unacknowledged.
    Replicate,
    /// The follower needs entries the leader has compacted: a snapshot is on its way and
    /// nothing else is sent until it is acknowledged (or its send times out).
    Snapshot,
}

impl fmt::Display for ProgressState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ProgressState::Probe => "probe",
            ProgressState::Replicate => "replicate",
            ProgressState::Snapshot => "snapshot",
        };
        f.write_str(name)
    }
}

/// The leader's replication state for one follower.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// The highest index known to be durable in the follower's log and equal to ours.
    pub(crate) match_index: Index,
    /// The next index to send.
    pub(crate) next_index: Index,
    pub(crate) state: ProgressState,
    /// Last index carried by each unacknowledged append, oldest first (Replicate only).
    pub(crate) inflights: VecDeque<Index>,
    /// Probe: an append is out and unanswered; send nothing more until an answer (or a
    /// heartbeat response) arrives.
    pub(crate) probe_sent: bool,
    /// Replicate: send an empty append at `next_index - 1` to find out whether the tail of
    /// the pipeline was lost (set by a heartbeat response from a lagging follower).
    pub(crate) tip_probe: bool,
    /// Snapshot: the snapshot's index, and ticks since it was sent.
    pub(crate) snapshot_index: Index,
    pub(crate) snapshot_elapsed_ticks: u64,
    /// The highest commit index sent to the follower that it can use.
    pub(crate) commit_sent: Index,
    /// Heard from the follower since the last check-quorum round (thesis §6.2).
    pub(crate) recent_active: bool,
    /// The highest read-round sequence the follower acknowledged (thesis §6.4).
    pub(crate) read_ack: u64,
    /// The match index when the last heartbeat was sent. If a heartbeat is answered and
    /// the match index has not moved since, appends sent before it were lost.
    pub(crate) match_at_heartbeat: Index,
}

impl Progress {
    /// A follower of a new leader whose last index is `last_index` (Raft figure 2:
    /// nextIndex = leader last log index + 1, matchIndex = 0).
    pub(crate) fn new(last_index: Index) -> Progress {
        Progress {
            match_index: 0,
            next_index: last_index + 1,
            state: ProgressState::Probe,
            inflights: VecDeque::new(),
            probe_sent: false,
            tip_probe: false,
            snapshot_index: 0,
            snapshot_elapsed_ticks: 0,
            commit_sent: 0,
            recent_active: false,
            read_ack: 0,
            match_at_heartbeat: 0,
        }
    }

    /// Back to probing from just after the match index.
    pub(crate) fn into_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.inflights.clear();
        self.probe_sent = false;
    }

    /// Start pipelining after the match index.
    pub(crate) fn into_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.inflights.clear();
    }

    /// A snapshot at `index` is being sent.
    pub(crate) fn into_snapshot(&mut self, index: Index) {
        self.state = ProgressState::Snapshot;
        self.snapshot_index = index;
        self.snapshot_elapsed_ticks = 0;
        self.inflights.clear();
    }

    /// The follower acknowledged `index`. Returns whether the match index advanced.
    pub(crate) fn maybe_update(&mut self, index: Index) -> bool {
        self.next_index = self.next_index.max(index + 1);
        if index <= self.match_index {
            return false;
        }
        self.match_index = index;
        self.probe_sent = false;
        true
    }

    /// Forget in-flight appends acknowledged up to `index`.
    pub(crate) fn free_inflights(&mut self, index: Index) {
        while self.inflights.front().is_some_and(|&last| last <= index) {
            self.inflights.pop_front();
        }
    }

    /// Whether a rejection of an append at `prev_index` is still news: in Replicate it must
    /// be above the match index, in Probe it must answer the probe we sent.
    pub(crate) fn is_rejection_current(&self, prev_index: Index) -> bool {
        match self.state {
            ProgressState::Replicate => prev_index > self.match_index,
            ProgressState::Probe => prev_index + 1 == self.next_index,
            ProgressState::Snapshot => false,
        }
    }
}

/// The largest value that a majority of `values` is at or above: the `quorum`-th largest,
/// where quorum = n/2 + 1. This is the commit index given match indexes (Raft §5.3, §5.4.2),
/// and the confirmed read round given read acknowledgements. Returns `T::default()` for an
/// empty slice.
///
/// Uses selection in O(n) on a scratch copy; `quorum_value_reference` is the obvious
/// sort-based definition it is property-tested against.
pub fn quorum_value<T: Ord + Copy + Default>(values: &[T]) -> T {
    if values.is_empty() {
        return T::default();
    }
    let mut scratch = values.to_vec();
    let quorum = values.len() / 2 + 1;
    // After selection, the element at `len - quorum` has `quorum - 1` elements above it.
    let position = values.len() - quorum;
    *scratch.select_nth_unstable(position).1
}

/// The reference definition of [`quorum_value`]: sort descending, take the quorum-th.
pub fn quorum_value_reference<T: Ord + Copy + Default>(values: &[T]) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.get(values.len() / 2).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_value_examples() {
        assert_eq!(quorum_value::<u64>(&[]), 0);
        assert_eq!(quorum_value(&[5u64]), 5);
        assert_eq!(quorum_value(&[5u64, 1, 3]), 3);
        assert_eq!(quorum_value(&[5u64, 1, 3, 4]), 3);
        assert_eq!(quorum_value(&[9u64, 9, 1, 1, 2]), 2);
    }

    #[test]
    fn rejection_freshness() {
        let mut progress = Progress::new(10);
        assert!(progress.is_rejection_current(10));
        assert!(!progress.is_rejection_current(9));
        progress.maybe_update(4);
        progress.into_replicate();
        assert!(!progress.is_rejection_current(4));
        assert!(progress.is_rejection_current(5));
    }

    #[test]
    fn inflights_free_in_order() {
        let mut progress = Progress::new(0);
        progress.inflights.extend([3, 6, 9]);
        progress.free_inflights(6);
        assert_eq!(progress.inflights, VecDeque::from([9]));
    }
}
