//! Deciding that this master holds a stray log (issue #3): its `replicated_log`
//! has log id X while the ensemble's log is Y, for instance a volume swapped in
//! from another ensemble, or restored from the wrong backup. Such a member can
//! never vote (every frame it exchanges is refused), so it only hides the fault;
//! it exits with one line saying what to do instead.
//!
//! The rule: exit when at least `--quorum` members of `--masters`, **not counting
//! this master**, have announced one and the same log id Y != X in frames
//! authenticated by the ensemble token (the transport's
//! [`crate::log::tcp::ForeignLogReports`]).
//!
//! Why it never makes a healthy member exit because of strays: the whitelist holds
//! at most `2q - 1` members. If `q` other members are on Y, at most `q - 1` members
//! (this one included) can be on X, so X can never again gather a quorum: this
//! member is the stray, whatever its own opinion. Conversely, fewer than `q` strays
//! never reach the threshold, and two different lineages cannot both see a quorum
//! of the other (that would need `2q > 2q - 1` members): at most one side of any
//! split is ever told to leave. Counting this master itself would be meaningless (it
//! is on X, not Y) and would lower the bar to `q - 1` strays.
//!
//! What it does not cover: a token holder can claim any whitelisted sender address
//! (see [`crate::log::frame`]), so a malicious member that knows the token could
//! forge a quorum of reports and stop a healthy member. The token and the whitelist
//! keep out strangers, not a compromised member.

use std::collections::{BTreeMap, BTreeSet};

/// A quorum of the other members is on a log other than ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignLogVerdict {
    /// This master's log id.
    pub ours: u64,
    /// The log id a quorum of the other members announced.
    pub ensemble: u64,
    /// The members that announced it, sorted.
    pub reporters: Vec<String>,
}

/// The decision described in the module documentation. `ours` is 0 while this
/// master's log is not initialized (an empty member is never a stray: it adopts or
/// catches up). `reports` maps a member address to the foreign log id it
/// announced last; addresses outside `whitelist`, and `self_address`, are ignored.
pub fn verdict(
    ours: u64,
    self_address: &str,
    whitelist: &BTreeSet<String>,
    quorum: usize,
    reports: &BTreeMap<String, u64>,
) -> Option<ForeignLogVerdict> {
    if ours == 0 || quorum == 0 {
        return None;
    }
    let mut by_log: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (member, &log_id) in reports {
        if member == self_address || !whitelist.contains(member) || log_id == 0 || log_id == ours {
            continue;
        }
        by_log.entry(log_id).or_default().push(member.clone());
    }
    // At most one log id can reach a quorum of a whitelist of <= 2q-1 members; if
    // the whitelist were larger (refused at startup), the first one found is named.
    by_log
        .into_iter()
        .find(|(_, reporters)| reporters.len() >= quorum)
        .map(|(ensemble, reporters)| ForeignLogVerdict {
            ours,
            ensemble,
            reporters,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whitelist(n: u8) -> BTreeSet<String> {
        (1..=n).map(|i| format!("127.0.0.{i}:5050")).collect()
    }

    fn reports(entries: &[(u8, u64)]) -> BTreeMap<String, u64> {
        entries
            .iter()
            .map(|(i, id)| (format!("127.0.0.{i}:5050"), *id))
            .collect()
    }

    const ME: &str = "127.0.0.1:5050";

    #[test]
    fn a_quorum_of_the_other_members_on_another_log_is_a_verdict() {
        let found = verdict(7, ME, &whitelist(3), 2, &reports(&[(2, 9), (3, 9)]));
        assert_eq!(
            found,
            Some(ForeignLogVerdict {
                ours: 7,
                ensemble: 9,
                reporters: vec!["127.0.0.2:5050".into(), "127.0.0.3:5050".into()],
            })
        );
    }

    #[test]
    fn a_minority_of_strays_never_makes_a_member_exit() {
        // 3 members: one stray.
        assert_eq!(verdict(7, ME, &whitelist(3), 2, &reports(&[(2, 9)])), None);
        // 5 members: two strays on the same log.
        assert_eq!(
            verdict(7, ME, &whitelist(5), 3, &reports(&[(2, 9), (3, 9)])),
            None
        );
        // 5 members: three strays, but on different logs.
        assert_eq!(
            verdict(7, ME, &whitelist(5), 3, &reports(&[(2, 9), (3, 9), (4, 8)])),
            None
        );
    }

    #[test]
    fn this_master_and_strangers_do_not_count() {
        let mut forged = reports(&[(1, 9), (2, 9)]);
        forged.insert("127.0.0.99:5050".into(), 9);
        assert_eq!(verdict(7, ME, &whitelist(3), 2, &forged), None);
    }

    #[test]
    fn an_uninitialized_member_is_never_a_stray() {
        assert_eq!(
            verdict(0, ME, &whitelist(3), 2, &reports(&[(2, 9), (3, 9)])),
            None
        );
    }

    #[test]
    fn reports_of_our_own_log_or_of_none_do_not_count() {
        assert_eq!(
            verdict(7, ME, &whitelist(3), 2, &reports(&[(2, 7), (3, 0)])),
            None
        );
    }

    /// Over every assignment of 5 members to 3 lineages (and empty): nobody exits
    /// unless some lineage is held by a quorum, and its holders never exit.
    #[test]
    fn at_most_one_side_of_any_split_exits_and_never_a_quorum_holder() {
        let members = whitelist(5);
        let names: Vec<String> = members.iter().cloned().collect();
        let quorum = 3;
        for assignment in 0..4u32.pow(5) {
            let logs: Vec<u64> = (0..5)
                .map(|k| u64::from((assignment >> (2 * k)) & 3))
                .collect();
            let announced: BTreeMap<String, u64> =
                names.iter().cloned().zip(logs.iter().copied()).collect();
            let mut exiting_logs = BTreeSet::new();
            for (k, me) in names.iter().enumerate() {
                if verdict(logs[k], me, &members, quorum, &announced).is_some() {
                    exiting_logs.insert(logs[k]);
                    let holders = logs.iter().filter(|l| **l == logs[k]).count();
                    assert!(
                        holders < quorum,
                        "{logs:?}: a quorum holder of {} exits",
                        logs[k]
                    );
                }
            }
            let winners: Vec<u64> = (1..4)
                .filter(|id| logs.iter().filter(|l| **l == *id).count() >= quorum)
                .collect();
            if winners.is_empty() {
                assert!(
                    exiting_logs.is_empty(),
                    "{logs:?}: exit without a quorum elsewhere"
                );
            } else {
                assert!(!exiting_logs.contains(&winners[0]), "{logs:?}");
            }
        }
    }
}
