//! Startup: rebuild the store and the raft core's state from the newest usable snapshot and
//! the WAL after it.
//!
//! 1. List the snapshots, newest first, each verified. The newest valid one is used. A
//!    corrupt newer one is skipped with an error in the log, but only if the WAL still
//!    holds every entry after the snapshot used (its compaction base is at or below that
//!    snapshot's index). Otherwise acknowledged data exists nowhere else on this node and it
//!    refuses to start, saying why.
//! 2. Load the snapshot into a fresh store at its index.
//! 3. Hand the raft core the WAL entries after the snapshot, if the WAL continues it (it holds
//!    the snapshot's last entry with the same term, or its base is that very point). If it
//!    does not (a crash after a snapshot from the leader was saved but before the WAL was
//!    reset), the WAL is reset to the snapshot now, as the install would have done.
//!
//! The core gets the entries the WAL still holds before the snapshot too, up to
//! `catch_up_entries` of them: the margin that compaction keeps for followers a little
//! behind ([`super::snapshots`]). Its log then starts where a running node's would, at
//! [`SnapshotPolicy::compaction_point`] (or the WAL's base, if that is later), with the store
//! already applied up to the snapshot. Starting at the snapshot instead would throw that
//! margin away at every restart: after a rolling restart, a follower a few entries behind
//! would need the whole snapshot.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::snapshots::SnapshotPolicy;
use crate::error::{Error, Result};
use crate::raft::{Entry, Restore, SnapshotMeta};
use crate::snapshot::{SnapshotDir, SnapshotInfo};
use crate::store::{Map, Store, Versioned};
use crate::wal::{self, Wal};

/// What startup rebuilt.
pub(super) struct Rebuilt {
    pub store: Store,
    pub restore: Restore,
    pub snapshot: Option<SnapshotInfo>,
}

/// Rebuilds state from `snapshots` and the replayed WAL (see the module doc).
pub(super) fn rebuild(
    snapshots: &SnapshotDir,
    snapshot_dir: &Path,
    wal: &mut Wal,
    recovered: wal::Recovered,
    policy: &SnapshotPolicy,
) -> Result<Rebuilt> {
    let started = std::time::Instant::now();
    let wal_base = recovered.base.map_or(0, |(index, _)| index);
    let snapshot = choose_snapshot(snapshots, snapshot_dir, wal_base)?;
    let chosen = started.elapsed();
    let store = match &snapshot {
        Some(info) => load_store(info)?,
        None => Store::new(),
    };
    tracing::info!(
        choose_ms = chosen.as_millis() as u64,
        load_ms = (started.elapsed() - chosen).as_millis() as u64,
        wal_entries = recovered.entries.len(),
        "rebuilt the store from its snapshot"
    );
    let meta = snapshot.as_ref().map(|info| info.meta.clone());
    let (start, entries) = log_after(meta, recovered.base, recovered.entries, policy, wal)?;
    let mut hard_state = recovered.hard_state;
    let applied = store.applied_index();
    hard_state.commit = hard_state.commit.max(applied);
    let restore = Restore {
        hard_state,
        snapshot: start,
        entries,
        applied,
    };
    Ok(Rebuilt {
        store,
        restore,
        snapshot,
    })
}

fn choose_snapshot(
    snapshots: &SnapshotDir,
    path: &Path,
    wal_base: u64,
) -> Result<Option<SnapshotInfo>> {
    let mut skipped = Vec::new();
    let mut chosen = None;
    for listed in snapshots.list()? {
        match listed {
            Ok(info) => {
                chosen = Some(info);
                break;
            }
            Err(error) => skipped.push(error.to_string()),
        }
    }
    let usable_index = chosen
        .as_ref()
        .map_or(0, |info: &SnapshotInfo| info.meta.index);
    if wal_base > usable_index {
        let skipped = if skipped.is_empty() {
            String::from("none")
        } else {
            skipped.join("; ")
        };
        return Err(Error::DataDir {
            path: path.to_path_buf(),
            reason: format!(
                "cannot rebuild state: the WAL starts after index {wal_base} but the newest usable \
                 snapshot is at index {usable_index} (corrupt snapshots skipped: {skipped}); \
                 restore this node's data directory from a backup, or wipe it so the leader sends a snapshot"
            ),
        });
    }
    for error in &skipped {
        tracing::error!(%error, "skipping a corrupt snapshot; the WAL covers what it held");
    }
    Ok(chosen)
}

/// Keys to reserve room for up front when loading a snapshot: its header says how many it
/// holds, but a header is not trusted with an unbounded allocation.
const KEYS_PREALLOCATED_MAX: u64 = 10_000_000;

/// Loads a snapshot file into a fresh store at the snapshot's index (in bulk: see
/// [`Map::from_sorted`]).
pub(super) fn load_store(info: &SnapshotInfo) -> Result<Store> {
    let started = std::time::Instant::now();
    let mut entries = Vec::with_capacity(info.key_count.min(KEYS_PREALLOCATED_MAX) as usize);
    SnapshotDir::load(&info.path, |key, value, revision| {
        let versioned = Versioned {
            value: Bytes::from(value),
            revision,
        };
        entries.push((Arc::from(key), versioned));
        Ok(())
    })?;
    let loaded = started.elapsed();
    let data = Map::from_sorted(entries);
    tracing::info!(
        read_ms = loaded.as_millis() as u64,
        build_ms = (started.elapsed() - loaded).as_millis() as u64,
        "snapshot read and map built"
    );
    tracing::info!(
        index = info.meta.index,
        keys = data.len(),
        "loaded snapshot"
    );
    Ok(Store::from_parts(data, info.meta.index))
}

/// Where the raft core's log starts and its entries from there: from the policy's
/// compaction point before the snapshot (see the module doc), resetting the WAL to the
/// snapshot if it does not continue it.
fn log_after(
    meta: Option<SnapshotMeta>,
    base: Option<(u64, u64)>,
    mut entries: Vec<Entry>,
    policy: &SnapshotPolicy,
    wal: &mut Wal,
) -> Result<(Option<SnapshotMeta>, Vec<Entry>)> {
    let Some(meta) = meta else {
        return Ok((None, entries));
    };
    let continues = base == Some((meta.index, meta.term))
        || entries
            .iter()
            .any(|entry| entry.index == meta.index && entry.term == meta.term);
    if !continues {
        tracing::warn!(
            index = meta.index,
            term = meta.term,
            "the WAL does not continue the snapshot; resetting it"
        );
        wal.reset(meta.index, meta.term)?;
        return Ok((Some(meta), Vec::new()));
    }
    let (base_index, base_term) = base.unwrap_or((0, 0));
    let wanted = policy.compaction_point(meta.index).max(base_index);
    // The WAL's entries run contiguously from its base, so the term is always found; if it
    // were not, the log starts at the snapshot as it would without a margin.
    let term_at_wanted = if wanted == base_index {
        Some(base_term)
    } else {
        entries
            .iter()
            .find(|entry| entry.index == wanted)
            .map(|entry| entry.term)
    };
    let start = match term_at_wanted {
        Some(term) if wanted < meta.index => SnapshotMeta {
            index: wanted,
            term,
            voters: meta.voters.clone(),
        },
        _ => meta,
    };
    entries.retain(|entry| entry.index > start.index);
    Ok((Some(start), entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
        (from..=to)
            .map(|index| Entry {
                index,
                term,
                command: Vec::new(),
            })
            .collect()
    }

    fn start_of(base: Option<(u64, u64)>, held: Vec<Entry>, catch_up: u64) -> (u64, u64, u64) {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), wal::Options::default()).unwrap();
        let meta = SnapshotMeta {
            index: 300,
            term: 3,
            voters: vec!["n1".into()],
        };
        let policy = SnapshotPolicy {
            catch_up_entries: catch_up,
            ..SnapshotPolicy::default()
        };
        let (start, kept) = log_after(Some(meta), base, held, &policy, &mut wal).unwrap();
        let start = start.expect("a start");
        assert_eq!(start.voters, vec!["n1".to_string()]);
        assert_eq!(kept.first().map(|entry| entry.index), Some(start.index + 1));
        (start.index, start.term, kept.len() as u64)
    }

    #[test]
    fn the_log_starts_catch_up_entries_before_the_snapshot_or_at_the_wal_base() {
        let mut held = entries(201, 250, 2);
        held.extend(entries(251, 320, 3));
        assert_eq!(start_of(Some((200, 2)), held.clone(), 60), (240, 2, 80));
        assert_eq!(start_of(Some((200, 2)), held.clone(), 150), (200, 2, 120));
        assert_eq!(start_of(Some((200, 2)), held, 0), (300, 3, 20));
        assert_eq!(start_of(None, entries(1, 320, 3), 1000), (0, 0, 320));
    }
}
