//! The follower role (Raft §5.2-5.3), and the handlers for messages that a leader sends
//! to followers: appends, heartbeats and snapshots. A candidate that receives one of them
//! in its own term has lost the election and follows the sender.

use crate::error::{Error, Result};

use super::consensus::{Core, Raft, RoleState};
use super::message::{AppendReject, Body, ReadState};
use super::types::{Entry, Index, NodeId, SnapshotMeta, Term};

/// A follower's own state.
#[derive(Clone, Debug)]
pub(crate) struct Follower {
    /// The leader of the current term, once heard from.
    pub(crate) leader: Option<NodeId>,
    /// Reads forwarded to the leader and not yet answered.
    forwarded_reads: Vec<ForwardedRead>,
}

/// A read forwarded to the leader, and the ticks it may still wait for the answer.
#[derive(Clone, Debug)]
struct ForwardedRead {
    context: u64,
    ticks_left: u64,
}

/// How long a forwarded read waits for the leader's answer, in election timeouts. A read
/// round takes one heartbeat's round trip; an answer this late is not coming (the request
/// or the answer was lost with a connection while the leader stayed): the read is aborted
/// so that its caller asks again and the list stays bounded.
const FORWARDED_READ_TIMEOUT_ELECTIONS: u64 = 2;

impl Follower {
    pub(crate) fn new(leader: Option<NodeId>) -> Follower {
        Follower {
            leader,
            forwarded_reads: Vec::new(),
        }
    }

    /// Forward a read to the leader (thesis §6.4: followers ask the leader for a read
    /// index, then wait until they have applied up to it).
    pub(crate) fn read_index(&mut self, core: &mut Core, context: u64) -> Result<()> {
        let Some(leader) = &self.leader else {
            return Err(Error::NotLeader { leader: None });
        };
        core.send(leader, Body::ReadIndex { context });
        let ticks_left = FORWARDED_READ_TIMEOUT_ELECTIONS * core.config.election_timeout_ticks;
        self.forwarded_reads.push(ForwardedRead {
            context,
            ticks_left,
        });
        Ok(())
    }

    /// The leader answered (or refused) a forwarded read.
    fn complete_read(&mut self, core: &mut Core, context: u64, index: Option<Index>) {
        let Some(position) = self
            .forwarded_reads
            .iter()
            .position(|read| read.context == context)
        else {
            return; // Already aborted, or a duplicate answer.
        };
        self.forwarded_reads.swap_remove(position);
        match index {
            Some(index) => core.out.read_states.push(ReadState { context, index }),
            None => core.out.aborted_reads.push(context),
        }
    }

    /// This node stops following this leader: its answers may never come.
    pub(crate) fn abort_reads(&mut self, core: &mut Core) {
        let aborted = self.forwarded_reads.drain(..).map(|read| read.context);
        core.out.aborted_reads.extend(aborted);
    }

    /// One tick: abort the forwarded reads that waited too long for an answer.
    pub(crate) fn tick_reads(&mut self, core: &mut Core) {
        self.forwarded_reads.retain_mut(|read| {
            read.ticks_left = read.ticks_left.saturating_sub(1);
            if read.ticks_left == 0 {
                core.out.aborted_reads.push(read.context);
            }
            read.ticks_left > 0
        });
    }
}

impl Raft {
    /// A message from the leader of the current term arrived: follow it and restart the
    /// election timer. Err if this node leads the same term (two leaders in a term can
    /// only come from a broken or malicious peer).
    fn follow(&mut self, leader: &NodeId) -> Result<()> {
        match &mut self.role {
            RoleState::Leader(_) => {
                return Err(Error::InvalidInput(format!(
                    "{leader} claims to lead term {} too",
                    self.core.term
                )));
            }
            RoleState::Candidate(_) => self.into_follower(self.core.term, Some(leader.clone())),
            RoleState::Follower(follower) => {
                follower.leader.get_or_insert_with(|| leader.clone());
            }
        }
        self.core.election_elapsed_ticks = 0;
        Ok(())
    }

    /// AppendEntries receiver (Raft figure 2). The answer waits for the persist, because it
    /// tells the leader the entries are durable here.
    pub(crate) fn handle_append(
        &mut self,
        from: &NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    ) -> Result<()> {
        let contiguous = entries
            .iter()
            .enumerate()
            .all(|(offset, entry)| entry.index == prev_index + 1 + offset as Index);
        if !contiguous {
            return Err(Error::InvalidInput(format!(
                "append from {from}: entries do not follow {prev_index}"
            )));
        }
        self.follow(from)?;
        let log = &mut self.core.log;
        if prev_index < log.commit {
            // Everything up to our commit matches the leader's log (leader completeness);
            // tell it where we are, it continues from there.
            let index = log.commit;
            self.core.send_persisted(
                from,
                Body::AppendResponse {
                    index,
                    reject: None,
                },
            );
            return Ok(());
        }
        let body = match log.maybe_append(prev_index, prev_term, entries) {
            Some(match_index) => {
                log.commit_to(commit.min(match_index));
                Body::AppendResponse {
                    index: match_index,
                    reject: None,
                }
            }
            None => {
                let (conflict_index, conflict_term) = log.conflict_hint(prev_index);
                let reject = Some(AppendReject {
                    conflict_index,
                    conflict_term,
                });
                Body::AppendResponse {
                    index: prev_index,
                    reject,
                }
            }
        };
        self.core.send_persisted(from, body);
        Ok(())
    }

    /// A heartbeat: follow, learn the commit index (the leader caps it at what we hold),
    /// and echo the read round.
    pub(crate) fn handle_heartbeat(
        &mut self,
        from: &NodeId,
        commit: Index,
        read_seq: u64,
    ) -> Result<()> {
        self.follow(from)?;
        let log = &mut self.core.log;
        log.commit_to(commit.min(log.last_index()));
        self.core
            .send_persisted(from, Body::HeartbeatResponse { read_seq });
        Ok(())
    }

    /// InstallSnapshot receiver (Raft §7). The driver has the snapshot's data already.
    pub(crate) fn handle_snapshot(&mut self, from: &NodeId, meta: SnapshotMeta) -> Result<()> {
        self.follow(from)?;
        let log = &mut self.core.log;
        let index = meta.index;
        if index <= log.commit {
            // Not newer than what we know committed: ignore it, say where we are.
            let commit = log.commit;
            self.core
                .send_persisted(from, Body::SnapshotResponse { index: commit });
            return Ok(());
        }
        if log.term(index) == Some(meta.term) {
            // We hold the snapshot's last entry: our log matches up to it, keep it.
            log.commit_to(index);
        } else {
            log.restore(meta.clone());
            self.core.out.snapshot = Some(meta);
        }
        self.core
            .send_persisted(from, Body::SnapshotResponse { index });
        Ok(())
    }

    /// The leader's answer to a forwarded read.
    pub(crate) fn handle_read_index_response(&mut self, context: u64, index: Option<Index>) {
        if let RoleState::Follower(follower) = &mut self.role {
            follower.complete_read(&mut self.core, context, index);
        }
    }

    /// RequestVote receiver (Raft §5.2, §5.4.1): one vote per term, only for a candidate
    /// whose log is at least as up to date. The answer waits for the vote to be durable.
    pub(crate) fn handle_vote(&mut self, from: &NodeId, last_index: Index, last_term: Term) {
        let can_vote = match &self.core.vote {
            Some(vote) => vote == from,
            None => self.leader().is_none(),
        };
        let granted = can_vote && self.core.log.is_up_to_date(last_index, last_term);
        if granted {
            self.core.vote = Some(from.clone());
            self.core.election_elapsed_ticks = 0;
        }
        self.core
            .send_persisted(from, Body::VoteResponse { granted });
    }

    /// PreVote receiver (thesis §9.6): would we vote for `from` in `term`? Only if that term
    /// is newer, its log is up to date and we have not heard from a live leader recently.
    /// Changes no state; a grant carries the proposed term, a refusal our own.
    pub(crate) fn handle_pre_vote(
        &mut self,
        from: &NodeId,
        term: Term,
        last_index: Index,
        last_term: Term,
    ) {
        let granted = term > self.core.term
            && !self.in_lease()
            && self.core.log.is_up_to_date(last_index, last_term);
        let reply_term = if granted { term } else { self.core.term };
        self.core
            .send_with_term(from, reply_term, Body::PreVoteResponse { granted });
    }
}
