//! Golden bytes: pin every field offset of the snapshot header, entry and footer (STYLE.md
//! practice 5). The expected bytes were computed independently (Python `zlib.crc32` and
//! `struct.pack('<...')`), not by this crate. A change here is a format change: bump
//! `SNAPSHOT_VERSION`.

use kvstore::raft::SnapshotMeta;
use kvstore::snapshot::format::{
    self, ENTRY_HEAD_BYTES, FOOTER_BYTES, Footer, HEADER_FIXED_BYTES, Header,
};
use kvstore::snapshot::{KEY_BYTES_MAX, SnapshotDir, VALUE_BYTES_MAX, VOTERS_MAX};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn meta() -> SnapshotMeta {
    SnapshotMeta {
        index: 1234,
        term: 7,
        voters: vec!["n1".to_string(), "n2".to_string(), "n3".to_string()],
    }
}

const HEADER_HEX: &str = "4b56534e41500d0a010000000b000000d2040000000000000700000000000000020000000000000000000000\
     4e143bc90300026e31026e32026e33";
const BODY_HEX: &str =
    "010000000300000005000000000000006178797a020000000000000009000000000000006263";
const FOOTER_HEX: &str = "26000000000000005429c6a5427a36c4";

#[test]
fn header_golden_bytes() {
    let header = Header {
        meta: meta(),
        key_count: 2,
    };
    let bytes = header.encode().unwrap();
    assert_eq!(HEADER_FIXED_BYTES, 48);
    assert_eq!(bytes.len(), 59);
    assert_eq!(header.encoded_bytes(), 59);
    assert_eq!(&bytes[0..8], b"KVSNAP\r\n", "magic at 0..8");
    assert_eq!(&bytes[8..12], &[1, 0, 0, 0], "version u32 LE at 8..12");
    assert_eq!(
        &bytes[12..16],
        &[11, 0, 0, 0],
        "voters bytes u32 LE at 12..16"
    );
    assert_eq!(&bytes[16..24], &1234u64.to_le_bytes(), "index at 16..24");
    assert_eq!(&bytes[24..32], &7u64.to_le_bytes(), "term at 24..32");
    assert_eq!(&bytes[32..40], &2u64.to_le_bytes(), "key_count at 32..40");
    assert_eq!(&bytes[40..44], &[0; 4], "reserved at 40..44");
    assert_eq!(
        &bytes[44..48],
        &[0x4e, 0x14, 0x3b, 0xc9],
        "CRC32 of 0..44 + voters at 44..48"
    );
    assert_eq!(&bytes[48..50], &[3, 0], "voter count u16 at 48..50");
    assert_eq!(&bytes[50..53], &[2, b'n', b'1'], "first voter: length, id");
    assert_eq!(hex(&bytes), HEADER_HEX);
    assert_eq!(format::header_bytes(&bytes), Ok(59));
    assert_eq!(format::decode_header(&bytes), Ok(header));
}

#[test]
fn entry_golden_bytes() {
    let mut buffer = Vec::new();
    format::encode_entry("a", b"xyz", 5, &mut buffer);
    assert_eq!(ENTRY_HEAD_BYTES, 16);
    assert_eq!(&buffer[0..4], &1u32.to_le_bytes(), "key bytes at 0..4");
    assert_eq!(&buffer[4..8], &3u32.to_le_bytes(), "value bytes at 4..8");
    assert_eq!(&buffer[8..16], &5u64.to_le_bytes(), "revision at 8..16");
    assert_eq!(&buffer[16..17], b"a", "key at 16");
    assert_eq!(&buffer[17..20], b"xyz", "value after the key");
    format::encode_entry("bc", b"", 9, &mut buffer);
    assert_eq!(hex(&buffer), BODY_HEX);
    let (first, used) = format::decode_entry(&buffer).unwrap();
    assert_eq!(
        (first.key, first.value, first.revision, used),
        ("a", &b"xyz"[..], 5, 20)
    );
    let (second, used) = format::decode_entry(&buffer[20..]).unwrap();
    assert_eq!(
        (second.key, second.value, second.revision, used),
        ("bc", &b""[..], 9, 18)
    );
}

#[test]
fn footer_golden_bytes() {
    let footer = Footer {
        body_bytes: 38,
        body_crc: 0xa5c6_2954,
    };
    let bytes = footer.encode();
    assert_eq!(FOOTER_BYTES, 16);
    assert_eq!(&bytes[0..8], &38u64.to_le_bytes(), "body bytes at 0..8");
    assert_eq!(
        &bytes[8..12],
        &0xa5c6_2954u32.to_le_bytes(),
        "body CRC at 8..12"
    );
    assert_eq!(
        &bytes[12..16],
        &0xc436_7a42u32.to_le_bytes(),
        "footer CRC at 12..16"
    );
    assert_eq!(hex(&bytes), FOOTER_HEX);
    assert_eq!(Footer::decode(&bytes), Ok(footer));
}

#[test]
fn whole_file_golden_bytes_and_name() {
    let temp = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::open(temp.path(), 3).unwrap();
    let entries = [("a", &b"xyz"[..], 5u64), ("bc", &b""[..], 9)];
    let info = dir.write(&meta(), 2, entries.iter().copied()).unwrap();
    let bytes = std::fs::read(&info.path).unwrap();
    assert_eq!(hex(&bytes), format!("{HEADER_HEX}{BODY_HEX}{FOOTER_HEX}"));
    assert_eq!(info.file_bytes, 113);
    assert_eq!(info.key_count, 2);
    assert_eq!(info.meta, meta());
    let name = "snap-00000000000000001234-00000000000000000007.snap";
    assert_eq!(info.path.file_name().unwrap().to_string_lossy(), name);
    assert_eq!(format::snapshot_file_name(1234, 7), name);
    assert_eq!(format::parse_snapshot_file_name(name), Some((1234, 7)));
    assert_eq!(format::parse_snapshot_file_name("snap-1234-7.snap"), None);
    assert_eq!(
        format::parse_snapshot_file_name(&format!("{name}.1.tmp")),
        None
    );
}

#[test]
fn header_rejects_every_bit_flip_and_broken_limits() {
    let good = Header {
        meta: meta(),
        key_count: 2,
    }
    .encode()
    .unwrap();
    for at in 0..good.len() {
        let mut bad = good.clone();
        bad[at] ^= 0x04;
        let decoded = format::header_bytes(&bad).and_then(|total| {
            if total == bad.len() {
                format::decode_header(&bad)
            } else {
                Err("length changed".to_string())
            }
        });
        assert!(decoded.is_err(), "flip at {at}");
    }
    assert!(format::decode_header(&good[..58]).is_err());
    let mut too_many = meta();
    too_many.voters = (0..=VOTERS_MAX).map(|n| format!("n{n}")).collect();
    let error = Header {
        meta: too_many,
        key_count: 0,
    }
    .encode()
    .unwrap_err();
    assert!(error.contains("VOTERS_MAX"), "{error}");
}

#[test]
fn entry_lengths_are_checked_before_reading() {
    let mut head = [0u8; ENTRY_HEAD_BYTES];
    head[0..4].copy_from_slice(&(KEY_BYTES_MAX as u32 + 1).to_le_bytes());
    let error = format::decode_entry_head(&head, u64::MAX).unwrap_err();
    assert!(error.contains("KEY_BYTES_MAX"), "{error}");
    head[0..4].copy_from_slice(&0u32.to_le_bytes());
    head[4..8].copy_from_slice(&(VALUE_BYTES_MAX as u32 + 1).to_le_bytes());
    let error = format::decode_entry_head(&head, u64::MAX).unwrap_err();
    assert!(error.contains("VALUE_BYTES_MAX"), "{error}");
    head[4..8].copy_from_slice(&10u32.to_le_bytes());
    let error = format::decode_entry_head(&head, 9).unwrap_err();
    assert!(error.contains("9 left"), "{error}");
}
