//! Disk faults on real `kvnode` processes: a WAL tail torn after SIGKILL (the node repairs
//! it and rejoins), a bit flipped in a sealed segment (the node refuses to start, naming
//! file and offset, while the others keep serving), and a full disk (a small tmpfs as one
//! node's data dir: writes fail with a clear error, the WAL stays valid, and the node
//! recovers once space is freed and it is restarted).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{ELECTION_DEADLINE, TestCluster, http_get, http_send};
use kvstore::client::{Client, Consistency, Options};
use kvstore::store::Condition;
use kvstore::torture::rng::Rng;

/// The size of a segment header; record frames follow it (see `src/wal/mod.rs`).
const SEGMENT_HEADER_BYTES: usize = 40;
/// Frame header: length u32, crc u32, type u8.
const FRAME_HEADER_BYTES: usize = 9;
/// Bit 7 of the type byte marks the last record of a batch.
const BATCH_END_FLAG: u8 = 0x80;

/// A blocking Rust client (leader discovery, retries) for test code.
struct Kv {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl Kv {
    fn new(urls: Vec<String>) -> Kv {
        Kv {
            runtime: tokio::runtime::Runtime::new().expect("runtime"),
            client: Client::new(urls, Options::default()),
        }
    }

    fn put(&self, key: &str, value: &[u8]) -> u64 {
        self.runtime
            .block_on(self.client.put(key, value, Condition::None))
            .unwrap_or_else(|error| panic!("put {key}: {error}"))
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.runtime
            .block_on(self.client.get(key, Consistency::Linearizable))
            .unwrap_or_else(|error| panic!("get {key}: {error}"))
            .map(|read| read.value)
    }
}

fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data_dir.join("wal"))
        .expect("wal dir")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    segments.sort();
    segments
}

/// Byte offsets where each whole batch of a segment ends.
fn batch_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    while at + FRAME_HEADER_BYTES <= bytes.len() {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let end = at + FRAME_HEADER_BYTES + length;
        if end > bytes.len() {
            break;
        }
        if bytes[at + 8] & BATCH_END_FLAG != 0 {
            ends.push(end);
        }
        at = end;
    }
    ends
}

/// Waits until every node in `among` reports the same applied index and state hash.
fn wait_converged(cluster: &TestCluster, among: &[usize]) -> (u64, String) {
    let deadline = Instant::now() + ELECTION_DEADLINE;
    loop {
        let seen: Vec<Option<(u64, String)>> = among
            .iter()
            .map(|&index| {
                let status = cluster.status(index)?;
                Some((
                    status["lastApplied"].as_u64()?,
                    status["stateHash"].as_str()?.to_string(),
                ))
            })
            .collect();
        if seen[0].is_some() && seen.iter().all(|one| *one == seen[0]) {
            return seen[0].clone().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "nodes {among:?} did not converge: {seen:?}\n{}",
            cluster.all_logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How the tail is torn.
#[derive(Clone, Copy, Debug)]
enum Tear {
    /// A batch that was being written when the power went: a prefix of a copy of the last
    /// batch, cut at a random offset, appended after the last whole batch. Its fdatasync
    /// never returned, so nobody was told it was durable: this is what a crash can do.
    InFlight,
    /// The last whole batch itself cut at a random offset: the disk lost fsync'd data (a
    /// lying disk), which Raft's persistence contract rules out.
    Synced,
}

fn tear(segment: &Path, how: Tear, rng: &mut Rng) {
    let mut bytes = std::fs::read(segment).expect("read segment");
    let ends = batch_ends(&bytes);
    assert!(ends.len() >= 2, "a few batches in {}", segment.display());
    let last_start = ends[ends.len() - 2];
    let last_end = ends[ends.len() - 1];
    bytes.truncate(last_end);
    match how {
        Tear::InFlight => {
            let batch = bytes[last_start..last_end].to_vec();
            let cut = rng.between(1, batch.len() as u64 - 1) as usize;
            bytes.extend_from_slice(&batch[..cut]);
            eprintln!(
                "tearing {}: {cut} of {} bytes of an in-flight batch appended at {last_end}",
                segment.display(),
                batch.len()
            );
        }
        Tear::Synced => {
            let cut = rng.between(last_start as u64 + 1, last_end as u64 - 1) as usize;
            bytes.truncate(cut);
            eprintln!(
                "tearing {}: last batch {last_start}..{last_end} cut at {cut}",
                segment.display()
            );
        }
    }
    std::fs::write(segment, &bytes).expect("write segment");
}

fn torn_tail_rounds(how: Tear, seed: u64) {
    let mut cluster = TestCluster::start(3);
    let kv = Kv::new(cluster.urls());
    let mut rng = Rng::new(seed);
    let mut next = 0;
    for round in 0..3 {
        let leader = cluster.wait_for_leader(&[0, 1, 2]);
        // Rounds 0 and 1 tear a follower, round 2 the leader.
        let victim = if round == 2 {
            leader
        } else {
            (leader + 1 + round) % 3
        };
        for _ in 0..30 {
            kv.put(&format!("k{next}"), format!("v{next}").as_bytes());
            next += 1;
        }
        cluster.kill(victim);
        let segment = segments(&cluster.nodes[victim].data_dir)
            .pop()
            .expect("a segment");
        eprintln!("round {round}: {} (seed {seed})", cluster.nodes[victim].id);
        let inspect = |when: &str| {
            let output = Command::new(env!("CARGO_BIN_EXE_kvinspect"))
                .arg(&cluster.nodes[victim].data_dir)
                .output()
                .expect("run kvinspect");
            eprintln!("{when}: {}", String::from_utf8_lossy(&output.stdout));
        };
        inspect("before tearing");
        tear(&segment, how, &mut rng);
        inspect("after tearing");
        // The others keep serving meanwhile.
        for _ in 0..10 {
            kv.put(&format!("k{next}"), format!("v{next}").as_bytes());
            next += 1;
        }
        cluster.restart(victim);
        cluster.wait_for_log(victim, "repaired a torn WAL tail", "no repair reported");
        cluster.wait_for_leader(&[0, 1, 2]);
        kv.put("after", format!("round {round}").as_bytes());
        wait_converged(&cluster, &[0, 1, 2]);
    }
    for key in 0..next {
        assert_eq!(
            kv.get(&format!("k{key}")),
            Some(format!("v{key}").into_bytes()),
            "acknowledged write k{key} lost"
        );
    }
}

#[test]
fn torn_wal_tail_after_sigkill_is_repaired_and_the_node_rejoins() {
    for seed in [0x7041, 0x7042] {
        torn_tail_rounds(Tear::InFlight, seed);
    }
}

#[test]
#[ignore = "outside the contract: a follower whose disk lost an fsync'd, acknowledged batch \
            stays behind forever (the leader ignores rejections below its matchIndex); see \
            the torture report"]
fn follower_that_lost_an_fsynced_batch_rejoins() {
    torn_tail_rounds(Tear::Synced, 0x7043);
}

#[test]
fn bit_flip_in_a_sealed_segment_stops_that_node_with_a_clear_message() {
    // Small segments, so sealed ones exist after a few writes.
    let mut cluster = TestCluster::start_with(3, &["--segment-bytes", "4096"]);
    let kv = Kv::new(cluster.urls());
    let value = vec![b'x'; 300];
    for key in 0..60 {
        kv.put(&format!("k{key}"), &value);
    }
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let victim = (leader + 1) % 3;
    cluster.wait_applied(&[victim], 60);
    cluster.kill(victim);
    let all = segments(&cluster.nodes[victim].data_dir);
    assert!(all.len() >= 3, "sealed segments exist: {all:?}");
    let sealed = &all[all.len() / 2];
    let mut bytes = std::fs::read(sealed).expect("read segment");
    let mut rng = Rng::new(0xb17f);
    let flip_at = rng.between(SEGMENT_HEADER_BYTES as u64, bytes.len() as u64 - 1) as usize;
    let bit = rng.below(8);
    bytes[flip_at] ^= 1 << bit;
    std::fs::write(sealed, &bytes).expect("write segment");
    eprintln!(
        "flipped bit {bit} of byte {flip_at} in {}",
        sealed.display()
    );

    cluster.spawn_only(victim);
    let code = cluster.wait_exit(victim, ELECTION_DEADLINE);
    assert!(
        matches!(code, Some(Some(code)) if code != 0),
        "the node must refuse to start (exit code {code:?}):\n{}",
        cluster.log(victim)
    );
    let log = cluster.log(victim);
    let name = sealed.file_name().unwrap().to_string_lossy().to_string();
    let line = log
        .lines()
        .find(|line| line.contains("corruption in"))
        .unwrap_or_else(|| panic!("no corruption message:\n{log}"));
    assert!(line.contains(&name), "names the file {name}: {line}");
    let offset: u64 = line
        .split("byte offset ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("names the offset: {line}"));
    assert!(
        offset <= flip_at as u64,
        "the damaged record starts at or before the flipped byte: {line}"
    );

    // The other two keep serving.
    let others: Vec<usize> = (0..3).filter(|&index| index != victim).collect();
    cluster.wait_for_leader(&others);
    kv.put("after-flip", b"still serving");
    assert_eq!(kv.get("after-flip"), Some(b"still serving".to_vec()));
    assert_eq!(kv.get("k7"), Some(value.clone()));
}

/// A tmpfs mounted on a directory, unmounted (lazily) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "600k") on `dir`; None if this machine does not let us.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("create mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount {} to {size}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_disk_fails_writes_cleanly_and_the_node_recovers_after_space_is_freed() {
    let mut cluster = TestCluster::new_stopped(1, &["--segment-bytes", "65536"]);
    let Some(tmpfs) = Tmpfs::mount(&cluster.nodes[0].data_dir, "400k") else {
        eprintln!("skipped: mounting a tmpfs is not permitted here");
        return;
    };
    cluster.start_all();
    cluster.wait_for_leader(&[0]);
    let url = cluster.url(0);
    let value = vec![b'f'; 16 * 1024];
    let mut acknowledged = Vec::new();
    let mut failure = None;
    for key in 0..200 {
        match http_send("PUT", &format!("{url}/kv/k{key}"), &value) {
            Some((200, _)) => acknowledged.push(key),
            Some((status, body)) => {
                failure = Some(format!("{status} {body}"));
                break;
            }
            None => {
                failure = Some("connection closed".to_string());
                break;
            }
        }
    }
    let failure = failure.expect("the disk never filled");
    eprintln!(
        "{} writes acknowledged, then: {failure}",
        acknowledged.len()
    );
    assert!(
        failure.starts_with("503") || failure == "connection closed",
        "a full disk is a 503 (or the node is gone): {failure}"
    );
    let health = http_get(&format!("{url}/health"));
    if let Some((status, body)) = &health {
        assert_eq!(*status, 503, "health reports the failure: {body}");
    }
    // Fail-stop: the node exits non-zero and says why.
    let code = cluster.wait_exit(0, ELECTION_DEADLINE);
    assert!(
        matches!(code, Some(Some(code)) if code != 0),
        "kvnode exits non-zero on a WAL write error (exit {code:?}):\n{}",
        cluster.log(0)
    );
    let log = cluster.log(0);
    assert!(
        log.to_lowercase().contains("no space"),
        "the log names the cause:\n{log}"
    );

    // The WAL is not corrupted: at worst a torn tail, which the next start repairs.
    let verify = Command::new(env!("CARGO_BIN_EXE_kvinspect"))
        .arg(&cluster.nodes[0].data_dir)
        .arg("verify")
        .output()
        .expect("run kvinspect");
    let report = String::from_utf8_lossy(&verify.stdout).to_string()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(
        !report.to_lowercase().contains("corruption"),
        "kvinspect verify: {report}"
    );

    // Free space, restart: every acknowledged write is there and writes work again.
    tmpfs.resize("16m");
    cluster.restart(0);
    cluster.wait_for_leader(&[0]);
    let kv = Kv::new(cluster.urls());
    for key in &acknowledged {
        assert_eq!(
            kv.get(&format!("k{key}")),
            Some(value.clone()),
            "k{key} lost"
        );
    }
    kv.put("after", b"space freed");
    assert_eq!(kv.get("after"), Some(b"space freed".to_vec()));
    cluster.kill(0);
}

#[test]
fn full_disk_on_one_follower_leaves_the_others_serving() {
    let mut cluster = TestCluster::new_stopped(3, &["--segment-bytes", "65536"]);
    let Some(tmpfs) = Tmpfs::mount(&cluster.nodes[2].data_dir, "400k") else {
        eprintln!("skipped: mounting a tmpfs is not permitted here");
        return;
    };
    cluster.start_all();
    let kv = Kv::new(cluster.urls());
    let value = vec![b'g'; 16 * 1024];
    let mut written = 0;
    // Write until n3 (whatever its role) has stopped; the cluster keeps accepting writes
    // from the other two (a write in flight when n3 led may be refused; retried by the
    // client).
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.wait_exit(2, Duration::ZERO).is_none() {
        assert!(Instant::now() < deadline, "n3 never filled its disk");
        kv.put(&format!("k{written}"), &value);
        written += 1;
    }
    cluster.wait_for_leader(&[0, 1]);
    for _ in 0..5 {
        kv.put(&format!("k{written}"), &value);
        written += 1;
    }
    tmpfs.resize("16m");
    cluster.restart(2);
    cluster.wait_for_leader(&[0, 1, 2]);
    kv.put("after", b"rejoined");
    wait_converged(&cluster, &[0, 1, 2]);
    for key in 0..written {
        assert_eq!(
            kv.get(&format!("k{key}")),
            Some(value.clone()),
            "k{key} lost"
        );
    }
    for index in 0..3 {
        cluster.kill(index);
    }
}
