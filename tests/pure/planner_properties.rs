//! Property tests of the planner over arbitrary observations, most of which no
//! procedure leads to: `plan` never panics, never returns a step that could break
//! quorum intersection (checked here independently of the planner's own check),
//! never restarts a fenced member on its old volume, and never acts on an
//! observation that is already unsafe.

use std::collections::{BTreeMap, BTreeSet};

use mesos_operator::operator::api::{
    MesosMasterClusterSpec, Ordinal, PlannerMemory, RegistryTransfer, SingleMasterExit,
};
use mesos_operator::operator::planner::{
    decide, MemberConfig, Observed, ObservedMember, PodView, ReplicaStatus, ReplicaView, Step,
    VolumeState,
};
use proptest::prelude::*;

/// Ordinals generated: a few beyond the largest ensemble, to see them refused.
const ORDINALS: u32 = 11;

fn config() -> impl Strategy<Value = MemberConfig> {
    prop_oneof![
        4 => (0u32..5).prop_map(|half| MemberConfig::ensemble(2 * half + 1)),
        1 => (1u32..6, 1u32..10).prop_map(|(quorum, size)| MemberConfig {
            quorum,
            whitelist: (0..size).collect(),
        }),
    ]
}

fn status() -> impl Strategy<Value = ReplicaStatus> {
    prop_oneof![
        Just(ReplicaStatus::Empty),
        Just(ReplicaStatus::Starting),
        Just(ReplicaStatus::Recovering),
        Just(ReplicaStatus::Voting),
    ]
}

fn pod() -> impl Strategy<Value = PodView> {
    (
        config(),
        any::<bool>(),
        any::<bool>(),
        proptest::option::weighted(0.8, (status(), 0u64..200)),
    )
        .prop_map(|(config, terminating, ready, replica)| PodView {
            config,
            terminating,
            ready,
            replica: replica.map(|(status, log_end_position)| ReplicaView {
                status,
                log_end_position,
            }),
        })
}

fn volume() -> impl Strategy<Value = VolumeState> {
    prop_oneof![
        1 => Just(VolumeState::Absent),
        6 => Just(VolumeState::Present),
        1 => Just(VolumeState::Lost),
    ]
}

/// Observations near the ones procedures produce: members `0..n` of an ensemble
/// of size `k`, each running `k` or a neighbouring size, some stopped or lost.
fn near_procedure() -> impl Strategy<Value = BTreeMap<Ordinal, (Option<PodView>, VolumeState)>> {
    (0u32..5, 0u32..10).prop_flat_map(|(half, present)| {
        let size = 2 * half + 1;
        let configs = prop_oneof![
            3 => Just(MemberConfig::ensemble(size)),
            1 => Just(MemberConfig::ensemble(size + 2)),
            1 => Just(MemberConfig::ensemble(size.saturating_sub(2).max(1))),
        ];
        let member = (
            configs,
            any::<bool>(),
            proptest::option::weighted(0.85, (status(), 150u64..200)),
            proptest::bool::weighted(0.85),
            volume(),
        )
            .prop_map(|(config, terminating, replica, has_pod, volume)| {
                let pod = has_pod.then(|| PodView {
                    config,
                    terminating: terminating && replica.is_none(),
                    ready: replica.is_some_and(|(status, _)| status == ReplicaStatus::Voting),
                    replica: replica.map(|(status, log_end_position)| ReplicaView {
                        status,
                        log_end_position,
                    }),
                });
                (pod, volume)
            });
        proptest::collection::vec(member, present.min(size + 2) as usize).prop_map(|members| {
            members
                .into_iter()
                .enumerate()
                .map(|(ordinal, member)| (ordinal as Ordinal, member))
                .collect()
        })
    })
}

fn observed() -> impl Strategy<Value = Observed> {
    (
        prop_oneof![
            1 => proptest::collection::btree_map(
                0..ORDINALS,
                (proptest::option::weighted(0.85, pod()), volume()),
                0..10,
            ),
            3 => near_procedure(),
        ],
        proptest::option::of(0..ORDINALS),
        proptest::collection::btree_set(0..ORDINALS, 0..3),
        prop_oneof![
            Just(RegistryTransfer::None),
            Just(RegistryTransfer::Exported),
            Just(RegistryTransfer::Wiped),
            Just(RegistryTransfer::Imported),
        ],
    )
        .prop_map(|(members, leader, removing, registry)| Observed {
            cluster_name: "prop".to_string(),
            members: members
                .into_iter()
                .map(|(ordinal, (pod, volume))| ObservedMember {
                    ordinal,
                    pod,
                    volume,
                })
                .collect(),
            leader,
            memory: PlannerMemory { removing, registry },
        })
}

fn spec() -> impl Strategy<Value = MesosMasterClusterSpec> {
    let replicas = prop_oneof![
        4 => (0i32..5).prop_map(|half| 2 * half + 1),
        1 => -1i32..12,
    ];
    (replicas, any::<bool>(), proptest::bool::weighted(0.1)).prop_map(|(replicas, wipe, paused)| {
        let mut spec = MesosMasterClusterSpec::with_replicas(replicas);
        spec.paused = paused;
        if wipe {
            spec.single_master_exit = SingleMasterExit::Wipe;
        }
        spec
    })
}

/// The invariant, written out again: every member with a pod may run its pod's
/// configuration, a member the step starts may also run the step's; every member
/// with a pod or a volume counts.
fn unsafe_after(observed: &Observed, step: Option<&Step>) -> Option<String> {
    let mut possible: Vec<(Ordinal, MemberConfig)> = Vec::new();
    let mut counted: BTreeSet<Ordinal> = BTreeSet::new();
    for member in &observed.members {
        if member.pod.is_some() || member.volume != VolumeState::Absent {
            counted.insert(member.ordinal);
        }
        if let Some(pod) = &member.pod {
            possible.push((member.ordinal, pod.config.clone()));
        }
    }
    if let Some(
        Step::RestartMember { member, config }
        | Step::CreateMember { member, config }
        | Step::WipeMember { member, config, .. },
    ) = step
    {
        counted.insert(*member);
        possible.push((*member, config.clone()));
    }
    let running: BTreeSet<Ordinal> = possible.iter().map(|(ordinal, _)| *ordinal).collect();
    let masters = counted.len().max(running.len()) as u32;
    for (ordinal, config) in &possible {
        if config.whitelist.len() as u32 >= 2 * config.quorum {
            return Some(format!("{ordinal}: whitelist longer than 2q-1"));
        }
        if let Some(outside) = running.iter().find(|m| !config.whitelist.contains(m)) {
            return Some(format!("{outside} runs outside the whitelist of {ordinal}"));
        }
        for (other, other_config) in &possible {
            if config.quorum + other_config.quorum <= masters {
                return Some(format!(
                    "quorums of {ordinal} and {other} need not intersect among {masters}"
                ));
            }
        }
    }
    None
}

/// The generators must reach states where the planner acts, or the properties
/// say little.
#[test]
fn generated_states_often_lead_to_actions() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (spec(), observed());
    let samples = 2000;
    let mut actions = 0;
    for _ in 0..samples {
        let Ok(tree) = strategy.new_tree(&mut runner) else {
            continue;
        };
        let (spec, observed) = tree.current();
        if decide(&spec, &observed).step.is_action() {
            actions += 1;
        }
    }
    eprintln!("planner properties: {actions} actions in {samples} generated states");
    assert!(
        actions * 5 >= samples,
        "only {actions} actions in {samples} states"
    );
}

proptest! {
    // No failure file: a failing case is printed, and becomes a unit test.
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn plan_never_returns_an_unsafe_step(spec in spec(), observed in observed()) {
        let decision = decide(&spec, &observed);
        let step = &decision.step;
        if step.is_action() {
            prop_assert!(
                unsafe_after(&observed, None).is_none(),
                "acted on an unsafe observation: {step:?}"
            );
            if let Some(problem) = unsafe_after(&observed, Some(step)) {
                prop_assert!(false, "unsafe step {step:?}: {problem}");
            }
        }
        if let Step::RestartMember { member, .. }
        | Step::CreateMember { member, .. }
        | Step::WipeMember { member, .. } = step
        {
            let still_there = observed.members.iter().any(|m| {
                m.ordinal == *member && (m.pod.is_some() || m.volume != VolumeState::Absent)
            });
            prop_assert!(
                !(observed.memory.removing.contains(member) && still_there),
                "started fenced member {member}: {step:?}"
            );
        }
        if let Step::RemoveMember { member, .. } = step {
            prop_assert!(decision.memory.removing.contains(member));
        }
        // The description of any step renders.
        prop_assert!(!step.describe(&observed.cluster_name).is_empty());
    }

    #[test]
    fn paused_or_invalid_specs_never_act(spec in spec(), observed in observed()) {
        let step = decide(&spec, &observed).step;
        if spec.paused || spec.validate().is_err() {
            prop_assert!(!step.is_action(), "{step:?}");
        }
    }
}
