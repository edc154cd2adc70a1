//! `kvnode`'s command line and environment (ARCHITECTURE.md, "Command line").
//!
//! Every flag can also come from an environment variable; the flag wins. `--peers` takes
//! either `ID=URL` pairs (`n2=http://127.0.0.1:9082,n3=http://127.0.0.1:9083`) or bare raft
//! URLs with their ids aligned in `PEER_IDS` (`PEER_IDS=n2,n3`). With no peers the node is a
//! single-node cluster. Bad configuration is an error with one clear sentence.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::api::Limits;
use crate::node::{NodeConfig, SnapshotPolicy};

/// Command-line arguments of `kvnode`.
#[derive(Debug, Parser)]
#[command(name = "kvnode", version, about = "A kvstore cluster node")]
pub struct Args {
    /// This node's id, unique in the cluster (e.g. n1).
    #[arg(long, env = "NODE_ID")]
    pub id: String,
    /// Client API listen address (default: 127.0.0.1:8080, or 0.0.0.0:$KVSTORE_PORT/$PORT).
    #[arg(long, env = "KVSTORE_ADDR")]
    pub addr: Option<String>,
    /// Raft listen address (default: the client address with port + 1000, or $RAFT_PORT).
    #[arg(long, env = "RAFT_ADDR")]
    pub raft_addr: Option<String>,
    /// Client URL other nodes hand to clients (default: http://ADDR).
    #[arg(long, env = "ADVERTISE_URL")]
    pub advertise: Option<String>,
    /// Raft URL of this node, for status and `kvctl snapshot` (default: http://RAFT_ADDR, or,
    /// when RAFT_ADDR is a wildcard like 0.0.0.0, the --advertise host with the raft port).
    #[arg(long, env = "RAFT_ADVERTISE_URL")]
    pub raft_advertise: Option<String>,
    /// Other members: `ID=RAFT_URL,...`, or bare raft URLs with ids in PEER_IDS.
    #[arg(long, env = "PEERS", default_value = "")]
    pub peers: String,
    /// Ids for bare URLs in --peers, in the same order.
    #[arg(long, env = "PEER_IDS", default_value = "")]
    pub peer_ids: String,
    /// Data directory (default: ./data/ID).
    #[arg(long, env = "KVSTORE_DATA")]
    pub data: Option<PathBuf>,
    /// Cluster id; all members must agree (default: derived from the member ids).
    #[arg(long, env = "CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Length of one raft tick, in milliseconds.
    #[arg(long, env = "TICK_MS", default_value_t = 50)]
    pub tick_ms: u64,
    /// Heartbeat interval, in milliseconds (a multiple of the tick).
    #[arg(long, env = "HEARTBEAT_MS", default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Election timeout, in milliseconds (randomized up to twice this).
    #[arg(long, env = "ELECTION_TIMEOUT_MS", default_value_t = 1000)]
    pub election_timeout_ms: u64,
    /// WAL segment size, in bytes.
    #[arg(long, env = "SEGMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub segment_bytes: u64,
    /// Take a snapshot when the applied index is this many entries past the last one.
    #[arg(long, env = "SNAPSHOT_ENTRIES", default_value_t = SnapshotPolicy::default().entries)]
    pub snapshot_entries: u64,
    /// Or when the commands applied since the last snapshot add up to this many bytes.
    #[arg(long, env = "SNAPSHOT_BYTES", default_value_t = SnapshotPolicy::default().bytes)]
    pub snapshot_bytes: u64,
    /// Log entries kept behind a snapshot, so a follower slightly behind catches up from
    /// the log rather than receiving the whole snapshot.
    #[arg(long, env = "SNAPSHOT_CATCH_UP_ENTRIES", default_value_t = SnapshotPolicy::default().catch_up_entries)]
    pub snapshot_catch_up_entries: u64,
    /// How many snapshot files to keep.
    #[arg(long, env = "SNAPSHOTS_KEPT", default_value_t = crate::snapshot::SNAPSHOTS_KEPT_DEFAULT)]
    pub snapshots_kept: usize,
    /// Longest key, in bytes.
    #[arg(long, env = "KEY_BYTES_MAX", default_value_t = 4 * 1024)]
    pub key_bytes_max: usize,
    /// Largest value, in bytes.
    #[arg(long, env = "VALUE_BYTES_MAX", default_value_t = 1024 * 1024)]
    pub value_bytes_max: usize,
    /// How long a request may wait for commit or a read index, in milliseconds.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// Longest wait for a request's headers, idle time on a keep-alive connection included,
    /// in milliseconds.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_MS", default_value_t = 30_000)]
    pub http_header_timeout_ms: u64,
    /// Most open HTTP connections per port (lowered to fit the descriptor limit).
    #[arg(long, env = "HTTP_CONNECTIONS_MAX", default_value_t = 4096)]
    pub http_connections_max: usize,
    /// Threads that serve HTTP and run the driver (default: one per CPU). Nodes that share
    /// a machine should split its cores between them: three nodes on two cores do best
    /// with 1 each, since every thread more costs wake-ups across CPUs.
    #[arg(long, env = "WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Serve the test-only fault switch `POST /test/partition` on the raft port. Never in
    /// production: anyone who can reach the raft port could partition the node.
    #[arg(long, env = "KVSTORE_TEST_FAULTS", hide = true)]
    pub test_faults: bool,
}

/// Everything `kvnode` needs, resolved and checked.
#[derive(Debug)]
pub struct Resolved {
    /// The node's configuration.
    pub node: NodeConfig,
    /// Client API listen address.
    pub client_addr: SocketAddr,
    /// Raft listen address.
    pub raft_addr: SocketAddr,
    /// Client API limits.
    pub limits: Limits,
    /// Per-connection limits of both ports.
    pub serve: crate::server::ServeLimits,
    /// Async runtime worker threads (None: one per CPU).
    pub worker_threads: Option<usize>,
}

/// Largest `--key-bytes-max`.
pub const KEY_BYTES_LIMIT: usize = 1024 * 1024;
/// Largest `--value-bytes-max`. An append carries up to 1 MiB of entries plus one, and a
/// frame of the raft transport at most 64 MiB; 16 MiB values leave a wide margin.
pub const VALUE_BYTES_LIMIT: usize = 16 * 1024 * 1024;

/// Resolves arguments (and the few environment variables that have no flag) into a
/// configuration, or one sentence saying what is wrong.
pub fn resolve(args: &Args, env: impl Fn(&str) -> Option<String>) -> Result<Resolved, String> {
    check_id(&args.id, "--id")?;
    let client_addr = client_addr(args, &env)?;
    let raft_addr = raft_addr(args, client_addr, &env)?;
    if raft_addr == client_addr {
        return Err(format!(
            "client and raft addresses are both {client_addr}; they must differ"
        ));
    }
    let peers = parse_peers(&args.peers, &args.peer_ids)?;
    if peers.contains_key(&args.id) {
        return Err(format!(
            "--peers lists this node's own id {:?}; list only the other members",
            args.id
        ));
    }
    let timing = timing(args)?;
    let client_url = args
        .advertise
        .clone()
        .unwrap_or_else(|| default_url(client_addr));
    check_url(&client_url, "--advertise")?;
    let raft_url = args
        .raft_advertise
        .clone()
        .unwrap_or_else(|| default_raft_url(raft_addr, args.advertise.as_deref()));
    check_url(&raft_url, "--raft-advertise")?;
    let segment_bytes = crate::wal::SEGMENT_BYTES_MIN..=crate::wal::SEGMENT_BYTES_LIMIT;
    if !segment_bytes.contains(&args.segment_bytes) {
        return Err(format!(
            "--segment-bytes must be {}..={} (got {})",
            segment_bytes.start(),
            segment_bytes.end(),
            args.segment_bytes
        ));
    }
    if args.request_timeout_ms == 0 {
        return Err("--request-timeout-ms must be at least 1".into());
    }
    if args.snapshot_entries == 0 || args.snapshot_bytes == 0 || args.snapshots_kept == 0 {
        return Err(
            "--snapshot-entries, --snapshot-bytes and --snapshots-kept must be at least 1".into(),
        );
    }
    if args.key_bytes_max == 0
        || args.value_bytes_max == 0
        || args.key_bytes_max > KEY_BYTES_LIMIT
        || args.value_bytes_max > VALUE_BYTES_LIMIT
    {
        return Err(format!(
            "--key-bytes-max must be 1..={KEY_BYTES_LIMIT} and --value-bytes-max \
             1..={VALUE_BYTES_LIMIT}: a larger entry would not fit the raft transport's frames"
        ));
    }
    let mut voters: Vec<&String> = peers.keys().chain(std::iter::once(&args.id)).collect();
    voters.sort();
    let cluster_id = args
        .cluster_id
        .clone()
        .unwrap_or_else(|| derive_cluster_id(&voters));
    check_header_text(&cluster_id, "--cluster-id")?;
    check_header_text(&client_url, "--advertise")?;
    let node = NodeConfig {
        id: args.id.clone(),
        cluster_id,
        peers,
        client_url,
        raft_url,
        data_dir: args
            .data
            .clone()
            .unwrap_or_else(|| PathBuf::from("data").join(&args.id)),
        tick: timing.0,
        heartbeat_interval_ticks: timing.1,
        election_timeout_ticks: timing.2,
        segment_bytes_max: args.segment_bytes,
        seed: seed_of(&args.id),
        snapshot_policy: SnapshotPolicy {
            entries: args.snapshot_entries,
            bytes: args.snapshot_bytes,
            catch_up_entries: args.snapshot_catch_up_entries,
        },
        snapshots_kept: args.snapshots_kept,
    };
    let limits = Limits {
        key_bytes_max: args.key_bytes_max,
        value_bytes_max: args.value_bytes_max,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        ..Limits::default()
    };
    if args.http_header_timeout_ms == 0 || args.http_connections_max == 0 {
        return Err(
            "--http-header-timeout-ms and --http-connections-max must be at least 1".into(),
        );
    }
    let serve = crate::server::ServeLimits {
        header_read_timeout: Duration::from_millis(args.http_header_timeout_ms),
        connections_max: args.http_connections_max,
    };
    if args.worker_threads == Some(0) {
        return Err("--worker-threads must be at least 1".into());
    }
    Ok(Resolved {
        node,
        client_addr,
        raft_addr,
        limits,
        serve,
        worker_threads: args.worker_threads,
    })
}

fn check_id(id: &str, what: &str) -> Result<(), String> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|byte| {
            byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' || byte == b'.'
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{what} {id:?} is not a valid node id (1-64 of A-Z a-z 0-9 - _ .)"
        ))
    }
}

/// The cluster id and client URL travel in the peer stream's handshake headers.
fn check_header_text(text: &str, what: &str) -> Result<(), String> {
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!(
            "{what} {text:?} must be printable ASCII without spaces"
        ))
    }
}

fn check_url(url: &str, what: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{what} {url:?} must start with http://"))?;
    let host_port = rest.split('/').next().unwrap_or("");
    match host_port.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("{what} {url:?} must be http://HOST:PORT")),
    }
}

fn parse_addr(text: &str, what: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("{what} {text:?} is not an address like 127.0.0.1:8080"))
}

fn client_addr(args: &Args, env: &impl Fn(&str) -> Option<String>) -> Result<SocketAddr, String> {
    if let Some(addr) = &args.addr {
        return parse_addr(addr, "--addr");
    }
    match env("KVSTORE_PORT").or_else(|| env("PORT")) {
        Some(port) => {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("KVSTORE_PORT/PORT {port:?} is not a port"))?;
            Ok(SocketAddr::from(([0, 0, 0, 0], port)))
        }
        None => Ok(SocketAddr::from(([127, 0, 0, 1], 8080))),
    }
}

fn raft_addr(
    args: &Args,
    client: SocketAddr,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<SocketAddr, String> {
    if let Some(addr) = &args.raft_addr {
        return parse_addr(addr, "--raft-addr");
    }
    let port = match env("RAFT_PORT") {
        Some(port) => port
            .parse()
            .map_err(|_| format!("RAFT_PORT {port:?} is not a port"))?,
        None => client.port().checked_add(1000).ok_or_else(|| {
            format!(
                "client port {} + 1000 is not a port; set --raft-addr",
                client.port()
            )
        })?,
    };
    Ok(SocketAddr::new(client.ip(), port))
}

/// The raft URL when none is given: a wildcard listen address says nothing about how others
/// reach this node, but an advertised client URL does: its host, with the raft port.
fn default_raft_url(raft_addr: SocketAddr, advertise: Option<&str>) -> String {
    let host = advertise
        .filter(|_| raft_addr.ip().is_unspecified())
        .and_then(|url| reqwest::Url::parse(url).ok())
        // `host_str` keeps the brackets of an IPv6 host, so it can take a port as is.
        .and_then(|url| url.host_str().map(str::to_owned));
    match host {
        Some(host) => format!("http://{host}:{}", raft_addr.port()),
        None => default_url(raft_addr),
    }
}

fn default_url(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("http://127.0.0.1:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

/// Parses `--peers` in either form (see the module doc).
pub fn parse_peers(peers: &str, peer_ids: &str) -> Result<BTreeMap<String, String>, String> {
    let items: Vec<&str> = peers
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect();
    let ids: Vec<&str> = peer_ids
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect();
    let bare = items.iter().all(|item| !item.contains('='));
    let pairs: Vec<(String, String)> = if bare && !items.is_empty() {
        if ids.len() != items.len() {
            return Err(format!(
                "--peers has {} bare URLs but PEER_IDS has {} ids; give ID=URL pairs or align PEER_IDS",
                items.len(),
                ids.len()
            ));
        }
        ids.iter()
            .zip(&items)
            .map(|(id, url)| (id.to_string(), url.to_string()))
            .collect()
    } else {
        items
            .iter()
            .map(|item| {
                let (id, url) = item
                    .split_once('=')
                    .ok_or_else(|| format!("invalid peer {item:?}: expected ID=URL"))?;
                Ok((id.trim().to_string(), url.trim().to_string()))
            })
            .collect::<Result<_, String>>()?
    };
    let mut map = BTreeMap::new();
    for (id, url) in pairs {
        check_id(&id, "peer id")?;
        check_url(&url, &format!("peer {id}"))?;
        if map
            .insert(id.clone(), url.trim_end_matches('/').to_string())
            .is_some()
        {
            return Err(format!("peer id {id:?} appears twice in --peers"));
        }
    }
    Ok(map)
}

/// (tick, heartbeat ticks, election ticks) from the millisecond flags.
fn timing(args: &Args) -> Result<(Duration, u64, u64), String> {
    if args.tick_ms == 0 {
        return Err("--tick-ms must be at least 1".into());
    }
    let heartbeat_ticks = (args.heartbeat_ms / args.tick_ms).max(1);
    let election_ticks = args.election_timeout_ms / args.tick_ms;
    if election_ticks <= heartbeat_ticks * 2 {
        return Err(format!(
            "--election-timeout-ms {} must be more than twice --heartbeat-ms {} (and a multiple of --tick-ms {})",
            args.election_timeout_ms, args.heartbeat_ms, args.tick_ms
        ));
    }
    Ok((
        Duration::from_millis(args.tick_ms),
        heartbeat_ticks,
        election_ticks,
    ))
}

/// A stable cluster id from the sorted member ids (FNV-1a), so that nodes configured with
/// the same members agree without extra flags.
fn derive_cluster_id(voters: &[&String]) -> String {
    let joined = voters
        .iter()
        .map(|voter| voter.as_str())
        .collect::<Vec<_>>()
        .join(",");
    format!("kv-{:016x}", fnv1a(joined.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Per-node seed for election timeout randomness: different per node (so timeouts differ)
/// and per start (so two restarts do not collide in lockstep).
fn seed_of(id: &str) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    fnv1a(id.as_bytes()) ^ nanos ^ u64::from(std::process::id())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_wildcard_raft_address_takes_its_host_from_the_advertised_url() {
        use super::default_raft_url;
        let wildcard: std::net::SocketAddr = "0.0.0.0:9080".parse().unwrap();
        assert_eq!(
            default_raft_url(wildcard, Some("http://kv1:8080")),
            "http://kv1:9080"
        );
        assert_eq!(
            default_raft_url(wildcard, Some("http://kv1")),
            "http://kv1:9080"
        );
        assert_eq!(
            default_raft_url(wildcard, Some("http://[fd00::1]:8080/")),
            "http://[fd00::1]:9080"
        );
        assert_eq!(default_raft_url(wildcard, None), "http://127.0.0.1:9080");
        let bound: std::net::SocketAddr = "10.0.0.5:9080".parse().unwrap();
        assert_eq!(
            default_raft_url(bound, Some("http://kv1:8080")),
            "http://10.0.0.5:9080"
        );
    }

    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["kvnode", "--id", "n1"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).expect("arguments parse")
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_make_a_single_node_cluster() {
        let resolved = resolve(&args(&[]), no_env).unwrap();
        assert_eq!(resolved.client_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(resolved.raft_addr.to_string(), "127.0.0.1:9080");
        assert!(resolved.node.peers.is_empty());
        assert_eq!(resolved.node.voters(), vec!["n1"]);
        assert_eq!(resolved.node.data_dir, PathBuf::from("data/n1"));
        assert_eq!(resolved.node.client_url, "http://127.0.0.1:8080");
    }

    #[test]
    fn worker_threads_default_to_the_runtime_and_zero_is_refused() {
        assert_eq!(resolve(&args(&[]), no_env).unwrap().worker_threads, None);
        let one = resolve(&args(&["--worker-threads", "1"]), no_env).unwrap();
        assert_eq!(one.worker_threads, Some(1));
        let error = resolve(&args(&["--worker-threads", "0"]), no_env).unwrap_err();
        assert!(error.contains("--worker-threads"), "{error}");
    }

    #[test]
    fn size_limits_too_large_for_a_frame_or_zero_are_refused() {
        let limit = VALUE_BYTES_LIMIT.to_string();
        let resolved = resolve(&args(&["--value-bytes-max", &limit]), no_env).unwrap();
        assert_eq!(resolved.limits.value_bytes_max, VALUE_BYTES_LIMIT);
        let over = (VALUE_BYTES_LIMIT + 1).to_string();
        let error = resolve(&args(&["--value-bytes-max", &over]), no_env).unwrap_err();
        assert!(error.contains("--value-bytes-max"), "{error}");
        let error = resolve(&args(&["--key-bytes-max", "0"]), no_env).unwrap_err();
        assert!(error.contains("--key-bytes-max"), "{error}");
    }

    #[test]
    fn header_unsafe_cluster_ids_are_refused() {
        let error = resolve(&args(&["--cluster-id", "a b"]), no_env).unwrap_err();
        assert!(error.contains("--cluster-id"), "{error}");
    }

    #[test]
    fn peers_in_both_forms() {
        let pairs = parse_peers("n2=http://127.0.0.1:9082, n3=http://127.0.0.1:9083/", "").unwrap();
        let bare = parse_peers("http://127.0.0.1:9082,http://127.0.0.1:9083", "n2,n3").unwrap();
        assert_eq!(pairs, bare);
        assert_eq!(pairs["n3"], "http://127.0.0.1:9083");
    }

    #[test]
    fn bad_peers_are_one_clear_sentence() {
        let error = parse_peers("n2", "").unwrap_err();
        assert!(
            error.contains("expected ID=URL") || error.contains("bare URLs"),
            "{error}"
        );
        assert!(
            parse_peers("n2=ftp://x:1", "")
                .unwrap_err()
                .contains("http://")
        );
        assert!(
            parse_peers("n2=http://x", "")
                .unwrap_err()
                .contains("HOST:PORT")
        );
        assert!(
            parse_peers("n2=http://x:1,n2=http://y:2", "")
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            parse_peers("http://x:1,http://y:2", "n2")
                .unwrap_err()
                .contains("PEER_IDS")
        );
        let own = resolve(&args(&["--peers", "n1=http://127.0.0.1:9081"]), no_env).unwrap_err();
        assert!(own.contains("own id"), "{own}");
    }

    #[test]
    fn ports_from_the_environment() {
        let env = |name: &str| match name {
            "PORT" => Some("7000".to_string()),
            _ => None,
        };
        let resolved = resolve(&args(&[]), env).unwrap();
        assert_eq!(resolved.client_addr.to_string(), "0.0.0.0:7000");
        assert_eq!(resolved.raft_addr.to_string(), "0.0.0.0:8000");
        assert_eq!(resolved.node.client_url, "http://127.0.0.1:7000");
        let env = |name: &str| (name == "RAFT_PORT").then(|| "7500".to_string());
        assert_eq!(
            resolve(&args(&["--addr", "127.0.0.2:7001"]), env)
                .unwrap()
                .raft_addr
                .to_string(),
            "127.0.0.2:7500"
        );
    }

    #[test]
    fn cluster_id_is_derived_from_members() {
        let one = resolve(&args(&["--peers", "n2=http://a:1,n3=http://b:2"]), no_env).unwrap();
        let other = Args::try_parse_from([
            "kvnode",
            "--id",
            "n2",
            "--peers",
            "n1=http://c:3,n3=http://b:2",
        ])
        .unwrap();
        let two = resolve(&other, no_env).unwrap();
        assert_eq!(one.node.cluster_id, two.node.cluster_id);
        let lone = resolve(&args(&[]), no_env).unwrap();
        assert_ne!(one.node.cluster_id, lone.node.cluster_id);
    }

    #[test]
    fn timing_is_checked() {
        let resolved = resolve(
            &args(&[
                "--tick-ms",
                "10",
                "--heartbeat-ms",
                "50",
                "--election-timeout-ms",
                "500",
            ]),
            no_env,
        )
        .unwrap();
        assert_eq!(
            (
                resolved.node.heartbeat_interval_ticks,
                resolved.node.election_timeout_ticks
            ),
            (5, 50)
        );
        assert!(
            resolve(&args(&["--election-timeout-ms", "150"]), no_env)
                .unwrap_err()
                .contains("twice")
        );
        let bad = Args::try_parse_from(["kvnode", "--id", "bad id"]).unwrap();
        assert!(
            resolve(&bad, no_env)
                .unwrap_err()
                .contains("not a valid node id")
        );
    }
}
