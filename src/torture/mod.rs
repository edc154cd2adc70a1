//! The torture harness: real `kvnode` processes, concurrent clients, a seeded nemesis, and a
//! linearizability check of everything the clients saw (as Jepsen and etcd's robustness
//! tests do).
//!
//! # What a run does
//!
//! 1. Starts a cluster of `kvnode` processes (3 or 5) on fresh data dirs and loopback ports
//!    ([`cluster`]).
//! 2. Runs `clients` concurrent clients, each a sequential process issuing reads, writes,
//!    conditional writes (`If-Match`) and deletes on a small key set; every write carries a
//!    value unique in the run. Writes follow the leader; half the reads go to a random
//!    node (a follower serves a linearizable read through ReadIndex). Every operation is recorded with its invocation and completion
//!    time and outcome ([`history`]): ok, failed (proven not applied: `409`, refused
//!    connection, `412`) or indeterminate (timeout, `503`, broken connection: the write may
//!    take effect at any later point, or never). Clients never retry an indeterminate write.
//! 3. Meanwhile a nemesis ([`nemesis`]) follows a schedule drawn from the seed: SIGKILL of a
//!    random node or of the leader then restart, SIGKILL of a majority or of every node at
//!    once then restart ("crash"), SIGSTOP/SIGCONT pauses, and partitions (leader isolated,
//!    minority/majority split, a bridge node).
//!    With `Config::snapshot_entries` small (`kvtorture --snapshot-entries 150`) the nodes
//!    snapshot and compact all the time, so restarts replay from snapshots and a follower
//!    left behind receives one; the summary counts both from the node logs.
//! 4. At the end it heals everything, waits until every node has the same applied index and
//!    the same state hash, checks that every acknowledged write is present or overwritten by
//!    a later one, and checks the history for linearizability ([`checker`]).
//!
//! # Partitions
//!
//! By default (and in CI) partitions use the transport's test-only fault switch
//! (`kvnode --test-faults`, `POST /test/partition`), which drops raft messages to and from
//! the named peers. As root, [`Network::Namespaces`] gives real network separation instead:
//! one network namespace per node, a bridge, and iptables DROP rules (see [`cluster`]).
//! The summary line `partitions:` says which one ran.
//!
//! # Determinism
//!
//! The nemesis schedule and each client's operation mix come from the seed, so a failing
//! seed replays the same faults at the same offsets. The interleaving of real processes is
//! not deterministic; the verdict (no violation, nothing lost) must hold for every
//! interleaving, so a seed that fails once is worth keeping.
//!
//! # Self-check
//!
//! `Config::stale_reads` (`kvtorture --stale-reads`) reads with `?consistency=stale`; such
//! runs must fail the check (`tests/it/torture.rs` asserts it), which shows the checker is
//! not vacuous on real histories.
//!
//! # Implementation caveats
//!
//! - No clock skew, disk faults or message delay/loss in the nemesis (disk faults have their
//!   own tests in `tests/it/disk_faults.rs`; `tc netem` is not available here).
//! - One fault at a time (a crash kills several nodes at once, but nothing overlaps it).
//! - A run killed with SIGKILL leaves its processes' namespaces (`kvt*`) behind in
//!   namespace mode; `ip netns list | grep kvt` shows them.
//! - Stale reads (`?consistency=stale`) are not checked: they are not linearizable by design.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod rng;
pub mod runner;

pub use checker::{KeyVerdict, Report, State, check, check_key};
pub use history::{FOREIGN_VALUE, Input, Operation, Output, ValueId};
pub use runner::{Config, Fault, Network, Snapshots, Summary, run};
