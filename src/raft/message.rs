//! What nodes say to each other, and what the core hands its driver.

use serde::{Deserialize, Serialize};

use super::types::{Entry, HardState, Index, NodeId, SnapshotMeta, Term};

/// A message between two members. `term` is the sender's current term, except for a
/// `PreVote` (the term the sender would campaign in) and a granted `PreVoteResponse` (that
/// same future term), thesis §9.6.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// See the type's documentation.
    pub term: Term,
    /// What is said.
    pub body: Body,
}

/// The kinds of message (Raft figure 2, thesis §6.4, §9.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// "Would you vote for me in `term`?" Changes no state on either side.
    PreVote {
        /// The candidate's last log index.
        last_index: Index,
        /// The candidate's last log term.
        last_term: Term,
    },
    /// The answer to a `PreVote`.
    PreVoteResponse {
        /// Whether the vote would be granted.
        granted: bool,
    },
    /// RequestVote (Raft §5.2).
    Vote {
        /// The candidate's last log index.
        last_index: Index,
        /// The candidate's last log term.
        last_term: Term,
    },
    /// The answer to a `Vote`; sent only once the voter's vote is durable.
    VoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries (Raft §5.3): `entries` follow `(prev_index, prev_term)`.
    Append {
        /// The index just before the first entry.
        prev_index: Index,
        /// The term at `prev_index`.
        prev_term: Term,
        /// The entries, possibly none (a probe or a commit notice).
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
    },
    /// The answer to an `Append`; sent only once the appended entries are durable.
    AppendResponse {
        /// Accepted: the follower's log matches the leader's up to here (durably).
        /// Rejected: the rejected append's `prev_index`.
        index: Index,
        /// Set when the append was rejected.
        reject: Option<AppendReject>,
    },
    /// The leader's periodic keep-alive (Raft §5.2), also confirming leadership for reads.
    Heartbeat {
        /// The leader's commit index, capped at what the follower is known to hold.
        commit: Index,
        /// The leader's current read round (thesis §6.4).
        read_seq: u64,
    },
    /// The answer to a `Heartbeat`, echoing its read round.
    HeartbeatResponse {
        /// The read round being acknowledged.
        read_seq: u64,
    },
    /// A follower forwards a linearizable read to the leader (thesis §6.4).
    ReadIndex {
        /// The driver's id for the read.
        context: u64,
    },
    /// The leader's answer to a `ReadIndex`.
    ReadIndexResponse {
        /// The driver's id for the read.
        context: u64,
        /// The read index, or None if the read was refused (not the leader, deposed).
        index: Option<Index>,
    },
    /// InstallSnapshot (Raft §7): the follower needs entries the leader has compacted. The
    /// driver streams the snapshot data itself and steps this message into the follower
    /// once the data has arrived.
    Snapshot {
        /// Which snapshot.
        meta: SnapshotMeta,
    },
    /// The answer to a `Snapshot`: the follower's log now matches up to `index`.
    SnapshotResponse {
        /// The follower's new match index.
        index: Index,
    },
}

/// Why an append was rejected: the follower's hint for fast backtracking (thesis §3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendReject {
    /// The follower's first index of `conflict_term`, or its last index + 1 if its log is
    /// too short to hold `prev_index`.
    pub conflict_index: Index,
    /// The follower's term at `prev_index`, or 0 if it has no entry there.
    pub conflict_term: Term,
}

/// A linearizable read that may be served once the local state machine has applied
/// `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadState {
    /// The driver's id for the read, as passed to `Raft::read_index`.
    pub context: u64,
    /// The commit index that the read must observe.
    pub index: Index,
}

/// A batch of work for the driver. See the module documentation for the order in which it
/// MUST be handled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Changed hard state to persist.
    pub hard_state: Option<HardState>,
    /// A received snapshot to install: the driver restores the store from the data it
    /// received out of band and MUST discard its whole log (the log restarts after
    /// `snapshot.index`). Persisted before `hard_state` and `entries`.
    pub snapshot: Option<SnapshotMeta>,
    /// Entries to append. If `entries[0].index` is at or below the driver's last persisted
    /// index, the driver first truncates its log from there (a conflict).
    pub entries: Vec<Entry>,
    /// Messages that may be sent at once, even before the persist (thesis §10.2.1).
    pub messages: Vec<Message>,
    /// Messages that MUST NOT be sent before `snapshot`, `hard_state` and `entries` are
    /// durable (thesis §3.8).
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in order, exactly once.
    pub committed_entries: Vec<Entry>,
    /// Linearizable reads that may be served once applied reaches their index.
    pub read_states: Vec<ReadState>,
    /// Reads that can no longer complete here: fail them (the client may retry).
    pub aborted_reads: Vec<u64>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self == &Ready::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_postcard() {
        let entries = vec![Entry {
            index: 3,
            term: 2,
            command: b"put k v".to_vec(),
        }];
        let bodies = [
            Body::Append {
                prev_index: 2,
                prev_term: 2,
                entries,
                commit: 2,
            },
            Body::AppendResponse {
                index: 5,
                reject: Some(AppendReject {
                    conflict_index: 4,
                    conflict_term: 1,
                }),
            },
            Body::Snapshot {
                meta: SnapshotMeta {
                    index: 9,
                    term: 2,
                    voters: vec!["n1".into()],
                },
            },
            Body::ReadIndexResponse {
                context: 7,
                index: None,
            },
        ];
        for body in bodies {
            let message = Message {
                from: "n1".into(),
                to: "n2".into(),
                term: 2,
                body,
            };
            let bytes = postcard::to_stdvec(&message).expect("encode");
            assert_eq!(
                postcard::from_bytes::<Message>(&bytes).expect("decode"),
                message
            );
        }
    }

    #[test]
    fn a_heartbeat_is_compact() {
        let body = Body::Heartbeat {
            commit: 1000,
            read_seq: 3,
        };
        let message = Message {
            from: "n1".into(),
            to: "n2".into(),
            term: 5,
            body,
        };
        assert!(postcard::to_stdvec(&message).expect("encode").len() <= 12);
    }
}
