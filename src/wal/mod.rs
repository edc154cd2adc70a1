//! The segmented, CRC-checked write-ahead log (WAL).
//!
//! The raft log and the persisted hard state (term, vote, commit) live here. Nothing that
//! depends on a write is acknowledged before the write is in the WAL *and* fdatasync'd
//! (Raft §5, figure 2 "persistent state"; thesis §3.8). A node rebuilds its log and hard
//! state from the WAL on restart ([`Wal::open`]).
//!
//! The WAL is a directory of **segment files**. Each holds a fixed header followed by
//! **record frames**. Records are typed: raft entries, hard states, and the three
//! truncations (suffix on conflict, reset on snapshot install, prefix on compaction).
//! Records are written in **batches**: one batch is one `write` and one `fdatasync`
//! (group commit), and the last record of a batch carries a flag, so replay applies a
//! batch all or nothing.
//!
//! # FORMAT
//!
//! All integers are little-endian. Payloads are [postcard] (varint integers, length-
//! prefixed byte strings; documented and stable in postcard 1.x).
//!
//! ## Segment file
//!
//! ```text
//!  0        8        12       16                24               32       36       40
//!  +--------+--------+--------+----------------+----------------+--------+--------+------------
//!  | magic  |version |reserved|   sequence     |  first_index   |hdr crc |reserved| records...
//!  +--------+--------+--------+----------------+----------------+--------+--------+------------
//! ```
//!
//! | offset | size | field         | meaning                                                    |
//! |--------|------|---------------|------------------------------------------------------------|
//! | 0      | 8    | `magic`       | `b"KVSWAL\r\n"` ([`format::SEGMENT_MAGIC`])                |
//! | 8      | 4    | `version`     | u32, 2 ([`format::SEGMENT_VERSION`]); 1 is still read      |
//! | 12     | 4    | reserved      | zero                                                       |
//! | 16     | 8    | `sequence`    | u64, 1, 2, 3 ... without gaps                              |
//! | 24     | 8    | `first_index` | u64, last index + 1 when the segment was created           |
//! | 32     | 4    | `header crc`  | u32 CRC32 (IEEE, crc32fast) of bytes 0..32                 |
//! | 36     | 4    | reserved      | zero                                                       |
//! | 40     | ...  | records       | record frames, back to back, up to the end of the file     |
//!
//! File name: `<sequence>-<first_index>.wal`, both as 20-digit zero-padded decimals (e.g.
//! `00000000000000000003-00000000000000001025.wal`), so a name sort is log order. The name
//! must agree with the header. `*.wal.tmp` is a segment being created (deleted on open);
//! `torn-<segment stem>-<offset>.bin` holds bytes cut off by a torn-tail repair;
//! `*.wal.dead.tmp` is a dropped segment being deleted (TRUNCATION; deleted on open).
//!
//! Every segment starts with a batch of **start records**: a `Seal` of the segment before
//! it (if there is one), the current hard state, and (if the log has a snapshot base) a
//! `Compact` record naming it. So after older segments are deleted, the latest hard state
//! and base are still reachable by replay; and a sealed segment is vouched for by its
//! successor: where its records ended, and the log's last index and term then. Version 1
//! segments (before seals) have no `Seal`; they are read as before, and the first version 2
//! segment after one seals it like any other.
//!
//! ## Record frame
//!
//! ```text
//!  0                4                8      9
//!  +----------------+----------------+------+---------------------------+
//!  |  length (u32)  |  crc32 (u32)   | type |  payload (length bytes)   |
//!  +----------------+----------------+------+---------------------------+
//! ```
//!
//! | offset | size     | field     | meaning                                                 |
//! |--------|----------|-----------|---------------------------------------------------------|
//! | 0      | 4        | `length`  | payload bytes, <= [`RECORD_BYTES_MAX`]                  |
//! | 4      | 4        | `crc32`   | CRC32 (IEEE) over the type byte, then the payload       |
//! | 8      | 1        | `type`    | bits 0-6: record kind (0 never valid); bit 7: batch end |
//! | 9      | `length` | `payload` | postcard encoding of the record, nothing after it       |
//!
//! | kind | record     | payload (postcard, in order)                                   |
//! |------|------------|----------------------------------------------------------------|
//! | 1    | `Entry`    | index varint, term varint, command (varint length + bytes)     |
//! | 2    | `HardState`| term varint, vote (0, or 1 + varint length + UTF-8), commit    |
//! | 3    | `Truncate` | from varint: entries >= from are discarded                     |
//! | 4    | `Reset`    | index varint, term varint: the whole log is replaced            |
//! | 5    | `Compact`  | index varint, term varint: entries <= index are snapshotted    |
//! | 6    | `Seal`     | sequence, bytes, last index, last term (varints): the previous |
//! |      |            | segment's records ended at `bytes`, the log at that index/term |
//!
//! Zero is never a valid kind, so zeroed space (a file extended but not written) never
//! reads as a record: where a frame would start and every byte to the end of the file is
//! zero, the segment's records end (see PREALLOCATION).
//!
//! # PREALLOCATION
//!
//! A new segment is given its full `segment_bytes_max` at once, before its header is
//! written, and the newest segment is extended with `fallocate` when the WAL is opened.
//! Appends then write into space the file already has, so an fdatasync commits only data,
//! not a new file size: on the development machine (ext4) a small append + fdatasync took
//! p50 170 µs / p99 0.33 ms in fallocated space against 255 µs / 0.9 ms growing the file
//! (etcd preallocates its 64 MB segments for the same reason).
//!
//! Better still is space written once with zeros: `fallocate` leaves *unwritten* extents,
//! whose first write must also convert them, and that metadata rides with every
//! fdatasync (p50 156 µs against 97 µs for a 4 KiB append on the same disk). So a thread
//! fills the next segment's file with zeros ahead of time (`spare.wal.tmp`, a temporary
//! that `open` deletes; see `wal/spare.rs`), and ROTATION renames it into place instead of
//! creating a file. The first segment of a new log is filled in place; a rotation that
//! finds no spare ready uses `fallocate`. The directory therefore holds up to one segment
//! more than the log. Where the file system cannot allocate ahead (`EOPNOTSUPP`), segments
//! simply grow. [`Options::preallocate`] turns all of this off.
//!
//! The end of the log within a segment is therefore not the end of the file: it is the
//! first frame position from which the rest of the file is all zero. Replay stops there
//! (and appends continue there); [`SegmentMeta::bytes`] is that position.
//!
//! # APPEND (group commit)
//!
//! 1. [`Wal::save`] encodes, into one buffer: a `Truncate{from}` if the first entry
//!    overwrites the log (see TRUNCATION, suffix), the hard state if given, then the
//!    entries; the last record gets the batch-end flag. Commands of
//!    [`format::DETACHED_COMMAND_BYTES_MIN`] (1 KiB) or more are not copied: the buffer
//!    holds their frame header and varints, and the write below takes the command from
//!    the caller's entry (one `writev`). Limits and the log's continuity are checked
//!    here; nothing is written if one is broken.
//! 2. If the batch would push the active segment past `segment_bytes_max` (and the segment
//!    already holds a batch), ROTATION runs first.
//! 3. One write (`pwritev`, repeated only if the kernel takes part of it) of the whole
//!    batch at the end of the active segment's records.
//! 4. One `fdatasync` of the segment. **Commit point**: its successful return. Only then
//!    is the in-memory state changed and the call returns `Ok`: the caller may now
//!    acknowledge anything that depends on the batch.
//! 5. If step 3 or 4 fails, the WAL is **poisoned**: the in-memory state is as before
//!    the call, and every later call returns [`Error::Poisoned`] until the WAL is reopened
//!    (and replay reads what really reached the disk). A failed fsync is never retried
//!    as if the data were safe: on Linux the dirty pages may already be dropped.
//!
//! # ROTATION
//!
//! 1. Encode the new header (`sequence` + 1, `first_index` = last index + 1) and the start
//!    records (the seal of the active segment, hard state, base) as one batch.
//! 2. Make `<name>.wal.tmp`: rename the spare to it if one is ready (its zeros are
//!    durable already), else create it and preallocate it (PREALLOCATION); write them at
//!    its start, and fdatasync it.
//! 3. Rename it to `<name>.wal`.
//! 4. fsync the directory. **Commit point**: after it the new segment exists with a whole
//!    header; before it a crash leaves at most a `.tmp` file, deleted on open. The old
//!    segment is sealed: every byte of it was already fdatasync'd by APPEND.
//!
//! A segment therefore never has a torn header, and a batch never spans two segments.
//!
//! # TRUNCATION
//!
//! - **Suffix** (a follower overwrites conflicting uncommitted entries): a
//!   `Truncate{from}` record goes first in the same batch as the new entries (APPEND); the
//!   **commit point** is that batch's fdatasync. No file is changed in place: replay
//!   applies the truncation. `from` must be above the snapshot base.
//! - **Reset** (snapshot install): one batch holding `Reset{index, term}`; **commit
//!   point**: its fdatasync. Then the sealed segments are dropped, oldest first (they are
//!   dead: replay of the active segment alone ends with the reset). A crash in between
//!   leaves a few dead segments, still replayed correctly (the `Reset` discards them) and
//!   dropped next time.
//! - **Prefix** (compaction after a snapshot at `upto`): one batch holding
//!   `Compact{upto, term}`; **commit point**: its fdatasync. Then sealed segments whose
//!   entries are all `<= upto` (the next segment's `first_index - 1 <= upto`) are dropped
//!   oldest first, so the survivors are always a contiguous run of sequences. The active
//!   segment is never dropped.
//!
//! **Dropping a segment**: rename it to `<name>.wal.dead.tmp`, then fsync the directory;
//! from then on it is not part of the log (open deletes every `*.tmp`). A background
//! thread then deletes the file a few MiB at a time ([`fs::remove_gradually`]): freeing a
//! 64 MiB file in one go took about 20 ms here, a stall for the caller and, through the
//! file system's journal, for every concurrent fdatasync.
//!
//! # RECOVERY ([`Wal::open`])
//!
//! 1. List the directory; segments sort by sequence. Delete `*.wal.tmp` (interrupted
//!    ROTATION) and fsync the directory. An empty directory gets segment 1.
//! 2. Map each segment (memmap2) and check its header: magic, version, CRC, agreement with
//!    its name, `sequence` = previous + 1 (a gap is a missing segment: corruption), and
//!    `first_index` = the replayed last index + 1.
//! 3. Decode frames in order; check each length against [`RECORD_BYTES_MAX`] before
//!    slicing, then the CRC. Records of a batch are held until the batch-end record,
//!    then applied together: `Entry` must be last index + 1; `Truncate`, `Reset`,
//!    `Compact` as in TRUNCATION; `HardState` replaces the hard state.
//!    Where the rest of a segment is all zero after a complete batch, its records end
//!    (PREALLOCATION): that is not damage, in any segment. A sealed segment that lost
//!    batches this way is still caught by its successor's `Seal` (start records, version 2
//!    on), which must be in that segment's first batch and match where replay found the
//!    sealed segment's records end and the log's last index and term there; a mismatch is
//!    corruption naming the sealed segment and the offset where its records now end (a
//!    lost batch need not change the last index: a follower's overwrite of a conflicting
//!    suffix with as many entries does not). For a version 2 segment the seal also does
//!    step 2's `first_index` check. Without the seal, a version 2 segment after a replayed
//!    one is corruption, in the newest segment too (start records are written whole before
//!    the segment is renamed into place, so they are never a torn write).
//! 4. A bad frame (short, bad length, type, CRC or payload), or a batch without its end
//!    record at the end of the records, is a **torn tail** only if it is in the newest segment
//!    and no valid frame starts anywhere after it. Anything else is **corruption**:
//!    [`Error::Corruption`] naming the file, byte offset and affected index range, and the
//!    node refuses to start. Nothing is dropped silently.
//! 5. A torn tail is repaired: the bytes from the start of the unfinished batch to the
//!    last non-zero byte of the file are copied to `torn-<segment>-<offset>.bin`
//!    (fdatasync, directory fsync), then the segment is cut at that offset and
//!    fdatasync'd. **Commit point**: that fdatasync. [`Recovered::repaired`] says what was
//!    done. The cut segment is preallocated again when it is opened for appending.
//! 6. The log must begin right after the base (or at index 1); a gap at the front means a
//!    lost segment: corruption.
//!
//! Read-only opening ([`Options::read_only`], and [`verify`]) does steps 2-4 and 6 but
//! never deletes, repairs or creates anything. It does not take the data directory lock
//! (kvinspect runs next to a live node), so it copies segments instead of mapping them (a
//! node may shrink a dropped segment under a map: SIGBUS), and a replay that fails while
//! the segment list changed under it starts over, up to five times.
//!
//! # ASSUMPTIONS about the disk
//!
//! - `fdatasync` returning success means the file's data written before it, and its size,
//!   survive power loss. A failed `fdatasync` may have lost dirty pages silently (the
//!   "fsyncgate" behaviour of Linux): hence poisoning, never retrying.
//! - Writes are **not** atomic, at any size: a crash during a write may leave any prefix,
//!   or any subset of sectors, of the batch. The batch-end flag and per-record CRCs catch
//!   both; a batch is kept only if all its records are whole.
//! - Creating, renaming and deleting a file is durable only after an fsync of its
//!   directory; the WAL does one after each of these.
//! - Data that was fsync'd may still rot (bit flips, misdirected writes): per-record CRCs
//!   detect it on replay and on every [`Wal::entries`] read.
//! - No other process writes the directory (the data directory lock, [`crate::datadir`]).
//!
//! # LIMITS
//!
//! - [`ENTRY_BYTES_MAX`] (8 MiB): the largest command; checked on encode and decode.
//! - [`RECORD_BYTES_MAX`] (8 MiB + 64): the largest payload; a frame's length field is
//!   checked against it before anything is sliced or allocated.
//! - [`format::NODE_ID_BYTES_MAX`] (255): the largest vote in a hard state.
//! - [`BATCH_BYTES_MAX`] (256 MiB): the largest single batch.
//! - [`SEGMENT_BYTES_DEFAULT`] (64 MiB) for `segment_bytes_max`, which must lie within
//!   [`SEGMENT_BYTES_MIN`]..=[`SEGMENT_BYTES_LIMIT`]. A segment may pass its maximum by
//!   one batch (a batch is never split).
//!
//! # Implementation caveats
//!
//! - **Preallocated space is on disk**: every segment takes `segment_bytes_max` (64 MiB by
//!   default) from the moment it exists, written or not.
//! - Finding the end of a preallocated segment reads its zeroed tail once on open (memory
//!   speed; unwritten extents cost no disk reads).
//! - **Torn tail vs corruption** is decided conservatively: a damaged batch in the newest
//!   segment followed by *any* valid frame is called corruption, even though a torn
//!   multi-sector write could, in principle, land its later sectors and not an earlier
//!   one. That case then needs an operator (`kvinspect verify` shows it) instead of risking
//!   silent loss of an acknowledged batch.
//! - Entry locations (term, segment, offset, size: 32 bytes per entry) are kept in
//!   memory; [`Wal::entries`] reads from disk every time (no cache), one `pread` per run
//!   of adjacent records, and re-checks every CRC. A range outside
//!   `first_index()..=last_index()` is [`Error::InvalidInput`].
//! - Replay returns every entry after the base in memory ([`Recovered::entries`]): memory
//!   grows with the log kept, so compaction matters.
//! - Suffix truncation never rewrites files; the overwritten entries stay on disk until
//!   their segment is compacted away.
//! - Bytes after a repaired torn tail are kept in `torn-*.bin` files forever; an operator
//!   deletes them.
//! - Replay maps segments. A read-only reader (`kvinspect`) that runs while a node starts
//!   and repairs a torn tail may see the mapped file shrink and die of SIGBUS; the log is
//!   not harmed. Running kvinspect next to a node that is already up is safe (appends
//!   never change mapped bytes).
//! - A truncation record's effect is recomputed on every replay; nothing caches the
//!   replayed state, so replay time grows with the size of the log kept (compaction
//!   bounds it).

pub mod format;
pub mod fs;
mod log;
mod recovery;
mod spare;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use format::{BATCH_BYTES_MAX, ENTRY_BYTES_MAX, RECORD_BYTES_MAX, Record, RecordRef};
pub use log::Wal;
pub use recovery::{SegmentMeta, TornTail};

use crate::raft::{Entry, HardState, Index, Term};
use crate::{Error, Result};

/// Default `segment_bytes_max`: 64 MiB keeps replay of one segment short and the number of
/// files small, and compaction frees space in reasonable steps.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Smallest allowed `segment_bytes_max` (tests use tiny segments to force rotation).
pub const SEGMENT_BYTES_MIN: u64 = 128;
/// Largest allowed `segment_bytes_max`: offsets stay far below u32 limits of tools and a
/// single segment map stays modest.
pub const SEGMENT_BYTES_LIMIT: u64 = 1024 * 1024 * 1024;

/// How to open a [`Wal`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Rotate to a new segment before a batch would make the active one larger than this.
    pub segment_bytes_max: u64,
    /// Open without repairing, deleting or creating anything; every write fails. For
    /// `kvinspect` and [`verify`].
    pub read_only: bool,
    /// The file system to use ([`fs::StdFs`]; tests inject [`fs::FaultyFs`]).
    pub file_system: Arc<dyn fs::FileSystem>,
    /// Allocate each segment's `segment_bytes_max` bytes when it is created (PREALLOCATION
    /// in the module doc). On by default.
    pub preallocate: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_bytes_max: SEGMENT_BYTES_DEFAULT,
            read_only: false,
            file_system: Arc::new(fs::StdFs),
            preallocate: true,
        }
    }
}

impl Options {
    fn check(&self) -> Result<()> {
        if (SEGMENT_BYTES_MIN..=SEGMENT_BYTES_LIMIT).contains(&self.segment_bytes_max) {
            return Ok(());
        }
        Err(Error::InvalidInput(format!(
            "segment_bytes_max {} outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_LIMIT}",
            self.segment_bytes_max
        )))
    }
}

/// What [`Wal::open`] recovered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The last persisted hard state (default if none was ever saved).
    pub hard_state: HardState,
    /// The latest snapshot base (the log restarts after it), if any.
    pub base: Option<(Index, Term)>,
    /// The log after replay: contiguous, truncations applied, only entries after the base.
    pub entries: Vec<Entry>,
    /// A description of a torn tail that was repaired (file, offset, where the bytes were
    /// saved), if any.
    pub repaired: Option<String>,
}

/// Damage found by [`verify`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    /// The damaged file.
    pub file: PathBuf,
    /// Byte offset of the damage in `file`.
    pub offset: u64,
    /// The log indexes affected, when known.
    pub index_range: Option<(Index, Index)>,
    /// What is wrong.
    pub detail: String,
}

/// The result of [`verify`]: what the WAL holds, and any damage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files found, oldest first (sizes from the file system).
    pub segments: Vec<SegmentMeta>,
    /// The replayed hard state (None if corruption stopped replay).
    pub hard_state: Option<HardState>,
    /// The replayed snapshot base.
    pub base: Option<(Index, Term)>,
    /// First and last index of the replayed log (None if corruption stopped replay).
    pub index_range: Option<(Index, Index)>,
    /// A torn tail that [`Wal::open`] would repair (bytes it would move aside).
    pub torn_tail: Option<TornTail>,
    /// Corruption that would make [`Wal::open`] fail.
    pub corruption: Option<Damage>,
}

impl VerifyReport {
    /// True if every CRC checked and nothing needs repair.
    pub fn is_clean(&self) -> bool {
        self.torn_tail.is_none() && self.corruption.is_none()
    }
}

/// Checks every header and record CRC of the WAL in `dir` without changing anything.
/// Damage is reported in the result; `Err` only for I/O errors (e.g. no such directory).
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    let file_system = fs::StdFs;
    match recovery::replay_unlocked(&file_system, dir, false) {
        Ok(replayed) => Ok(VerifyReport {
            segments: replayed.segments,
            hard_state: Some(replayed.state.hard_state.clone()),
            base: replayed.state.base,
            index_range: Some((replayed.state.start + 1, replayed.state.last_index())),
            torn_tail: replayed.torn,
            corruption: None,
        }),
        Err(Error::Corruption {
            file,
            offset,
            index_range,
            detail,
        }) => {
            let (mut segments, _) = recovery::list_segments(&file_system, dir)?;
            for segment in &mut segments {
                segment.bytes = std::fs::metadata(&segment.path).map_or(0, |meta| meta.len());
            }
            Ok(VerifyReport {
                segments,
                hard_state: None,
                base: None,
                index_range: None,
                torn_tail: None,
                corruption: Some(Damage {
                    file,
                    offset,
                    index_range,
                    detail,
                }),
            })
        }
        Err(error) => Err(error),
    }
}
