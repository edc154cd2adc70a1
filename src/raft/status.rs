//! What a core reports about itself.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::progress::ProgressState;
use super::types::{Index, NodeId, Term};

/// A node's role (Raft §5.1, thesis §9.6 for the pre-candidate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Runs a pre-vote: would it win an election? Its term has not changed.
    PreCandidate,
    /// Runs an election in a new term.
    Candidate,
    /// Leads its term.
    Leader,
}

impl fmt::Display for Role {
    /// Lowercase; a pre-candidate shows as "candidate" (the HTTP API knows three states).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Role::Follower => "follower",
            Role::PreCandidate | Role::Candidate => "candidate",
            Role::Leader => "leader",
        };
        f.write_str(name)
    }
}

/// The leader's view of one follower.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerProgress {
    /// The next index to send.
    pub next_index: Index,
    /// The highest index known replicated (durably) on the follower.
    pub match_index: Index,
    /// How the leader replicates to it.
    pub state: ProgressState,
    /// Unacknowledged appends in flight.
    pub inflight: usize,
}

/// A snapshot of a core's state for monitoring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// Whom it voted for in `term`.
    pub vote: Option<NodeId>,
    /// The leader it knows of, if any (itself when leading).
    pub leader: Option<NodeId>,
    /// The commit index.
    pub commit: Index,
    /// The last index the driver reported applied.
    pub applied: Index,
    /// The last index the driver reported durable.
    pub persisted: Index,
    /// The first index held in the log.
    pub first_index: Index,
    /// The last index in the log.
    pub last_index: Index,
    /// The term of the last entry.
    pub last_term: Term,
    /// The index of the latest snapshot (0 if none).
    pub snapshot_index: Index,
    /// The term of the latest snapshot (0 if none).
    pub snapshot_term: Term,
    /// Per-follower progress; empty unless leading.
    pub progress: BTreeMap<NodeId, PeerProgress>,
}
