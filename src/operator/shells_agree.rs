//! The test the README's promise rests on: for the same observation, the
//! Kubernetes shell and the local shell derive the same status (equal YAML apart
//! from two sentences that name where each runtime keeps things), so
//! `status.yaml` is what `kubectl get mmc -o yaml` would show. A module of its
//! own, beside both shells, because it reads both: `status` itself stays below
//! them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::operator::api::backup::{BackupStatus, LastBackup};
use crate::operator::api::recovery::RecoveryRecord;
use crate::operator::api::{
    condition_types, MesosMasterCluster, MesosMasterClusterSpec, MesosMasterClusterStatus, Ordinal,
    Phase, PlannerMemory, RegistryTransfer, StepState,
};
use crate::operator::kubernetes::observe::Observation;
use crate::operator::kubernetes::reconcile;
use crate::operator::kubernetes::resources::{self, Names};
use crate::operator::local::{self, LocalView};
use crate::operator::planner::{
    MemberConfig, Observed, ObservedMember, PodView, RegistryFate, ReplicaStatus, ReplicaView,
    Step, VolumeState,
};
use crate::operator::status::tests::restart;
use crate::operator::status::*;

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
