//! The on-disk format of a snapshot file: header, entry, footer and file names.
//!
//! The byte diagrams and field tables live in the module root ([`crate::snapshot`]); this
//! file is their implementation. Everything is little-endian. Every decoder checks a
//! length against a named limit *before* it slices or allocates.

use crate::raft::{Index, NodeId, SnapshotMeta, Term};

use super::{FILE_BYTES_MAX, KEY_BYTES_MAX, NODE_ID_BYTES_MAX, VALUE_BYTES_MAX, VOTERS_MAX};

/// The first 8 bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"KVSNAP\r\n";
/// The snapshot format version this code writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Size of the fixed part of the header; the voters section follows it.
pub const HEADER_FIXED_BYTES: usize = 48;
/// Size of the footer at the very end of the file.
pub const FOOTER_BYTES: usize = 16;
/// Size of an entry's head (key length, value length, revision); key and value follow.
pub const ENTRY_HEAD_BYTES: usize = 16;
/// Largest voters section: a u16 count, then per voter a length byte and the id.
pub const VOTERS_BYTES_MAX: usize = 2 + VOTERS_MAX * (1 + NODE_ID_BYTES_MAX);

/// Prefix of snapshot file names.
pub const SNAPSHOT_PREFIX: &str = "snap-";
/// Suffix of snapshot file names.
pub const SNAPSHOT_SUFFIX: &str = ".snap";
/// Suffix of every temporary file in the snapshot directory (removed on open).
pub const TEMPORARY_SUFFIX: &str = ".tmp";
/// Prefix of a snapshot being received from a leader.
pub const INCOMING_PREFIX: &str = "incoming-";

/// The decoded header: what the snapshot is, and how long the header is on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Last included index, its term and the voters as of that index.
    pub meta: SnapshotMeta,
    /// Number of entries in the body.
    pub key_count: u64,
}

impl Header {
    /// Bytes the header takes on disk: fixed part plus voters section.
    pub fn encoded_bytes(&self) -> usize {
        HEADER_FIXED_BYTES + voters_bytes(&self.meta.voters)
    }

    /// Encodes the header, or says which limit the voters break.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        check_voters(&self.meta.voters)?;
        let voters = encode_voters(&self.meta.voters);
        let mut bytes = vec![0u8; HEADER_FIXED_BYTES];
        bytes[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
        bytes[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&(voters.len() as u32).to_le_bytes());
        bytes[16..24].copy_from_slice(&self.meta.index.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.meta.term.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.key_count.to_le_bytes());
        // 40..44: reserved, zero.
        let crc = header_crc(&bytes[0..44], &voters);
        bytes[44..48].copy_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(&voters);
        Ok(bytes)
    }
}

fn header_crc(fixed: &[u8], voters: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(fixed);
    hasher.update(voters);
    hasher.finalize()
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// From the fixed part of a header (at least [`HEADER_FIXED_BYTES`]), the whole header's
/// size, after checking the magic and the voters length against [`VOTERS_BYTES_MAX`]. The
/// caller reads that many bytes and passes them to [`decode_header`].
pub fn header_bytes(fixed: &[u8]) -> Result<usize, String> {
    if fixed.len() < HEADER_FIXED_BYTES {
        return Err(format!(
            "snapshot header needs {HEADER_FIXED_BYTES} bytes, {} available",
            fixed.len()
        ));
    }
    if fixed[0..8] != SNAPSHOT_MAGIC {
        return Err("bad snapshot magic (not a kvstore snapshot file)".to_string());
    }
    let voters_bytes = u32_at(fixed, 12) as usize;
    if voters_bytes > VOTERS_BYTES_MAX {
        return Err(format!(
            "voters section of {voters_bytes} bytes exceeds VOTERS_BYTES_MAX ({VOTERS_BYTES_MAX})"
        ));
    }
    Ok(HEADER_FIXED_BYTES + voters_bytes)
}

/// Decodes and checks a whole header (fixed part and voters section, nothing after).
pub fn decode_header(bytes: &[u8]) -> Result<Header, String> {
    let total = header_bytes(bytes)?;
    if bytes.len() != total {
        return Err(format!(
            "snapshot header is {total} bytes, {} given",
            bytes.len()
        ));
    }
    let (fixed, voters) = bytes.split_at(HEADER_FIXED_BYTES);
    let stored = u32_at(fixed, 44);
    let computed = header_crc(&fixed[0..44], voters);
    if stored != computed {
        return Err(format!(
            "header CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let version = u32_at(fixed, 8);
    if version != SNAPSHOT_VERSION {
        return Err(format!(
            "unsupported snapshot version {version} (this build reads {SNAPSHOT_VERSION})"
        ));
    }
    if u32_at(fixed, 40) != 0 {
        return Err("reserved header bytes 40..44 are not zero".to_string());
    }
    Ok(Header {
        meta: SnapshotMeta {
            index: u64_at(fixed, 16),
            term: u64_at(fixed, 24),
            voters: decode_voters(voters)?,
        },
        key_count: u64_at(fixed, 32),
    })
}

fn voters_bytes(voters: &[NodeId]) -> usize {
    2 + voters.iter().map(|voter| 1 + voter.len()).sum::<usize>()
}

/// Checks the voters against [`VOTERS_MAX`] and [`NODE_ID_BYTES_MAX`].
pub fn check_voters(voters: &[NodeId]) -> Result<(), String> {
    if voters.len() > VOTERS_MAX {
        return Err(format!(
            "{} voters exceed VOTERS_MAX ({VOTERS_MAX})",
            voters.len()
        ));
    }
    match voters.iter().find(|voter| voter.len() > NODE_ID_BYTES_MAX) {
        Some(voter) => Err(format!(
            "voter id of {} bytes exceeds NODE_ID_BYTES_MAX ({NODE_ID_BYTES_MAX})",
            voter.len()
        )),
        None => Ok(()),
    }
}

fn encode_voters(voters: &[NodeId]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(voters_bytes(voters));
    bytes.extend_from_slice(&(voters.len() as u16).to_le_bytes());
    for voter in voters {
        bytes.push(voter.len() as u8);
        bytes.extend_from_slice(voter.as_bytes());
    }
    bytes
}

/// Decodes a voters section (already bounded by [`VOTERS_BYTES_MAX`]).
fn decode_voters(bytes: &[u8]) -> Result<Vec<NodeId>, String> {
    if bytes.len() < 2 {
        return Err("voters section shorter than its count".to_string());
    }
    let count = u16::from_le_bytes([bytes[0], bytes[1]]) as usize;
    if count > VOTERS_MAX {
        return Err(format!("{count} voters exceed VOTERS_MAX ({VOTERS_MAX})"));
    }
    // Each voter takes at least its length byte: never reserve more than the bytes allow.
    let mut voters = Vec::with_capacity(count.min(bytes.len() - 2));
    let mut at = 2;
    for _ in 0..count {
        let length = *bytes.get(at).ok_or("voters section ends inside a voter")? as usize;
        let id = bytes
            .get(at + 1..at + 1 + length)
            .ok_or("voters section ends inside a voter id")?;
        let id = std::str::from_utf8(id).map_err(|_| "voter id is not UTF-8".to_string())?;
        voters.push(id.to_string());
        at += 1 + length;
    }
    if at != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the voters",
            bytes.len() - at
        ));
    }
    Ok(voters)
}

/// The footer: body length and body CRC, with its own CRC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    /// Bytes of the body (all entries), between header and footer.
    pub body_bytes: u64,
    /// CRC32 (IEEE) of the body.
    pub body_crc: u32,
}

impl Footer {
    /// Encodes the footer into its [`FOOTER_BYTES`] bytes.
    pub fn encode(&self) -> [u8; FOOTER_BYTES] {
        let mut bytes = [0u8; FOOTER_BYTES];
        bytes[0..8].copy_from_slice(&self.body_bytes.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.body_crc.to_le_bytes());
        let crc = crc32fast::hash(&bytes[0..12]);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes and checks a footer (exactly [`FOOTER_BYTES`]).
    pub fn decode(bytes: &[u8]) -> Result<Footer, String> {
        if bytes.len() != FOOTER_BYTES {
            return Err(format!(
                "snapshot footer is {FOOTER_BYTES} bytes, {} given",
                bytes.len()
            ));
        }
        let stored = u32_at(bytes, 12);
        let computed = crc32fast::hash(&bytes[0..12]);
        if stored != computed {
            return Err(format!(
                "footer CRC mismatch (file truncated, extended or damaged): stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let body_bytes = u64_at(bytes, 0);
        if body_bytes > FILE_BYTES_MAX {
            return Err(format!(
                "body of {body_bytes} bytes exceeds FILE_BYTES_MAX ({FILE_BYTES_MAX})"
            ));
        }
        Ok(Footer {
            body_bytes,
            body_crc: u32_at(bytes, 8),
        })
    }
}

/// An entry's head: the lengths that follow, and the key's revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryHead {
    /// Bytes of the key (UTF-8).
    pub key_bytes: usize,
    /// Bytes of the value.
    pub value_bytes: usize,
    /// The raft index that last wrote the key.
    pub revision: u64,
}

impl EntryHead {
    /// Bytes of the whole entry (head, key, value).
    pub fn entry_bytes(&self) -> u64 {
        (ENTRY_HEAD_BYTES + self.key_bytes + self.value_bytes) as u64
    }
}

/// Checks a key and value against [`KEY_BYTES_MAX`] and [`VALUE_BYTES_MAX`].
pub fn check_entry(key: &str, value: &[u8]) -> Result<(), String> {
    if key.len() > KEY_BYTES_MAX {
        return Err(format!(
            "key of {} bytes exceeds KEY_BYTES_MAX ({KEY_BYTES_MAX})",
            key.len()
        ));
    }
    if value.len() > VALUE_BYTES_MAX {
        return Err(format!(
            "value of {} bytes for key {key:?} exceeds VALUE_BYTES_MAX ({VALUE_BYTES_MAX})",
            value.len()
        ));
    }
    Ok(())
}

/// Appends one entry (limits already checked by [`check_entry`]) to `buffer`.
pub fn encode_entry(key: &str, value: &[u8], revision: u64, buffer: &mut Vec<u8>) {
    buffer.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buffer.extend_from_slice(&(value.len() as u32).to_le_bytes());
    buffer.extend_from_slice(&revision.to_le_bytes());
    buffer.extend_from_slice(key.as_bytes());
    buffer.extend_from_slice(value);
}

/// Decodes an entry head and checks its lengths against the limits and against
/// `remaining_bytes` (what is left of the body after the head) before anything is read.
pub fn decode_entry_head(
    head: &[u8; ENTRY_HEAD_BYTES],
    remaining_bytes: u64,
) -> Result<EntryHead, String> {
    let entry = EntryHead {
        key_bytes: u32_at(head, 0) as usize,
        value_bytes: u32_at(head, 4) as usize,
        revision: u64_at(head, 8),
    };
    if entry.key_bytes > KEY_BYTES_MAX {
        return Err(format!(
            "key length {} exceeds KEY_BYTES_MAX ({KEY_BYTES_MAX})",
            entry.key_bytes
        ));
    }
    if entry.value_bytes > VALUE_BYTES_MAX {
        return Err(format!(
            "value length {} exceeds VALUE_BYTES_MAX ({VALUE_BYTES_MAX})",
            entry.value_bytes
        ));
    }
    let needed = (entry.key_bytes + entry.value_bytes) as u64;
    if needed > remaining_bytes {
        return Err(format!(
            "entry needs {needed} more bytes, the body has {remaining_bytes} left"
        ));
    }
    Ok(entry)
}

/// A decoded entry borrowing from the bytes it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// The key.
    pub key: &'a str,
    /// The value.
    pub value: &'a [u8],
    /// The raft index that last wrote the key.
    pub revision: u64,
}

/// Decodes the entry at the start of `bytes`; returns it and its size. Never panics and
/// never allocates: the key and value are borrowed, their lengths limit-checked first.
pub fn decode_entry(bytes: &[u8]) -> Result<(EntryRef<'_>, usize), String> {
    let head: &[u8; ENTRY_HEAD_BYTES] = bytes
        .get(..ENTRY_HEAD_BYTES)
        .and_then(|head| head.try_into().ok())
        .ok_or("entry head needs 16 bytes")?;
    let rest = &bytes[ENTRY_HEAD_BYTES..];
    let entry = decode_entry_head(head, rest.len() as u64)?;
    let (key, rest) = rest.split_at(entry.key_bytes);
    let key = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_string())?;
    let value = &rest[..entry.value_bytes];
    let used = entry.entry_bytes() as usize;
    Ok((
        EntryRef {
            key,
            value,
            revision: entry.revision,
        },
        used,
    ))
}

/// `snap-<index>-<term>.snap`, both 20-digit zero-padded decimals, so that a plain name
/// sort is index order.
pub fn snapshot_file_name(index: Index, term: Term) -> String {
    format!("{SNAPSHOT_PREFIX}{index:020}-{term:020}{SNAPSHOT_SUFFIX}")
}

/// Parses a snapshot file name back into (index, term).
pub fn parse_snapshot_file_name(name: &str) -> Option<(Index, Term)> {
    let stem = name
        .strip_prefix(SNAPSHOT_PREFIX)?
        .strip_suffix(SNAPSHOT_SUFFIX)?;
    let (index, term) = stem.split_once('-')?;
    let digits = |text: &str| text.len() == 20 && text.bytes().all(|byte| byte.is_ascii_digit());
    if !digits(index) || !digits(term) {
        return None;
    }
    Some((index.parse().ok()?, term.parse().ok()?))
}
