//! The candidate role (Raft §5.2) and the pre-candidate (thesis §9.6): counting votes.

use std::collections::BTreeMap;

use super::consensus::{Raft, RoleState};
use super::message::Body;
use super::types::{NodeId, Term};

/// A candidate's own state.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    /// A pre-candidate asks "would you vote for me?" without changing its term.
    pub(crate) pre: bool,
    /// Answers so far, its own vote included.
    votes: BTreeMap<NodeId, bool>,
}

/// What the votes so far decide.
enum Poll {
    Won,
    Lost,
    Pending,
}

impl Candidate {
    fn new(pre: bool, id: &NodeId) -> Candidate {
        Candidate {
            pre,
            votes: BTreeMap::from([(id.clone(), true)]),
        }
    }

    fn record(&mut self, from: &NodeId, granted: bool, quorum: usize) -> Poll {
        self.votes.entry(from.clone()).or_insert(granted);
        let granted = self.votes.values().filter(|&&vote| vote).count();
        if granted >= quorum {
            Poll::Won
        } else if self.votes.len() - granted >= quorum {
            Poll::Lost
        } else {
            Poll::Pending
        }
    }
}

impl Raft {
    /// The election timer fired: campaign, through a pre-vote if configured.
    pub(crate) fn start_election(&mut self) {
        if self.core.config.pre_vote {
            self.into_pre_candidate();
        } else {
            self.into_candidate();
        }
    }

    /// Ask every peer whether it would vote for us in the next term; nothing changes until
    /// a majority says yes, so a node that cannot win never disrupts the cluster.
    fn into_pre_candidate(&mut self) {
        self.change_role(RoleState::Candidate(Candidate::new(true, &self.core.id)));
        let core = &mut self.core;
        core.reset_election_timer();
        let term = core.term + 1;
        let (last_index, last_term) = (core.log.last_index(), core.log.last_term());
        for peer in core.peers.clone() {
            core.send_with_term(
                &peer,
                term,
                Body::PreVote {
                    last_index,
                    last_term,
                },
            );
        }
        self.poll(&self.core.id.clone(), true);
    }

    /// Start an election (Raft §5.2): new term, vote for ourselves, request votes. The
    /// requests wait for the new term and vote to be durable, so a crash cannot make us
    /// vote twice in the term.
    fn into_candidate(&mut self) {
        self.change_role(RoleState::Candidate(Candidate::new(false, &self.core.id)));
        let core = &mut self.core;
        core.term += 1;
        core.vote = Some(core.id.clone());
        core.reset_election_timer();
        let (last_index, last_term) = (core.log.last_index(), core.log.last_term());
        for peer in core.peers.clone() {
            core.send_persisted(
                &peer,
                Body::Vote {
                    last_index,
                    last_term,
                },
            );
        }
        self.poll(&self.core.id.clone(), true);
    }

    /// Record a vote and act on the outcome.
    fn poll(&mut self, from: &NodeId, granted: bool) {
        let quorum = self.core.quorum();
        let RoleState::Candidate(candidate) = &mut self.role else {
            return;
        };
        let pre = candidate.pre;
        match candidate.record(from, granted, quorum) {
            Poll::Won if pre => self.into_candidate(),
            Poll::Won => self.into_leader(),
            Poll::Lost => self.into_follower(self.core.term, None),
            Poll::Pending => {}
        }
    }

    /// A pre-vote answer: a grant carries the term we asked about, a refusal our term (a
    /// refusal from a newer term already made us a follower).
    pub(crate) fn handle_pre_vote_response(&mut self, from: &NodeId, term: Term, granted: bool) {
        let RoleState::Candidate(Candidate { pre: true, .. }) = &self.role else {
            return;
        };
        if granted && term != self.core.term + 1 {
            return;
        }
        self.poll(from, granted);
    }

    /// A vote answer in our term.
    pub(crate) fn handle_vote_response(&mut self, from: &NodeId, granted: bool) {
        if let RoleState::Candidate(Candidate { pre: false, .. }) = &self.role {
            self.poll(from, granted);
        }
    }
}
