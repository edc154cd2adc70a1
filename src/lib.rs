//! kvstore: a Raft-replicated, durable key-value store.
//!
//! See `../shared/ARCHITECTURE.md` for the design and the external contracts. Each module
//! root is the design document of that module:
//!
//! - [`raft`]: the consensus core, a pure state machine;
//! - [`wal`]: the segmented, CRC-checked write-ahead log;
//! - [`datadir`]: the node's data directory (lock, identity);
//! - [`error`]: the crate's error type.

#![warn(missing_docs)]

pub mod datadir;
pub mod error;
pub mod raft;
pub mod wal;

pub use error::{Error, Result};
