//! `kubectl mmc restart <member>`: the quorum guard, a pure function of the
//! observed status, checked before the request is written.
//!
//! The request itself is an annotation on the MesosMasterCluster
//! ([`ANNOTATION_RESTART_MEMBER`]); the reconcile loop is what restarts the pod.
//! The guard is advisory (the status may be a few seconds old): the reconcile loop
//! must check again against what it observes before acting.

use crate::operator::api::{MesosMasterClusterStatus, Phase, StepState};

/// Why a restart request was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestartRefused {
    #[error("{member} is not a member of {cluster} (members: {members})")]
    UnknownMember {
        cluster: String,
        member: String,
        members: String,
    },
    #[error("{cluster} is in a transition ({detail}): the operator restarts members itself; try again when it is done")]
    Transitioning { cluster: String, detail: String },
    #[error("a restart of {pending} is already requested: one member at a time")]
    AlreadyPending { pending: String },
    #[error("{cluster} reports no quorum yet: nothing to check a restart against")]
    UnknownQuorum { cluster: String },
    #[error("restarting {member} would leave {ready_others} ready master(s), fewer than the quorum of {quorum} (not ready: {not_ready}): the ensemble would stop accepting writes")]
    WouldLoseQuorum {
        member: String,
        ready_others: usize,
        quorum: i32,
        not_ready: String,
    },
}

/// Whether restarting `member` keeps a quorum of ready masters up, given the
/// status. `pending` is a restart already requested and not yet done.
pub fn check_restart(
    cluster: &str,
    status: &MesosMasterClusterStatus,
    member: &str,
    pending: Option<&str>,
) -> Result<(), RestartRefused> {
    if !status
        .members
        .iter()
        .any(|candidate| candidate.name == member)
    {
        return Err(RestartRefused::UnknownMember {
            cluster: cluster.into(),
            member: member.into(),
            members: status
                .members
                .iter()
                .map(|member| member.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if let Some(pending) = pending {
        return Err(RestartRefused::AlreadyPending {
            pending: pending.into(),
        });
    }
    let unfinished = status.transition.as_ref().filter(|transition| {
        transition
            .steps
            .iter()
            .any(|step| step.state != StepState::Done)
    });
    if let Some(transition) = unfinished {
        return Err(RestartRefused::Transitioning {
            cluster: cluster.into(),
            detail: format!("{} -> {}", transition.from, transition.to),
        });
    }
    if status.phase == Some(Phase::Transitioning) {
        return Err(RestartRefused::Transitioning {
            cluster: cluster.into(),
            detail: "phase Transitioning".into(),
        });
    }
    // The largest quorum any member runs with: the leader may be the member that
    // needs the most votes.
    let quorum = status
        .members
        .iter()
        .filter_map(|member| member.quorum)
        .chain(status.quorum)
        .max()
        .ok_or_else(|| RestartRefused::UnknownQuorum {
            cluster: cluster.into(),
        })?;
    let others = status
        .members
        .iter()
        .filter(|candidate| candidate.name != member);
    let ready_others = others.clone().filter(|other| other.ready).count();
    if (ready_others as i64) < i64::from(quorum) {
        let not_ready = others
            .filter(|other| !other.ready)
            .map(|other| other.name.as_str())
            .collect::<Vec<_>>();
        return Err(RestartRefused::WouldLoseQuorum {
            member: member.into(),
            ready_others,
            quorum,
            not_ready: if not_ready.is_empty() {
                "none".into()
            } else {
                not_ready.join(", ")
            },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::api::fixtures::steady;

    #[test]
    fn a_healthy_three_member_ensemble_may_restart_any_one_member() {
        for member in ["prod-0", "prod-1", "prod-2"] {
            assert_eq!(
                check_restart("prod", &steady([true; 3]), member, None),
                Ok(())
            );
        }
    }

    #[test]
    fn restarting_a_second_member_while_one_is_down_is_refused() {
        let error = check_restart("prod", &steady([true, false, true]), "prod-0", None)
            .expect_err("quorum");
        assert_eq!(
            error.to_string(),
            "restarting prod-0 would leave 1 ready master(s), fewer than the quorum of 2 (not ready: prod-1): the ensemble would stop accepting writes"
        );
        // The member that is already down may be restarted: nothing more is lost.
        assert_eq!(
            check_restart("prod", &steady([true, false, true]), "prod-1", None),
            Ok(())
        );
    }

    #[test]
    fn the_largest_quorum_in_use_counts() {
        let mut status = steady([true; 3]);
        status.members[0].quorum = Some(3);
        assert!(matches!(
            check_restart("prod", &status, "prod-1", None),
            Err(RestartRefused::WouldLoseQuorum { quorum: 3, .. })
        ));
    }

    #[test]
    fn unknown_members_pending_restarts_and_transitions_are_refused() {
        assert_eq!(
            check_restart("prod", &steady([true; 3]), "prod-7", None)
                .expect_err("unknown")
                .to_string(),
            "prod-7 is not a member of prod (members: prod-0, prod-1, prod-2)"
        );
        assert!(matches!(
            check_restart("prod", &steady([true; 3]), "prod-1", Some("prod-2")),
            Err(RestartRefused::AlreadyPending { .. })
        ));
        let transitioning = crate::operator::api::fixtures::transitioning();
        assert!(matches!(
            check_restart("prod", &transitioning, "prod-2", None),
            Err(RestartRefused::Transitioning { .. })
        ));
        let mut no_quorum = steady([true; 3]);
        no_quorum.quorum = None;
        for member in &mut no_quorum.members {
            member.quorum = None;
        }
        assert!(matches!(
            check_restart("prod", &no_quorum, "prod-1", None),
            Err(RestartRefused::UnknownQuorum { .. })
        ));
    }
}
