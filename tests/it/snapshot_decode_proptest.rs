//! Arbitrary bytes fed to the snapshot decoders (header, entry, footer, and whole files
//! through `load` and `list`) never panic and never allocate beyond the limits: a counting
//! global allocator records the largest single allocation, which must stay within the
//! input's size (plus the fixed read buffer for file-level decoding).

use kvstore::raft::SnapshotMeta;
use kvstore::snapshot::format::{self, Footer, HEADER_FIXED_BYTES, Header};
use kvstore::snapshot::{READ_BUFFER_BYTES, SnapshotDir, VOTERS_MAX};
use proptest::prelude::*;

use crate::allocations;

/// Allowance for error messages and paths (short `String`s), and for the decoded voter
/// list (at most `VOTERS_MAX` `String`s, reserved up front).
const MESSAGE_BYTES_MAX: usize = 512 + VOTERS_MAX * std::mem::size_of::<String>();

fn largest_allocation(run: impl FnOnce()) -> usize {
    allocations::start();
    run();
    allocations::stop()
}

fn decode_everything(bytes: &[u8]) {
    if let Ok(total) = format::header_bytes(bytes) {
        assert!(total >= HEADER_FIXED_BYTES);
        if let Some(header) = bytes.get(..total) {
            let _ = format::decode_header(header);
        }
    }
    let _ = format::decode_header(bytes);
    if let Ok((entry, used)) = format::decode_entry(bytes) {
        assert!(used <= bytes.len());
        assert!(entry.key.len() + entry.value.len() < used);
    }
    if let Some(footer) = bytes.get(..16) {
        let _ = Footer::decode(footer);
    }
}

/// A header with a valid CRC around an arbitrary voters section.
fn header_around(voters: &[u8], key_count: u64) -> Vec<u8> {
    let mut fixed = vec![0u8; HEADER_FIXED_BYTES];
    fixed[0..8].copy_from_slice(&format::SNAPSHOT_MAGIC);
    fixed[8..12].copy_from_slice(&format::SNAPSHOT_VERSION.to_le_bytes());
    fixed[12..16].copy_from_slice(&(voters.len() as u32).to_le_bytes());
    fixed[32..40].copy_from_slice(&key_count.to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&fixed[0..44]);
    hasher.update(voters);
    let crc = hasher.finalize();
    fixed[44..48].copy_from_slice(&crc.to_le_bytes());
    fixed.extend_from_slice(voters);
    fixed
}

/// A whole file: a valid header (no voters, `key_count`), an arbitrary body, and a valid
/// footer, so that `load` runs its entry decoder over the body.
fn file_around(body: &[u8], key_count: u64) -> Vec<u8> {
    let mut bytes = header_around(&[0, 0], key_count);
    bytes.extend_from_slice(body);
    let footer = Footer {
        body_bytes: body.len() as u64,
        body_crc: crc32fast::hash(body),
    };
    bytes.extend_from_slice(&footer.encode());
    bytes
}

fn load_and_list(bytes: &[u8]) -> usize {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join(format::snapshot_file_name(0, 0));
    std::fs::write(&path, bytes).unwrap();
    largest_allocation(|| {
        let mut previous: Option<String> = None;
        let loaded = SnapshotDir::load(&path, |key, _, _| {
            assert!(previous.as_ref().is_none_or(|previous| *previous < key));
            previous = Some(key);
            Ok(())
        });
        let listed = kvstore::snapshot::verify(&path);
        // verify checks CRCs and structure; load also decodes every entry.
        assert!(loaded.is_err() || listed.is_ok());
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_or_overallocate(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let largest = largest_allocation(|| decode_everything(&bytes));
        prop_assert!(largest <= bytes.len() + MESSAGE_BYTES_MAX, "allocated {largest}");
    }

    #[test]
    fn arbitrary_voters_with_valid_crc_never_panic_or_overallocate(
        voters in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let bytes = header_around(&voters, 1);
        let largest = largest_allocation(|| decode_everything(&bytes));
        prop_assert!(largest <= bytes.len() + MESSAGE_BYTES_MAX, "allocated {largest}");
    }

    #[test]
    fn huge_claimed_voter_lengths_are_refused_before_reading(length in any::<u32>()) {
        let mut bytes = header_around(&[], 0);
        bytes[12..16].copy_from_slice(&length.to_le_bytes());
        let largest = largest_allocation(|| decode_everything(&bytes));
        prop_assert!(largest <= MESSAGE_BYTES_MAX, "allocated {largest}");
    }

    #[test]
    fn huge_claimed_entry_lengths_are_refused_before_reading(key in any::<u32>(), value in any::<u32>(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = key.to_le_bytes().to_vec();
        bytes.extend(value.to_le_bytes());
        bytes.extend([0u8; 8]);
        bytes.extend(&tail);
        let largest = largest_allocation(|| decode_everything(&bytes));
        prop_assert!(largest <= MESSAGE_BYTES_MAX, "allocated {largest}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_files_never_panic_or_overallocate(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let largest = load_and_list(&bytes);
        prop_assert!(largest <= READ_BUFFER_BYTES + bytes.len() + MESSAGE_BYTES_MAX, "allocated {largest}");
    }

    #[test]
    fn arbitrary_bodies_with_valid_crcs_never_panic_or_overallocate(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        key_count in 0u64..20,
    ) {
        let bytes = file_around(&body, key_count);
        let largest = load_and_list(&bytes);
        prop_assert!(largest <= READ_BUFFER_BYTES + bytes.len() + MESSAGE_BYTES_MAX, "allocated {largest}");
    }

    #[test]
    fn written_snapshots_round_trip(
        map in proptest::collection::btree_map("[a-z]{0,12}", (proptest::collection::vec(any::<u8>(), 0..40), any::<u64>()), 0..50),
        index in any::<u64>(),
        term in any::<u64>(),
    ) {
        let temp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(temp.path(), 1).unwrap();
        let meta = SnapshotMeta { index, term, voters: vec!["a".to_string()] };
        let entries = map.iter().map(|(key, (value, revision))| (key.as_str(), value.as_slice(), *revision));
        let info = dir.write(&meta, map.len() as u64, entries).unwrap();
        let mut loaded = Vec::new();
        let loaded_info = SnapshotDir::load(&info.path, |key, value, revision| {
            loaded.push((key, (value, revision)));
            Ok(())
        }).unwrap();
        prop_assert_eq!(loaded_info.meta, meta);
        prop_assert_eq!(loaded, map.into_iter().collect::<Vec<_>>());
        let header = Header { meta: info.meta.clone(), key_count: info.key_count };
        prop_assert!(info.file_bytes >= header.encoded_bytes() as u64 + 16);
    }
}
