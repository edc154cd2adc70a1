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

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

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
    let entries = entries_after(meta.as_ref(), recovered.base, recovered.entries, wal)?;
    let mut hard_state = recovered.hard_state;
    let applied = store.applied_index();
    hard_state.commit = hard_state.commit.max(applied);
    let restore = Restore {
        hard_state,
        snapshot: meta,
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

/// The WAL entries after the snapshot, resetting the WAL if it does not continue it.
fn entries_after(
    meta: Option<&SnapshotMeta>,
    base: Option<(u64, u64)>,
    mut entries: Vec<Entry>,
    wal: &mut Wal,
) -> Result<Vec<Entry>> {
    let Some(meta) = meta else { return Ok(entries) };
    let continues = base == Some((meta.index, meta.term))
        || entries
            .iter()
            .any(|entry| entry.index == meta.index && entry.term == meta.term);
    if continues {
        entries.retain(|entry| entry.index > meta.index);
        return Ok(entries);
    }
    tracing::warn!(
        index = meta.index,
        term = meta.term,
        "the WAL does not continue the snapshot; resetting it"
    );
    wal.reset(meta.index, meta.term)?;
    Ok(Vec::new())
}
