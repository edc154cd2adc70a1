//! The Raft consensus core: a pure, deterministic state machine with no I/O.
//!
//! # What and why
//!
//! This module decides *what* the cluster agrees on; it never touches a disk, a socket or a
//! clock. Everything it needs arrives as an input ([`Raft::tick`], [`Raft::step`],
//! [`Raft::propose`], [`Raft::read_index`], and the driver's notices
//! [`Raft::persisted`], [`Raft::applied`], [`Raft::compact`]); everything it wants done
//! leaves in a [`Ready`]. Time is a count of ticks; randomness (election timeouts) comes
//! from a SplitMix64 generator seeded by [`Config::seed`] and the node id. Peers are kept
//! sorted and iterated in order. So a sequence of inputs always produces the same outputs:
//! the scenario scripts (`tests/raft_scenarios/`) pin every message, and a failing
//! simulation seed (`tests/it/raft_sim.rs`) replays exactly. A test greps this directory
//! for forbidden imports (tokio, `std::fs`, `std::net`, `Instant`, `SystemTime`, a global
//! RNG).
//!
//! The design follows etcd-io/raft (the `Ready` batch, progress states, pre-vote,
//! check-quorum) and toydb (role types, `into_*` transitions, one handler per message).
//!
//! # Contract with the driver (`src/node`)
//!
//! - Inputs: [`Raft::tick`], [`Raft::step`], [`Raft::propose`], [`Raft::read_index`],
//!   [`Raft::persisted`], [`Raft::applied`], [`Raft::compact`].
//! - Output: [`Raft::ready`] returns a [`Ready`]. The driver MUST handle it in this order:
//!   1. persist `snapshot` (if any: restore the store from its data and discard the whole
//!      log), then `hard_state` and `entries` durably (one fsync; if `entries[0]` is at or
//!      below the last persisted index, truncate the log from there first); `messages` may
//!      be sent at any time, even before that persist;
//!   2. send `persisted_messages` only AFTER step 1 is durable (thesis §3.8), then call
//!      [`Raft::persisted`] with the last persisted entry;
//!   3. apply `committed_entries` in order, then call [`Raft::applied`];
//!   4. serve each of `read_states` once applied reaches its index; fail `aborted_reads`.
//! - Readies MUST be handled in the order they were taken. Calling [`Raft::ready`] again
//!   before an earlier one is durable is allowed (the core tracks what was handed out and
//!   what was reported durable separately).
//! - To snapshot: take it at the applied index (its term from [`Raft::term_at`]), make it
//!   durable, then call [`Raft::compact`]. When the leader emits [`Body::Snapshot`], the
//!   driver streams the snapshot data to the follower and steps the message into it once
//!   the data is there.
//!
//! # The algorithm, by section
//!
//! - **Roles** (Raft §5.1): [`Role`]; role state lives in role types (`Follower`,
//!   `Candidate` with a `pre` flag, `Leader`) inside the [`Raft`], entered through
//!   `into_follower`, `into_pre_candidate`, `into_candidate`, `into_leader`. Every message
//!   first passes the term rules (`step_term`): a newer term makes us a follower, an older
//!   one is answered only to help the sender catch up (a stale leader learns our term).
//! - **Election** (Raft §5.2, §5.4.1): randomized timeouts in `[base, 2*base)` ticks; one
//!   vote per term, only for a candidate whose log is at least as up to date. The vote and
//!   the vote requests go out only after the term and vote are durable.
//! - **Pre-vote** (thesis §9.6): before bumping its term a node asks whether it would win;
//!   peers that heard from a leader within the base election timeout refuse. A partitioned
//!   node therefore never inflates terms and never disrupts a healthy leader when it rejoins.
//! - **Check-quorum and leases** (thesis §6.2, §4.2.3): a leader that has not heard from a
//!   majority for an election timeout steps down (aborting its pending reads). With
//!   check-quorum, a node that believes a leader is alive also ignores vote requests with
//!   a higher term.
//! - **Replication** (Raft §5.3, thesis §10.2.1): per-follower progress in `Probe` (one
//!   append at a time until the match point is found), `Replicate` (pipelined, at most
//!   [`Config::inflight_appends_max`] unacknowledged appends, each batching entries up to
//!   [`Config::append_bytes_max`] bytes) or `Snapshot`. Appends are generated lazily in
//!   [`Raft::ready`], so many proposals between two readies share one append per follower.
//!   A rejection carries a conflict hint (the follower's term at the probed index and its
//!   first index of that term) so the leader skips a whole term per round trip (thesis §3.5).
//!   Lost appends are noticed through heartbeats: if a heartbeat is answered while the
//!   follower's match index has not moved since it was sent, the leader re-probes (an empty
//!   append at the pipeline's tip, whose rejection restarts replication from the match).
//! - **Commit** (Raft §5.3, §5.4.2): the highest index durable on a majority, counting the
//!   leader only for what it has persisted, and only if that entry is of the current term;
//!   each new leader appends an empty no-op entry (Raft §8) to commit earlier entries.
//!   Followers ack an append only after persisting it. Entries are handed out for
//!   application in order, exactly once, and only once durable locally.
//! - **Linearizable reads** (thesis §6.4): ReadIndex. A leader records its commit index
//!   (after its no-op has committed; reads arriving earlier wait) and a read round; the next
//!   heartbeat carries the round, and once a majority echoes it every read of that round or
//!   earlier is confirmed together. One round is in flight at a time (reads arriving
//!   meanwhile share the next), and a round triggered by reads goes only to as many
//!   followers as make a quorum with the leader, those that answered last; the periodic
//!   heartbeat still goes to all. Followers forward reads to the leader. A leader that
//!   steps down aborts its reads; a follower aborts the reads it forwarded when its leader
//!   or term changes, and a non-leader refuses forwarded reads.
//! - **Snapshots** (Raft §7): [`Raft::compact`] drops the applied, durable prefix. A
//!   follower whose next index was compacted gets [`Body::Snapshot`]; it ignores one not
//!   newer than its commit index, keeps its log if it holds the snapshot's last entry, and
//!   otherwise discards its log and installs it (the `Ready::snapshot`).
//!
//! # Tests
//!
//! - inline unit tests per file (log watermarks, conflict hints, progress, read queue,
//!   config, error paths of the public API);
//! - `tests/raft_scenarios/*.txt`: golden scripts, one behaviour each, run by
//!   `tests/it/raft_scenarios.rs` (`UPDATE_GOLDEN=1` regenerates);
//! - `tests/it/raft_sim.rs`: seeded whole-cluster simulation with network faults and
//!   crashes, checking the safety properties after every step and liveness after the
//!   faults;
//! - `tests/it/raft_quorum.rs`: property test of [`quorum_value`] against a sorting
//!   reference;
//! - `tests/it/raft_purity.rs`: the forbidden-import check;
//! - `benches/raft.rs`: proposals per second through three in-memory cores.
//!
//! # Invariants
//!
//! - `snapshot.index <= applied <= commit`, and entries are handed for application only up
//!   to `min(commit, persisted)`; a committed entry is never truncated (asserted).
//! - A message that reveals durable state (vote, append and heartbeat responses, vote
//!   requests) is only in `persisted_messages`.
//! - At most one vote per term; a term never decreases.
//! - A leader never commits an entry of an earlier term by counting replicas.
//!
//! # Tuning (see [`Config`])
//!
//! Defaults: election timeout 10 ticks, heartbeat every tick, 1 MiB per append, a window
//! of 64 appends, pre-vote and check-quorum on. A leader in Snapshot state that hears
//! nothing for an election timeout presumes the transfer lost and probes (resending).
//!
//! # Implementation caveats
//!
//! - No membership changes: the voters are fixed by [`Config::voters`] (snapshots carry
//!   them for the driver's sake). No leadership transfer, no learners.
//! - No flow control by bytes in flight, only by the number of appends.
//! - Snapshot data is the driver's business: the core only names the snapshot
//!   ([`SnapshotMeta`]); there is no chunking or failure report (a timeout resends).
//! - Follower reads wait for the leader's answer; there are no lease-based reads (they
//!   would depend on bounded clock drift).
//! - The whole unsnapshotted log is held in memory.

// Role transitions are named `into_*` after the paper's "converts to" and toydb's style
// (STYLE practice 3); they take `&mut self` because the role lives inside the `Raft`.
#![allow(clippy::wrong_self_convention)]

mod candidate;
mod config;
mod consensus;
mod follower;
mod leader;
mod log;
mod message;
mod progress;
mod read;
mod rng;
mod status;
mod types;

pub use config::{
    APPEND_BYTES_MAX_DEFAULT, Config, ELECTION_TIMEOUT_TICKS_DEFAULT,
    HEARTBEAT_INTERVAL_TICKS_DEFAULT, INFLIGHT_APPENDS_MAX_DEFAULT, Restore,
};
pub use consensus::Raft;
pub use message::{AppendReject, Body, Message, ReadState, Ready};
pub use progress::{ProgressState, quorum_value, quorum_value_reference};
pub use status::{PeerProgress, Role, Status};
pub use types::*;
