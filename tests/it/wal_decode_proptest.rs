//! Arbitrary bytes fed to the record decoder never panic and never allocate beyond the
//! limits: a counting global allocator records the largest single allocation made while
//! decoding, which must stay within the input's size (the decoder borrows the command and
//! copies at most a vote string out of a limit-checked frame).

use kvstore::raft::Entry;
use kvstore::wal::format::{self, FRAME_HEADER_BYTES, TYPE_FLAG_BATCH_END};
use kvstore::wal::{RECORD_BYTES_MAX, Record};
use proptest::prelude::*;

use crate::allocations;

/// Allowance for the error message a failed decode formats (a short `String`).
const MESSAGE_BYTES_MAX: usize = 256;

/// Decodes `bytes` as a frame, returning the largest allocation it made.
fn largest_allocation_decoding(bytes: &[u8]) -> usize {
    allocations::start();
    let decoded = format::decode_frame(bytes);
    if let Ok(frame) = &decoded {
        assert!(frame.frame_bytes <= bytes.len());
        assert!(frame.frame_bytes - FRAME_HEADER_BYTES <= RECORD_BYTES_MAX);
    }
    drop(decoded);
    allocations::stop()
}

/// A frame header claiming `length` bytes of `kind`, followed by `payload`, with a valid
/// CRC so the payload decoder itself is exercised.
fn framed(kind: u8, length: u32, payload: &[u8]) -> Vec<u8> {
    let type_byte = kind | TYPE_FLAG_BATCH_END;
    let mut bytes = length.to_le_bytes().to_vec();
    bytes.extend(format::frame_crc(type_byte, payload).to_le_bytes());
    bytes.push(type_byte);
    bytes.extend(payload);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_or_overallocate(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(largest_allocation_decoding(&bytes) <= bytes.len() + MESSAGE_BYTES_MAX);
    }

    #[test]
    fn arbitrary_payloads_with_valid_crc_never_panic_or_overallocate(
        kind in 1u8..=6,
        payload in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let bytes = framed(kind, payload.len() as u32, &payload);
        prop_assert!(largest_allocation_decoding(&bytes) <= bytes.len() + MESSAGE_BYTES_MAX);
    }

    #[test]
    fn huge_claimed_lengths_are_refused_before_reading(length in any::<u32>(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let bytes = framed(1, length, &tail);
        let largest = largest_allocation_decoding(&bytes);
        prop_assert!(largest <= MESSAGE_BYTES_MAX, "allocated {largest} bytes");
        if length as usize != tail.len() {
            prop_assert!(format::decode_frame(&bytes).is_err());
        }
    }

    #[test]
    fn entries_round_trip(index in any::<u64>(), term in any::<u64>(), command in proptest::collection::vec(any::<u8>(), 0..300)) {
        let record = Record::Entry(Entry { index, term, command });
        let mut buffer = Vec::new();
        format::encode_record(&record.as_ref(), false, &mut buffer).unwrap();
        let frame = format::decode_frame(&buffer).unwrap();
        prop_assert!(!frame.batch_end);
        prop_assert_eq!(frame.record.to_owned_record(), record);
    }
}
