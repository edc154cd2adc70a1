//! The vocabulary shared by the raft core, the WAL and the driver: terms, indexes, node
//! ids, log entries, the persisted hard state and snapshot metadata.
//!
//! These types are part of the on-disk format (the WAL serializes them with postcard), so a
//! change to a field here is a format change: bump the WAL format version and add a
//! golden-bytes test.

use serde::{Deserialize, Serialize};

/// A Raft term (Raft §5.1). Terms start at 0 (no election yet) and only grow.
pub type Term = u64;

/// A Raft log index (Raft §5.3). Index 0 is the empty position before the first entry;
/// the first real entry has index 1.
pub type Index = u64;

/// A node's identity within a cluster, e.g. `"n1"`. Chosen by the operator with `--id`.
pub type NodeId = String;

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log, starting at 1.
    pub index: Index,
    /// The leader's term when the entry was created.
    pub term: Term,
    /// The state machine command, opaque to Raft. Empty for the no-op entry a new leader
    /// appends at the start of its term (Raft §8); the state machine ignores empty commands.
    pub command: Vec<u8>,
}

/// The state a node must persist before it answers any message that depends on it
/// (Raft figure 2, "persistent state on all servers").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest index known to be committed. Persisting it is an optimisation (a restarted
    /// node may apply up to it at once); it may lag the true commit index, never lead it.
    pub commit: Index,
}

/// Describes a snapshot: the state machine as of `index`, which was written at `term`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log index the snapshot includes.
    pub index: Index,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The cluster's voting members as of `index`, sorted.
    pub voters: Vec<NodeId>,
}
