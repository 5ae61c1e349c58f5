//! The quorum-intersection rule, defined once: the log's configuration check, the
//! master's flags and the operator's planner all ask it.
//!
//! Any two quorums must share a member, or two coordinators could each win a
//! quorum and choose different values for one position. Two sets of `quorum`
//! members out of `members` always intersect exactly when `members < 2 * quorum`,
//! so a whitelist holds at most `2 * quorum - 1` members (the operational guide's
//! rule: `--quorum=2` for 3 masters, 3 for 5).

/// The most members a whitelist may hold for every two quorums of `quorum` members
/// to intersect. `quorum` is at least one: callers refuse zero before asking.
pub const fn max_members(quorum: usize) -> usize {
    2 * quorum - 1
}

/// Whether every two quorums of `quorum` members out of `members` share a member.
pub const fn quorums_intersect(quorum: usize, members: usize) -> bool {
    members <= max_members(quorum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whitelist_holds_at_most_two_quorums_minus_one() {
        // (quorum, the most members): the guide's table, and one beyond it.
        for (quorum, most) in [(1, 1), (2, 3), (3, 5), (4, 7), (5, 9)] {
            assert_eq!(max_members(quorum), most, "quorum {quorum}");
            assert!(quorums_intersect(quorum, most), "quorum {quorum}");
            assert!(!quorums_intersect(quorum, most + 1), "quorum {quorum}");
        }
    }

    #[test]
    fn fewer_members_than_the_maximum_still_intersect() {
        for quorum in 1..=5 {
            for members in quorum..=max_members(quorum) {
                // Two quorums overlap in 2 * quorum - members members.
                assert!(2 * quorum > members);
                assert!(quorums_intersect(quorum, members));
            }
        }
    }
}
