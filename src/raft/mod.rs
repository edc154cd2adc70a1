//! The Raft consensus core: a pure, deterministic state machine with no I/O.
//!
//! (The raft helper replaces this doc with the module's design essay.)
//!
//! Contract with the driver (`src/node`), fixed so both sides can be built in parallel:
//!
//! - Inputs: [`Raft::tick`], [`Raft::step`], [`Raft::propose`], [`Raft::read_index`],
//!   [`Raft::persisted`], [`Raft::applied`], [`Raft::compact`].
//! - Output: [`Raft::ready`] returns a [`Ready`]. The driver MUST handle it in this order:
//!   1. persist `snapshot` (if any), then `hard_state` and `entries` durably (one fsync);
//!      `messages` may be sent at any time, even before that persist;
//!   2. send `persisted_messages` only AFTER step 1 is durable (thesis §3.8), then call
//!      [`Raft::persisted`] with the last persisted entry;
//!   3. apply `committed_entries` in order, then call [`Raft::applied`];
//!   4. serve each of `read_states` once applied reaches its index; fail `aborted_reads`.

mod types;

pub use types::*;
