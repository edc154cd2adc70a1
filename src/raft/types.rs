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
    #[serde(with = "byte_vec")]
    pub command: Vec<u8>,
}

/// Serde for a `Vec<u8>` as one run of bytes (`serialize_bytes`) instead of a sequence of
/// `u8` visited one at a time. In postcard both are a varint length and the raw bytes, so
/// the wire form does not change; only the speed does (about 2x for a 100-byte command in
/// an append).
pub mod byte_vec {
    use std::fmt;

    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes `bytes` as one run.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    /// Reads a run of bytes (or, from a format without one, a sequence of `u8`).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_bytes(ByteVec)
    }

    struct ByteVec;

    impl<'de> Visitor<'de> for ByteVec {
        type Value = Vec<u8>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("bytes")
        }

        fn visit_bytes<E>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // Preallocate no more than a small bound: the length is the sender's claim.
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(byte) = seq.next_element()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }
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

#[cfg(test)]
mod byte_vec_tests {
    use serde::{Deserialize, Serialize};

    use super::Entry;

    /// `Entry` as it was serialized before `byte_vec`: the command as a sequence of `u8`.
    #[derive(Serialize, Deserialize)]
    struct PlainEntry {
        index: u64,
        term: u64,
        command: Vec<u8>,
    }

    #[test]
    fn the_wire_form_is_that_of_a_plain_vec() {
        for length in [0, 1, 127, 128, 300] {
            let command: Vec<u8> = (0..length).map(|byte| byte as u8).collect();
            let entry = Entry {
                index: 7,
                term: 3,
                command: command.clone(),
            };
            let plain = PlainEntry {
                index: 7,
                term: 3,
                command,
            };
            let bytes = postcard::to_allocvec(&entry).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&plain).unwrap());
            assert_eq!(postcard::from_bytes::<Entry>(&bytes).unwrap(), entry);
        }
    }
}
