//! Guarded recovery after quorum loss (issue #11): the pure decisions, shared by
//! the local runtime and the Kubernetes reconcile loop.
//!
//! When fewer than a quorum of members vote on one log, the registry can take no
//! write and the operator cannot tell which of the missing members will come back.
//! It does nothing on its own: it keeps restarting dead members with their data
//! intact (that alone may bring the quorum back), holds every other step, and says
//! in status exactly what is lost, what survives, which survivor holds the most
//! advanced log, and the command that would recover from it.
//!
//! Only a user decides to give the lost members up, by naming a survivor AND the
//! log id it reports (annotation [`ANNOTATION_RECOVER_FROM`], `kubectl mmc recover`):
//! the log id pins the decision to the log the user looked at, so a request written
//! against one situation is refused in another. The operator then:
//!
//! 1. **exports** what the survivor applied of its *learned* prefix
//!    (`GET /registry/export?scope=local`) and keeps it durably;
//! 2. **fences**: stops every member and wipes every member's `replicated_log`, the
//!    survivor's too (after the export is stored), and records the old log id as
//!    fenced: no replica of the old log ever votes again;
//! 3. starts the ensemble empty (auto-initialization draws a new log id), waits for
//!    a leader and **imports** the export;
//! 4. records what was recovered and what may have been lost, and drops the request.
//!
//! What may be lost, and why it is not recovered: positions the survivor accepted
//! but never learned are left out (an accepted value need not be the chosen one,
//! so replaying it could resurrect a write that was never acknowledged and drop one
//! that was); positions the lost members learned beyond the survivor's learned end
//! are gone with them. The record names both ranges.

use std::cmp::Reverse;
use std::fmt;

use crate::master::api::{LogStatus, ReplicaStatus};
use crate::operator::api::recovery::{RecoveryPhase, RecoveryRecord};

/// What the operator observed of one member of the ensemble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberObservation {
    /// `<cluster>-<ordinal>`.
    pub name: String,
    /// Whether it answered `/log/status`.
    pub answering: bool,
    pub status: Option<ReplicaStatus>,
    pub log_id: Option<u64>,
    /// One past the last position it knows to be learned.
    pub learned: u64,
    /// One past the last position it holds (learned or only accepted).
    pub end: u64,
    /// The `--quorum` it runs with, when it answered.
    pub quorum: Option<usize>,
}

impl MemberObservation {
    /// Member `name` as its `/log/status` answer (or its silence) shows it; the
    /// same for both runtimes.
    pub fn from_status(name: String, status: Option<&LogStatus>) -> Self {
        Self {
            name,
            answering: status.is_some(),
            status: status.map(|s| s.status),
            log_id: status.and_then(|s| s.log_id),
            learned: status.map_or(0, |s| s.learned),
            end: status.map_or(0, |s| s.end),
            quorum: status.map(|s| s.quorum),
        }
    }
}

/// A member that answers and holds a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survivor {
    pub name: String,
    pub log_id: u64,
    pub status: ReplicaStatus,
    pub learned: u64,
    pub end: u64,
}

/// A member counted out of the quorum, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostMember {
    pub name: String,
    pub why: String,
}

/// Quorum is lost: what is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumLoss {
    pub quorum: usize,
    /// Members voting on the largest group's log.
    pub voting: usize,
    pub lost: Vec<LostMember>,
    pub survivors: Vec<Survivor>,
    /// Highest learned position, then highest end, then lowest name.
    pub most_advanced: Survivor,
}

/// The verdict on the ensemble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// A quorum votes on one log; or nothing holds a log at all (a new ensemble,
    /// or one wiped on purpose); or no member is lost (every member answers on a
    /// log, e.g. between two steps of a transition): nothing to recover from.
    Healthy,
    QuorumLost(QuorumLoss),
}

/// Hex as the log prints log ids.
pub fn log_id_hex(log_id: u64) -> String {
    format!("{log_id:016x}")
}

/// Quorum lost = on no log do the answering `Voting` members reach the `--quorum`
/// one of them runs with (any of them may lead, needing that many votes; during a
/// transition members run different quorums, and the log stays writable as long
/// as one of them can gather its own). `fallback_quorum` stands in for a member
/// that does not report one.
pub fn assess(members: &[MemberObservation], fallback_quorum: usize) -> Assessment {
    // Per log id: voting members, and the smallest quorum among them.
    let mut groups: std::collections::BTreeMap<u64, (usize, usize)> = Default::default();
    for member in members {
        if let (true, Some(ReplicaStatus::Voting), Some(log_id)) =
            (member.answering, member.status, member.log_id)
        {
            let group = groups.entry(log_id).or_insert((0, usize::MAX));
            group.0 += 1;
            group.1 = group.1.min(member.quorum.unwrap_or(fallback_quorum).max(1));
        }
    }
    if groups.values().any(|(voting, quorum)| voting >= quorum) {
        return Assessment::Healthy;
    }
    let (voting, quorum) = groups.values().copied().max().unwrap_or_else(|| {
        let reported = members.iter().filter_map(|m| m.quorum).max();
        (0, reported.unwrap_or(fallback_quorum).max(1))
    });
    let mut survivors = Vec::new();
    let mut lost = Vec::new();
    for member in members {
        match (member.answering, member.log_id, member.status) {
            (true, Some(log_id), Some(status)) if status != ReplicaStatus::Empty => {
                survivors.push(Survivor {
                    name: member.name.clone(),
                    log_id,
                    status,
                    learned: member.learned,
                    end: member.end,
                });
            }
            (false, ..) => lost.push(LostMember {
                name: member.name.clone(),
                why: "not answering".into(),
            }),
            (true, _, status) => lost.push(LostMember {
                name: member.name.clone(),
                why: format!(
                    "answers but holds no log ({})",
                    status.map_or_else(|| "status unknown".into(), |s| s.to_string())
                ),
            }),
        }
    }
    // Every member answers on a log: none is lost, the ensemble is only between
    // two steps of a transition (3 -> 1 after removing two members, before the
    // last one restarts with --quorum=1; a member restarting with a new quorum).
    // Holding the planner there would stop the transition that restores writes.
    if lost.is_empty() {
        return Assessment::Healthy;
    }
    let most_advanced = survivors
        .iter()
        .max_by_key(|s| (s.learned, s.end, Reverse(s.name.clone())))
        .cloned();
    match most_advanced {
        Some(most_advanced) => Assessment::QuorumLost(QuorumLoss {
            quorum,
            voting,
            lost,
            survivors,
            most_advanced,
        }),
        None => Assessment::Healthy,
    }
}

impl QuorumLoss {
    /// One paragraph for `status.reason` and the `QuorumLost` condition: what is
    /// lost, what survives, and `how_to_recover` (the exact command or annotation).
    pub fn message(
        &self,
        lost_for_seconds: u64,
        threshold_seconds: u64,
        how_to_recover: &str,
    ) -> String {
        let lost = self
            .lost
            .iter()
            .map(|m| format!("{} ({})", m.name, m.why))
            .collect::<Vec<_>>()
            .join(", ");
        let survivors = self
            .survivors
            .iter()
            .map(|s| {
                format!(
                    "{} (log {}, {}, learned up to position {}, holds up to {})",
                    s.name,
                    log_id_hex(s.log_id),
                    s.status,
                    s.learned,
                    s.end
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let wait = if lost_for_seconds >= threshold_seconds {
            format!(
                "the operator does nothing on its own; to give the lost members up and rebuild from the most advanced survivor: {how_to_recover}"
            )
        } else {
            format!(
                "dead members are restarted with their data; a recovery request is taken after {threshold_seconds}s of quorum loss ({}s to go): {how_to_recover}",
                threshold_seconds - lost_for_seconds
            )
        };
        format!(
            "quorum lost for {lost_for_seconds}s: {} of quorum {} voting; lost: {lost}; survivors: {survivors}; most advanced: {} (log {}); {wait}",
            self.voting,
            self.quorum,
            self.most_advanced.name,
            log_id_hex(self.most_advanced.log_id),
        )
    }

    /// The request that recovers from the most advanced survivor.
    pub fn suggested_request(&self) -> RecoveryRequest {
        RecoveryRequest {
            member: self.most_advanced.name.clone(),
            log_id: self.most_advanced.log_id,
        }
    }
}

/// Since when quorum has been lost: kept while lost, dropped when it is not.
pub fn lost_since(previous_ms: Option<u64>, lost: bool, now_ms: u64) -> Option<u64> {
    match (lost, previous_ms) {
        (false, _) => None,
        (true, Some(since)) => Some(since.min(now_ms)),
        (true, None) => Some(now_ms),
    }
}

/// A user's request: recover from `member`, which must report `log_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryRequest {
    pub member: String,
    pub log_id: u64,
}

impl fmt::Display for RecoveryRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.member, log_id_hex(self.log_id))
    }
}

/// Why a recovery request is not acted on. Each says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryRefused {
    #[error(
        "recovery request '{0}' is not <member>:<log id in hex> (e.g. prod-0:00000000deadbeef)"
    )]
    Malformed(String),
    #[error(
        "recovery from {0} refused: quorum is not lost, nothing to recover (remove the request)"
    )]
    QuorumNotLost(String),
    #[error("recovery from {member} refused for now: quorum has been lost for {lost_for_seconds}s, the threshold is {threshold_seconds}s (members that only restart may still come back)")]
    ThresholdNotPassed {
        member: String,
        lost_for_seconds: u64,
        threshold_seconds: u64,
    },
    #[error("recovery from {member} refused: it is not a survivor (survivors: {survivors})")]
    NotASurvivor { member: String, survivors: String },
    #[error("recovery from {member} refused: the request names log {requested}, the member reports log {reported}; look at the status again and name what it reports")]
    LogIdMismatch {
        member: String,
        requested: String,
        reported: String,
    },
}

/// Parses `"<member>:<hex>"`.
pub fn parse_request(text: &str) -> Result<RecoveryRequest, RecoveryRefused> {
    let malformed = || RecoveryRefused::Malformed(text.to_owned());
    let (member, hex) = text.trim().rsplit_once(':').ok_or_else(malformed)?;
    if member.is_empty() || hex.is_empty() || hex.len() > 16 {
        return Err(malformed());
    }
    let log_id = u64::from_str_radix(hex, 16).map_err(|_| malformed())?;
    Ok(RecoveryRequest {
        member: member.to_owned(),
        log_id,
    })
}

/// Checks a request against what is observed. The only way to a recovery.
pub fn validate(
    request: &RecoveryRequest,
    assessment: &Assessment,
    lost_for_seconds: u64,
    threshold_seconds: u64,
) -> Result<QuorumLoss, RecoveryRefused> {
    let Assessment::QuorumLost(loss) = assessment else {
        return Err(RecoveryRefused::QuorumNotLost(request.member.clone()));
    };
    let Some(survivor) = loss.survivors.iter().find(|s| s.name == request.member) else {
        return Err(RecoveryRefused::NotASurvivor {
            member: request.member.clone(),
            survivors: loss
                .survivors
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    if survivor.log_id != request.log_id {
        return Err(RecoveryRefused::LogIdMismatch {
            member: request.member.clone(),
            requested: log_id_hex(request.log_id),
            reported: log_id_hex(survivor.log_id),
        });
    }
    // Last: a request that is wrong in itself is said to be so at once.
    if lost_for_seconds < threshold_seconds {
        return Err(RecoveryRefused::ThresholdNotPassed {
            member: request.member.clone(),
            lost_for_seconds,
            threshold_seconds,
        });
    }
    Ok(loss.clone())
}

/// What `kubectl mmc recover` checks before writing a request: the status says
/// quorum is lost and names `request`'s member as a survivor on its log id. The
/// operator validates again against what it observes when it takes the request.
pub fn check_against_status(
    status: &crate::operator::api::MesosMasterClusterStatus,
    request: &RecoveryRequest,
) -> Result<(), String> {
    let condition = status.conditions.iter().find(|c| {
        c.type_ == crate::operator::api::condition_types::QUORUM_LOST && c.status == "True"
    });
    let Some(condition) = condition else {
        return Err(format!(
            "the status does not say quorum is lost (phase {}); nothing to recover",
            status
                .phase
                .map_or_else(|| "unknown".to_owned(), |phase| format!("{phase:?}"))
        ));
    };
    let survivor = format!("{} (log {}", request.member, log_id_hex(request.log_id));
    if !condition.message.contains(&survivor) {
        return Err(format!(
            "the status does not name {} as a survivor on log {}: {}",
            request.member,
            log_id_hex(request.log_id),
            condition.message
        ));
    }
    Ok(())
}

impl RecoveryRecord {
    /// The record a validated request starts; `members` is the whole old ensemble,
    /// `earlier` the record of a previous recovery (its fenced log ids carry over).
    pub fn start(
        request: &RecoveryRequest,
        loss: &QuorumLoss,
        members: &[String],
        earlier: Option<&RecoveryRecord>,
    ) -> Self {
        let mut fenced_log_ids: Vec<String> = earlier
            .map(|record| record.fenced_log_ids.clone())
            .unwrap_or_default();
        // Every log a survivor held goes: the one recovered from and any stray.
        for log_id in loss.survivors.iter().map(|s| log_id_hex(s.log_id)) {
            if !fenced_log_ids.contains(&log_id) {
                fenced_log_ids.push(log_id);
            }
        }
        let survivor = loss.survivors.iter().find(|s| s.name == request.member);
        Self {
            phase: RecoveryPhase::Exporting,
            from_member: request.member.clone(),
            old_log_id: log_id_hex(request.log_id),
            survivor_learned_end: survivor.map_or(0, |s| s.learned),
            highest_end: loss.survivors.iter().map(|s| s.end).max().unwrap_or(0),
            exported_position: None,
            fenced_members: members.to_vec(),
            lost_members: loss.lost.iter().map(|m| m.name.clone()).collect(),
            fenced_log_ids,
            new_log_id: None,
            may_be_lost: None,
        }
    }

    /// Whether a member reporting `log_id` runs on fenced state.
    pub fn is_fenced(&self, log_id: u64) -> bool {
        self.fenced_log_ids.contains(&log_id_hex(log_id))
    }

    /// The export is complete only if it reflects every position the survivor
    /// learned (`position` is the last one applied, inclusive).
    pub fn export_complete(&self, position: u64, learned_end: u64) -> bool {
        position.saturating_add(1) >= learned_end
    }

    /// After the export is stored: what may be lost, and on to fencing.
    pub fn exported(&self, position: u64) -> Self {
        let lost_members = if self.lost_members.is_empty() {
            "none".to_owned()
        } else {
            self.lost_members.join(", ")
        };
        let unlearned = if self.highest_end > position.saturating_add(1) {
            format!(
                "positions {} to {} were accepted by a survivor but not known to be learned, and are not recovered; ",
                position + 1,
                self.highest_end - 1
            )
        } else {
            String::new()
        };
        Self {
            phase: RecoveryPhase::Fencing,
            exported_position: Some(position),
            may_be_lost: Some(format!(
                "recovered up to position {position} of log {}; {unlearned}anything the lost members ({lost_members}) learned after position {position}, i.e. any write acknowledged after it, is gone",
                self.old_log_id
            )),
            ..self.clone()
        }
    }

    pub fn fenced(&self) -> Self {
        Self {
            phase: RecoveryPhase::Importing,
            ..self.clone()
        }
    }

    pub fn imported(&self, new_log_id: u64) -> Self {
        Self {
            phase: RecoveryPhase::Done,
            new_log_id: Some(log_id_hex(new_log_id)),
            ..self.clone()
        }
    }

    /// One line for status and events.
    pub fn summary(&self) -> String {
        match self.phase {
            RecoveryPhase::Exporting => format!(
                "recovery from {} (log {}): exporting its learned registry",
                self.from_member, self.old_log_id
            ),
            RecoveryPhase::Fencing => format!(
                "recovery from {} (log {}): export stored; fencing {}",
                self.from_member,
                self.old_log_id,
                self.fenced_members.join(", ")
            ),
            RecoveryPhase::Importing => format!(
                "recovery from {} (log {}): old state wiped on {}; waiting for a leader on a new log to import the export",
                self.from_member,
                self.old_log_id,
                self.fenced_members.join(", ")
            ),
            RecoveryPhase::Done => format!(
                "recovered from {} at position {} of log {}; new log {}; fenced {}; {}",
                self.from_member,
                self.exported_position.unwrap_or(0),
                self.old_log_id,
                self.new_log_id.as_deref().unwrap_or("?"),
                self.fenced_members.join(", "),
                self.may_be_lost.as_deref().unwrap_or("")
            ),
        }
    }
}

/// In the `Importing` phase: what the shell does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportStep {
    /// A member reports a fenced log (a process that came back on old state):
    /// wipe it again before anything else.
    Refence { member: String },
    /// Waiting for a leader on a new log.
    Wait { reason: String },
    /// Import into this leader, whose log is `log_id`.
    Import { leader: String, log_id: u64 },
}

/// Decides the `Importing` phase from the observed members and the leader's name.
pub fn import_step(
    record: &RecoveryRecord,
    members: &[MemberObservation],
    leader: Option<&str>,
) -> ImportStep {
    if let Some(stale) = members
        .iter()
        .find(|m| m.answering && m.log_id.is_some_and(|id| record.is_fenced(id)))
    {
        return ImportStep::Refence {
            member: stale.name.clone(),
        };
    }
    let Some(leader) = leader else {
        return ImportStep::Wait {
            reason: "no leader elected on the new log yet".into(),
        };
    };
    match members.iter().find(|m| m.name == leader) {
        Some(MemberObservation {
            log_id: Some(log_id),
            status: Some(ReplicaStatus::Voting),
            ..
        }) => ImportStep::Import {
            leader: leader.to_owned(),
            log_id: *log_id,
        },
        _ => ImportStep::Wait {
            reason: format!("{leader} leads but is not VOTING on a log yet"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(i: u32, answering: bool, log_id: u64, learned: u64, end: u64) -> MemberObservation {
        MemberObservation {
            name: format!("prod-{i}"),
            answering,
            status: answering.then_some(ReplicaStatus::Voting),
            log_id: answering.then_some(log_id),
            learned,
            end,
            quorum: answering.then_some(2),
        }
    }

    fn lost_one_of_three() -> Assessment {
        assess(
            &[
                member(0, true, 7, 40, 41),
                member(1, false, 7, 0, 0),
                member(2, false, 7, 0, 0),
            ],
            2,
        )
    }

    #[test]
    fn a_quorum_on_one_log_is_healthy_and_so_is_an_ensemble_with_no_log() {
        let healthy = [
            member(0, true, 7, 40, 41),
            member(1, true, 7, 40, 40),
            member(2, false, 7, 0, 0),
        ];
        assert_eq!(assess(&healthy, 2), Assessment::Healthy);
        let forming = [member(0, false, 0, 0, 0), member(1, false, 0, 0, 0)];
        assert_eq!(assess(&forming, 2), Assessment::Healthy);
        // Two voting members on different logs are no quorum.
        let split = [
            member(0, true, 7, 40, 41),
            member(1, true, 8, 3, 3),
            member(2, false, 7, 0, 0),
        ];
        assert!(matches!(assess(&split, 2), Assessment::QuorumLost(_)));
        // One master of one (leaving single-master mode, the spec already asks for
        // three): its own --quorum=1 is met.
        let mut single = member(0, true, 7, 40, 41);
        single.quorum = Some(1);
        assert_eq!(assess(&[single], 2), Assessment::Healthy);
        // 3 -> 5 midway: two members still on --quorum=2 can write while the third
        // restarts with --quorum=3; once two run --quorum=3, losing one is a loss.
        let mut restarting = member(1, true, 7, 40, 40);
        restarting.status = Some(ReplicaStatus::Recovering);
        restarting.quorum = Some(3);
        let midway = [
            member(0, true, 7, 40, 41),
            restarting.clone(),
            member(2, true, 7, 40, 41),
        ];
        assert_eq!(assess(&midway, 3), Assessment::Healthy);
        let mut later = midway.clone();
        later[0].quorum = Some(3);
        later[2].quorum = Some(3);
        // A member restarting (answering, on the log, not voting yet) is not lost.
        assert_eq!(assess(&later, 3), Assessment::Healthy);
        later[1].answering = false;
        let Assessment::QuorumLost(loss) = assess(&later, 3) else {
            panic!("two voting of quorum 3 and one gone is a loss");
        };
        assert_eq!((loss.voting, loss.quorum), (2, 3));
        // 3 -> 1 midway: two members removed, the last still on --quorum=2.
        assert_eq!(
            assess(&[member(0, true, 7, 40, 41)], 1),
            Assessment::Healthy
        );
    }

    #[test]
    fn the_message_names_lost_members_survivors_and_the_command() {
        let Assessment::QuorumLost(loss) = lost_one_of_three() else {
            panic!("lost");
        };
        let text = loss.message(
            400,
            300,
            "kubectl mmc recover prod-0 --log-id 0000000000000007",
        );
        for part in [
            "prod-1 (not answering)",
            "prod-2 (not answering)",
            "prod-0 (log 0000000000000007, VOTING, learned up to position 40, holds up to 41)",
            "most advanced: prod-0",
            "kubectl mmc recover prod-0 --log-id 0000000000000007",
            "does nothing on its own",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(loss.message(100, 300, "x").contains("200s to go"));
        assert_eq!(
            loss.suggested_request().to_string(),
            "prod-0:0000000000000007"
        );
    }

    #[test]
    fn requests_parse_and_every_refusal_says_why() {
        let request = parse_request("prod-0:7").expect("parses");
        assert_eq!(
            request,
            RecoveryRequest {
                member: "prod-0".into(),
                log_id: 7
            }
        );
        for bad in [
            "prod-0",
            ":7",
            "prod-0:",
            "prod-0:xyz",
            "prod-0:00000000000000001",
        ] {
            assert!(
                matches!(parse_request(bad), Err(RecoveryRefused::Malformed(_))),
                "{bad}"
            );
        }
        let lost = lost_one_of_three();
        assert_eq!(
            validate(&request, &Assessment::Healthy, 999, 300),
            Err(RecoveryRefused::QuorumNotLost("prod-0".into()))
        );
        assert!(matches!(
            validate(&request, &lost, 299, 300),
            Err(RecoveryRefused::ThresholdNotPassed {
                lost_for_seconds: 299,
                ..
            })
        ));
        let dead = RecoveryRequest {
            member: "prod-1".into(),
            log_id: 7,
        };
        let refused = validate(&dead, &lost, 300, 300).expect_err("not a survivor");
        assert!(
            refused.to_string().contains("survivors: prod-0"),
            "{refused}"
        );
        let wrong = RecoveryRequest {
            member: "prod-0".into(),
            log_id: 8,
        };
        assert_eq!(
            validate(&wrong, &lost, 300, 300),
            Err(RecoveryRefused::LogIdMismatch {
                member: "prod-0".into(),
                requested: log_id_hex(8),
                reported: log_id_hex(7),
            })
        );
        assert!(validate(&request, &lost, 300, 300).is_ok());
    }

    #[test]
    fn a_record_says_what_may_be_lost_and_fences_every_old_log() {
        let Assessment::QuorumLost(loss) = lost_one_of_three() else {
            panic!("lost");
        };
        let request = loss.suggested_request();
        let names: Vec<String> = (0..3).map(|i| format!("prod-{i}")).collect();
        let earlier = RecoveryRecord::start(&request, &loss, &names, None).imported(3);
        let record = RecoveryRecord::start(&request, &loss, &names, Some(&earlier));
        assert_eq!(record.fenced_log_ids, vec![log_id_hex(7)]);
        assert!(record.is_fenced(7) && !record.is_fenced(3));
        assert!(!record.export_complete(30, 40));
        assert!(record.export_complete(39, 40));
        let exported = record.exported(39);
        let text = exported.may_be_lost.clone().expect("said");
        assert!(text.contains("recovered up to position 39"), "{text}");
        assert!(text.contains("positions 40 to 40 were accepted"), "{text}");
        assert!(text.contains("prod-1, prod-2"), "{text}");
        let done = exported.fenced().imported(0xbeef);
        assert_eq!(done.phase, RecoveryPhase::Done);
        assert!(
            done.summary().contains("new log 000000000000beef"),
            "{}",
            done.summary()
        );
    }

    #[test]
    fn import_waits_for_a_leader_on_a_new_log_and_refences_an_old_one() {
        let Assessment::QuorumLost(loss) = lost_one_of_three() else {
            panic!("lost");
        };
        let names: Vec<String> = (0..3).map(|i| format!("prod-{i}")).collect();
        let record = RecoveryRecord::start(&loss.suggested_request(), &loss, &names, None)
            .exported(40)
            .fenced();
        let fresh = [
            member(0, true, 9, 2, 2),
            member(1, true, 9, 2, 2),
            member(2, false, 0, 0, 0),
        ];
        assert!(matches!(
            import_step(&record, &fresh, None),
            ImportStep::Wait { .. }
        ));
        assert_eq!(
            import_step(&record, &fresh, Some("prod-1")),
            ImportStep::Import {
                leader: "prod-1".into(),
                log_id: 9
            }
        );
        let mut stale = fresh.clone();
        stale[2] = member(2, true, 7, 40, 41);
        assert_eq!(
            import_step(&record, &stale, Some("prod-1")),
            ImportStep::Refence {
                member: "prod-2".into()
            }
        );
    }

    fn arbitrary_member() -> impl Strategy<Value = (bool, u64, u64, u64, bool)> {
        (any::<bool>(), 1u64..4, 0u64..50, 0u64..5, any::<bool>())
    }

    proptest! {
        /// Never a recovery without a request naming a survivor and the log id it
        /// reports; the suggestion is always the most advanced survivor.
        #[test]
        fn recovery_needs_a_matching_request_and_suggests_the_most_advanced(
            raw in proptest::collection::vec(arbitrary_member(), 1..8),
            requested in 0usize..8,
            requested_log in 1u64..4,
            lost_for in 0u64..600,
        ) {
            let members: Vec<MemberObservation> = raw
                .iter()
                .enumerate()
                .map(|(i, &(answering, log_id, learned, extra, voting))| MemberObservation {
                    name: format!("m-{i}"),
                    answering,
                    status: answering.then_some(if voting { ReplicaStatus::Voting } else { ReplicaStatus::Recovering }),
                    log_id: answering.then_some(log_id),
                    learned,
                    end: learned + extra,
                    quorum: Some(raw.len() / 2 + 1),
                })
                .collect();
            let assessment = assess(&members, raw.len() / 2 + 1);
            let request = RecoveryRequest { member: format!("m-{requested}"), log_id: requested_log };
            if let Ok(loss) = validate(&request, &assessment, lost_for, 300) {
                let named = members.iter().find(|m| m.name == request.member).expect("exists");
                prop_assert!(named.answering);
                prop_assert_eq!(named.log_id, Some(requested_log));
                prop_assert!(lost_for >= 300);
                prop_assert!(loss.voting < loss.quorum);
            }
            if let Assessment::QuorumLost(loss) = &assessment {
                for survivor in &loss.survivors {
                    prop_assert!(
                        (survivor.learned, survivor.end) <= (loss.most_advanced.learned, loss.most_advanced.end)
                    );
                }
                let voting_on_best = members.iter().filter(|m| m.answering && m.status == Some(ReplicaStatus::Voting) && m.log_id == Some(loss.most_advanced.log_id)).count();
                prop_assert!(voting_on_best < loss.quorum);
            } else {
                prop_assert!(validate(&request, &assessment, lost_for, 300).is_err());
            }
        }
    }
}
