//! WRITE (see [`crate::snapshot`]): stream entries into a temporary file, sync, rename,
//! directory fsync, retention.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::format::{self, Footer, Header};
use super::{
    SYNC_INTERVAL_BYTES, Shared, SnapshotInfo, WRITE_BUFFER_BYTES, WRITE_BYTES_PER_SECOND_MAX,
};
use crate::raft::SnapshotMeta;
use crate::wal::fs::WalFile;
use crate::{Error, Result};

/// Makes temporary names unique within the process (a write and an install, or two
/// writes, may run at once).
static TEMPORARY_SEQUENCE: AtomicU64 = AtomicU64::new(1);

/// A fresh temporary path in `dir` starting with `stem`.
pub(super) fn temporary_path(dir: &Path, stem: &str) -> PathBuf {
    let sequence = TEMPORARY_SEQUENCE.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{stem}.{sequence}{}", format::TEMPORARY_SUFFIX))
}

/// Deletes a temporary file on drop unless disarmed (any early return cleans up).
pub(super) struct RemoveOnDrop<'a> {
    pub shared: &'a Shared,
    pub path: Option<PathBuf>,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(error) = self.shared.file_system.remove_file(&path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %path.display(), %error, "could not remove a temporary snapshot file");
        }
    }
}

pub(super) fn write<'a>(
    shared: &Shared,
    meta: &SnapshotMeta,
    key_count: u64,
    entries: impl Iterator<Item = (&'a str, &'a [u8], u64)>,
) -> Result<SnapshotInfo> {
    let header = Header {
        meta: meta.clone(),
        key_count,
    };
    let header_bytes = header.encode().map_err(Error::InvalidInput)?;
    let name = format::snapshot_file_name(meta.index, meta.term);
    let temporary = temporary_path(&shared.dir, &name);
    let mut guard = RemoveOnDrop {
        shared,
        path: Some(temporary.clone()),
    };
    let file = shared
        .file_system
        .create_new(&temporary)
        .map_err(|error| Error::io("create", &temporary, error))?;
    let mut writer = BodyWriter::new(file, &temporary);
    writer.append(&header_bytes)?;
    let footer = writer.write_body(key_count, entries)?;
    writer.append(&footer.encode())?;
    writer.sync()?;
    let file_bytes = writer.written_bytes;
    drop(writer);
    let path = shared.commit(&temporary, meta)?;
    guard.path = None;
    Ok(SnapshotInfo {
        meta: meta.clone(),
        path,
        file_bytes,
        key_count,
    })
}

/// Appends through a buffer to a temporary file, computing the body CRC.
struct BodyWriter<'p> {
    file: Box<dyn WalFile>,
    path: &'p Path,
    buffer: Vec<u8>,
    written_bytes: u64,
    synced_bytes: u64,
    /// When writing began, for the rate cap.
    started: Instant,
}

impl<'p> BodyWriter<'p> {
    fn new(file: Box<dyn WalFile>, path: &'p Path) -> BodyWriter<'p> {
        BodyWriter {
            file,
            path,
            buffer: Vec::with_capacity(WRITE_BUFFER_BYTES),
            written_bytes: 0,
            synced_bytes: 0,
            started: Instant::now(),
        }
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .append(bytes)
            .map_err(|error| Error::io("write", self.path, error))?;
        self.written_bytes += bytes.len() as u64;
        Ok(())
    }

    fn flush(&mut self, hasher: &mut crc32fast::Hasher) -> Result<()> {
        hasher.update(&self.buffer);
        let buffer = std::mem::take(&mut self.buffer);
        let result = self.append(&buffer);
        self.buffer = buffer;
        self.buffer.clear();
        result?;
        if self.written_bytes - self.synced_bytes >= SYNC_INTERVAL_BYTES {
            self.sync()?;
            self.pace();
        }
        Ok(())
    }

    /// Sleeps while the bytes written are ahead of [`WRITE_BYTES_PER_SECOND_MAX`].
    fn pace(&self) {
        let due =
            Duration::from_secs_f64(self.written_bytes as f64 / WRITE_BYTES_PER_SECOND_MAX as f64);
        if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(ahead);
        }
    }

    /// Encodes every entry, checking limits, key order and the count; returns the footer.
    fn write_body<'a>(
        &mut self,
        key_count: u64,
        entries: impl Iterator<Item = (&'a str, &'a [u8], u64)>,
    ) -> Result<Footer> {
        let mut hasher = crc32fast::Hasher::new();
        let mut body_bytes = 0u64;
        let mut count = 0u64;
        let mut previous: Option<&str> = None;
        for (key, value, revision) in entries {
            format::check_entry(key, value).map_err(Error::InvalidInput)?;
            if previous.is_some_and(|previous| previous >= key) {
                return Err(Error::InvalidInput(format!(
                    "snapshot entries out of key order at {key:?}"
                )));
            }
            previous = Some(key);
            let before = self.buffer.len();
            format::encode_entry(key, value, revision, &mut self.buffer);
            body_bytes += (self.buffer.len() - before) as u64;
            count += 1;
            if self.buffer.len() >= WRITE_BUFFER_BYTES {
                self.flush(&mut hasher)?;
            }
        }
        if count != key_count {
            return Err(Error::InvalidInput(format!(
                "snapshot key_count is {key_count} but {count} entries were given"
            )));
        }
        self.flush(&mut hasher)?;
        Ok(Footer {
            body_bytes,
            body_crc: hasher.finalize(),
        })
    }

    fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|error| Error::io("fdatasync", self.path, error))?;
        self.synced_bytes = self.written_bytes;
        Ok(())
    }
}
