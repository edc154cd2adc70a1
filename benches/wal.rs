//! WAL benchmarks (criterion):
//!
//! - `append/<payload>/<batch>`: `Wal::save` of a batch of 1, 16 or 256 entries of 100 B or
//!   4 KiB, one fdatasync per batch. Throughput counts command bytes.
//! - `raw/<payload>/<batch>`: the same number of bytes per call written with a plain
//!   `write` + `fdatasync` to an appending file in the same directory: the disk's own rate,
//!   so `append / raw` is the WAL's efficiency, measured in one run on one disk.
//! - `encode/<payload>/256`: framing a 256-entry batch in memory (no I/O).
//! - `replay/100B`: `Wal::open` (read-only, page cache warm) of a log of at least 256 MiB
//!   of 100-byte entries. Throughput counts entries.
//!
//! - Before those, a paired report (printed, not criterion): each round one WAL batch then
//!   one raw write + fdatasync of the same bytes, so both see the same disk moment; the
//!   ratio of medians is the number to quote. See [`paired_report`].
//!
//! Run: `cargo bench --bench wal -- --warm-up-time 1 --measurement-time 3`.
//! Set `WAL_BENCH_DIR` to benchmark another disk (default: the system temp directory).

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use kvstore::raft::Entry;
use kvstore::wal::{Options, Record, Wal, format};

const PAYLOADS_BYTES: [usize; 2] = [100, 4096];
const BATCH_SIZES: [usize; 3] = [1, 16, 256];
/// The replay log must be at least this large.
const REPLAY_LOG_BYTES_MIN: u64 = 256 * 1024 * 1024;
/// Entries in the replay log: 2.4 M frames of ~114 B are ~261 MiB (asserted >= the minimum).
const REPLAY_ENTRIES: u64 = 2_400_000;
/// Entries per save while building the replay log (setup speed only).
const REPLAY_BUILD_BATCH: usize = 4096;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("WAL_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(PathBuf::from(base)),
        None => tempfile::tempdir(),
    }
    .expect("temporary directory")
}

fn payload_name(payload_bytes: usize) -> String {
    if payload_bytes >= 1024 {
        format!("{}KiB", payload_bytes / 1024)
    } else {
        format!("{payload_bytes}B")
    }
}

fn command(index: u64, payload_bytes: usize) -> Vec<u8> {
    let mut command = vec![b'v'; payload_bytes];
    let tag = index.to_le_bytes();
    let tag_bytes = tag.len().min(payload_bytes);
    command[..tag_bytes].copy_from_slice(&tag[..tag_bytes]);
    command
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    for payload_bytes in PAYLOADS_BYTES {
        for batch in BATCH_SIZES {
            group.throughput(Throughput::Bytes((payload_bytes * batch) as u64));
            let id = BenchmarkId::new(payload_name(payload_bytes), batch);
            group.bench_function(id, |b| {
                let dir = bench_dir();
                let (mut wal, _) = Wal::open(dir.path(), Options::default()).expect("open");
                let mut entries: Vec<Entry> = (1..=batch as u64)
                    .map(|index| Entry {
                        index,
                        term: 1,
                        command: command(index, payload_bytes),
                    })
                    .collect();
                b.iter(|| {
                    let next = wal.last_index() + 1;
                    for (offset, entry) in entries.iter_mut().enumerate() {
                        entry.index = next + offset as u64;
                    }
                    wal.save(None, black_box(&entries)).expect("save");
                });
            });
        }
    }
    group.finish();
}

fn raw(c: &mut Criterion) {
    let mut group = c.benchmark_group("raw");
    for payload_bytes in PAYLOADS_BYTES {
        for batch in BATCH_SIZES {
            let bytes = payload_bytes * batch;
            group.throughput(Throughput::Bytes(bytes as u64));
            let id = BenchmarkId::new(payload_name(payload_bytes), batch);
            group.bench_function(id, |b| {
                let dir = bench_dir();
                let mut file = File::create(dir.path().join("raw.bin")).expect("create");
                let buffer = vec![b'v'; bytes];
                b.iter(|| {
                    file.write_all(black_box(&buffer)).expect("write");
                    file.sync_data().expect("fdatasync");
                });
            });
        }
    }
    group.finish();
}

/// Builds a log of at least [`REPLAY_LOG_BYTES_MIN`] of 100-byte entries.
fn build_replay_log() -> (tempfile::TempDir, u64) {
    let dir = bench_dir();
    let (mut wal, _) = Wal::open(dir.path(), Options::default()).expect("open");
    let mut batch: Vec<Entry> = (1..=REPLAY_BUILD_BATCH as u64)
        .map(|index| Entry {
            index,
            term: 1,
            command: command(index, 100),
        })
        .collect();
    while wal.last_index() < REPLAY_ENTRIES {
        let next = wal.last_index() + 1;
        let count = (REPLAY_ENTRIES - wal.last_index()).min(REPLAY_BUILD_BATCH as u64) as usize;
        batch.truncate(count);
        for (offset, entry) in batch.iter_mut().enumerate() {
            entry.index = next + offset as u64;
        }
        wal.save(None, &batch).expect("save");
    }
    assert!(
        wal.size_bytes() >= REPLAY_LOG_BYTES_MIN,
        "{} bytes",
        wal.size_bytes()
    );
    (dir, wal.last_index())
}

fn replay(c: &mut Criterion) {
    // Built on first use only, so filtering the run to other groups skips this setup.
    let mut log: Option<(tempfile::TempDir, u64)> = None;
    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(REPLAY_ENTRIES));
    group.bench_function("100B", |b| {
        let (dir, entries) = log.get_or_insert_with(|| {
            let started = Instant::now();
            let (dir, entries) = build_replay_log();
            eprintln!(
                "replay log: {entries} entries of 100 B built in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            (dir, entries)
        });
        let entries = *entries;
        b.iter_with_large_drop(|| {
            let options = Options {
                read_only: true,
                ..Options::default()
            };
            let (wal, recovered) = Wal::open(dir.path(), options).expect("replay");
            assert_eq!(recovered.entries.len() as u64, entries);
            (wal, recovered)
        });
    });
    group.finish();
}

/// Rounds per configuration of the paired WAL-vs-raw comparison.
const PAIRED_ROUNDS: usize = 200;

/// Median and mean of durations (sorts in place).
fn median_and_mean(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let total: Duration = samples.iter().sum();
    (samples[samples.len() / 2], total / samples.len() as u32)
}

/// The disk's fdatasync latency drifts a lot on a shared machine (here it flips between
/// ~0.15 ms and ~4 ms as other builds come and go), so the criterion groups (`append`,
/// then `raw`, a minute apart) can see different disks. This pairs them: each round does
/// one WAL batch and one raw write + fdatasync of the same command bytes in the same
/// directory, alternating which goes first. The ratio of the means (total bytes over total
/// time, both sides seeing the same mix of slow and fast moments) is the number to quote.
/// Skip with `WAL_BENCH_PAIRED=0`.
fn paired_report() {
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    if !benchmarking || std::env::var("WAL_BENCH_PAIRED").is_ok_and(|value| value == "0") {
        return; // `cargo test --benches` runs each benchmark once; skip the report there.
    }
    println!(
        "paired WAL vs raw write+fdatasync, {PAIRED_ROUNDS} rounds each (median / mean latency):"
    );
    for payload_bytes in PAYLOADS_BYTES {
        for batch in BATCH_SIZES {
            let (mut wal_times, mut raw_times) = paired(payload_bytes, batch);
            let (wal_median, wal_mean) = median_and_mean(&mut wal_times);
            let (raw_median, raw_mean) = median_and_mean(&mut raw_times);
            let bytes = (payload_bytes * batch) as f64;
            let mib = |time: Duration| bytes / time.as_secs_f64() / (1024.0 * 1024.0);
            let micros = |time: Duration| time.as_secs_f64() * 1e6;
            println!(
                "  {:>5}/{batch:<3}  wal {:>7.0}/{:>7.0} us {:>8.2} MiB/s   raw {:>7.0}/{:>7.0} us {:>8.2} MiB/s   wal/raw {:>5.1}%",
                payload_name(payload_bytes),
                micros(wal_median),
                micros(wal_mean),
                mib(wal_mean),
                micros(raw_median),
                micros(raw_mean),
                mib(raw_mean),
                100.0 * raw_mean.as_secs_f64() / wal_mean.as_secs_f64()
            );
        }
    }
}

/// Latencies of interleaved WAL saves and raw write+fdatasync calls of the same bytes.
fn paired(payload_bytes: usize, batch: usize) -> (Vec<Duration>, Vec<Duration>) {
    let dir = bench_dir();
    let (mut wal, _) = Wal::open(&dir.path().join("wal"), Options::default()).expect("open");
    let mut file = File::create(dir.path().join("raw.bin")).expect("create");
    let buffer = vec![b'v'; payload_bytes * batch];
    let mut entries: Vec<Entry> = (1..=batch as u64)
        .map(|index| Entry {
            index,
            term: 1,
            command: command(index, payload_bytes),
        })
        .collect();
    let (mut wal_times, mut raw_times) = (Vec::new(), Vec::new());
    for round in 0..PAIRED_ROUNDS {
        let next = wal.last_index() + 1;
        for (offset, entry) in entries.iter_mut().enumerate() {
            entry.index = next + offset as u64;
        }
        // Alternate which goes first, so neither always follows the other's fdatasync.
        for turn in [round % 2, 1 - round % 2] {
            let started = Instant::now();
            if turn == 0 {
                wal.save(None, &entries).expect("save");
                wal_times.push(started.elapsed());
            } else {
                file.write_all(&buffer).expect("write");
                file.sync_data().expect("fdatasync");
                raw_times.push(started.elapsed());
            }
        }
    }
    (wal_times, raw_times)
}

/// CPU cost of framing a batch (postcard varints, copy, CRC32), without any I/O: the part
/// of `append` that `raw` does not pay.
fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for payload_bytes in PAYLOADS_BYTES {
        let batch = 256;
        group.throughput(Throughput::Bytes((payload_bytes * batch) as u64));
        let records: Vec<Record> = (1..=batch as u64)
            .map(|index| {
                Record::Entry(Entry {
                    index,
                    term: 1,
                    command: command(index, payload_bytes),
                })
            })
            .collect();
        let mut buffer = Vec::new();
        let id = BenchmarkId::new(payload_name(payload_bytes), batch);
        group.bench_function(id, |b| {
            b.iter(|| {
                buffer.clear();
                for record in &records {
                    format::encode_record(&record.as_ref(), false, &mut buffer).expect("encode");
                }
                black_box(buffer.len())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, append, raw, encode, replay);

fn main() {
    paired_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
