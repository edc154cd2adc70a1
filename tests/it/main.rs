//! The integration tests, one module per area (`api`, `raft_sim`, `torture`, ...), in one
//! test binary on purpose: every integration-test crate links tokio, axum, reqwest and
//! proptest, so one binary means one link instead of ~27. Modules share the process (and
//! so the counting allocator below), and run in parallel like tests within one file.
//!
//! Run one area with a filter on its module path:
//!
//! ```text
//! cargo test --test it torture::
//! cargo test --test it raft_sim:: -- --nocapture
//! ```

mod allocations;
mod common;

/// Counting is per thread and off unless a test turns it on, so the decoder tests
/// (`decoder_fuzz`, `*_decode_proptest`, `snapshot_stream`) can share it with the rest.
#[global_allocator]
static ALLOCATOR: allocations::Counting = allocations::Counting;

mod api;
mod bench;
mod cli;
mod cluster;
mod decoder_fuzz;
mod disk_faults;
mod http_abuse;
mod kvinspect;
mod linearizability;
mod peer_stream;
mod raft_purity;
mod raft_quorum;
mod raft_scenarios;
mod raft_sim;
mod shutdown;
mod snapshot_bound;
mod snapshot_decode_proptest;
mod snapshot_dir;
mod snapshot_format;
mod snapshot_perf;
mod snapshot_stream;
mod snapshots;
mod torture;
mod wal_api;
mod wal_decode_proptest;
mod wal_faults;
mod wal_format;
mod wal_recovery;
