//! Deterministic simulation of whole Raft clusters (3 and 5 real cores) against a simulated
//! network that drops, duplicates, delays, reorders and partitions, with crashes that lose
//! everything not yet persisted. The harness plays the driver and honours the Ready
//! contract: `messages` leave at once, while `persisted_messages`, `persisted()` and applying
//! wait until a (randomly delayed) flush of that ready. Everything follows from one seed.
//!
//! Checked after every step: at most one leader per term; log matching (every `(index,
//! term)` ever handed out for persisting has one command and one predecessor term); leader
//! completeness (a new leader holds every entry applied anywhere); state machine safety (no
//! two nodes apply different entries at an index, each node applies in order, exactly
//! once); no committed entry lost (each is on a majority of disks, checked periodically and
//! at every crash); linearizable reads (a read's index is at least every commit index seen
//! anywhere before it started). After the faults stop, a leader must emerge and a proposal
//! must commit on every node within a bounded number of ticks.
//!
//! `RAFT_SIM_SEEDS=N` runs N seeds (default 1000), `RAFT_SIM_STEPS=N` steps per seed
//! (default 5000), `RAFT_SIM_SEED=S` only seed S. A failing seed prints its replay command.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{self, AssertUnwindSafe};

use kvstore::raft::{
    Config, Entry, HardState, Index, Message, NodeId, Raft, Ready, Restore, Role, SnapshotMeta,
    Term,
};

/// SplitMix64, as in the core (a copy: the harness must not share the core's generator).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// What survives a crash.
#[derive(Clone, Debug, Default)]
struct Disk {
    hard_state: HardState,
    snapshot: Option<SnapshotMeta>,
    entries: Vec<Entry>,
}

impl Disk {
    fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |snapshot| snapshot.index)
    }

    fn holds(&self, entry: &Entry) -> bool {
        entry.index <= self.snapshot_index() || self.entries.iter().any(|held| held == entry)
    }

    fn write(&mut self, ready: &Ready) {
        if let Some(snapshot) = &ready.snapshot {
            self.snapshot = Some(snapshot.clone());
            self.entries.clear();
        }
        if let Some(hard_state) = &ready.hard_state {
            self.hard_state = hard_state.clone();
        }
        if let Some(first) = ready.entries.first() {
            self.entries.retain(|entry| entry.index < first.index);
            self.entries.extend(ready.entries.iter().cloned());
        }
    }

    fn restore(&self) -> Restore {
        Restore {
            hard_state: self.hard_state.clone(),
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
            applied: self.snapshot_index(),
        }
    }
}

struct Node {
    config: Config,
    raft: Option<Raft>,
    disk: Disk,
    /// Readies taken but not yet persisted (lost in a crash).
    unpersisted: VecDeque<Ready>,
    /// The store's applied index.
    applied: Index,
}

/// The global record the checks compare against.
#[derive(Default)]
struct History {
    leaders: BTreeMap<Term, NodeId>,
    /// Every `(index, term)` handed out: (command, previous entry's term).
    entries: BTreeMap<(Index, Term), (Vec<u8>, Option<Term>)>,
    /// Every applied entry, by index - 1.
    applied: Vec<Entry>,
    /// The highest commit index seen on any node.
    commit_seen: Index,
    /// Reads in flight: context -> commit seen when it started.
    reads: BTreeMap<u64, Index>,
    reads_done: usize,
}

struct Sim {
    seed: u64,
    rng: Rng,
    nodes: Vec<Node>,
    network: Vec<Message>,
    /// Partition: each node's side; messages between sides are dropped.
    side: Vec<usize>,
    history: History,
    proposals: u64,
    next_read: u64,
    delivered: u64,
    installs: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let size = if seed.is_multiple_of(2) { 3 } else { 5 };
        let voters: Vec<NodeId> = (1..=size).map(|i| format!("n{i}")).collect();
        let pre_vote = rng.chance(80);
        let check_quorum = rng.chance(80);
        let inflight_appends_max = 1 + rng.below(4);
        let append_bytes_max = 8 + rng.below(64);
        let nodes = voters
            .iter()
            .map(|id| {
                let config = Config {
                    id: id.clone(),
                    voters: voters.clone(),
                    election_timeout_ticks: 10,
                    heartbeat_interval_ticks: 2,
                    append_bytes_max,
                    inflight_appends_max,
                    pre_vote,
                    check_quorum,
                    seed,
                };
                let raft = Raft::new(config.clone(), Restore::default()).expect("valid config");
                Node {
                    config,
                    raft: Some(raft),
                    disk: Disk::default(),
                    unpersisted: VecDeque::new(),
                    applied: 0,
                }
            })
            .collect();
        Sim {
            seed,
            rng,
            nodes,
            network: Vec::new(),
            side: vec![0; size],
            history: History::default(),
            proposals: 0,
            next_read: 0,
            delivered: 0,
            installs: 0,
        }
    }

    fn index_of(&self, id: &str) -> usize {
        id[1..].parse::<usize>().expect("node ids are n<number>") - 1
    }

    fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// One random event.
    fn step(&mut self) {
        let node = self.rng.below(self.nodes.len());
        match self.rng.below(1000) {
            0..250 => self.tick(node),
            250..600 => self.deliver_random(),
            600..620 => self.drop_random(),
            620..635 => self.duplicate_random(),
            635..835 => self.flush(node),
            835..935 => self.propose_at_leader(),
            935..965 => self.read(node),
            965..972 => self.crash(node),
            972..986 => self.restart(node),
            986..991 => self.partition(),
            991..997 => self.heal(),
            _ => self.compact(node),
        }
        self.check_leaders();
    }

    fn tick(&mut self, node: usize) {
        if let Some(raft) = &mut self.nodes[node].raft {
            raft.tick();
            self.drain(node);
        }
    }

    fn deliver_random(&mut self) {
        if !self.network.is_empty() {
            let message = self.network.swap_remove(self.rng.below(self.network.len()));
            self.deliver(message);
        }
    }

    fn drop_random(&mut self) {
        if !self.network.is_empty() {
            self.network.swap_remove(self.rng.below(self.network.len()));
        }
    }

    fn duplicate_random(&mut self) {
        if !self.network.is_empty() {
            let message = self.network[self.rng.below(self.network.len())].clone();
            self.network.push(message);
        }
    }

    fn deliver(&mut self, message: Message) {
        let (from, to) = (self.index_of(&message.from), self.index_of(&message.to));
        if self.side[from] != self.side[to] {
            return;
        }
        if let Some(raft) = &mut self.nodes[to].raft {
            self.delivered += 1;
            raft.step(message)
                .expect("a well-formed message is never an error");
            self.drain(to);
        }
    }

    /// Take every ready: send `messages` now, queue the rest until the flush.
    fn drain(&mut self, node: usize) {
        loop {
            let Some(raft) = &mut self.nodes[node].raft else {
                return;
            };
            if !raft.has_ready() {
                return;
            }
            let mut ready = raft.ready();
            self.check_ready(node, &ready);
            self.network.append(&mut ready.messages);
            self.nodes[node].unpersisted.push_back(ready);
        }
    }

    /// Persist the oldest ready, then send its persisted messages and apply.
    fn flush(&mut self, node: usize) {
        let Some(ready) = self.nodes[node].unpersisted.pop_front() else {
            return;
        };
        self.nodes[node].disk.write(&ready);
        if let Some(snapshot) = &ready.snapshot {
            self.install(node, snapshot);
            self.installs += 1;
        }
        self.network
            .extend(ready.persisted_messages.iter().cloned());
        let raft = self.nodes[node]
            .raft
            .as_mut()
            .expect("only live nodes have readies");
        if let Some(last) = ready.entries.last() {
            raft.persisted(last.index, last.term);
        }
        for entry in &ready.committed_entries {
            self.apply(node, entry);
        }
        self.drain(node);
    }

    fn install(&mut self, node: usize, snapshot: &SnapshotMeta) {
        let applied = &self.history.applied;
        assert!(
            snapshot.index as usize <= applied.len(),
            "snapshot {} beyond anything applied",
            snapshot.index
        );
        let held = &applied[snapshot.index as usize - 1];
        assert_eq!(
            held.term, snapshot.term,
            "snapshot term differs from the applied entry"
        );
        self.nodes[node].applied = snapshot.index;
    }

    fn apply(&mut self, node: usize, entry: &Entry) {
        let state = &mut self.nodes[node];
        assert_eq!(
            entry.index,
            state.applied + 1,
            "{} applies out of order",
            state.config.id
        );
        state.applied = entry.index;
        state.raft.as_mut().expect("live").applied(entry.index);
        let applied = &mut self.history.applied;
        match applied.get(entry.index as usize - 1) {
            Some(earlier) => assert_eq!(
                earlier, entry,
                "state machine safety at index {}",
                entry.index
            ),
            None => applied.push(entry.clone()),
        }
    }

    fn propose(&mut self, node: usize) {
        let Some(raft) = &mut self.nodes[node].raft else {
            return;
        };
        if raft.role() == Role::Leader {
            self.proposals += 1;
            let command = format!("s{}p{}", self.seed, self.proposals).into_bytes();
            raft.propose(command).expect("a leader accepts proposals");
            self.drain(node);
        }
    }

    fn leaders(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&node| {
                self.nodes[node]
                    .raft
                    .as_ref()
                    .is_some_and(|raft| raft.role() == Role::Leader)
            })
            .collect()
    }

    fn propose_at_leader(&mut self) {
        let leaders = self.leaders();
        if !leaders.is_empty() {
            let node = leaders[self.rng.below(leaders.len())];
            self.propose(node);
        }
    }

    /// A read at a random node, or (half the time) at a node that believes it leads: a
    /// deposed leader that has not noticed yet is where a stale read would come from.
    fn read(&mut self, node: usize) {
        let leaders = self.leaders();
        let node = if !leaders.is_empty() && self.rng.chance(50) {
            leaders[self.rng.below(leaders.len())]
        } else {
            node
        };
        let Some(raft) = &mut self.nodes[node].raft else {
            return;
        };
        self.next_read += 1;
        if raft.read_index(self.next_read).is_ok() {
            self.history
                .reads
                .insert(self.next_read, self.history.commit_seen);
            self.drain(node);
        }
    }

    fn crash(&mut self, node: usize) {
        let state = &mut self.nodes[node];
        state.raft = None;
        state.unpersisted.clear();
        self.check_durability();
    }

    fn restart(&mut self, node: usize) {
        let state = &mut self.nodes[node];
        if state.raft.is_some() {
            return;
        }
        let raft =
            Raft::new(state.config.clone(), state.disk.restore()).expect("restore from own disk");
        state.applied = state.disk.snapshot_index();
        state.raft = Some(raft);
        self.drain(node);
    }

    /// Split the nodes at random, or cut one node (often a leader) off from the rest.
    fn partition(&mut self) {
        if self.rng.chance(50) {
            for side in self.side.iter_mut() {
                *side = self.rng.below(2);
            }
            return;
        }
        let leader = (0..self.nodes.len()).find(|&node| {
            self.nodes[node]
                .raft
                .as_ref()
                .is_some_and(|raft| raft.role() == Role::Leader)
        });
        let isolated = leader.unwrap_or_else(|| self.rng.below(self.nodes.len()));
        for (node, side) in self.side.iter_mut().enumerate() {
            *side = usize::from(node == isolated);
        }
    }

    fn heal(&mut self) {
        self.side.iter_mut().for_each(|side| *side = 0);
    }

    /// Snapshot at the applied index, durably, then let the core drop its log.
    fn compact(&mut self, node: usize) {
        let state = &mut self.nodes[node];
        let Some(raft) = &mut state.raft else { return };
        // The core may already hold a newer snapshot than the store (installed, not yet
        // flushed): nothing to compact then.
        if state.applied < state.disk.snapshot_index() + 5
            || state.applied <= raft.status().snapshot_index
        {
            return;
        }
        let index = state.applied;
        let term = raft.term_at(index).expect("applied entries are held");
        let meta = SnapshotMeta {
            index,
            term,
            voters: state.config.voters.clone(),
        };
        state.disk.entries.retain(|entry| entry.index > index);
        state.disk.snapshot = Some(meta.clone());
        raft.compact(meta).expect("compact at applied");
    }

    /// Log matching, and read linearizability, on everything a ready hands out.
    fn check_ready(&mut self, node: usize, ready: &Ready) {
        let raft = self.nodes[node].raft.as_ref().expect("live");
        for entry in &ready.entries {
            let prev = entry
                .index
                .checked_sub(1)
                .and_then(|prev| raft.term_at(prev));
            let recorded = self.history.entries.entry((entry.index, entry.term));
            let value = recorded.or_insert_with(|| (entry.command.clone(), prev));
            assert_eq!(
                value.0, entry.command,
                "log matching: two commands at {}@{}",
                entry.index, entry.term
            );
            if let (Some(known), Some(prev)) = (value.1, prev) {
                assert_eq!(
                    known, prev,
                    "log matching: two predecessors of {}@{}",
                    entry.index, entry.term
                );
            }
        }
        for read in &ready.read_states {
            let started = self
                .history
                .reads
                .remove(&read.context)
                .expect("a read completes once");
            assert!(
                read.index >= started,
                "read {} at {} misses commit {started}",
                read.context,
                read.index
            );
            self.history.reads_done += 1;
        }
        for context in &ready.aborted_reads {
            self.history.reads.remove(context);
        }
    }

    /// At most one leader per term; a new leader holds every applied entry.
    fn check_leaders(&mut self) {
        for node in 0..self.nodes.len() {
            let Some(raft) = &self.nodes[node].raft else {
                continue;
            };
            self.history.commit_seen = self.history.commit_seen.max(raft.commit());
            if raft.role() != Role::Leader {
                continue;
            }
            match self.history.leaders.get(&raft.term()) {
                Some(leader) => {
                    assert_eq!(leader, raft.id(), "two leaders in term {}", raft.term())
                }
                None => {
                    self.history.leaders.insert(raft.term(), raft.id().clone());
                    self.check_leader_completeness(node);
                }
            }
        }
    }

    fn check_leader_completeness(&self, node: usize) {
        let raft = self.nodes[node].raft.as_ref().expect("live");
        let snapshot_index = raft.status().snapshot_index;
        for entry in self
            .history
            .applied
            .iter()
            .filter(|entry| entry.index > snapshot_index)
        {
            assert_eq!(
                raft.entry(entry.index),
                Some(entry),
                "leader {} lacks committed entry",
                raft.id()
            );
        }
    }

    /// Every applied (hence committed) entry is on a majority of disks.
    fn check_durability(&self) {
        for entry in &self.history.applied {
            let copies = self
                .nodes
                .iter()
                .filter(|node| node.disk.holds(entry))
                .count();
            assert!(
                copies >= self.quorum(),
                "committed entry {} on only {copies} disks",
                entry.index
            );
        }
    }

    /// After the faults: heal, restart, deliver reliably; a leader must emerge and a
    /// proposal must commit everywhere within `ticks_max` ticks.
    fn check_liveness(&mut self, ticks_max: usize) {
        self.heal();
        for node in 0..self.nodes.len() {
            self.restart(node);
        }
        // A proposal can be lost with a leader that is then deposed: propose again now
        // and then; any of them committing everywhere counts.
        let mut proposed: Vec<Vec<u8>> = Vec::new();
        for tick in 0..ticks_max {
            for node in 0..self.nodes.len() {
                self.tick(node);
            }
            self.settle();
            if tick % 20 == 0 {
                proposed.extend(self.propose_anywhere());
                self.settle();
            }
            if proposed
                .iter()
                .any(|command| self.applied_everywhere(command))
            {
                return;
            }
        }
        for node in &self.nodes {
            let raft = node.raft.as_ref().expect("restarted");
            eprintln!("{:?} applied {}", raft.status(), node.applied);
        }
        panic!("no leader elected and proposal committed within {ticks_max} ticks after healing");
    }

    fn propose_anywhere(&mut self) -> Option<Vec<u8>> {
        let leader = (0..self.nodes.len()).find(|&node| {
            self.nodes[node]
                .raft
                .as_ref()
                .is_some_and(|raft| raft.role() == Role::Leader)
        })?;
        let before = self.proposals;
        self.propose(leader);
        (self.proposals > before).then(|| format!("s{}p{}", self.seed, self.proposals).into_bytes())
    }

    fn applied_everywhere(&self, command: &[u8]) -> bool {
        let Some(entry) = self
            .history
            .applied
            .iter()
            .find(|entry| entry.command == command)
        else {
            return false;
        };
        self.nodes.iter().all(|node| node.applied >= entry.index)
    }

    /// Deliver and flush until nothing moves.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while !self.network.is_empty() {
                let message = self.network.remove(0);
                self.deliver(message);
                moved = true;
            }
            for node in 0..self.nodes.len() {
                while !self.nodes[node].unpersisted.is_empty() {
                    self.flush(node);
                    moved = true;
                }
            }
            self.check_leaders();
            if !moved {
                return;
            }
        }
        panic!("the cluster never went quiet");
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

/// What one seed did, for the summary line.
#[derive(Default)]
struct Totals {
    proposals: u64,
    applied: usize,
    reads: usize,
    leaders: usize,
    delivered: u64,
    installs: u64,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.proposals += other.proposals;
        self.applied += other.applied;
        self.reads += other.reads;
        self.leaders += other.leaders;
        self.delivered += other.delivered;
        self.installs += other.installs;
    }
}

/// Runs one seed.
fn run_seed(seed: u64, steps: u64) -> Totals {
    let mut sim = Sim::new(seed);
    for step in 0..steps {
        sim.step();
        if (step + 1).is_multiple_of(100) {
            sim.check_durability();
        }
    }
    sim.check_liveness(300);
    sim.check_durability();
    Totals {
        proposals: sim.proposals,
        applied: sim.history.applied.len(),
        reads: sim.history.reads_done,
        leaders: sim.history.leaders.len(),
        delivered: sim.delivered,
        installs: sim.installs,
    }
}

#[test]
fn simulated_clusters_stay_safe_and_live() {
    let steps = env_number("RAFT_SIM_STEPS", 5000);
    let seeds: Vec<u64> = match std::env::var("RAFT_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("RAFT_SIM_SEED must be a number")],
        Err(_) => (0..env_number("RAFT_SIM_SEEDS", 1000)).collect(),
    };
    let started = std::time::Instant::now();
    let count = seeds.len();
    let mut totals = Totals::default();
    for seed in seeds {
        match panic::catch_unwind(AssertUnwindSafe(|| run_seed(seed, steps))) {
            Ok(outcome) => totals.add(outcome),
            Err(_) => panic!(
                "simulation failed for seed {seed}; replay with: RAFT_SIM_SEED={seed} RAFT_SIM_STEPS={steps} cargo test --test it raft_sim::"
            ),
        }
    }
    println!(
        "{count} seeds x {steps} steps in {:.1?}: {} proposals, {} entries applied, {} reads, {} leaders, {} messages delivered, {} snapshots installed",
        started.elapsed(),
        totals.proposals,
        totals.applied,
        totals.reads,
        totals.leaders,
        totals.delivered,
        totals.installs
    );
}
