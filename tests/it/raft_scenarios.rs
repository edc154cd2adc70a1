//! Golden scenario scripts for the raft core (STYLE practice 8). Each file in
//! `tests/raft_scenarios/` states its goal in a leading comment, then runs commands against
//! an in-memory cluster; after every command the harness writes what happened, prefixed by
//! `> `: every message sent (in order: those allowed before the persist, the persist, then
//! those that waited for it), every role change, persist, apply and read outcome. The file
//! therefore pins ordering and durability, not only outcomes. `UPDATE_GOLDEN=1 cargo test
//! --test it raft_scenarios::` rewrites the files; review the diff before committing.
//!
//! Commands (nodes are `n1`..`nN`):
//!
//! ```text
//! cluster <N> [pre_vote=<bool>] [check_quorum=<bool>] [inflight=<n>] [bytes=<n>] [seed=<n>]
//! campaign <node>          tick the node until its election timer fires
//! tick <node|all> [<n>]    tick without delivering anything
//! run <n>                  n rounds of: tick every node, then stabilize
//! stabilize                deliver messages (FIFO) until none are left
//! deliver                  deliver only the messages in flight now
//! partition <nodes> | <nodes>   messages across the cut are dropped on delivery
//! heal                     remove the partition
//! propose <node> <word>...  one proposal per word, all before the next ready
//! read <node> <context>...  start ReadIndex reads (all before the next ready)
//! crash <node>             lose everything not persisted; messages to it are dropped
//! restart <node>           recover from what was persisted
//! compact <node>           snapshot at the applied index and compact the log
//! status [<node>...]       role, term, leader, commit, applied, log bounds, progress
//! log <node>               the node's log entries
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kvstore::raft::{
    Body, Config, Entry, HardState, Index, Message, Raft, Ready, Restore, SnapshotMeta,
};

#[derive(Clone, Debug, Default)]
struct Disk {
    hard_state: HardState,
    snapshot: Option<SnapshotMeta>,
    entries: Vec<Entry>,
}

struct Node {
    config: Config,
    raft: Option<Raft>,
    disk: Disk,
    applied: Index,
}

struct Cluster {
    nodes: BTreeMap<String, Node>,
    network: VecDeque<Message>,
    /// Side of the partition per node; absent means no partition.
    sides: BTreeMap<String, usize>,
    out: String,
}

fn show_entries(entries: &[Entry]) -> String {
    let shown: Vec<String> = entries.iter().map(show_entry).collect();
    format!("[{}]", shown.join(", "))
}

fn show_entry(entry: &Entry) -> String {
    if entry.command.is_empty() {
        format!("{}@{} noop", entry.index, entry.term)
    } else {
        format!(
            "{}@{} {}",
            entry.index,
            entry.term,
            String::from_utf8_lossy(&entry.command)
        )
    }
}

fn show_body(body: &Body) -> String {
    match body {
        Body::PreVote {
            last_index,
            last_term,
        } => format!("PreVote last={last_index}@{last_term}"),
        Body::PreVoteResponse { granted } => format!("PreVoteResponse granted={granted}"),
        Body::Vote {
            last_index,
            last_term,
        } => format!("Vote last={last_index}@{last_term}"),
        Body::VoteResponse { granted } => format!("VoteResponse granted={granted}"),
        Body::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            format!(
                "Append prev={prev_index}@{prev_term} entries={} commit={commit}",
                show_entries(entries)
            )
        }
        Body::AppendResponse {
            index,
            reject: None,
        } => format!("AppendResponse accept index={index}"),
        Body::AppendResponse {
            index,
            reject: Some(reject),
        } => format!(
            "AppendResponse reject index={index} hint={}@{}",
            reject.conflict_index, reject.conflict_term
        ),
        Body::Heartbeat { commit, read_seq } => {
            format!("Heartbeat commit={commit} read_seq={read_seq}")
        }
        Body::HeartbeatResponse { read_seq } => format!("HeartbeatResponse read_seq={read_seq}"),
        Body::ReadIndex { context } => format!("ReadIndex context={context}"),
        Body::ReadIndexResponse { context, index } => {
            format!("ReadIndexResponse context={context} index={index:?}")
        }
        Body::Snapshot { meta } => format!(
            "Snapshot {}@{} voters={:?}",
            meta.index, meta.term, meta.voters
        ),
        Body::SnapshotResponse { index } => format!("SnapshotResponse index={index}"),
    }
}

fn show_message(message: &Message) -> String {
    format!(
        "{} -> {} t{} {}",
        message.from,
        message.to,
        message.term,
        show_body(&message.body)
    )
}

fn role_line(raft: &Raft) -> String {
    let role = format!("{:?}", raft.role())
        .to_lowercase()
        .replace("precandidate", "pre-candidate");
    let leader = raft
        .leader()
        .map_or(String::new(), |leader| format!(" leader={leader}"));
    format!("{role} t{}{leader}", raft.term())
}

impl Cluster {
    fn new(args: &[&str]) -> Cluster {
        let size: usize = args
            .first()
            .and_then(|n| n.parse().ok())
            .expect("cluster <N>");
        let voters: Vec<String> = (1..=size).map(|i| format!("n{i}")).collect();
        let mut template = Config {
            voters: voters.clone(),
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 3,
            seed: 1,
            ..Config::default()
        };
        for option in &args[1..] {
            let (key, value) = option.split_once('=').expect("option=value");
            match key {
                "pre_vote" => template.pre_vote = value.parse().expect("bool"),
                "check_quorum" => template.check_quorum = value.parse().expect("bool"),
                "inflight" => template.inflight_appends_max = value.parse().expect("number"),
                "bytes" => template.append_bytes_max = value.parse().expect("number"),
                "seed" => template.seed = value.parse().expect("number"),
                _ => panic!("unknown cluster option {key}"),
            }
        }
        let nodes = voters
            .iter()
            .map(|id| {
                let config = Config {
                    id: id.clone(),
                    ..template.clone()
                };
                let raft = Raft::new(config.clone(), Restore::default()).expect("valid config");
                (
                    id.clone(),
                    Node {
                        config,
                        raft: Some(raft),
                        disk: Disk::default(),
                        applied: 0,
                    },
                )
            })
            .collect();
        Cluster {
            nodes,
            network: VecDeque::new(),
            sides: BTreeMap::new(),
            out: String::new(),
        }
    }

    fn line(&mut self, text: impl AsRef<str>) {
        writeln!(self.out, "> {}", text.as_ref()).expect("write to string");
    }

    fn raft(&mut self, id: &str) -> &mut Raft {
        self.nodes
            .get_mut(id)
            .unwrap_or_else(|| panic!("no node {id}"))
            .raft
            .as_mut()
            .unwrap_or_else(|| panic!("{id} is down"))
    }

    /// Run `action` on a live node, then report its role change and process its readies.
    fn with_node(&mut self, id: &str, action: impl FnOnce(&mut Raft, &mut Vec<String>)) {
        let mut notes = Vec::new();
        let raft = self.raft(id);
        let before = role_line(raft);
        action(raft, &mut notes);
        let after = role_line(raft);
        for note in notes {
            self.line(note);
        }
        if before != after {
            self.line(format!("{id} {before} -> {after}"));
        }
        self.process(id);
    }

    /// The driver's loop for one node, synchronously: send, persist, send what waited,
    /// apply, report reads.
    fn process(&mut self, id: &str) {
        while self.raft(id).has_ready() {
            let ready = self.raft(id).ready();
            self.handle_ready(id, ready);
        }
    }

    fn handle_ready(&mut self, id: &str, ready: Ready) {
        for message in ready.messages.clone() {
            self.send(message);
        }
        self.persist(id, &ready);
        for message in ready.persisted_messages.clone() {
            self.send(message);
        }
        if let Some(last) = ready.entries.last() {
            self.raft(id).persisted(last.index, last.term);
        }
        for entry in &ready.committed_entries {
            self.line(format!("{id} apply {}", show_entry(entry)));
            self.nodes.get_mut(id).expect("node").applied = entry.index;
            self.raft(id).applied(entry.index);
        }
        for read in ready.read_states.clone() {
            self.line(format!(
                "{id} read context={} ready at index {}",
                read.context, read.index
            ));
        }
        for context in ready.aborted_reads.clone() {
            self.line(format!("{id} read context={context} aborted"));
        }
    }

    fn persist(&mut self, id: &str, ready: &Ready) {
        let node = self.nodes.get_mut(id).expect("node");
        let mut lines = Vec::new();
        if let Some(snapshot) = &ready.snapshot {
            lines.push(format!(
                "{id} persist snapshot {}@{} (log discarded)",
                snapshot.index, snapshot.term
            ));
            node.disk.snapshot = Some(snapshot.clone());
            node.disk.entries.clear();
            node.applied = snapshot.index;
        }
        if let Some(hard_state) = &ready.hard_state {
            let vote = hard_state.vote.as_deref().unwrap_or("none");
            lines.push(format!(
                "{id} persist hard_state term={} vote={vote} commit={}",
                hard_state.term, hard_state.commit
            ));
            node.disk.hard_state = hard_state.clone();
        }
        if let Some(first) = ready.entries.first() {
            let truncating = node
                .disk
                .entries
                .last()
                .is_some_and(|last| last.index >= first.index);
            let note = if truncating {
                format!(" (truncate from {})", first.index)
            } else {
                String::new()
            };
            lines.push(format!(
                "{id} persist entries {}{note}",
                show_entries(&ready.entries)
            ));
            node.disk.entries.retain(|entry| entry.index < first.index);
            node.disk.entries.extend(ready.entries.iter().cloned());
        }
        for line in lines {
            self.line(line);
        }
    }

    fn send(&mut self, message: Message) {
        self.line(format!("send {}", show_message(&message)));
        self.network.push_back(message);
    }

    fn cut(&self, from: &str, to: &str) -> bool {
        self.sides.get(from) != self.sides.get(to)
    }

    fn deliver(&mut self, message: Message) {
        let to = message.to.clone();
        if self.cut(&message.from, &to) {
            self.line(format!("drop {} (partition)", show_message(&message)));
            return;
        }
        if self.nodes[&to].raft.is_none() {
            self.line(format!("drop {} ({to} is down)", show_message(&message)));
            return;
        }
        self.with_node(&to, |raft, _| raft.step(message).expect("valid message"));
    }

    fn stabilize(&mut self) {
        while let Some(message) = self.network.pop_front() {
            self.deliver(message);
        }
    }

    fn deliver_round(&mut self) {
        let round: Vec<Message> = self.network.drain(..).collect();
        for message in round {
            self.deliver(message);
        }
    }

    fn live(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.raft.is_some())
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn tick(&mut self, id: &str, count: usize) {
        for _ in 0..count {
            self.with_node(id, |raft, _| raft.tick());
        }
    }

    fn campaign(&mut self, id: &str) {
        for ticks in 1..=1000 {
            let mut started = false;
            self.with_node(id, |raft, notes| {
                let before = raft.role();
                raft.tick();
                if raft.role() != before {
                    notes.push(format!("{id} election timeout after {ticks} ticks"));
                    started = true;
                }
            });
            if started {
                return;
            }
        }
        panic!("{id} never campaigned");
    }

    fn run(&mut self, rounds: usize) {
        for round in 1..=rounds {
            self.line(format!("-- round {round}"));
            for id in self.live() {
                self.tick(&id, 1);
            }
            self.stabilize();
        }
    }

    fn partition(&mut self, args: &[&str]) {
        self.sides.clear();
        let mut side = 0;
        for arg in args {
            if *arg == "|" {
                side += 1;
            } else {
                self.sides.insert(arg.to_string(), side);
            }
        }
        for id in self.nodes.keys() {
            self.sides.entry(id.clone()).or_insert(side + 1);
        }
    }

    fn crash(&mut self, id: &str) {
        self.nodes.get_mut(id).expect("node").raft = None;
        self.line(format!("{id} crashed"));
    }

    fn restart(&mut self, id: &str) {
        let node = self.nodes.get_mut(id).expect("node");
        let restore = Restore {
            hard_state: node.disk.hard_state.clone(),
            snapshot: node.disk.snapshot.clone(),
            entries: node.disk.entries.clone(),
            applied: node
                .disk
                .snapshot
                .as_ref()
                .map_or(0, |snapshot| snapshot.index),
        };
        node.applied = restore.applied;
        node.raft = Some(Raft::new(node.config.clone(), restore).expect("restore"));
        let line = format!("{id} restarted as {}", role_line(self.raft(id)));
        self.line(line);
        self.process(id);
    }

    fn compact(&mut self, id: &str) {
        let node = self.nodes.get_mut(id).expect("node");
        let index = node.applied;
        let raft = node.raft.as_mut().expect("live");
        let term = raft.term_at(index).expect("applied entry held");
        let meta = SnapshotMeta {
            index,
            term,
            voters: node.config.voters.clone(),
        };
        node.disk.entries.retain(|entry| entry.index > index);
        node.disk.snapshot = Some(meta.clone());
        raft.compact(meta).expect("compact");
        self.line(format!("{id} snapshot and compact to {index}@{term}"));
    }

    fn status(&mut self, ids: &[&str]) {
        let ids: Vec<String> = if ids.is_empty() {
            self.nodes.keys().cloned().collect()
        } else {
            ids.iter().map(|id| id.to_string()).collect()
        };
        for id in ids {
            let Some(raft) = &self.nodes[&id].raft else {
                self.line(format!("{id} down"));
                continue;
            };
            let status = raft.status();
            let mut line = format!(
                "{id} {} commit={} applied={} log={}..={} last_term={} snapshot={}@{}",
                role_line(raft),
                status.commit,
                status.applied,
                status.first_index,
                status.last_index,
                status.last_term,
                status.snapshot_index,
                status.snapshot_term
            );
            for (peer, progress) in &status.progress {
                let _ = write!(
                    line,
                    " {peer}:{}/{}/{}",
                    progress.state, progress.match_index, progress.next_index
                );
            }
            self.line(line);
        }
    }

    fn log(&mut self, id: &str) {
        let raft = self.raft(id);
        let status = raft.status();
        let entries: Vec<Entry> = (status.first_index..=status.last_index)
            .filter_map(|index| raft.entry(index).cloned())
            .collect();
        let line = format!("{id} log {}", show_entries(&entries));
        self.line(line);
    }

    fn execute(&mut self, words: &[&str]) {
        let number = |index: usize, default: usize| {
            words
                .get(index)
                .map_or(default, |word| word.parse().expect("number"))
        };
        match words[0] {
            "campaign" => self.campaign(words[1]),
            "tick" if words[1] == "all" => {
                for _ in 0..number(2, 1) {
                    for id in self.live() {
                        self.tick(&id, 1);
                    }
                }
            }
            "tick" => self.tick(words[1], number(2, 1)),
            "run" => self.run(number(1, 1)),
            "stabilize" => self.stabilize(),
            "deliver" => self.deliver_round(),
            "partition" => self.partition(&words[1..]),
            "heal" => self.sides.clear(),
            "propose" => {
                let id = words[1];
                let commands: Vec<Vec<u8>> = words[2..]
                    .iter()
                    .map(|word| word.as_bytes().to_vec())
                    .collect();
                self.with_node(id, |raft, notes| {
                    for command in commands {
                        match raft.propose(command) {
                            Ok((index, term)) => {
                                notes.push(format!("{id} proposed at {index}@{term}"))
                            }
                            Err(error) => notes.push(format!("{id} propose failed: {error}")),
                        }
                    }
                });
            }
            "read" => {
                let id = words[1];
                let contexts: Vec<u64> = words[2..]
                    .iter()
                    .map(|word| word.parse().expect("context"))
                    .collect();
                self.with_node(id, |raft, notes| {
                    for context in contexts {
                        if let Err(error) = raft.read_index(context) {
                            notes.push(format!("{id} read context={context} failed: {error}"));
                        }
                    }
                });
            }
            "crash" => self.crash(words[1]),
            "restart" => self.restart(words[1]),
            "compact" => self.compact(words[1]),
            "status" => self.status(&words[1..]),
            "log" => self.log(words[1]),
            other => panic!("unknown command {other}"),
        }
    }
}

/// Runs a script, returning the text with fresh output.
fn run_script(text: &str) -> String {
    let mut cluster: Option<Cluster> = None;
    let mut result = String::new();
    for line in text.lines().filter(|line| !line.starts_with("> ")) {
        result.push_str(line);
        result.push('\n');
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() || words[0].starts_with('#') {
            continue;
        }
        if words[0] == "cluster" {
            cluster = Some(Cluster::new(&words[1..]));
            continue;
        }
        let cluster = cluster.as_mut().expect("a script starts with `cluster`");
        cluster.execute(&words);
        result.push_str(&std::mem::take(&mut cluster.out));
    }
    result
}

fn scripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/raft_scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/raft_scenarios exists")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "txt"))
        .collect();
    files.sort();
    files
}

#[test]
fn scenarios_match_golden_output() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let files = scripts();
    assert!(files.len() >= 11, "expected the scenario scripts");
    for file in files {
        let expected = std::fs::read_to_string(&file).expect("readable script");
        assert!(
            expected.starts_with('#'),
            "{} must start with a goal comment",
            file.display()
        );
        let actual = run_script(&expected);
        if actual == expected {
            continue;
        }
        if update {
            std::fs::write(&file, &actual).expect("write golden file");
            continue;
        }
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        let got = actual.lines().nth(line).unwrap_or("<end>");
        let want = expected.lines().nth(line).unwrap_or("<end>");
        failures.push(format!(
            "{}: line {}:\n  expected: {want}\n  actual:   {got}",
            file.display(),
            line + 1
        ));
    }
    assert!(
        failures.is_empty(),
        "scenario output differs (UPDATE_GOLDEN=1 cargo test --test it raft_scenarios:: regenerates):\n{}",
        failures.join("\n")
    );
}
