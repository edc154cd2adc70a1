//! Replay: reading segments in order, checking every CRC, applying records, and telling a
//! torn tail (repairable) from corruption (fail-stop). See RECOVERY in [`crate::wal`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::format::{
    self, FRAME_HEADER_BYTES, Frame, RecordRef, SEGMENT_HEADER_BYTES, Seal, SegmentHeader,
};
use super::fs::FileSystem;
use crate::raft::{Entry, HardState, Index, Term};
use crate::{Error, Result};

/// A segment file known to the WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentMeta {
    /// Sequence number (from the header and name).
    pub sequence: u64,
    /// First index at creation (from the header and name).
    pub first_index: Index,
    /// Full path of the file.
    pub path: PathBuf,
    /// Bytes holding the header and records: where the next append goes. The file may be
    /// longer (space preallocated and not yet written).
    pub bytes: u64,
}

/// Where an entry's record lives on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub term: Term,
    pub sequence: u64,
    pub offset: u64,
    pub frame_bytes: u32,
}

/// A torn tail found at the end of the newest segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The newest segment.
    pub file: PathBuf,
    /// Offset of the start of the incomplete batch; the file is cut here on repair.
    pub offset: u64,
    /// Bytes written from `offset` on (to the last non-zero byte of the file).
    pub bytes: u64,
    /// The index the first entry of the torn batch would have had (never acknowledged:
    /// its fdatasync cannot have returned).
    pub index: Index,
    /// What was wrong with the first bad record.
    pub detail: String,
}

/// The log state built by replay.
#[derive(Debug, Default)]
pub(crate) struct ReplayState {
    pub hard_state: HardState,
    pub base: Option<(Index, Term)>,
    /// The index before the first loaded entry.
    pub start: Index,
    pub locations: VecDeque<Location>,
    /// Loaded entries, parallel to `locations` (only when collecting).
    pub entries: Option<Vec<Entry>>,
}

impl ReplayState {
    pub fn last_index(&self) -> Index {
        self.start + self.locations.len() as u64
    }

    pub fn base_index(&self) -> Index {
        self.base.map_or(0, |(index, _)| index)
    }

    /// The term of `index`: of the base if `index` is the base, 0 for index 0 of a log
    /// never compacted, `None` if the log does not hold it.
    pub fn term(&self, index: Index) -> Option<Term> {
        match self.base {
            Some((base, term)) if base == index => return Some(term),
            None if index == 0 => return Some(0),
            _ => {}
        }
        let offset = index.checked_sub(self.start + 1)?;
        self.locations
            .get(offset as usize)
            .map(|location| location.term)
    }

    /// How replay found `segment` (just scanned) to end, for its successor's seal.
    fn sealed_end(&self, segment: &SegmentMeta) -> SealedEnd {
        SealedEnd {
            sequence: segment.sequence,
            bytes: segment.bytes,
            last_index: self.last_index(),
            last_term: self.term(self.last_index()),
            file: segment.path.clone(),
        }
    }

    /// Applies one record; `Err(detail)` if it cannot follow the log replayed so far.
    pub(crate) fn apply_record(
        &mut self,
        record: &RecordRef<'_>,
        location: Location,
    ) -> Result<(), String> {
        match record {
            RecordRef::Entry {
                index,
                term,
                command,
            } => self.apply_entry(*index, *term, command, location),
            RecordRef::HardState(state) => {
                self.hard_state = state.clone();
                Ok(())
            }
            RecordRef::Truncate { from } => self.apply_truncate(*from),
            RecordRef::Reset { index, term } => {
                self.clear(*index);
                self.base = Some((*index, *term));
                Ok(())
            }
            RecordRef::Compact { index, term } => self.apply_compact(*index, *term),
            // Checked by the segment scan against the segment before (RECOVERY step 3).
            RecordRef::Seal(_) => Ok(()),
        }
    }

    fn apply_entry(
        &mut self,
        index: Index,
        term: Term,
        command: &[u8],
        location: Location,
    ) -> Result<(), String> {
        let expected = self.last_index() + 1;
        if index != expected {
            return Err(format!("entry index {index} where {expected} was expected"));
        }
        self.locations.push_back(Location { term, ..location });
        if let Some(entries) = &mut self.entries {
            entries.push(Entry {
                index,
                term,
                command: command.to_vec(),
            });
        }
        Ok(())
    }

    fn apply_truncate(&mut self, from: Index) -> Result<(), String> {
        if from <= self.base_index() || from > self.last_index() + 1 {
            return Err(format!(
                "truncation from {from} outside ({}, {}]",
                self.base_index(),
                self.last_index() + 1
            ));
        }
        if from <= self.start {
            self.clear(from - 1);
        } else {
            let keep = (from - self.start - 1) as usize;
            self.locations.truncate(keep);
            if let Some(entries) = &mut self.entries {
                entries.truncate(keep);
            }
        }
        Ok(())
    }

    fn apply_compact(&mut self, index: Index, term: Term) -> Result<(), String> {
        if self.base.is_some_and(|(base, _)| base >= index) {
            return Ok(());
        }
        if index > self.last_index() {
            return Err(format!(
                "compaction to {index} beyond the last index {}",
                self.last_index()
            ));
        }
        if index > self.start {
            let drop = (index - self.start) as usize;
            let found = self.locations[drop - 1].term;
            if found != term {
                return Err(format!(
                    "compaction to {index} at term {term}, but that entry has term {found}"
                ));
            }
            self.locations.drain(..drop);
            if let Some(entries) = &mut self.entries {
                entries.drain(..drop);
            }
            self.start = index;
        }
        self.base = Some((index, term));
        Ok(())
    }

    fn clear(&mut self, start: Index) {
        self.locations.clear();
        if let Some(entries) = &mut self.entries {
            entries.clear();
        }
        self.start = start;
    }
}

/// How replay found a sealed segment to end: what its successor's [`Seal`] must say.
#[derive(Clone, Debug)]
struct SealedEnd {
    sequence: u64,
    bytes: u64,
    last_index: Index,
    /// `None` where replay cannot know it: the oldest segment on disk holds no entries and
    /// no base names the index before it (a crash while a snapshot install was dropping the
    /// segments before it leaves such a segment first).
    last_term: Option<Term>,
    file: PathBuf,
}

impl SealedEnd {
    fn matches(&self, seal: &Seal) -> bool {
        seal.sequence == self.sequence
            && seal.bytes == self.bytes
            && seal.last_index == self.last_index
            && self.last_term.is_none_or(|term| term == seal.last_term)
    }

    /// Why `seal` does not match, for an operator: what it says, what replay found.
    fn mismatch(&self, seal: &Seal, successor: &Path) -> String {
        let term = self
            .last_term
            .map_or_else(|| "unknown".to_string(), |term| term.to_string());
        let what = if seal.bytes > self.bytes {
            format!(
                "sealed segment lost records ({} bytes of them)",
                seal.bytes - self.bytes
            )
        } else {
            "sealed segment does not match its seal".to_string()
        };
        format!(
            "{what}: {} says segment {} ended at byte {} with index {} (term {}), but its \
             records end at byte {} with index {} (term {term})",
            successor.display(),
            seal.sequence,
            seal.bytes,
            seal.last_index,
            seal.last_term,
            self.bytes,
            self.last_index,
        )
    }
}

/// Everything replay learned from a directory.
#[derive(Debug)]
pub(crate) struct Replayed {
    pub state: ReplayState,
    pub segments: Vec<SegmentMeta>,
    pub torn: Option<TornTail>,
    /// Leftover `.tmp` files of an interrupted segment creation.
    pub temporaries: Vec<PathBuf>,
}

/// Lists the segment files of `dir` in sequence order, plus leftover temporaries.
pub(crate) fn list_segments(
    fs: &dyn FileSystem,
    dir: &Path,
) -> Result<(Vec<SegmentMeta>, Vec<PathBuf>)> {
    let names = fs
        .list(dir)
        .map_err(|error| Error::io("list", dir, error))?;
    let mut segments = Vec::new();
    let mut temporaries = Vec::new();
    for name in names {
        if name.ends_with(format::TEMPORARY_SUFFIX) {
            temporaries.push(dir.join(&name));
        } else if let Some(header) = format::parse_segment_file_name(&name) {
            segments.push(SegmentMeta {
                sequence: header.sequence,
                first_index: header.first_index,
                path: dir.join(&name),
                bytes: 0,
            });
        }
    }
    segments.sort_by_key(|segment| segment.sequence);
    Ok((segments, temporaries))
}

fn corruption(
    file: &Path,
    offset: u64,
    index_range: Option<(Index, Index)>,
    detail: String,
) -> Error {
    Error::Corruption {
        file: file.to_path_buf(),
        offset,
        index_range,
        detail,
    }
}

/// How many times a reader without the directory lock replays a directory whose segment
/// list keeps changing under it before it reports what went wrong.
pub(crate) const UNLOCKED_REPLAY_ATTEMPTS: u32 = 5;

/// [`replay`] for a reader that does not hold the data directory lock (read-only opening
/// and [`crate::wal::verify`], e.g. kvinspect next to a live node): segments are copied,
/// not mapped, and a replay that fails while the segment list changed under it (the node
/// rotated, compacted or dropped segments for a snapshot install) starts over, up to
/// [`UNLOCKED_REPLAY_ATTEMPTS`] times. A failure on a list that held still is reported.
pub(crate) fn replay_unlocked(fs: &dyn FileSystem, dir: &Path, collect: bool) -> Result<Replayed> {
    let names = |fs: &dyn FileSystem| {
        list_segments(fs, dir).map(|(segments, _)| {
            segments
                .into_iter()
                .map(|segment| segment.path)
                .collect::<Vec<_>>()
        })
    };
    let mut attempt = 1;
    loop {
        let before = names(fs)?;
        match replay_with(fs, dir, collect, true) {
            Ok(replayed) => return Ok(replayed),
            Err(error) if attempt < UNLOCKED_REPLAY_ATTEMPTS && names(fs)? != before => {
                tracing::debug!(%error, attempt, "segments changed during replay; again");
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Replays every segment of `dir`. Corruption is an `Err`; a torn tail is returned, not
/// repaired (the caller repairs it after the maps are dropped).
pub(crate) fn replay(fs: &dyn FileSystem, dir: &Path, collect: bool) -> Result<Replayed> {
    replay_with(fs, dir, collect, false)
}

fn replay_with(fs: &dyn FileSystem, dir: &Path, collect: bool, copy: bool) -> Result<Replayed> {
    let (mut segments, temporaries) = list_segments(fs, dir)?;
    let mut state = ReplayState {
        entries: collect.then(Vec::new),
        ..ReplayState::default()
    };
    let mut torn = None;
    let count = segments.len();
    // How the segment before the current one ended, as its successor's seal must say.
    let mut sealed: Option<SealedEnd> = None;
    for position in 0..count {
        let next_first_index = segments.get(position + 1).map(|next| next.first_index);
        let segment = &mut segments[position];
        let bytes = if copy {
            fs.read_copy(&segment.path)
        } else {
            fs.read(&segment.path)
        }
        .map_err(|error| Error::io("read segment", &segment.path, error))?;
        let version = check_header(&bytes, segment, sealed.is_some(), &state)?;
        if position == 0 {
            state.start = segment.first_index.saturating_sub(1);
        }
        let scan = SegmentScan {
            bytes: &bytes,
            segment,
            newest: position + 1 == count,
            next_first_index,
            // Version 1 segments have no seal; the oldest segment has no predecessor here.
            sealed: sealed.take().filter(|_| version >= 2),
        };
        let (torn_tail, end) = scan.run(&mut state)?;
        torn = torn_tail;
        segment.bytes = end as u64;
        sealed = Some(state.sealed_end(segment));
        if let Some(next) = segments.get(position + 1) {
            check_sequence(&segments[position], next, &state)?;
        }
    }
    check_contiguous(&segments, &state)?;
    Ok(Replayed {
        state,
        segments,
        torn,
        temporaries,
    })
}

/// Checks a segment's header against its name and the log before it; returns its format
/// version. A segment with a seal (version 2 on) after a replayed one has its first index
/// checked with the seal instead ([`SegmentScan::check_seal`]), which can name the sealed
/// segment that lost records rather than the one after it.
fn check_header(
    bytes: &[u8],
    segment: &SegmentMeta,
    has_previous: bool,
    state: &ReplayState,
) -> Result<u32> {
    let (header, version) = SegmentHeader::decode_versioned(bytes)
        .map_err(|detail| corruption(&segment.path, 0, None, detail))?;
    let named = SegmentHeader {
        sequence: segment.sequence,
        first_index: segment.first_index,
    };
    if header != named {
        return Err(corruption(
            &segment.path,
            0,
            None,
            format!("header says {header:?} but the file name says {named:?}"),
        ));
    }
    if has_previous && version < 2 && segment.first_index != state.last_index() + 1 {
        return Err(index_gap(segment, state.last_index()));
    }
    Ok(version)
}

/// A segment whose first index does not follow the log before it (which ends at `last`).
fn index_gap(segment: &SegmentMeta, last: Index) -> Error {
    corruption(
        &segment.path,
        0,
        Some((last.min(segment.first_index), last.max(segment.first_index))),
        format!(
            "segment starts at index {} but the log before it ends at {last}",
            segment.first_index
        ),
    )
}

fn check_sequence(segment: &SegmentMeta, next: &SegmentMeta, state: &ReplayState) -> Result<()> {
    if next.sequence == segment.sequence + 1 {
        return Ok(());
    }
    Err(corruption(
        &next.path,
        0,
        Some((
            state.last_index() + 1,
            next.first_index
                .saturating_sub(1)
                .max(state.last_index() + 1),
        )),
        format!(
            "segment sequence jumps from {} to {}: segment(s) missing",
            segment.sequence, next.sequence
        ),
    ))
}

/// After replay the log must start right after the base (or at 1): entries missing at the
/// front mean a segment was lost.
fn check_contiguous(segments: &[SegmentMeta], state: &ReplayState) -> Result<()> {
    let Some(first) = segments.first() else {
        return Ok(());
    };
    if state.start == state.base_index() {
        return Ok(());
    }
    Err(corruption(
        &first.path,
        0,
        Some((state.base_index() + 1, state.start)),
        format!(
            "the oldest segment starts after index {} but the log (base {:?}) needs entries from {}",
            state.start,
            state.base,
            state.base_index() + 1
        ),
    ))
}

/// Where a scan found damage.
struct Damaged {
    /// Start of the batch the damage is in (where a repair cuts).
    batch_offset: usize,
    /// The first bad byte offset (a bad frame, or the unfinished batch).
    offset: usize,
    /// Where to start looking for valid frames after the damage.
    search_from: usize,
}

/// One segment being scanned.
struct SegmentScan<'a> {
    bytes: &'a [u8],
    segment: &'a SegmentMeta,
    newest: bool,
    next_first_index: Option<Index>,
    /// What this segment's seal must say: set when the segment has a seal (version 2 on)
    /// and its predecessor was replayed.
    sealed: Option<SealedEnd>,
}

/// A record of the batch being read, applied only when its batch ends.
type Pending<'a> = Vec<(RecordRef<'a>, Location)>;

impl<'a> SegmentScan<'a> {
    /// Reads all records; returns the torn tail of the newest segment, if any, and where
    /// the log's records end (the write position: before a torn tail, or where unwritten,
    /// zeroed space begins, or the end of the file).
    fn run(&self, state: &mut ReplayState) -> Result<(Option<TornTail>, usize)> {
        let scanned = self.scan(state)?;
        if let Some(expected) = &self.sealed
            && scanned.1 <= SEGMENT_HEADER_BYTES
        {
            // Not even the start records survived: nothing vouches for the segment before.
            return Err(self.unsealed(expected, "the start records are missing, with the seal"));
        }
        Ok(scanned)
    }

    fn scan(&self, state: &mut ReplayState) -> Result<(Option<TornTail>, usize)> {
        let mut pending: Pending<'a> = Vec::new();
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut batch_offset = offset;
        while offset < self.bytes.len() {
            let frame = match format::decode_frame(&self.bytes[offset..]) {
                Ok(frame) => frame,
                Err(error) => {
                    let zeroed = is_zeroed(&self.bytes[offset..]);
                    if zeroed && pending.is_empty() {
                        // Preallocated space never written: the end of the log, not damage.
                        return Ok((None, offset));
                    }
                    let detail = if zeroed {
                        "batch without its end record, followed by unwritten space".to_string()
                    } else {
                        error.to_string()
                    };
                    let damage = Damaged {
                        batch_offset,
                        offset,
                        search_from: offset + 1,
                    };
                    return self.bad_frame(state, damage, detail);
                }
            };
            let location = Location {
                term: 0,
                sequence: self.segment.sequence,
                offset: offset as u64,
                frame_bytes: frame.frame_bytes as u32,
            };
            offset += frame.frame_bytes;
            let Frame {
                record, batch_end, ..
            } = frame;
            pending.push((record, location));
            if batch_end {
                self.check_seal(&pending, batch_offset == SEGMENT_HEADER_BYTES)?;
                self.apply_batch(state, &mut pending)?;
                batch_offset = offset;
            }
        }
        if pending.is_empty() {
            return Ok((None, self.bytes.len()));
        }
        let detail = "batch without its end record (write cut at a record boundary)";
        let damage = Damaged {
            batch_offset,
            offset: batch_offset,
            search_from: self.bytes.len(),
        };
        self.bad_frame(state, damage, detail.to_string())
    }

    /// A seal belongs in the start records (the segment's first batch) only, and where this
    /// segment's predecessor was replayed it must be there and agree with how that segment
    /// ended: a sealed segment that lost batches is corruption (in the sealed segment).
    fn check_seal(&self, batch: &Pending<'a>, first: bool) -> Result<()> {
        let seal = batch.iter().find_map(|(record, location)| match record {
            RecordRef::Seal(seal) => Some((*seal, location.offset)),
            _ => None,
        });
        match (seal, &self.sealed) {
            (Some((_, offset)), _) if !first => Err(corruption(
                &self.segment.path,
                offset,
                None,
                "a seal record outside the segment's start records".to_string(),
            )),
            (Some((found, _)), Some(expected)) if !expected.matches(&found) => {
                // The entries the sealed segment should end with, where that is known: from
                // the replayed last index (the log may have ended higher, or been
                // overwritten at the same length) to the seal's.
                let affected = (expected.last_index + 1).min(found.last_index)
                    ..=found.last_index.max(expected.last_index);
                Err(corruption(
                    &expected.file,
                    expected.bytes,
                    Some((*affected.start(), *affected.end())),
                    expected.mismatch(&found, &self.segment.path),
                ))
            }
            (Some(_), Some(expected)) if self.segment.first_index != expected.last_index + 1 => {
                Err(index_gap(self.segment, expected.last_index))
            }
            (None, Some(expected)) if first => {
                Err(self.unsealed(expected, "the start records lack the seal"))
            }
            _ => Ok(()),
        }
    }

    /// This segment does not vouch for the one before it (`what` is missing).
    fn unsealed(&self, expected: &SealedEnd, what: &str) -> Error {
        corruption(
            &self.segment.path,
            SEGMENT_HEADER_BYTES as u64,
            None,
            format!(
                "{what} of segment {} ({}, replayed to index {})",
                expected.sequence,
                expected.file.display(),
                expected.last_index
            ),
        )
    }

    fn apply_batch(&self, state: &mut ReplayState, pending: &mut Pending<'a>) -> Result<()> {
        for (record, location) in pending.drain(..) {
            if let Err(detail) = state.apply_record(&record, location) {
                let expected = state.last_index() + 1;
                return Err(corruption(
                    &self.segment.path,
                    location.offset,
                    Some((expected, expected)),
                    detail,
                ));
            }
        }
        Ok(())
    }

    /// A bad frame at `offset` (or an unfinished batch starting at `batch_offset`): a torn
    /// tail if this is the newest segment and nothing valid follows; corruption otherwise.
    fn bad_frame(
        &self,
        state: &ReplayState,
        damage: Damaged,
        detail: String,
    ) -> Result<(Option<TornTail>, usize)> {
        let Damaged {
            batch_offset,
            offset,
            search_from,
        } = damage;
        let expected = state.last_index() + 1;
        let valid_after = last_entry_after(self.bytes, search_from);
        if self.newest && valid_after.is_none() {
            // What was written from the batch on: up to the last non-zero byte, not through
            // the preallocated space after it.
            let written_end = self
                .bytes
                .iter()
                .rposition(|&byte| byte != 0)
                .map_or(0, |last| last + 1)
                .max(batch_offset);
            let torn = TornTail {
                file: self.segment.path.clone(),
                offset: batch_offset as u64,
                bytes: (written_end - batch_offset) as u64,
                index: expected,
                detail: format!("at byte offset {offset}: {detail}"),
            };
            return Ok((Some(torn), batch_offset));
        }
        let last_affected = match (valid_after, self.next_first_index) {
            (Some((_, Some(index))), _) => index.saturating_sub(1),
            (_, Some(next_first)) => next_first.saturating_sub(1),
            _ => expected,
        };
        let where_ = if self.newest {
            "followed by valid records"
        } else {
            "in a sealed segment"
        };
        Err(corruption(
            &self.segment.path,
            offset as u64,
            Some((expected, last_affected.max(expected))),
            format!("{detail} ({where_})"),
        ))
    }
}

/// Whether every byte is zero: space allocated ahead but never written (type 0 is never
/// a valid record, so a frame cannot start there).
fn is_zeroed(bytes: &[u8]) -> bool {
    bytes.iter().all(|&byte| byte == 0)
}

/// Looks for any valid frame at or after `from`. Returns its offset and the first entry
/// index found from there on (if any). Used only on the error path.
fn last_entry_after(bytes: &[u8], from: usize) -> Option<(usize, Option<Index>)> {
    let limit = bytes.len().saturating_sub(FRAME_HEADER_BYTES);
    (from..=limit).find_map(|offset| {
        let frame = format::decode_frame(&bytes[offset..]).ok()?;
        Some((offset, first_entry_from(bytes, offset, frame)))
    })
}

fn first_entry_from<'a>(bytes: &'a [u8], mut offset: usize, mut frame: Frame<'a>) -> Option<Index> {
    loop {
        if let RecordRef::Entry { index, .. } = frame.record {
            return Some(index);
        }
        offset += frame.frame_bytes;
        frame = format::decode_frame(bytes.get(offset..)?).ok()?;
    }
}
