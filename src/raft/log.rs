//! The in-memory view of the replicated log (Raft §5.3): the compacted prefix (described by
//! a snapshot), the entries after it, and the watermarks that tie it to the driver's disk.
//!
//! Watermarks, always `snapshot.index <= applied <= applying <= commit` and
//! `persisted < unstable <= last_index + 1`:
//!
//! - `unstable`: the first index not yet handed to the driver in a `Ready`;
//! - `persisted`: the last index the driver reported durable (`Raft::persisted`); a conflict
//!   truncation lowers it, because the driver's copy of the suffix is no longer ours;
//! - `commit`: the highest index known committed;
//! - `applying`: the last index handed out for application; only durable entries are handed
//!   out (`applying <= persisted`), so a node never applies what it could lose in a crash;
//! - `applied`: the last index the driver reported applied.

use super::types::{Entry, Index, SnapshotMeta, Term};

/// The log and its watermarks.
#[derive(Clone, Debug)]
pub(crate) struct RaftLog {
    snapshot: SnapshotMeta,
    entries: Vec<Entry>,
    pub(crate) commit: Index,
    pub(crate) persisted: Index,
    unstable: Index,
    applying: Index,
    pub(crate) applied: Index,
}

impl RaftLog {
    /// A log recovered from disk: everything given is durable. `entries` must follow the
    /// snapshot contiguously (checked by the caller).
    pub(crate) fn new(
        snapshot: SnapshotMeta,
        entries: Vec<Entry>,
        commit: Index,
        applied: Index,
    ) -> RaftLog {
        let last = entries.last().map_or(snapshot.index, |entry| entry.index);
        RaftLog {
            snapshot,
            entries,
            commit,
            persisted: last,
            unstable: last + 1,
            applying: applied,
            applied,
        }
    }

    pub(crate) fn snapshot(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    /// The first index still held as an entry.
    pub(crate) fn first_index(&self) -> Index {
        self.snapshot.index + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.snapshot.index + self.entries.len() as Index
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries
            .last()
            .map_or(self.snapshot.term, |entry| entry.term)
    }

    /// The term at `index`, or None when it is compacted away or beyond the end.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.entry(index).map(|entry| entry.term)
    }

    pub(crate) fn entry(&self, index: Index) -> Option<&Entry> {
        let offset = index.checked_sub(self.first_index())?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// Raft §5.4.1: a candidate's log is at least as up to date as ours if its last term is
    /// higher, or equal with a last index at least ours.
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// Leader: append a new entry at the end.
    pub(crate) fn append(&mut self, term: Term, command: Vec<u8>) -> Index {
        let index = self.last_index() + 1;
        self.entries.push(Entry {
            index,
            term,
            command,
        });
        index
    }

    /// Follower (Raft figure 2, AppendEntries receiver rules 2-4): if our log has
    /// `prev_term` at `prev_index`, skip the entries we already have, truncate at the first
    /// conflicting one and append the rest; return the index of the last entry the leader
    /// sent (our match index). None if the previous entry does not match. The caller makes
    /// sure `prev_index >= commit`, so no committed entry can be truncated.
    pub(crate) fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
    ) -> Option<Index> {
        if self.term(prev_index) != Some(prev_term) {
            return None;
        }
        let match_index = prev_index + entries.len() as Index;
        let first_new = entries
            .iter()
            .position(|entry| self.term(entry.index) != Some(entry.term));
        if let Some(position) = first_new {
            let index = entries[position].index;
            if index <= self.last_index() {
                self.truncate_from(index);
            }
            self.entries.extend(entries.into_iter().skip(position));
        }
        Some(match_index)
    }

    fn truncate_from(&mut self, index: Index) {
        assert!(
            index > self.commit,
            "truncating committed entry {index} (commit {})",
            self.commit
        );
        self.entries.truncate((index - self.first_index()) as usize);
        self.unstable = self.unstable.min(index);
        self.persisted = self.persisted.min(index - 1);
    }

    /// The hint for a rejected append at `prev_index` (thesis §3.5's optimisation): the
    /// first index we hold of our term at `prev_index`, or our end if we are shorter.
    /// Returns (conflict_index, conflict_term), conflict_term 0 meaning "log too short".
    pub(crate) fn conflict_hint(&self, prev_index: Index) -> (Index, Term) {
        match self.term(prev_index) {
            None => (self.last_index() + 1, 0),
            Some(term) => {
                let first = self.entries.partition_point(|entry| entry.term < term);
                (self.first_index() + first as Index, term)
            }
        }
    }

    /// The last index holding `term` at or below `at_most`, if any (leader side of the
    /// conflict hint). Terms never decrease along the log, so this is a binary search.
    pub(crate) fn last_index_of_term(&self, term: Term, at_most: Index) -> Option<Index> {
        let count = self.entries.partition_point(|entry| entry.term <= term);
        let index = (self.snapshot.index + count as Index).min(at_most);
        (self.term(index) == Some(term)).then_some(index)
    }

    /// Entries from `from` on, at least one if any, up to `bytes_max` payload bytes.
    pub(crate) fn entries_from(&self, from: Index, bytes_max: usize) -> Vec<Entry> {
        let Some(offset) = from.checked_sub(self.first_index()) else {
            return Vec::new();
        };
        let mut bytes = 0;
        let mut batch = Vec::new();
        for entry in self.entries.iter().skip(offset as usize) {
            bytes += entry.command.len();
            if !batch.is_empty() && bytes > bytes_max {
                break;
            }
            batch.push(entry.clone());
        }
        batch
    }

    pub(crate) fn commit_to(&mut self, index: Index) -> bool {
        if index <= self.commit {
            return false;
        }
        assert!(
            index <= self.last_index(),
            "commit {index} beyond last index {}",
            self.last_index()
        );
        self.commit = index;
        true
    }

    pub(crate) fn has_unstable(&self) -> bool {
        self.unstable <= self.last_index()
    }

    /// Hands the entries not yet given to the driver over for persisting.
    pub(crate) fn take_unstable(&mut self) -> Vec<Entry> {
        let batch = self.entries_from(self.unstable, usize::MAX);
        self.unstable = self.last_index() + 1;
        batch
    }

    /// The driver made the log durable up to `index` at `term`. Ignored if the entry is no
    /// longer ours (truncated since) or was not handed out.
    pub(crate) fn persisted_to(&mut self, index: Index, term: Term) -> bool {
        if index <= self.persisted || index >= self.unstable || self.term(index) != Some(term) {
            return false;
        }
        self.persisted = index;
        true
    }

    fn apply_bound(&self) -> Index {
        self.commit.min(self.persisted)
    }

    pub(crate) fn has_committed(&self) -> bool {
        self.apply_bound() > self.applying
    }

    /// Hands committed, durable entries over for application, each exactly once.
    pub(crate) fn take_committed(&mut self) -> Vec<Entry> {
        let bound = self.apply_bound();
        if bound <= self.applying {
            return Vec::new();
        }
        let batch: Vec<Entry> = (self.applying + 1..=bound)
            .filter_map(|index| self.entry(index).cloned())
            .collect();
        assert_eq!(
            batch.len() as Index,
            bound - self.applying,
            "committed entries must be held"
        );
        self.applying = bound;
        batch
    }

    /// Replace everything with an installed snapshot (the store is restored from it).
    pub(crate) fn restore(&mut self, snapshot: SnapshotMeta) {
        let index = snapshot.index;
        self.snapshot = snapshot;
        self.entries.clear();
        self.commit = index;
        self.persisted = index;
        self.unstable = index + 1;
        self.applying = index;
        self.applied = index;
    }

    /// Drop entries up to the snapshot's index (it must be held, applied and durable).
    /// Returns them, so the caller decides where the memory is freed.
    pub(crate) fn compact(&mut self, snapshot: SnapshotMeta) -> Vec<Entry> {
        let drop = (snapshot.index - self.snapshot.index) as usize;
        let kept = self.entries.split_off(drop);
        self.snapshot = snapshot;
        std::mem::replace(&mut self.entries, kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &term)| Entry {
                index: i as Index + 1,
                term,
                command: vec![i as u8],
            })
            .collect();
        RaftLog::new(SnapshotMeta::default(), entries, 0, 0)
    }

    #[test]
    fn append_truncates_only_conflicts() {
        let mut log = log_of(&[1, 1, 2, 2]);
        let same = vec![Entry {
            index: 2,
            term: 1,
            command: vec![1],
        }];
        assert_eq!(log.maybe_append(1, 1, same), Some(2));
        assert_eq!(log.last_index(), 4, "a stale append must not truncate");
        let new = vec![Entry {
            index: 3,
            term: 3,
            command: vec![],
        }];
        assert_eq!(log.maybe_append(2, 1, new), Some(3));
        assert_eq!((log.last_index(), log.last_term()), (3, 3));
        assert_eq!(log.persisted, 2);
        assert_eq!(log.maybe_append(3, 2, vec![]), None);
    }

    #[test]
    fn conflict_hints() {
        let log = log_of(&[1, 2, 2, 2, 5]);
        assert_eq!(log.conflict_hint(9), (6, 0));
        assert_eq!(log.conflict_hint(4), (2, 2));
        assert_eq!(log.last_index_of_term(2, 9), Some(4));
        assert_eq!(log.last_index_of_term(2, 3), Some(3));
        assert_eq!(log.last_index_of_term(3, 9), None);
    }

    #[test]
    fn batches_respect_bytes_but_hold_one() {
        let log = log_of(&[1, 1, 1]);
        assert_eq!(log.entries_from(1, 0).len(), 1);
        assert_eq!(log.entries_from(1, 2).len(), 2);
        assert_eq!(log.entries_from(4, 10).len(), 0);
    }

    #[test]
    fn applies_only_durable_committed_entries() {
        let mut log = log_of(&[1]);
        log.append(1, vec![9]);
        log.commit_to(2);
        assert_eq!(log.take_committed().len(), 1, "entry 2 is not durable yet");
        assert!(log.take_unstable().len() == 1 && log.persisted_to(2, 1));
        assert_eq!(log.take_committed()[0].index, 2);
        assert!(!log.has_committed());
    }
}
