//! [`Map`]: an ordered map with O(shards) point-in-time copies and fast bulk loading.
//!
//! The keys are spread over [`SHARDS`] `BTreeMap`s by a hash of the key, each behind an
//! `Arc`. Cloning the map clones the `Arc`s, not the entries; a later write copies only the
//! shard it touches, once (`Arc::make_mut`), so the cost of a snapshot's copy is spread over
//! the writes that follow it, at most one shard (1/512 of the map) per write. Ordered
//! iteration merges the shards (a k-way merge over a binary heap).
//!
//! Why not a persistent B-tree (`imbl::OrdMap`, tried first)? Loading a 1,000,000-key
//! snapshot into it took about 2 s here, one insert at a time, against under half a second
//! for sharded `BTreeMap`s built in bulk from sorted input: restart time is dominated by
//! this load. Point lookups stay one hash and one `BTreeMap` search; the price is paid by
//! prefix listing, which searches every shard (tens of microseconds).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, btree_map};
use std::ops::Bound;
use std::sync::Arc;

use super::Versioned;

/// Number of shards. More shards make the copy-on-write step after a snapshot smaller and
/// prefix listing slower; 512 keeps both well under a millisecond at a million keys.
pub const SHARDS: usize = 512;

type Shard = BTreeMap<Arc<str>, Versioned>;

/// The store's map: see the module doc.
#[derive(Clone, Debug)]
pub struct Map {
    shards: Vec<Arc<Shard>>,
    len: usize,
}

impl Default for Map {
    fn default() -> Self {
        Map {
            shards: (0..SHARDS).map(|_| Arc::new(Shard::new())).collect(),
            len: 0,
        }
    }
}

fn shard_of(key: &str) -> usize {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % SHARDS as u64) as usize
}

impl Map {
    /// An empty map.
    pub fn new() -> Map {
        Map::default()
    }

    /// Builds a map from entries in strictly increasing key order, in bulk.
    pub fn from_sorted(entries: impl IntoIterator<Item = (Arc<str>, Versioned)>) -> Map {
        let mut buckets: Vec<Vec<(Arc<str>, Versioned)>> =
            (0..SHARDS).map(|_| Vec::new()).collect();
        let mut len = 0;
        for (key, versioned) in entries {
            buckets[shard_of(&key)].push((key, versioned));
            len += 1;
        }
        // `BTreeMap::from_iter` sorts (a no-op pass on sorted input) and builds in bulk.
        let shards = buckets
            .into_iter()
            .map(|bucket| Arc::new(bucket.into_iter().collect()))
            .collect();
        Map { shards, len }
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Looks up a key.
    pub fn get(&self, key: &str) -> Option<&Versioned> {
        self.shards[shard_of(key)].get(key)
    }

    /// Inserts, returning the previous value.
    pub fn insert(&mut self, key: Arc<str>, versioned: Versioned) -> Option<Versioned> {
        let shard = Arc::make_mut(&mut self.shards[shard_of(&key)]);
        let old = shard.insert(key, versioned);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes a key, returning its value. Does not copy a shared shard when the key is
    /// absent.
    pub fn remove(&mut self, key: &str) -> Option<Versioned> {
        let shard = &mut self.shards[shard_of(key)];
        if !shard.contains_key(key) {
            return None;
        }
        let old = Arc::make_mut(shard).remove(key);
        self.len -= usize::from(old.is_some());
        old
    }

    /// All entries in key order.
    pub fn iter(&self) -> Merge<'_> {
        Merge::new(
            self.shards
                .iter()
                .map(|shard| shard.range::<str, _>(..))
                .collect(),
        )
    }

    /// All entries in no particular order (shard by shard): cheaper than [`Map::iter`] when
    /// order does not matter.
    pub fn iter_unordered(&self) -> impl Iterator<Item = (&Arc<str>, &Versioned)> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }

    /// Entries with keys at or after `start`, in key order.
    pub fn range_from(&self, start: &str) -> Merge<'_> {
        let bounds = (Bound::Included(start), Bound::Unbounded);
        Merge::new(
            self.shards
                .iter()
                .map(|shard| shard.range::<str, _>(bounds))
                .collect(),
        )
    }
}

/// A k-way merge of the shards' ordered iterators.
pub struct Merge<'a> {
    ranges: Vec<btree_map::Range<'a, Arc<str>, Versioned>>,
    heads: BinaryHeap<Reverse<(&'a Arc<str>, usize)>>,
    values: Vec<Option<&'a Versioned>>,
}

impl<'a> Merge<'a> {
    fn new(mut ranges: Vec<btree_map::Range<'a, Arc<str>, Versioned>>) -> Merge<'a> {
        let mut heads = BinaryHeap::with_capacity(ranges.len());
        let mut values = vec![None; ranges.len()];
        for (shard, range) in ranges.iter_mut().enumerate() {
            if let Some((key, value)) = range.next() {
                heads.push(Reverse((key, shard)));
                values[shard] = Some(value);
            }
        }
        Merge {
            ranges,
            heads,
            values,
        }
    }
}

impl<'a> Iterator for Merge<'a> {
    type Item = (&'a Arc<str>, &'a Versioned);

    fn next(&mut self) -> Option<Self::Item> {
        let Reverse((key, shard)) = self.heads.pop()?;
        let value = self.values[shard].take().expect("a head has its value");
        if let Some((next_key, next_value)) = self.ranges[shard].next() {
            self.heads.push(Reverse((next_key, shard)));
            self.values[shard] = Some(next_value);
        }
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    fn versioned(revision: u64) -> Versioned {
        Versioned {
            value: Bytes::from(revision.to_string()),
            revision,
        }
    }

    proptest! {
        /// The map behaves like a `BTreeMap` under inserts and removes, and iterates in order.
        #[test]
        fn matches_a_btreemap(operations in prop::collection::vec((0u8..3, "[a-d]{0,3}"), 0..200)) {
            let mut map = Map::new();
            let mut reference = BTreeMap::new();
            for (revision, (kind, key)) in operations.into_iter().enumerate() {
                if kind == 0 {
                    prop_assert_eq!(map.remove(&key), reference.remove(key.as_str()));
                } else {
                    let value = versioned(revision as u64);
                    prop_assert_eq!(map.insert(Arc::from(key.as_str()), value.clone()), reference.insert(key, value));
                }
            }
            prop_assert_eq!(map.len(), reference.len());
            let merged: Vec<_> = map.iter().map(|(key, value)| (key.to_string(), value.clone())).collect();
            let expected: Vec<_> = reference.iter().map(|(key, value)| (key.clone(), value.clone())).collect();
            prop_assert_eq!(merged, expected);
            let from_b: Vec<_> = map.range_from("b").map(|(key, _)| key.to_string()).collect();
            let expected_b: Vec<_> = reference.range::<str, _>((Bound::Included("b"), Bound::Unbounded)).map(|(key, _)| key.clone()).collect();
            prop_assert_eq!(from_b, expected_b);
        }
    }

    #[test]
    fn clones_are_point_in_time() {
        let mut map = Map::new();
        map.insert(Arc::from("a"), versioned(1));
        let view = map.clone();
        map.insert(Arc::from("a"), versioned(2));
        map.insert(Arc::from("b"), versioned(3));
        assert_eq!(view.get("a").map(|v| v.revision), Some(1));
        assert_eq!(view.len(), 1);
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn bulk_build_from_sorted_input() {
        let entries: Vec<_> = (0..5000u64)
            .map(|n| (Arc::from(format!("k{n:05}")), versioned(n)))
            .collect();
        let map = Map::from_sorted(entries.clone());
        assert_eq!(map.len(), 5000);
        let keys: Vec<_> = map.iter().map(|(key, _)| key.clone()).collect();
        assert_eq!(
            keys,
            entries.into_iter().map(|(key, _)| key).collect::<Vec<_>>()
        );
    }
}
