//! Write and load time of a 1,000,000-key snapshot with 100-byte values (issue 5: a node
//! holding that must restart in under 2 s). Ignored by default; run in release:
//!
//! ```text
//! cargo test --release --test it snapshot_perf:: -- --ignored --nocapture
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use kvstore::raft::SnapshotMeta;
use kvstore::snapshot::SnapshotDir;

const KEYS: usize = 1_000_000;
const VALUE_BYTES: usize = 100;

#[test]
#[ignore = "performance measurement; run with --release -- --ignored --nocapture"]
fn write_and_load_one_million_keys() {
    let temp = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::open(temp.path(), 3).unwrap();
    let mut map: BTreeMap<String, (Vec<u8>, u64)> = BTreeMap::new();
    for n in 0..KEYS {
        map.insert(
            format!("key{n:010}"),
            (vec![(n % 251) as u8; VALUE_BYTES], n as u64 + 1),
        );
    }
    let meta = SnapshotMeta {
        index: KEYS as u64,
        term: 1,
        voters: vec!["n1".to_string(), "n2".to_string(), "n3".to_string()],
    };

    let started = Instant::now();
    let entries = map
        .iter()
        .map(|(key, (value, revision))| (key.as_str(), value.as_slice(), *revision));
    let info = dir.write(&meta, KEYS as u64, entries).unwrap();
    let write_ms = started.elapsed().as_secs_f64() * 1000.0;

    let started = Instant::now();
    let listed = dir.list().unwrap();
    assert!(listed[0].is_ok());
    let verify_ms = started.elapsed().as_secs_f64() * 1000.0;

    let started = Instant::now();
    let mut count = 0u64;
    SnapshotDir::load(&info.path, |_, _, _| {
        count += 1;
        Ok(())
    })
    .unwrap();
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(count, KEYS as u64);

    let started = Instant::now();
    let mut loaded: BTreeMap<String, (Vec<u8>, u64)> = BTreeMap::new();
    SnapshotDir::load(&info.path, |key, value, revision| {
        loaded.insert(key, (value, revision));
        Ok(())
    })
    .unwrap();
    let load_into_map_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert!(loaded == map);

    drop(loaded);

    // The same, building the map in bulk from the sorted stream (what a store should do).
    let started = Instant::now();
    let mut sorted: Vec<(String, (Vec<u8>, u64))> = Vec::with_capacity(info.key_count as usize);
    SnapshotDir::load(&info.path, |key, value, revision| {
        sorted.push((key, (value, revision)));
        Ok(())
    })
    .unwrap();
    let bulk: BTreeMap<String, (Vec<u8>, u64)> = sorted.into_iter().collect();
    let load_bulk_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(bulk.len(), KEYS);

    println!(
        "1M keys x {VALUE_BYTES} B values, file {} bytes ({:.1} MiB)",
        info.file_bytes,
        info.file_bytes as f64 / (1024.0 * 1024.0)
    );
    println!("write (incl. fdatasync, rename, dir fsync): {write_ms:.0} ms");
    println!("list (full CRC verify):                      {verify_ms:.0} ms");
    println!("load (decode + CRC, no-op callback):         {load_ms:.0} ms");
    println!("load, BTreeMap::insert per entry:            {load_into_map_ms:.0} ms");
    println!("load into a Vec, then BTreeMap::from_iter:   {load_bulk_ms:.0} ms");
    let restart_ms = verify_ms + load_into_map_ms.min(load_bulk_ms);
    assert!(
        restart_ms < 2000.0,
        "restart path too slow: {restart_ms:.0} ms"
    );
}
