//! InstallSnapshot streaming: chunked transfer round trips, resumption after a lost chunk,
//! corrupted and foreign chunks rejected, interrupted transfers leave nothing behind, and
//! memory stays bounded by the chunk and read buffer sizes (a counting allocator).

use std::path::{Path, PathBuf};

use kvstore::Error;
use kvstore::raft::SnapshotMeta;
use kvstore::snapshot::{Chunk, READ_BUFFER_BYTES, SnapshotDir, SnapshotInfo};
use kvstore::wal::fs::FaultyFs;

use crate::allocations;

const CHUNK_BYTES: usize = 64 * 1024;

fn meta(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term: 3,
        voters: vec!["n1".to_string(), "n2".to_string(), "n3".to_string()],
    }
}

/// A leader-side snapshot of `count` keys (about 125 bytes each).
fn leader_snapshot(dir: &Path, count: usize) -> SnapshotInfo {
    let snapshots = SnapshotDir::open(dir, 3).unwrap();
    let keys: Vec<String> = (0..count).map(|n| format!("key{n:07}")).collect();
    let value = [0x5a_u8; 100];
    let entries = keys
        .iter()
        .enumerate()
        .map(|(n, key)| (key.as_str(), &value[..], n as u64 + 1));
    snapshots.write(&meta(500), count as u64, entries).unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Sends every chunk from `offset` on, as the leader would, following the follower's
/// answers.
fn send_from(info: &SnapshotInfo, incoming: &mut kvstore::snapshot::Incoming, mut offset: u64) {
    while offset < info.file_bytes {
        let chunk = SnapshotDir::chunk(info, offset, CHUNK_BYTES).unwrap();
        assert!(chunk.data.len() <= CHUNK_BYTES);
        offset = incoming.accept(&chunk).unwrap();
    }
}

#[test]
fn a_multi_chunk_transfer_round_trips_byte_for_byte() {
    let temp = tempfile::tempdir().unwrap();
    let info = leader_snapshot(&temp.path().join("leader"), 20_000);
    assert!(info.file_bytes > 20 * CHUNK_BYTES as u64);
    let follower = SnapshotDir::open(&temp.path().join("follower"), 3).unwrap();
    let mut incoming = follower.receive(&info.meta, info.file_bytes).unwrap();
    send_from(&info, &mut incoming, 0);
    assert!(incoming.is_complete());
    let installed = incoming.finish().unwrap();
    assert_eq!(installed.meta, info.meta);
    assert_eq!(installed.key_count, 20_000);
    assert_eq!(
        std::fs::read(&installed.path).unwrap(),
        std::fs::read(&info.path).unwrap()
    );
    assert_eq!(
        installed.path.file_name(),
        info.path.file_name(),
        "installed under its snapshot name"
    );
    let mut count = 0;
    SnapshotDir::load(&installed.path, |_, _, _| {
        count += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(count, 20_000);
    assert_eq!(files(follower.path()).len(), 1);
}

#[test]
fn a_lost_chunk_is_answered_with_the_expected_offset_and_the_sender_resumes() {
    let temp = tempfile::tempdir().unwrap();
    let info = leader_snapshot(&temp.path().join("leader"), 5_000);
    let follower = SnapshotDir::open(&temp.path().join("follower"), 3).unwrap();
    let mut incoming = follower.receive(&info.meta, info.file_bytes).unwrap();
    let first = SnapshotDir::chunk(&info, 0, CHUNK_BYTES).unwrap();
    assert_eq!(incoming.accept(&first).unwrap(), CHUNK_BYTES as u64);
    // The second chunk is lost; the third arrives and is ignored.
    let third = SnapshotDir::chunk(&info, 2 * CHUNK_BYTES as u64, CHUNK_BYTES).unwrap();
    assert_eq!(incoming.accept(&third).unwrap(), CHUNK_BYTES as u64);
    // A duplicate of the first is ignored too.
    assert_eq!(incoming.accept(&first).unwrap(), CHUNK_BYTES as u64);
    assert_eq!(incoming.next_offset(), CHUNK_BYTES as u64);
    // The sender resumes from the answered offset, with a different chunk size even: a
    // chunk overlapping next_offset contributes its new tail.
    let overlapping = SnapshotDir::chunk(&info, 1000, 2 * CHUNK_BYTES).unwrap();
    let next = incoming.accept(&overlapping).unwrap();
    assert_eq!(next, 1000 + 2 * CHUNK_BYTES as u64);
    send_from(&info, &mut incoming, next);
    let installed = incoming.finish().unwrap();
    assert_eq!(
        std::fs::read(&installed.path).unwrap(),
        std::fs::read(&info.path).unwrap()
    );
}

#[test]
fn a_corrupted_chunk_is_rejected_and_its_resend_accepted() {
    let temp = tempfile::tempdir().unwrap();
    let info = leader_snapshot(&temp.path().join("leader"), 2_000);
    let follower = SnapshotDir::open(&temp.path().join("follower"), 3).unwrap();
    let mut incoming = follower.receive(&info.meta, info.file_bytes).unwrap();
    let good = SnapshotDir::chunk(&info, 0, CHUNK_BYTES).unwrap();
    let mut bad = good.clone();
    bad.data[100] ^= 0x01;
    let error = incoming.accept(&bad).unwrap_err();
    assert!(
        matches!(&error, Error::Decode(detail) if detail.contains("CRC")),
        "{error}"
    );
    assert_eq!(incoming.next_offset(), 0);
    assert_eq!(incoming.accept(&good).unwrap(), CHUNK_BYTES as u64);
    send_from(&info, &mut incoming, CHUNK_BYTES as u64);
    incoming.finish().unwrap();
}

#[test]
fn a_chunk_of_another_snapshot_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let info = leader_snapshot(&temp.path().join("leader"), 100);
    let follower = SnapshotDir::open(&temp.path().join("follower"), 3).unwrap();
    let mut incoming = follower.receive(&info.meta, info.file_bytes).unwrap();
    let chunk = SnapshotDir::chunk(&info, 0, CHUNK_BYTES).unwrap();
    for foreign in [
        Chunk {
            index: 499,
            ..chunk.clone()
        },
        Chunk {
            term: 4,
            ..chunk.clone()
        },
        Chunk {
            total_bytes: chunk.total_bytes + 1,
            ..chunk.clone()
        },
    ] {
        let error = incoming.accept(&foreign).unwrap_err();
        assert!(matches!(error, Error::InvalidInput(_)), "{error}");
    }
    assert_eq!(incoming.next_offset(), 0);
}

#[test]
fn an_interrupted_transfer_leaves_no_file() {
    let temp = tempfile::tempdir().unwrap();
    let info = leader_snapshot(&temp.path().join("leader"), 2_000);
    let follower_dir = temp.path().join("follower");
    let follower = SnapshotDir::open(&follower_dir, 3).unwrap();
    // Dropped part-way (the leader went away).
    let mut incoming = follower.receive(&info.meta, info.file_bytes).unwrap();
    incoming
        .accept(&SnapshotDir::chunk(&info, 0, CHUNK_BYTES).unwrap())
        .unwrap();
    assert_eq!(files(&follower_dir).len(), 1, "the temporary file");
    drop(incoming);
    assert!(files(&follower_dir).is_empty());
    // Finished too early.
    let mut incoming = follower.receive(&info.meta, info.file_bytes).unwrap();
    incoming
        .accept(&SnapshotDir::chunk(&info, 0, CHUNK_BYTES).unwrap())
        .unwrap();
    assert!(
        incoming
            .finish()
            .unwrap_err()
            .to_string()
            .contains("incomplete")
    );
    assert!(files(&follower_dir).is_empty());
    // A crash (no drop): the next open removes the temporary file.
    let mut incoming = follower.receive(&info.meta, info.file_bytes).unwrap();
    incoming
        .accept(&SnapshotDir::chunk(&info, 0, CHUNK_BYTES).unwrap())
        .unwrap();
    std::mem::forget(incoming);
    assert_eq!(files(&follower_dir).len(), 1);
    SnapshotDir::open(&follower_dir, 3).unwrap();
    assert!(files(&follower_dir).is_empty());
    assert!(follower.list().unwrap().is_empty());
}

#[test]
fn a_received_file_that_is_not_the_announced_snapshot_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let info = leader_snapshot(&temp.path().join("leader"), 500);
    let follower = SnapshotDir::open(&temp.path().join("follower"), 3).unwrap();
    let mut announced = info.meta.clone();
    announced.voters.pop();
    let mut incoming = follower.receive(&announced, info.file_bytes).unwrap();
    send_from(&info, &mut incoming, 0);
    let error = incoming.finish().unwrap_err();
    assert!(matches!(error, Error::Corruption { .. }), "{error}");
    assert!(files(follower.path()).is_empty());
    // Damage that every chunk CRC missed (the sender read a rotten file) is caught too.
    let mut bytes = std::fs::read(&info.path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&info.path, &bytes).unwrap();
    let mut incoming = follower.receive(&info.meta, info.file_bytes).unwrap();
    send_from(&info, &mut incoming, 0);
    let error = incoming.finish().unwrap_err().to_string();
    assert!(error.contains("body CRC"), "{error}");
    assert!(files(follower.path()).is_empty());
}

#[test]
fn memory_stays_bounded_by_chunk_and_read_buffer() {
    let temp = tempfile::tempdir().unwrap();
    let info = leader_snapshot(&temp.path().join("leader"), 40_000);
    assert!(info.file_bytes > 4 * READ_BUFFER_BYTES as u64);
    let follower = SnapshotDir::open(&temp.path().join("follower"), 3).unwrap();
    let mut incoming = follower.receive(&info.meta, info.file_bytes).unwrap();
    allocations::start();
    let mut offset = 0;
    while offset < info.file_bytes {
        let chunk = SnapshotDir::chunk(&info, offset, CHUNK_BYTES).unwrap();
        offset = incoming.accept(&chunk).unwrap();
        let temporary = &files(follower.path())[0];
        let on_disk = std::fs::metadata(follower.path().join(temporary))
            .unwrap()
            .len();
        assert_eq!(on_disk, offset, "accepted bytes are written through");
    }
    let streaming = allocations::restart();
    incoming.finish().unwrap();
    let finishing = allocations::stop();
    assert!(
        streaming <= CHUNK_BYTES + 4096,
        "largest allocation while streaming: {streaming}"
    );
    assert!(
        finishing <= READ_BUFFER_BYTES + 4096,
        "largest allocation while finishing: {finishing}"
    );
}

/// A leader's snapshot of 2,000 keys, and a follower's snapshot directory (under `temp`,
/// in `follower_dir`) on a file system whose faults the test sets.
fn faulty_follower(temp: &Path) -> (SnapshotInfo, FaultyFs, PathBuf, SnapshotDir) {
    let info = leader_snapshot(&temp.join("leader"), 2_000);
    let file_system = FaultyFs::new();
    let follower_dir = temp.join("follower");
    let follower =
        SnapshotDir::open_with(&follower_dir, 3, std::sync::Arc::new(file_system.clone())).unwrap();
    (info, file_system, follower_dir, follower)
}

#[test]
fn a_failed_write_or_sync_while_receiving_abandons_the_transfer_and_its_file() {
    let temp = tempfile::tempdir().unwrap();
    let (info, file_system, follower_dir, follower) = faulty_follower(temp.path());
    let mut incoming = follower.receive(&info.meta, info.file_bytes).unwrap();
    let first = SnapshotDir::chunk(&info, 0, CHUNK_BYTES).unwrap();
    file_system.with_faults(|faults| faults.short_next_write_bytes = Some(100));
    assert!(matches!(incoming.accept(&first), Err(Error::Io { .. })));
    let error = incoming.accept(&first).unwrap_err().to_string();
    assert!(error.contains("start the transfer again"), "{error}");
    drop(incoming);
    assert!(files(&follower_dir).is_empty());

    let mut incoming = follower.receive(&info.meta, info.file_bytes).unwrap();
    send_from(&info, &mut incoming, 0);
    file_system.with_faults(|faults| faults.fail_next_sync = true);
    assert!(matches!(incoming.finish(), Err(Error::Io { .. })));
    assert!(files(&follower_dir).is_empty());
    assert!(follower.list().unwrap().is_empty());
}

/// The raft port's receiver drops a transfer whose write failed, file and all, so the
/// leader's next offer (from offset 0, once the disk has room again) succeeds; it used to
/// keep the failed transfer and refuse every later chunk of that snapshot.
#[test]
fn the_receiver_starts_a_failed_transfer_afresh_on_the_next_offer() {
    use kvstore::transport::SnapshotReceiver;
    let temp = tempfile::tempdir().unwrap();
    let (info, file_system, follower_dir, follower) = faulty_follower(temp.path());
    let receiver = SnapshotReceiver::new(std::sync::Arc::new(follower));
    let first = SnapshotDir::chunk(&info, 0, CHUNK_BYTES).unwrap();
    assert_eq!(
        receiver.accept(&info.meta, &first).unwrap(),
        CHUNK_BYTES as u64
    );
    let second = SnapshotDir::chunk(&info, CHUNK_BYTES as u64, CHUNK_BYTES).unwrap();
    file_system.with_faults(|faults| faults.short_next_write_bytes = Some(100));
    assert!(matches!(
        receiver.accept(&info.meta, &second),
        Err(Error::Io { .. })
    ));
    assert!(files(&follower_dir).is_empty(), "the partial file is gone");
    // The leader offers again from the start; the transfer completes.
    let mut offset = 0;
    while offset < info.file_bytes {
        let chunk = SnapshotDir::chunk(&info, offset, CHUNK_BYTES).unwrap();
        offset = receiver.accept(&info.meta, &chunk).unwrap();
    }
    let received = receiver
        .received(info.meta.index, info.meta.term)
        .expect("received");
    assert_eq!(received.file_bytes, info.file_bytes);
}
