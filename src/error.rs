//! The crate's one error type.
//!
//! Errors are of two kinds (STYLE.md practice 9):
//!
//! - **retryable**: the operation did not happen (or may not have happened) because of the
//!   cluster's current situation: not the leader, no quorum, a deadline passed. A client may
//!   retry, possibly against another node.
//! - **fail-stop**: I/O errors and corruption on the node's own disk. The node must stop
//!   rather than diverge from what it has acknowledged.
//!
//! Programmer errors (broken invariants) are assertions, not `Error`s.

use std::path::PathBuf;

use crate::raft::{Index, NodeId};

/// A convenient alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in kvstore.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This node is not the leader. `leader` is the node it believes leads, if any.
    #[error("not leader (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader {
        /// The current leader's id, if known.
        leader: Option<NodeId>,
    },

    /// The cluster could not serve the request in time (no leader, no quorum, deadline).
    /// A write that fails this way may or may not have been applied.
    #[error("unavailable: {0}")]
    Unavailable(String),

    /// An I/O operation failed. Fail-stop when it concerns the node's own data.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "fdatasync".
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Stored data failed verification somewhere other than a repairable torn tail.
    #[error(
        "corruption in {} at byte offset {offset}{}: {detail}",
        file.display(),
        match index_range { Some((first, last)) => format!(" (log indexes {first}..={last} affected)"), None => String::new() }
    )]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the first damaged record in `file`.
        offset: u64,
        /// The log indexes that can no longer be trusted, when known.
        index_range: Option<(Index, Index)>,
        /// What was wrong.
        detail: String,
    },

    /// An earlier fsync failed, so the WAL cannot know what reached the disk. It refuses all
    /// further writes until it is reopened (and recovery re-reads what really is there).
    #[error("write-ahead log is poisoned by an earlier failed fsync; restart the node")]
    Poisoned,

    /// The data directory cannot be used: locked by another process, made for another node
    /// or cluster, or of an unknown format.
    #[error("data directory {}: {reason}", path.display())]
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },

    /// Bad input from a client or the command line.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// Bytes that do not decode (a message from the network, a record, a snapshot).
    #[error("decode error: {0}")]
    Decode(String),

    /// The node is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

impl Error {
    /// Whether the caller may retry the operation (possibly elsewhere) with a chance of
    /// success. Fail-stop errors are never retryable.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::NotLeader { .. } | Error::Unavailable(_))
    }

    /// Wraps an I/O error with the operation and path it concerns.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl From<postcard::Error> for Error {
    fn from(error: postcard::Error) -> Self {
        Error::Decode(error.to_string())
    }
}

/// The error with its causes, on one line (`hyper` and `reqwest` errors leave their cause,
/// often the `io::Error` that says what happened, out of their own message).
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connection error")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn describe_names_every_cause() {
        let error = Wrapper(std::io::Error::other("connection reset by peer"));
        assert_eq!(
            describe(&error),
            "connection error: connection reset by peer"
        );
    }
}
