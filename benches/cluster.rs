//! End-to-end cluster benchmarks (criterion): a 3-node cluster of real `kvnode` processes
//! (the release build cargo makes for `cargo bench`) on loopback, each with its WAL on disk
//! in a temporary directory, every write fsync'd on a majority before it is acknowledged.
//!
//! - `put/1-client`: latency of one 100 B put with 16 B keys, one client at a time;
//! - `put/64-clients`: 64 closed-loop clients; criterion's time per element is the inverse
//!   of the throughput (the report's `thrpt` line is puts/s);
//! - `read/64-clients/linearizable` and `read/64-clients/stale`: reads of keys written
//!   before, through ReadIndex or from the leader's local state.
//!
//! Why real processes rather than in-process nodes: the load generator, three nodes'
//! runtimes and their drivers would otherwise share one tokio runtime and one allocator,
//! which is not how the store runs, and a node's HTTP stack, process scheduling and
//! fdatasync are exactly what the numbers are about. The load generator is
//! [`kvstore::bench`], the engine of `kvctl bench`, on a single-threaded runtime (like
//! `kvctl`).
//!
//! Run: `cargo bench --bench cluster` (about two minutes). `CLUSTER_BENCH_DIR` picks the
//! disk (default: the system temp directory).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kvstore::bench::{BenchArgs, ReadConsistency};

/// How long the cluster may take to elect a leader.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// Keys the read benchmarks draw from, all written before they run.
const READ_KEYS: u64 = 1000;

struct Cluster {
    children: Vec<Child>,
    seeds: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

fn start_cluster() -> Cluster {
    let dir = match std::env::var_os("CLUSTER_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(PathBuf::from(base)),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let ids = ["n1", "n2", "n3"];
    let ports: Vec<(u16, u16)> = ids.iter().map(|_| (free_port(), free_port())).collect();
    // The three nodes share this machine: a third of its cores each, as the scripts do.
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let workers = cores.div_ceil(ids.len()).to_string();
    let mut children = Vec::new();
    for (index, id) in ids.iter().enumerate() {
        let peers: Vec<String> = ids
            .iter()
            .zip(&ports)
            .filter(|(other, _)| *other != id)
            .map(|(other, (_, raft))| format!("{other}=http://127.0.0.1:{raft}"))
            .collect();
        let (client, raft) = ports[index];
        let child = Command::new(env!("CARGO_BIN_EXE_kvnode"))
            .args(["--id", id])
            .arg("--addr")
            .arg(format!("127.0.0.1:{client}"))
            .arg("--raft-addr")
            .arg(format!("127.0.0.1:{raft}"))
            .arg("--peers")
            .arg(peers.join(","))
            .arg("--data")
            .arg(dir.path().join(id))
            .args(["--worker-threads", &workers])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kvnode");
        children.push(child);
    }
    let seeds = ports
        .iter()
        .map(|(client, _)| format!("http://127.0.0.1:{client}"))
        .collect();
    Cluster {
        children,
        seeds,
        _dir: dir,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `requests` requests with the given shape; returns the wall time, panicking on
/// any error (a benchmark of a failing cluster means nothing).
fn load(runtime: &tokio::runtime::Runtime, seeds: &[String], args: BenchArgs) -> Duration {
    let report = runtime
        .block_on(kvstore::bench::run(seeds, &args, false))
        .expect("bench run");
    assert_eq!(report.errors_total(), 0, "errors: {:?}", report.errors);
    report.elapsed
}

fn args(clients: usize, requests: u64, read_ratio: f64, keys: u64) -> BenchArgs {
    BenchArgs {
        clients,
        requests: Some(requests),
        read_ratio,
        keys,
        ..BenchArgs::default()
    }
}

fn wait_for_leader(runtime: &tokio::runtime::Runtime, seeds: &[String]) {
    let deadline = Instant::now() + STARTUP_DEADLINE;
    loop {
        let report = runtime.block_on(kvstore::bench::run(seeds, &args(1, 1, 0.0, 1), false));
        if report.is_ok_and(|report| report.errors_total() == 0) {
            return;
        }
        assert!(Instant::now() < deadline, "the cluster elected no leader");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cluster_benches(criterion: &mut Criterion) {
    let cluster = start_cluster();
    let runtime = runtime();
    let seeds = cluster.seeds.clone();
    wait_for_leader(&runtime, &seeds);
    // Every key the reads draw from exists.
    load(&runtime, &seeds, args(16, READ_KEYS * 4, 0.0, READ_KEYS));

    let mut group = criterion.benchmark_group("put");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1-client", |bencher| {
        bencher.iter_custom(|iters| load(&runtime, &seeds, args(1, iters, 0.0, 10_000)))
    });
    group.bench_function("64-clients", |bencher| {
        bencher.iter_custom(|iters| load(&runtime, &seeds, args(64, iters, 0.0, 10_000)))
    });
    group.finish();

    let mut group = criterion.benchmark_group("read/64-clients");
    group.throughput(Throughput::Elements(1));
    for (name, consistency) in [
        ("linearizable", ReadConsistency::Linearizable),
        ("stale", ReadConsistency::Stale),
    ] {
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iters| {
                let args = BenchArgs {
                    consistency,
                    ..args(64, iters, 1.0, READ_KEYS)
                };
                load(&runtime, &seeds, args)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    targets = cluster_benches
}
criterion_main!(benches);
