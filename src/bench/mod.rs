//! The load generator behind `kvctl bench` and `benches/cluster.rs`.
//!
//! # What it does
//!
//! `clients` workers run concurrently on the caller's tokio runtime. Each keeps one
//! HTTP/1.1 connection open per node it talks to (hyper's connection-level client,
//! `TCP_NODELAY`; `src/bench/http.rs` says why not reqwest), and issues one request at a
//! time, closed loop: the next request leaves when the answer to the previous one has been
//! read completely. A request is a read with probability `read_ratio`, else a put of a
//! `value_size`-byte value; its key is drawn uniformly from `keys` keys of `key_size`
//! bytes (`k000…0042`), by a per-worker seeded generator so runs are repeatable.
//!
//! The run stops after `duration` or after `requests` requests in all (shared ticket
//! counter). Latencies of successful requests go into HDR histograms (microseconds, 3
//! significant digits), one for puts and one for reads, merged at the end. Failures are
//! counted by kind: `connect`, `timeout` (10 s to connect and answer), `io`, `bad_answer`
//! (not HTTP/1.1 that hyper can parse), `bad_url` (a leader hint that is not
//! `http://host[:port]`), `http_<status>_<code>`, `not_leader`. A connection that failed,
//! or sat idle for 20 s (kvstore closes idle ones after 30 s), is dropped, and the next
//! request opens a new one. After a failure at the connection level or a 5xx, the worker
//! pauses for 50 ms before its next request.
//!
//! # Where requests go
//!
//! - [`Target::Kvstore`]: the leader is found at the start (`GET /raft/leader` on the
//!   seeds), and again by a worker whose request to it failed at the connection level or
//!   with a 5xx, so a run goes on across a leader's crash. Puts go straight to it. Reads
//!   go to the leader too (`--read-from leader`, the default: a linearizable read on a
//!   follower costs a forwarded ReadIndex round), or, with
//!   `--read-from any`, worker `i` reads from seed `i mod seeds`. A `409 not_leader` with
//!   a hint is counted as an error and the worker follows the hint.
//! - [`Target::Direct`]: everything to the first seed, no discovery (for the do-nothing
//!   server of `examples/ceiling.rs`, which serves the same `/kv/{key}` routes).
//! - [`Target::Etcd`]: etcd v3's JSON gateway: `POST /v3/kv/put` and `POST /v3/kv/range`
//!   with base64 keys and values (`"serializable":true` for stale reads); the leader is
//!   found through `POST /v3/maintenance/status` on each seed.
//!
//! A read of a key never written answers `404` (kvstore) or an empty range (etcd): it is a
//! successful read, counted in `notFound`.
//!
//! # Reference numbers
//!
//! `scripts/bench-compare.sh 3 5` on the development machine (2 vCPU AMD EPYC, 24 GiB,
//! virtio disk, Linux 6.18), commit 22bba54: a 3-node kvstore cluster, a 3-member etcd
//! 3.4.23 cluster (default fsync; the better of GOMAXPROCS default and 1) and
//! `examples/ceiling.rs` side by side, each scenario against each in turn, medians of 3
//! rounds of 5 s; 16 B keys, 100 B values, 1000 keys, access log off. Every later run, on
//! this machine and others of the same kind, is in the README's run list with the medians
//! over all of them.
//!
//! | scenario | tool | kvstore | etcd | ceiling | kvstore/etcd | kvstore/ceiling |
//! | --- | --- | --- | --- | --- | --- | --- |
//! | 1 client put, p50 | kvctl | 0.31 ms | 0.63 ms | 0.03 ms | 0.49 | |
//! | 64 clients put, throughput | kvctl | 54,619/s | 9,708/s | 93,676/s | 5.63 | 0.58 |
//! | 64 clients put, throughput | wrk | 52,328/s | 10,304/s | 91,323/s | 5.08 | 0.57 |
//! | 64 clients linearizable read | kvctl | 97,053/s | 13,244/s | 106,805/s | 7.33 | 0.91 |
//! | 64 clients linearizable read | wrk | 96,758/s | 12,838/s | 109,181/s | 7.54 | 0.89 |
//!
//! The `kvctl` rows were measured with a hand-framed HTTP client since replaced by hyper's
//! connection-level one, which drives within about 10% of `wrk -t1` against the ceiling
//! (99-114k/s beside 107-122k/s) and against the cluster (puts 50.7k/s beside 53.1k/s);
//! the reqwest-based generator before both reached 80k/s where `wrk` reached 96k/s.
//!
//! # Implementation caveats
//!
//! - Closed loop: the offered load adapts to the server, so latencies under overload are
//!   understated (coordinated omission). Fine for comparing stores under the same load.
//! - The generator shares the machine with the cluster; on 2 cores compare ratios measured
//!   in one run, not absolute numbers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, header};

use self::http::{Connection, Failure};

mod http;

/// Slowest latency the histograms record exactly; slower requests are clamped to it.
const LATENCY_US_MAX: u64 = 60_000_000;

/// Largest number of concurrent workers: each holds connections to every node.
pub const CLIENTS_MAX: usize = 4096;

/// What to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// A kvstore cluster: find the leader, `/kv/{key}` routes.
    Kvstore,
    /// Any server with kvstore's `/kv/{key}` routes, at the first seed; no discovery.
    Direct,
    /// An etcd v3 cluster through its JSON gateway.
    Etcd,
}

/// Read consistency of the generated reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadConsistency {
    /// ReadIndex (kvstore) or a quorum read (etcd).
    Linearizable,
    /// The contacted node's local state (etcd: serializable).
    Stale,
}

/// Which nodes serve reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadFrom {
    /// The leader.
    Leader,
    /// Worker `i` reads from seed `i mod seeds`.
    Any,
}

/// `kvctl bench` options.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Concurrent clients (each one request at a time).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Run for this many seconds.
    #[arg(long, default_value_t = 10.0, conflicts_with = "requests")]
    pub duration: f64,
    /// Stop after this many requests in all (instead of --duration).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Key length in bytes.
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Value length in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Size of the key space keys are drawn from (uniformly).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Fraction of requests that are reads, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.0)]
    pub read_ratio: f64,
    /// Consistency of the reads.
    #[arg(long, value_enum, default_value_t = ReadConsistency::Linearizable)]
    pub consistency: ReadConsistency,
    /// Which nodes serve reads.
    #[arg(long, value_enum, default_value_t = ReadFrom::Leader)]
    pub read_from: ReadFrom,
    /// What kind of server the seeds are.
    #[arg(long, value_enum, default_value_t = Target::Kvstore)]
    pub target: Target,
    /// Seed of the key generators.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            clients: 16,
            duration: 10.0,
            requests: None,
            key_size: 16,
            value_size: 100,
            keys: 10_000,
            read_ratio: 0.0,
            consistency: ReadConsistency::Linearizable,
            read_from: ReadFrom::Leader,
            target: Target::Kvstore,
            seed: 1,
        }
    }
}

impl BenchArgs {
    fn check(&self) -> Result<(), String> {
        if self.clients == 0 || self.clients > CLIENTS_MAX {
            return Err(format!("--clients must be between 1 and {CLIENTS_MAX}"));
        }
        if self.requests.is_none() && !(self.duration.is_finite() && self.duration > 0.0) {
            return Err("--duration must be a positive number of seconds".into());
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err("--read-ratio must be between 0 and 1".into());
        }
        if self.keys == 0 || self.key_size < 2 {
            return Err("--keys must be positive and --key-size at least 2".into());
        }
        Ok(())
    }
}

/// Latencies of one kind of request.
#[derive(Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Latencies {
    fn new() -> Latencies {
        Latencies {
            histogram: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                .expect("valid histogram bounds"),
        }
    }

    fn record(&mut self, elapsed: Duration) {
        let micros = (elapsed.as_micros() as u64).clamp(1, LATENCY_US_MAX);
        self.histogram.saturating_record(micros);
    }

    fn merge(&mut self, other: &Latencies) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms with the same bounds merge");
    }

    /// Successful requests recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The latency at quantile `q` (0.0..=1.0).
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.histogram.value_at_quantile(q))
    }

    /// The slowest recorded latency.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.histogram.max())
    }

    fn json(&self) -> Value {
        let ms = |micros: u64| micros as f64 / 1000.0;
        json!({
            "count": self.count(),
            "latencyMs": {
                "mean": self.histogram.mean() / 1000.0,
                "p50": ms(self.histogram.value_at_quantile(0.5)),
                "p90": ms(self.histogram.value_at_quantile(0.9)),
                "p99": ms(self.histogram.value_at_quantile(0.99)),
                "p999": ms(self.histogram.value_at_quantile(0.999)),
                "max": ms(self.histogram.max()),
            }
        })
    }
}

/// The outcome of a run.
#[derive(Clone)]
pub struct Report {
    /// The options it ran with.
    pub args: BenchArgs,
    /// Wall time from the first request to the last answer.
    pub elapsed: Duration,
    /// All successful requests.
    pub all: Latencies,
    /// Successful puts.
    pub puts: Latencies,
    /// Successful reads.
    pub reads: Latencies,
    /// Reads of absent keys (successful, also in `reads`).
    pub not_found: u64,
    /// Failed requests by kind.
    pub errors: BTreeMap<String, u64>,
}

impl Report {
    /// Failed requests in all.
    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Successful requests per second.
    pub fn throughput_per_second(&self) -> f64 {
        self.all.count() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The report as JSON (the `--json` output of `kvctl bench`).
    pub fn json(&self) -> Value {
        let args = &self.args;
        json!({
            "target": format!("{:?}", args.target).to_lowercase(),
            "clients": args.clients,
            "keySize": args.key_size,
            "valueSize": args.value_size,
            "keys": args.keys,
            "readRatio": args.read_ratio,
            "consistency": format!("{:?}", args.consistency).to_lowercase(),
            "durationSeconds": self.elapsed.as_secs_f64(),
            "requests": self.all.count() + self.errors_total(),
            "ok": self.all.count(),
            "throughputPerSecond": self.throughput_per_second(),
            "latencyMs": self.all.json()["latencyMs"].clone(),
            "puts": self.puts.json(),
            "reads": self.reads.json(),
            "notFound": self.not_found,
            "errorsTotal": self.errors_total(),
            "errors": self.errors,
        })
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut text = format!(
            "{} requests ok, {} failed in {:.2} s: {:.0} requests/s ({} clients, {:?})\n",
            self.all.count(),
            self.errors_total(),
            self.elapsed.as_secs_f64(),
            self.throughput_per_second(),
            self.args.clients,
            self.args.target,
        );
        text.push_str(&format!(
            "{:<6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}   (ms)\n",
            "", "count", "p50", "p90", "p99", "p99.9", "max"
        ));
        for (name, latencies) in [
            ("all", &self.all),
            ("put", &self.puts),
            ("read", &self.reads),
        ] {
            if latencies.count() == 0 {
                continue;
            }
            let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
            text.push_str(&format!(
                "{name:<6} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}\n",
                latencies.count(),
                ms(latencies.quantile(0.5)),
                ms(latencies.quantile(0.9)),
                ms(latencies.quantile(0.99)),
                ms(latencies.quantile(0.999)),
                ms(latencies.max()),
            ));
        }
        if self.not_found > 0 {
            text.push_str(&format!("reads of absent keys: {}\n", self.not_found));
        }
        for (kind, count) in &self.errors {
            text.push_str(&format!("error {kind}: {count}\n"));
        }
        text
    }
}

/// Where the workers send requests, resolved once before the run.
#[derive(Clone, Debug)]
struct Endpoints {
    writes: Endpoint,
    reads: Vec<Endpoint>,
    /// How to find the leader again ([`Target::Kvstore`] only).
    discovery: Option<Discovery>,
}

/// The seeds, and a client to ask them who leads.
#[derive(Clone, Debug)]
struct Discovery {
    http: reqwest::Client,
    seeds: Arc<[String]>,
}

/// A node the workers talk to: `http://host:port`, and its `host:port` (the port 80 if the
/// URL has none), for connecting and for the `Host` header.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Endpoint {
    url: String,
    authority: String,
}

impl Endpoint {
    /// `None` for anything but `http://host[:port]` (a trailing `/` is allowed), parsed as
    /// hyper parses the request URIs it sends.
    fn parse(url: &str) -> Option<Endpoint> {
        let uri: hyper::Uri = url.parse().ok()?;
        let authority = uri.authority()?;
        let plain = uri.scheme() == Some(&hyper::http::uri::Scheme::HTTP)
            && uri.path() == "/"
            && uri.query().is_none()
            && !authority.as_str().contains('@');
        plain.then(|| Endpoint {
            url: format!("http://{authority}"),
            authority: format!(
                "{}:{}",
                authority.host(),
                authority.port_u16().unwrap_or(80)
            ),
        })
    }
}

/// Counters shared by the workers and the progress line.
#[derive(Default)]
struct Shared {
    tickets: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
}

/// What one worker measured.
struct WorkerResult {
    puts: Latencies,
    reads: Latencies,
    not_found: u64,
    errors: BTreeMap<String, u64>,
}

/// Runs a benchmark against `seeds` (base URLs). With `progress`, prints a line to stderr
/// once a second.
pub async fn run(seeds: &[String], args: &BenchArgs, progress: bool) -> Result<Report, String> {
    args.check()?;
    let seeds: Vec<String> = seeds
        .iter()
        .map(|seed| seed.trim_end_matches('/').to_string())
        .collect();
    if seeds.is_empty() {
        return Err("need at least one seed".into());
    }
    let endpoints = resolve(&seeds, args).await?;
    let shared = Arc::new(Shared::default());
    let started = Instant::now();
    let deadline = args
        .requests
        .is_none()
        .then(|| started + Duration::from_secs_f64(args.duration));
    let mut workers = Vec::with_capacity(args.clients);
    for number in 0..args.clients {
        let worker = Worker::new(number, args, &endpoints, shared.clone(), deadline);
        workers.push(tokio::spawn(worker.run()));
    }
    let reporter = progress.then(|| tokio::spawn(report_progress(shared.clone())));
    let mut report = Report {
        args: args.clone(),
        elapsed: Duration::ZERO,
        all: Latencies::new(),
        puts: Latencies::new(),
        reads: Latencies::new(),
        not_found: 0,
        errors: BTreeMap::new(),
    };
    for worker in workers {
        let result = worker
            .await
            .map_err(|error| format!("a worker failed: {error}"))?;
        report.puts.merge(&result.puts);
        report.reads.merge(&result.reads);
        report.not_found += result.not_found;
        for (kind, count) in result.errors {
            *report.errors.entry(kind).or_default() += count;
        }
    }
    report.elapsed = started.elapsed();
    shared.stop.store(true, Ordering::Relaxed);
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    let (puts, reads) = (report.puts.clone(), report.reads.clone());
    report.all.merge(&puts);
    report.all.merge(&reads);
    Ok(report)
}

async fn report_progress(shared: Arc<Shared>) {
    let started = Instant::now();
    let mut last = 0;
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.tick().await;
    loop {
        interval.tick().await;
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let done = shared.done.load(Ordering::Relaxed);
        eprintln!(
            "[{:>4.0} s] {done} ok ({}/s), {} failed",
            started.elapsed().as_secs_f64(),
            done - last,
            shared.failed.load(Ordering::Relaxed),
        );
        last = done;
    }
}

/// Finds where writes and reads go (see the module doc).
async fn resolve(seeds: &[String], args: &BenchArgs) -> Result<Endpoints, String> {
    let http = http_client()?;
    let leader = match args.target {
        Target::Direct => seeds[0].clone(),
        Target::Kvstore => kvstore_leader(&http, seeds).await?,
        Target::Etcd => etcd_leader(&http, seeds).await?,
    };
    let reads = match args.read_from {
        ReadFrom::Leader => vec![leader.clone()],
        ReadFrom::Any => seeds.to_vec(),
    };
    let endpoint = |url: &String| {
        Endpoint::parse(url).ok_or_else(|| {
            format!("{url}: the load generator speaks plain HTTP only, to http://host:port")
        })
    };
    Ok(Endpoints {
        writes: endpoint(&leader)?,
        reads: reads.iter().map(endpoint).collect::<Result<_, _>>()?,
        discovery: (args.target == Target::Kvstore).then(|| Discovery {
            http,
            seeds: seeds.into(),
        }),
    })
}

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(1)
        .build()
        .map_err(|error| format!("cannot build an HTTP client: {error}"))
}

async fn kvstore_leader(http: &reqwest::Client, seeds: &[String]) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(leader) = kvstore_leader_once(http, seeds).await {
            return Ok(leader);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("no seed knows a leader".into())
}

/// The leader the first seed that knows one names (`GET /raft/leader`, 1 s per seed).
async fn kvstore_leader_once(http: &reqwest::Client, seeds: &[String]) -> Option<String> {
    for seed in seeds {
        let request = http
            .get(format!("{seed}/raft/leader"))
            .timeout(Duration::from_secs(1));
        let Ok(response) = request.send().await else {
            continue;
        };
        let Ok(json) = response.json::<Value>().await else {
            continue;
        };
        if let Some(url) = json.get("leader").and_then(Value::as_str) {
            return Some(url.trim_end_matches('/').to_string());
        }
    }
    None
}

/// How long a worker pauses after a request failed at the connection level or with a
/// 5xx, so a node that is down or overloaded is not hammered in a tight loop.
const FAILURE_PAUSE: Duration = Duration::from_millis(50);

async fn etcd_leader(http: &reqwest::Client, seeds: &[String]) -> Result<String, String> {
    for seed in seeds {
        let response = http
            .post(format!("{seed}/v3/maintenance/status"))
            .body("{}")
            .send()
            .await;
        let Ok(json) = (match response {
            Ok(response) => response.json::<Value>().await,
            Err(error) => Err(error),
        }) else {
            continue;
        };
        let member = json["header"]["member_id"].as_str();
        if member.is_some() && member == json["leader"].as_str() {
            return Ok(seed.clone());
        }
    }
    Err("no etcd seed is the leader (are all members listed in --seeds?)".into())
}

/// One closed-loop client.
struct Worker {
    args: BenchArgs,
    /// The node taking writes and the one serving reads.
    writes: Endpoint,
    reads: Endpoint,
    discovery: Option<Discovery>,
    shared: Arc<Shared>,
    deadline: Option<Instant>,
    rng: u64,
    value: Bytes,
    /// The value as etcd's gateway wants it (base64), computed once.
    value_base64: String,
    /// Open connections by authority, with when each was last used: one per node this
    /// worker talks to.
    connections: Vec<(String, Connection, Instant)>,
    /// A connection idle this long is not reused: the server may have closed it.
    idle_max: Duration,
    /// The current key, in a reused buffer.
    key: String,
    result: WorkerResult,
}

/// How one request ended.
enum Outcome {
    Ok,
    NotFound,
    Failed(String),
    Redirect(String, String),
}

impl Worker {
    fn new(
        number: usize,
        args: &BenchArgs,
        endpoints: &Endpoints,
        shared: Arc<Shared>,
        deadline: Option<Instant>,
    ) -> Worker {
        let value = vec![b'v'; args.value_size];
        Worker {
            args: args.clone(),
            writes: endpoints.writes.clone(),
            reads: endpoints.reads[number % endpoints.reads.len()].clone(),
            discovery: endpoints.discovery.clone(),
            shared,
            deadline,
            // splitmix-style distinct, non-zero seeds per worker.
            rng: (args.seed ^ (number as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1,
            value_base64: base64(&value),
            value: Bytes::from(value),
            connections: Vec::new(),
            idle_max: crate::server::CLIENT_POOL_IDLE,
            key: String::with_capacity(args.key_size),
            result: WorkerResult {
                puts: Latencies::new(),
                reads: Latencies::new(),
                not_found: 0,
                errors: BTreeMap::new(),
            },
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn may_continue(&self) -> bool {
        if self.shared.stop.load(Ordering::Relaxed) {
            return false;
        }
        match (self.deadline, self.args.requests) {
            (Some(deadline), _) => Instant::now() < deadline,
            (None, Some(requests)) => {
                self.shared.tickets.fetch_add(1, Ordering::Relaxed) < requests
            }
            (None, None) => false,
        }
    }

    async fn run(mut self) -> WorkerResult {
        while self.may_continue() {
            let number = self.next_random() % self.args.keys;
            write_key(&mut self.key, number, self.args.key_size);
            let unit = (self.next_random() >> 11) as f64 / ((1u64 << 53) as f64);
            let is_read = unit < self.args.read_ratio;
            let started = Instant::now();
            let request = if is_read {
                self.read_request()
            } else {
                self.put_request()
            };
            let outcome = self.exchange(is_read, request).await;
            let elapsed = started.elapsed();
            let latencies = if is_read {
                &mut self.result.reads
            } else {
                &mut self.result.puts
            };
            match outcome {
                Outcome::Ok | Outcome::NotFound => {
                    latencies.record(elapsed);
                    if matches!(outcome, Outcome::NotFound) {
                        self.result.not_found += 1;
                    }
                    self.shared.done.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Outcome::Redirect(kind, leader) => match Endpoint::parse(&leader) {
                    Some(leader) => {
                        self.follow(leader);
                        self.fail(kind);
                    }
                    None => self.fail("bad_url".into()),
                },
                Outcome::Failed(kind) => {
                    let down = !kind.starts_with("http_") || kind.starts_with("http_5");
                    self.fail(kind);
                    if down {
                        tokio::time::sleep(FAILURE_PAUSE).await;
                        // The leader may have gone: ask the seeds who leads now.
                        let at_leader = !is_read || self.args.read_from == ReadFrom::Leader;
                        if at_leader && let Some(discovery) = &self.discovery {
                            let leader =
                                kvstore_leader_once(&discovery.http, &discovery.seeds).await;
                            if let Some(leader) = leader.as_deref().and_then(Endpoint::parse) {
                                self.follow(leader);
                            }
                        }
                    }
                }
            }
        }
        self.result
    }

    /// Sends writes (and leader reads) to `leader` from now on, and closes connections to
    /// nodes no longer used.
    fn follow(&mut self, leader: Endpoint) {
        if self.args.read_from == ReadFrom::Leader {
            self.reads = leader.clone();
        }
        self.writes = leader;
        let (writes, reads) = (&self.writes, &self.reads);
        self.connections.retain(|(authority, _, _)| {
            *authority == writes.authority || *authority == reads.authority
        });
    }

    fn fail(&mut self, kind: String) {
        *self.result.errors.entry(kind).or_default() += 1;
        self.shared.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// A put of the current key.
    fn put_request(&self) -> Request<Full<Bytes>> {
        let (host, key) = (&self.writes.authority, &self.key);
        match self.args.target {
            Target::Kvstore | Target::Direct => request(
                Method::PUT,
                kv_path(key, ""),
                host,
                false,
                self.value.clone(),
            ),
            Target::Etcd => {
                let value = self.value_base64.as_bytes();
                let body = etcd_body(key, &[br#"","value":""#, value, br#""}"#]);
                request(Method::POST, "/v3/kv/put".into(), host, true, body)
            }
        }
    }

    /// A read of the current key.
    fn read_request(&self) -> Request<Full<Bytes>> {
        let stale = self.args.consistency == ReadConsistency::Stale;
        let (host, key) = (&self.reads.authority, &self.key);
        match self.args.target {
            Target::Kvstore | Target::Direct => {
                let query = if stale { "?consistency=stale" } else { "" };
                request(Method::GET, kv_path(key, query), host, false, Bytes::new())
            }
            Target::Etcd => {
                let tail: &[u8] = if stale {
                    br#"","serializable":true}"#
                } else {
                    br#"","serializable":false}"#
                };
                let body = etcd_body(key, &[tail]);
                request(Method::POST, "/v3/kv/range".into(), host, true, body)
            }
        }
    }

    /// Sends `request` to the node for writes or reads, over its open connection or a new
    /// one, and classifies the answer. A connection that failed, that the server closes or
    /// closed, or that sat idle so long the server may have closed it (kvstore closes idle
    /// ones after 30 s) is dropped; the next request opens a new one.
    async fn exchange(&mut self, is_read: bool, request: Request<Full<Bytes>>) -> Outcome {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        let authority = if is_read {
            &self.reads.authority
        } else {
            &self.writes.authority
        };
        let open = self
            .connections
            .iter()
            .position(|(at, _, _)| at == authority);
        let reusable = open
            .map(|index| self.connections.swap_remove(index))
            .filter(|(_, connection, used)| {
                connection.reusable() && used.elapsed() < self.idle_max
            });
        let (authority, mut connection) = match reusable {
            Some((authority, connection, _)) => (authority, connection),
            None => match tokio::time::timeout_at(deadline, Connection::connect(authority)).await {
                Ok(Ok(connection)) => (authority.clone(), connection),
                Ok(Err(_)) => return Outcome::Failed("connect".into()),
                Err(_) => return Outcome::Failed("timeout".into()),
            },
        };
        let answer = match tokio::time::timeout_at(deadline, connection.exchange(request)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(Failure::BadAnswer)) => return Outcome::Failed("bad_answer".into()),
            Ok(Err(Failure::Io)) => return Outcome::Failed("io".into()),
            Err(_) => return Outcome::Failed("timeout".into()),
        };
        let outcome = classify(self.args.target, is_read, answer.status, &answer.body);
        if connection.reusable() {
            self.connections
                .push((authority, connection, Instant::now()));
        }
        outcome
    }
}

/// Longest wait for a connection and an answer together before the request counts as
/// `timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A request for `path` on `host` with `body` (JSON if `json`); hyper adds its length.
fn request(
    method: Method,
    path: String,
    host: &str,
    json: bool,
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, host);
    if json {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    builder
        .body(Full::new(body))
        .expect("generated keys and parsed authorities make valid requests")
}

/// An etcd gateway body: `{"key":"<base64 of key>` followed by `rest` (which closes the
/// key's string and the object).
fn etcd_body(key: &str, rest: &[&[u8]]) -> Bytes {
    let rest_bytes: usize = rest.iter().map(|part| part.len()).sum();
    let mut body = Vec::with_capacity(8 + key.len().div_ceil(3) * 4 + rest_bytes);
    body.extend_from_slice(br#"{"key":""#);
    base64_into(&mut body, key.as_bytes());
    for part in rest {
        body.extend_from_slice(part);
    }
    body.into()
}

/// Turns an answer into an outcome (see the module doc).
fn classify(target: Target, is_read: bool, status: u16, body: &[u8]) -> Outcome {
    if (200..300).contains(&status) {
        if target == Target::Etcd && is_read && is_empty_range(body) {
            return Outcome::NotFound;
        }
        return Outcome::Ok;
    }
    if status == 404 && target != Target::Etcd {
        return Outcome::NotFound;
    }
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = json["error"].as_str().unwrap_or("").to_string();
    if status == 409
        && let Some(leader) = json["leader"].as_str()
    {
        return Outcome::Redirect("not_leader".into(), leader.trim_end_matches('/').into());
    }
    let code = if code.is_empty() {
        String::new()
    } else {
        format!("_{code}")
    };
    Outcome::Failed(format!("http_{status}{code}"))
}

/// Whether an etcd range answer holds no key (`"kvs"` absent).
fn is_empty_range(body: &[u8]) -> bool {
    !body.windows(6).any(|window| window == b"\"kvs\":")
}

/// Key number `number`, `size` bytes long: `k` and zero-padded decimal digits.
pub fn key_for(number: u64, size: usize) -> String {
    let mut key = String::with_capacity(size);
    write_key(&mut key, number, size);
    key
}

/// [`key_for`] into a reused string. Without `format!`: its zero padding went through the
/// formatter one character at a time, and with the path's `format!` that was about 7% of
/// the load generator's instructions per request (callgrind).
fn write_key(key: &mut String, number: u64, size: usize) {
    let digits = size.saturating_sub(1).max(1);
    let mut decimal = itoa::Buffer::new();
    let decimal = decimal.format(number);
    key.clear();
    key.push('k');
    key.extend(std::iter::repeat_n(
        '0',
        digits.saturating_sub(decimal.len()),
    ));
    key.push_str(decimal);
}

/// `/kv/{key}{query}`.
fn kv_path(key: &str, query: &str) -> String {
    let mut path = String::with_capacity(4 + key.len() + query.len());
    path.push_str("/kv/");
    path.push_str(key);
    path.push_str(query);
    path
}

/// Standard base64 with padding (etcd's JSON gateway encodes bytes so).
pub fn base64(bytes: &[u8]) -> String {
    let mut text = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    base64_into(&mut text, bytes);
    String::from_utf8(text).expect("base64 is ASCII")
}

/// [`base64`], appended to `out`.
fn base64_into(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let word = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for position in 0..4 {
            if position <= chunk.len() {
                let sextet = (word >> (18 - 6 * position)) & 0x3F;
                out.push(ALPHABET[sextet as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_base64() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn makes_keys_of_the_asked_size() {
        assert_eq!(key_for(42, 16), "k000000000000042");
        assert_eq!(key_for(0, 4), "k000");
        assert_eq!(
            key_for(12345, 4),
            "k12345",
            "a number wider than the size is not cut"
        );
        assert_eq!(key_for(7, 1), "k7");
        assert_eq!(key_for(7, 0), "k7");
        assert_eq!(
            kv_path("k07", "?consistency=stale"),
            "/kv/k07?consistency=stale"
        );
        assert_eq!(key_for(42, 16).len(), 16);
    }

    #[test]
    fn classifies_answers() {
        assert!(matches!(
            classify(Target::Kvstore, false, 200, b"{}"),
            Outcome::Ok
        ));
        assert!(matches!(
            classify(Target::Kvstore, false, 404, b"{}"),
            Outcome::NotFound
        ));
        let hinted = br#"{"ok":false,"error":"not_leader","leader":"http://b:2/"}"#;
        assert!(matches!(
            classify(Target::Kvstore, false, 409, hinted),
            Outcome::Redirect(_, leader) if leader == "http://b:2"
        ));
        let unavailable = br#"{"ok":false,"error":"unavailable"}"#;
        assert!(matches!(
            classify(Target::Kvstore, false, 503, unavailable),
            Outcome::Failed(kind) if kind == "http_503_unavailable"
        ));
        assert!(matches!(
            classify(Target::Etcd, true, 200, br#"{"header":{"revision":"3"}}"#),
            Outcome::NotFound
        ));
        assert!(matches!(
            classify(Target::Etcd, false, 200, br#"{"header":{"revision":"3"}}"#),
            Outcome::Ok
        ));
        assert!(matches!(
            classify(
                Target::Etcd,
                true,
                200,
                br#"{"header":{},"kvs":[{}],"count":"1"}"#
            ),
            Outcome::Ok
        ));
    }

    /// A server that answers every request with `answer`, closing after each one if
    /// `close`. Returns its base URL.
    async fn fake_server(answer: String, close: bool) -> String {
        fake_server_answering(vec![answer], close).await
    }

    /// Like [`fake_server`], answering the `i`th request (over all connections) with
    /// `answers[i]`, and every one after the last with the last.
    async fn fake_server_answering(answers: Vec<String>, close: bool) -> String {
        fake_server_counting(answers, close).await.0
    }

    /// Like [`fake_server_answering`], also counting the connections it accepted.
    async fn fake_server_counting(answers: Vec<String>, close: bool) -> (String, Arc<AtomicU64>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let answers = Arc::new(answers);
        let served = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::Relaxed);
                let (answers, served) = (answers.clone(), served.clone());
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buffer = [0u8; 4096];
                    loop {
                        // A request's head, then its Content-Length body.
                        let Some(head) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match socket.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(read) => got.extend_from_slice(&buffer[..read]),
                            }
                            continue;
                        };
                        let text = String::from_utf8_lossy(&got[..head]).to_lowercase();
                        let length: usize = text
                            .lines()
                            .find_map(|line| line.strip_prefix("content-length: "))
                            .map_or(0, |value| value.trim().parse().unwrap());
                        if got.len() < head + 4 + length {
                            let read = socket.read(&mut buffer).await.unwrap_or(0);
                            if read == 0 {
                                return;
                            }
                            got.extend_from_slice(&buffer[..read]);
                            continue;
                        }
                        got.drain(..head + 4 + length);
                        let number = served.fetch_add(1, Ordering::Relaxed) as usize;
                        let answer = &answers[number.min(answers.len() - 1)];
                        if socket.write_all(answer.as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    fn answer(status: &str, headers: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn args(requests: u64) -> BenchArgs {
        BenchArgs {
            clients: 1,
            requests: Some(requests),
            target: Target::Direct,
            ..BenchArgs::default()
        }
    }

    #[tokio::test]
    async fn follows_a_leader_hint_to_a_new_connection() {
        let leader = fake_server(answer("200 OK", "", "{}"), false).await;
        let body = format!(r#"{{"ok":false,"error":"not_leader","leader":"{leader}/"}}"#);
        let follower = fake_server(answer("409 Conflict", "", &body), false).await;
        let report = run(&[follower], &args(10), false).await.unwrap();
        assert_eq!(report.errors, BTreeMap::from([("not_leader".into(), 1)]));
        assert_eq!(report.puts.count(), 9);
    }

    #[tokio::test]
    async fn finds_the_new_leader_when_the_old_one_is_gone() {
        let leader = fake_server(answer("200 OK", "", "{}"), false).await;
        let leads = |url: &str| answer("200 OK", "", &format!(r#"{{"leader":"{url}"}}"#));
        // The seed first names a leader that is down (nothing listens on port 1), then
        // the new one.
        let seed =
            fake_server_answering(vec![leads("http://127.0.0.1:1"), leads(&leader)], false).await;
        let kvstore = BenchArgs {
            target: Target::Kvstore,
            ..args(5)
        };
        let report = run(&[seed], &kvstore, false).await.unwrap();
        assert_eq!(report.errors, BTreeMap::from([("connect".into(), 1)]));
        assert_eq!(report.puts.count(), 4);
    }

    #[tokio::test]
    async fn does_not_reuse_a_connection_idle_longer_than_allowed() {
        // A server's idle timeout may close a connection just as the next request goes out;
        // the worker reconnects instead of reusing one idle that long.
        let run_with = async |idle_max| {
            let (server, accepted) =
                fake_server_counting(vec![answer("200 OK", "", "{}")], false).await;
            let endpoint = Endpoint::parse(&server).unwrap();
            let endpoints = Endpoints {
                writes: endpoint.clone(),
                reads: vec![endpoint],
                discovery: None,
            };
            let mut worker = Worker::new(0, &args(3), &endpoints, Arc::default(), None);
            worker.idle_max = idle_max;
            let report = worker.run().await;
            assert_eq!(report.errors, BTreeMap::new());
            assert_eq!(report.puts.count(), 3);
            accepted.load(Ordering::Relaxed)
        };
        assert_eq!(
            run_with(Duration::ZERO).await,
            3,
            "idle past the limit: a new one each time"
        );
        assert_eq!(
            run_with(crate::server::CLIENT_POOL_IDLE).await,
            1,
            "kept alive and reused"
        );
    }

    #[tokio::test]
    async fn reconnects_when_the_server_closes_after_each_answer() {
        let server = fake_server(answer("200 OK", "Connection: close\r\n", "{}"), true).await;
        let mut mixed = args(20);
        mixed.read_ratio = 0.5;
        let report = run(&[server], &mixed, false).await.unwrap();
        assert_eq!(report.errors_total(), 0, "{:?}", report.errors);
        assert_eq!(report.all.count(), 20);
    }

    #[tokio::test]
    async fn counts_refusals_and_unreachable_servers_by_kind() {
        let body = r#"{"ok":false,"error":"unavailable"}"#;
        let busy = fake_server(answer("503 Service Unavailable", "", body), false).await;
        let report = run(&[busy], &args(3), false).await.unwrap();
        assert_eq!(
            report.errors,
            BTreeMap::from([("http_503_unavailable".into(), 3)])
        );
        // Port 1 (tcpmux): nothing listens there on a test machine.
        let report = run(&["http://127.0.0.1:1".into()], &args(2), false)
            .await
            .unwrap();
        assert_eq!(report.errors, BTreeMap::from([("connect".into(), 2)]));
        let refused = run(&["https://127.0.0.1:1".into()], &args(1), false).await;
        assert!(matches!(refused, Err(error) if error.contains("plain HTTP")));
    }

    #[test]
    fn parses_endpoints() {
        let parsed = |url: &str| Endpoint::parse(url).map(|e| (e.url, e.authority));
        let pair = |url: &str, authority: &str| Some((url.to_string(), authority.to_string()));
        assert_eq!(parsed("http://h:5/"), pair("http://h:5", "h:5"));
        assert_eq!(parsed("http://h"), pair("http://h", "h:80"));
        assert_eq!(parsed("http://[::1]"), pair("http://[::1]", "[::1]:80"));
        assert_eq!(parsed("http://[::1]:7"), pair("http://[::1]:7", "[::1]:7"));
        for refused in [
            "https://h:1",
            "http://h:1/prefix",
            "http://",
            "h:1",
            "http://u@h:1",
        ] {
            assert_eq!(parsed(refused), None, "{refused}");
        }
    }

    /// `METHOD path`, the headers as `name: value` lines, an empty line and the body.
    async fn render(request: Request<Full<Bytes>>) -> String {
        use http_body_util::BodyExt;
        let mut text = format!("{} {}\n", request.method(), request.uri());
        for (name, value) in request.headers() {
            text.push_str(&format!("{name}: {}\n", value.to_str().unwrap()));
        }
        let body = request.into_body().collect().await.unwrap().to_bytes();
        text.push('\n');
        text.push_str(std::str::from_utf8(&body).unwrap());
        text
    }

    #[tokio::test]
    async fn formats_requests_for_each_target_and_consistency() {
        let endpoints = Endpoints {
            writes: Endpoint::parse("http://w:1").unwrap(),
            reads: vec![Endpoint::parse("http://r:2/").unwrap()],
            discovery: None,
        };
        let formatted = async |target, consistency| {
            let args = BenchArgs {
                value_size: 3,
                target,
                consistency,
                ..BenchArgs::default()
            };
            let mut worker = Worker::new(0, &args, &endpoints, Arc::default(), None);
            worker.key = "k1".into();
            let put = render(worker.put_request()).await;
            (put, render(worker.read_request()).await)
        };
        use ReadConsistency::{Linearizable, Stale};
        assert_eq!(
            formatted(Target::Kvstore, Linearizable).await,
            (
                "PUT /kv/k1\nhost: w:1\n\nvvv".to_string(),
                "GET /kv/k1\nhost: r:2\n\n".to_string()
            )
        );
        assert_eq!(
            formatted(Target::Direct, Stale).await.1,
            "GET /kv/k1?consistency=stale\nhost: r:2\n\n"
        );
        let post = |path: &str, host: &str, body: &str| {
            format!("POST {path}\nhost: {host}\ncontent-type: application/json\n\n{body}")
        };
        // base64("k1") = "azE=", base64("vvv") = "dnZ2".
        assert_eq!(
            formatted(Target::Etcd, Linearizable).await,
            (
                post("/v3/kv/put", "w:1", r#"{"key":"azE=","value":"dnZ2"}"#),
                post(
                    "/v3/kv/range",
                    "r:2",
                    r#"{"key":"azE=","serializable":false}"#
                )
            )
        );
        assert_eq!(
            formatted(Target::Etcd, Stale).await.1,
            post(
                "/v3/kv/range",
                "r:2",
                r#"{"key":"azE=","serializable":true}"#
            )
        );
    }
}
