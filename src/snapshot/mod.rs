//! Snapshot files: atomic write, verification, load, retention and chunked streaming for
//! InstallSnapshot (Raft §7; thesis §5.1-5.4).
//!
//! A snapshot is the whole state machine (every key with its value and revision) as of a
//! log index, plus what Raft needs to continue the log after it: that index, its term and
//! the voters as of that index. Once a snapshot is durable the WAL may drop the entries it
//! covers; a restart loads the newest valid snapshot and replays the WAL after it.
//!
//! The snapshot directory (`<data>/snapshots`, [`crate::datadir`]) holds a few snapshot
//! files; [`SnapshotDir`] writes, lists, verifies and prunes them. Entries are streamed in
//! and out (bounded memory): a body is never held in memory whole.
//!
//! # FORMAT
//!
//! All integers are little-endian. A file is a header (fixed part, then the voters), the
//! body (the entries, in strictly increasing key order), and a footer:
//!
//! ```text
//!  0        8        12       16               24               32               40       44       48
//!  +--------+--------+--------+----------------+----------------+----------------+--------+--------+
//!  | magic  |version |voters_b|  index         |  term          |  key_count     |reserved|hdr crc |
//!  +--------+--------+--------+----------------+----------------+----------------+--------+--------+
//!  48                  H = 48 + voters_b                      F = H + body_bytes F+8   F+12  F+16
//!  +-------------------+------------------ ... ---------------+------------------+-----+-----+
//!  | voters section    | body: entry, entry, ...              | body_bytes (u64) |b crc|f crc|
//!  +-------------------+------------------ ... ---------------+------------------+-----+-----+
//! ```
//!
//! | offset | size | field        | meaning                                                     |
//! |--------|------|--------------|-------------------------------------------------------------|
//! | 0      | 8    | `magic`      | `b"KVSNAP\r\n"` ([`format::SNAPSHOT_MAGIC`])                |
//! | 8      | 4    | `version`    | u32, 1 ([`format::SNAPSHOT_VERSION`])                       |
//! | 12     | 4    | `voters_b`   | u32, bytes of the voters section, <= [`format::VOTERS_BYTES_MAX`] |
//! | 16     | 8    | `index`      | u64, last log index the snapshot includes                   |
//! | 24     | 8    | `term`       | u64, term of the entry at `index`                           |
//! | 32     | 8    | `key_count`  | u64, number of entries in the body                          |
//! | 40     | 4    | reserved     | zero (checked)                                              |
//! | 44     | 4    | `hdr crc`    | u32 CRC32 (IEEE, crc32fast) of bytes 0..44, then the voters section |
//! | 48     | `voters_b` | voters | u16 count (<= [`VOTERS_MAX`]), then per voter: u8 length (<= [`NODE_ID_BYTES_MAX`]), UTF-8 id |
//! | H = 48 + `voters_b` | `body_bytes` | body | entries back to back (below)            |
//! | F = H + `body_bytes` | 8 | `body_bytes` | u64, bytes of the body                     |
//! | F + 8  | 4    | `b crc`      | u32 CRC32 of the body                                        |
//! | F + 12 | 4    | `f crc`      | u32 CRC32 of footer bytes F..F+12                            |
//!
//! The file length must be exactly `H + body_bytes + 16`; anything else is a truncated
//! (or extended) file. The body length and CRC are in a footer, not the header, because
//! the body is streamed: the writer learns them only at the end, and appends only (so
//! the same append-only file-system seam as the WAL, [`crate::wal::fs`], can inject
//! faults into every write). `key_count` is known in advance and sits in the header. A
//! zeroed or foreign file never passes: the magic is not zero, and every part has a CRC.
//!
//! ## Entry
//!
//! ```text
//!  0            4              8                  16
//!  +------------+--------------+------------------+-----------------+-------------------+
//!  | key_bytes  | value_bytes  | revision (u64)   | key (UTF-8)     | value             |
//!  +------------+--------------+------------------+-----------------+-------------------+
//! ```
//!
//! | offset | size          | field         | meaning                                     |
//! |--------|---------------|---------------|---------------------------------------------|
//! | 0      | 4             | `key_bytes`   | u32, <= [`KEY_BYTES_MAX`]                   |
//! | 4      | 4             | `value_bytes` | u32, <= [`VALUE_BYTES_MAX`]                 |
//! | 8      | 8             | `revision`    | u64, raft index that last wrote the key     |
//! | 16     | `key_bytes`   | `key`         | UTF-8; keys strictly increase through the body |
//! | 16 + `key_bytes` | `value_bytes` | `value` | raw bytes                              |
//!
//! Fixed-width lengths (rather than postcard varints) keep the decoder trivial and fast
//! (a 1M-key load is dominated by allocating the owned keys and values), at a cost of a
//! few bytes per entry.
//!
//! ## File names
//!
//! `snap-<index>-<term>.snap`, both as 20-digit zero-padded decimals (e.g.
//! `snap-00000000000000001234-00000000000000000007.snap`), so a name sort is index order.
//! The name must agree with the header. Every name ending in `.tmp` is a temporary file: a
//! snapshot being written (`snap-<index>-<term>.snap.<n>.tmp`) or received (`incoming-<index>-<term>.<n>.tmp`);
//! [`SnapshotDir::open`] deletes them (they are never valid snapshots).
//!
//! # WRITE ([`SnapshotDir::write`])
//!
//! 1. Create `snap-<index>-<term>.snap.<n>.tmp` (new, unique).
//! 2. Append the header, then the entries through a buffer of [`WRITE_BUFFER_BYTES`]
//!    (each full buffer is one append; the body CRC is computed as it goes), then the
//!    footer. Every [`SYNC_INTERVAL_BYTES`] the file is fdatasync'd and the writer sleeps
//!    if it is ahead of [`WRITE_BYTES_PER_SECOND_MAX`], so the snapshot never floods the
//!    disk the WAL syncs on. Limits, key order and `key_count` are checked on the way; on
//!    any error the temporary file is deleted and nothing else changed.
//! 3. `fdatasync` the temporary file (its data and size are durable).
//! 4. Rename it to `snap-<index>-<term>.snap` (atomic within the directory).
//! 5. fsync the directory. **Commit point**: its successful return. Before it, a crash
//!    leaves the previous set of snapshots plus at most a `.tmp` file (deleted on open) or,
//!    if the rename reached the disk, the complete new file (its data was synced in step
//!    3): never a partial file under a snapshot name.
//! 6. Retention: rename snapshot files beyond the newest `kept` (by index), oldest first,
//!    never the one just written nor one pinned ([`SnapshotDir::pin`]: received, accepted
//!    by the raft core, not yet loaded; or the one the node offers to lagging followers), to
//!    temporary names and fsync the directory (from here
//!    on they are gone: a crash leaves `.tmp` files, deleted on open); then delete them a
//!    few MiB at a time ([`crate::wal::fs::remove_gradually`]: unlinking a large file in
//!    one go stalls the WAL's fdatasyncs on the same file system) and fsync the directory.
//!    A crash before the first rename leaves extra old snapshots, deleted by the next
//!    retention. (An older snapshot committed after newer ones, by a concurrent write, is
//!    kept too: `kept + 1` files until the next one.)
//!
//! # INSTALL ([`SnapshotDir::receive`], [`Incoming`])
//!
//! A leader sends a snapshot file as [`Chunk`]s of raw file bytes ([`SnapshotDir::chunk`],
//! [`CHUNK_BYTES_DEFAULT`]), each with its own CRC32. The follower:
//!
//! 1. creates `incoming-<index>-<term>.<n>.tmp`;
//! 2. for each chunk: checks its CRC (bad: error for that chunk, the sender resends), that
//!    it belongs to this stream (index, term, total length), and that it continues at
//!    `next_offset`; a duplicate or out-of-order chunk is ignored and answered with
//!    `next_offset`, so the sender resumes from there (a lost chunk costs one round trip).
//!    Accepted bytes are appended to the file at once (memory: one chunk);
//! 3. when all bytes arrived ([`Incoming::finish`]): `fdatasync`, verify the whole file
//!    (header, footer, body CRC, header matches the announced meta), then WRITE steps 4-6
//!    (rename to its snapshot name, directory fsync = **commit point**, retention).
//!
//! Dropping an unfinished [`Incoming`] deletes its file; a crash leaves a `.tmp` file that
//! the next open deletes.
//!
//! # VERIFY and LOAD
//!
//! [`SnapshotDir::list`] checks every snapshot fully: the header CRC, the footer CRC, the
//! file length against `body_bytes`, the name against the header, and the body CRC
//! (reading the file in [`READ_BUFFER_BYTES`] pieces). Damage is an
//! [`Error::Corruption`] naming the file and the byte offset of the damaged part (0 for
//! the header, the body's first byte for a body CRC mismatch, the footer's offset for a
//! damaged footer or a truncated file).
//!
//! [`SnapshotDir::load`] streams the entries to a callback while computing the body CRC,
//! also checking key order and `key_count`; a body CRC mismatch is known only at the end,
//! so the caller must discard what it received when `load` fails.
//!
//! # ASSUMPTIONS about the disk
//!
//! As for the WAL ([`crate::wal`], ASSUMPTIONS): fsync'd data survives power loss; a
//! failed fsync may have lost data (so a failed write is abandoned, never retried as
//! if safe); writes are not atomic; create, rename and delete are durable only after a
//! directory fsync; data may rot after it was written (CRCs detect it); no other process
//! writes the directory (the data directory lock).
//!
//! # LIMITS
//!
//! - [`KEY_BYTES_MAX`], [`VALUE_BYTES_MAX`] (8 MiB each): what a WAL entry can carry
//!   ([`crate::wal::ENTRY_BYTES_MAX`]), so every key and value the store holds fits;
//!   checked on write and, before allocating, on decode.
//! - [`VOTERS_MAX`] (255) and [`NODE_ID_BYTES_MAX`] (255): membership is a handful of
//!   short ids; bound the header.
//! - [`FILE_BYTES_MAX`] (64 GiB): a snapshot larger than that cannot be a state machine
//!   that fits in memory; bounds what a receiver accepts to write.
//! - [`CHUNK_BYTES_MAX`] (16 MiB): the largest chunk read or accepted (the transport's
//!   envelope limit is 64 MiB).
//! - Memory: write holds one [`WRITE_BUFFER_BYTES`] buffer plus one entry; load one
//!   [`READ_BUFFER_BYTES`] buffer plus one entry; streaming one chunk.
//!
//! # Implementation caveats
//!
//! - **One body CRC**, not per block: a body bit flip is located to the body, not to the
//!   entry, and `load` detects it only at the end (the caller discards). Per-block CRCs
//!   would localise damage and let load check before it hands out entries; not needed for
//!   the fail-stop use made of it.
//! - `list` reads every byte of every snapshot (a few hundred MB for a few million keys),
//!   and `load` reads the one it loads again: startup pays two sequential reads.
//! - A snapshot that retention deletes while a leader streams it makes [`SnapshotDir::chunk`]
//!   fail with a not-found I/O error; the sender starts again with the newest snapshot.
//! - Two snapshots with the same index and term are the same state (Raft): writing one
//!   again replaces the file atomically.

pub mod format;
mod read;
mod stream;
mod write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::raft::{Index, SnapshotMeta, Term};
use crate::wal::fs::{FileSystem, StdFs, remove_gradually};
use crate::{Error, Result};

pub use read::{list_dir, verify};
pub use stream::Incoming;

/// How many snapshots retention keeps by default: the newest, plus two to fall back on if
/// it turns out to be damaged (while the WAL still covers the gap).
pub const SNAPSHOTS_KEPT_DEFAULT: usize = 3;
/// Default InstallSnapshot chunk: 1 MiB is large enough that per-chunk overhead (a round
/// trip, a CRC) is small, and small enough that a lost chunk costs little to resend.
pub const CHUNK_BYTES_DEFAULT: usize = 1024 * 1024;
/// Largest chunk [`SnapshotDir::chunk`] reads and [`Incoming::accept`] takes; well below
/// the transport's 64 MiB envelope limit.
pub const CHUNK_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest key in a snapshot: what a WAL entry can carry.
pub const KEY_BYTES_MAX: usize = crate::wal::ENTRY_BYTES_MAX;
/// Largest value in a snapshot: what a WAL entry can carry.
pub const VALUE_BYTES_MAX: usize = crate::wal::ENTRY_BYTES_MAX;
/// Most voters a snapshot names (fits the u16 count; clusters have 3 to 7).
pub const VOTERS_MAX: usize = 255;
/// Longest voter id, as for the WAL's hard state (fits the u8 length).
pub const NODE_ID_BYTES_MAX: usize = crate::wal::format::NODE_ID_BYTES_MAX;
/// Largest snapshot file accepted from a leader or read as a body length.
pub const FILE_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;
/// Write buffer: 256 KiB appends are large sequential writes, and bound the memory used.
pub const WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// Read buffer for verify and load: 1 MiB sequential reads.
pub const READ_BUFFER_BYTES: usize = 1024 * 1024;
/// A snapshot being written is made durable every this many bytes, and paced (see
/// [`WRITE_BYTES_PER_SECOND_MAX`]). Each of these flushes holds the disk while WAL
/// fdatasyncs wait behind it, so smaller is gentler: once the WAL's own fsyncs got faster
/// (zero-filled segments, 127,000 writes/s in `examples/snapshot_restart`), 1 MiB flushes
/// put the write p99 during snapshots at 2.0-2.3x of its value without, 256 KiB at
/// 1.3-1.9x (median 1.45x, three runs).
pub const SYNC_INTERVAL_BYTES: u64 = 256 * 1024;
/// The fastest a snapshot file is written, in bytes per second: the writer sleeps when it
/// gets ahead. Snapshots have no deadline; the WAL's fdatasyncs, which clients wait on,
/// share the disk with them. Measured on the development machine (a disk that writes
/// about 430 MB/s): while a 1 MiB-at-a-time writer ran flat out, a small WAL append +
/// fdatasync had p99 2-7 ms; capped at 50 MB/s, p99 0.7 ms (0.3 ms with no writer).
/// At 32 MiB/s a 1,000,000-key snapshot (122 MiB) takes about 4 s (and see
/// [`SYNC_INTERVAL_BYTES`] for the write p99 while it runs).
pub const WRITE_BYTES_PER_SECOND_MAX: u64 = 32 * 1024 * 1024;
/// Pause between the steps of deleting an old snapshot file, for the same reason.
const REMOVE_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// A snapshot file on disk.
#[derive(Clone, Debug)]
pub struct SnapshotInfo {
    /// Index, term and voters from the header.
    pub meta: SnapshotMeta,
    /// The file.
    pub path: PathBuf,
    /// Size of the file in bytes.
    pub file_bytes: u64,
    /// Number of keys in the snapshot.
    pub key_count: u64,
}

/// One piece of a snapshot file in flight from leader to follower (postcard on the wire).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The snapshot's last included index.
    pub index: Index,
    /// The snapshot's term.
    pub term: Term,
    /// Offset of `data` in the snapshot file.
    pub offset: u64,
    /// Size of the whole snapshot file.
    pub total_bytes: u64,
    /// The bytes at `offset`.
    pub data: Vec<u8>,
    /// CRC32 (IEEE) of `data`.
    pub crc: u32,
}

/// A snapshot file held back from retention ([`SnapshotDir::pin`]) until this is dropped.
#[derive(Debug)]
pub struct Pin {
    shared: Arc<Shared>,
    path: PathBuf,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pinned = self.shared.pinned();
        if let Some(position) = pinned.iter().position(|held| *held == self.path) {
            pinned.swap_remove(position);
        }
    }
}

/// The snapshot directory: writes, lists, prunes and receives snapshot files. Cheap to
/// clone (shared state); usable from several threads.
#[derive(Clone, Debug)]
pub struct SnapshotDir {
    shared: Arc<Shared>,
}

/// What a [`SnapshotDir`] and its [`Incoming`] streams share.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    kept: usize,
    file_system: Arc<dyn FileSystem>,
    /// Serialises rename + directory fsync + retention, so two commits never prune each
    /// other's files concurrently.
    commit: Mutex<()>,
    /// Files retention must not delete (see [`SnapshotDir::pin`]).
    pinned: Mutex<Vec<PathBuf>>,
}

impl SnapshotDir {
    /// Opens (creating if missing) the snapshot directory `dir`, keeping `kept` (>= 1)
    /// snapshots. Deletes leftover temporary files of interrupted writes and installs.
    pub fn open(dir: &Path, kept: usize) -> Result<SnapshotDir> {
        SnapshotDir::open_with(dir, kept, Arc::new(StdFs))
    }

    /// [`SnapshotDir::open`] with a given file system (tests inject
    /// [`crate::wal::fs::FaultyFs`]).
    pub fn open_with(
        dir: &Path,
        kept: usize,
        file_system: Arc<dyn FileSystem>,
    ) -> Result<SnapshotDir> {
        if kept == 0 {
            return Err(Error::InvalidInput(
                "snapshots kept must be at least 1".to_string(),
            ));
        }
        file_system
            .create_dir_all(dir)
            .map_err(|error| Error::io("create directory", dir, error))?;
        let shared = Shared {
            dir: dir.to_path_buf(),
            kept,
            file_system,
            commit: Mutex::new(()),
            pinned: Mutex::new(Vec::new()),
        };
        shared.remove_temporary_files()?;
        Ok(SnapshotDir {
            shared: Arc::new(shared),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.shared.dir
    }

    /// Holds `path` back from retention for as long as the returned [`Pin`] lives: a
    /// snapshot received from the leader and accepted by the raft core but not yet loaded,
    /// or the one the node offers to lagging followers, which a newer transfer committing
    /// meanwhile would otherwise delete when only one snapshot is kept. `None` if the file
    /// is gone.
    pub fn pin(&self, path: &Path) -> Result<Option<Pin>> {
        // Retention holds this lock from reading the pins until its renames are done: so
        // either it sees this pin, or the file is already gone (and stays unpinned).
        let mut pinned = self.shared.pinned();
        let exists = path
            .try_exists()
            .map_err(|error| Error::io("stat", path, error))?;
        if !exists {
            return Ok(None);
        }
        pinned.push(path.to_path_buf());
        Ok(Some(Pin {
            shared: self.shared.clone(),
            path: path.to_path_buf(),
        }))
    }

    /// Streams `entries` (key, value, revision), in strictly increasing key order, into a
    /// new snapshot file; see WRITE in the module doc for the steps and the commit point.
    /// `key_count` must be the number of entries (checked: an error otherwise, and no file).
    pub fn write<'a>(
        &self,
        meta: &SnapshotMeta,
        key_count: u64,
        entries: impl Iterator<Item = (&'a str, &'a [u8], u64)>,
    ) -> Result<SnapshotInfo> {
        write::write(&self.shared, meta, key_count, entries)
    }

    /// Every snapshot file, newest (highest index) first, each fully verified: `Ok(info)`
    /// or the error that disqualifies it ([`Error::Corruption`] naming file and offset).
    pub fn list(&self) -> Result<Vec<Result<SnapshotInfo>>> {
        read::list_dir(&self.shared.dir)
    }

    /// Streams a snapshot's entries to `on_entry` in key order, verifying as it goes, and
    /// returns its info. On `Err` the caller must discard what it received (the body CRC
    /// is checked at the end).
    pub fn load(
        path: &Path,
        on_entry: impl FnMut(String, Vec<u8>, u64) -> Result<()>,
    ) -> Result<SnapshotInfo> {
        read::load(path, on_entry)
    }

    /// Reads the chunk of `info`'s file at `offset` (at most `chunk_bytes`, capped at
    /// [`CHUNK_BYTES_MAX`]; shorter at the end of the file).
    pub fn chunk(info: &SnapshotInfo, offset: u64, chunk_bytes: usize) -> Result<Chunk> {
        stream::chunk(info, offset, chunk_bytes)
    }

    /// Begins receiving the snapshot `meta` of `total_bytes` into a temporary file here.
    pub fn receive(&self, meta: &SnapshotMeta, total_bytes: u64) -> Result<Incoming> {
        stream::receive(&self.shared, meta, total_bytes)
    }
}

impl Shared {
    /// Deletes every `*.tmp` file (interrupted writes and installs), then fsyncs the
    /// directory if anything was deleted.
    fn remove_temporary_files(&self) -> Result<()> {
        let names = self.list_names()?;
        let mut removed = 0;
        for name in names
            .iter()
            .filter(|name| name.ends_with(format::TEMPORARY_SUFFIX))
        {
            let path = self.dir.join(name);
            tracing::warn!(file = %path.display(), "removing a temporary snapshot file left by an interrupted write or install");
            self.file_system
                .remove_file(&path)
                .map_err(|error| Error::io("remove", &path, error))?;
            removed += 1;
        }
        if removed > 0 {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn list_names(&self) -> Result<Vec<String>> {
        self.file_system
            .list(&self.dir)
            .map_err(|error| Error::io("list", &self.dir, error))
    }

    fn sync_dir(&self) -> Result<()> {
        self.file_system
            .sync_dir(&self.dir)
            .map_err(|error| Error::io("fsync directory", &self.dir, error))
    }

    /// WRITE steps 4-6: rename `temporary` to its snapshot name, fsync the directory (the
    /// commit point), then retention.
    fn commit(&self, temporary: &Path, meta: &SnapshotMeta) -> Result<PathBuf> {
        let _guard = self
            .commit
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let path = self
            .dir
            .join(format::snapshot_file_name(meta.index, meta.term));
        self.file_system
            .rename(temporary, &path)
            .map_err(|error| Error::io("rename", temporary, error))?;
        self.sync_dir()?;
        self.retain(&path)?;
        Ok(path)
    }

    fn pinned(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.pinned
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Deletes snapshot files beyond the newest `kept`, oldest first, never `keep` or the
    /// pinned file, then fsyncs the directory.
    fn retain(&self, keep: &Path) -> Result<()> {
        // Held until the doomed files are renamed away (see `SnapshotDir::pin`).
        let pinned = self.pinned();
        let mut snapshots: Vec<(Index, Term, String)> = self
            .list_names()?
            .into_iter()
            .filter_map(|name| {
                let (index, term) = format::parse_snapshot_file_name(&name)?;
                Some((index, term, name))
            })
            .collect();
        if snapshots.len() <= self.kept {
            return Ok(());
        }
        snapshots.sort();
        let excess = snapshots.len() - self.kept;
        let mut doomed = Vec::new();
        for (_, _, name) in snapshots.iter().take(excess) {
            let path = self.dir.join(name);
            if path == keep || pinned.contains(&path) {
                continue;
            }
            let temporary = write::temporary_path(&self.dir, name);
            match self.file_system.rename(&path, &temporary) {
                Ok(()) => doomed.push((path, temporary)),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(Error::io("rename", &path, error)),
            }
        }
        drop(pinned);
        if doomed.is_empty() {
            return Ok(());
        }
        self.sync_dir()?;
        for (path, temporary) in doomed {
            match remove_gradually(self.file_system.as_ref(), &temporary, REMOVE_PAUSE) {
                Ok(()) => tracing::info!(file = %path.display(), "deleted an old snapshot"),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(Error::io("remove", &temporary, error)),
            }
        }
        self.sync_dir()
    }
}
