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
mod tests {
    use super::*;
    use crate::operator::api::backup::LastBackup;
    use crate::operator::api::MesosMasterCluster;
    use crate::operator::api::RegistryTransfer;
    use crate::operator::kubernetes::observe::Observation;
    use crate::operator::kubernetes::reconcile;
    use crate::operator::kubernetes::resources::{self, Names};
    use crate::operator::local::{self, LocalView};
    use crate::operator::planner::{
        MemberConfig, ObservedMember, PodView, RegistryFate, RemovalReason, ReplicaStatus,
        ReplicaView, VolumeState,
    };

    fn restart(member: Ordinal, size: u32) -> Step {
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

    const BASE_PORT: u16 = 26_500;
    const CLUSTER: &str = "e2e";

    /// One scenario: what both runtimes observe and what the planner decided.
    struct Scenario {
        name: &'static str,
        replicas: i32,
        paused: bool,
        /// Per member: (ordinal, configured ensemble size, replica status, pod ready).
        members: Vec<(Ordinal, u32, Option<ReplicaStatus>, bool)>,
        leader: Option<Ordinal>,
        step: Step,
        blocked: Option<&'static str>,
        memory: PlannerMemory,
        previous: MesosMasterClusterStatus,
        /// The registry export document, while one is kept.
        export: Option<Vec<u8>>,
        day2: Day2,
    }

    fn scenario(name: &'static str, replicas: i32) -> Scenario {
        Scenario {
            name,
            replicas,
            paused: false,
            members: (0..replicas as Ordinal)
                .map(|ordinal| (ordinal, replicas as u32, Some(ReplicaStatus::Voting), true))
                .collect(),
            leader: Some(0),
            step: Step::Done,
            blocked: None,
            memory: PlannerMemory::default(),
            previous: MesosMasterClusterStatus::default(),
            export: None,
            day2: Day2::default(),
        }
    }

    fn observed(scenario: &Scenario) -> Observed {
        Observed {
            cluster_name: CLUSTER.into(),
            members: scenario
                .members
                .iter()
                .map(|(ordinal, size, replica, ready)| ObservedMember {
                    ordinal: *ordinal,
                    pod: Some(PodView {
                        config: MemberConfig::ensemble(*size),
                        terminating: false,
                        ready: *ready,
                        replica: replica.map(|status| ReplicaView {
                            status,
                            log_end_position: 40 + u64::from(*ordinal),
                        }),
                    }),
                    volume: VolumeState::Present,
                })
                .collect(),
            leader: scenario.leader,
            memory: scenario.memory.clone(),
        }
    }

    fn cluster(scenario: &Scenario) -> MesosMasterCluster {
        let mut spec = MesosMasterClusterSpec::with_replicas(scenario.replicas);
        spec.paused = scenario.paused;
        // The port the local runtime's members listen on, so both shells give
        // each member the same address.
        spec.port = BASE_PORT;
        let mut cluster = MesosMasterCluster::new(CLUSTER, spec);
        cluster.metadata.namespace = Some("default".into());
        cluster.metadata.generation = Some(4);
        cluster.metadata.uid = Some("0f1e2d3c".into());
        cluster
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("a time"))
    }

    /// The Kubernetes shell: its `Observation` (member Services on the loopback
    /// addresses the local members use), the export ConfigMap.
    fn kubernetes_status(scenario: &Scenario) -> MesosMasterClusterStatus {
        let cluster = cluster(scenario);
        let names = Names::of(&cluster).expect("names");
        let observation = Observation {
            observed: observed(scenario),
            service_ips: scenario
                .members
                .iter()
                .map(|(ordinal, ..)| (*ordinal, [127, 0, 0, 1 + *ordinal as u8].into()))
                .collect(),
            ..Observation::default()
        };
        let export = scenario.export.clone().map(|document| {
            resources::registry_export_config_map(&cluster, &names, document, None)
                .expect("export ConfigMap")
        });
        let input = reconcile::status_input(
            &cluster,
            &names,
            &observation,
            export.as_ref(),
            scenario.day2.clone(),
        );
        derive(
            &input,
            Decided {
                step: &scenario.step,
                blocked: scenario.blocked,
            },
            scenario.memory.clone(),
            &scenario.previous,
            now(),
        )
    }

    /// The local shell: the same facts as the runtime's own state.
    fn local_status(scenario: &Scenario) -> MesosMasterClusterStatus {
        let cluster = cluster(scenario);
        let observed = observed(scenario);
        let input = local::status_input(LocalView {
            cluster_name: CLUSTER,
            spec: &cluster.spec,
            generation: 4,
            observed: &observed,
            base_port: BASE_PORT,
            export_size_bytes: scenario.export.as_ref().map(Vec::len),
            spec_rejected: None,
            day2: scenario.day2.clone(),
        });
        derive(
            &input,
            Decided {
                step: &scenario.step,
                blocked: scenario.blocked,
            },
            scenario.memory.clone(),
            &scenario.previous,
            now(),
        )
    }

    /// What only the runtime's shape makes differ, in words and nowhere else:
    /// where the export is kept, and that local members have no volume templates.
    const RUNTIME_WORDING: [(&str, &str); 2] = [
        (
            "registry-export.json in the state directory",
            "ConfigMap e2e-registry-export",
        ),
        (
            "local members have no volume templates: spec.storage does not apply to them",
            "every member's volume template is as spec.storage asks",
        ),
    ];

    fn scenarios() -> Vec<Scenario> {
        let mid_way = next_transition(None, 3, 5, &restart(0, 5), None, CLUSTER);
        let record: RecoveryRecord = serde_yaml::from_str(
            "phase: Importing\nfromMember: e2e-0\noldLogId: '0000000000000007'\nsurvivorLearnedEnd: 40\nhighestEnd: 41\nexportedPosition: 39\nfencedMembers: [e2e-0, e2e-1, e2e-2]\nlostMembers: [e2e-1, e2e-2]\nfencedLogIds: ['0000000000000007']\n",
        )
        .expect("a recovery record");
        vec![
            scenario("settled 3 members", 3),
            Scenario {
                step: restart(1, 5),
                blocked: Some("prod-1's pod has no address yet"),
                previous: MesosMasterClusterStatus {
                    transition: mid_way,
                    ..Default::default()
                },
                ..scenario("a transition mid-way with a step blocked", 5)
            },
            Scenario {
                members: (0..3)
                    .map(|ordinal| (ordinal, 3, Some(ReplicaStatus::Voting), true))
                    .collect(),
                step: Step::Wait {
                    reason: "waiting for e2e-3 to vote".into(),
                },
                previous: MesosMasterClusterStatus {
                    transition: next_transition(
                        None,
                        3,
                        5,
                        &Step::CreateMember {
                            member: 3,
                            config: MemberConfig::ensemble(5),
                        },
                        None,
                        CLUSTER,
                    ),
                    ..Default::default()
                },
                ..scenario("a transition waiting on a member", 5)
            },
            Scenario {
                leader: None,
                step: Step::Wait {
                    reason: "waiting for a leader".into(),
                },
                ..scenario("no leader", 3)
            },
            Scenario {
                members: vec![
                    (0, 3, Some(ReplicaStatus::Voting), true),
                    (1, 3, None, false),
                    (2, 3, None, false),
                ],
                leader: None,
                day2: Day2 {
                    hold: Some(Hold {
                        phase: Phase::QuorumLost,
                        reason: "quorum lost for 5s: 1 of quorum 2 voting".into(),
                        quorum_lost: Some("quorum lost for 5s: 1 of quorum 2 voting".into()),
                    }),
                    ..Day2::default()
                },
                ..scenario("quorum lost", 3)
            },
            Scenario {
                members: vec![
                    (0, 3, Some(ReplicaStatus::Voting), true),
                    (1, 3, Some(ReplicaStatus::Voting), true),
                    (2, 3, Some(ReplicaStatus::Recovering), false),
                ],
                step: Step::Wait {
                    reason: "waiting for e2e-2 to vote".into(),
                },
                ..scenario("a member not ready", 3)
            },
            Scenario {
                members: vec![(0, 1, Some(ReplicaStatus::Voting), true)],
                step: Step::WipeMember {
                    member: 0,
                    config: MemberConfig::ensemble(3),
                    registry: RegistryFate::Preserved,
                },
                memory: PlannerMemory {
                    registry: RegistryTransfer::Exported,
                    ..PlannerMemory::default()
                },
                export: Some(br#"{"format":"test"}"#.to_vec()),
                ..scenario("a Preserve export stored", 3)
            },
            Scenario {
                paused: true,
                step: Step::Wait {
                    reason: "paused".into(),
                },
                ..scenario("paused", 3)
            },
            Scenario {
                step: Step::Failed {
                    reason: "two quorums would not intersect".into(),
                },
                ..scenario("the planner refuses", 3)
            },
            Scenario {
                step: Step::Wait {
                    reason: "waiting for a leader on the new log".into(),
                },
                day2: Day2 {
                    recovery: Some(record.clone()),
                    ..Day2::default()
                },
                ..scenario("a recovery importing", 3)
            },
            Scenario {
                day2: Day2 {
                    backup: Some(BackupStatus {
                        schedule: Some("1h".into()),
                        cron_job: None,
                        last: None::<LastBackup>,
                        error: None,
                    }),
                    member_restart: Some((true, "Restarting", "restarting e2e-1".into())),
                    ..Day2::default()
                },
                ..scenario("a member restarting, backups scheduled", 3)
            },
        ]
    }

    #[test]
    fn both_shells_derive_the_same_status_from_the_same_observation() {
        for scenario in scenarios() {
            let kubernetes = serde_yaml::to_string(&kubernetes_status(&scenario)).expect("yaml");
            let mut local = local_status(&scenario);
            for condition in &mut local.conditions {
                for (wording, kubernetes) in RUNTIME_WORDING {
                    condition.message = condition.message.replace(wording, kubernetes);
                }
            }
            let local = serde_yaml::to_string(&local).expect("yaml");
            assert_eq!(
                local, kubernetes,
                "{}: the local status (left) is not the Kubernetes one (right)",
                scenario.name
            );
        }
    }

    #[test]
    fn status_reads_as_the_crd_documents_it() {
        let settled = kubernetes_status(&scenario("settled", 3));
        let reason = |status: &MesosMasterClusterStatus, kind: &str| {
            status
                .conditions
                .iter()
                .find(|condition| condition.type_ == kind)
                .map(|condition| (condition.status.clone(), condition.reason.clone()))
        };
        assert_eq!(settled.phase, Some(Phase::Running));
        assert_eq!(
            settled.reason.as_deref(),
            Some("3 masters running with --quorum=2")
        );
        assert_eq!(settled.members[0].replica_status.as_deref(), Some("Voting"));
        assert_eq!(
            settled.members[0].address.as_deref(),
            Some("127.0.0.1:26500")
        );
        assert_eq!(settled.planner_memory, None, "nothing to remember");
        assert_eq!(settled.current_step, None);
        assert_eq!(
            reason(&settled, condition_types::PROGRESSING),
            Some(("False".into(), "Settled".into()))
        );
        assert_eq!(
            reason(&settled, condition_types::STORAGE_CURRENT),
            Some(("True".into(), "AsSpecified".into()))
        );

        // Available means a quorum of masters is ready, not a leader and one.
        let mut one_ready = scenario("one of three ready", 3);
        one_ready.members[1].3 = false;
        one_ready.members[2].3 = false;
        let status = local_status(&one_ready);
        assert_eq!(
            reason(&status, condition_types::AVAILABLE),
            Some(("False".into(), "NoQuorum".into()))
        );
        assert_eq!(
            reason(&status, condition_types::DEGRADED),
            Some(("True".into(), "MastersNotReady".into()))
        );

        let scenarios = scenarios();
        let blocked = local_status(&scenarios[1]);
        assert_eq!(blocked.phase, Some(Phase::Degraded));
        assert!(
            blocked
                .current_step
                .as_deref()
                .is_some_and(|step| step.starts_with("2: restart e2e-1 with")),
            "{:?}",
            blocked.current_step
        );
        let line = &blocked.transition.as_ref().expect("transition").steps[1];
        assert_eq!(line.state, StepState::Failed);

        let export = local_status(&scenarios[6]);
        assert_eq!(
            reason(&export, condition_types::REGISTRY_EXPORT),
            Some(("True".into(), "Stored".into()))
        );

        let not_ready = local_status(&scenarios[5]);
        assert_eq!(not_ready.phase, Some(Phase::Degraded), "nothing under way");
        let waiting = local_status(&scenarios[2]);
        assert_eq!(waiting.phase, Some(Phase::Transitioning));

        let lost = local_status(&scenarios[4]);
        assert_eq!(lost.phase, Some(Phase::QuorumLost));
        assert_eq!(
            reason(&lost, condition_types::QUORUM_LOST),
            Some(("True".into(), "QuorumLost".into()))
        );

        let recovering = local_status(&scenarios[9]);
        assert_eq!(recovering.phase, Some(Phase::Recovering));
        assert_eq!(
            reason(&recovering, condition_types::RECOVERED),
            Some(("False".into(), "Recovering".into()))
        );
    }
}
