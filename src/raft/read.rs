//! The leader's queue of linearizable reads (thesis §6.4, ReadIndex).
//!
//! A read is registered with the leader's commit index at that moment and the next *read
//! round* number. Every heartbeat carries the current round; a follower echoes it. Once a
//! majority (the leader included) has echoed a round at or above a read's round, the leader
//! was still the leader after the read arrived, so its recorded commit index is at least
//! every index committed before the read began. One heartbeat round thus confirms every
//! read registered before it was sent, however many there are.

use std::collections::VecDeque;

use super::types::{Index, NodeId};

/// A read waiting for its round to be confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PendingRead {
    /// The driver's id for the read.
    pub(crate) context: u64,
    /// The follower that forwarded it, or None for a local read.
    pub(crate) from: Option<NodeId>,
    /// The commit index recorded when the read was registered.
    pub(crate) index: Index,
    /// The read round that must be confirmed.
    pub(crate) seq: u64,
}

/// Reads waiting at the leader.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReadQueue {
    /// The latest read round started.
    pub(crate) seq: u64,
    /// Registered reads, in round order.
    pub(crate) pending: VecDeque<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its own term: its
    /// commit index may still lag the cluster's (thesis §6.4 step 1), so they wait.
    pub(crate) waiting: Vec<(u64, Option<NodeId>)>,
}

impl ReadQueue {
    /// Registers a read at `index` in a new round and returns the round.
    pub(crate) fn register(&mut self, context: u64, from: Option<NodeId>, index: Index) -> u64 {
        self.seq += 1;
        let seq = self.seq;
        self.pending.push_back(PendingRead {
            context,
            from,
            index,
            seq,
        });
        seq
    }

    /// Removes and returns the reads whose round is at or below `confirmed`.
    pub(crate) fn take_confirmed(&mut self, confirmed: u64) -> Vec<PendingRead> {
        let count = self
            .pending
            .iter()
            .take_while(|read| read.seq <= confirmed)
            .count();
        self.pending.drain(..count).collect()
    }

    /// Removes every read, pending or waiting (the leader is stepping down).
    pub(crate) fn take_all(&mut self) -> Vec<(u64, Option<NodeId>)> {
        let pending = self.pending.drain(..).map(|read| (read.context, read.from));
        let mut all: Vec<_> = pending.collect();
        all.append(&mut self.waiting);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_round_confirms_all_earlier_reads() {
        let mut queue = ReadQueue::default();
        queue.register(1, None, 5);
        queue.register(2, Some("n2".into()), 5);
        let third = queue.register(3, None, 6);
        let confirmed = queue.take_confirmed(third - 1);
        assert_eq!(
            confirmed
                .iter()
                .map(|read| read.context)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(queue.take_all(), vec![(3, None)]);
    }
}
