//! `kvtorture`: a torture run against a real cluster of `kvnode` processes. See the module
//! doc of `kvstore::torture` for what a run does and checks.
//!
//! ```text
//! kvtorture --nodes 3 --seed 42 --duration 60 --clients 4 --keys 4 --faults kill,pause,partition
//! kvtorture --nodes 5 --seed 7 --runs 10 --network netns   # real partitions, as root
//! ```
//!
//! Exit status: 0 = every run passed, 1 = a violation, a lost write or a divergence (the
//! seed and the smallest failing window are printed), 2 = usage error, 3 = the harness
//! could not run (a node that would not start, ...).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kvstore::torture::{self, Config, Fault, Network};

/// Torture a kvstore cluster: faults under load, histories checked for linearizability.
#[derive(Parser)]
#[command(name = "kvtorture", version)]
struct Cli {
    /// Cluster size (3 or 5).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// First seed (nemesis schedule and client choices).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many runs, with seeds seed, seed+1, ...
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// Seconds of load and faults per run.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Keys shared by the clients.
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Faults to inject, comma-separated: kill, pause, partition, crash (empty: none).
    #[arg(long, default_value = "kill,pause,partition,crash")]
    faults: String,
    /// The kvnode binary (default: next to this one).
    #[arg(long)]
    kvnode: Option<PathBuf>,
    /// Checker steps per key before it answers "unknown".
    #[arg(long, default_value_t = torture::checker::STEPS_MAX_DEFAULT)]
    steps_max: u64,
    /// Print nemesis actions as they happen.
    #[arg(long, short)]
    verbose: bool,
    /// How partitions are made: `switch` (the transport's test fault switch, on loopback)
    /// or `netns` (one network namespace per node and iptables DROP rules; needs root).
    #[arg(long, default_value = "switch")]
    network: String,
    /// Self-check of the harness: read with `?consistency=stale`; such runs should fail.
    #[arg(long)]
    stale_reads: bool,
    /// Passed to every node: snapshot every N entries (small values make snapshots,
    /// compactions and transfers to lagging followers part of the run).
    #[arg(long)]
    snapshot_entries: Option<u64>,
    /// Passed to every node: log entries kept behind a snapshot when compacting.
    #[arg(long)]
    snapshot_catch_up_entries: Option<u64>,
    /// Passed to every node: snapshot files kept (1 is the tightest retention).
    #[arg(long)]
    snapshots_kept: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config(&cli) {
        Ok(config) => config,
        Err(reason) => {
            eprintln!("kvtorture: {reason}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kvtorture: cannot start the async runtime: {error}");
            return ExitCode::from(3);
        }
    };
    let mut failed = false;
    let mut totals = Totals::default();
    for run in 0..cli.runs {
        let config = Config {
            seed: cli.seed + run,
            ..config.clone()
        };
        match runtime.block_on(torture::run(&config)) {
            Ok(summary) => {
                print!("{}", summary.render());
                totals.add(&summary);
                failed |= !summary.passed();
            }
            Err(problem) => {
                eprintln!("kvtorture: seed {}: harness error: {problem}", config.seed);
                return ExitCode::from(3);
            }
        }
    }
    if cli.runs > 1 {
        println!("{}", totals.render(cli.runs));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn config(cli: &Cli) -> Result<Config, String> {
    if !(1..=7).contains(&cli.nodes) {
        return Err(format!("--nodes {} (use 3 or 5)", cli.nodes));
    }
    if cli.clients == 0 || cli.keys == 0 {
        return Err("--clients and --keys must be at least 1".into());
    }
    if cli.snapshot_entries == Some(0) {
        return Err("--snapshot-entries must be at least 1".into());
    }
    if cli.snapshots_kept == Some(0) {
        return Err("--snapshots-kept must be at least 1".into());
    }
    let faults = cli
        .faults
        .split(',')
        .filter(|name| !name.trim().is_empty())
        .map(Fault::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let kvnode = match &cli.kvnode {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|error| format!("cannot find kvnode: {error}"))?
            .with_file_name("kvnode"),
    };
    if !kvnode.exists() {
        return Err(format!(
            "no kvnode binary at {} (build it, or pass --kvnode)",
            kvnode.display()
        ));
    }
    let network = match cli.network.as_str() {
        "switch" => Network::FaultSwitch,
        "netns" => Network::Namespaces,
        other => return Err(format!("--network {other:?} (use switch or netns)")),
    };
    Ok(Config {
        network,
        stale_reads: cli.stale_reads,
        snapshot_entries: cli.snapshot_entries,
        snapshot_catch_up_entries: cli.snapshot_catch_up_entries,
        snapshots_kept: cli.snapshots_kept,
        clients: cli.clients,
        keys: cli.keys,
        faults,
        steps_max: cli.steps_max,
        verbose: cli.verbose,
        ..Config::new(
            kvnode,
            cli.nodes,
            cli.seed,
            Duration::from_secs(cli.duration),
        )
    })
}

/// Sums over several runs.
#[derive(Default)]
struct Totals {
    passed: u64,
    operations: u64,
    indeterminate: u64,
    kills: u64,
    pauses: u64,
    partitions: u64,
    crashes: u64,
    snapshots_taken: u64,
    snapshots_installed: u64,
    violations: u64,
    unknown: u64,
    lost: u64,
}

impl Totals {
    fn add(&mut self, summary: &torture::Summary) {
        self.passed += u64::from(summary.passed());
        self.operations += summary.report.operations as u64;
        self.indeterminate += summary.indeterminate_operations;
        self.kills += summary.kills;
        self.pauses += summary.pauses;
        self.partitions += summary.partitions;
        self.crashes += summary.crashes;
        self.snapshots_taken += summary.snapshots.taken;
        self.snapshots_installed += summary.snapshots.installed;
        self.violations += summary.report.violations.len() as u64;
        self.unknown += summary.report.unknown_keys.len() as u64;
        self.lost += summary.lost_writes.len() as u64;
    }

    fn render(&self, runs: u64) -> String {
        format!(
            "TOTAL: {runs} runs, {} passed; {} operations checked ({} indeterminate); \
             {} node kills ({} multi-node crashes), {} pauses, {} partitions; \
             {} snapshots taken, {} installed from a leader; {} linearizability violations, \
             {} unknown keys, {} acknowledged writes lost",
            self.passed,
            self.operations,
            self.indeterminate,
            self.kills,
            self.crashes,
            self.pauses,
            self.partitions,
            self.snapshots_taken,
            self.snapshots_installed,
            self.violations,
            self.unknown,
            self.lost
        )
    }
}
