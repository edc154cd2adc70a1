//! The leader's queue of linearizable reads (thesis §6.4, ReadIndex).
//!
//! A read is registered with the leader's commit index at that moment and the next *read
//! round* number. Every heartbeat carries the current round; a follower echoes it. Once a
//! majority (the leader included) has echoed a round at or above a read's round, the leader
//! was still the leader after the read arrived, so its recorded commit index is at least
//! every index committed before the read began. One heartbeat round thus confirms every
//! read registered before it was sent, however many there are.
//!
//! At most one round is in flight: a read that arrives while a round is out joins the next
//! one, which leaves as soon as the round in flight is confirmed (or with the next periodic
//! heartbeat, should answers be lost). Under many concurrent readers each round then
//! carries every read that arrived during the previous round trip, instead of a round per
//! driver iteration costing every follower a message and an answer; a lone reader still
//! gets its round at once.

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
    /// The latest read round reads were registered in.
    pub(crate) seq: u64,
    /// The latest read round whose heartbeats have gone out (`sent <= seq`).
    pub(crate) sent: u64,
    /// Registered reads, in round order.
    pub(crate) pending: VecDeque<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its own term: its
    /// commit index may still lag the cluster's (thesis §6.4 step 1), so they wait.
    pub(crate) waiting: Vec<(u64, Option<NodeId>)>,
}

impl ReadQueue {
    /// Registers a read at `index`, given the latest round a quorum has confirmed. It joins
    /// the newest round if that has not been sent yet, and otherwise opens a new one. Returns
    /// whether a round should be sent now: not while an earlier one is still unconfirmed.
    pub(crate) fn register(
        &mut self,
        context: u64,
        from: Option<NodeId>,
        index: Index,
        confirmed: u64,
    ) -> bool {
        let opened = self.seq == self.sent;
        if opened {
            self.seq += 1;
        }
        self.pending.push_back(PendingRead {
            context,
            from,
            index,
            seq: self.seq,
        });
        opened && confirmed >= self.sent
    }

    /// Whether a registered round waits to be sent and none is in flight any more.
    pub(crate) fn wants_round(&self, confirmed: u64) -> bool {
        self.seq > self.sent && confirmed >= self.sent
    }

    /// Heartbeats carrying round `seq` are going out; returns it.
    pub(crate) fn send_round(&mut self) -> u64 {
        self.sent = self.seq;
        self.seq
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

    fn contexts(reads: &[PendingRead]) -> Vec<u64> {
        reads.iter().map(|read| read.context).collect()
    }

    #[test]
    fn one_round_confirms_all_earlier_reads() {
        let mut queue = ReadQueue::default();
        assert!(queue.register(1, None, 5, 0), "nothing in flight: send");
        assert!(
            !queue.register(2, Some("n2".into()), 5, 0),
            "joins the unsent round"
        );
        let first = queue.send_round();
        assert!(!queue.register(3, None, 6, 0), "round 1 in flight: wait");
        assert!(!queue.register(4, None, 6, 0));
        assert!(!queue.wants_round(0));
        assert_eq!(contexts(&queue.take_confirmed(first)), [1, 2]);
        assert!(queue.wants_round(first), "round 1 confirmed: send round 2");
        assert_eq!(queue.send_round(), 2);
        assert!(queue.take_confirmed(first).is_empty());
        assert_eq!(queue.take_all(), vec![(3, None), (4, None)]);
    }

    #[test]
    fn a_lone_reader_gets_a_round_at_once() {
        let mut queue = ReadQueue::default();
        for round in 1..=3 {
            assert!(queue.register(round, None, 5, round - 1));
            assert_eq!(queue.send_round(), round);
            assert_eq!(contexts(&queue.take_confirmed(round)), [round]);
        }
    }
}
