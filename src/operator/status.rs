//! The cluster's status, derived from what a runtime observed and what the planner
//! decided: one pure function both runtimes call, so `status.yaml` of
//! `mesos-operator local` is the status `kubectl get mmc -o yaml` would show.
//!
//! Each runtime's shell turns its own view into a [`StatusInput`] (the Kubernetes
//! one in `reconcile::status_input`, the local one in `local::status_input`); what
//! only one runtime has (volume templates, a spec file that does not parse) is an
//! input the other leaves empty. No client, no clock: `now` is handed in.
//!
//! The transition is tracked from the previous status (`next_transition`), so a
//! restarted operator or local runtime resumes the numbered lines where they were.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::operator::api::backup::{BackupStatus, RestoreStatus};
use crate::operator::api::recovery::{RecoveryPhase, RecoveryRecord};
use crate::operator::api::{
    condition_types, MemberStatus, MesosMasterClusterSpec, MesosMasterClusterStatus, Phase,
    StepState, TransitionStatus, TransitionStep,
};
use crate::operator::api::{Ordinal, PlannerMemory};
use crate::operator::planner::{self, member_name, Observed, Step};

/// Everything the status says, as a runtime observed it.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    pub cluster_name: &'a str,
    pub spec: &'a MesosMasterClusterSpec,
    /// `metadata.generation` (the local runtime counts spec changes).
    pub generation: Option<i64>,
    /// The planner's view: per member its configured quorum, replica status, log
    /// end position, pod ready/terminating; the leader.
    pub observed: &'a Observed,
    /// Where each member is reached (absent: no address yet).
    pub addresses: BTreeMap<Ordinal, SocketAddr>,
    pub storage: Storage,
    /// A `Preserve` exit's registry export, while it is kept.
    pub registry_export: Option<RegistryExport>,
    /// A spec the runtime could not take (the local runtime's spec file); the last
    /// valid one stays in effect. Kubernetes validates before the object is stored.
    pub spec_rejected: Option<String>,
    pub day2: Day2,
}

/// What `StorageCurrent` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Members whose volume template asks for other storage than `spec.storage`
    /// (StatefulSet templates are immutable), each with what it has.
    Templates { drift: Vec<(Ordinal, String)> },
    /// The local runtime: members are directories with no size or class, so there
    /// is nothing that could differ from `spec.storage`; always `AsSpecified`.
    NoTemplates,
}

/// A registry export awaiting (or left without) its import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryExport {
    pub size_bytes: usize,
    /// Where it is kept, in words (`ConfigMap prod-registry-export`).
    pub kept_in: String,
    /// Why an import left it unused, if one did.
    pub import_skipped: Option<String>,
}

/// The day-2 parts (issue #11) each shell supplies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Day2 {
    pub backup: Option<BackupStatus>,
    pub restore: Option<RestoreStatus>,
    /// The last guarded recovery, active or done.
    pub recovery: Option<RecoveryRecord>,
    /// The planner is held (quorum lost, a recovery step): what status shows.
    pub hold: Option<Hold>,
    /// The `MemberRestart` condition: (in progress, reason, message).
    pub member_restart: Option<(bool, &'static str, String)>,
}

/// A held planner: the phase and reason shown instead of the planner's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub phase: Phase,
    pub reason: String,
    /// The `QuorumLost=True` message, while quorum is lost.
    pub quorum_lost: Option<String>,
}

/// What the planner decided this round, and why its step could not be applied.
#[derive(Debug, Clone, Copy)]
pub struct Decided<'a> {
    pub step: &'a Step,
    pub blocked: Option<&'a str>,
}

/// `RestartMember`, `Wait`, ...: the step's kind, for metrics, Event and condition reasons.
pub fn action_name(step: &Step) -> &'static str {
    match step {
        Step::RestartMember { .. } => "RestartMember",
        Step::CreateMember { .. } => "CreateMember",
        Step::RemoveMember { .. } => "RemoveMember",
        Step::WipeMember { .. } => "WipeMember",
        Step::ExportRegistry { .. } => "ExportRegistry",
        Step::ImportRegistry { .. } => "ImportRegistry",
        Step::Wait { .. } => "Wait",
        Step::Done => "Done",
        Step::Failed { .. } => "Failed",
    }
}

/// What identifies a step across rounds: a removal that takes several rounds
/// (pod, then volume) and is re-planned as "finishing its removal" is one line.
fn step_key(step: &Step, cluster: &str) -> String {
    match step {
        Step::RemoveMember { member, .. } => {
            format!("remove {} and its volume", member_name(cluster, *member))
        }
        step => step.describe(cluster),
    }
}

/// The transition after `step`: a new step is a new numbered line (the one before
/// it is done); the same step again changes nothing; waits fill `waitingFor`.
pub fn next_transition(
    previous: Option<&TransitionStatus>,
    members_now: i32,
    target: i32,
    step: &Step,
    blocked: Option<&str>,
    cluster: &str,
) -> Option<TransitionStatus> {
    let active = previous.filter(|transition| transition.current_step.is_some());
    match step {
        step if step.is_action() => {
            let mut transition = match active {
                Some(transition) if transition.to == target => transition.clone(),
                _ => TransitionStatus {
                    from: members_now,
                    to: target,
                    steps: Vec::new(),
                    current_step: None,
                    waiting_for: None,
                },
            };
            let key = step_key(step, cluster);
            let same = transition
                .steps
                .last()
                .is_some_and(|last| last.description.starts_with(&key));
            if !same {
                for earlier in &mut transition.steps {
                    if earlier.state == StepState::Running {
                        earlier.state = StepState::Done;
                    }
                }
                transition.steps.push(TransitionStep {
                    number: transition.steps.len() as u32 + 1,
                    description: step.describe(cluster),
                    state: StepState::Running,
                });
            }
            if let Some(last) = transition.steps.last_mut() {
                last.state = if blocked.is_some() {
                    StepState::Failed
                } else {
                    StepState::Running
                };
                transition.current_step = Some(last.number);
            }
            transition.waiting_for = blocked.map(str::to_string);
            Some(transition)
        }
        Step::Wait { reason } | Step::Failed { reason } => {
            let mut transition = previous?.clone();
            if transition.current_step.is_some() {
                transition.waiting_for = Some(reason.clone());
            }
            Some(transition)
        }
        _ => {
            // Done: the transition (if any) is complete and stays for the record.
            let mut transition = previous?.clone();
            for line in &mut transition.steps {
                line.state = StepState::Done;
            }
            transition.current_step = None;
            transition.waiting_for = None;
            Some(transition)
        }
    }
}

/// A condition of `type_`; its `lastTransitionTime` is kept while its status is.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    holds: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if holds { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|condition| condition.type_ == type_ && condition.status == status)
        .map(|condition| condition.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// The status after one round. Pure.
pub fn derive(
    input: &StatusInput,
    decided: Decided,
    memory: PlannerMemory,
    previous: &MesosMasterClusterStatus,
    now: Time,
) -> MesosMasterClusterStatus {
    let StatusInput {
        cluster_name,
        spec,
        generation,
        observed,
        ..
    } = input;
    let generation = *generation;
    let hold = input.day2.hold.as_ref();
    // A held planner took no step: status waits on what holds it.
    let held_step;
    let (step, blocked) = match hold {
        Some(hold) => {
            held_step = Step::Wait {
                reason: hold.reason.clone(),
            };
            (&held_step, None)
        }
        None => (decided.step, decided.blocked),
    };
    let members: Vec<MemberStatus> = observed
        .members
        .iter()
        .map(|member| {
            let pod = member.pod.as_ref();
            let replica = pod.and_then(|pod| pod.replica);
            MemberStatus {
                name: member_name(cluster_name, member.ordinal),
                address: input
                    .addresses
                    .get(&member.ordinal)
                    .map(|address| address.to_string()),
                quorum: pod.map(|pod| pod.config.quorum as i32),
                replica_status: replica.map(|replica| format!("{:?}", replica.status)),
                log_end_position: replica.map(|replica| replica.log_end_position),
                ready: pod.is_some_and(|pod| {
                    pod.ready
                        && !pod.terminating
                        && replica
                            .is_some_and(|replica| replica.status == planner::ReplicaStatus::Voting)
                }),
            }
        })
        .collect();
    let running = observed
        .members
        .iter()
        .filter(|member| member.pod.as_ref().is_some_and(|pod| !pod.terminating))
        .count() as i32;
    let ready = members.iter().filter(|member| member.ready).count() as i32;
    let quorum = observed
        .members
        .iter()
        .filter_map(|member| member.pod.as_ref())
        .map(|pod| pod.config.quorum as i32)
        .filter(|quorum| *quorum > 0)
        .min();
    let leader = observed
        .leader
        .map(|ordinal| member_name(cluster_name, ordinal));
    let transition = next_transition(
        previous.transition.as_ref(),
        running,
        spec.replicas,
        step,
        blocked,
        cluster_name,
    );
    let in_transition = transition
        .as_ref()
        .is_some_and(|transition| transition.current_step.is_some());
    let mut current_step = transition.as_ref().and_then(|transition| {
        let number = transition.current_step?;
        let line = transition.steps.iter().find(|line| line.number == number)?;
        Some(format!("{number}: {}", line.description))
    });
    let failed = matches!(step, Step::Failed { .. });
    let mut reason = match (step, blocked) {
        (_, Some(why)) => format!("blocked: {} ({why})", step.describe(cluster_name)),
        (Step::Wait { reason }, None) => reason.clone(),
        (Step::Failed { reason }, None) => reason.clone(),
        (Step::Done, None) => format!(
            "{} masters running with --quorum={}",
            spec.replicas,
            spec.target_quorum()
        ),
        (step, None) => step.describe(cluster_name),
    };
    let mut phase = if failed {
        Phase::Failed
    } else if spec.paused {
        Phase::Paused
    } else if blocked.is_some() {
        Phase::Degraded
    } else if *step == Step::Done {
        Phase::Running
    } else if running == 0 && !in_transition {
        Phase::Pending
    } else if !in_transition && ready < running && matches!(step, Step::Wait { .. }) {
        // Nothing is being changed: the planner waits for a member that is down
        // (a restart request is then refused for the quorum, not a transition).
        Phase::Degraded
    } else {
        Phase::Transitioning
    };
    if let Some(error) = &input.spec_rejected {
        reason = format!("{error}; the last valid spec stays in effect");
        if !in_transition {
            phase = Phase::Degraded;
        }
    }
    let progressing_message = reason.clone();
    let recovery = input.day2.recovery.as_ref();
    match (hold, recovery) {
        (Some(hold), _) => {
            phase = hold.phase;
            reason = hold.reason.clone();
            // Nothing is under way once a held recovery is done.
            current_step = (hold.phase != Phase::Running).then(|| hold.reason.clone());
        }
        (None, Some(record)) if record.phase != RecoveryPhase::Done => {
            // The planner runs during an import (it creates the members).
            phase = Phase::Recovering;
            reason = record.summary();
        }
        _ => {}
    }
    let quorum_safe = planner::check_step(
        observed,
        &Step::Wait {
            reason: String::new(),
        },
    );
    let available = observed.leader.is_some() && quorum.is_some_and(|quorum| ready >= quorum);
    let degraded_reason = if failed {
        "PlanFailed"
    } else if blocked.is_some() {
        "StepBlocked"
    } else if input.spec_rejected.is_some() {
        "SpecRejected"
    } else if ready < running {
        "MastersNotReady"
    } else {
        "AllReady"
    };
    let conditions = &previous.conditions;
    let mut next = vec![
        condition(
            conditions,
            condition_types::AVAILABLE,
            available,
            if available {
                "LeaderElected"
            } else {
                "NoQuorum"
            },
            match &leader {
                Some(leader) => format!("{leader} leads; {ready} of {running} masters ready"),
                None => format!("no leader; {ready} of {running} masters ready"),
            },
            generation,
            &now,
        ),
        condition(
            conditions,
            condition_types::PROGRESSING,
            in_transition,
            if in_transition {
                action_name(step)
            } else {
                "Settled"
            },
            progressing_message,
            generation,
            &now,
        ),
        condition(
            conditions,
            condition_types::DEGRADED,
            degraded_reason != "AllReady",
            degraded_reason,
            match &input.spec_rejected {
                Some(error) if degraded_reason == "SpecRejected" => error.clone(),
                _ => format!("{ready} of {running} masters ready"),
            },
            generation,
            &now,
        ),
        condition(
            conditions,
            condition_types::QUORUM_SAFE,
            quorum_safe.is_ok(),
            if quorum_safe.is_ok() {
                "QuorumsIntersect"
            } else {
                "QuorumsMayNotIntersect"
            },
            match &quorum_safe {
                Ok(()) => {
                    "every two quorums in use intersect among the masters that may run".to_string()
                }
                Err(violation) => violation.to_string(),
            },
            generation,
            &now,
        ),
        storage_condition(input, conditions, &now),
    ];
    // Only while a registry export exists: where it is, and whether it awaits its
    // import or was left unimported.
    if let Some(export) = &input.registry_export {
        let (holds, reason, message) = match &export.import_skipped {
            Some(why) => (false, "ImportSkipped", why.clone()),
            None => (
                true,
                "Stored",
                format!(
                    "a registry export of {} bytes is kept in {} until it is imported",
                    export.size_bytes, export.kept_in
                ),
            ),
        };
        next.push(condition(
            conditions,
            condition_types::REGISTRY_EXPORT,
            holds,
            reason,
            message,
            generation,
            &now,
        ));
    }
    if let Some(message) = hold.and_then(|hold| hold.quorum_lost.clone()) {
        next.push(condition(
            conditions,
            condition_types::QUORUM_LOST,
            true,
            "QuorumLost",
            message,
            generation,
            &now,
        ));
    }
    if let Some(record) = recovery {
        let done = record.phase == RecoveryPhase::Done;
        next.push(condition(
            conditions,
            condition_types::RECOVERED,
            done,
            if done {
                "RecoveredFromSurvivor"
            } else {
                "Recovering"
            },
            record.summary(),
            generation,
            &now,
        ));
    }
    if let Some((holds, reason, message)) = &input.day2.member_restart {
        next.push(condition(
            conditions,
            condition_types::MEMBER_RESTART,
            *holds,
            reason,
            message.clone(),
            generation,
            &now,
        ));
    }
    MesosMasterClusterStatus {
        observed_generation: generation,
        phase: Some(phase),
        reason: Some(reason),
        replicas: running,
        ready_replicas: ready,
        quorum,
        target_quorum: Some(spec.target_quorum()),
        leader,
        current_step,
        members,
        transition,
        planner_memory: (memory != PlannerMemory::default()).then_some(memory),
        conditions: next,
        backup: input.day2.backup.clone(),
        restore: input.day2.restore.clone(),
        recovery: recovery.cloned(),
    }
}

fn storage_condition(input: &StatusInput, previous: &[Condition], now: &Time) -> Condition {
    let (holds, reason, message) = match &input.storage {
        Storage::NoTemplates => (
            true,
            "AsSpecified",
            "local members have no volume templates: spec.storage does not apply to them"
                .to_string(),
        ),
        Storage::Templates { drift } if drift.is_empty() => (
            true,
            "AsSpecified",
            "every member's volume template is as spec.storage asks".to_string(),
        ),
        Storage::Templates { drift } => {
            let name = |ordinal: &Ordinal| member_name(input.cluster_name, *ordinal);
            (
                false,
                "ClaimTemplatesImmutable",
                format!(
                    "{} keep their volumes ({}): a StatefulSet's volumeClaimTemplates cannot change, so spec.storage ({}) applies to members created from now on (new, replaced or wiped members)",
                    drift.iter().map(|(ordinal, _)| name(ordinal)).collect::<Vec<_>>().join(", "),
                    drift
                        .iter()
                        .map(|(ordinal, has)| format!("{}: {has}", name(ordinal)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    input.spec.storage.size.0,
                ),
            )
        }
    };
    condition(
        previous,
        condition_types::STORAGE_CURRENT,
        holds,
        reason,
        message,
        input.generation,
        now,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::operator::planner::{MemberConfig, RemovalReason};

    pub(crate) fn restart(member: Ordinal, size: u32) -> Step {
        Step::RestartMember {
            member,
            config: MemberConfig::ensemble(size),
        }
    }

    #[test]
    fn each_new_step_is_a_numbered_line_and_the_one_before_is_done() {
        let first = next_transition(None, 3, 5, &restart(0, 5), None, "prod").expect("starts");
        assert_eq!((first.from, first.to, first.current_step), (3, 5, Some(1)));
        let again =
            next_transition(Some(&first), 3, 5, &restart(0, 5), None, "prod").expect("same step");
        assert_eq!(again, first);
        let second =
            next_transition(Some(&first), 3, 5, &restart(1, 5), None, "prod").expect("next");
        assert_eq!(second.steps.len(), 2);
        assert_eq!(second.steps[0].state, StepState::Done);
        assert_eq!(second.steps[1].state, StepState::Running);
        let waiting = next_transition(
            Some(&second),
            3,
            5,
            &Step::Wait {
                reason: "prod-1 to be ready".into(),
            },
            None,
            "prod",
        )
        .expect("waits");
        assert_eq!(waiting.waiting_for.as_deref(), Some("prod-1 to be ready"));
        let done = next_transition(Some(&waiting), 5, 5, &Step::Done, None, "prod").expect("kept");
        assert_eq!(done.current_step, None);
        assert!(done.steps.iter().all(|line| line.state == StepState::Done));
    }

    #[test]
    fn a_removal_over_several_rounds_is_one_line() {
        let extra = Step::RemoveMember {
            member: 4,
            reason: RemovalReason::Extra,
        };
        let fenced = Step::RemoveMember {
            member: 4,
            reason: RemovalReason::Fenced,
        };
        let first = next_transition(None, 5, 3, &extra, None, "prod").expect("starts");
        let second = next_transition(Some(&first), 5, 3, &fenced, None, "prod").expect("same");
        assert_eq!(second.steps.len(), 1);
    }
}
