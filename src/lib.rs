//! kvstore: a Raft-replicated, durable key-value store.
//!
//! See `../shared/ARCHITECTURE.md` for the design and the external contracts. Each module
//! root is the design document of that module:
//!
//! - [`raft`]: the consensus core, a pure state machine;
//! - [`wal`]: the segmented, CRC-checked write-ahead log;
//! - [`datadir`]: the node's data directory (lock, identity);
//! - [`store`]: the replicated state machine (an ordered KV map);
//! - [`node`]: the driver joining raft, WAL, store, network and time;
//! - [`transport`]: peer RPC on the raft port;
//! - [`api`]: the client HTTP API;
//! - [`client`]: the Rust client used by `kvctl`, tests and benchmarks;
//! - [`bench`](mod@bench): the load generator of `kvctl bench` and `benches/cluster.rs`;
//! - [`config`]: `kvnode`'s flags and environment;
//! - [`metrics`]: Prometheus metrics;
//! - [`error`]: the crate's error type.

#![warn(missing_docs)]

pub mod api;
pub mod bench;
pub mod client;
pub mod config;
pub mod datadir;
pub mod error;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod torture;
pub mod transport;
pub mod wal;

pub use error::{Error, Result};
