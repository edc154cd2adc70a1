//! How a core is configured and what it is restored from.

use crate::error::{Error, Result};

use super::types::{Entry, HardState, Index, NodeId, SnapshotMeta};

/// Tuning and identity of one core. See the module documentation for the defaults' reasons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id; must be one of `voters`.
    pub id: NodeId,
    /// All members of the cluster, including `id`.
    pub voters: Vec<NodeId>,
    /// The base election timeout; each election draws one in `[base, 2 * base)` (Raft §5.2).
    pub election_timeout_ticks: u64,
    /// How often a leader sends heartbeats; must be below the election timeout.
    pub heartbeat_interval_ticks: u64,
    /// Entries are batched into one append up to this many command bytes (at least one
    /// entry per append, whatever its size).
    pub append_bytes_max: usize,
    /// The pipelined window of unacknowledged appends per follower in replicate state.
    pub inflight_appends_max: usize,
    /// Run a pre-vote before an election (thesis §9.6).
    pub pre_vote: bool,
    /// A leader steps down without majority contact for an election timeout, and nodes
    /// ignore vote requests while they believe a leader is alive (thesis §6.2, §4.2.3).
    pub check_quorum: bool,
    /// Seeds the election timeout generator (mixed with `id`).
    pub seed: u64,
}

/// Default base election timeout: 10 ticks, i.e. 0.5-1 s at the driver's 50-100 ms tick.
pub const ELECTION_TIMEOUT_TICKS_DEFAULT: u64 = 10;
/// Default heartbeat interval: every tick, a tenth of the election timeout, so a few lost
/// heartbeats never cause an election.
pub const HEARTBEAT_INTERVAL_TICKS_DEFAULT: u64 = 1;
/// Default batch limit: 1 MiB per append keeps a message well under transport limits while
/// amortising per-message cost over many small commands.
pub const APPEND_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// Default in-flight window: 64 appends keeps a follower on a high-latency link busy without
/// letting the leader queue unbounded data for a slow one.
pub const INFLIGHT_APPENDS_MAX_DEFAULT: usize = 64;

impl Default for Config {
    fn default() -> Config {
        Config {
            id: "n1".to_string(),
            voters: vec!["n1".to_string()],
            election_timeout_ticks: ELECTION_TIMEOUT_TICKS_DEFAULT,
            heartbeat_interval_ticks: HEARTBEAT_INTERVAL_TICKS_DEFAULT,
            append_bytes_max: APPEND_BYTES_MAX_DEFAULT,
            inflight_appends_max: INFLIGHT_APPENDS_MAX_DEFAULT,
            pre_vote: true,
            check_quorum: true,
            seed: 0,
        }
    }
}

impl Config {
    /// Checks the configuration; returns the voters, sorted.
    pub(crate) fn validate(&self) -> Result<Vec<NodeId>> {
        let invalid = |reason: &str| Err(Error::InvalidInput(format!("raft config: {reason}")));
        let mut voters = self.voters.clone();
        voters.sort();
        voters.dedup();
        if voters.len() != self.voters.len() {
            return invalid("duplicate voter");
        }
        if voters.iter().any(|voter| voter.is_empty()) {
            return invalid("empty voter id");
        }
        if !voters.contains(&self.id) {
            return invalid("id must be one of the voters");
        }
        if self.heartbeat_interval_ticks == 0 {
            return invalid("heartbeat_interval_ticks must be positive");
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return invalid("election_timeout_ticks must exceed heartbeat_interval_ticks");
        }
        if self.append_bytes_max == 0 || self.inflight_appends_max == 0 {
            return invalid("append_bytes_max and inflight_appends_max must be positive");
        }
        Ok(voters)
    }
}

/// What the driver recovered from disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restore {
    /// The last persisted hard state.
    pub hard_state: HardState,
    /// Where the log starts: the latest durable snapshot, or a point before it whose later
    /// entries are still held (a compacted log keeps a margin behind its snapshot), if any.
    pub snapshot: Option<SnapshotMeta>,
    /// The log entries after that point, contiguous.
    pub entries: Vec<Entry>,
    /// What the store has applied: the snapshot's index (it was restored from it), which
    /// may be past `snapshot` when a margin is kept.
    pub applied: Index,
}

impl Restore {
    /// Checks that the pieces fit together; returns the snapshot (or the empty one).
    pub(crate) fn validate(&self) -> Result<SnapshotMeta> {
        let invalid = |reason: String| Err(Error::InvalidInput(format!("raft restore: {reason}")));
        let snapshot = self.snapshot.clone().unwrap_or_default();
        for (offset, entry) in self.entries.iter().enumerate() {
            if entry.index != snapshot.index + 1 + offset as Index {
                return invalid(format!(
                    "entry {} does not follow {}",
                    entry.index,
                    snapshot.index + offset as Index
                ));
            }
        }
        let last_index = snapshot.index + self.entries.len() as Index;
        if self.applied < snapshot.index || self.applied > last_index {
            return invalid(format!(
                "applied {} outside [{}, {last_index}]",
                self.applied, snapshot.index
            ));
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_configs_are_refused() {
        assert!(Config::default().validate().is_ok());
        let bad = [
            Config {
                id: "x".into(),
                ..Config::default()
            },
            Config {
                election_timeout_ticks: 1,
                ..Config::default()
            },
            Config {
                voters: vec!["n1".into(), "n1".into()],
                ..Config::default()
            },
            Config {
                inflight_appends_max: 0,
                ..Config::default()
            },
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(Error::InvalidInput(_))),
                "{config:?}"
            );
        }
    }

    #[test]
    fn restore_must_be_contiguous() {
        let entry = |index| Entry {
            index,
            term: 1,
            command: vec![],
        };
        let ok = Restore {
            entries: vec![entry(1), entry(2)],
            ..Restore::default()
        };
        assert!(ok.validate().is_ok());
        let gap = Restore {
            entries: vec![entry(1), entry(3)],
            ..Restore::default()
        };
        assert!(gap.validate().is_err());
    }
}
