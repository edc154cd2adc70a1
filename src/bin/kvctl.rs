//! `kvctl`: the kvstore command-line client.
//!
//! Finds the leader from `--seeds`, follows `not_leader` hints and retries while an
//! election runs. Readable output by default, `--json` for scripts; on failure a non-zero
//! exit status and one line on stderr.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kvstore::client::{Client, ClientError, Consistency, Options};
use kvstore::store::Condition;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(name = "kvctl", version, about = "kvstore command-line client")]
struct Cli {
    /// Client URLs of (some of) the cluster's nodes, comma-separated.
    #[arg(
        long,
        global = true,
        env = "KVCTL_SEEDS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083"
    )]
    seeds: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Give up after this many seconds (retries included).
    #[arg(long, default_value_t = 10.0, global = true)]
    timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a key's value.
    Get {
        /// The key.
        key: String,
        /// Read the contacted node's local state (may be stale).
        #[arg(long)]
        stale: bool,
    },
    /// Store a value ("-" reads it from stdin).
    Put {
        /// The key.
        key: String,
        /// The value, or "-" for stdin.
        value: String,
        /// Only if the key's current revision is this.
        #[arg(long, conflicts_with = "if_absent")]
        if_match: Option<u64>,
        /// Only if the key does not exist.
        #[arg(long)]
        if_absent: bool,
    },
    /// Delete a key.
    #[command(alias = "delete")]
    Del {
        /// The key.
        key: String,
        /// Only if the key's current revision is this.
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// List keys with a prefix, in order.
    List {
        /// The prefix (empty: all keys).
        #[arg(default_value = "")]
        prefix: String,
        /// At most this many keys.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Read the contacted node's local state (may be stale).
        #[arg(long)]
        stale: bool,
    },
    /// Every seed's role, term, commit and applied index.
    Status,
    /// Ask nodes to take a snapshot now (and compact their WAL).
    Snapshot {
        /// Only this node (a client URL); default: every seed.
        #[arg(long)]
        node: Option<String>,
    },
    /// The current leader.
    Leader,
    /// Load the cluster and report throughput and latency (see `kvstore::bench`).
    Bench(kvstore::bench::BenchArgs),
}

/// mimalloc instead of glibc malloc, as in `kvnode`: `kvctl bench` shares the machine with
/// the servers it measures, and glibc's `malloc`/`free` were about 12% of its user-space
/// instructions per request. With mimalloc a request costs 18.2k instructions instead of
/// 18.9k (callgrind, 64 clients putting against the do-nothing server, the difference
/// between 20,000 and 60,000 requests).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.seeds.is_empty() || !cli.timeout.is_finite() || cli.timeout <= 0.0 {
        eprintln!("kvctl: error: need at least one seed and a positive --timeout");
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kvctl: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("kvctl: error: {reason}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<String, String> {
    let timeout = Duration::from_secs_f64(cli.timeout);
    let options = Options {
        timeout,
        request_timeout: timeout,
        ..Options::default()
    };
    let client = Client::new(cli.seeds.clone(), options);
    let text = |error: ClientError| error.to_string();
    match &cli.command {
        Command::Get { key, stale } => {
            let found = client.get(key, consistency(*stale)).await.map_err(text)?;
            let versioned = found.ok_or_else(|| format!("key {key:?} not found"))?;
            if cli.json {
                let value = String::from_utf8_lossy(&versioned.value);
                return Ok(line(
                    json!({"key": key, "value": value, "revision": versioned.revision}),
                ));
            }
            std::io::stdout()
                .write_all(&versioned.value)
                .map_err(|error| error.to_string())?;
            Ok("\n".into())
        }
        Command::Put {
            key,
            value,
            if_match,
            if_absent,
        } => {
            let value = read_value(value)?;
            let condition = match (if_match, if_absent) {
                (Some(revision), _) => Condition::Revision(*revision),
                (None, true) => Condition::Absent,
                (None, false) => Condition::None,
            };
            let revision = client.put(key, &value, condition).await.map_err(text)?;
            Ok(output(
                cli.json,
                json!({"key": key, "revision": revision}),
                format!("OK revision {revision}\n"),
            ))
        }
        Command::Del { key, if_match } => {
            let condition = if_match.map_or(Condition::None, Condition::Revision);
            let existed = client.delete(key, condition).await.map_err(text)?;
            let human = if existed {
                "deleted\n"
            } else {
                "not found (nothing deleted)\n"
            };
            Ok(output(
                cli.json,
                json!({"key": key, "deleted": existed}),
                human.into(),
            ))
        }
        Command::List {
            prefix,
            limit,
            stale,
        } => {
            let keys = client
                .list(prefix, *limit, consistency(*stale))
                .await
                .map_err(text)?;
            let human: String = keys.iter().map(|key| format!("{key}\n")).collect();
            Ok(output(cli.json, json!({"keys": keys}), human))
        }
        Command::Status => status(&client, cli.json).await,
        Command::Snapshot { node } => {
            let targets = node
                .clone()
                .map_or_else(|| client.seeds().to_vec(), |node| vec![node]);
            snapshot(&client, &targets, cli.json).await
        }
        Command::Bench(args) => {
            let report = kvstore::bench::run(&cli.seeds, args, !cli.json).await?;
            Ok(output(cli.json, report.json(), report.text()))
        }
        Command::Leader => {
            let (id, url) = client.leader().await.map_err(text)?;
            Ok(output(
                cli.json,
                json!({"leaderId": id, "leader": url}),
                format!("{id} {url}\n"),
            ))
        }
    }
}

fn consistency(stale: bool) -> Consistency {
    if stale {
        Consistency::Stale
    } else {
        Consistency::Linearizable
    }
}

fn read_value(value: &str) -> Result<Vec<u8>, String> {
    if value != "-" {
        return Ok(value.as_bytes().to_vec());
    }
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|error| format!("reading stdin: {error}"))?;
    Ok(bytes)
}

fn line(value: Value) -> String {
    format!("{value}\n")
}

fn output(json: bool, value: Value, human: String) -> String {
    if json { line(value) } else { human }
}

/// Asks each target (by client URL) to snapshot, through the admin route on its raft port.
async fn snapshot(client: &Client, targets: &[String], json: bool) -> Result<String, String> {
    let mut rows = Vec::new();
    let mut human = String::new();
    for target in targets {
        let status = client
            .json_at(target, "/raft/status")
            .await
            .map_err(|error| error.to_string())?;
        let id = status["id"].as_str().unwrap_or("?").to_string();
        let raft_url = status["raftUrl"]
            .as_str()
            .ok_or_else(|| format!("{target} does not report its raft URL"))?;
        let taken = client
            .post_json_at(raft_url, "/admin/snapshot")
            .await
            .map_err(|error| format!("{id}: {error}"))?;
        human.push_str(&format!(
            "{id}: snapshot at index {} ({} keys, {} bytes)\n",
            taken["index"], taken["keys"], taken["bytes"]
        ));
        rows.push(json!({"id": id, "snapshot": taken}));
    }
    Ok(output(json, Value::Array(rows), human))
}

/// Queries every seed's `/raft/status` and prints a table (or a JSON array).
async fn status(client: &Client, json: bool) -> Result<String, String> {
    let mut rows = Vec::new();
    let mut reachable = 0;
    for seed in client.seeds() {
        match client.json_at(seed, "/raft/status").await {
            Ok(status) => {
                reachable += 1;
                rows.push(json!({"url": seed, "status": status}));
            }
            Err(error) => rows.push(json!({"url": seed, "error": error.to_string()})),
        }
    }
    if reachable == 0 {
        return Err("no seed answered".into());
    }
    if json {
        return Ok(line(Value::Array(rows)));
    }
    let mut table = format!(
        "{:<8} {:<10} {:>6} {:<8} {:>10} {:>10} {:>10}  {}\n",
        "NODE", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST", "URL"
    );
    for row in &rows {
        let url = row["url"].as_str().unwrap_or("");
        let Some(status) = row.get("status") else {
            table.push_str(&format!(
                "{:<8} {:<10} {:>6} {:<8} {:>10} {:>10} {:>10}  {url}\n",
                "?", "unreachable", "-", "-", "-", "-", "-"
            ));
            continue;
        };
        let field = |name: &str| match &status[name] {
            Value::Null => "-".to_string(),
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        table.push_str(&format!(
            "{:<8} {:<10} {:>6} {:<8} {:>10} {:>10} {:>10}  {url}\n",
            field("id"),
            field("state"),
            field("term"),
            field("leaderId"),
            field("commitIndex"),
            field("lastApplied"),
            field("lastLogIndex"),
        ));
    }
    Ok(table)
}
