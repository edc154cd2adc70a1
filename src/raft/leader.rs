//! The leader role: replication with per-follower progress (Raft §5.3, thesis §10.2.1),
//! commit (Raft §5.4.2), heartbeats and check-quorum (thesis §6.2), and ReadIndex
//! (thesis §6.4).

use std::collections::BTreeMap;

use super::consensus::{Core, Raft, RoleState};
use super::message::{AppendReject, Body, ReadState};
use super::progress::{Progress, ProgressState, quorum_value};
use super::read::{PendingRead, ReadQueue};
use super::status::PeerProgress;
use super::types::{Index, NodeId};

/// A leader's own state.
#[derive(Clone, Debug)]
pub(crate) struct Leader {
    /// Every follower's progress, by id (sorted: deterministic send order).
    progress: BTreeMap<NodeId, Progress>,
    /// The index of this term's no-op. Until it commits, the leader's commit index may lag
    /// the cluster's, so reads wait (thesis §6.4 step 1).
    term_start: Index,
    heartbeat_elapsed_ticks: u64,
    /// Send a heartbeat to every follower in the next ready (the periodic one).
    heartbeat_due: bool,
    /// Send the waiting read round in the next ready, to just enough followers to make a
    /// quorum (see `read_round_recipients`).
    read_round_due: bool,
    reads: ReadQueue,
}

impl Leader {
    /// Take office: fresh progress for every follower, and the term's no-op.
    pub(crate) fn new(core: &mut Core) -> Leader {
        let last_index = core.log.last_index();
        let progress = core
            .peers
            .iter()
            .map(|peer| (peer.clone(), Progress::new(last_index)))
            .collect();
        let term_start = core.log.append(core.term, Vec::new());
        core.election_elapsed_ticks = 0;
        Leader {
            progress,
            term_start,
            heartbeat_elapsed_ticks: 0,
            heartbeat_due: false,
            read_round_due: false,
            reads: ReadQueue::default(),
        }
    }

    /// Heartbeats, check-quorum and snapshot send timeouts. Returns false if the leader
    /// must step down: it has not heard from a majority for an election timeout.
    pub(crate) fn tick(&mut self, core: &mut Core) -> bool {
        self.heartbeat_elapsed_ticks += 1;
        if self.heartbeat_elapsed_ticks >= core.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed_ticks = 0;
            self.heartbeat_due = true;
        }
        self.tick_snapshots(core.config.election_timeout_ticks);
        core.election_elapsed_ticks += 1;
        if core.election_elapsed_ticks < core.config.election_timeout_ticks {
            return true;
        }
        core.election_elapsed_ticks = 0;
        let active = 1 + self
            .progress
            .values()
            .filter(|progress| progress.recent_active)
            .count();
        self.progress
            .values_mut()
            .for_each(|progress| progress.recent_active = false);
        !core.config.check_quorum || active >= core.quorum()
    }

    /// A snapshot send that got no answer for an election timeout is presumed lost (the
    /// driver's stream failed, or the message was dropped): probe again, which resends.
    fn tick_snapshots(&mut self, timeout_ticks: u64) {
        for progress in self.progress.values_mut() {
            if progress.state == ProgressState::Snapshot {
                progress.snapshot_elapsed_ticks += 1;
                if progress.snapshot_elapsed_ticks >= timeout_ticks {
                    progress.into_probe();
                }
            }
        }
    }

    /// Advance the commit index to the highest index durable on a majority (the leader
    /// counts itself only up to what it persisted) if that entry is of the current term
    /// (Raft §5.4.2: older entries commit only indirectly).
    pub(crate) fn maybe_commit(&mut self, core: &mut Core) -> bool {
        let mut matches: Vec<Index> = self
            .progress
            .values()
            .map(|progress| progress.match_index)
            .collect();
        matches.push(core.log.persisted);
        let index = quorum_value(&matches);
        if index <= core.log.commit || core.log.term(index) != Some(core.term) {
            return false;
        }
        core.log.commit_to(index);
        self.release_waiting_reads(core);
        true
    }

    /// An append was answered.
    pub(crate) fn handle_append_response(
        &mut self,
        core: &mut Core,
        from: &NodeId,
        index: Index,
        reject: Option<AppendReject>,
    ) {
        let Some(progress) = self.progress.get_mut(from) else {
            return;
        };
        progress.recent_active = true;
        match reject {
            None => {
                if Self::append_accepted(progress, index) {
                    self.maybe_commit(core);
                }
            }
            Some(reject) => Self::append_rejected(core, progress, index, reject),
        }
    }

    /// The follower holds our log up to `index`. Returns whether its match advanced.
    fn append_accepted(progress: &mut Progress, index: Index) -> bool {
        let advanced = progress.maybe_update(index);
        match progress.state {
            // A probe answered at the match point (even one we knew) ends the probing.
            ProgressState::Probe if advanced || index == progress.match_index => {
                progress.into_replicate()
            }
            ProgressState::Snapshot if progress.match_index >= progress.snapshot_index => {
                progress.into_replicate()
            }
            ProgressState::Replicate => progress.free_inflights(index),
            _ => {}
        }
        advanced
    }

    /// The follower lacks our entry at `prev_index`: back off using its hint (thesis §3.5).
    /// If it knows the conflicting term and we hold entries of it, resume after our last
    /// one; otherwise resume at its first index of that term (or its end).
    fn append_rejected(
        core: &Core,
        progress: &mut Progress,
        prev_index: Index,
        reject: AppendReject,
    ) {
        if !progress.is_rejection_current(prev_index) {
            return;
        }
        let next = match reject.conflict_term {
            0 => reject.conflict_index,
            term => core
                .log
                .last_index_of_term(term, prev_index)
                .map_or(reject.conflict_index, |index| index + 1),
        };
        progress.into_probe();
        progress.next_index = next.min(prev_index).max(progress.match_index + 1);
    }

    /// A snapshot was answered: the follower's log matches ours up to `index`.
    pub(crate) fn handle_snapshot_response(
        &mut self,
        core: &mut Core,
        from: &NodeId,
        index: Index,
    ) {
        let Some(progress) = self.progress.get_mut(from) else {
            return;
        };
        progress.recent_active = true;
        let advanced = progress.maybe_update(index);
        if progress.state == ProgressState::Snapshot {
            progress.into_replicate();
        }
        if advanced {
            self.maybe_commit(core);
        }
    }

    /// A heartbeat was answered: note the contact and the read round. If the follower lags
    /// and no append was acknowledged since the heartbeat left, appends were lost: re-probe
    /// (Probe) or send an empty append at the pipeline's tip (Replicate), whose rejection
    /// restarts replication from the match index. Under steady load acks keep the match
    /// index moving, so pipelining is not interrupted.
    pub(crate) fn handle_heartbeat_response(
        &mut self,
        core: &mut Core,
        from: &NodeId,
        read_seq: u64,
    ) {
        let Some(progress) = self.progress.get_mut(from) else {
            return;
        };
        progress.recent_active = true;
        progress.read_ack = progress.read_ack.max(read_seq);
        let stalled = progress.match_index == progress.match_at_heartbeat;
        if progress.match_index < core.log.last_index() && stalled {
            match progress.state {
                ProgressState::Probe => progress.probe_sent = false,
                ProgressState::Replicate => progress.tip_probe = true,
                ProgressState::Snapshot => {}
            }
        }
        self.complete_reads(core);
    }

    /// A linearizable read, local (`from` None) or forwarded by a follower.
    pub(crate) fn read_index(&mut self, core: &mut Core, context: u64, from: Option<NodeId>) {
        if core.log.commit < self.term_start {
            self.reads.waiting.push((context, from));
            return;
        }
        let confirmed = self.confirmed_read_round();
        if self
            .reads
            .register(context, from, core.log.commit, confirmed)
        {
            self.read_round_due = true;
        }
        self.complete_reads(core);
    }

    /// The latest read round a majority (us included) has acknowledged.
    fn confirmed_read_round(&self) -> u64 {
        let mut acks: Vec<u64> = self
            .progress
            .values()
            .map(|progress| progress.read_ack)
            .collect();
        acks.push(u64::MAX);
        quorum_value(&acks)
    }

    /// This term's first entry committed: reads that waited for it can start.
    fn release_waiting_reads(&mut self, core: &mut Core) {
        if core.log.commit < self.term_start || self.reads.waiting.is_empty() {
            return;
        }
        for (context, from) in std::mem::take(&mut self.reads.waiting) {
            self.read_index(core, context, from);
        }
    }

    /// Complete the reads whose round a majority (us included) has acknowledged, and send
    /// the round that waited for it.
    fn complete_reads(&mut self, core: &mut Core) {
        let confirmed = self.confirmed_read_round();
        if self.reads.wants_round(confirmed) {
            self.read_round_due = true;
        }
        for PendingRead {
            context,
            from,
            index,
            ..
        } in self.reads.take_confirmed(confirmed)
        {
            match from {
                None => core.out.read_states.push(ReadState { context, index }),
                Some(from) => core.send(
                    &from,
                    Body::ReadIndexResponse {
                        context,
                        index: Some(index),
                    },
                ),
            }
        }
    }

    /// Stepping down: no pending read may complete (a deposed leader's commit index may be
    /// stale). Local reads abort; followers are told their reads were refused.
    pub(crate) fn abort_reads(&mut self, core: &mut Core) {
        for (context, from) in self.reads.take_all() {
            match from {
                None => core.out.aborted_reads.push(context),
                Some(from) => core.send(
                    &from,
                    Body::ReadIndexResponse {
                        context,
                        index: None,
                    },
                ),
            }
        }
    }

    /// Whether `send_appends` would send anything.
    pub(crate) fn wants_send(&self, core: &Core) -> bool {
        self.heartbeat_due
            || self.read_round_due
            || self
                .progress
                .values()
                .any(|progress| Self::wants_append(core, progress))
    }

    fn wants_append(core: &Core, progress: &Progress) -> bool {
        let log = &core.log;
        let window = core.config.inflight_appends_max;
        let notice = Self::notice_due(core, progress);
        match progress.state {
            ProgressState::Snapshot => false,
            _ if progress.next_index < log.first_index() => true,
            ProgressState::Probe => !progress.probe_sent || notice,
            ProgressState::Replicate => {
                (progress.next_index <= log.last_index() && progress.inflights.len() < window)
                    || progress.tip_probe
                    || notice
            }
        }
    }

    /// Generate the messages for every follower (called from `ready`, so proposals made
    /// between two readies share appends): due heartbeats, then appends as the window and
    /// byte limit allow, a snapshot where compacted entries are needed, and a commit notice
    /// to a caught-up follower that has not heard the latest commit index it can use.
    pub(crate) fn send_appends(&mut self, core: &mut Core) {
        let everyone = std::mem::take(&mut self.heartbeat_due);
        let round = std::mem::take(&mut self.read_round_due);
        let read_seq = if everyone || round {
            self.reads.send_round()
        } else {
            0
        };
        let recipients = if round && !everyone {
            self.read_round_recipients(core.quorum() - 1)
        } else {
            Vec::new()
        };
        for (to, progress) in self.progress.iter_mut() {
            if everyone || recipients.contains(to) {
                Self::send_heartbeat(core, to, progress, read_seq);
            }
            let sent = Self::send_entries(core, to, progress);
            if !sent && Self::notice_due(core, progress) {
                let prev_index = progress.match_index;
                Self::send_append(core, to, progress, prev_index, false);
            }
        }
    }

    /// Whether a follower is due a commit notice: an empty append with a commit index it can
    /// use (up to its match) and has not heard. The append names the entry at the match
    /// index, so none is due while that entry is compacted away (a slow follower whose acks
    /// trail a snapshot of the leader's): the next heartbeat carries the commit then. Both
    /// `wants_append` and `send_appends` ask this, so the driver's `has_ready` loop never
    /// waits on a notice that will not be sent.
    fn notice_due(core: &Core, progress: &Progress) -> bool {
        progress.state != ProgressState::Snapshot
            && progress.match_index.min(core.log.commit) > progress.commit_sent
            && core.log.term(progress.match_index).is_some()
    }

    /// The followers a read round goes to: the `count` that acknowledged the latest round
    /// (ties in id order). With the leader they are a quorum, which is all a round needs;
    /// the others are spared a message and an answer per round (half the followers' cost
    /// of reads with three nodes). Should one of them stop answering, the next periodic
    /// heartbeat, which goes to everyone, lets another take its place.
    fn read_round_recipients(&self, count: usize) -> Vec<NodeId> {
        let mut followers: Vec<(&NodeId, u64)> = self
            .progress
            .iter()
            .map(|(id, progress)| (id, progress.read_ack))
            .collect();
        followers.sort_by_key(|(_, ack)| std::cmp::Reverse(*ack));
        followers
            .into_iter()
            .take(count)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn send_heartbeat(core: &mut Core, to: &NodeId, progress: &mut Progress, read_seq: u64) {
        let commit = progress.match_index.min(core.log.commit);
        progress.commit_sent = progress.commit_sent.max(commit);
        progress.match_at_heartbeat = progress.match_index;
        core.send(to, Body::Heartbeat { commit, read_seq });
    }

    /// Appends (or a snapshot) for one follower according to its state. Returns whether
    /// anything was sent.
    fn send_entries(core: &mut Core, to: &NodeId, progress: &mut Progress) -> bool {
        let tip_probe = std::mem::take(&mut progress.tip_probe);
        if progress.state == ProgressState::Snapshot {
            return false;
        }
        if progress.next_index < core.log.first_index() {
            let meta = core.log.snapshot().clone();
            progress.into_snapshot(meta.index);
            core.send(to, Body::Snapshot { meta });
            return true;
        }
        if progress.state == ProgressState::Probe {
            if progress.probe_sent {
                return false;
            }
            progress.probe_sent = true;
            Self::send_append(core, to, progress, progress.next_index - 1, true);
            return true;
        }
        Self::send_pipelined(core, to, progress, tip_probe)
    }

    /// Replicate state: fill the window; with nothing new to send but a lagging follower,
    /// an empty append at the tip finds out whether the pipeline's tail was lost.
    fn send_pipelined(
        core: &mut Core,
        to: &NodeId,
        progress: &mut Progress,
        tip_probe: bool,
    ) -> bool {
        let window = core.config.inflight_appends_max;
        let mut sent = false;
        while progress.next_index <= core.log.last_index() && progress.inflights.len() < window {
            let last = Self::send_append(core, to, progress, progress.next_index - 1, true);
            progress.inflights.push_back(last);
            progress.next_index = last + 1;
            sent = true;
        }
        if !sent && tip_probe {
            Self::send_append(core, to, progress, progress.next_index - 1, false);
            sent = true;
        }
        sent
    }

    /// Send an append after `prev_index`, with entries up to the byte limit if `with_entries`.
    /// Returns the index of the last entry sent (or `prev_index`).
    fn send_append(
        core: &mut Core,
        to: &NodeId,
        progress: &mut Progress,
        prev_index: Index,
        with_entries: bool,
    ) -> Index {
        let log = &core.log;
        let prev_term = log
            .term(prev_index)
            .expect("prev_index is at or after the snapshot");
        let entries = if with_entries {
            log.entries_from(prev_index + 1, core.config.append_bytes_max)
        } else {
            Vec::new()
        };
        let last = prev_index + entries.len() as Index;
        let commit = log.commit;
        progress.commit_sent = progress.commit_sent.max(commit.min(last));
        core.send(
            to,
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
        last
    }

    /// Per-follower progress for `status`.
    pub(crate) fn peer_progress(&self) -> BTreeMap<NodeId, PeerProgress> {
        let view = |progress: &Progress| PeerProgress {
            next_index: progress.next_index,
            match_index: progress.match_index,
            state: progress.state,
            inflight: progress.inflights.len(),
        };
        self.progress
            .iter()
            .map(|(id, progress)| (id.clone(), view(progress)))
            .collect()
    }
}

impl Raft {
    /// Dispatch helper: run `handle` if this node leads.
    fn with_leader(&mut self, handle: impl FnOnce(&mut Leader, &mut Core)) {
        if let RoleState::Leader(leader) = &mut self.role {
            handle(leader, &mut self.core);
        }
    }

    pub(crate) fn handle_append_response(
        &mut self,
        from: &NodeId,
        index: Index,
        reject: Option<AppendReject>,
    ) {
        self.with_leader(|leader, core| leader.handle_append_response(core, from, index, reject));
    }

    pub(crate) fn handle_heartbeat_response(&mut self, from: &NodeId, read_seq: u64) {
        self.with_leader(|leader, core| leader.handle_heartbeat_response(core, from, read_seq));
    }

    pub(crate) fn handle_snapshot_response(&mut self, from: &NodeId, index: Index) {
        self.with_leader(|leader, core| leader.handle_snapshot_response(core, from, index));
    }

    /// A follower forwarded a read: serve it if we lead, refuse it otherwise.
    pub(crate) fn handle_read_index(&mut self, from: &NodeId, context: u64) {
        match &mut self.role {
            RoleState::Leader(leader) => {
                leader.read_index(&mut self.core, context, Some(from.clone()))
            }
            _ => self.core.send(
                from,
                Body::ReadIndexResponse {
                    context,
                    index: None,
                },
            ),
        }
    }
}
