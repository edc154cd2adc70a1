//! Arbitrary bytes fed to the raft message decoders (postcard [`Message`] and the
//! transport's [`Envelope`]) never panic and never allocate beyond serde's cautious bound
//! (1 MiB per collection, well under the transport's `ENVELOPE_BYTES_MAX`), whatever the
//! lengths the bytes claim. Valid encodings, mutated, are refused or decoded, never a panic.
//!
//! The WAL record decoder has the same properties in `tests/it/wal_decode_proptest.rs`.

use kvstore::raft::{AppendReject, Body, Entry, Message, SnapshotMeta};
use kvstore::transport::{ENVELOPE_BYTES_MAX, Envelope};
use proptest::prelude::*;

use crate::allocations;

/// serde preallocates at most 1 MiB for a collection whose claimed length it cannot trust
/// (`serde::de::size_hint::cautious`); anything a decode allocates beyond the input's own
/// size must stay within that.
const CAUTIOUS_BYTES_MAX: usize = 1024 * 1024;

/// Decodes `bytes` as `T`; returns the largest single allocation made meanwhile.
fn largest_allocation<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> usize {
    allocations::start();
    let decoded = postcard::from_bytes::<T>(bytes);
    drop(decoded);
    allocations::stop()
}

fn bounded(bytes: &[u8]) -> usize {
    CAUTIOUS_BYTES_MAX.max(bytes.len() * 64)
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(index, term, command)| Entry {
            index,
            term,
            command,
        })
}

fn arb_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(last_index, last_term)| Body::PreVote {
            last_index,
            last_term
        }),
        any::<bool>().prop_map(|granted| Body::VoteResponse { granted }),
        (
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(arb_entry(), 0..4),
            any::<u64>()
        )
            .prop_map(|(prev_index, prev_term, entries, commit)| Body::Append {
                prev_index,
                prev_term,
                entries,
                commit
            }),
        (any::<u64>(), any::<Option<(u64, u64)>>()).prop_map(|(index, reject)| {
            Body::AppendResponse {
                index,
                reject: reject.map(|(conflict_index, conflict_term)| AppendReject {
                    conflict_index,
                    conflict_term,
                }),
            }
        }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(commit, read_seq)| Body::Heartbeat { commit, read_seq }),
        (any::<u64>(), any::<Option<u64>>())
            .prop_map(|(context, index)| Body::ReadIndexResponse { context, index }),
        (
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec("[a-z0-9]{0,8}", 0..4)
        )
            .prop_map(|(index, term, voters)| Body::Snapshot {
                meta: SnapshotMeta {
                    index,
                    term,
                    voters
                }
            }),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    ("[a-z0-9]{0,6}", "[a-z0-9]{0,6}", any::<u64>(), arb_body()).prop_map(
        |(from, to, term, body)| Message {
            from,
            to,
            term,
            body,
        },
    )
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    (
        "[a-z0-9-]{0,20}",
        "[a-z0-9]{0,6}",
        "[a-z0-9:/.]{0,30}",
        proptest::collection::vec(arb_message(), 0..4),
    )
        .prop_map(|(cluster_id, from, from_client_url, messages)| Envelope {
            cluster_id,
            from,
            from_client_url,
            messages,
        })
}

/// A postcard varint of `value`.
fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_as_a_message_never_panic_or_overallocate(
        bytes in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        let largest = largest_allocation::<Message>(&bytes);
        prop_assert!(largest <= bounded(&bytes), "allocated {largest} bytes");
    }

    #[test]
    fn arbitrary_bytes_as_an_envelope_never_panic_or_overallocate(
        bytes in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        let largest = largest_allocation::<Envelope>(&bytes);
        prop_assert!(largest <= bounded(&bytes), "allocated {largest} bytes");
    }

    #[test]
    fn envelopes_round_trip(envelope in arb_envelope()) {
        let bytes = postcard::to_stdvec(&envelope).unwrap();
        let back: Envelope = postcard::from_bytes(&bytes).unwrap();
        prop_assert_eq!(back.cluster_id, envelope.cluster_id);
        prop_assert_eq!(back.from, envelope.from);
        prop_assert_eq!(back.messages, envelope.messages);
    }

    #[test]
    fn mutated_envelopes_never_panic_or_overallocate(
        envelope in arb_envelope(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = postcard::to_stdvec(&envelope).unwrap();
        if !bytes.is_empty() {
            for (at, byte) in flips {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let largest = largest_allocation::<Envelope>(&bytes);
        prop_assert!(largest <= bounded(&bytes), "allocated {largest} bytes");
    }

    #[test]
    fn huge_claimed_lengths_are_refused_without_huge_allocations(
        claimed in any::<u64>(),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        // cluster id "", from "", url "", then a messages vec claiming `claimed` items.
        let mut bytes = vec![0, 0, 0];
        bytes.extend(varint(claimed));
        bytes.extend(&tail);
        let largest = largest_allocation::<Envelope>(&bytes);
        prop_assert!(largest <= CAUTIOUS_BYTES_MAX, "allocated {largest} bytes");
        // A string claiming more bytes than there are.
        let mut bytes = varint(claimed.max(tail.len() as u64 + 1));
        bytes.extend(&tail);
        let largest = largest_allocation::<Envelope>(&bytes);
        prop_assert!(largest <= CAUTIOUS_BYTES_MAX, "allocated {largest} bytes");
        prop_assert!(postcard::from_bytes::<Envelope>(&bytes).is_err());
    }
}

#[test]
fn the_cautious_bound_is_far_below_the_envelope_limit() {
    const { assert!(CAUTIOUS_BYTES_MAX * 16 <= ENVELOPE_BYTES_MAX) };
}
