//! Golden bytes: pin every field offset of the segment header and of each record frame
//! (STYLE.md practice 5). The expected bytes were computed independently (Python
//! `zlib.crc32` and `struct.pack('<...')`), not by this crate. A change here is a format
//! change: bump `SEGMENT_VERSION`.

use kvstore::raft::{Entry, HardState};
use kvstore::wal::format::{self, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES, Seal, SegmentHeader};
use kvstore::wal::{Record, RecordRef};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn encoded(record: &Record, batch_end: bool) -> Vec<u8> {
    let mut buffer = Vec::new();
    let frame_bytes = format::encode_record(&record.as_ref(), batch_end, &mut buffer).unwrap();
    assert_eq!(frame_bytes, buffer.len());
    buffer
}

#[test]
fn segment_header_golden_bytes() {
    let header = SegmentHeader {
        sequence: 3,
        first_index: 1025,
    };
    let bytes = header.encode();
    assert_eq!(SEGMENT_HEADER_BYTES, 40);
    assert_eq!(&bytes[0..8], b"KVSWAL\r\n", "magic at 0..8");
    assert_eq!(&bytes[8..12], &[2, 0, 0, 0], "version u32 LE at 8..12");
    assert_eq!(&bytes[12..16], &[0; 4], "reserved at 12..16");
    assert_eq!(
        &bytes[16..24],
        &3u64.to_le_bytes(),
        "sequence u64 LE at 16..24"
    );
    assert_eq!(
        &bytes[24..32],
        &1025u64.to_le_bytes(),
        "first_index u64 LE at 24..32"
    );
    assert_eq!(
        &bytes[32..36],
        &[0x02, 0x18, 0xb0, 0x2e],
        "CRC32 of 0..32 at 32..36"
    );
    assert_eq!(&bytes[36..40], &[0; 4], "reserved at 36..40");
    assert_eq!(
        hex(&bytes),
        "4b565357414c0d0a0200000000000000030000000000000001040000000000000218b02e00000000"
    );
    assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
    assert_eq!(SegmentHeader::decode_versioned(&bytes), Ok((header, 2)));
    assert_eq!(
        format::segment_file_name(&header),
        "00000000000000000003-00000000000000001025.wal"
    );
    assert_eq!(
        format::parse_segment_file_name("00000000000000000003-00000000000000001025.wal"),
        Some(header)
    );
}

#[test]
fn segment_header_rejects_damage() {
    let good = SegmentHeader {
        sequence: 1,
        first_index: 1,
    }
    .encode();
    for at in 0..36 {
        let mut bad = good;
        bad[at] ^= 0x04;
        assert!(SegmentHeader::decode(&bad).is_err(), "flip at {at}");
    }
    assert!(SegmentHeader::decode(&good[..39]).is_err());
}

#[test]
fn entry_frame_golden_bytes() {
    let entry = Record::Entry(Entry {
        index: 5,
        term: 2,
        command: b"hi".to_vec(),
    });
    let bytes = encoded(&entry, true);
    assert_eq!(FRAME_HEADER_BYTES, 9);
    assert_eq!(
        &bytes[0..4],
        &5u32.to_le_bytes(),
        "payload length u32 LE at 0..4"
    );
    assert_eq!(
        &bytes[4..8],
        &[0x18, 0xcd, 0x09, 0x9c],
        "CRC32(type, payload) at 4..8"
    );
    assert_eq!(bytes[8], 0x81, "type at 8: kind 1 | batch-end 0x80");
    assert_eq!(
        &bytes[9..],
        &[5, 2, 2, b'h', b'i'],
        "index, term, len, command"
    );
    assert_eq!(hex(&encoded(&entry, false)), "05000000c0d9b982010502026869");
    let frame = format::decode_frame(&bytes).unwrap();
    assert!(frame.batch_end);
    assert_eq!(frame.record.to_owned_record(), entry);
}

#[test]
fn other_frames_golden_bytes() {
    let cases = [
        (
            Record::HardState(HardState {
                term: 3,
                vote: Some("n1".to_string()),
                commit: 2,
            }),
            "06000000843702f9820301026e3102",
        ),
        (Record::Truncate { from: 300 }, "0200000002ee8ef083ac02"),
        (
            Record::Reset { index: 7, term: 1 },
            "020000001fcc3b21840701",
        ),
        (
            Record::Compact { index: 7, term: 1 },
            "0200000028a6f920850701",
        ),
        (
            Record::Seal(Seal {
                sequence: 2,
                bytes: 300,
                last_index: 7,
                last_term: 1,
            }),
            "0500000084d1943f8602ac020701",
        ),
    ];
    for (record, golden) in cases {
        let bytes = encoded(&record, true);
        assert_eq!(hex(&bytes), golden, "{record:?}");
        let frame = format::decode_frame(&bytes).unwrap();
        assert_eq!(frame.record.to_owned_record(), record);
        assert_eq!(frame.frame_bytes, bytes.len());
    }
}

#[test]
fn zero_type_and_damage_never_decode() {
    assert!(
        format::decode_frame(&[0u8; 64]).is_err(),
        "zeroed space is not a record"
    );
    let good = encoded(
        &Record::Entry(Entry {
            index: 1,
            term: 1,
            command: b"abc".to_vec(),
        }),
        true,
    );
    for at in 0..good.len() {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[at] ^= 1 << bit;
            assert!(
                format::decode_frame(&bad).is_err(),
                "flip byte {at} bit {bit}"
            );
        }
    }
    for cut in 0..good.len() {
        assert!(format::decode_frame(&good[..cut]).is_err(), "cut at {cut}");
    }
    let borrowed = format::decode_frame(&good).unwrap().record;
    assert!(matches!(borrowed, RecordRef::Entry { command, .. } if command == b"abc"));
}

#[test]
fn segment_header_versions_1_and_2_are_read_others_refused() {
    let header = SegmentHeader {
        sequence: 3,
        first_index: 1025,
    };
    let with_version = |version: u32| {
        let mut bytes = header.encode();
        bytes[8..12].copy_from_slice(&version.to_le_bytes());
        let crc = crc32fast::hash(&bytes[0..32]);
        bytes[32..36].copy_from_slice(&crc.to_le_bytes());
        bytes
    };
    for version in [1, 2] {
        assert_eq!(
            SegmentHeader::decode_versioned(&with_version(version)),
            Ok((header, version))
        );
    }
    for version in [0, 3, u32::MAX] {
        let error = SegmentHeader::decode(&with_version(version)).unwrap_err();
        assert!(error.contains("unsupported segment version"), "{error}");
    }
}
