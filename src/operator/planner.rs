//! The quorum-procedure planner: `plan(spec, observed) -> Step`.
//!
//! Pure: no client, no clock, no I/O. The reconcile loop (and the local runtime)
//! observe the members, ask for the next step, persist [`Decision::memory`], apply
//! that one step, record the outcome and come back. Every decision is made from the
//! observation and the small [`PlannerMemory`] alone, so an operator that crashes in
//! the middle of a step re-plans from what it sees and carries on safely.
//!
//! The procedures are those of the Mesos operational guide (increase, decrease,
//! leaving and entering single-master mode, replacing a master), taken one step at
//! a time and one quorum increment at a time. Before any step is returned it is
//! checked against the safety invariant ([`check_step`]): among all masters that may
//! be running, every two quorum sizes in use intersect, no whitelist is longer than
//! `2q-1`, and every running master is in every running master's whitelist.
//!
//! # What the applier (reconcile loop, local runtime) must do
//!
//! - Observe every member slot that has a pod or a volume ([`Observed::members`]),
//!   the configuration in each pod's spec, the replica status from the master's
//!   replica endpoint (`None` when it does not answer), readiness, the leader, and
//!   hand back the [`PlannerMemory`] it persisted.
//! - Persist [`Decision::memory`] before applying the step (write-ahead), and
//!   [`PlannerMemory::after_success`] once an export or import succeeded.
//! - Apply one step; every step must be idempotent. A member's pod is only ever
//!   created by `CreateMember`, `RestartMember` or `WipeMember` with the
//!   configuration they carry (with a StatefulSet: its template holds the
//!   configuration of the last such step for that ordinal, and `OnDelete`).
//!   `WipeMember` must never start the new configuration on the old log (e.g. a
//!   wipe keyed to the step in an init container). `RemoveMember` deletes the pod,
//!   then the volume, and keeps the ordinal from being recreated meanwhile.
//! - `ExportRegistry` is taken from the running single master by sealing its
//!   registry (`POST /registry/seal`): the master refuses writes from the seal on,
//!   so none is lost between the export and the wipe. If the spec goes back to 1
//!   after the seal, the planner answers `Done`; the shells (reconcile, the local
//!   runtime) unseal the leader at `Done` whenever a transfer left its traces.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::operator::api::{
    MesosMasterClusterSpec, Ordinal, PlannerMemory, RegistryTransfer, SingleMasterExit,
    MAX_REPLICAS,
};

/// How far (in log positions) a member's log end may trail the leader's and still
/// count as caught up. Small enough that a member that just restarted is not
/// counted before recovery finished, large enough that writes arriving between the
/// two status reads do not keep a healthy member "behind" forever.
pub const CAUGHT_UP_MAX_LAG_POSITIONS: u64 = 16;

/// Largest ordinal the planner will ever create: ensembles are at most 9 masters.
const MAX_ORDINAL_EXCLUSIVE: Ordinal = MAX_REPLICAS as Ordinal;

/// `--quorum` and `--masters` of one member. Members always run the canonical
/// configuration of some odd ensemble size `k`: quorum `k/2+1`, whitelist the
/// members `0..k`; anything else was not written by this operator.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberConfig {
    pub quorum: u32,
    /// Ordinals of the members whose addresses form `--masters`, ascending.
    pub whitelist: Vec<Ordinal>,
}

impl MemberConfig {
    /// The configuration of an ensemble of `size` masters.
    pub fn ensemble(size: u32) -> Self {
        Self {
            quorum: size / 2 + 1,
            whitelist: (0..size).collect(),
        }
    }

    /// The ensemble size this configuration belongs to, if it is canonical.
    pub fn ensemble_size(&self) -> Option<u32> {
        let size = self.whitelist.len() as u32;
        (size % 2 == 1 && size <= MAX_ORDINAL_EXCLUSIVE && *self == Self::ensemble(size))
            .then_some(size)
    }
}

impl fmt::Display for MemberConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "--quorum={} and a whitelist of {} member{}",
            self.quorum,
            self.whitelist.len(),
            if self.whitelist.len() == 1 { "" } else { "s" }
        )
    }
}

/// Replica status as the master's replica endpoint reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaStatus {
    /// Never initialized, or wiped.
    Empty,
    /// In auto-initialization.
    Starting,
    /// Catching up.
    Recovering,
    /// Takes part in quorums.
    Voting,
}

/// What a running member's replica endpoint answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaView {
    pub status: ReplicaStatus,
    pub log_end_position: u64,
}

/// A member's pod (its process may be running whenever the pod exists).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    /// The configuration in the pod's spec: what runs, or what will run when the
    /// container restarts.
    pub config: MemberConfig,
    /// Being deleted; the old process may still run until the pod is gone.
    pub terminating: bool,
    pub ready: bool,
    /// `None` while the replica endpoint does not answer.
    pub replica: Option<ReplicaView>,
}

/// A member's persistent volume (its `work_dir`, holding `replicated_log`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeState {
    Absent,
    Present,
    /// Exists but its data is gone or unusable (node lost, corruption reported).
    Lost,
}

/// One member slot as observed. A slot with no pod and an absent volume is gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedMember {
    pub ordinal: Ordinal,
    pub pod: Option<PodView>,
    pub volume: VolumeState,
}

impl ObservedMember {
    fn exists(&self) -> bool {
        self.pod.is_some() || self.volume != VolumeState::Absent
    }
}

impl PlannerMemory {
    /// Records that `step` succeeded; only the registry steps record their outcome.
    /// The reconcile loop calls it after an export or import returned success.
    pub fn after_success(&self, step: &Step) -> PlannerMemory {
        let mut memory = self.clone();
        match step {
            Step::ExportRegistry { .. } if memory.registry != RegistryTransfer::Wiped => {
                memory.registry = RegistryTransfer::Exported;
            }
            Step::ImportRegistry { .. } => memory.registry = RegistryTransfer::Imported,
            _ => {}
        }
        memory
    }
}

/// Everything the planner is told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// Names members in reasons: `<cluster_name>-<ordinal>`.
    pub cluster_name: String,
    /// Every slot that has a pod or a volume; missing slots are gone.
    pub members: Vec<ObservedMember>,
    /// The elected master, if the members agree on one.
    pub leader: Option<Ordinal>,
    pub memory: PlannerMemory,
}

/// Why a member is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemovalReason {
    /// Beyond the ensemble being moved to.
    Extra,
    /// Its volume is lost: fenced so it never rejoins with old state, then replaced.
    VolumeLost,
    /// Its removal began earlier and must finish.
    Fenced,
}

/// What becomes of the registry in a wipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryFate {
    /// An export exists and will be imported into the new log.
    Preserved,
    /// Nothing was exported: agents, maintenance, quota and weights are lost.
    Lost,
}

/// One action. The reconcile loop applies it and comes back; every action is
/// idempotent (applying it twice, or again after a crash half-way, is harmless).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Step {
    /// Stop the member and start it again with `config`. Until the old pod is gone
    /// both configurations count as possibly running.
    RestartMember {
        member: Ordinal,
        config: MemberConfig,
    },
    /// Start the member with `config` (on its volume, or a new empty one).
    CreateMember {
        member: Ordinal,
        config: MemberConfig,
    },
    /// Delete the member's pod and then its volume, and keep it from being
    /// recreated (fenced in [`PlannerMemory::removing`] before it starts).
    RemoveMember {
        member: Ordinal,
        reason: RemovalReason,
    },
    /// Stop the member, delete `replicated_log` under its work dir, start it with
    /// `config`. The applier must never start `config` on the old log.
    WipeMember {
        member: Ordinal,
        config: MemberConfig,
        registry: RegistryFate,
    },
    /// Copy the registry of `from` to a durable place (overwriting an earlier copy).
    ExportRegistry { from: Ordinal },
    /// Replay the export into the log through the leader `into`; a registry that
    /// already holds data is left as it is.
    ImportRegistry { into: Ordinal },
    /// Nothing to do until the observation changes.
    Wait { reason: String },
    /// The cluster is as the spec asks.
    Done,
    /// The spec or the observation is one the planner refuses to act on.
    Failed { reason: String },
}

impl Step {
    /// Whether the step changes the world (as opposed to Wait, Done, Failed).
    pub fn is_action(&self) -> bool {
        !matches!(self, Step::Wait { .. } | Step::Done | Step::Failed { .. })
    }

    /// One line for events, status and the `plan` command.
    pub fn describe(&self, cluster_name: &str) -> String {
        let name = |member: &Ordinal| member_name(cluster_name, *member);
        match self {
            Step::RestartMember { member, config } => {
                format!("restart {} with {config}", name(member))
            }
            Step::CreateMember { member, config } => {
                format!("start {} with {config}", name(member))
            }
            Step::RemoveMember { member, reason } => {
                let why = match reason {
                    RemovalReason::Extra => "beyond the new ensemble",
                    RemovalReason::VolumeLost => "its volume is lost",
                    RemovalReason::Fenced => "finishing its removal",
                };
                format!(
                    "remove {} and its volume so it never returns with old state ({why})",
                    name(member)
                )
            }
            Step::WipeMember {
                member,
                config,
                registry,
            } => {
                let fate = match registry {
                    RegistryFate::Preserved => "the registry export will be imported",
                    RegistryFate::Lost => {
                        "THE REGISTRY IS LOST: agents, maintenance, quota and weights start empty"
                    }
                };
                format!(
                    "stop {}, wipe its replicated_log and start it with {config}; {fate}",
                    name(member)
                )
            }
            Step::ExportRegistry { from } => {
                format!("export the registry from {} to durable storage", name(from))
            }
            Step::ImportRegistry { into } => {
                format!(
                    "import the exported registry through the leader {}",
                    name(into)
                )
            }
            Step::Wait { reason } => format!("wait: {reason}"),
            Step::Done => "done".to_string(),
            Step::Failed { reason } => format!("failed: {reason}"),
        }
    }
}

/// `<cluster>-<ordinal>`.
pub fn member_name(cluster_name: &str, ordinal: Ordinal) -> String {
    format!("{cluster_name}-{ordinal}")
}

/// The planner's answer: the step, and the memory to persist before applying it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub step: Step,
    /// Persist this before applying `step` (write-ahead: a fenced member is
    /// recorded before its pod is deleted, a wipe before the log is deleted).
    pub memory: PlannerMemory,
}

/// The next step from `spec` and `observed`.
pub fn plan(spec: &MesosMasterClusterSpec, observed: &Observed) -> Step {
    decide(spec, observed).step
}

/// The next step and the memory to persist before applying it.
pub fn decide(spec: &MesosMasterClusterSpec, observed: &Observed) -> Decision {
    let mut memory = observed.memory.clone();
    let gone: BTreeSet<Ordinal> = memory
        .removing
        .iter()
        .copied()
        .filter(|ordinal| {
            !observed
                .members
                .iter()
                .any(|member| member.ordinal == *ordinal && member.exists())
        })
        .collect();
    memory.removing.retain(|ordinal| !gone.contains(ordinal));

    let step = match spec.validate() {
        Err(error) => Step::Failed {
            reason: format!("invalid spec: {error}"),
        },
        Ok(()) if spec.paused => Step::Wait {
            reason: "paused: spec.paused is true".to_string(),
        },
        Ok(()) => {
            let view = View::new(observed, &memory);
            let step = match view.check_observation() {
                Err(reason) => Step::Failed { reason },
                Ok(()) => view.choose(spec.replicas as u32, spec.single_master_exit),
            };
            // The last line of defence: a step that would break the invariant is
            // never returned, whatever chose it.
            match check_step(observed, &step) {
                Ok(()) => step,
                Err(violation) => Step::Wait {
                    reason: format!(
                        "refusing to {}: {violation}",
                        step.describe(&observed.cluster_name)
                    ),
                },
            }
        }
    };

    match &step {
        Step::RemoveMember { member, .. } => {
            memory.removing.insert(*member);
        }
        Step::WipeMember { registry, .. } => {
            memory.registry = match registry {
                RegistryFate::Preserved => RegistryTransfer::Wiped,
                RegistryFate::Lost => RegistryTransfer::None,
            };
        }
        // Entering single-master mode: an earlier import describes another lineage
        // and must not let the next exit skip its export.
        Step::RestartMember { config, .. }
            if config.quorum == 1 && memory.registry == RegistryTransfer::Imported =>
        {
            memory.registry = RegistryTransfer::None;
        }
        Step::Done if memory.registry != RegistryTransfer::Wiped => {
            memory.registry = RegistryTransfer::None;
        }
        _ => {}
    }
    Decision { step, memory }
}

/// A violation of the safety invariant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SafetyViolation {
    #[error("quorums {first} and {second} need not intersect among {members} masters that may be running")]
    QuorumsDisjoint {
        first: u32,
        second: u32,
        members: usize,
    },
    #[error("a whitelist of {whitelist_len} members with --quorum={quorum} exceeds 2q-1")]
    WhitelistTooLong { whitelist_len: usize, quorum: u32 },
    #[error("member {member} may run but is not in a whitelist in use ({config})")]
    OutsideWhitelist {
        member: Ordinal,
        config: MemberConfig,
    },
}

/// Checks the invariant on the state `step` may lead to, counting conservatively:
/// a member being restarted or wiped may run either configuration, a member being
/// removed may run until it is gone, and every member with a volume counts as a
/// master (its state may come back).
pub fn check_step(observed: &Observed, step: &Step) -> Result<(), SafetyViolation> {
    let mut configs: BTreeMap<Ordinal, BTreeSet<MemberConfig>> = BTreeMap::new();
    let mut stateful: BTreeSet<Ordinal> = BTreeSet::new();
    for member in &observed.members {
        if member.exists() {
            stateful.insert(member.ordinal);
        }
        if let Some(pod) = &member.pod {
            configs
                .entry(member.ordinal)
                .or_default()
                .insert(pod.config.clone());
        }
    }
    match step {
        Step::RestartMember { member, config }
        | Step::CreateMember { member, config }
        | Step::WipeMember { member, config, .. } => {
            stateful.insert(*member);
            configs.entry(*member).or_default().insert(config.clone());
        }
        _ => {}
    }
    check_configs(&configs, stateful.len())
}

/// The invariant over possibly-running members and their possible configurations,
/// with `members` masters counted.
pub fn check_configs(
    configs: &BTreeMap<Ordinal, BTreeSet<MemberConfig>>,
    members: usize,
) -> Result<(), SafetyViolation> {
    let in_use: BTreeSet<&MemberConfig> = configs.values().flatten().collect();
    let members = members.max(configs.len());
    for first in &in_use {
        if !crate::log::quorum::quorums_intersect(first.quorum as usize, first.whitelist.len()) {
            return Err(SafetyViolation::WhitelistTooLong {
                whitelist_len: first.whitelist.len(),
                quorum: first.quorum,
            });
        }
        for second in &in_use {
            if (first.quorum + second.quorum) as usize <= members {
                return Err(SafetyViolation::QuorumsDisjoint {
                    first: first.quorum,
                    second: second.quorum,
                    members,
                });
            }
        }
        for member in configs.keys() {
            if !first.whitelist.contains(member) {
                return Err(SafetyViolation::OutsideWhitelist {
                    member: *member,
                    config: (*first).clone(),
                });
            }
        }
    }
    Ok(())
}

/// The observation, indexed, with the reasoning helpers.
struct View<'a> {
    observed: &'a Observed,
    memory: &'a PlannerMemory,
    /// Slots that exist (pod or volume), by ordinal.
    members: BTreeMap<Ordinal, &'a ObservedMember>,
}

impl<'a> View<'a> {
    fn new(observed: &'a Observed, memory: &'a PlannerMemory) -> Self {
        let members = observed
            .members
            .iter()
            .filter(|member| member.exists())
            .map(|member| (member.ordinal, member))
            .collect();
        Self {
            observed,
            memory,
            members,
        }
    }

    fn name(&self, ordinal: Ordinal) -> String {
        member_name(&self.observed.cluster_name, ordinal)
    }

    /// Refuses observations no procedure of ours leads to.
    fn check_observation(&self) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for member in &self.observed.members {
            if !seen.insert(member.ordinal) {
                return Err(format!(
                    "member {} is observed twice; refusing to act",
                    self.name(member.ordinal)
                ));
            }
        }
        for (ordinal, member) in &self.members {
            if *ordinal >= MAX_ORDINAL_EXCLUSIVE {
                return Err(format!(
                    "member {} is beyond the largest ensemble ({MAX_REPLICAS}); refusing to act",
                    self.name(*ordinal)
                ));
            }
            if let Some(pod) = &member.pod {
                if pod.config.ensemble_size().is_none() {
                    return Err(format!(
                        "member {} runs with an unexpected configuration ({}); refusing to act",
                        self.name(*ordinal),
                        pod.config
                    ));
                }
            }
        }
        let levels = self.levels();
        if levels.len() > 2
            || (levels.len() == 2 && levels.last().copied() != levels.first().map(|low| low + 2))
        {
            return Err(format!(
                "members run with ensemble sizes {levels:?}; no procedure mixes these, refusing to act"
            ));
        }
        check_step(
            self.observed,
            &Step::Wait {
                reason: String::new(),
            },
        )
        .map_err(|violation| format!("the observed state is already unsafe: {violation}"))
    }

    /// Ensemble sizes of the configurations in the pods, ascending.
    fn levels(&self) -> Vec<u32> {
        let levels: BTreeSet<u32> = self
            .members
            .values()
            .filter_map(|member| member.pod.as_ref())
            .filter_map(|pod| pod.config.ensemble_size())
            .collect();
        levels.into_iter().collect()
    }

    fn pod(&self, ordinal: Ordinal) -> Option<&'a PodView> {
        self.members
            .get(&ordinal)
            .and_then(|member| member.pod.as_ref())
    }

    /// The log end a member must be near to count as caught up: the furthest end
    /// any Voting member reports (a newly elected leader may itself still trail),
    /// known only while a Voting leader is elected.
    fn leader_end(&self) -> Option<u64> {
        let leader = self.observed.leader?;
        let replica = self.pod(leader)?.replica?;
        if replica.status != ReplicaStatus::Voting {
            return None;
        }
        self.members
            .values()
            .filter_map(|member| member.pod.as_ref()?.replica)
            .filter(|replica| replica.status == ReplicaStatus::Voting)
            .map(|replica| replica.log_end_position)
            .max()
    }

    /// Why `ordinal` is not a healthy member (ready, Voting, caught up under a
    /// leader), if it is not.
    fn unhealthy(&self, ordinal: Ordinal) -> Option<String> {
        if let Some(reason) = self.down(ordinal) {
            return Some(reason);
        }
        let replica = self.pod(ordinal).and_then(|pod| pod.replica)?;
        let Some(leader_end) = self.leader_end() else {
            return Some(format!(
                "a leader to be elected before {} can be known caught up",
                self.name(ordinal)
            ));
        };
        let lag = leader_end.saturating_sub(replica.log_end_position);
        if lag > CAUGHT_UP_MAX_LAG_POSITIONS {
            return Some(format!(
                "{} to catch up ({lag} positions behind the leader, at most {CAUGHT_UP_MAX_LAG_POSITIONS})",
                self.name(ordinal)
            ));
        }
        None
    }

    /// Why `ordinal` cannot be serving at all (no pod, stopping, not Voting, not
    /// ready), if so. Touching such a member costs no availability; a member that is
    /// up but has no leader to follow is not down: restarting it may be what keeps
    /// a leader from being elected.
    fn down(&self, ordinal: Ordinal) -> Option<String> {
        let name = || self.name(ordinal);
        let Some(pod) = self.pod(ordinal) else {
            return Some(format!("{} to be started (it has no pod)", name()));
        };
        if pod.terminating {
            return Some(format!("{} to finish stopping", name()));
        }
        let Some(replica) = pod.replica else {
            return Some(format!("{} to report its replica status", name()));
        };
        if replica.status != ReplicaStatus::Voting {
            return Some(format!(
                "{} to be Voting (it is {:?})",
                name(),
                replica.status
            ));
        }
        if !pod.ready {
            return Some(format!("{} to be ready", name()));
        }
        None
    }

    /// Whether `ordinal` runs no process: no pod, a pod being deleted, or a
    /// process that does not answer. Restarting it costs nothing.
    fn stopped(&self, ordinal: Ordinal) -> bool {
        self.pod(ordinal)
            .is_none_or(|pod| pod.terminating || pod.replica.is_none())
    }

    /// The first member other than `except` that is not healthy, with the reason.
    fn first_unhealthy_other(&self, except: Option<Ordinal>) -> Option<String> {
        self.members
            .keys()
            .filter(|ordinal| Some(**ordinal) != except)
            .find_map(|ordinal| self.unhealthy(*ordinal))
    }

    /// Some member's log holds data (or may: it reports Voting or Recovering).
    fn data_visible(&self) -> bool {
        self.members.values().any(|member| {
            member
                .pod
                .as_ref()
                .and_then(|pod| pod.replica)
                .is_some_and(|replica| {
                    matches!(
                        replica.status,
                        ReplicaStatus::Voting | ReplicaStatus::Recovering
                    )
                })
        })
    }

    /// Every member exists with a pod whose replica reports Empty or Starting: no log
    /// exists yet, so the ensemble may be reshaped without the one-at-a-time waits.
    fn fresh(&self) -> bool {
        !self.members.is_empty()
            && self.members.values().all(|member| {
                member.volume != VolumeState::Lost
                    && member
                        .pod
                        .as_ref()
                        .and_then(|pod| pod.replica)
                        .is_some_and(|replica| {
                            matches!(
                                replica.status,
                                ReplicaStatus::Empty | ReplicaStatus::Starting
                            )
                        })
            })
    }

    fn choose(&self, target: u32, exit_mode: SingleMasterExit) -> Step {
        // 1. A fenced member's removal always finishes first.
        if let Some(ordinal) = self.memory.removing.iter().next_back() {
            return Step::RemoveMember {
                member: *ordinal,
                reason: RemovalReason::Fenced,
            };
        }
        // 2. A member whose volume is lost is fenced, then replaced below.
        if let Some(member) = self
            .members
            .values()
            .find(|member| member.volume == VolumeState::Lost)
        {
            return Step::RemoveMember {
                member: member.ordinal,
                reason: RemovalReason::VolumeLost,
            };
        }
        // 3. No member yet: create the target ensemble.
        if self.members.is_empty() {
            return Step::CreateMember {
                member: 0,
                config: MemberConfig::ensemble(target),
            };
        }
        // 4. No log exists yet: shape the ensemble directly.
        if self.fresh() {
            return self.reshape_fresh(target);
        }
        // 5. An export waits to be imported as soon as the ensemble is settled.
        if self.memory.registry == RegistryTransfer::Wiped {
            if let Some(step) = self.import_if_settled() {
                return step;
            }
        }
        // 6. One increment at a time.
        let levels = self.levels();
        let working = match levels.as_slice() {
            // No pod at all: recreate what the volumes hold at the size they imply.
            [] => {
                let highest = self.members.keys().next_back().copied().unwrap_or(0);
                (highest + 1) | 1
            }
            [level] => {
                let level = *level;
                let all_present = (0..level).all(|ordinal| self.pod(ordinal).is_some());
                // Members with a volume count: they are restored first, cheaply.
                let running = self.members.len() as u32;
                if !all_present
                    && running < MemberConfig::ensemble(level).quorum
                    && self.data_visible()
                {
                    // Too few members to elect a leader, so none could be added (a new
                    // member catches up only from a quorum): shrink to the ensemble the
                    // remaining members can run, then grow again.
                    // No leader can exist, so there is no availability to protect:
                    // the moves are not gated on health (the invariant still is).
                    let size = (2 * running).saturating_sub(1).max(1);
                    if let Some(outside) = self.members.keys().find(|ordinal| **ordinal >= size) {
                        // Shrinking would remove a member that holds data while
                        // fewer than a quorum remain: that is for a person to decide.
                        return Step::Wait {
                            reason: format!(
                                "only {running} of {level} members remain, too few to elect a leader, \
                                 and {} lies outside the {size} they could run; refusing to remove it",
                                self.name(*outside)
                            ),
                        };
                    }
                    return self.reshape(size, false);
                }
                if target > level && all_present {
                    if level == 1 {
                        // Leftover volumes beyond the single master go first: the
                        // wipe must not start next to old state.
                        if let Some(extra) =
                            self.members.keys().rev().find(|ordinal| **ordinal >= 1)
                        {
                            return Step::RemoveMember {
                                member: *extra,
                                reason: RemovalReason::Extra,
                            };
                        }
                        return self.leave_single_master(target, exit_mode);
                    }
                    level + 2
                } else if target < level {
                    // A member that stays must be back before any is removed: the
                    // extras may hold the copies it will catch up from.
                    let survivors = level - 2;
                    if let Some(missing) =
                        (0..survivors).find(|ordinal| self.pod(*ordinal).is_none())
                    {
                        return self.create(missing, MemberConfig::ensemble(level), true);
                    }
                    level - 2
                } else {
                    level
                }
            }
            [low, high] => {
                // Upwards only while the members present can elect a leader under
                // the larger quorum; otherwise settle on the smaller one first.
                let existing = self.members.len() as u32;
                if target >= *high && existing >= MemberConfig::ensemble(*high).quorum {
                    *high
                } else {
                    *low
                }
            }
            _ => {
                return Step::Failed {
                    reason: "members run with more than two ensemble sizes".to_string(),
                }
            }
        };
        match self.reshape(working, true) {
            // Reshaping an intermediate size to completion is not the end.
            Step::Done if working != target => Step::Wait {
                reason: format!("the ensemble runs {working} members; {target} are asked for"),
            },
            step => step,
        }
    }

    /// Moves the ensemble to `size` members with the canonical configuration, in
    /// this order: extras removed (stopped ones first, then the highest), members
    /// stopped part-way brought back, members missing from the running ensemble
    /// replaced, stale members restarted (stopped ones first, the leader last),
    /// new members started. With `gated`, a healthy member is only touched while
    /// every other member is healthy, a catching-up member is never restarted, and
    /// a new member is only added while every member is healthy.
    fn reshape(&self, size: u32, gated: bool) -> Step {
        let config = MemberConfig::ensemble(size);
        let gate = |touched: Ordinal, restart: bool| -> Option<Step> {
            if !gated || self.stopped(touched) {
                return None;
            }
            if let (true, Some(reason)) = (restart, self.down(touched)) {
                // It is catching up: a restart would start its recovery over, under
                // a quorum that may need more Voting peers than are there.
                return Some(Step::Wait {
                    reason: format!("waiting for {reason} before restarting it"),
                });
            }
            if self.down(touched).is_some() {
                return None;
            }
            self.first_unhealthy_other(Some(touched))
                .map(|reason| Step::Wait {
                    reason: format!(
                        "waiting for {reason} before touching {}",
                        self.name(touched)
                    ),
                })
        };

        // Stopped extras first (removing them costs nothing), then the highest.
        let extra = self
            .members
            .keys()
            .rev()
            .filter(|ordinal| **ordinal >= size)
            .min_by_key(|ordinal| !self.stopped(**ordinal));
        if let Some(extra) = extra {
            return gate(*extra, false).unwrap_or(Step::RemoveMember {
                member: *extra,
                reason: RemovalReason::Extra,
            });
        }

        // A member stopped part-way through a restart (or by a crash of the
        // operator) comes back before anything else: it costs nothing, and the
        // members it would otherwise wait for may be waiting for it.
        if let Some(stopped) = self
            .members
            .iter()
            .find(|(ordinal, member)| **ordinal < size && member.pod.is_none())
        {
            return Step::CreateMember {
                member: *stopped.0,
                config,
            };
        }

        // A member missing from the ensemble as it runs now (its volume was lost)
        // is replaced before anyone is restarted: the restarts lean on it.
        let running_size = self.levels().first().copied().unwrap_or(size);
        if running_size <= size {
            if let Some(missing) = (0..running_size).find(|ordinal| self.pod(*ordinal).is_none()) {
                return self.create(missing, config, gated);
            }
        }

        let mut stale: Vec<Ordinal> = self
            .members
            .iter()
            .filter(|(_, member)| member.pod.as_ref().is_some_and(|pod| pod.config != config))
            .map(|(ordinal, _)| *ordinal)
            .collect();
        // Stopped members first (touching them costs nothing), the leader last
        // (one election instead of several).
        stale.sort_by_key(|ordinal| {
            (
                self.pod(*ordinal)
                    .is_some_and(|_| self.down(*ordinal).is_none()),
                Some(*ordinal) == self.observed.leader,
                *ordinal,
            )
        });
        if let Some(member) = stale.first() {
            return gate(*member, true).unwrap_or(Step::RestartMember {
                member: *member,
                config,
            });
        }

        if let Some(missing) = (0..size).find(|ordinal| self.pod(*ordinal).is_none()) {
            return self.create(missing, config, gated);
        }

        match self.first_unhealthy_other(None) {
            Some(reason) => Step::Wait {
                reason: format!("waiting for {reason}"),
            },
            None => Step::Done,
        }
    }

    /// Starts `missing` with `config`. A member with a volume is being restored (it
    /// was stopped by a restart or a crash): bringing it back costs nothing. A new
    /// member catches up, which counts against the failure tolerance, so with
    /// `gated` it waits until every member is healthy.
    fn create(&self, missing: Ordinal, config: MemberConfig, gated: bool) -> Step {
        let restoring = self.members.contains_key(&missing);
        if gated && !restoring && self.data_visible() {
            if let Some(reason) = self.first_unhealthy_other(None) {
                return Step::Wait {
                    reason: format!(
                        "waiting for {reason} before starting {}",
                        self.name(missing)
                    ),
                };
            }
        }
        Step::CreateMember {
            member: missing,
            config,
        }
    }

    /// Shapes an ensemble that holds no log yet. Members of another size are
    /// removed rather than restarted, so that two sizes never run side by side
    /// where a log could initialize among some of them; then the target ensemble
    /// is started member by member, without waits (initialization needs them all).
    fn reshape_fresh(&self, size: u32) -> Step {
        let config = MemberConfig::ensemble(size);
        let misfit = self.members.iter().rev().find(|(ordinal, member)| {
            **ordinal >= size || member.pod.as_ref().is_some_and(|pod| pod.config != config)
        });
        if let Some((ordinal, _)) = misfit {
            return Step::RemoveMember {
                member: *ordinal,
                reason: RemovalReason::Extra,
            };
        }
        if let Some(missing) = (0..size).find(|ordinal| self.pod(*ordinal).is_none()) {
            return Step::CreateMember {
                member: missing,
                config,
            };
        }
        Step::Wait {
            reason: format!("waiting for the new log of {size} members to initialize"),
        }
    }

    /// The import of a `Preserve` exit, once every member is healthy under a leader
    /// and runs the same configuration.
    fn import_if_settled(&self) -> Option<Step> {
        let leader = self.observed.leader?;
        let levels = self.levels();
        let [level] = levels.as_slice() else {
            return None;
        };
        let complete = (0..*level).all(|ordinal| self.pod(ordinal).is_some())
            && self.members.keys().all(|ordinal| *ordinal < *level);
        (complete && self.first_unhealthy_other(None).is_none())
            .then_some(Step::ImportRegistry { into: leader })
    }

    /// 1 to `target`: the guide's wipe, preceded by an export unless the spec says
    /// `Wipe`. Member 0 is the single master.
    fn leave_single_master(&self, target: u32, exit_mode: SingleMasterExit) -> Step {
        let config = MemberConfig::ensemble(target);
        match (exit_mode, self.memory.registry) {
            (_, RegistryTransfer::Wiped) => Step::WipeMember {
                member: 0,
                config,
                registry: RegistryFate::Preserved,
            },
            (SingleMasterExit::Wipe, _) => Step::WipeMember {
                member: 0,
                config,
                registry: RegistryFate::Lost,
            },
            (SingleMasterExit::Preserve, RegistryTransfer::Exported) => Step::WipeMember {
                member: 0,
                config,
                registry: RegistryFate::Preserved,
            },
            (SingleMasterExit::Preserve, _) => match self.unhealthy(0) {
                Some(reason) => Step::Wait {
                    reason: format!("waiting for {reason} before exporting the registry"),
                },
                None if self.observed.leader != Some(0) => Step::Wait {
                    reason: format!(
                        "waiting for {} to lead before exporting the registry",
                        self.name(0)
                    ),
                },
                None => Step::ExportRegistry { from: 0 },
            },
        }
    }
}

/// One numbered step of a transition, for `status.transition` and `mesos-operator plan`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepDescription {
    /// From 1.
    pub number: u32,
    pub description: String,
    /// What must hold before the step after it: in words, or none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub then_waits_for: Option<String>,
    pub step: Step,
}

/// Cluster name used in previews where no cluster exists yet.
pub const PREVIEW_CLUSTER_NAME: &str = "mmc";

/// Bound on preview steps: the longest transition (1 to 9) takes about 40.
const PREVIEW_MAX_STEPS: usize = 200;

/// Errors of [`preview`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreviewError {
    #[error("from: {0}")]
    From(crate::operator::api::SpecError),
    #[error("to: {0}")]
    To(crate::operator::api::SpecError),
    #[error(
        "the planner did not finish {from} to {to} within {PREVIEW_MAX_STEPS} steps (last: {last})"
    )]
    NoProgress { from: i32, to: i32, last: String },
}

/// The numbered steps of the transition from a healthy ensemble of `from` masters
/// to `to`, as the planner takes them when nothing fails. Members are named
/// `<cluster_name>-<ordinal>`.
pub fn preview(
    cluster_name: &str,
    from: i32,
    to: i32,
    exit_mode: SingleMasterExit,
) -> Result<Vec<StepDescription>, PreviewError> {
    crate::operator::api::validate_replicas(from).map_err(PreviewError::From)?;
    crate::operator::api::validate_replicas(to).map_err(PreviewError::To)?;
    let mut spec = MesosMasterClusterSpec::with_replicas(to);
    spec.single_master_exit = exit_mode;
    let mut world = IdealWorld::healthy(cluster_name, from as u32);
    let mut steps: Vec<StepDescription> = Vec::new();
    for _ in 0..PREVIEW_MAX_STEPS {
        let observed = world.observe();
        let decision = decide(&spec, &observed);
        match &decision.step {
            Step::Done => return Ok(steps),
            Step::Wait { reason } => {
                if let Some(last) = steps.last_mut() {
                    last.then_waits_for.get_or_insert_with(|| reason.clone());
                }
                world.settle();
            }
            Step::Failed { reason } => {
                return Err(PreviewError::NoProgress {
                    from,
                    to,
                    last: reason.clone(),
                })
            }
            step => {
                steps.push(StepDescription {
                    number: steps.len() as u32 + 1,
                    description: step.describe(cluster_name),
                    then_waits_for: None,
                    step: step.clone(),
                });
                world.memory = decision.memory.clone();
                world.apply(step);
                world.memory = world.memory.after_success(step);
            }
        }
    }
    Err(PreviewError::NoProgress {
        from,
        to,
        last: steps
            .last()
            .map(|step| step.description.clone())
            .unwrap_or_default(),
    })
}

/// `preview` as text, numbered like `terraform plan`.
pub fn render_preview(from: i32, to: i32, steps: &[StepDescription]) -> String {
    let mut text = format!(
        "{from} -> {to} masters (quorum {} -> {}): {} step{}\n",
        crate::operator::api::quorum_for(from),
        crate::operator::api::quorum_for(to),
        steps.len(),
        if steps.len() == 1 { "" } else { "s" }
    );
    for step in steps {
        text.push_str(&format!("{:>3}. {}\n", step.number, step.description));
        if let Some(wait) = &step.then_waits_for {
            text.push_str(&format!("     then {wait}\n"));
        }
    }
    if steps.is_empty() {
        text.push_str("     nothing to do\n");
    }
    text
}

/// A world in which nothing fails and every step completes: enough to preview.
struct IdealWorld {
    cluster_name: String,
    /// Members that exist, with the configuration they run and their status.
    members: BTreeMap<Ordinal, (MemberConfig, ReplicaStatus)>,
    memory: PlannerMemory,
}

impl IdealWorld {
    fn healthy(cluster_name: &str, size: u32) -> Self {
        Self {
            cluster_name: cluster_name.to_string(),
            members: (0..size)
                .map(|ordinal| {
                    (
                        ordinal,
                        (MemberConfig::ensemble(size), ReplicaStatus::Voting),
                    )
                })
                .collect(),
            memory: PlannerMemory::default(),
        }
    }

    fn leader(&self) -> Option<Ordinal> {
        self.members.iter().find_map(|(ordinal, (config, status))| {
            let voting = self
                .members
                .iter()
                .filter(|(other, (_, other_status))| {
                    config.whitelist.contains(other) && *other_status == ReplicaStatus::Voting
                })
                .count() as u32;
            (*status == ReplicaStatus::Voting && voting >= config.quorum).then_some(*ordinal)
        })
    }

    fn observe(&self) -> Observed {
        Observed {
            cluster_name: self.cluster_name.clone(),
            members: self
                .members
                .iter()
                .map(|(ordinal, (config, status))| ObservedMember {
                    ordinal: *ordinal,
                    pod: Some(PodView {
                        config: config.clone(),
                        terminating: false,
                        ready: *status == ReplicaStatus::Voting,
                        replica: Some(ReplicaView {
                            status: *status,
                            log_end_position: 0,
                        }),
                    }),
                    volume: VolumeState::Present,
                })
                .collect(),
            leader: self.leader(),
            memory: self.memory.clone(),
        }
    }

    fn apply(&mut self, step: &Step) {
        match step {
            Step::RestartMember { member, config } => {
                self.members
                    .insert(*member, (config.clone(), ReplicaStatus::Recovering));
            }
            Step::CreateMember { member, config } => {
                self.members
                    .insert(*member, (config.clone(), ReplicaStatus::Empty));
            }
            Step::WipeMember { member, config, .. } => {
                self.members
                    .insert(*member, (config.clone(), ReplicaStatus::Empty));
            }
            Step::RemoveMember { member, .. } => {
                self.members.remove(member);
            }
            _ => {}
        }
    }

    /// Recovery and auto-initialization complete.
    fn settle(&mut self) {
        let all_empty = self
            .members
            .values()
            .all(|(_, status)| *status == ReplicaStatus::Empty);
        let complete = self.members.values().all(|(config, _)| {
            config
                .whitelist
                .iter()
                .all(|ordinal| self.members.contains_key(ordinal))
        });
        for (_, status) in self.members.values_mut() {
            let initializes = all_empty && complete;
            let catches_up = *status == ReplicaStatus::Empty && !all_empty;
            if initializes || catches_up || *status == ReplicaStatus::Recovering {
                *status = ReplicaStatus::Voting;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(from: i32, to: i32, mode: SingleMasterExit) -> Vec<Step> {
        preview("prod", from, to, mode)
            .expect("preview")
            .into_iter()
            .map(|description| description.step)
            .collect()
    }

    #[test]
    fn increase_three_to_five_restarts_the_three_then_adds_two() {
        let q3 = MemberConfig::ensemble(5);
        let steps = actions(3, 5, SingleMasterExit::Preserve);
        assert_eq!(steps.len(), 5, "{steps:?}");
        for step in &steps[..3] {
            assert!(
                matches!(step, Step::RestartMember { config, .. } if *config == q3),
                "{step:?}"
            );
        }
        assert_eq!(
            steps[3..],
            [
                Step::CreateMember {
                    member: 3,
                    config: q3.clone()
                },
                Step::CreateMember {
                    member: 4,
                    config: q3
                }
            ]
        );
    }

    #[test]
    fn decrease_five_to_three_removes_two_then_restarts_three() {
        let steps = actions(5, 3, SingleMasterExit::Preserve);
        assert_eq!(
            steps[..2],
            [
                Step::RemoveMember {
                    member: 4,
                    reason: RemovalReason::Extra
                },
                Step::RemoveMember {
                    member: 3,
                    reason: RemovalReason::Extra
                }
            ]
        );
        assert_eq!(steps.len(), 5, "{steps:?}");
    }

    #[test]
    fn preserve_exit_exports_before_the_wipe_and_imports_after() {
        let steps = actions(1, 3, SingleMasterExit::Preserve);
        assert_eq!(steps.first(), Some(&Step::ExportRegistry { from: 0 }));
        assert!(matches!(
            steps[1],
            Step::WipeMember {
                registry: RegistryFate::Preserved,
                ..
            }
        ));
        assert!(matches!(steps.last(), Some(Step::ImportRegistry { .. })));
    }

    #[test]
    fn wipe_exit_says_the_registry_is_lost() {
        let steps = preview("prod", 1, 3, SingleMasterExit::Wipe).expect("preview");
        assert!(steps[0].description.contains("REGISTRY IS LOST"));
        assert!(!steps
            .iter()
            .any(|step| matches!(step.step, Step::ExportRegistry { .. })));
    }

    fn healthy(size: u32) -> Observed {
        IdealWorld::healthy("prod", size).observe()
    }

    #[test]
    fn decrease_finishes_a_fenced_removal_before_lowering_the_quorum() {
        let mut observed = healthy(5);
        observed.members[4].pod = None; // pod deleted, volume not yet
        observed.memory.removing.insert(4);
        let spec = MesosMasterClusterSpec::with_replicas(3);
        assert_eq!(
            plan(&spec, &observed),
            Step::RemoveMember {
                member: 4,
                reason: RemovalReason::Fenced
            }
        );
        // Even with the target back at 5, the fenced member is not restarted on its
        // old volume: its removal finishes, then it is recreated empty.
        let spec = MesosMasterClusterSpec::with_replicas(5);
        assert!(matches!(
            plan(&spec, &observed),
            Step::RemoveMember { member: 4, .. }
        ));
        observed.members.remove(4);
        let decision = decide(&spec, &observed);
        assert!(decision.memory.removing.is_empty());
        assert_eq!(
            decision.step,
            Step::CreateMember {
                member: 4,
                config: MemberConfig::ensemble(5)
            }
        );
    }

    #[test]
    fn restart_waits_for_the_last_restarted_member_to_catch_up() {
        let mut observed = healthy(3);
        if let Some(pod) = observed.members[1].pod.as_mut() {
            pod.config = MemberConfig::ensemble(5);
            pod.replica = Some(ReplicaView {
                status: ReplicaStatus::Voting,
                log_end_position: 0,
            });
        }
        if let Some(pod) = observed.members[0].pod.as_mut() {
            pod.replica = Some(ReplicaView {
                status: ReplicaStatus::Voting,
                log_end_position: CAUGHT_UP_MAX_LAG_POSITIONS + 1,
            });
        }
        let step = plan(&MesosMasterClusterSpec::with_replicas(5), &observed);
        assert!(
            matches!(&step, Step::Wait { reason } if reason.contains("prod-1 to catch up")),
            "{step:?}"
        );
    }

    #[test]
    fn exit_after_a_crash_between_export_and_wipe_does_not_export_again() {
        let mut observed = healthy(1);
        observed.memory.registry = RegistryTransfer::Exported;
        let decision = decide(&MesosMasterClusterSpec::with_replicas(3), &observed);
        assert_eq!(
            decision.step,
            Step::WipeMember {
                member: 0,
                config: MemberConfig::ensemble(3),
                registry: RegistryFate::Preserved
            }
        );
        // Recorded before the wipe: after it, the export is the only copy.
        assert_eq!(decision.memory.registry, RegistryTransfer::Wiped);
    }

    #[test]
    fn a_wiped_export_is_imported_before_done() {
        let mut observed = healthy(3);
        observed.memory.registry = RegistryTransfer::Wiped;
        assert_eq!(
            plan(&MesosMasterClusterSpec::with_replicas(3), &observed),
            Step::ImportRegistry { into: 0 }
        );
    }

    #[test]
    fn paused_waits() {
        let mut spec = MesosMasterClusterSpec::with_replicas(5);
        spec.paused = true;
        let observed = IdealWorld::healthy("prod", 3).observe();
        assert!(
            matches!(plan(&spec, &observed), Step::Wait { reason } if reason.contains("paused"))
        );
    }

    #[test]
    fn unexpected_quorum_is_refused() {
        let mut observed = IdealWorld::healthy("prod", 3).observe();
        if let Some(pod) = observed.members[1].pod.as_mut() {
            pod.config.quorum = 3;
        }
        let step = plan(&MesosMasterClusterSpec::with_replicas(5), &observed);
        assert!(
            matches!(&step, Step::Failed { reason } if reason.contains("prod-1")),
            "{step:?}"
        );
    }

    #[test]
    fn a_member_whose_volume_is_lost_is_fenced_then_replaced() {
        let mut observed = IdealWorld::healthy("prod", 3).observe();
        observed.members[1].volume = VolumeState::Lost;
        let spec = MesosMasterClusterSpec::with_replicas(3);
        let decision = decide(&spec, &observed);
        assert_eq!(
            decision.step,
            Step::RemoveMember {
                member: 1,
                reason: RemovalReason::VolumeLost
            }
        );
        assert!(decision.memory.removing.contains(&1));
        observed.members.remove(1);
        observed.memory = decision.memory;
        let decision = decide(&spec, &observed);
        assert!(decision.memory.removing.is_empty());
        assert_eq!(
            decision.step,
            Step::CreateMember {
                member: 1,
                config: MemberConfig::ensemble(3)
            }
        );
    }

    #[test]
    fn check_rejects_disjoint_quorums_and_long_whitelists() {
        let mut configs = BTreeMap::new();
        for ordinal in 0..4 {
            configs.insert(ordinal, BTreeSet::from([MemberConfig::ensemble(5)]));
        }
        configs
            .entry(0)
            .or_insert_with(BTreeSet::new)
            .insert(MemberConfig::ensemble(3));
        assert!(check_configs(&configs, 4).is_err());
        let long = MemberConfig {
            quorum: 2,
            whitelist: (0..5).collect(),
        };
        assert_eq!(
            check_configs(&BTreeMap::from([(0, BTreeSet::from([long]))]), 1),
            Err(SafetyViolation::WhitelistTooLong {
                whitelist_len: 5,
                quorum: 2
            })
        );
    }
}
