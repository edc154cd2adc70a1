//! Proposals per second through a 3-node cluster of raft cores wired together in memory:
//! no disk, no network, persistence acknowledged at once. This is the core's own cost per
//! proposal (log append, batching into appends, acks, quorum commit, apply hand-off).
//!
//! `cargo bench --bench raft` (measured on the shared 2-core dev machine: about 0.3 M
//! proposals/s when each proposal makes its own round trip, about 2 M/s when 16 proposals
//! share each ready; 100-byte commands, default config).
//!
//! Batch sizes: 1 (one proposal per ready: the latency-bound cost of a full round of
//! append, ack, commit and commit notice), 16 and 256 (proposals arriving between two
//! readies share one append per follower).

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kvstore::raft::{Config, Message, Raft, Restore, Role};

struct Cluster {
    nodes: Vec<Raft>,
    network: VecDeque<Message>,
    applied: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let voters: Vec<String> = (1..=3).map(|i| format!("n{i}")).collect();
        let nodes = voters
            .iter()
            .map(|id| {
                let config = Config {
                    id: id.clone(),
                    voters: voters.clone(),
                    ..Config::default()
                };
                Raft::new(config, Restore::default()).expect("valid config")
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            network: VecDeque::new(),
            applied: 0,
        };
        while cluster.nodes[0].role() != Role::Leader {
            cluster.nodes[0].tick();
            cluster.pump();
        }
        cluster
    }

    /// Handle every ready and deliver every message until the cluster is quiet.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for (node, raft) in self.nodes.iter_mut().enumerate() {
                while raft.has_ready() {
                    moved = true;
                    let ready = raft.ready();
                    self.network.extend(ready.messages);
                    self.network.extend(ready.persisted_messages);
                    if let Some(last) = ready.entries.last() {
                        raft.persisted(last.index, last.term);
                    }
                    if let Some(last) = ready.committed_entries.last() {
                        raft.applied(last.index);
                        if node == 0 {
                            self.applied = last.index;
                        }
                    }
                }
            }
            while let Some(message) = self.network.pop_front() {
                moved = true;
                let to = message.to[1..].parse::<usize>().expect("n<number>") - 1;
                self.nodes[to].step(message).expect("valid message");
            }
            if !moved {
                return;
            }
        }
    }

    /// Propose `count` commands, then run until the leader has applied them all.
    fn propose_and_commit(&mut self, count: usize, command: &[u8]) {
        let mut last = 0;
        for _ in 0..count {
            last = self.nodes[0].propose(command.to_vec()).expect("leader").0;
        }
        self.pump();
        assert!(self.applied >= last, "proposals did not commit");
    }
}

fn proposals(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_3_nodes");
    let command = vec![7u8; 100];
    for batch in [1usize, 16, 256] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(
            BenchmarkId::new("proposals_100_bytes", batch),
            &batch,
            |b, &batch| {
                let mut cluster = Cluster::new();
                b.iter(|| {
                    cluster.propose_and_commit(batch, black_box(&command));
                    // Keep the in-memory log bounded across iterations.
                    let leader = &mut cluster.nodes[0];
                    if leader.status().last_index - leader.status().first_index > 100_000 {
                        cluster = Cluster::new();
                    }
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, proposals);
criterion_main!(benches);
