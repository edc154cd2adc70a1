//! The node's data directory: its lock, its identity and its layout.
//!
//! ```text
//! <data dir>/
//!   LOCK            held with File::try_lock for the life of the process; holds its pid
//!   identity.json   {"format_version":1,"node_id":..,"cluster_id":..,"voters":[..]}
//!   wal/            the write-ahead log (crate::wal)
//!   snapshots/      snapshot files (crate::snapshot)
//! ```
//!
//! Invariants:
//!
//! - At most one process uses a data directory at a time: [`DataDir::open`] takes an
//!   exclusive lock (`flock` through std `File::try_lock`) on `LOCK` and keeps it until the
//!   [`DataDir`] is dropped. A second process gets [`Error::DataDir`] naming the holder's
//!   pid and changes nothing.
//! - A directory is used only by the node and cluster it was created for: `identity.json`
//!   is written once, atomically (temporary file, fsync, rename, directory fsync), and
//!   every later open compares node id, cluster id and voters with what it is given.
//! - A non-empty directory without `identity.json` is not ours: refused, never written.
//!
//! Implementation caveats: the voters recorded are the initial membership; when
//! membership changes arrive (a later issue) the check will move to the latest
//! configuration in the log.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::raft::NodeId;
use crate::{Error, Result};

/// File name of the lock file.
pub const LOCK_FILE: &str = "LOCK";
/// File name of the identity file.
pub const IDENTITY_FILE: &str = "identity.json";
/// The WAL's directory inside a data directory.
pub const WAL_DIR: &str = "wal";
/// The snapshots' directory inside a data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";
/// The identity file format this code writes and reads.
pub const IDENTITY_FORMAT_VERSION: u32 = 1;
/// Largest identity file read: it holds a few short names; 1 MiB bounds a corrupt one.
pub const IDENTITY_BYTES_MAX: u64 = 1024 * 1024;

/// Who a data directory belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// This node's id.
    pub node_id: NodeId,
    /// The cluster's id.
    pub cluster_id: String,
    /// The voting members the node was created with, sorted.
    pub voters: Vec<NodeId>,
}

/// On-disk form of the identity: the identity plus a format version.
#[derive(Serialize, Deserialize)]
struct IdentityFile {
    format_version: u32,
    #[serde(flatten)]
    identity: Identity,
}

/// An open, locked data directory.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    identity: Identity,
    /// Holds the lock until dropped.
    _lock: File,
}

fn refuse(path: &Path, reason: impl Into<String>) -> Error {
    Error::DataDir {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Creates `path` and its missing parents, then fsyncs the parent of each directory it
/// created (the new entry is durable only then), so a first boot's data directory survives
/// a crash together with what is written into it.
fn create_dir_durably(path: &Path) -> Result<()> {
    let mut created = Vec::new();
    let mut missing = Some(path);
    while let Some(dir) = missing.filter(|dir| !dir.as_os_str().is_empty() && !dir.exists()) {
        created.push(dir);
        missing = dir.parent();
    }
    std::fs::create_dir_all(path).map_err(|error| Error::io("create directory", path, error))?;
    for dir in created.into_iter().rev() {
        let parent = match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
    }
    Ok(())
}

impl DataDir {
    /// Opens the data directory at `path` for `identity`, creating it if missing or empty.
    /// Refuses a directory locked by another process, one made for another node or
    /// cluster, and a non-empty directory that is not a kvstore data directory.
    pub fn open(path: &Path, identity: &Identity) -> Result<DataDir> {
        create_dir_durably(path)?;
        let existing = read_identity(path)?;
        if existing.is_none() {
            check_empty(path)?;
        }
        let lock = lock(path)?;
        match existing {
            Some(found) => check_identity(path, &found, identity)?,
            None => write_identity(path, identity)?,
        }
        let data_dir = DataDir {
            path: path.to_path_buf(),
            identity: identity.clone(),
            _lock: lock,
        };
        for dir in [data_dir.wal_dir(), data_dir.snapshot_dir()] {
            std::fs::create_dir_all(&dir)
                .map_err(|error| Error::io("create directory", &dir, error))?;
        }
        sync_dir(path)?;
        Ok(data_dir)
    }

    /// Reads the identity of a data directory without locking or changing it.
    pub fn inspect(path: &Path) -> Result<Identity> {
        read_identity(path)?.ok_or_else(|| {
            refuse(
                path,
                format!("not a kvstore data directory (no {IDENTITY_FILE})"),
            )
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<path>/wal`.
    pub fn wal_dir(&self) -> PathBuf {
        self.path.join(WAL_DIR)
    }

    /// `<path>/snapshots` (created by [`DataDir::open`]).
    pub fn snapshot_dir(&self) -> PathBuf {
        self.path.join(SNAPSHOT_DIR)
    }

    /// Who the directory belongs to.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

/// A directory with no identity may be used only if it is empty (or holds just the debris
/// of an interrupted first open: the lock file and a temporary identity, and at most empty
/// `wal/` and `snapshots/` directories). A WAL or snapshot without an identity is refused:
/// nothing says which node or cluster it belongs to, and adopting it under any `--id` could
/// put one node's log into another.
fn check_empty(path: &Path) -> Result<()> {
    let entries = std::fs::read_dir(path).map_err(|error| Error::io("list", path, error))?;
    let mut foreign = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| Error::io("list", path, error))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == WAL_DIR || name == SNAPSHOT_DIR {
            let dir = entry.path();
            let mut files =
                std::fs::read_dir(&dir).map_err(|error| Error::io("list", &dir, error))?;
            if files.next().is_some() {
                return Err(refuse(
                    path,
                    format!(
                        "{name}/ holds data but there is no {IDENTITY_FILE} to say which node \
                         and cluster it belongs to; refusing to adopt it (restore \
                         {IDENTITY_FILE}, or use an empty directory)"
                    ),
                ));
            }
            continue;
        }
        if ![LOCK_FILE, "identity.json.tmp"].contains(&name.as_str()) {
            foreign.push(name);
        }
    }
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    foreign.truncate(5);
    Err(refuse(
        path,
        format!(
            "not a kvstore data directory: it is not empty (e.g. {}) and has no {IDENTITY_FILE}",
            foreign.join(", ")
        ),
    ))
}

fn lock(path: &Path) -> Result<File> {
    let lock_path = path.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|error| Error::io("open", &lock_path, error))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = (&file).take(64).read_to_string(&mut holder);
            let holder = holder.trim();
            let pid = if holder.is_empty() { "unknown" } else { holder };
            return Err(refuse(
                path,
                format!("locked by another process (pid {pid}); is another kvnode running?"),
            ));
        }
        Err(std::fs::TryLockError::Error(error)) => {
            return Err(Error::io("lock", &lock_path, error));
        }
    }
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.write_all(pid.as_bytes()))
        .map_err(|error| Error::io("write", &lock_path, error))?;
    Ok(file)
}

fn read_identity(path: &Path) -> Result<Option<Identity>> {
    let file_path = path.join(IDENTITY_FILE);
    let file = match File::open(&file_path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io("open", &file_path, error)),
    };
    let mut text = String::new();
    file.take(IDENTITY_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(|error| Error::io("read", &file_path, error))?;
    let parsed: IdentityFile = serde_json::from_str(&text)
        .map_err(|error| refuse(path, format!("unreadable {IDENTITY_FILE}: {error}")))?;
    if parsed.format_version != IDENTITY_FORMAT_VERSION {
        return Err(refuse(
            path,
            format!(
                "{IDENTITY_FILE} has format version {}, this build reads {IDENTITY_FORMAT_VERSION}",
                parsed.format_version
            ),
        ));
    }
    Ok(Some(parsed.identity))
}

fn check_identity(path: &Path, found: &Identity, wanted: &Identity) -> Result<()> {
    let mismatch = |what: &str, stored: String, given: String| {
        refuse(
            path,
            format!("it was created for {what} {stored}, refusing to open it for {what} {given}"),
        )
    };
    if found.node_id != wanted.node_id {
        return Err(mismatch(
            "node id",
            found.node_id.clone(),
            wanted.node_id.clone(),
        ));
    }
    if found.cluster_id != wanted.cluster_id {
        return Err(mismatch(
            "cluster id",
            found.cluster_id.clone(),
            wanted.cluster_id.clone(),
        ));
    }
    let (mut stored, mut given) = (found.voters.clone(), wanted.voters.clone());
    stored.sort();
    given.sort();
    if stored != given {
        return Err(mismatch("voters", stored.join(","), given.join(",")));
    }
    Ok(())
}

/// Temporary file, fsync, rename, directory fsync.
fn write_identity(path: &Path, identity: &Identity) -> Result<()> {
    let file = IdentityFile {
        format_version: IDENTITY_FORMAT_VERSION,
        identity: identity.clone(),
    };
    let mut text = serde_json::to_string_pretty(&file)
        .map_err(|error| Error::InvalidInput(format!("identity: {error}")))?;
    text.push('\n');
    let temporary = path.join(format!("{IDENTITY_FILE}.tmp"));
    let final_path = path.join(IDENTITY_FILE);
    let mut out =
        File::create(&temporary).map_err(|error| Error::io("create", &temporary, error))?;
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(|error| Error::io("write", &temporary, error))?;
    std::fs::rename(&temporary, &final_path)
        .map_err(|error| Error::io("rename", &temporary, error))?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| Error::io("fsync directory", path, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(node_id: &str) -> Identity {
        Identity {
            node_id: node_id.to_string(),
            cluster_id: "c1".to_string(),
            voters: vec!["n1".to_string(), "n2".to_string(), "n3".to_string()],
        }
    }

    #[test]
    fn creates_then_reopens() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("data");
        let dir = DataDir::open(&path, &identity("n1")).unwrap();
        assert!(dir.wal_dir().ends_with("wal") && dir.snapshot_dir().is_dir());
        assert_eq!(DataDir::inspect(&path).unwrap(), identity("n1"));
        drop(dir);
        DataDir::open(&path, &identity("n1")).unwrap();
    }

    #[test]
    fn creates_missing_parents() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("a").join("b").join("n1");
        DataDir::open(&path, &identity("n1")).unwrap();
        assert_eq!(DataDir::inspect(&path).unwrap(), identity("n1"));
    }

    #[test]
    fn second_open_is_refused_and_touches_nothing() {
        let temp = tempfile::tempdir().unwrap();
        let first = DataDir::open(temp.path(), &identity("n1")).unwrap();
        let before = std::fs::read(temp.path().join(LOCK_FILE)).unwrap();
        let error = DataDir::open(temp.path(), &identity("n1"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("locked by another process"), "{error}");
        assert!(error.contains(&std::process::id().to_string()), "{error}");
        assert_eq!(std::fs::read(temp.path().join(LOCK_FILE)).unwrap(), before);
        drop(first);
    }

    #[test]
    fn other_node_or_cluster_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        drop(DataDir::open(temp.path(), &identity("n1")).unwrap());
        let error = DataDir::open(temp.path(), &identity("n2"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("node id n1") && error.contains("node id n2"),
            "{error}"
        );
        let mut other = identity("n1");
        other.cluster_id = "c2".to_string();
        let error = DataDir::open(temp.path(), &other).unwrap_err().to_string();
        assert!(
            error.contains("cluster id c1") && error.contains("c2"),
            "{error}"
        );
        other = identity("n1");
        other.voters.pop();
        let error = DataDir::open(temp.path(), &other).unwrap_err().to_string();
        assert!(
            error.contains("voters n1,n2,n3") && error.contains("n1,n2"),
            "{error}"
        );
    }

    #[test]
    fn foreign_directory_is_refused_untouched() {
        let temp = tempfile::tempdir().unwrap();
        std::fs::write(temp.path().join("photo.jpg"), b"x").unwrap();
        let error = DataDir::open(temp.path(), &identity("n1"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a kvstore data directory"), "{error}");
        assert!(!temp.path().join(LOCK_FILE).exists());
        assert!(DataDir::inspect(temp.path()).is_err());
    }

    #[test]
    fn a_log_without_an_identity_is_not_adopted() {
        let temp = tempfile::tempdir().unwrap();
        let opened = DataDir::open(temp.path(), &identity("n1")).unwrap();
        std::fs::write(opened.wal_dir().join("00000000000000000001.wal"), b"log").unwrap();
        drop(opened);
        std::fs::remove_file(temp.path().join(IDENTITY_FILE)).unwrap();
        for id in ["n1", "n2"] {
            let error = DataDir::open(temp.path(), &identity(id))
                .unwrap_err()
                .to_string();
            assert!(error.contains("wal/ holds data"), "{error}");
        }
        assert!(!temp.path().join(IDENTITY_FILE).exists());
        // The debris of an interrupted first open (empty directories) is still fine.
        let temp = tempfile::tempdir().unwrap();
        std::fs::create_dir(temp.path().join(WAL_DIR)).unwrap();
        std::fs::create_dir(temp.path().join(SNAPSHOT_DIR)).unwrap();
        DataDir::open(temp.path(), &identity("n1")).unwrap();
    }
}
