//! INSTALL (see [`crate::snapshot`]): a snapshot file sent as CRC-checked chunks, received
//! into a temporary file with bounded memory, resumable after a lost chunk.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::write::temporary_path;
use super::{CHUNK_BYTES_MAX, Chunk, FILE_BYTES_MAX, Shared, SnapshotInfo, format, read::verify};
use crate::raft::SnapshotMeta;
use crate::wal::fs::WalFile;
use crate::{Error, Result};

pub(super) fn chunk(info: &SnapshotInfo, offset: u64, chunk_bytes: usize) -> Result<Chunk> {
    if offset > info.file_bytes {
        return Err(Error::InvalidInput(format!(
            "chunk offset {offset} is past the end of {} ({} bytes)",
            info.path.display(),
            info.file_bytes
        )));
    }
    let length = (info.file_bytes - offset).min(chunk_bytes.clamp(1, CHUNK_BYTES_MAX) as u64);
    let mut data = vec![0u8; length as usize];
    let file = File::open(&info.path).map_err(|error| Error::io("open", &info.path, error))?;
    file.read_exact_at(&mut data, offset)
        .map_err(|error| Error::io("read", &info.path, error))?;
    Ok(Chunk {
        index: info.meta.index,
        term: info.meta.term,
        offset,
        total_bytes: info.file_bytes,
        crc: crc32fast::hash(&data),
        data,
    })
}

pub(super) fn receive(
    shared: &Arc<Shared>,
    meta: &SnapshotMeta,
    total_bytes: u64,
) -> Result<Incoming> {
    if total_bytes > FILE_BYTES_MAX {
        return Err(Error::InvalidInput(format!(
            "snapshot of {total_bytes} bytes exceeds FILE_BYTES_MAX ({FILE_BYTES_MAX})"
        )));
    }
    format::check_voters(&meta.voters).map_err(Error::InvalidInput)?;
    let stem = format!(
        "{}{:020}-{:020}",
        format::INCOMING_PREFIX,
        meta.index,
        meta.term
    );
    let path = temporary_path(&shared.dir, &stem);
    let file = shared
        .file_system
        .create_new(&path)
        .map_err(|error| Error::io("create", &path, error))?;
    Ok(Incoming {
        shared: Arc::clone(shared),
        meta: meta.clone(),
        total_bytes,
        next_offset: 0,
        file: Some(file),
        path,
        poisoned: false,
    })
}

/// A snapshot being received from the leader, written through to a temporary file.
/// Dropping it unfinished deletes the file.
#[derive(Debug)]
pub struct Incoming {
    shared: Arc<Shared>,
    meta: SnapshotMeta,
    total_bytes: u64,
    next_offset: u64,
    /// `None` once finished (the file was renamed into place).
    file: Option<Box<dyn WalFile>>,
    path: PathBuf,
    /// A write failed: what reached the file is unknown, so no more chunks are taken.
    poisoned: bool,
}

impl Incoming {
    /// The snapshot being received.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// The size of the whole snapshot file.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The offset of the next byte wanted: everything before it is written.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// True once every byte arrived.
    pub fn is_complete(&self) -> bool {
        self.next_offset == self.total_bytes
    }

    /// Takes a chunk: checks its CRC ([`Error::Decode`] if bad: resend), that it belongs
    /// to this stream ([`Error::InvalidInput`] if not), and writes the part of it at
    /// `next_offset`. A chunk that does not reach `next_offset`, or starts after it, is
    /// ignored. Returns the new `next_offset` (the offset to ask the sender for).
    pub fn accept(&mut self, chunk: &Chunk) -> Result<u64> {
        self.check_chunk(chunk)?;
        let end = chunk.offset + chunk.data.len() as u64;
        if chunk.offset > self.next_offset || end <= self.next_offset {
            return Ok(self.next_offset);
        }
        let skip = (self.next_offset - chunk.offset) as usize;
        self.write(&chunk.data[skip..])?;
        Ok(self.next_offset)
    }

    fn check_chunk(&self, chunk: &Chunk) -> Result<()> {
        if self.poisoned {
            return Err(Error::InvalidInput(format!(
                "an earlier write to {} failed; start the transfer again",
                self.path.display()
            )));
        }
        if chunk.data.len() > CHUNK_BYTES_MAX {
            return Err(Error::InvalidInput(format!(
                "chunk of {} bytes exceeds CHUNK_BYTES_MAX ({CHUNK_BYTES_MAX})",
                chunk.data.len()
            )));
        }
        let computed = crc32fast::hash(&chunk.data);
        if computed != chunk.crc {
            return Err(Error::Decode(format!(
                "snapshot chunk at offset {} CRC mismatch: stored {:#010x}, computed {computed:#010x}",
                chunk.offset, chunk.crc
            )));
        }
        let ours = (self.meta.index, self.meta.term, self.total_bytes);
        let theirs = (chunk.index, chunk.term, chunk.total_bytes);
        if ours != theirs {
            return Err(Error::InvalidInput(format!(
                "chunk of snapshot (index, term, bytes) {theirs:?} does not belong to the transfer of {ours:?}"
            )));
        }
        if chunk.offset.saturating_add(chunk.data.len() as u64) > self.total_bytes {
            return Err(Error::InvalidInput(format!(
                "chunk at offset {} of {} bytes runs past the snapshot's {} bytes",
                chunk.offset,
                chunk.data.len(),
                self.total_bytes
            )));
        }
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(Error::InvalidInput("transfer already finished".to_string()));
        };
        if let Err(error) = file.append(data) {
            self.poisoned = true;
            return Err(Error::io("write", &self.path, error));
        }
        self.next_offset += data.len() as u64;
        Ok(())
    }

    /// Syncs and fully verifies the received file (and that it is the announced
    /// snapshot), then commits it like a written snapshot (rename, directory fsync,
    /// retention). On error the temporary file is deleted.
    pub fn finish(mut self) -> Result<SnapshotInfo> {
        if !self.is_complete() || self.poisoned {
            return Err(Error::InvalidInput(format!(
                "snapshot transfer incomplete: {} of {} bytes",
                self.next_offset, self.total_bytes
            )));
        }
        let mut file = self
            .file
            .take()
            .expect("an unfinished Incoming holds its file");
        file.sync_data()
            .map_err(|error| Error::io("fdatasync", &self.path, error))?;
        drop(file);
        let info = verify(&self.path)?;
        if info.meta != self.meta {
            return Err(Error::Corruption {
                file: self.path.clone(),
                offset: 0,
                index_range: None,
                detail: format!(
                    "received snapshot is {:?}, the leader announced {:?}",
                    info.meta, self.meta
                ),
            });
        }
        let path = self.shared.commit(&self.path, &self.meta)?;
        self.path = PathBuf::new();
        Ok(SnapshotInfo { path, ..info })
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        self.file = None;
        if let Err(error) = self.shared.file_system.remove_file(&self.path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %self.path.display(), %error, "could not remove an unfinished snapshot transfer");
        }
    }
}
