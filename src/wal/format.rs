//! The on-disk format: segment header, record frame, record payloads and file names.
//!
//! The byte diagrams and field tables live in the module root ([`crate::wal`]); this file
//! is their implementation. Everything is little-endian. Every decoder checks a length
//! against a named limit *before* it slices or allocates.

use serde::{Deserialize, Serialize};

use crate::raft::{Entry, HardState, Index, Term};

/// The first 8 bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"KVSWAL\r\n";
/// The segment format version this code writes. Version 2 added the [`Seal`] start record;
/// version 1 segments (no seal) are still read.
pub const SEGMENT_VERSION: u32 = 2;
/// The oldest segment format version this code reads.
pub const SEGMENT_VERSION_READ_MIN: u32 = 1;
/// Size of the segment header; the first record starts at this offset.
pub const SEGMENT_HEADER_BYTES: usize = 40;
/// Size of a record frame header: length (4) + CRC32 (4) + type (1).
pub const FRAME_HEADER_BYTES: usize = 9;

/// Largest state-machine command one entry may carry. The client API limits a value to
/// 1 MiB and a key to 4 KiB; 8 MiB leaves room for the store's command encoding and for
/// a later batch command while keeping a single record's decode bounded.
pub const ENTRY_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Largest record payload: one maximal entry plus its index, term and length varints
/// (3 x 10 bytes) rounded up. Checked before a frame is sliced, so a corrupt length field
/// can never make the decoder read or allocate more.
pub const RECORD_BYTES_MAX: usize = ENTRY_BYTES_MAX + 64;
/// Largest node id a hard state's vote may name. Node ids are short operator-chosen
/// names such as `n1`; 255 bytes is generous and bounds the hard-state record.
pub const NODE_ID_BYTES_MAX: usize = 255;
/// Largest single `append`/`save` batch in bytes. One batch is one `write` into one
/// segment; 256 MiB bounds the memory a batch buffer takes and how far a segment may
/// overshoot `segment_bytes_max`.
pub const BATCH_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Bit 7 of the type byte: set on the last record of a batch (the batch's commit mark).
pub const TYPE_FLAG_BATCH_END: u8 = 0x80;
/// Mask of the record kind within the type byte.
pub const TYPE_KIND_MASK: u8 = 0x7f;

/// Record kinds (the low 7 bits of the type byte). Zero is never valid, so zeroed space is
/// never mistaken for a record.
pub mod kind {
    /// A raft log entry: index, term, command.
    pub const ENTRY: u8 = 1;
    /// The hard state: term, vote, commit.
    pub const HARD_STATE: u8 = 2;
    /// Suffix truncation: entries with index >= `from` are discarded.
    pub const TRUNCATE: u8 = 3;
    /// Snapshot install: the whole log is replaced by a snapshot ending at (index, term).
    pub const RESET: u8 = 4;
    /// Compaction: entries <= index are covered by a snapshot ending at (index, term).
    pub const COMPACT: u8 = 5;
    /// Where the previous segment ended (a start record, segment version 2 on).
    pub const SEAL: u8 = 6;
}

/// A start record of every segment that has a predecessor (segment version 2 on): where
/// the previous segment's records ended when it was sealed, and the log's last entry then.
/// Replay checks it against what it read of that segment, so a sealed segment that lost
/// batches is caught even when what is left of it still ends in a plausible place (a
/// zeroed tail reads as unwritten space, and a lost overwrite leaves the last index where
/// it was).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// The sealed segment's sequence (this segment's minus one).
    pub sequence: u64,
    /// Where its records ended: header and records, in bytes ([`crate::wal::SegmentMeta::bytes`]).
    pub bytes: u64,
    /// The log's last index when it was sealed (the base index if it held no entry).
    pub last_index: Index,
    /// The term of that index (0 for an empty log).
    pub last_term: Term,
}

/// One typed WAL record (owned form, used for writing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A raft log entry.
    Entry(Entry),
    /// The persisted hard state (term, vote, commit).
    HardState(HardState),
    /// Discard every entry with index >= `from` (a follower's conflicting suffix).
    Truncate {
        /// The first discarded index.
        from: Index,
    },
    /// Replace the whole log by a snapshot ending at (`index`, `term`).
    Reset {
        /// Last index the snapshot covers.
        index: Index,
        /// Term of that index.
        term: Term,
    },
    /// Entries <= `index` are covered by a snapshot ending at (`index`, `term`).
    Compact {
        /// Last index the snapshot covers.
        index: Index,
        /// Term of that index.
        term: Term,
    },
    /// Where the previous segment ended (a start record).
    Seal(Seal),
}

/// A decoded record borrowing its command bytes from the segment (no copy on replay).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordRef<'a> {
    /// A raft log entry whose command is still in the segment bytes.
    Entry {
        /// Entry index.
        index: Index,
        /// Entry term.
        term: Term,
        /// Command bytes, borrowed.
        command: &'a [u8],
    },
    /// The hard state.
    HardState(HardState),
    /// See [`Record::Truncate`].
    Truncate {
        /// The first discarded index.
        from: Index,
    },
    /// See [`Record::Reset`].
    Reset {
        /// Last index the snapshot covers.
        index: Index,
        /// Term of that index.
        term: Term,
    },
    /// See [`Record::Compact`].
    Compact {
        /// Last index the snapshot covers.
        index: Index,
        /// Term of that index.
        term: Term,
    },
    /// See [`Record::Seal`].
    Seal(Seal),
}

impl RecordRef<'_> {
    /// Copies the borrowed parts into an owned [`Record`].
    pub fn to_owned_record(&self) -> Record {
        match self {
            RecordRef::Entry {
                index,
                term,
                command,
            } => Record::Entry(Entry {
                index: *index,
                term: *term,
                command: command.to_vec(),
            }),
            RecordRef::HardState(state) => Record::HardState(state.clone()),
            RecordRef::Truncate { from } => Record::Truncate { from: *from },
            RecordRef::Reset { index, term } => Record::Reset {
                index: *index,
                term: *term,
            },
            RecordRef::Compact { index, term } => Record::Compact {
                index: *index,
                term: *term,
            },
            RecordRef::Seal(seal) => Record::Seal(*seal),
        }
    }
}

/// The entry payload. `command` is written with `serialize_bytes` and read as a borrowed
/// slice, so postcard copies it as one run each way instead of visiting every byte (serde
/// would treat a plain `&[u8]` as a sequence of `u8` on the way out). The wire form is
/// the same as a `Vec<u8>`: varint length, then the bytes.
#[derive(Serialize, Deserialize)]
struct EntryPayload<'a> {
    index: Index,
    term: Term,
    #[serde(borrow, serialize_with = "serialize_as_bytes")]
    command: &'a [u8],
}

fn serialize_as_bytes<S: serde::Serializer>(
    bytes: &&[u8],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// Payload of Truncate.
#[derive(Serialize, Deserialize)]
struct TruncatePayload {
    from: Index,
}

/// Payload of Reset and Compact.
#[derive(Serialize, Deserialize)]
struct PositionPayload {
    index: Index,
    term: Term,
}

/// Why a frame could not be decoded. The scanner turns this into a torn tail or a
/// corruption error depending on where it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes remain than the frame header or its length field announces.
    Short {
        /// Bytes the frame would need.
        needed_bytes: u64,
        /// Bytes that remain.
        available_bytes: usize,
    },
    /// The length field is over [`RECORD_BYTES_MAX`].
    TooLong(u32),
    /// The type byte names no known record kind (zero included).
    BadType(u8),
    /// The CRC does not match the type and payload.
    BadCrc {
        /// CRC stored in the frame.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// The CRC matched but the payload does not decode (or breaks a payload limit).
    BadPayload(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Short {
                needed_bytes,
                available_bytes,
            } => write!(
                f,
                "incomplete record: needs {needed_bytes} bytes, {available_bytes} remain"
            ),
            FrameError::TooLong(length) => write!(
                f,
                "record length {length} exceeds RECORD_BYTES_MAX ({RECORD_BYTES_MAX})"
            ),
            FrameError::BadType(byte) => write!(f, "invalid record type byte {byte:#04x}"),
            FrameError::BadCrc { stored, computed } => {
                write!(
                    f,
                    "CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            FrameError::BadPayload(detail) => write!(f, "undecodable payload: {detail}"),
        }
    }
}

/// A decoded frame: the record, whether it ends its batch, and its total size.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The record.
    pub record: RecordRef<'a>,
    /// True if the batch-end flag is set.
    pub batch_end: bool,
    /// Frame header plus payload, in bytes.
    pub frame_bytes: usize,
}

/// The CRC32 stored in a frame: over the type byte, then the payload.
pub fn frame_crc(type_byte: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[type_byte]);
    hasher.update(payload);
    hasher.finalize()
}

impl Record {
    /// A borrowed view of this record (no copy of the command).
    pub fn as_ref(&self) -> RecordRef<'_> {
        match self {
            Record::Entry(entry) => RecordRef::Entry {
                index: entry.index,
                term: entry.term,
                command: &entry.command,
            },
            Record::HardState(state) => RecordRef::HardState(state.clone()),
            Record::Truncate { from } => RecordRef::Truncate { from: *from },
            Record::Reset { index, term } => RecordRef::Reset {
                index: *index,
                term: *term,
            },
            Record::Compact { index, term } => RecordRef::Compact {
                index: *index,
                term: *term,
            },
            Record::Seal(seal) => RecordRef::Seal(*seal),
        }
    }
}

/// Appends one framed record to `buffer`; returns the frame's size in bytes.
///
/// Returns `Err(detail)` (and leaves `buffer` as it was) if the record breaks a limit.
pub fn encode_record(
    record: &RecordRef<'_>,
    batch_end: bool,
    buffer: &mut Vec<u8>,
) -> Result<usize, String> {
    let start = buffer.len();
    buffer.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    let result = encode_payload(record, buffer);
    let payload_bytes = buffer.len() - start - FRAME_HEADER_BYTES;
    let checked = result.and_then(|kind| {
        if payload_bytes > RECORD_BYTES_MAX {
            Err(format!(
                "record of {payload_bytes} bytes exceeds RECORD_BYTES_MAX"
            ))
        } else {
            Ok(kind)
        }
    });
    let kind = match checked {
        Ok(kind) => kind,
        Err(detail) => {
            buffer.truncate(start);
            return Err(detail);
        }
    };
    let type_byte = if batch_end {
        kind | TYPE_FLAG_BATCH_END
    } else {
        kind
    };
    let crc = frame_crc(type_byte, &buffer[start + FRAME_HEADER_BYTES..]);
    buffer[start..start + 4].copy_from_slice(&(payload_bytes as u32).to_le_bytes());
    buffer[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    buffer[start + 8] = type_byte;
    Ok(FRAME_HEADER_BYTES + payload_bytes)
}

/// Commands at least this large are not copied into the batch buffer: APPEND writes them
/// straight from the caller's entry with a vectored write. Below it, one more `iovec` costs
/// more than the copy saves.
pub const DETACHED_COMMAND_BYTES_MIN: usize = 1024;

/// Like [`encode_record`], but an entry whose command is at least
/// [`DETACHED_COMMAND_BYTES_MIN`] bytes gets only its frame header and varints written to
/// `buffer`; the command is returned, and the caller writes it right after them. The CRC
/// covers it all the same. Returns the whole frame's size and the detached command.
pub fn encode_record_detached<'a>(
    record: &RecordRef<'a>,
    batch_end: bool,
    buffer: &mut Vec<u8>,
) -> Result<(usize, Option<&'a [u8]>), String> {
    let RecordRef::Entry {
        index,
        term,
        command,
    } = *record
    else {
        return encode_record(record, batch_end, buffer).map(|bytes| (bytes, None));
    };
    if command.len() < DETACHED_COMMAND_BYTES_MIN {
        return encode_record(record, batch_end, buffer).map(|bytes| (bytes, None));
    }
    if command.len() > ENTRY_BYTES_MAX {
        return Err(format!(
            "entry {index} command of {} bytes exceeds ENTRY_BYTES_MAX ({ENTRY_BYTES_MAX})",
            command.len()
        ));
    }
    let start = buffer.len();
    buffer.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    push_varint(index, buffer);
    push_varint(term, buffer);
    push_varint(command.len() as u64, buffer);
    let payload_bytes = buffer.len() - start - FRAME_HEADER_BYTES + command.len();
    let type_byte = if batch_end {
        kind::ENTRY | TYPE_FLAG_BATCH_END
    } else {
        kind::ENTRY
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[type_byte]);
    hasher.update(&buffer[start + FRAME_HEADER_BYTES..]);
    hasher.update(command);
    buffer[start..start + 4].copy_from_slice(&(payload_bytes as u32).to_le_bytes());
    buffer[start + 4..start + 8].copy_from_slice(&hasher.finalize().to_le_bytes());
    buffer[start + 8] = type_byte;
    Ok((FRAME_HEADER_BYTES + payload_bytes, Some(command)))
}

/// Serializes the payload of `record` onto `buffer`; returns the record kind.
fn encode_payload(record: &RecordRef<'_>, buffer: &mut Vec<u8>) -> Result<u8, String> {
    let encoded = match record {
        RecordRef::Entry {
            index,
            term,
            command,
        } => {
            if command.len() > ENTRY_BYTES_MAX {
                return Err(format!(
                    "entry {index} command of {} bytes exceeds ENTRY_BYTES_MAX ({ENTRY_BYTES_MAX})",
                    command.len()
                ));
            }
            encode_entry_payload(*index, *term, command, buffer);
            Ok(kind::ENTRY)
        }
        RecordRef::HardState(state) => {
            check_vote(state)?;
            postcard::to_io(state, &mut *buffer).map(|_| kind::HARD_STATE)
        }
        RecordRef::Truncate { from } => {
            postcard::to_io(&TruncatePayload { from: *from }, &mut *buffer).map(|_| kind::TRUNCATE)
        }
        RecordRef::Reset { index, term } => {
            let payload = PositionPayload {
                index: *index,
                term: *term,
            };
            postcard::to_io(&payload, &mut *buffer).map(|_| kind::RESET)
        }
        RecordRef::Compact { index, term } => {
            let payload = PositionPayload {
                index: *index,
                term: *term,
            };
            postcard::to_io(&payload, &mut *buffer).map(|_| kind::COMPACT)
        }
        RecordRef::Seal(seal) => postcard::to_io(seal, &mut *buffer).map(|_| kind::SEAL),
    };
    encoded.map_err(|error| error.to_string())
}

/// The hot path of APPEND: the entry payload written directly in postcard's wire form
/// (LEB128 varints, then the bytes), skipping serde's per-call overhead. `EntryPayload`
/// still decodes it, and the golden-bytes and round-trip tests pin that both agree.
fn encode_entry_payload(index: Index, term: Term, command: &[u8], buffer: &mut Vec<u8>) {
    push_varint(index, buffer);
    push_varint(term, buffer);
    push_varint(command.len() as u64, buffer);
    buffer.extend_from_slice(command);
}

/// Appends `value` as an unsigned LEB128 varint (postcard's integer encoding).
fn push_varint(mut value: u64, buffer: &mut Vec<u8>) {
    while value >= 0x80 {
        buffer.push((value as u8) | 0x80);
        value >>= 7;
    }
    buffer.push(value as u8);
}

fn check_vote(state: &HardState) -> Result<(), String> {
    match &state.vote {
        Some(vote) if vote.len() > NODE_ID_BYTES_MAX => Err(format!(
            "vote of {} bytes exceeds NODE_ID_BYTES_MAX ({NODE_ID_BYTES_MAX})",
            vote.len()
        )),
        _ => Ok(()),
    }
}

/// Decodes the frame at the start of `bytes`.
///
/// Never panics and never allocates more than the frame's own (limit-checked) length: the
/// command is borrowed, and only a vote string is copied.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Short {
            needed_bytes: FRAME_HEADER_BYTES as u64,
            available_bytes: bytes.len(),
        });
    }
    let length = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let stored = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let type_byte = bytes[8];
    let record_kind = type_byte & TYPE_KIND_MASK;
    if !(kind::ENTRY..=kind::SEAL).contains(&record_kind) {
        return Err(FrameError::BadType(type_byte));
    }
    if length as usize > RECORD_BYTES_MAX {
        return Err(FrameError::TooLong(length));
    }
    let frame_bytes = FRAME_HEADER_BYTES + length as usize;
    if bytes.len() < frame_bytes {
        return Err(FrameError::Short {
            needed_bytes: frame_bytes as u64,
            available_bytes: bytes.len(),
        });
    }
    let payload = &bytes[FRAME_HEADER_BYTES..frame_bytes];
    let computed = frame_crc(type_byte, payload);
    if computed != stored {
        return Err(FrameError::BadCrc { stored, computed });
    }
    let record = decode_payload(record_kind, payload)?;
    Ok(Frame {
        record,
        batch_end: type_byte & TYPE_FLAG_BATCH_END != 0,
        frame_bytes,
    })
}

/// Decodes a payload whose CRC already matched. Trailing bytes are an error: a payload is
/// exactly one value.
fn decode_payload(record_kind: u8, payload: &[u8]) -> Result<RecordRef<'_>, FrameError> {
    let bad = |error: postcard::Error| FrameError::BadPayload(error.to_string());
    let record = match record_kind {
        kind::ENTRY => {
            let (entry, rest) = postcard::take_from_bytes::<EntryPayload>(payload).map_err(bad)?;
            check_rest(rest)?;
            if entry.command.len() > ENTRY_BYTES_MAX {
                return Err(FrameError::BadPayload(
                    "command exceeds ENTRY_BYTES_MAX".to_string(),
                ));
            }
            return Ok(RecordRef::Entry {
                index: entry.index,
                term: entry.term,
                command: entry.command,
            });
        }
        kind::HARD_STATE => {
            let (state, rest) = postcard::take_from_bytes::<HardState>(payload).map_err(bad)?;
            check_rest(rest)?;
            check_vote(&state).map_err(FrameError::BadPayload)?;
            RecordRef::HardState(state)
        }
        kind::TRUNCATE => {
            let (truncate, rest) =
                postcard::take_from_bytes::<TruncatePayload>(payload).map_err(bad)?;
            check_rest(rest)?;
            RecordRef::Truncate {
                from: truncate.from,
            }
        }
        kind::SEAL => {
            let (seal, rest) = postcard::take_from_bytes::<Seal>(payload).map_err(bad)?;
            check_rest(rest)?;
            RecordRef::Seal(seal)
        }
        _ => {
            let (position, rest) =
                postcard::take_from_bytes::<PositionPayload>(payload).map_err(bad)?;
            check_rest(rest)?;
            let (index, term) = (position.index, position.term);
            if record_kind == kind::RESET {
                RecordRef::Reset { index, term }
            } else {
                RecordRef::Compact { index, term }
            }
        }
    };
    Ok(record)
}

fn check_rest(rest: &[u8]) -> Result<(), FrameError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(FrameError::BadPayload(format!(
            "{} trailing bytes after the payload",
            rest.len()
        )))
    }
}

/// The fixed header at the start of every segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Position of the segment in the log, starting at 1, without gaps.
    pub sequence: u64,
    /// The index the next entry had when the segment was created (last index + 1).
    pub first_index: Index,
}

impl SegmentHeader {
    /// Encodes the header into its [`SEGMENT_HEADER_BYTES`] bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
        bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
        bytes[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        // 12..16: reserved flags, zero.
        bytes[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.first_index.to_le_bytes());
        let crc = crc32fast::hash(&bytes[0..32]);
        bytes[32..36].copy_from_slice(&crc.to_le_bytes());
        // 36..40: reserved, zero.
        bytes
    }

    /// Decodes and checks a header; `Err` says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, String> {
        Self::decode_versioned(bytes).map(|(header, _)| header)
    }

    /// [`SegmentHeader::decode`], also returning the segment's format version.
    pub fn decode_versioned(bytes: &[u8]) -> Result<(SegmentHeader, u32), String> {
        if bytes.len() < SEGMENT_HEADER_BYTES {
            return Err(format!(
                "segment header needs {SEGMENT_HEADER_BYTES} bytes, file has {}",
                bytes.len()
            ));
        }
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err("bad segment magic (not a kvstore WAL segment)".to_string());
        }
        let stored = u32_at(32);
        let computed = crc32fast::hash(&bytes[0..32]);
        if stored != computed {
            return Err(format!(
                "segment header CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let version = u32_at(8);
        if !(SEGMENT_VERSION_READ_MIN..=SEGMENT_VERSION).contains(&version) {
            return Err(format!(
                "unsupported segment version {version} (this build reads \
                 {SEGMENT_VERSION_READ_MIN} to {SEGMENT_VERSION})"
            ));
        }
        let header = SegmentHeader {
            sequence: u64_at(16),
            first_index: u64_at(24),
        };
        Ok((header, version))
    }
}

/// Suffix of segment file names.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of a segment being created (removed on open if a crash left one).
pub const TEMPORARY_SUFFIX: &str = ".tmp";

/// The file name of a segment: zero-padded decimal sequence and first index, so that a
/// plain name sort is log order: `00000000000000000001-00000000000000000001.wal`.
pub fn segment_file_name(header: &SegmentHeader) -> String {
    format!(
        "{:020}-{:020}{SEGMENT_SUFFIX}",
        header.sequence, header.first_index
    )
}

/// Parses a segment file name back into (sequence, first index).
pub fn parse_segment_file_name(name: &str) -> Option<SegmentHeader> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    let (sequence, first_index) = stem.split_once('-')?;
    if sequence.len() != 20 || first_index.len() != 20 {
        return None;
    }
    Some(SegmentHeader {
        sequence: sequence.parse().ok()?,
        first_index: first_index.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_encoding_writes_the_same_bytes() {
        for length in [
            0,
            1,
            DETACHED_COMMAND_BYTES_MIN - 1,
            DETACHED_COMMAND_BYTES_MIN,
            5000,
        ] {
            let command = vec![9u8; length];
            let record = RecordRef::Entry {
                index: 300,
                term: 7,
                command: &command,
            };
            let mut inline = Vec::new();
            let inline_bytes = encode_record(&record, true, &mut inline).unwrap();
            let mut split = Vec::new();
            let (split_bytes, detached) =
                encode_record_detached(&record, true, &mut split).unwrap();
            assert_eq!(detached.is_some(), length >= DETACHED_COMMAND_BYTES_MIN);
            split.extend_from_slice(detached.unwrap_or_default());
            assert_eq!((split, split_bytes), (inline, inline_bytes));
        }
    }

    #[test]
    fn hand_written_entry_payload_is_postcard() {
        let commands: [&[u8]; 3] = [b"", b"x", &[7u8; 300]];
        let numbers = [0, 1, 127, 128, 16_383, 16_384, u64::MAX / 3, u64::MAX];
        for command in commands {
            for (index, term) in numbers.iter().zip(numbers.iter().rev()) {
                let mut hand = Vec::new();
                encode_entry_payload(*index, *term, command, &mut hand);
                let payload = EntryPayload {
                    index: *index,
                    term: *term,
                    command,
                };
                assert_eq!(hand, postcard::to_stdvec(&payload).unwrap());
                let (decoded, rest) = postcard::take_from_bytes::<EntryPayload>(&hand).unwrap();
                assert!(rest.is_empty());
                assert_eq!(
                    (decoded.index, decoded.term, decoded.command),
                    (*index, *term, command)
                );
            }
        }
    }
}
