//! The [`Wal`] itself: open (replay + repair), group-commit append, truncation, reads.
//! The protocols it follows are numbered in the module root ([`crate::wal`]).

use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{self, RecordRef, SEGMENT_HEADER_BYTES, Seal, SegmentHeader};
use super::fs::{FileSystem, WalFile};
use super::recovery::{self, Location, ReplayState, SegmentMeta, TornTail};
use super::spare::{self, Spares};
use super::{Options, Record, Recovered};
use crate::raft::{Entry, HardState, Index, Term};
use crate::{Error, Result};

/// The segmented write-ahead log. See the module documentation for the format and the
/// crash-safety protocols.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    options: Options,
    fs: Arc<dyn FileSystem>,
    /// Segments in sequence order; the last one is the active segment.
    segments: Vec<SegmentMeta>,
    /// The active segment, open for appending (None when read-only).
    active: Option<Box<dyn WalFile>>,
    /// Bytes of the active segment's header and start records (rotation never leaves a
    /// segment holding only those).
    active_start_bytes: u64,
    /// Hard state, base and entry locations (no entries: those are read from disk).
    state: ReplayState,
    poisoned: bool,
    buffer: Vec<u8>,
    /// Deletes dead segments in the background (TRUNCATION).
    deleter: Deleter,
    /// Prepares the next segment's zero-filled file in the background (PREALLOCATION).
    spares: Spares,
}

/// A thread that deletes dead segment files a few MiB at a time
/// ([`super::fs::remove_gradually`]), so compaction does not stall the caller (the raft
/// driver) for the tens of milliseconds that freeing a 64 MiB file takes. Started on first
/// use; [`Wal`]'s drop waits for it to finish.
#[derive(Debug, Default)]
struct Deleter {
    sender: Option<std::sync::mpsc::Sender<PathBuf>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Pause between the steps of deleting a dead segment.
const DELETE_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

impl Deleter {
    fn delete(&mut self, path: PathBuf) {
        if self.sender.is_none() {
            let (sender, receiver) = std::sync::mpsc::channel::<PathBuf>();
            let spawned = std::thread::Builder::new()
                .name("wal-deleter".into())
                .spawn(move || receiver.into_iter().for_each(|path| delete_dead(&path)));
            match spawned {
                Ok(thread) => {
                    self.sender = Some(sender);
                    self.thread = Some(thread);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot start the WAL deleter thread; deleting in place");
                    let _ = std::fs::remove_file(&path);
                    return;
                }
            }
        }
        if let Some(sender) = &self.sender {
            let _ = sender.send(path);
        }
    }
}

/// Deletes one dead segment on the deleter thread. Through `StdFs`, not the WAL's file
/// system: a failure here loses nothing (the file is already out of the log, and `open`
/// deletes it).
fn delete_dead(path: &Path) {
    if let Err(error) = super::fs::remove_gradually(&super::fs::StdFs, path, DELETE_PAUSE) {
        tracing::warn!(file = %path.display(), %error, "could not delete a dead WAL segment; the next open deletes it");
    }
}

impl Drop for Deleter {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`: replays every segment, repairs a torn
    /// tail (RECOVERY), and returns the log with what it recovered.
    pub fn open(dir: &Path, options: Options) -> Result<(Wal, Recovered)> {
        options.check()?;
        let fs = Arc::clone(&options.file_system);
        if !options.read_only {
            fs.create_dir_all(dir)
                .map_err(|error| Error::io("create directory", dir, error))?;
        }
        let replayed = if options.read_only {
            recovery::replay_unlocked(fs.as_ref(), dir, true)?
        } else {
            recovery::replay(fs.as_ref(), dir, true)?
        };
        let options_segment_bytes = options.segment_bytes_max;
        let mut state = replayed.state;
        let entries = state.entries.take().unwrap_or_default();
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            options,
            fs,
            segments: replayed.segments,
            active: None,
            active_start_bytes: 0,
            state,
            poisoned: false,
            buffer: Vec::new(),
            deleter: Deleter::default(),
            spares: Spares::new(dir, options_segment_bytes),
        };
        let repaired = match replayed.torn {
            Some(torn) if wal.options.read_only => Some(format!(
                "torn tail NOT repaired (read-only): {} from byte offset {} ({} bytes): {}",
                torn.file.display(),
                torn.offset,
                torn.bytes,
                torn.detail
            )),
            Some(torn) => Some(wal.repair(&torn)?),
            None => None,
        };
        if !wal.options.read_only {
            wal.remove_temporaries(&replayed.temporaries)?;
            wal.open_active()?;
        }
        let recovered = Recovered {
            hard_state: wal.state.hard_state.clone(),
            base: wal.state.base,
            entries,
            repaired,
        };
        Ok((wal, recovered))
    }

    /// Copies the torn bytes aside, then cuts the segment (RECOVERY step 5).
    fn repair(&mut self, torn: &TornTail) -> Result<String> {
        let saved = self.save_torn_bytes(torn)?;
        let mut file = self
            .fs
            .open_append(&torn.file)
            .map_err(|error| Error::io("open segment", &torn.file, error))?;
        file.set_len(torn.offset)
            .map_err(|error| Error::io("truncate segment", &torn.file, error))?;
        file.sync_data()
            .map_err(|error| Error::io("fdatasync", &torn.file, error))?;
        if let Some(last) = self.segments.last_mut() {
            last.bytes = torn.offset;
        }
        Ok(format!(
            "torn tail of {} repaired: {} bytes from byte offset {} saved to {} and cut ({})",
            torn.file.display(),
            torn.bytes,
            torn.offset,
            saved.display(),
            torn.detail
        ))
    }

    fn save_torn_bytes(&self, torn: &TornTail) -> Result<PathBuf> {
        let bytes = self
            .fs
            .read(&torn.file)
            .map_err(|error| Error::io("read segment", &torn.file, error))?;
        let stem = torn
            .file
            .file_stem()
            .map_or_else(String::new, |stem| stem.to_string_lossy().into_owned());
        let existing = self
            .fs
            .list(&self.dir)
            .map_err(|error| Error::io("list", &self.dir, error))?;
        let mut name = format!("torn-{stem}-{}.bin", torn.offset);
        let mut attempt = 1;
        while existing.contains(&name) {
            attempt += 1;
            name = format!("torn-{stem}-{}.{attempt}.bin", torn.offset);
        }
        let path = self.dir.join(name);
        let start = (torn.offset as usize).min(bytes.len());
        let end = (start + torn.bytes as usize).min(bytes.len());
        let mut file = self
            .fs
            .create_new(&path)
            .map_err(|error| Error::io("create", &path, error))?;
        file.append(&bytes[start..end])
            .map_err(|error| Error::io("write", &path, error))?;
        file.sync_data()
            .map_err(|error| Error::io("fdatasync", &path, error))?;
        self.sync_dir()?;
        Ok(path)
    }

    fn remove_temporaries(&self, temporaries: &[PathBuf]) -> Result<()> {
        for path in temporaries {
            self.fs
                .remove_file(path)
                .map_err(|error| Error::io("remove", path, error))?;
        }
        if !temporaries.is_empty() {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Opens the newest segment for appending, or creates the first one.
    fn open_active(&mut self) -> Result<()> {
        if let Some(last) = self.segments.last() {
            let mut file = self
                .fs
                .open_append(&last.path)
                .map_err(|error| Error::io("open segment", &last.path, error))?;
            file.set_write_position(last.bytes);
            if self.options.preallocate {
                // A segment from before preallocation, or cut by a torn-tail repair.
                file.preallocate(self.options.segment_bytes_max)
                    .and_then(|_| file.sync_data())
                    .map_err(|error| Error::io("preallocate", &last.path, error))?;
            }
            self.active = Some(file);
            self.active_start_bytes = SEGMENT_HEADER_BYTES as u64;
        } else {
            let first_index = self.state.last_index() + 1;
            let (segment, file, start_bytes) = self.create_segment(1, first_index)?;
            self.segments.push(segment);
            self.active = Some(file);
            self.active_start_bytes = start_bytes;
        }
        if self.options.preallocate {
            self.spares.prepare();
        }
        Ok(())
    }

    /// ROTATION steps 1-4: a complete new segment (header + start records) under a
    /// temporary name, fdatasync, rename, directory fsync (the commit point).
    fn create_segment(
        &mut self,
        sequence: u64,
        first_index: Index,
    ) -> Result<(SegmentMeta, Box<dyn WalFile>, u64)> {
        let header = SegmentHeader {
            sequence,
            first_index,
        };
        let mut bytes = header.encode().to_vec();
        let mut start_records = Vec::with_capacity(3);
        // The segment being sealed, if this is a rotation (RECOVERY checks the seal).
        if let Some(sealed) = self.segments.last() {
            start_records.push(RecordRef::Seal(Seal {
                sequence: sealed.sequence,
                bytes: sealed.bytes,
                last_index: self.last_index(),
                last_term: self.last_term(),
            }));
        }
        start_records.push(RecordRef::HardState(self.state.hard_state.clone()));
        if let Some((index, term)) = self.state.base {
            start_records.push(RecordRef::Compact { index, term });
        }
        encode_batch(&start_records, &mut bytes)?;
        let path = self.dir.join(format::segment_file_name(&header));
        let temporary = self.dir.join(format!(
            "{}{}",
            format::segment_file_name(&header),
            format::TEMPORARY_SUFFIX
        ));
        let mut file = self.new_segment_file(&temporary)?;
        file.append(&bytes)
            .map_err(|error| Error::io("write", &temporary, error))?;
        file.sync_data()
            .map_err(|error| Error::io("fdatasync", &temporary, error))?;
        self.fs
            .rename(&temporary, &path)
            .map_err(|error| Error::io("rename", &temporary, error))?;
        self.sync_dir()?;
        let segment = SegmentMeta {
            sequence,
            first_index,
            path,
            bytes: bytes.len() as u64,
        };
        Ok((segment, file, bytes.len() as u64))
    }

    /// The file of a new segment, its full size allocated (PREALLOCATION): the spare if
    /// one is ready, else filled with zeros here for the first segment of a log, else
    /// `fallocate`d. The write position is at 0.
    fn new_segment_file(&mut self, temporary: &Path) -> Result<Box<dyn WalFile>> {
        if !self.options.preallocate {
            return self
                .fs
                .create_new(temporary)
                .map_err(|error| Error::io("create segment", temporary, error));
        }
        let bytes = self.options.segment_bytes_max;
        // A zero-filled file if there is one to have (the spare, or a first segment filled
        // in place); on failure, space allocated in place instead.
        let zero_filled = match self.spares.take() {
            Some(spare) => self
                .fs
                .rename(&spare, temporary)
                .and_then(|()| self.fs.open_append(temporary))
                .map(Some),
            None if self.segments.is_empty() => {
                let never = std::sync::atomic::AtomicBool::new(false);
                spare::fill(self.fs.as_ref(), temporary, bytes, None, &never).map(Some)
            }
            None => Ok(None),
        }
        .unwrap_or_else(|error| {
            let path = temporary.display();
            tracing::warn!(%error, %path, "no zero-filled segment; allocating in place");
            None
        });
        let mut file = match zero_filled {
            Some(file) => file,
            None => {
                let _ = self.fs.remove_file(temporary);
                let mut file = self
                    .fs
                    .create_new(temporary)
                    .map_err(|error| Error::io("create segment", temporary, error))?;
                file.preallocate(bytes)
                    .map_err(|error| Error::io("preallocate", temporary, error))?;
                file
            }
        };
        file.set_write_position(0);
        Ok(file)
    }

    fn sync_dir(&self) -> Result<()> {
        self.fs
            .sync_dir(&self.dir)
            .map_err(|error| Error::io("fsync directory", &self.dir, error))
    }

    fn check_writable(&self) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if self.options.read_only {
            return Err(Error::InvalidInput(
                "the write-ahead log was opened read-only".to_string(),
            ));
        }
        Ok(())
    }

    /// Persists `hard_state` (if any) and `entries` with ONE write and ONE fdatasync
    /// (APPEND). If `entries[0].index <= last_index()`, a truncation of the suffix from
    /// that index goes first in the same write (TRUNCATION, suffix).
    ///
    /// # Panics
    ///
    /// If `entries` are not contiguous, start after `last_index() + 1`, or would
    /// overwrite an index covered by the snapshot base: these are caller bugs.
    pub fn save(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) -> Result<()> {
        self.check_writable()?;
        let mut records = Vec::with_capacity(entries.len() + 2);
        if let Some(first) = entries.first() {
            assert!(
                first.index <= self.last_index() + 1,
                "entries start at {} after the last index {} + 1",
                first.index,
                self.last_index()
            );
            assert!(
                first.index > self.state.base_index(),
                "entries start at {} inside the snapshot base {}",
                first.index,
                self.state.base_index()
            );
            for pair in entries.windows(2) {
                assert_eq!(pair[1].index, pair[0].index + 1, "entries not contiguous");
            }
            if first.index <= self.last_index() {
                records.push(RecordRef::Truncate { from: first.index });
            }
        }
        if let Some(state) = hard_state {
            records.push(RecordRef::HardState(state.clone()));
        }
        records.extend(entries.iter().map(|entry| RecordRef::Entry {
            index: entry.index,
            term: entry.term,
            command: &entry.command,
        }));
        self.write_records(&records)
    }

    /// Appends typed records as one batch: one write, one fdatasync. The records must be
    /// valid continuations of the log (checked before anything is written).
    pub fn append(&mut self, records: &[Record]) -> Result<()> {
        self.check_writable()?;
        let records: Vec<RecordRef<'_>> = records.iter().map(Record::as_ref).collect();
        self.write_records(&records)
    }

    /// The common write path: validate, encode, maybe rotate, write, fdatasync, and only
    /// then change the in-memory state.
    fn write_records(&mut self, records: &[RecordRef<'_>]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.dry_run(records).map_err(Error::InvalidInput)?;
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        let encoded = encode_batch_detached(records, &mut buffer);
        let result = encoded.and_then(|(frames, parts)| {
            let slices = io_slices(&buffer, &parts);
            let (sequence, offset) = self.write_batch(&slices)?;
            self.apply_written(records, &frames, sequence, offset);
            Ok(())
        });
        if buffer.capacity() <= format::BATCH_BYTES_MAX / 16 {
            self.buffer = buffer;
        }
        result
    }

    /// Checks that `records` can follow the log, without changing anything.
    fn dry_run(&self, records: &[RecordRef<'_>]) -> Result<(), String> {
        let mut base_index = self.state.base_index();
        let mut last = self.last_index();
        for record in records {
            match record {
                RecordRef::Entry { index, .. } if *index != last + 1 => {
                    return Err(format!("entry {index} does not follow {last}"));
                }
                RecordRef::Entry { .. } => last += 1,
                RecordRef::Truncate { from } if *from <= base_index || *from > last + 1 => {
                    return Err(format!(
                        "truncation from {from} outside ({base_index}, {}]",
                        last + 1
                    ));
                }
                RecordRef::Truncate { from } => last = from - 1,
                RecordRef::Reset { index, .. } => (base_index, last) = (*index, *index),
                RecordRef::Compact { index, .. } if *index > last => {
                    return Err(format!("compaction to {index} beyond last index {last}"));
                }
                RecordRef::Compact { index, .. } => base_index = base_index.max(*index),
                RecordRef::HardState(_) => {}
                RecordRef::Seal(_) => {
                    return Err("a seal record is written only by rotation".to_string());
                }
            }
        }
        Ok(())
    }

    /// APPEND steps 2-4 (after ROTATION if the batch does not fit): one write, one
    /// fdatasync. Any failure poisons the log. Returns where the batch starts.
    fn write_batch(&mut self, batch: &[IoSlice<'_>]) -> Result<(u64, u64)> {
        let batch_bytes: usize = batch.iter().map(|part| part.len()).sum();
        if batch_bytes > format::BATCH_BYTES_MAX {
            return Err(Error::InvalidInput(format!(
                "batch of {batch_bytes} bytes exceeds BATCH_BYTES_MAX"
            )));
        }
        let result = self.rotate_if_full(batch_bytes as u64).and_then(|()| {
            let segment = self.segments.last().ok_or(Error::Poisoned)?;
            let (sequence, offset, path) = (segment.sequence, segment.bytes, segment.path.clone());
            let file = self.active.as_mut().ok_or(Error::Poisoned)?;
            file.append_vectored(batch)
                .map_err(|error| Error::io("write", &path, error))?;
            file.sync_data()
                .map_err(|error| Error::io("fdatasync", &path, error))?;
            Ok((sequence, offset))
        });
        match result {
            Ok((sequence, offset)) => {
                if let Some(segment) = self.segments.last_mut() {
                    segment.bytes += batch_bytes as u64;
                }
                Ok((sequence, offset))
            }
            Err(error) => {
                self.poisoned = true;
                Err(error)
            }
        }
    }

    fn rotate_if_full(&mut self, batch_bytes: u64) -> Result<()> {
        let Some(active) = self.segments.last() else {
            return Err(Error::Poisoned);
        };
        let holds_batches = active.bytes > self.active_start_bytes;
        if !holds_batches || active.bytes + batch_bytes <= self.options.segment_bytes_max {
            return Ok(());
        }
        let sequence = active.sequence + 1;
        let (segment, file, start_bytes) = self.create_segment(sequence, self.last_index() + 1)?;
        self.segments.push(segment);
        self.active = Some(file);
        self.active_start_bytes = start_bytes;
        if self.options.preallocate {
            self.spares.prepare();
        }
        Ok(())
    }

    /// Mirrors a durable batch into memory (cannot fail: `dry_run` checked it).
    fn apply_written(
        &mut self,
        records: &[RecordRef<'_>],
        frames: &[usize],
        sequence: u64,
        offset: u64,
    ) {
        let mut position = offset;
        for (record, &frame_bytes) in records.iter().zip(frames) {
            let location = Location {
                term: 0,
                sequence,
                offset: position,
                frame_bytes: frame_bytes as u32,
            };
            position += frame_bytes as u64;
            let applied = self.state.apply_record(record, location);
            debug_assert!(applied.is_ok(), "dry run missed {applied:?}");
        }
    }

    /// Snapshot install (TRUNCATION, reset): the whole log is replaced by a snapshot
    /// ending at (`index`, `term`); durable on return. Older segments are then deleted.
    pub fn reset(&mut self, index: Index, term: Term) -> Result<()> {
        self.check_writable()?;
        self.write_records(&[RecordRef::Reset { index, term }])?;
        self.delete_sealed_segments(Index::MAX)
    }

    /// Compaction after a snapshot at `upto` (TRUNCATION, prefix): records the new base,
    /// then deletes whole sealed segments whose entries are all <= `upto`.
    ///
    /// # Panics
    ///
    /// If `upto > last_index()`: a snapshot cannot cover entries the log does not have.
    pub fn truncate_prefix(&mut self, upto: Index) -> Result<()> {
        self.check_writable()?;
        assert!(
            upto <= self.last_index(),
            "compaction to {upto} beyond last index {}",
            self.last_index()
        );
        if upto > self.state.base_index() {
            let term = self.term(upto).unwrap_or(0);
            self.write_records(&[RecordRef::Compact { index: upto, term }])?;
        }
        self.delete_sealed_segments(upto)
    }

    /// Drops sealed segments, oldest first, while every entry in them is <= `upto`: each
    /// is renamed to a temporary name, then the directory fsync'd (so the surviving
    /// segments are always a contiguous run), and the file is deleted in the background.
    fn delete_sealed_segments(&mut self, upto: Index) -> Result<()> {
        while self.segments.len() > 1 {
            let next_first_index = self.segments[1].first_index;
            if next_first_index.saturating_sub(1) > upto {
                break;
            }
            let path = self.segments[0].path.clone();
            let dead = path.with_extension(format!("wal.dead{}", format::TEMPORARY_SUFFIX));
            self.fs
                .rename(&path, &dead)
                .map_err(|error| Error::io("rename segment", &path, error))?;
            self.segments.remove(0);
            if let Err(error) = self.sync_dir() {
                self.poisoned = true;
                return Err(error);
            }
            self.deleter.delete(dead);
        }
        Ok(())
    }

    /// The entries `from..=to`, read from disk and CRC-checked. An empty range
    /// (`from == to + 1`) gives an empty vector.
    pub fn entries(&self, from: Index, to: Index) -> Result<Vec<Entry>> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if from > to {
            return Ok(Vec::new());
        }
        if from < self.first_index() || to > self.last_index() {
            return Err(Error::InvalidInput(format!(
                "entries {from}..={to} outside the log {}..={}",
                self.first_index(),
                self.last_index()
            )));
        }
        let first = (from - self.state.start - 1) as usize;
        let last = (to - self.state.start - 1) as usize;
        let mut entries = Vec::with_capacity(last - first + 1);
        let mut run_start = first;
        while run_start <= last {
            let run_end = self.run_end(run_start, last);
            self.read_run(run_start, run_end, &mut entries)?;
            run_start = run_end + 1;
        }
        Ok(entries)
    }

    /// The last position of the run from `start` whose records are adjacent in one file.
    fn run_end(&self, start: usize, last: usize) -> usize {
        let locations = &self.state.locations;
        let mut end = start;
        while end < last {
            let (here, next) = (locations[end], locations[end + 1]);
            if next.sequence != here.sequence
                || next.offset != here.offset + here.frame_bytes as u64
            {
                break;
            }
            end += 1;
        }
        end
    }

    fn read_run(&self, start: usize, end: usize, entries: &mut Vec<Entry>) -> Result<()> {
        let first = self.state.locations[start];
        let last = self.state.locations[end];
        let length = (last.offset + last.frame_bytes as u64 - first.offset) as usize;
        let segment = self
            .segments
            .iter()
            .find(|segment| segment.sequence == first.sequence)
            .ok_or_else(|| Error::InvalidInput(format!("segment {} is gone", first.sequence)))?;
        let mut bytes = vec![0u8; length];
        let is_active = self.segments.last().map(|active| active.sequence) == Some(first.sequence);
        let read = match (&self.active, is_active) {
            (Some(active), true) => active.read_exact_at(&mut bytes, first.offset),
            _ => self
                .fs
                .open_read(&segment.path)
                .and_then(|file| file.read_exact_at(&mut bytes, first.offset)),
        };
        read.map_err(|error| Error::io("read", &segment.path, error))?;
        let mut position = 0;
        for index_offset in start..=end {
            let index = self.state.start + 1 + index_offset as u64;
            let at = first.offset + position as u64;
            let bad = |detail: String| Error::Corruption {
                file: segment.path.clone(),
                offset: at,
                index_range: Some((index, index)),
                detail,
            };
            let frame =
                format::decode_frame(&bytes[position..]).map_err(|error| bad(error.to_string()))?;
            match frame.record {
                RecordRef::Entry {
                    index: found,
                    term,
                    command,
                } if found == index => entries.push(Entry {
                    index,
                    term,
                    command: command.to_vec(),
                }),
                other => return Err(bad(format!("expected entry {index}, found {other:?}"))),
            }
            position += frame.frame_bytes;
        }
        Ok(())
    }

    /// The term of the entry at `index` (or of the base), if the log knows it.
    pub fn term(&self, index: Index) -> Option<Term> {
        self.state.term(index)
    }

    /// The first index the log holds (base + 1; 1 for a log never compacted).
    pub fn first_index(&self) -> Index {
        self.state.start + 1
    }

    /// The last index the log holds (the base index if it holds none).
    pub fn last_index(&self) -> Index {
        self.state.last_index()
    }

    /// The term of the last entry (of the base if there is none; 0 for an empty log).
    pub fn last_term(&self) -> Term {
        self.term(self.last_index()).unwrap_or(0)
    }

    /// The last persisted hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.state.hard_state
    }

    /// The latest snapshot base (index, term) the log restarts after, if any.
    pub fn base(&self) -> Option<(Index, Term)> {
        self.state.base
    }

    /// Bytes on disk across all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.bytes).sum()
    }

    /// The segment files, oldest first; the last is the active one.
    pub fn segments(&self) -> &[SegmentMeta] {
        &self.segments
    }

    /// True after a failed write or fsync: every later call fails until reopened.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

/// Encodes `records` as one batch (the last carries the batch-end flag); returns each
/// frame's size.
fn encode_batch(records: &[RecordRef<'_>], buffer: &mut Vec<u8>) -> Result<Vec<usize>> {
    let mut frames = Vec::with_capacity(records.len());
    for (position, record) in records.iter().enumerate() {
        let batch_end = position + 1 == records.len();
        let frame_bytes =
            format::encode_record(record, batch_end, buffer).map_err(Error::InvalidInput)?;
        frames.push(frame_bytes);
    }
    Ok(frames)
}

/// A piece of a batch: a range of the batch buffer, or a command written in place.
enum Part<'a> {
    Buffer(usize, usize),
    Detached(&'a [u8]),
}

/// Encodes `records` as one batch like [`encode_batch`], leaving large commands in the
/// caller's entries (see [`format::encode_record_detached`]). Returns each frame's size
/// and the pieces to write, in order.
fn encode_batch_detached<'a>(
    records: &[RecordRef<'a>],
    buffer: &mut Vec<u8>,
) -> Result<(Vec<usize>, Vec<Part<'a>>)> {
    let mut frames = Vec::with_capacity(records.len());
    let mut parts = Vec::new();
    let mut run_start = buffer.len();
    for (position, record) in records.iter().enumerate() {
        let batch_end = position + 1 == records.len();
        let (frame_bytes, detached) = format::encode_record_detached(record, batch_end, buffer)
            .map_err(Error::InvalidInput)?;
        frames.push(frame_bytes);
        if let Some(command) = detached {
            parts.push(Part::Buffer(run_start, buffer.len()));
            parts.push(Part::Detached(command));
            run_start = buffer.len();
        }
    }
    parts.push(Part::Buffer(run_start, buffer.len()));
    parts.retain(|part| match part {
        Part::Buffer(start, end) => end > start,
        Part::Detached(command) => !command.is_empty(),
    });
    Ok((frames, parts))
}

fn io_slices<'a>(buffer: &'a [u8], parts: &[Part<'a>]) -> Vec<IoSlice<'a>> {
    parts
        .iter()
        .map(|part| match part {
            Part::Buffer(start, end) => IoSlice::new(&buffer[*start..*end]),
            Part::Detached(command) => IoSlice::new(command),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index) -> Entry {
        Entry {
            index,
            term: 1,
            command: vec![7; 40],
        }
    }

    #[test]
    fn rotation_takes_the_prepared_spare() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            segment_bytes_max: 4096,
            ..Options::default()
        };
        let (mut wal, _) = Wal::open(dir.path(), options.clone()).unwrap();
        wal.spares.wait_filled();
        let spare = dir.path().join(spare::SPARE_FILE_NAME);
        let spare_inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&spare).unwrap());
        let mut index = 1;
        while wal.segments().len() < 2 {
            wal.save(None, &[entry(index)]).unwrap();
            index += 1;
        }
        let second = wal.segments()[1].path.clone();
        assert_eq!(std::fs::metadata(&second).unwrap().len(), 4096);
        assert_eq!(wal.spares.taken(), 1, "the rotation used the spare");
        let second_inode =
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&second).unwrap());
        assert_eq!(
            second_inode, spare_inode,
            "the spare file became the segment"
        );
        drop(wal);
        let (wal, recovered) = Wal::open(dir.path(), options).unwrap();
        assert_eq!(recovered.entries.len() as Index, index - 1);
        assert_eq!(wal.last_index(), index - 1);
    }
}
