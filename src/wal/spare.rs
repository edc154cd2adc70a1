//! Spare segments: a zero-filled file made ready in the background for the next rotation
//! (PREALLOCATION in the module root).
//!
//! `fallocate` gives a segment its space as *unwritten* extents: the first write to each
//! block must also convert the extent, so every fdatasync commits that metadata along with
//! the data. Space that was written once (with zeros) is plain data: measured here (ext4,
//! 4 KiB append + fdatasync) p50 97 µs and 38 µs of CPU per append, against 156 µs and
//! 55 µs in fallocated space. Filling 64 MiB takes tens of milliseconds of disk time, too
//! long to do while writes wait, so a thread fills the next segment's file ahead of time
//! under a temporary name (`spare.wal.tmp`, deleted by `open` like every temporary), paced
//! so that the WAL's own fdatasyncs keep the disk. A rotation that finds no spare ready
//! falls back to `fallocate`. The first segment of a new log is filled in place: a node
//! pays that once, when its data directory is created.
//!
//! # Pacing
//!
//! A WAL fdatasync that arrives while the fill's own flush is writing back waits for it, so
//! the largest piece the fill flushes at once bounds what it adds to an append's latency.
//! The background fill therefore flushes every chunk it writes (256 KiB, under 1 ms of the
//! development machine's 350 MB/s disk) and pauses after each. It first flushed every
//! 8 MiB (about 24 ms of disk time per flush). Measured with three nodes on one disk under
//! `wrk -t1 -c64` puts (about 20,000/s), in the seconds around a segment rotation, which
//! starts a fill: 15-20 WAL fdatasyncs slower than 6.4 ms per node before, 10-11 after.
//! Away from rotations both see about one a second, the machine's own noise. A fill now
//! takes 1-2 s (three at once on one disk: 1.9 s), while a segment lasts about 25 s at
//! 20,000 puts/s of 100 B values.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::fs::{FileSystem, StdFs, WalFile};

/// Name of the spare file in the WAL directory.
pub const SPARE_FILE_NAME: &str = "spare.wal.tmp";

/// Bytes written per step while filling; in the background each is flushed on its own
/// (see Pacing above).
const FILL_CHUNK_BYTES: usize = 256 * 1024;

/// Bytes between two fdatasyncs when filling in place (a new log's first segment, which
/// nothing waits behind but the node's own start), so the page cache does not hold all of
/// a segment at once.
const FILL_SYNC_BYTES: u64 = 8 * 1024 * 1024;

/// Pause after each chunk written and flushed in the background: at most about 60 MiB/s, a
/// 64 MiB spare in 1-2 s, far sooner than a busy node fills a segment.
const FILL_PAUSE: Duration = Duration::from_millis(4);

/// The spare of one WAL directory: at most one, filled by at most one thread at a time.
#[derive(Debug)]
pub(super) struct Spares {
    dir: PathBuf,
    bytes: u64,
    filling: Option<JoinHandle<io::Result<()>>>,
    stop: Arc<AtomicBool>,
    /// Spares handed out so far.
    taken: u64,
}

impl Spares {
    /// Spares of `bytes` bytes (the segment size) in `dir`.
    pub(super) fn new(dir: &Path, bytes: u64) -> Spares {
        Spares {
            dir: dir.to_path_buf(),
            bytes,
            filling: None,
            stop: Arc::default(),
            taken: 0,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(SPARE_FILE_NAME)
    }

    /// Starts filling a spare in the background, unless one is being filled already.
    pub(super) fn prepare(&mut self) {
        if self.filling.is_some() {
            return;
        }
        let (path, bytes, stop) = (self.path(), self.bytes, self.stop.clone());
        let spawned = std::thread::Builder::new()
            .name("wal-spare".into())
            .spawn(move || {
                let result = fill(&StdFs, &path, bytes, Some(FILL_PAUSE), &stop);
                if result.is_err() {
                    let _ = std::fs::remove_file(&path);
                }
                result.map(drop)
            });
        match spawned {
            Ok(thread) => self.filling = Some(thread),
            Err(error) => tracing::debug!(%error, "cannot start the spare segment thread"),
        }
    }

    /// Spares handed out so far.
    #[cfg(test)]
    pub(super) fn taken(&self) -> u64 {
        self.taken
    }

    /// Waits until the spare being prepared is filled (or its fill failed); panics after
    /// 10 s, or if none is being prepared.
    #[cfg(test)]
    pub(super) fn wait_filled(&self) {
        let thread = self.filling.as_ref().expect("a spare is being prepared");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !thread.is_finished() {
            assert!(std::time::Instant::now() < deadline, "no spare within 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The spare's path if one is filled and durable; it is the caller's from then on (to
    /// rename). `None` while one is still being filled or after the fill failed.
    pub(super) fn take(&mut self) -> Option<PathBuf> {
        if !self.filling.as_ref()?.is_finished() {
            return None;
        }
        let outcome = self.filling.take()?.join();
        match outcome {
            Ok(Ok(())) => {
                self.taken += 1;
                Some(self.path())
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not prepare a spare WAL segment; allocating in place");
                None
            }
            Err(_) => None,
        }
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.filling.take() {
            let _ = thread.join();
        }
    }
}

/// Writes `bytes` zero bytes to a new file at `path` and makes them durable; returns the
/// file. With a pause, a chunk at a time, stopping early (with an error) when `stop` is
/// set. Through `fs` like every WAL write; the background thread passes `StdFs`, as the
/// deleter thread does.
pub(super) fn fill(
    fs: &dyn FileSystem,
    path: &Path,
    bytes: u64,
    pause: Option<Duration>,
    stop: &AtomicBool,
) -> io::Result<Box<dyn WalFile>> {
    // A leftover of a fill that was cut short.
    match fs.remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut file = fs.create_new(path)?;
    let zeros = vec![0u8; FILL_CHUNK_BYTES];
    let mut offset = 0;
    while offset < bytes {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("stopped"));
        }
        let length = (bytes - offset).min(FILL_CHUNK_BYTES as u64) as usize;
        file.append(&zeros[..length])?;
        offset += length as u64;
        if let Some(pause) = pause {
            file.sync_data()?;
            std::thread::sleep(pause);
        } else if offset % FILL_SYNC_BYTES == 0 {
            file.sync_data()?;
        }
    }
    file.sync_data()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spare_is_zeros_of_the_segment_size_and_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut spares = Spares::new(dir.path(), 3 * 1024 * 1024 + 5);
        assert_eq!(spares.take(), None, "nothing prepared yet");
        spares.prepare();
        spares.wait_filled();
        let path = spares.take().expect("a filled spare");
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 3 * 1024 * 1024 + 5);
        assert!(bytes.iter().all(|&byte| byte == 0));
        assert_eq!(
            spares.take(),
            None,
            "taken: the next must be prepared again"
        );
    }

    #[test]
    fn a_stopped_fill_fails() {
        let dir = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(true);
        let path = dir.path().join(SPARE_FILE_NAME);
        assert!(fill(&StdFs, &path, 1 << 20, None, &stop).is_err());
    }
}
