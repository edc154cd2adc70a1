//! [`Map`]: an ordered map with O(1) point-in-time copies and bulk loading from sorted input.
//!
//! # Structure
//!
//! A persistent (copy-on-write) B+tree. Every node sits behind an `Arc`. Leaves hold up to
//! 64 entries `(Arc<str>, Versioned)` sorted by key; branches hold up to 64 `Arc` children
//! and the separator keys between them (`keys[i]` is greater than every key under
//! `children[i]` and at most every key under `children[i + 1]`). All leaves are at the same
//! depth, and every node but the root is at least half full.
//!
//! Cloning the map clones the root `Arc`. A write walks down with `Arc::make_mut`, which
//! copies a node only if something else (a clone) still refers to it: the first write
//! after a clone copies the nodes on one root-to-leaf path, later writes copy only the
//! nodes on their path not copied yet, and with no clone alive nothing is copied at all
//! (path copying). A copy clones pointers (`Arc<str>` keys, `Bytes` values, `Arc` children),
//! never key or value bytes.
//!
//! # Why
//!
//! [`Store::view`](super::Store::view) clones the map for a snapshot, which is serialized on
//! another thread while the driver keeps writing. The map used to be 512 hash shards of
//! `Arc<BTreeMap>`: the first write to a shard after a view copied the whole shard (about
//! 2,000 entries at a million keys), so right after a snapshot began the driver stalled for
//! 20-140 ms in one batch while most of the map was copied within a few batches. Here a
//! write after a view copies about depth x node size pointers (4 nodes of at most 64 at a
//! million keys), so the cost of a view is spread thinly over the writes that follow it.
//! Ordered iteration and `range_from` are also a plain tree walk now, where the shards
//! needed a k-way merge over all 512 of them.
//!
//! Why not `imbl::OrdMap` (tried first)? Loading a 1,000,000-key snapshot into it took
//! about 2 s here, one insert at a time, and restart time is dominated by that load.
//! [`Map::from_sorted`] builds this tree bottom-up from the snapshot's sorted entries in
//! linear time: full leaves first, then each level of branches over the one below.
//!
//! # Fanout
//!
//! Leaves hold up to 64 entries and branches up to 64 children (at least 32 of either
//! unless root). The fanout trades the cost of copying a node (pointers and reference
//! counts: up to 64 of them) against depth and node count. A lookup costs about log2(n) key
//! comparisons whatever the fanout (each reads a key behind its `Arc`), but narrower nodes
//! add levels of pointer chasing, and every node costs two allocations (the `Arc` and its
//! `Vec`'s buffer) and about 100 bytes of headers. At 64 a million keys make a tree 4 levels
//! deep whether nodes are full or half full, the per-node overhead stays a few percent of
//! the entries' own 56 bytes each, and the first write after a view copies at most 4 x 64
//! pointers, a few microseconds.
//!
//! # Costs
//!
//! - `clone`: O(1) (one reference count).
//! - `get`, `insert`, `remove`: O(log n). After a clone, a write copies at most one path:
//!   depth x node size pointers, plus a sibling when a removal borrows or merges.
//! - `remove` of an absent key copies nothing (it looks first).
//! - `iter`: O(1) amortized per entry; `range_from`: O(log n) to seek, then the same.
//! - `from_sorted`: O(n), nodes full.
//!
//! # Implementation caveats
//!
//! - Separators are keys copied (as `Arc`s) from the leaves when a node splits or is built.
//!   Removing a key does not update separators equal to it (they only bound the keys below
//!   them), so a removed key's string can stay alive as a separator until that node is
//!   rebuilt.
//! - Nodes are `Vec`s, not fixed arrays (no `unsafe`): an insert or remove shifts up to 64
//!   elements (at most 3.5 KiB of memmove in a leaf), and a copied node's buffer is exactly
//!   full, so the next insert into it reallocates.
//! - Whoever drops the last reference to a node frees it: the snapshot thread dropping its
//!   view frees the old versions of the nodes the driver copied meanwhile.
//! - The algorithms are generic over the fanout (`Tree<LEAF, BRANCH>`) only so the tests can
//!   run them on tiny nodes and exercise deep trees; [`Map`] fixes the fanout.

use std::fmt;
use std::iter::FusedIterator;
use std::mem;
use std::slice;
use std::sync::Arc;

use super::Versioned;

/// The most entries in a leaf (see the module doc for the choice).
const LEAF_MAX: usize = 64;

/// The most children of a branch.
const BRANCH_MAX: usize = 64;

type Entry = (Arc<str>, Versioned);

/// A node's new right sibling after a split, with the separator that goes before it.
type Split = (Arc<str>, Arc<Node>);

#[derive(Clone)]
enum Node {
    /// Entries in strictly increasing key order.
    Leaf(Vec<Entry>),
    Branch(Branch),
}

#[derive(Clone)]
struct Branch {
    /// `keys[i]` separates `children[i]` (keys below it) from `children[i + 1]` (keys at or
    /// above it); one fewer than the children.
    keys: Vec<Arc<str>>,
    children: Vec<Arc<Node>>,
}

impl Node {
    /// Entries of a leaf, children of a branch.
    fn width(&self) -> usize {
        match self {
            Node::Leaf(entries) => entries.len(),
            Node::Branch(branch) => branch.children.len(),
        }
    }
}

impl Branch {
    /// The index of the child whose range holds `key`.
    fn route(&self, key: &str) -> usize {
        self.keys.partition_point(|separator| &**separator <= key)
    }
}

fn search(entries: &[Entry], key: &str) -> Result<usize, usize> {
    entries.binary_search_by(|(probe, _)| (**probe).cmp(key))
}

/// The store's map: see the module doc.
#[derive(Clone, Default)]
pub struct Map {
    tree: Tree<LEAF_MAX, BRANCH_MAX>,
}

impl fmt::Debug for Map {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Map {
    /// An empty map.
    pub fn new() -> Map {
        Map::default()
    }

    /// Builds a map from entries in strictly increasing key order, in bulk (linear time).
    ///
    /// # Panics
    ///
    /// If the keys are not strictly increasing.
    pub fn from_sorted(entries: impl IntoIterator<Item = (Arc<str>, Versioned)>) -> Map {
        Map {
            tree: Tree::from_sorted(entries),
        }
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.tree.len
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.tree.len == 0
    }

    /// Looks up a key.
    pub fn get(&self, key: &str) -> Option<&Versioned> {
        self.tree.get(key)
    }

    /// Inserts, returning the previous value.
    pub fn insert(&mut self, key: Arc<str>, versioned: Versioned) -> Option<Versioned> {
        self.tree.insert(key, versioned)
    }

    /// Removes a key, returning its value. Copies no node when the key is absent.
    pub fn remove(&mut self, key: &str) -> Option<Versioned> {
        self.tree.remove(key)
    }

    /// All entries in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter::first(&self.tree.root)
    }

    /// Entries with keys at or after `start`, in key order. Seeks in O(log n).
    pub fn range_from(&self, start: &str) -> Iter<'_> {
        Iter::seek(&self.tree.root, start)
    }
}

/// The tree, generic over the fanout so the tests can use tiny nodes.
#[derive(Clone)]
struct Tree<const LEAF: usize, const BRANCH: usize> {
    root: Arc<Node>,
    len: usize,
}

impl<const LEAF: usize, const BRANCH: usize> Default for Tree<LEAF, BRANCH> {
    fn default() -> Self {
        Tree {
            root: Arc::new(Node::Leaf(Vec::new())),
            len: 0,
        }
    }
}

impl<const LEAF: usize, const BRANCH: usize> Tree<LEAF, BRANCH> {
    /// The fewest entries in a leaf other than the root.
    const LEAF_MIN: usize = {
        assert!(LEAF >= 2 && BRANCH >= 4, "nodes too small to split in two");
        LEAF / 2
    };

    /// The fewest children of a branch other than the root.
    const BRANCH_MIN: usize = BRANCH / 2;

    fn from_sorted(entries: impl IntoIterator<Item = Entry>) -> Self {
        let mut leaves: Vec<Vec<Entry>> = Vec::new();
        let mut current: Vec<Entry> = Vec::with_capacity(LEAF);
        let mut len = 0;
        for entry in entries {
            if current.len() == LEAF {
                leaves.push(mem::replace(&mut current, Vec::with_capacity(LEAF)));
            }
            let previous = current.last().or_else(|| leaves.last()?.last());
            if let Some((previous, _)) = previous {
                assert!(
                    *previous < entry.0,
                    "from_sorted: keys not strictly increasing ({previous:?}, then {:?})",
                    entry.0
                );
            }
            current.push(entry);
            len += 1;
        }
        // Holds the last entries, or is the empty root of an empty map.
        leaves.push(current);
        rebalance_tail(&mut leaves, Self::LEAF_MIN);
        if leaves.len() == 1 {
            let entries = leaves.pop().expect("one leaf");
            return Tree {
                root: Arc::new(Node::Leaf(entries)),
                len,
            };
        }
        // Each node with the smallest key under it, which becomes its separator.
        let mut level: Vec<(Arc<str>, Arc<Node>)> = leaves
            .into_iter()
            .map(|entries| (entries[0].0.clone(), Arc::new(Node::Leaf(entries))))
            .collect();
        while level.len() > 1 {
            let mut groups = Vec::with_capacity(level.len().div_ceil(BRANCH));
            let mut nodes = level.into_iter();
            loop {
                let group: Vec<_> = nodes.by_ref().take(BRANCH).collect();
                if group.is_empty() {
                    break;
                }
                groups.push(group);
            }
            rebalance_tail(&mut groups, Self::BRANCH_MIN);
            level = groups
                .into_iter()
                .map(|group| {
                    let mut group = group.into_iter();
                    let (smallest, first) = group.next().expect("groups are not empty");
                    let mut keys = Vec::with_capacity(group.len());
                    let mut children = Vec::with_capacity(group.len() + 1);
                    children.push(first);
                    for (key, child) in group {
                        keys.push(key);
                        children.push(child);
                    }
                    (smallest, Arc::new(Node::Branch(Branch { keys, children })))
                })
                .collect();
        }
        let (_, root) = level.pop().expect("one root");
        Tree { root, len }
    }

    fn get(&self, key: &str) -> Option<&Versioned> {
        let mut node = &*self.root;
        loop {
            match node {
                Node::Leaf(entries) => {
                    return search(entries, key).ok().map(|index| &entries[index].1);
                }
                Node::Branch(branch) => node = &branch.children[branch.route(key)],
            }
        }
    }

    fn insert(&mut self, key: Arc<str>, versioned: Versioned) -> Option<Versioned> {
        let (old, split) = Self::insert_into(&mut self.root, key, versioned);
        if let Some((separator, right)) = split {
            let left = self.root.clone();
            self.root = Arc::new(Node::Branch(Branch {
                keys: vec![separator],
                children: vec![left, right],
            }));
        }
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Inserts under `node`, returning the previous value and, if `node` split, the
    /// separator and the new right sibling.
    fn insert_into(
        node: &mut Arc<Node>,
        key: Arc<str>,
        versioned: Versioned,
    ) -> (Option<Versioned>, Option<Split>) {
        match Arc::make_mut(node) {
            Node::Leaf(entries) => match search(entries, &key) {
                Ok(index) => (Some(mem::replace(&mut entries[index].1, versioned)), None),
                Err(index) => {
                    entries.insert(index, (key, versioned));
                    if entries.len() <= LEAF {
                        return (None, None);
                    }
                    let right = entries.split_off(entries.len() / 2);
                    let separator = right[0].0.clone();
                    (None, Some((separator, Arc::new(Node::Leaf(right)))))
                }
            },
            Node::Branch(branch) => {
                let index = branch.route(&key);
                let (old, split) = Self::insert_into(&mut branch.children[index], key, versioned);
                let Some((separator, child)) = split else {
                    return (old, None);
                };
                branch.keys.insert(index, separator);
                branch.children.insert(index + 1, child);
                if branch.children.len() <= BRANCH {
                    return (old, None);
                }
                let middle = branch.children.len() / 2;
                let children = branch.children.split_off(middle);
                let keys = branch.keys.split_off(middle);
                let separator = branch.keys.pop().expect("a split branch has keys");
                let right = Arc::new(Node::Branch(Branch { keys, children }));
                (old, Some((separator, right)))
            }
        }
    }

    fn remove(&mut self, key: &str) -> Option<Versioned> {
        // Looking first keeps a shared path from being copied for nothing.
        self.get(key)?;
        let old = Self::remove_from(&mut self.root, key);
        let only_child = match &*self.root {
            Node::Branch(branch) if branch.children.len() == 1 => Some(branch.children[0].clone()),
            _ => None,
        };
        if let Some(child) = only_child {
            self.root = child;
        }
        self.len -= usize::from(old.is_some());
        old
    }

    /// Removes under `node`, which may be left underfull for its parent to repair.
    fn remove_from(node: &mut Arc<Node>, key: &str) -> Option<Versioned> {
        match Arc::make_mut(node) {
            Node::Leaf(entries) => {
                let index = search(entries, key).ok()?;
                Some(entries.remove(index).1)
            }
            Node::Branch(branch) => {
                let index = branch.route(key);
                let old = Self::remove_from(&mut branch.children[index], key);
                if Self::underfull(&branch.children[index]) {
                    Self::repair(branch, index);
                }
                old
            }
        }
    }

    fn min_width(node: &Node) -> usize {
        match node {
            Node::Leaf(_) => Self::LEAF_MIN,
            Node::Branch(_) => Self::BRANCH_MIN,
        }
    }

    fn underfull(node: &Node) -> bool {
        node.width() < Self::min_width(node)
    }

    fn can_lend(node: &Node) -> bool {
        node.width() > Self::min_width(node)
    }

    /// Brings the underfull `children[index]` back to at least half full: borrows one
    /// entry or child from a sibling that can spare it, or else merges with a sibling.
    fn repair(branch: &mut Branch, index: usize) {
        let count = branch.children.len();
        if index > 0 && Self::can_lend(&branch.children[index - 1]) {
            Self::borrow_from_left(branch, index);
        } else if index + 1 < count && Self::can_lend(&branch.children[index + 1]) {
            Self::borrow_from_right(branch, index);
        } else if index > 0 {
            Self::merge(branch, index - 1);
        } else {
            // A branch has at least two children (the root is collapsed when it has one).
            Self::merge(branch, index);
        }
    }

    fn borrow_from_left(branch: &mut Branch, index: usize) {
        let (before, after) = branch.children.split_at_mut(index);
        let lender = Arc::make_mut(&mut before[index - 1]);
        let child = Arc::make_mut(&mut after[0]);
        match (lender, child) {
            (Node::Leaf(from), Node::Leaf(to)) => {
                let entry = from.pop().expect("a lender has entries");
                branch.keys[index - 1] = entry.0.clone();
                to.insert(0, entry);
            }
            (Node::Branch(from), Node::Branch(to)) => {
                let moved = from.children.pop().expect("a lender has children");
                let key = from.keys.pop().expect("a lender has keys");
                let separator = mem::replace(&mut branch.keys[index - 1], key);
                to.keys.insert(0, separator);
                to.children.insert(0, moved);
            }
            _ => unreachable!("siblings are at the same depth"),
        }
    }

    fn borrow_from_right(branch: &mut Branch, index: usize) {
        let (before, after) = branch.children.split_at_mut(index + 1);
        let child = Arc::make_mut(&mut before[index]);
        let lender = Arc::make_mut(&mut after[0]);
        match (lender, child) {
            (Node::Leaf(from), Node::Leaf(to)) => {
                to.push(from.remove(0));
                branch.keys[index] = from[0].0.clone();
            }
            (Node::Branch(from), Node::Branch(to)) => {
                let moved = from.children.remove(0);
                let key = from.keys.remove(0);
                let separator = mem::replace(&mut branch.keys[index], key);
                to.keys.push(separator);
                to.children.push(moved);
            }
            _ => unreachable!("siblings are at the same depth"),
        }
    }

    /// Merges `children[left + 1]` into `children[left]`.
    fn merge(branch: &mut Branch, left: usize) {
        let right = Arc::unwrap_or_clone(branch.children.remove(left + 1));
        let separator = branch.keys.remove(left);
        match (Arc::make_mut(&mut branch.children[left]), right) {
            (Node::Leaf(to), Node::Leaf(from)) => to.extend(from),
            (Node::Branch(to), Node::Branch(from)) => {
                to.keys.push(separator);
                to.keys.extend(from.keys);
                to.children.extend(from.children);
            }
            _ => unreachable!("siblings are at the same depth"),
        }
    }
}

/// If the last chunk is below `min` (and not alone), spreads it and the (full) chunk before
/// it evenly over the two: both then hold at least half of a full chunk.
fn rebalance_tail<T>(chunks: &mut Vec<Vec<T>>, min: usize) {
    if chunks.len() < 2 || chunks[chunks.len() - 1].len() >= min {
        return;
    }
    let last = chunks.pop().expect("two chunks");
    let previous = chunks.last_mut().expect("two chunks");
    previous.extend(last);
    let right = previous.split_off(previous.len() / 2);
    chunks.push(right);
}

/// An ordered cursor over a [`Map`]'s entries: the current leaf's remaining entries, and for
/// each branch on the path to it, the children not visited yet.
pub struct Iter<'a> {
    stack: Vec<slice::Iter<'a, Arc<Node>>>,
    leaf: slice::Iter<'a, Entry>,
}

impl<'a> Iter<'a> {
    /// Positioned at the first entry.
    fn first(root: &'a Node) -> Iter<'a> {
        let mut iter = Iter {
            stack: Vec::new(),
            leaf: Default::default(),
        };
        iter.descend(root);
        iter
    }

    /// Positioned at the first entry with a key at or after `start`.
    fn seek(root: &'a Node, start: &str) -> Iter<'a> {
        let mut stack = Vec::new();
        let mut node = root;
        loop {
            match node {
                Node::Leaf(entries) => {
                    let index = entries.partition_point(|(key, _)| &**key < start);
                    return Iter {
                        stack,
                        leaf: entries[index..].iter(),
                    };
                }
                Node::Branch(branch) => {
                    let mut children = branch.children[branch.route(start)..].iter();
                    node = children.next().expect("route is in range");
                    stack.push(children);
                }
            }
        }
    }

    /// Follows first children down from `node` to a leaf.
    fn descend(&mut self, mut node: &'a Node) {
        loop {
            match node {
                Node::Leaf(entries) => {
                    self.leaf = entries.iter();
                    return;
                }
                Node::Branch(branch) => {
                    let mut children = branch.children.iter();
                    node = children.next().expect("a branch has children");
                    self.stack.push(children);
                }
            }
        }
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a Arc<str>, &'a Versioned);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((key, versioned)) = self.leaf.next() {
                return Some((key, versioned));
            }
            // The leaf is done: go up to the nearest branch with a child left, then down.
            loop {
                let children = self.stack.last_mut()?;
                if let Some(child) = children.next() {
                    self.descend(child);
                    break;
                }
                self.stack.pop();
            }
        }
    }
}

impl FusedIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::ops::Bound;

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    fn versioned(revision: u64) -> Versioned {
        Versioned {
            value: Bytes::from(revision.to_string()),
            revision,
        }
    }

    fn key(n: u32) -> Arc<str> {
        Arc::from(format!("k{n:05}"))
    }

    /// A tree with tiny nodes: a couple of thousand keys make it many levels deep.
    type Small = Tree<4, 4>;

    impl<const LEAF: usize, const BRANCH: usize> Tree<LEAF, BRANCH> {
        fn entries(&self) -> Vec<(Arc<str>, Versioned)> {
            Iter::first(&self.root)
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        }

        fn entries_from(&self, start: &str) -> Vec<(Arc<str>, Versioned)> {
            Iter::seek(&self.root, start)
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        }

        fn depth(&self) -> usize {
            let mut node = &*self.root;
            let mut depth = 1;
            while let Node::Branch(branch) = node {
                node = &branch.children[0];
                depth += 1;
            }
            depth
        }

        /// Checks every structural invariant, panicking on the first broken one.
        fn check(&self) {
            let mut leaf_depth = None;
            let count = self.check_node(&self.root, None, None, true, 1, &mut leaf_depth);
            assert_eq!(count, self.len, "len matches the entries");
        }

        /// Checks `node`, whose keys must lie in `[lower, upper)`; returns its entry count.
        fn check_node(
            &self,
            node: &Node,
            lower: Option<&str>,
            upper: Option<&str>,
            root: bool,
            depth: usize,
            leaf_depth: &mut Option<usize>,
        ) -> usize {
            let in_bounds = |key: &str| {
                lower.is_none_or(|lower| lower <= key) && upper.is_none_or(|upper| key < upper)
            };
            match node {
                Node::Leaf(entries) => {
                    assert_eq!(*leaf_depth.get_or_insert(depth), depth, "uniform depth");
                    assert!(entries.len() <= LEAF, "leaf overfull");
                    assert!(root || entries.len() >= Self::LEAF_MIN, "leaf underfull");
                    assert!(
                        entries.windows(2).all(|pair| pair[0].0 < pair[1].0),
                        "sorted"
                    );
                    assert!(
                        entries.iter().all(|(key, _)| in_bounds(key)),
                        "leaf keys in bounds"
                    );
                    entries.len()
                }
                Node::Branch(branch) => {
                    let children = branch.children.len();
                    assert_eq!(branch.keys.len() + 1, children, "one more child than keys");
                    assert!(children <= BRANCH, "branch overfull");
                    assert!(
                        children >= if root { 2 } else { Self::BRANCH_MIN },
                        "branch underfull"
                    );
                    assert!(
                        branch.keys.windows(2).all(|pair| pair[0] < pair[1]),
                        "separators sorted"
                    );
                    assert!(
                        branch.keys.iter().all(|key| in_bounds(key)),
                        "separators in bounds"
                    );
                    (0..children)
                        .map(|index| {
                            let low = if index == 0 {
                                lower
                            } else {
                                Some(&*branch.keys[index - 1])
                            };
                            let high = branch.keys.get(index).map(|key| &**key).or(upper);
                            self.check_node(
                                &branch.children[index],
                                low,
                                high,
                                false,
                                depth + 1,
                                leaf_depth,
                            )
                        })
                        .sum()
                }
            }
        }
    }

    fn reference_from(
        reference: &BTreeMap<Arc<str>, Versioned>,
        start: &str,
    ) -> Vec<(Arc<str>, Versioned)> {
        reference
            .range::<str, _>((Bound::Included(start), Bound::Unbounded))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    /// Runs `operations` (remove or insert of key `k{n:05}`) on a tree built from the even
    /// keys below `initial` and on a `BTreeMap`, comparing results, then everything else.
    fn run_against_btreemap<const LEAF: usize, const BRANCH: usize>(
        initial: u32,
        operations: &[(bool, u32)],
        keyspace: u32,
    ) -> Result<(), TestCaseError> {
        let mut reference: BTreeMap<Arc<str>, Versioned> = (0..initial)
            .step_by(2)
            .map(|n| (key(n), versioned(0)))
            .collect();
        let mut tree = Tree::<LEAF, BRANCH>::from_sorted(reference.clone());
        tree.check();
        for (revision, &(remove, n)) in operations.iter().enumerate() {
            let key = key(n);
            if remove {
                prop_assert_eq!(tree.remove(&key), reference.remove(&key));
            } else {
                let value = versioned(revision as u64 + 1);
                prop_assert_eq!(
                    tree.insert(key.clone(), value.clone()),
                    reference.insert(key, value)
                );
            }
            if revision % 256 == 0 {
                tree.check();
            }
        }
        tree.check();
        prop_assert_eq!(tree.len, reference.len());
        let expected: Vec<_> = reference
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        prop_assert_eq!(tree.entries(), expected);
        for n in 0..keyspace.max(initial) + 1 {
            let key = key(n);
            prop_assert_eq!(tree.get(&key), reference.get(&key));
        }
        for start in ["", "k", "k0", "k01", "k00999", "k01000", "k015", "k1", "l"] {
            prop_assert_eq!(tree.entries_from(start), reference_from(&reference, start));
        }
        // Drain in a scattered order: merges and root collapses all the way down to a leaf.
        let mut keys: Vec<_> = reference.keys().cloned().collect();
        keys.sort_by_key(|key| key.chars().rev().collect::<String>());
        for (count, key) in keys.iter().enumerate() {
            prop_assert_eq!(tree.remove(key), reference.remove(key));
            if count % 64 == 0 {
                tree.check();
            }
        }
        tree.check();
        prop_assert_eq!((tree.len, tree.depth()), (0, 1));
        Ok(())
    }

    /// Operations with a per-case share of removes, so some runs grow the tree and others
    /// shrink it down through merges and root collapses.
    fn operations(keyspace: u32, count: usize) -> impl Strategy<Value = Vec<(bool, u32)>> {
        (0.1f64..0.9).prop_flat_map(move |removes| {
            prop::collection::vec((prop::bool::weighted(removes), 0..keyspace), 0..count)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Tiny nodes over 2,000 keys: deep trees, splits, borrows and merges at every level.
        #[test]
        fn small_nodes_match_a_btreemap(initial in 0u32..2000, operations in operations(2000, 4000)) {
            run_against_btreemap::<4, 4>(initial, &operations, 2000)?;
        }

        /// The real fanout, starting from up to 12,000 keys (three levels) so that removes
        /// also merge and borrow branches and collapse the root.
        #[test]
        fn map_fanout_matches_a_btreemap(initial in 0u32..12_000, operations in operations(12_000, 4000)) {
            run_against_btreemap::<LEAF_MAX, BRANCH_MAX>(initial, &operations, 12_000)?;
        }

        /// Clones taken at random moments keep what the map held at that moment while the
        /// map and the other clones keep changing.
        #[test]
        fn clones_are_point_in_time_under_random_operations(
            operations in prop::collection::vec((0u8..40, 0u32..2000), 0..3000),
        ) {
            let mut tree = Small::default();
            let mut map = Map::new();
            let mut reference = BTreeMap::new();
            let mut views = Vec::new();
            for (revision, (kind, n)) in operations.into_iter().enumerate() {
                let key = key(n);
                match kind {
                    0 => views.push((tree.clone(), map.clone(), reference.clone())),
                    1..15 => {
                        tree.remove(&key);
                        map.remove(&key);
                        reference.remove(&key);
                    }
                    _ => {
                        let value = versioned(revision as u64);
                        tree.insert(key.clone(), value.clone());
                        map.insert(key.clone(), value.clone());
                        reference.insert(key, value);
                    }
                }
                // Writing to a view must not show in the map either.
                if kind == 1 && let Some((view, _, _)) = views.last_mut() {
                    view.insert(Arc::from("view only"), versioned(0));
                    view.remove("view only");
                }
            }
            views.push((tree, map.clone(), reference));
            for (tree, map, reference) in &views {
                let expected: Vec<_> = reference.iter().map(|(key, value)| (key.clone(), value.clone())).collect();
                tree.check();
                map.tree.check();
                prop_assert_eq!(tree.entries(), expected.clone());
                prop_assert_eq!(map.tree.entries(), expected);
                prop_assert_eq!(map.len(), reference.len());
            }
        }
    }

    /// The number of nodes in `tree` not shared with `other` (compared by position).
    fn unshared_nodes(tree: &Node, other: &Node) -> usize {
        match (tree, other) {
            (Node::Branch(a), Node::Branch(b)) => {
                1 + a
                    .children
                    .iter()
                    .zip(&b.children)
                    .filter(|(a, b)| !Arc::ptr_eq(a, b))
                    .map(|(a, b)| unshared_nodes(a, b))
                    .sum::<usize>()
            }
            _ => 1,
        }
    }

    #[test]
    fn writes_copy_one_path_after_a_clone_and_nothing_without() {
        let mut map = Map::from_sorted((0..20_000).map(|n| (key(n), versioned(0))));
        assert_eq!(map.tree.depth(), 3);
        let view = map.clone();
        assert!(map.remove("absent").is_none());
        assert!(map.remove("k99999").is_none());
        assert!(
            Arc::ptr_eq(&map.tree.root, &view.tree.root),
            "an absent key copies nothing"
        );

        map.insert(key(12_345), versioned(1));
        assert_eq!(
            unshared_nodes(&map.tree.root, &view.tree.root),
            3,
            "one path copied"
        );
        assert_eq!(view.get("k12345"), Some(&versioned(0)));
        drop(view);

        let root = Arc::as_ptr(&map.tree.root);
        let leaf = |map: &Map| {
            let mut node = &*map.tree.root;
            while let Node::Branch(branch) = node {
                node = &branch.children[branch.route("k12345")];
            }
            node as *const Node
        };
        let before = leaf(&map);
        map.insert(key(12_345), versioned(2));
        map.remove("k12346");
        assert_eq!(
            Arc::as_ptr(&map.tree.root),
            root,
            "no clone alive: nothing copied"
        );
        assert_eq!(leaf(&map), before);
    }

    #[test]
    fn bulk_build_equals_inserting_one_by_one() {
        fn compare<const LEAF: usize, const BRANCH: usize>(size: u32) {
            let entries: Vec<_> = (0..size)
                .map(|n| (key(n), versioned(u64::from(n))))
                .collect();
            let built = Tree::<LEAF, BRANCH>::from_sorted(entries.clone());
            built.check();
            let mut inserted = Tree::<LEAF, BRANCH>::default();
            for (key, value) in entries.iter().rev() {
                inserted.insert(key.clone(), value.clone());
            }
            inserted.check();
            assert_eq!(built.len, size as usize);
            assert_eq!(built.entries(), entries, "size {size}");
            assert_eq!(inserted.entries(), entries, "size {size}");
        }
        for size in [0, 1, 3, 4, 5, 15, 16, 17, 64, 65, 1000, 2049] {
            compare::<4, 4>(size);
        }
        let (leaf, branch) = (LEAF_MAX as u32, BRANCH_MAX as u32);
        for size in [
            0,
            1,
            leaf - 1,
            leaf,
            leaf + 1,
            leaf * branch,
            leaf * branch + 1,
            100_000,
        ] {
            compare::<LEAF_MAX, BRANCH_MAX>(size);
        }
    }

    #[test]
    #[should_panic(expected = "not strictly increasing")]
    fn bulk_build_rejects_unsorted_input() {
        Map::from_sorted([(key(2), versioned(0)), (key(1), versioned(0))]);
    }

    #[test]
    fn range_from_and_debug() {
        let map = Map::from_sorted((0..1000).map(|n| (key(n * 2), versioned(0))));
        let keys = |start| {
            map.range_from(start)
                .take(3)
                .map(|(key, _)| key.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys("k00063"), ["k00064", "k00066", "k00068"]);
        assert_eq!(keys("k00064"), ["k00064", "k00066", "k00068"]);
        assert_eq!(keys("k01997"), ["k01998"]);
        assert!(keys("k01999").is_empty());
        assert_eq!(keys(""), ["k00000", "k00002", "k00004"]);
        assert_eq!(map.iter().count(), 1000);
        let mut small = Map::new();
        assert_eq!(format!("{small:?}"), "{}");
        small.insert(Arc::from("a"), versioned(7));
        assert!(format!("{small:?}").starts_with("{\"a\": Versioned {"));
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

    /// Prints rough timings; run in release:
    /// `cargo test --release --lib store::map -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing report, run by hand in release"]
    fn timing_report() {
        use std::hint::black_box;
        use std::time::Instant;

        const N: u64 = 1_000_000;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move |below: u64| {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % below
        };
        let name = |n: u64| -> Arc<str> { Arc::from(format!("key/{n:012}")) };
        let value = Versioned {
            value: Bytes::from(vec![7u8; 100]),
            revision: 1,
        };
        // Even numbers are in the map; inserts draw from twice the range (half overwrite).
        let entries: Vec<_> = (0..N).map(|n| (name(n * 2), value.clone())).collect();
        let started = Instant::now();
        let mut map = Map::from_sorted(entries);
        println!("from_sorted, 1M entries:           {:>8.1} ms", ms(started));
        println!("depth: {}", map.tree.depth());

        let probes: Vec<_> = (0..N).map(|_| name(random(2 * N))).collect();
        let started = Instant::now();
        let found = probes.iter().filter(|key| map.get(key).is_some()).count();
        println!(
            "1M random gets:                    {:>8.1} ms ({found} found)",
            ms(started)
        );

        let started = Instant::now();
        for key in &probes {
            black_box(map.insert(key.clone(), value.clone()));
        }
        println!(
            "1M random inserts over the map:    {:>8.1} ms (now {} keys)",
            ms(started),
            map.len()
        );

        let batch = |random: &mut dyn FnMut(u64) -> u64| -> Vec<Arc<str>> {
            (0..10_000).map(|_| name(random(4 * N))).collect()
        };
        let keys = batch(&mut random);
        let started = Instant::now();
        for key in keys {
            black_box(map.insert(key, value.clone()));
        }
        println!("10,000 random inserts, no clone:   {:>8.1} ms", ms(started));

        let keys = batch(&mut random);
        let view = map.clone();
        let started = Instant::now();
        let mut slowest = 0.0f64;
        for key in keys {
            let one = Instant::now();
            black_box(map.insert(key, value.clone()));
            slowest = slowest.max(one.elapsed().as_secs_f64() * 1e6);
        }
        println!(
            "10,000 random inserts, after clone:{:>8.1} ms (slowest {slowest:.0} us)",
            ms(started)
        );
        let started = Instant::now();
        drop(view);
        println!("dropping the clone:                {:>8.1} ms", ms(started));

        let started = Instant::now();
        let count = map.range_from("key/000000500000").take(100).count();
        println!(
            "range_from + 100 entries:          {:>8.3} ms ({count})",
            ms(started)
        );
        let started = Instant::now();
        let count = map.iter().count();
        println!(
            "full iteration:                    {:>8.1} ms ({count})",
            ms(started)
        );
    }

    fn ms(started: std::time::Instant) -> f64 {
        started.elapsed().as_secs_f64() * 1000.0
    }
}
