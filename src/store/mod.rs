//! The replicated state machine: an ordered in-memory key-value map.
//!
//! Every node applies the same committed log entries in the same order (Raft §5.3), so
//! every node's [`Store`] holds the same map at the same applied index. The store itself
//! knows nothing of Raft beyond the index of each entry it applies.
//!
//! # Commands
//!
//! A log entry's `command` bytes are a postcard-encoded [`Command`]. An empty command is the
//! no-op a new leader appends at the start of its term; applying it only advances
//! `applied_index`.
//!
//! # Revisions
//!
//! The revision of a key is the raft index of the entry that last wrote it. It is unique
//! per write across the whole cluster and grows with time, so it serves as an ETag and for
//! conditional writes (`If-Match`, `If-None-Match: *`). A command whose condition fails is
//! still applied in the sense that it consumes its log index, but it changes nothing.
//!
//! # State hash
//!
//! [`Store::state_hash`] summarises the whole map (keys, values, revisions) in 64 bits so
//! that tests and operators can compare replicas cheaply. It is the wrapping sum of a
//! 64-bit FNV-1a hash per key, maintained incrementally on every apply: O(1) per write,
//! independent of iteration order.
//!
//! # Invariants
//!
//! - `applied_index` only grows, one entry at a time (asserted).
//! - Each stored revision is <= `applied_index`.
//!
//! # Point-in-time views
//!
//! [`Store::view`] copies the map in O(1) (see [`map`]): the copy shares every node of the
//! tree until the live map writes, and a write then copies only the nodes on its path. A
//! snapshot is serialized from such a view on another thread while the driver keeps
//! applying writes. Keys are `Arc<str>` and values `Bytes`, so copying a node copies
//! pointers, not key and value bytes.
//!
//! # Implementation caveats
//!
//! - The whole map lives in memory; durability comes from the WAL and snapshots.
//! - Keys are UTF-8 strings (they come from URL paths and JSON); values are arbitrary bytes.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::raft::{Entry, Index};

/// A precondition on a write, checked atomically when the write is applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// Always apply.
    #[default]
    None,
    /// Apply only if the key exists with exactly this revision (`If-Match: "R"`).
    Revision(Index),
    /// Apply only if the key does not exist (`If-None-Match: *`).
    Absent,
    /// Apply only if the key exists, whatever its revision (`If-Match: *`).
    Present,
}

/// A state machine command, carried in a log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The new value.
        #[serde(with = "crate::raft::byte_vec")]
        value: Vec<u8>,
        /// When to apply.
        condition: Condition,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: String,
        /// When to apply.
        condition: Condition,
    },
}

impl Command {
    /// Encodes the command for a log entry.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("encoding a command to memory cannot fail")
    }

    /// Decodes a command from a log entry's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Command> {
        postcard::from_bytes(bytes).map_err(|error| Error::Decode(format!("command: {error}")))
    }
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The no-op entry (or an entry the store skips).
    Noop,
    /// The key now holds the value at this revision.
    Put {
        /// The new revision (the entry's index).
        revision: Index,
    },
    /// The delete ran; `existed` says whether there was anything to delete.
    Deleted {
        /// Whether the key existed.
        existed: bool,
    },
    /// The condition did not hold; nothing changed.
    PreconditionFailed {
        /// The key's current revision, `None` if absent.
        current: Option<Index>,
    },
}

pub mod map;

pub use map::Map;

/// A stored value with the revision that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value bytes.
    pub value: Bytes,
    /// The raft index of the write.
    pub revision: Index,
}

/// The key-value state machine.
#[derive(Debug, Default)]
pub struct Store {
    data: Map,
    applied_index: Index,
    state_hash: u64,
}

impl Store {
    /// An empty store at index 0.
    pub fn new() -> Store {
        Store::default()
    }

    /// Builds a store from a snapshot's contents.
    pub fn from_parts(data: Map, applied_index: Index) -> Store {
        let state_hash = data.iter().fold(0u64, |hash, (key, versioned)| {
            hash.wrapping_add(key_hash(key, versioned))
        });
        Store {
            data,
            applied_index,
            state_hash,
        }
    }

    /// The index of the last applied entry.
    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// An order-independent hash of all keys, values and revisions (see module doc).
    pub fn state_hash(&self) -> u64 {
        self.state_hash
    }

    /// The whole map.
    pub fn data(&self) -> &Map {
        &self.data
    }

    /// A point-in-time copy of the map and the index it reflects, in O(1) (see the module
    /// doc): later writes to the store do not show in it.
    pub fn view(&self) -> (Map, Index) {
        (self.data.clone(), self.applied_index)
    }

    /// Looks up a key.
    pub fn get(&self, key: &str) -> Option<&Versioned> {
        self.data.get(key)
    }

    /// Up to `limit` keys starting with `prefix`, in order.
    pub fn keys_with_prefix(&self, prefix: &str, limit: usize) -> Vec<String> {
        self.data
            .range_from(prefix)
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(key, _)| key.to_string())
            .collect()
    }

    /// Applies the next committed entry. Entries must come in index order, exactly once.
    ///
    /// An entry whose command does not decode is skipped (it changes nothing) rather than
    /// stopping the node: every replica skips it alike, so they stay identical.
    pub fn apply(&mut self, entry: &Entry) -> Outcome {
        assert_eq!(
            entry.index,
            self.applied_index + 1,
            "entries must be applied in order, exactly once"
        );
        self.applied_index = entry.index;
        if entry.command.is_empty() {
            return Outcome::Noop;
        }
        match Command::decode(&entry.command) {
            Ok(command) => self.apply_command(command, entry.index),
            Err(error) => {
                tracing::error!(index = entry.index, %error, "skipping undecodable command");
                Outcome::Noop
            }
        }
    }

    /// Moves the applied index forward over entries the caller knows are no-ops for the
    /// store, e.g. when restoring a snapshot.
    pub fn set_applied_index(&mut self, index: Index) {
        assert!(
            index >= self.applied_index,
            "applied index must not go backwards"
        );
        self.applied_index = index;
    }

    fn apply_command(&mut self, command: Command, index: Index) -> Outcome {
        let (key, condition) = match &command {
            Command::Put { key, condition, .. } | Command::Delete { key, condition } => {
                (key, *condition)
            }
        };
        // An unconditional write (the common case) needs no lookup: one tree walk, not two.
        let current = || {
            self.data
                .get(key.as_str())
                .map(|versioned| versioned.revision)
        };
        let refused = match condition {
            Condition::None => None,
            Condition::Revision(revision) => Some(current()).filter(|now| *now != Some(revision)),
            Condition::Absent => Some(current()).filter(Option::is_some),
            Condition::Present => Some(current()).filter(Option::is_none),
        };
        if let Some(current) = refused {
            return Outcome::PreconditionFailed { current };
        }
        match command {
            Command::Put { key, value, .. } => {
                let versioned = Versioned {
                    value: Bytes::from(value),
                    revision: index,
                };
                self.insert(Arc::from(key), versioned);
                Outcome::Put { revision: index }
            }
            Command::Delete { key, .. } => Outcome::Deleted {
                existed: self.remove(&key),
            },
        }
    }

    fn insert(&mut self, key: Arc<str>, versioned: Versioned) {
        self.state_hash = self.state_hash.wrapping_add(key_hash(&key, &versioned));
        if let Some(old) = self.data.insert(key.clone(), versioned) {
            self.state_hash = self.state_hash.wrapping_sub(key_hash(&key, &old));
        }
    }

    fn remove(&mut self, key: &str) -> bool {
        match self.data.remove(key) {
            Some(old) => {
                self.state_hash = self.state_hash.wrapping_sub(key_hash(key, &old));
                true
            }
            None => false,
        }
    }
}

/// A 64-bit hash of one entry: FNV-1a over the key's length, the key and the revision
/// (short), hardware CRC32 over the value (long: this is what keeps rebuilding the hash of a
/// million-key store at startup in the tens of milliseconds), then the splitmix64 finalizer
/// so every input bit reaches all 64 output bits before the hashes are summed.
fn key_hash(key: &str, versioned: &Versioned) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let fnv = |hash: u64, bytes: &[u8]| {
        bytes.iter().fold(hash, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
        })
    };
    let mut hash = fnv(OFFSET_BASIS, &(key.len() as u64).to_le_bytes());
    hash = fnv(hash, key.as_bytes());
    hash = fnv(hash, &versioned.revision.to_le_bytes());
    let value_crc = crc32fast::hash(&versioned.value);
    hash ^= (u64::from(value_crc) << 32) | versioned.value.len() as u64;
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, command: &Command) -> Entry {
        Entry {
            index,
            term: 1,
            command: command.encode(),
        }
    }

    fn put(key: &str, value: &str, condition: Condition) -> Command {
        Command::Put {
            key: key.into(),
            value: value.into(),
            condition,
        }
    }

    #[test]
    fn put_get_delete_with_revisions() {
        let mut store = Store::new();
        assert_eq!(
            store.apply(&Entry {
                index: 1,
                term: 1,
                command: vec![]
            }),
            Outcome::Noop
        );
        assert_eq!(
            store.apply(&entry(2, &put("a", "1", Condition::None))),
            Outcome::Put { revision: 2 }
        );
        assert_eq!(store.get("a").map(|v| v.revision), Some(2));
        let delete = Command::Delete {
            key: "a".into(),
            condition: Condition::None,
        };
        assert_eq!(
            store.apply(&entry(3, &delete)),
            Outcome::Deleted { existed: true }
        );
        assert_eq!(
            store.apply(&entry(4, &delete)),
            Outcome::Deleted { existed: false }
        );
        assert_eq!(store.applied_index(), 4);
        assert!(store.is_empty());
    }

    #[test]
    fn conditions_are_checked_at_apply() {
        let mut store = Store::new();
        store.apply(&entry(1, &put("k", "v", Condition::Absent)));
        assert_eq!(
            store.apply(&entry(2, &put("k", "w", Condition::Absent))),
            Outcome::PreconditionFailed { current: Some(1) }
        );
        assert_eq!(
            store.apply(&entry(3, &put("k", "w", Condition::Revision(2)))),
            Outcome::PreconditionFailed { current: Some(1) }
        );
        assert_eq!(
            store.apply(&entry(4, &put("k", "w", Condition::Revision(1)))),
            Outcome::Put { revision: 4 }
        );
        assert_eq!(store.get("k").unwrap().value, &b"w"[..]);
    }

    #[test]
    fn prefix_listing_is_ordered_and_bounded() {
        let mut store = Store::new();
        for (index, key) in ["b/2", "a/1", "b/1", "b/3", "c"].iter().enumerate() {
            store.apply(&entry(index as Index + 1, &put(key, "x", Condition::None)));
        }
        assert_eq!(store.keys_with_prefix("b/", 10), vec!["b/1", "b/2", "b/3"]);
        assert_eq!(store.keys_with_prefix("b/", 2), vec!["b/1", "b/2"]);
        assert_eq!(store.keys_with_prefix("", 100).len(), 5);
    }

    #[test]
    fn state_hash_depends_on_content_not_history() {
        let mut one = Store::new();
        let mut two = Store::new();
        one.apply(&entry(1, &put("x", "1", Condition::None)));
        one.apply(&entry(2, &put("y", "2", Condition::None)));
        two.apply(&entry(1, &put("x", "1", Condition::None)));
        two.apply(&entry(2, &put("y", "2", Condition::None)));
        assert_eq!(one.state_hash(), two.state_hash());
        let rebuilt = Store::from_parts(one.data().clone(), 2);
        assert_eq!(rebuilt.state_hash(), one.state_hash());
        one.apply(&entry(
            3,
            &Command::Delete {
                key: "y".into(),
                condition: Condition::None,
            },
        ));
        assert_ne!(one.state_hash(), two.state_hash());
    }

    #[test]
    #[should_panic(expected = "in order")]
    fn out_of_order_apply_is_a_bug() {
        let mut store = Store::new();
        store.apply(&entry(2, &put("x", "1", Condition::None)));
    }

    #[test]
    fn undecodable_command_is_skipped_alike_everywhere() {
        let mut store = Store::new();
        let garbage = Entry {
            index: 1,
            term: 1,
            command: vec![0xff, 0xff, 0xff],
        };
        assert_eq!(store.apply(&garbage), Outcome::Noop);
        assert_eq!(store.applied_index(), 1);
    }
}
