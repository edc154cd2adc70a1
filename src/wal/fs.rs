//! The file-system seam: every write, sync, rename and delete the WAL does goes through
//! [`FileSystem`], so tests can fail any of them on demand ([`FaultyFs`]).
//!
//! Reads go through it too ([`FileSystem::read`]), which maps a segment with memmap2 in
//! [`StdFs`], or copies it ([`FileSystem::read_copy`]) for readers without the data
//! directory lock.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An open segment file for appending and positional reads.
///
/// Appends go to the file's *write position*, which starts at the end of the file when it is
/// opened and advances with every append. It is not tied to the file's size: a segment is
/// preallocated ([`WalFile::preallocate`]) and then filled from the front.
pub trait WalFile: Send + Debug {
    /// Writes all of `bytes` at the write position.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Writes all of `parts`, in order, at the write position (one `pwritev` where the
    /// system allows). The default concatenates them and calls [`WalFile::append`].
    fn append_vectored(&mut self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        let mut joined = Vec::with_capacity(parts.iter().map(|part| part.len()).sum());
        for part in parts {
            joined.extend_from_slice(part);
        }
        self.append(&joined)
    }
    /// `fdatasync`: the data written so far (and the size) is durable on return.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Shrinks (or grows) the file to `length_bytes`; the next append goes there.
    fn set_len(&mut self, length_bytes: u64) -> io::Result<()>;
    /// Moves the write position (where the next append goes).
    fn set_write_position(&mut self, offset: u64);
    /// Makes the file at least `length_bytes` long with allocated, zeroed space
    /// (`fallocate`), leaving the write position alone. Returns `false`, changing nothing,
    /// where the file system cannot allocate ahead. Durable with the next `sync_data`.
    fn preallocate(&mut self, length_bytes: u64) -> io::Result<bool>;
    /// Reads exactly `buffer.len()` bytes at `offset`.
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()>;
}

/// Bytes of a whole file, mapped or read.
pub type FileBytes = Box<dyn Deref<Target = [u8]> + Send>;

/// Directory and file operations the WAL needs.
pub trait FileSystem: Send + Sync + Debug {
    /// Creates a new file (fails if it exists), opened for appending.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// Opens an existing file for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// Opens an existing file read-only (positional reads only).
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// The whole content of a file (memory-mapped where possible).
    fn read(&self, path: &Path) -> io::Result<FileBytes>;
    /// The whole content of a file, copied into memory: for readers that do not hold the
    /// data directory lock (read-only opening, [`crate::wal::verify`]: kvinspect next to a
    /// live node), where the node may shrink a file while it is read (the gradual deletion
    /// of a dropped segment, a torn-tail repair at start). A map of it would fault
    /// (SIGBUS); a copy just ends early, and replay says so or starts over.
    fn read_copy(&self, path: &Path) -> io::Result<FileBytes> {
        self.read(path)
    }
    /// Renames a file (atomic within a directory).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Deletes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// `fsync` on a directory, making creates, renames and deletes in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of a directory (files only matter to the WAL).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

#[derive(Debug)]
struct StdFile {
    file: File,
    /// Where the next append goes.
    position: u64,
}

impl StdFile {
    fn open(file: File) -> io::Result<Box<dyn WalFile>> {
        let position = file.metadata()?.len();
        Ok(Box::new(StdFile { file, position }))
    }
}

/// Most buffers one `pwritev` takes (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

impl WalFile for StdFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, self.position)?;
        self.position += bytes.len() as u64;
        Ok(())
    }
    fn append_vectored(&mut self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        let mut owned: Vec<IoSlice<'_>> = parts.to_vec();
        let mut remaining = &mut owned[..];
        IoSlice::advance_slices(&mut remaining, 0);
        while !remaining.is_empty() {
            let count = remaining.len().min(IOV_MAX);
            // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix (documented by std);
            // the slices outlive the call, and `count` is within `remaining`.
            let written = unsafe {
                libc::pwritev(
                    self.file.as_raw_fd(),
                    remaining.as_ptr().cast::<libc::iovec>(),
                    count as libc::c_int,
                    self.position as libc::off_t,
                )
            };
            match written {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                written if written > 0 => {
                    self.position += written as u64;
                    IoSlice::advance_slices(&mut remaining, written as usize);
                }
                _ => {
                    let error = io::Error::last_os_error();
                    if error.kind() != io::ErrorKind::Interrupted {
                        return Err(error);
                    }
                }
            }
        }
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn set_len(&mut self, length_bytes: u64) -> io::Result<()> {
        self.file.set_len(length_bytes)?;
        self.position = length_bytes;
        Ok(())
    }
    fn set_write_position(&mut self, offset: u64) {
        self.position = offset;
    }
    fn preallocate(&mut self, length_bytes: u64) -> io::Result<bool> {
        if self.file.metadata()?.len() >= length_bytes {
            return Ok(true);
        }
        // SAFETY: plain syscall on an fd we own; mode 0 allocates and extends the size.
        let result =
            unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, length_bytes as libc::off_t) };
        if result == 0 {
            return Ok(true);
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(false),
            _ => Err(error),
        }
    }
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buffer, offset)
    }
}

/// A read-only memory map of a whole file. An empty file maps to an empty slice (mmap of
/// length zero is an error on Linux).
struct Mapped {
    map: Option<memmap2::Mmap>,
}

impl Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

impl FileSystem for StdFs {
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        StdFile::open(file)
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        StdFile::open(file)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        StdFile::open(File::open(path)?)
    }
    fn read(&self, path: &Path) -> io::Result<FileBytes> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(Box::new(Mapped { map: None }));
        }
        // SAFETY: the WAL maps only its own segment files and never changes a mapped
        // region while its map is alive: a segment is mapped during replay, and truncated
        // (torn-tail repair) only after that map is dropped. Other kvstore processes that
        // write are kept out by the data directory lock; readers without it (read-only
        // opening, verify) use `read_copy`, never a map.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Box::new(Mapped { map: Some(map) }))
    }
    fn read_copy(&self, path: &Path) -> io::Result<FileBytes> {
        Ok(Box::new(std::fs::read(path)?))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
}

/// Faults armed on a [`FaultyFs`]; each fires once, on the next matching call.
#[derive(Debug, Default)]
pub struct Faults {
    /// Fail the next `append` without writing anything.
    pub fail_next_write: bool,
    /// Write only this many bytes of the next `append`, then fail.
    pub short_next_write_bytes: Option<usize>,
    /// Fail the next `sync_data` (the data may or may not be on disk).
    pub fail_next_sync: bool,
    /// Fail the next directory sync.
    pub fail_next_dir_sync: bool,
    /// Fail the next `create_new`.
    pub fail_next_create: bool,
    /// Count of `sync_data` calls that succeeded (lets tests check group commit).
    pub syncs: u64,
    /// Count of `append` calls that succeeded.
    pub writes: u64,
    /// Before the next whole-file read, rename this file (from, to): what a live node
    /// dropping a segment does to a reader without the lock.
    pub rename_before_next_read: Option<(PathBuf, PathBuf)>,
}

/// A [`FileSystem`] for tests that delegates to [`StdFs`] but fails operations on demand.
#[derive(Debug, Default, Clone)]
pub struct FaultyFs {
    faults: Arc<Mutex<Faults>>,
}

impl FaultyFs {
    /// A file system with no fault armed.
    pub fn new() -> FaultyFs {
        FaultyFs::default()
    }

    /// Runs `change` on the armed faults (and counters).
    pub fn with_faults<T>(&self, change: impl FnOnce(&mut Faults) -> T) -> T {
        let mut faults = self
            .faults
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        change(&mut faults)
    }

    fn rename_armed(&self) -> io::Result<()> {
        match self.with_faults(|faults| faults.rename_before_next_read.take()) {
            Some((from, to)) => StdFs.rename(&from, &to),
            None => Ok(()),
        }
    }

    fn wrap(&self, inner: Box<dyn WalFile>, path: &Path) -> Box<dyn WalFile> {
        Box::new(FaultyFile {
            inner,
            faults: Arc::clone(&self.faults),
            path: path.to_path_buf(),
        })
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected fault: {what}"))
}

#[derive(Debug)]
struct FaultyFile {
    inner: Box<dyn WalFile>,
    faults: Arc<Mutex<Faults>>,
    path: PathBuf,
}

impl FaultyFile {
    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl WalFile for FaultyFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let (fail, short) = {
            let mut faults = self.faults();
            (
                std::mem::take(&mut faults.fail_next_write),
                faults.short_next_write_bytes.take(),
            )
        };
        if fail {
            return Err(injected("write failed"));
        }
        if let Some(short_bytes) = short {
            self.inner.append(&bytes[..short_bytes.min(bytes.len())])?;
            return Err(injected("short write"));
        }
        self.inner.append(bytes)?;
        self.faults().writes += 1;
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.faults().fail_next_sync) {
            return Err(injected(&format!(
                "fdatasync {} failed",
                self.path.display()
            )));
        }
        self.inner.sync_data()?;
        self.faults().syncs += 1;
        Ok(())
    }
    fn set_len(&mut self, length_bytes: u64) -> io::Result<()> {
        self.inner.set_len(length_bytes)
    }
    fn set_write_position(&mut self, offset: u64) {
        self.inner.set_write_position(offset);
    }
    fn preallocate(&mut self, length_bytes: u64) -> io::Result<bool> {
        self.inner.preallocate(length_bytes)
    }
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buffer, offset)
    }
}

impl FileSystem for FaultyFs {
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        if self.with_faults(|faults| std::mem::take(&mut faults.fail_next_create)) {
            return Err(injected("create failed"));
        }
        Ok(self.wrap(StdFs.create_new(path)?, path))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        Ok(self.wrap(StdFs.open_append(path)?, path))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        StdFs.open_read(path)
    }
    fn read(&self, path: &Path) -> io::Result<FileBytes> {
        self.rename_armed()?;
        StdFs.read(path)
    }
    fn read_copy(&self, path: &Path) -> io::Result<FileBytes> {
        self.rename_armed()?;
        StdFs.read_copy(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdFs.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.with_faults(|faults| std::mem::take(&mut faults.fail_next_dir_sync)) {
            return Err(injected("directory fsync failed"));
        }
        StdFs.sync_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFs.list(dir)
    }
}

/// Bytes [`remove_gradually`] cuts off a file per step.
pub const REMOVE_STEP_BYTES: u64 = 8 * 1024 * 1024;

/// Deletes a (large) file by shrinking it [`REMOVE_STEP_BYTES`] at a time from the end, each
/// step made durable and followed by `pause`, then unlinking what is left. Does not sync
/// the directory: the caller does, once for all the files it removes.
///
/// Why: freeing the blocks of a large file is journaled work (and, on a file system mounted
/// with `discard`, a TRIM of every freed extent). Unlinking a 64 MiB file in one go took
/// 19 ms on the development machine, 40 ms for 128 MiB, and every fdatasync on the same file
/// system (the WAL's, which clients wait on) queues behind that journal commit. In steps,
/// no single commit frees more than a few MiB, and the WAL's syncs get through in between.
/// Costs the same total I/O; use it off the latency-critical thread.
///
/// A crash part way leaves a shorter file under the same name: callers only use this on
/// files that are already dead (no longer read by recovery).
pub fn remove_gradually(
    file_system: &dyn FileSystem,
    path: &Path,
    pause: std::time::Duration,
) -> io::Result<()> {
    let mut length = std::fs::metadata(path)?.len();
    if length > REMOVE_STEP_BYTES {
        let mut file = file_system.open_append(path)?;
        while length > REMOVE_STEP_BYTES {
            length -= REMOVE_STEP_BYTES;
            file.set_len(length)?;
            file.sync_data()?;
            std::thread::sleep(pause);
        }
    }
    file_system.remove_file(path)
}
