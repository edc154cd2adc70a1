//! [`Raft`]: the public face of the core, the state every role shares ([`Core`]), the term
//! rules every message passes first (Raft §5.1, thesis §9.6, §4.2.3) and the role
//! transitions. The handlers live in `follower.rs`, `candidate.rs` and `leader.rs`.

use std::cmp::Ordering;
use std::mem;

use crate::error::{Error, Result};

use super::candidate::Candidate;
use super::config::{Config, Restore};
use super::follower::Follower;
use super::leader::Leader;
use super::log::RaftLog;
use super::message::{Body, Message, ReadState, Ready};
use super::rng::{SplitMix64, seed_for};
use super::status::{Role, Status};
use super::types::{Entry, HardState, Index, NodeId, SnapshotMeta, Term};

/// Output waiting for the next [`Ready`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) messages: Vec<Message>,
    pub(crate) persisted_messages: Vec<Message>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) aborted_reads: Vec<u64>,
    pub(crate) snapshot: Option<SnapshotMeta>,
}

/// The state every role has: identity, persistent state (term, vote, log), the election
/// timer and the outbox.
#[derive(Clone, Debug)]
pub(crate) struct Core {
    pub(crate) id: NodeId,
    /// The other voters, sorted (stable iteration order makes runs replayable).
    pub(crate) peers: Vec<NodeId>,
    pub(crate) config: Config,
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) log: RaftLog,
    /// Ticks since the election timer was reset (followers, candidates) or since the last
    /// check-quorum round (leaders).
    pub(crate) election_elapsed_ticks: u64,
    pub(crate) randomized_timeout_ticks: u64,
    rng: SplitMix64,
    /// The hard state last handed to the driver.
    hard_state_sent: HardState,
    pub(crate) out: Outbox,
}

impl Core {
    /// The number of votes (or acknowledgements) that make a majority of the voters.
    pub(crate) fn quorum(&self) -> usize {
        let voters = self.peers.len() + 1;
        voters / 2 + 1
    }

    /// Restart the election timer with a fresh timeout in `[base, 2 * base)` (Raft §5.2).
    pub(crate) fn reset_election_timer(&mut self) {
        let base = self.config.election_timeout_ticks;
        self.election_elapsed_ticks = 0;
        self.randomized_timeout_ticks = base + self.rng.below(base);
    }

    fn message(&self, to: &NodeId, term: Term, body: Body) -> Message {
        Message {
            from: self.id.clone(),
            to: to.clone(),
            term,
            body,
        }
    }

    /// Queue a message that may leave at once.
    pub(crate) fn send(&mut self, to: &NodeId, body: Body) {
        let message = self.message(to, self.term, body);
        self.out.messages.push(message);
    }

    /// Queue a message with an explicit term (pre-votes).
    pub(crate) fn send_with_term(&mut self, to: &NodeId, term: Term, body: Body) {
        let message = self.message(to, term, body);
        self.out.messages.push(message);
    }

    /// Queue a message that MUST wait until this ready's state is durable (thesis §3.8).
    pub(crate) fn send_persisted(&mut self, to: &NodeId, body: Body) {
        let message = self.message(to, self.term, body);
        self.out.persisted_messages.push(message);
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote.clone(),
            commit: self.log.commit,
        }
    }
}

/// The role-specific state (STYLE practice 3): a follower cannot touch leader progress
/// because it does not have any.
#[derive(Clone, Debug)]
pub(crate) enum RoleState {
    Follower(Follower),
    Candidate(Candidate),
    Leader(Box<Leader>),
}

/// One node's consensus core. See the module documentation.
#[derive(Clone, Debug)]
pub struct Raft {
    pub(crate) core: Core,
    pub(crate) role: RoleState,
}

impl Raft {
    /// A core for `config`, restored from what the driver recovered from disk. Starts as a
    /// follower of no one in the recovered term.
    pub fn new(config: Config, restore: Restore) -> Result<Raft> {
        let voters = config.validate()?;
        let snapshot = restore.validate()?;
        let peers: Vec<NodeId> = voters
            .into_iter()
            .filter(|voter| voter != &config.id)
            .collect();
        let last_index = snapshot.index + restore.entries.len() as Index;
        // The persisted commit may lag the true one, never lead it; clamp it to what the
        // disk holds in case the log's tail was torn after the hard state was written.
        let commit = restore
            .hard_state
            .commit
            .max(snapshot.index)
            .min(last_index);
        let log = RaftLog::new(
            snapshot,
            restore.entries,
            commit,
            restore.applied.min(commit),
        );
        let rng = SplitMix64::new(seed_for(config.seed, &config.id));
        let mut core = Core {
            id: config.id.clone(),
            peers,
            config,
            term: restore.hard_state.term,
            vote: restore.hard_state.vote.clone(),
            log,
            election_elapsed_ticks: 0,
            randomized_timeout_ticks: 0,
            rng,
            hard_state_sent: restore.hard_state,
            out: Outbox::default(),
        };
        core.hard_state_sent.commit = core.hard_state_sent.commit.min(commit);
        core.reset_election_timer();
        Ok(Raft {
            core,
            role: RoleState::Follower(Follower::new(None)),
        })
    }

    /// Advance logical time by one tick: election timeouts for followers and candidates,
    /// heartbeats and check-quorum for leaders.
    pub fn tick(&mut self) {
        match &mut self.role {
            RoleState::Leader(leader) => {
                if !leader.tick(&mut self.core) {
                    // Check-quorum failed (thesis §6.2): stop serving as leader.
                    let term = self.core.term;
                    self.into_follower(term, None);
                }
            }
            RoleState::Follower(follower) => {
                follower.tick_reads(&mut self.core);
                self.tick_election();
            }
            RoleState::Candidate(_) => self.tick_election(),
        }
    }

    /// The election timer of a follower or candidate.
    fn tick_election(&mut self) {
        self.core.election_elapsed_ticks += 1;
        if self.core.election_elapsed_ticks >= self.core.randomized_timeout_ticks {
            self.start_election();
        }
    }

    /// Feed in a message from a peer. Stale or non-member messages are ignored (`Ok`);
    /// `Err(InvalidInput)` for a message not addressed to this node or malformed.
    pub fn step(&mut self, message: Message) -> Result<()> {
        if message.to != self.core.id {
            return Err(Error::InvalidInput(format!(
                "message for {} stepped into {}",
                message.to, self.core.id
            )));
        }
        if !self.core.peers.contains(&message.from) {
            return Ok(());
        }
        if !self.step_term(&message) {
            return Ok(());
        }
        self.dispatch(message)
    }

    /// Propose a command. Only a leader accepts; returns where it will be committed if it
    /// ever is. Err(NotLeader) elsewhere, Err(InvalidInput) for an empty command (empty
    /// commands are the leader's no-ops).
    pub fn propose(&mut self, command: Vec<u8>) -> Result<(Index, Term)> {
        if command.is_empty() {
            return Err(Error::InvalidInput("empty command".to_string()));
        }
        let RoleState::Leader(leader) = &mut self.role else {
            return Err(Error::NotLeader {
                leader: self.leader().cloned(),
            });
        };
        let term = self.core.term;
        let index = self.core.log.append(term, command);
        leader.maybe_commit(&mut self.core);
        Ok((index, term))
    }

    /// Start a linearizable read identified by `context` (thesis §6.4). Its outcome arrives
    /// in a later [`Ready`]: a [`ReadState`] or an aborted read. A follower forwards it to
    /// the leader; without a known leader: Err(NotLeader { leader: None }).
    pub fn read_index(&mut self, context: u64) -> Result<()> {
        match &mut self.role {
            RoleState::Leader(leader) => {
                leader.read_index(&mut self.core, context, None);
                Ok(())
            }
            RoleState::Follower(follower) => follower.read_index(&mut self.core, context),
            RoleState::Candidate(_) => Err(Error::NotLeader { leader: None }),
        }
    }

    /// Whether [`Raft::ready`] has anything to hand out.
    pub fn has_ready(&self) -> bool {
        let out = &self.core.out;
        let log = &self.core.log;
        let leader_wants = match &self.role {
            RoleState::Leader(leader) => leader.wants_send(&self.core),
            _ => false,
        };
        leader_wants
            || !out.messages.is_empty()
            || !out.persisted_messages.is_empty()
            || !out.read_states.is_empty()
            || !out.aborted_reads.is_empty()
            || out.snapshot.is_some()
            || log.has_unstable()
            || log.has_committed()
            || self.core.hard_state() != self.core.hard_state_sent
    }

    /// Take the pending output. A leader generates its appends here, so every proposal
    /// made since the last call goes to each follower in as few messages as the byte limit
    /// and window allow.
    pub fn ready(&mut self) -> Ready {
        if let RoleState::Leader(leader) = &mut self.role {
            leader.send_appends(&mut self.core);
        }
        let core = &mut self.core;
        let hard_state = core.hard_state();
        let hard_state = (hard_state != core.hard_state_sent).then(|| {
            core.hard_state_sent = hard_state.clone();
            hard_state
        });
        let out = mem::take(&mut core.out);
        Ready {
            hard_state,
            snapshot: out.snapshot,
            entries: core.log.take_unstable(),
            messages: out.messages,
            persisted_messages: out.persisted_messages,
            committed_entries: core.log.take_committed(),
            read_states: out.read_states,
            aborted_reads: out.aborted_reads,
        }
    }

    /// The driver made the log durable up to `(index, term)`, together with the hard state
    /// of the ready it came from. A leader counts itself toward commit only through this.
    pub fn persisted(&mut self, index: Index, term: Term) {
        if !self.core.log.persisted_to(index, term) {
            return;
        }
        if let RoleState::Leader(leader) = &mut self.role {
            leader.maybe_commit(&mut self.core);
        }
    }

    /// The driver applied committed entries up to `index`.
    pub fn applied(&mut self, index: Index) {
        let log = &mut self.core.log;
        log.applied = log.applied.max(index.min(log.commit));
    }

    /// The driver holds a durable snapshot at `snapshot.index` (applied, and matching our
    /// log's term there): drop the log up to it. A snapshot not newer than the current one
    /// is ignored. Returns the dropped entries: freeing a hundred thousand commands takes
    /// tens of milliseconds, which the caller may rather spend on another thread.
    pub fn compact(&mut self, snapshot: SnapshotMeta) -> Result<Vec<Entry>> {
        let log = &mut self.core.log;
        if snapshot.index <= log.snapshot().index {
            return Ok(Vec::new());
        }
        if snapshot.index > log.applied {
            return Err(Error::InvalidInput(format!(
                "compact to {} beyond applied {}",
                snapshot.index, log.applied
            )));
        }
        if log.term(snapshot.index) != Some(snapshot.term) {
            return Err(Error::InvalidInput(format!(
                "compact: no entry {}@{}",
                snapshot.index, snapshot.term
            )));
        }
        Ok(log.compact(snapshot))
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.core.id
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.core.term
    }

    /// The current role.
    pub fn role(&self) -> Role {
        match &self.role {
            RoleState::Follower(_) => Role::Follower,
            RoleState::Candidate(candidate) if candidate.pre => Role::PreCandidate,
            RoleState::Candidate(_) => Role::Candidate,
            RoleState::Leader(_) => Role::Leader,
        }
    }

    /// The leader this node knows of (itself when leading).
    pub fn leader(&self) -> Option<&NodeId> {
        match &self.role {
            RoleState::Follower(follower) => follower.leader.as_ref(),
            RoleState::Candidate(_) => None,
            RoleState::Leader(_) => Some(&self.core.id),
        }
    }

    /// The term of the entry at `index`, if held (or the snapshot's, at its index). The
    /// driver uses it to describe a snapshot it takes at its applied index.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.core.log.term(index)
    }

    /// The entry at `index`, if held (not compacted, not beyond the end).
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.core.log.entry(index)
    }

    /// The commit index.
    pub fn commit(&self) -> Index {
        self.core.log.commit
    }

    /// A snapshot of the state for monitoring.
    pub fn status(&self) -> Status {
        let log = &self.core.log;
        let progress = match &self.role {
            RoleState::Leader(leader) => leader.peer_progress(),
            _ => Default::default(),
        };
        Status {
            id: self.core.id.clone(),
            role: self.role(),
            term: self.core.term,
            vote: self.core.vote.clone(),
            leader: self.leader().cloned(),
            commit: log.commit,
            applied: log.applied,
            persisted: log.persisted,
            first_index: log.first_index(),
            last_index: log.last_index(),
            last_term: log.last_term(),
            snapshot_index: log.snapshot().index,
            snapshot_term: log.snapshot().term,
            progress,
        }
    }

    /// Whether this node believes a leader is alive: it leads, or it heard from its
    /// leader less than an election timeout ago (the leader lease of thesis §4.2.3).
    pub(crate) fn in_lease(&self) -> bool {
        match &self.role {
            RoleState::Leader(_) => true,
            RoleState::Follower(follower) => {
                follower.leader.is_some()
                    && self.core.election_elapsed_ticks < self.core.config.election_timeout_ticks
            }
            RoleState::Candidate(_) => false,
        }
    }

    /// The term rules (Raft §5.1) with pre-vote and lease exceptions. Returns whether the
    /// message should be handled further.
    fn step_term(&mut self, message: &Message) -> bool {
        match message.term.cmp(&self.core.term) {
            Ordering::Equal => true,
            Ordering::Less => {
                self.reply_stale(message);
                false
            }
            Ordering::Greater => self.step_higher_term(message),
        }
    }

    fn step_higher_term(&mut self, message: &Message) -> bool {
        match &message.body {
            // A pre-vote and a granted pre-vote response carry a future term and change
            // nothing by themselves (thesis §9.6).
            Body::PreVote { .. } | Body::PreVoteResponse { granted: true } => true,
            // A node that hears from a live leader ignores vote requests: they come from a
            // disruptive server (thesis §4.2.3), e.g. one rejoining after a partition.
            Body::Vote { .. } if self.core.config.check_quorum && self.in_lease() => false,
            Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. } => {
                self.into_follower(message.term, Some(message.from.clone()));
                true
            }
            _ => {
                self.into_follower(message.term, None);
                true
            }
        }
    }

    /// Answer a message from an older term where it helps the sender catch up: a stale
    /// leader learns our term and steps down, a pre-candidate learns it cannot win.
    fn reply_stale(&mut self, message: &Message) {
        let body = match &message.body {
            Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. } => {
                Body::HeartbeatResponse { read_seq: 0 }
            }
            Body::PreVote { .. } => Body::PreVoteResponse { granted: false },
            Body::ReadIndex { context } => Body::ReadIndexResponse {
                context: *context,
                index: None,
            },
            _ => return,
        };
        self.core.send(&message.from, body);
    }

    fn dispatch(&mut self, message: Message) -> Result<()> {
        let Message {
            from, term, body, ..
        } = message;
        match body {
            Body::PreVote {
                last_index,
                last_term,
            } => self.handle_pre_vote(&from, term, last_index, last_term),
            Body::PreVoteResponse { granted } => {
                self.handle_pre_vote_response(&from, term, granted)
            }
            Body::Vote {
                last_index,
                last_term,
            } => self.handle_vote(&from, last_index, last_term),
            Body::VoteResponse { granted } => self.handle_vote_response(&from, granted),
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                return self.handle_append(&from, prev_index, prev_term, entries, commit);
            }
            Body::AppendResponse { index, reject } => {
                self.handle_append_response(&from, index, reject)
            }
            Body::Heartbeat { commit, read_seq } => {
                return self.handle_heartbeat(&from, commit, read_seq);
            }
            Body::HeartbeatResponse { read_seq } => self.handle_heartbeat_response(&from, read_seq),
            Body::ReadIndex { context } => self.handle_read_index(&from, context),
            Body::ReadIndexResponse { context, index } => {
                self.handle_read_index_response(context, index)
            }
            Body::Snapshot { meta } => return self.handle_snapshot(&from, meta),
            Body::SnapshotResponse { index } => self.handle_snapshot_response(&from, index),
        }
        Ok(())
    }

    /// Become a follower in `term` (at least the current one), of `leader` if known.
    /// Abandons whatever the old role had in progress: a deposed leader aborts its reads.
    pub(crate) fn into_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(term >= self.core.term, "terms never go back");
        if term > self.core.term {
            self.core.term = term;
            self.core.vote = None;
        }
        self.change_role(RoleState::Follower(Follower::new(leader)));
        self.core.reset_election_timer();
    }

    /// Take on `role`. The reads the old role waited on are aborted, since their answers
    /// may never come (a leader's read rounds; a follower's reads forwarded to its leader,
    /// whether it now follows another or campaigns), and their callers ask again.
    pub(crate) fn change_role(&mut self, role: RoleState) {
        match mem::replace(&mut self.role, role) {
            RoleState::Leader(mut leader) => leader.abort_reads(&mut self.core),
            RoleState::Follower(mut follower) => follower.abort_reads(&mut self.core),
            RoleState::Candidate(_) => {}
        }
    }

    /// Become the leader of the current term (Raft §5.2) and append the term's no-op
    /// (Raft §8), which lets it commit entries of earlier terms and serve reads.
    pub(crate) fn into_leader(&mut self) {
        let leader = Leader::new(&mut self.core);
        self.role = RoleState::Leader(Box::new(leader));
        if let RoleState::Leader(leader) = &mut self.role {
            leader.maybe_commit(&mut self.core);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: &str) -> Config {
        let voters = vec!["n1".to_string(), "n2".to_string(), "n3".to_string()];
        Config {
            id: id.to_string(),
            voters,
            ..Config::default()
        }
    }

    fn follower(id: &str) -> Raft {
        Raft::new(config(id), Restore::default()).expect("valid")
    }

    /// A leader's heartbeat with nothing committed and no read round.
    fn heartbeat() -> Body {
        Body::Heartbeat {
            commit: 0,
            read_seq: 0,
        }
    }

    fn message(from: &str, to: &str, term: Term, body: Body) -> Message {
        Message {
            from: from.to_string(),
            to: to.to_string(),
            term,
            body,
        }
    }

    #[test]
    fn followers_refuse_proposals_and_reads_without_a_leader() {
        let mut raft = follower("n1");
        assert!(matches!(
            raft.propose(b"x".to_vec()),
            Err(Error::NotLeader { leader: None })
        ));
        assert!(matches!(
            raft.read_index(1),
            Err(Error::NotLeader { leader: None })
        ));
        let heartbeat = message("n2", "n1", 1, heartbeat());
        raft.step(heartbeat).expect("valid");
        let leader = Some("n2".to_string());
        assert!(
            matches!(raft.propose(b"x".to_vec()), Err(Error::NotLeader { leader: l }) if l == leader)
        );
    }

    #[test]
    fn misaddressed_messages_are_errors_and_strangers_are_ignored() {
        let mut raft = follower("n1");
        let vote = Body::Vote {
            last_index: 0,
            last_term: 0,
        };
        assert!(raft.step(message("n2", "n3", 1, vote.clone())).is_err());
        raft.step(message("n9", "n1", 5, vote)).expect("ignored");
        assert_eq!(raft.term(), 0);
        assert!(!raft.has_ready());
    }

    #[test]
    fn one_vote_per_term_and_only_after_persisting() {
        let mut raft = Raft::new(
            Config {
                check_quorum: false,
                ..config("n1")
            },
            Restore::default(),
        )
        .expect("valid");
        let vote = Body::Vote {
            last_index: 0,
            last_term: 0,
        };
        raft.step(message("n2", "n1", 1, vote.clone()))
            .expect("valid");
        raft.step(message("n3", "n1", 1, vote)).expect("valid");
        let ready = raft.ready();
        assert!(
            ready.messages.is_empty(),
            "vote responses wait for the persist"
        );
        let granted: Vec<_> = ready
            .persisted_messages
            .iter()
            .map(|m| m.body.clone())
            .collect();
        assert_eq!(
            granted,
            [
                Body::VoteResponse { granted: true },
                Body::VoteResponse { granted: false }
            ]
        );
        assert_eq!(
            ready.hard_state.and_then(|hard_state| hard_state.vote),
            Some("n2".to_string())
        );
    }

    #[test]
    fn pre_vote_changes_no_term() {
        let mut raft = follower("n1");
        while raft.role() == Role::Follower {
            raft.tick();
        }
        assert_eq!((raft.role(), raft.term()), (Role::PreCandidate, 0));
        let ready = raft.ready();
        assert!(ready.hard_state.is_none());
        assert!(
            ready
                .messages
                .iter()
                .all(|m| m.term == 1 && matches!(m.body, Body::PreVote { .. }))
        );
    }

    #[test]
    fn invalid_inputs_are_refused() {
        let mut raft = follower("n1");
        let meta = SnapshotMeta {
            index: 3,
            term: 1,
            voters: vec![],
        };
        assert!(matches!(raft.compact(meta), Err(Error::InvalidInput(_))));
        let gap = Body::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![Entry {
                index: 2,
                term: 1,
                command: vec![],
            }],
            commit: 0,
        };
        assert!(raft.step(message("n2", "n1", 1, gap)).is_err());
        let single = Config::default();
        let mut leader = Raft::new(single, Restore::default()).expect("valid");
        while leader.role() != Role::Leader {
            leader.tick();
        }
        assert!(matches!(
            leader.propose(Vec::new()),
            Err(Error::InvalidInput(_))
        ));
    }

    /// n1 following n2 in term 1, with a read forwarded to n2 as context 5.
    fn follower_with_forwarded_read() -> Raft {
        let mut raft = follower("n1");
        raft.step(message("n2", "n1", 1, heartbeat()))
            .expect("valid");
        raft.read_index(5).expect("follows n2");
        let ready = raft.ready();
        assert!(
            ready
                .messages
                .iter()
                .any(|m| m.to == "n2" && m.body == Body::ReadIndex { context: 5 })
        );
        raft
    }

    #[test]
    fn a_follower_that_campaigns_aborts_its_forwarded_reads() {
        let mut raft = follower_with_forwarded_read();
        while raft.role() == Role::Follower {
            raft.tick();
        }
        assert_eq!(raft.ready().aborted_reads, [5]);
    }

    #[test]
    fn a_forwarded_read_left_unanswered_is_aborted_after_two_election_timeouts() {
        let mut raft = follower_with_forwarded_read();
        let timeout = raft.core.config.election_timeout_ticks;
        for tick in 1..=2 * timeout {
            // The leader stays (its heartbeats keep arriving) but never answers the read.
            raft.step(message("n2", "n1", 1, heartbeat()))
                .expect("valid");
            raft.tick();
            let aborted = raft.ready().aborted_reads;
            if tick < 2 * timeout {
                assert!(aborted.is_empty(), "tick {tick}: {aborted:?}");
            } else {
                assert_eq!(aborted, [5], "tick {tick}");
            }
        }
        assert_eq!(raft.role(), Role::Follower);
        // A late answer finds nothing to complete.
        let late = Body::ReadIndexResponse {
            context: 5,
            index: Some(0),
        };
        raft.step(message("n2", "n1", 1, late)).expect("valid");
        assert_eq!(raft.ready().read_states, []);
    }

    /// n1 leading n2 and n3 in term 1 (n2's votes answered by hand), its no-op at index 1
    /// durable everywhere and the commit index 1 heard by both followers.
    fn leader_of_three(config: Config) -> Raft {
        let mut raft = Raft::new(config, Restore::default()).expect("valid");
        while raft.role() != Role::PreCandidate {
            raft.tick();
        }
        raft.ready();
        raft.step(message(
            "n2",
            "n1",
            1,
            Body::PreVoteResponse { granted: true },
        ))
        .expect("valid");
        raft.ready();
        raft.step(message("n2", "n1", 1, Body::VoteResponse { granted: true }))
            .expect("valid");
        assert_eq!(raft.role(), Role::Leader);
        let ready = raft.ready();
        let noop = ready.entries.last().expect("the leader's no-op");
        raft.persisted(noop.index, noop.term);
        for from in ["n2", "n3"] {
            let ack = Body::AppendResponse {
                index: 1,
                reject: None,
            };
            raft.step(message(from, "n1", 1, ack)).expect("valid");
        }
        raft.ready();
        assert_eq!(raft.commit(), 1);
        raft.applied(1);
        raft
    }

    fn appends_to(ready: &Ready, to: &str) -> Vec<(Index, usize, Index)> {
        ready
            .messages
            .iter()
            .filter(|message| message.to == to)
            .filter_map(|message| match &message.body {
                Body::Append {
                    prev_index,
                    entries,
                    commit,
                    ..
                } => Some((*prev_index, entries.len(), *commit)),
                _ => None,
            })
            .collect()
    }

    /// A slow follower's ack that arrives after the leader compacted past it must not make
    /// the leader build a commit notice after an entry it no longer has (that panicked:
    /// `term(prev_index)` of a compacted index), nor leave `has_ready` true with nothing to
    /// send (the driver loops on it); the commit reaches the follower by heartbeat, and by
    /// notice again once its match is back in the log.
    #[test]
    fn an_ack_trailing_a_compaction_gets_no_commit_notice_and_no_panic() {
        let mut raft = leader_of_three(Config {
            append_bytes_max: 1,
            ..config("n1")
        });
        for word in [b"a", b"b", b"c"] {
            raft.propose(word.to_vec()).expect("leader");
        }
        let ready = raft.ready();
        assert_eq!(
            appends_to(&ready, "n3"),
            [(1, 1, 1), (2, 1, 1), (3, 1, 1)],
            "one entry per append, all in flight to n3"
        );
        raft.persisted(4, 1);
        let ack = |index| Body::AppendResponse {
            index,
            reject: None,
        };
        raft.step(message("n2", "n1", 1, ack(4))).expect("valid");
        raft.ready();
        assert_eq!(raft.commit(), 4);
        raft.applied(4);
        let snapshot = SnapshotMeta {
            index: 4,
            term: 1,
            voters: vec!["n1".into(), "n2".into(), "n3".into()],
        };
        raft.compact(snapshot).expect("applied");

        // n3 acknowledges entry 2, compacted now, above the commit index it has heard (1).
        raft.step(message("n3", "n1", 1, ack(2))).expect("valid");
        let ready = raft.ready();
        assert_eq!(
            appends_to(&ready, "n3"),
            [],
            "no notice after a compacted entry"
        );
        assert!(!raft.has_ready(), "nothing is left to hand out");

        // The next heartbeat carries what n3 can use; once n3 holds entry 4 (the snapshot's
        // index, whose term the leader still knows) a notice goes out again.
        raft.tick();
        let ready = raft.ready();
        let heartbeats: Vec<_> = ready
            .messages
            .iter()
            .filter(|message| message.to == "n3")
            .map(|message| message.body.clone())
            .collect();
        assert_eq!(
            heartbeats,
            [Body::Heartbeat {
                commit: 2,
                read_seq: 0
            }]
        );
        raft.step(message("n3", "n1", 1, ack(4))).expect("valid");
        let ready = raft.ready();
        assert_eq!(appends_to(&ready, "n3"), [(4, 0, 4)]);
    }

    #[test]
    fn single_node_commits_after_its_own_persist_and_serves_reads() {
        let mut raft = Raft::new(Config::default(), Restore::default()).expect("valid");
        while raft.role() != Role::Leader {
            raft.tick();
        }
        let (index, _) = raft.propose(b"x".to_vec()).expect("leader");
        raft.read_index(7).expect("leader");
        let ready = raft.ready();
        assert!(ready.committed_entries.is_empty(), "nothing is durable yet");
        let last = ready.entries.last().expect("entries");
        raft.persisted(last.index, last.term);
        let ready = raft.ready();
        assert_eq!(
            ready.committed_entries.last().map(|entry| entry.index),
            Some(index)
        );
        assert_eq!(ready.read_states, [ReadState { context: 7, index }]);
    }
}
