//! Property test: the quorum function the leader commits with (selection, O(n)) agrees with
//! the obvious definition (sort descending, take the majority-th value).

use kvstore::raft::{quorum_value, quorum_value_reference};
use proptest::prelude::*;

proptest! {
    #[test]
    fn quorum_value_matches_sorting(values in prop::collection::vec(0u64..50, 0..9)) {
        prop_assert_eq!(quorum_value(&values), quorum_value_reference(&values));
    }

    #[test]
    fn a_majority_is_at_or_above_the_quorum_value(values in prop::collection::vec(any::<u64>(), 1..9)) {
        let quorum = quorum_value(&values);
        let at_or_above = values.iter().filter(|&&value| value >= quorum).count();
        prop_assert!(at_or_above > values.len() / 2);
        // And no larger value has a majority.
        let above = values.iter().filter(|&&value| value > quorum).count();
        prop_assert!(above <= values.len() / 2);
    }
}
