//! The `MesosMasterCluster` custom resource: what a user asks for (spec) and where
//! the operator stands (status), with every type, condition type, label and
//! annotation the operator writes into Kubernetes objects, in one place (as
//! CloudNativePG keeps `api/v1/cluster_types.go`). Everything else in the operator
//! reads these; nothing here imports from the rest of the operator.
//!
//! The schema carries the same rules as [`MesosMasterClusterSpec::validate`], as
//! bounds and CEL `x-kubernetes-validations`, so that `kubectl apply` refuses a bad
//! spec before the operator ever sees it; `validate` exists for the objects that
//! reach the operator anyway (an older CRD, a disabled admission path) and gives the
//! status reason.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

pub mod backup;
pub mod recovery;

/// The API group of every resource this operator defines.
pub const API_GROUP: &str = "mesos.operator.dev";

/// Fewest masters: one, the single-master mode of the guide (no failure tolerance).
pub const MIN_REPLICAS: i32 = 1;

/// Most masters. The guide recommends 3 or 5; 9 (quorum 5, four failures tolerated)
/// is the largest ensemble the planner is checked exhaustively for.
pub const MAX_REPLICAS: i32 = 9;

/// The Mesos master's default port (`--port`).
pub const DEFAULT_PORT: u16 = 5050;

/// The default master image; the chart and the examples pin a tag.
pub const DEFAULT_IMAGE: &str = "mesos-master:latest";

/// Members addressable from outside: at most one advertise entry per possible member.
const MAX_ADVERTISE_ENTRIES: usize = MAX_REPLICAS as usize;

fn default_port() -> u16 {
    DEFAULT_PORT
}

fn default_image() -> String {
    DEFAULT_IMAGE.to_string()
}

/// A Mesos master ensemble: `replicas` masters, each one replica of one Paxos
/// replicated log, run with `--quorum=(replicas+1)/2` and a static whitelist of the
/// ensemble's member addresses.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mesos.operator.dev",
    version = "v1alpha1",
    kind = "MesosMasterCluster",
    namespaced,
    shortname = "mmc",
    status = "MesosMasterClusterStatus",
    doc = "A Mesos master ensemble whose quorum changes follow the operational guide, one safe step at a time",
    printcolumn = r#"{"name":"Replicas","type":"integer","description":"Masters asked for","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","description":"Masters ready (Voting and caught up)","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Quorum","type":"integer","description":"Quorum in effect","jsonPath":".status.quorum"}"#,
    printcolumn = r#"{"name":"Target","type":"integer","description":"Quorum the transition leads to","jsonPath":".status.targetQuorum"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Step","type":"string","description":"Current step of the transition","jsonPath":".status.currentStep"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MesosMasterClusterSpec {
    /// Number of masters: odd, 1 to 9. Quorum is (replicas+1)/2.
    #[schemars(range(min = 1, max = 9))]
    #[x_kube(validation = kube::core::Rule::new("self % 2 == 1").message(
        "replicas must be odd (1, 3, 5, 7 or 9): 2N masters tolerate no more failures than 2N-1 and make quorum changes unsafe"
    ))]
    pub replicas: i32,

    /// Master container image.
    #[serde(default = "default_image")]
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("image must not be empty"))]
    pub image: String,

    /// CPU and memory for each master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The volume holding each master's `work_dir` (its replicated log).
    #[serde(default)]
    pub storage: StorageSpec,

    /// The port each master listens on (`--port`).
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,

    /// How frameworks outside the cluster reach the masters (`--advertise_ip`,
    /// `--advertise_port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_access: Option<ExternalAccess>,

    /// How to leave single-master mode (1 to 3 masters): `Preserve` (default) exports
    /// the registry and imports it into the new log; `Wipe` follows the guide and
    /// loses the registry (agents, maintenance, quota, weights).
    #[serde(default)]
    pub single_master_exit: SingleMasterExit,

    /// When true the operator observes and reports but takes no step.
    #[serde(default)]
    pub paused: bool,

    /// Scheduled registry backups onto a volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::operator::api::backup::BackupSpec>,

    /// A new ensemble starts with the registry of this backup (imported once it
    /// has a leader, only if its registry is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<crate::operator::api::backup::RestoreFrom>,

    /// Guarded recovery after quorum loss (see `kubectl mmc recover`).
    #[serde(default)]
    pub recovery: RecoverySpec,

    /// TLS between members (the replica protocol): a Secret in the cluster's
    /// namespace with `tls.crt`, `tls.key` and `ca.crt`, as cert-manager writes
    /// it. Every member mounts it and requires TLS on its links; the ensemble
    /// token still authenticates every frame. Unset: plaintext links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// How the operator treats a lost quorum.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySpec {
    /// Seconds quorum must have been lost before a recovery request
    /// (`mesos.operator.dev/recover-from`) is acted on.
    #[serde(default = "default_quorum_loss_seconds")]
    pub quorum_loss_seconds: u64,
}

fn default_quorum_loss_seconds() -> u64 {
    crate::operator::api::recovery::DEFAULT_QUORUM_LOSS_SECONDS
}

impl Default for RecoverySpec {
    fn default() -> Self {
        Self {
            quorum_loss_seconds: default_quorum_loss_seconds(),
        }
    }
}

/// TLS between members.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// The Secret holding `tls.crt` (this member's certificate, valid for
    /// `<cluster>-<i>-0.<cluster>-members.<namespace>.svc`, e.g. a wildcard
    /// `*.<cluster>-members.<namespace>.svc`, with server and client auth usages),
    /// `tls.key` and `ca.crt` (the CA bundle; old and new CA during a rotation).
    /// Ignored by `mesos-operator local`, which generates its own.
    #[schemars(length(min = 1))]
    pub secret_name: String,
}

/// What happens to the registry when the ensemble leaves single-master mode.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SingleMasterExit {
    /// Export the registry before the wipe and import it into the new log.
    #[default]
    Preserve,
    /// Wipe the log as the guide documents; the registry is lost.
    Wipe,
}

/// Per-member persistent volume.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each member's volume, e.g. `10Gi`.
    #[x_kube(validation = kube::core::Rule::new(
        "isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))"
    ).message("storage.size must be a positive quantity such as 10Gi"))]
    pub size: Quantity,

    /// Storage class of the volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,

    /// Whether the volumes outlive the cluster object.
    #[serde(default)]
    pub reclaim: VolumeReclaim,
}

/// Default volume size: the registry is small, and snapshots keep the log bounded.
pub const DEFAULT_STORAGE_SIZE: &str = "1Gi";

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: Quantity(DEFAULT_STORAGE_SIZE.to_string()),
            storage_class_name: None,
            reclaim: VolumeReclaim::default(),
        }
    }
}

/// What becomes of the members' volumes when the cluster object is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VolumeReclaim {
    /// Keep the volumes (the registry survives a mistaken delete).
    #[default]
    Retain,
    /// Delete the volumes with the cluster.
    Delete,
}

/// External access to the masters.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAccess {
    /// Type of the per-member Services created for external access; none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<ExternalServiceType>,

    /// Advertise address of each member, by ordinal (entry 0 for `<name>-0`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9))]
    pub advertise: Vec<AdvertiseAddress>,
}

/// Service type of the per-member external Services.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ExternalServiceType {
    NodePort,
    LoadBalancer,
}

/// `--advertise_ip` / `--advertise_port` of one member.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdvertiseAddress {
    /// Address external entities use to reach this member.
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("advertise address must not be empty"))]
    pub address: String,
    /// Port external entities use; the member's `port` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
}

/// Why a spec cannot be acted on. The message is the status reason a user reads.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("replicas is {replicas}: it must be odd, from {MIN_REPLICAS} to {MAX_REPLICAS} (1, 3, 5, 7 or 9)")]
    Replicas { replicas: i32 },
    #[error("image must not be empty")]
    EmptyImage,
    #[error("port must be from 1 to 65535, not 0")]
    Port,
    #[error("storage.size {size:?} is not a positive quantity such as 10Gi: {why}")]
    StorageSize { size: String, why: &'static str },
    #[error("externalAccess.advertise has {entries} entries; at most {MAX_ADVERTISE_ENTRIES} (one per member)")]
    TooManyAdvertiseEntries { entries: usize },
    #[error("externalAccess.advertise[{ordinal}] has an empty address")]
    EmptyAdvertiseAddress { ordinal: usize },
    #[error("externalAccess.advertise[{ordinal}].port must be from 1 to 65535, not 0")]
    AdvertisePort { ordinal: usize },
    #[error("{0}")]
    Backup(String),
}

impl MesosMasterClusterSpec {
    /// A spec with defaults for everything but the number of masters.
    pub fn with_replicas(replicas: i32) -> Self {
        Self {
            replicas,
            image: default_image(),
            resources: None,
            storage: StorageSpec::default(),
            port: DEFAULT_PORT,
            external_access: None,
            single_master_exit: SingleMasterExit::default(),
            paused: false,
            backup: None,
            restore_from: None,
            recovery: RecoverySpec::default(),
            tls: None,
        }
    }

    /// Rejects what the schema rejects, with a message fit for `status.reason`.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_replicas(self.replicas)?;
        if self.image.trim().is_empty() {
            return Err(SpecError::EmptyImage);
        }
        if self.port == 0 {
            return Err(SpecError::Port);
        }
        parse_quantity_bytes(&self.storage.size.0).map_err(|why| SpecError::StorageSize {
            size: self.storage.size.0.clone(),
            why,
        })?;
        if let Some(external) = &self.external_access {
            if external.advertise.len() > MAX_ADVERTISE_ENTRIES {
                return Err(SpecError::TooManyAdvertiseEntries {
                    entries: external.advertise.len(),
                });
            }
            for (ordinal, entry) in external.advertise.iter().enumerate() {
                if entry.address.trim().is_empty() {
                    return Err(SpecError::EmptyAdvertiseAddress { ordinal });
                }
                if entry.port == Some(0) {
                    return Err(SpecError::AdvertisePort { ordinal });
                }
            }
        }
        crate::operator::api::backup::validate(self.backup.as_ref(), self.restore_from.as_ref())
            .map_err(SpecError::Backup)?;
        Ok(())
    }

    /// The quorum the spec asks for: a majority of `replicas`.
    pub fn target_quorum(&self) -> i32 {
        quorum_for(self.replicas)
    }
}

/// A majority of `members`.
pub fn quorum_for(members: i32) -> i32 {
    members / 2 + 1
}

/// Replicas must be odd and within bounds; shared by the spec and the `plan` command.
pub fn validate_replicas(replicas: i32) -> Result<(), SpecError> {
    if !(MIN_REPLICAS..=MAX_REPLICAS).contains(&replicas) || replicas % 2 == 0 {
        return Err(SpecError::Replicas { replicas });
    }
    Ok(())
}

/// Parses a Kubernetes quantity into bytes (rounded down), refusing zero, negative
/// and malformed sizes. Only what a volume size may be: plain numbers, decimal and
/// binary suffixes, and exponents.
pub fn parse_quantity_bytes(quantity: &str) -> Result<u128, &'static str> {
    let text = quantity.trim();
    if text.starts_with('-') {
        return Err("it is negative");
    }
    let text = text.strip_prefix('+').unwrap_or(text);
    let number_len = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_len);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err("it does not start with a number");
    }
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exponent if exponent.starts_with(['e', 'E']) => {
            let power: i32 = exponent[1..]
                .parse()
                .map_err(|_| "its exponent is not a number")?;
            10f64.powi(power)
        }
        _ => return Err("its unit is not one of Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E"),
    };
    let value: f64 = number.parse().map_err(|_| "its number is malformed")?;
    let bytes = value * multiplier;
    // NaN cannot arise from the digits above, but compare so that it would be refused.
    if bytes.partial_cmp(&1.0) == Some(std::cmp::Ordering::Less) || bytes.is_nan() {
        return Err("it is less than one byte");
    }
    Ok(bytes as u128)
}

/// The CRD as YAML, as `mesos-operator crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&MesosMasterCluster::crd())
}

/// Where the cluster stands, for `kubectl get` and `kubectl describe`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MesosMasterClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Why the cluster is in this phase, in words (which member, what it waits for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Masters that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Masters that are ready: Voting and caught up with the leader.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The smallest quorum any running master uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<i32>,
    /// The quorum the spec asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_quorum: Option<i32>,
    /// The elected master, by member name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The current step as one line (`3: restart prod-1 with --quorum=3`), for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<TransitionStatus>,
    /// What the planner must remember across operator restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planner_memory: Option<crate::operator::api::PlannerMemory>,
    /// `Available`, `Progressing`, `Degraded`, `QuorumSafe`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Scheduled backups: where they are taken and the last one, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::operator::api::backup::BackupStatus>,
    /// The restore `spec.restoreFrom` asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<crate::operator::api::backup::RestoreStatus>,
    /// The last guarded recovery after quorum loss: from which member, at which
    /// position of which (now fenced) log, what may have been lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<crate::operator::api::recovery::RecoveryRecord>,
}

// Labels and annotations: every one the operator reads or writes.

/// Label with the cluster's name on every object.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The member's ordinal, on its StatefulSet, pod template, volume and Services.
pub const LABEL_MEMBER: &str = "mesos.operator.dev/member";
/// `"true"` on the leader's pod only; the leader Service selects it.
pub const LABEL_LEADER: &str = "mesos.operator.dev/leader";
/// On the backup and restore pods: the cluster whose masters they may reach
/// (the NetworkPolicy admits pods with this label, `resources::network_policy`).
pub const LABEL_REGISTRY_CLIENT: &str = "mesos.operator.dev/registry-client";
/// `--quorum` of the pod's configuration (same source as `MESOS_QUORUM`).
pub const ANNOTATION_QUORUM: &str = "mesos.operator.dev/quorum";
/// `--masters` of the pod's configuration, as ordinals (`0,1,2`).
pub const ANNOTATION_WHITELIST: &str = "mesos.operator.dev/whitelist";
/// Set (to any value) on a member's volume claim by an administrator whose data is
/// known lost: the member is fenced and replaced.
pub const ANNOTATION_VOLUME_LOST: &str = "mesos.operator.dev/volume-lost";
/// On the registry export ConfigMap once an import found the new registry already
/// holding data (HTTP 409): the export was not replayed and is kept for the user,
/// who deletes it when it is no longer needed.
pub const ANNOTATION_IMPORT_SKIPPED: &str = "mesos.operator.dev/import-skipped";
/// `<cluster>-<ordinal>` of the member the user asks to restart. Removed by the
/// operator once the member is back, Voting and caught up.
pub const ANNOTATION_RESTART_MEMBER: &str = "mesos.operator.dev/restart-member";
/// The UID of the pod the operator deleted for the pending restart request.
pub const ANNOTATION_RESTART_POD_UID: &str = "mesos.operator.dev/restart-pod-uid";

/// A member's stable ordinal: member `i` of cluster `prod` is `prod-i`, as in a StatefulSet.
pub type Ordinal = u32;

/// Where a single-master exit stands with the registry; see [`PlannerMemory`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RegistryTransfer {
    /// No export is relied on.
    #[default]
    None,
    /// An export of the single master's registry is durable (recorded after success).
    Exported,
    /// The log was (or is being) wiped after an export: the export is the only copy
    /// until it is imported (recorded before the wipe).
    Wiped,
    /// The export was imported into the new log (recorded after success).
    Imported,
}

/// The little the planner cannot observe, persisted by the reconcile loop in
/// `status.plannerMemory` and handed back in [`Observed::memory`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannerMemory {
    /// Members whose removal (pod and volume) has begun. A fenced member is never
    /// started again with its old volume: its removal is finished first, even if the
    /// target changes back. Written before the removal starts; dropped once the
    /// member is observed gone.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub removing: BTreeSet<Ordinal>,
    /// Registry transfer of a `Preserve` single-master exit.
    #[serde(default)]
    pub registry: RegistryTransfer,
}

/// The condition types this operator sets.
pub mod condition_types {
    /// A leader is elected and a quorum of masters is ready.
    pub const AVAILABLE: &str = "Available";
    /// A transition is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// Fewer masters are ready than asked for, or a step is stuck.
    pub const DEGRADED: &str = "Degraded";
    /// Every two quorums in use intersect among the masters that may be running.
    pub const QUORUM_SAFE: &str = "QuorumSafe";
    /// Present while a `Preserve` exit's registry export is kept in its ConfigMap:
    /// True while it awaits its import, False once an import left it unused.
    pub const REGISTRY_EXPORT: &str = "RegistryExport";
    /// Every member's volume template asks for what `spec.storage` says; False
    /// names the members that keep older volumes (templates are immutable).
    pub const STORAGE_CURRENT: &str = "StorageCurrent";
    /// True while fewer than a quorum of members vote on one log; the message
    /// names the lost members, the survivors and the command that recovers.
    pub const QUORUM_LOST: &str = "QuorumLost";
    /// Present once a guarded recovery ran: its record in words.
    pub const RECOVERED: &str = "Recovered";
    /// Present while a restart request has something to say: True while the
    /// member restarts, False once it votes again or the request is refused.
    pub const MEMBER_RESTART: &str = "MemberRestart";
}

/// Coarse state of the cluster.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Running,
    Transitioning,
    Degraded,
    Failed,
    Paused,
    /// Fewer than a quorum of members vote; the operator holds every step and
    /// waits for the members to come back or for a recovery request.
    QuorumLost,
    /// A guarded recovery is rebuilding the ensemble from a survivor.
    Recovering,
}

/// One master as the operator sees it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// `<cluster>-<ordinal>`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The `--quorum` it runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<i32>,
    /// Its replica status: Empty, Starting, Recovering or Voting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_status: Option<String>,
    /// Position after the last entry of its log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_end_position: Option<u64>,
    #[serde(default)]
    pub ready: bool,
}

/// The transition in progress.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransitionStatus {
    /// Masters before the transition.
    pub from: i32,
    /// Masters asked for.
    pub to: i32,
    pub steps: Vec<TransitionStep>,
    /// Number of the step being carried out (from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<u32>,
    /// What the current step waits for, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// One numbered step of a transition.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransitionStep {
    /// From 1.
    pub number: u32,
    pub description: String,
    pub state: StepState,
}

/// Progress of one step.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StepState {
    Pending,
    Running,
    Done,
    Failed,
}

/// Statuses the tests of several modules read (the plugin's screen, the restart
/// guard), built in one place.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    pub(crate) fn member(
        ordinal: u32,
        quorum: i32,
        replica: &str,
        end: u64,
        ready: bool,
    ) -> MemberStatus {
        MemberStatus {
            name: format!("prod-{ordinal}"),
            address: Some(format!("10.96.0.{}:5050", 10 + ordinal)),
            quorum: Some(quorum),
            replica_status: Some(replica.into()),
            log_end_position: Some(end),
            ready,
        }
    }

    pub(crate) fn condition(type_: &str, status: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "Test".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(Default::default()),
        }
    }

    /// prod settled at 3 members, quorum 2, led by prod-0; `ready` per member.
    pub(crate) fn steady(ready: [bool; 3]) -> MesosMasterClusterStatus {
        MesosMasterClusterStatus {
            phase: Some(Phase::Running),
            replicas: 3,
            ready_replicas: ready.iter().filter(|ready| **ready).count() as i32,
            quorum: Some(2),
            target_quorum: Some(2),
            leader: Some("prod-0".into()),
            members: ready
                .iter()
                .enumerate()
                .map(|(ordinal, ready)| MemberStatus {
                    name: format!("prod-{ordinal}"),
                    address: None,
                    quorum: Some(2),
                    replica_status: Some("Voting".into()),
                    log_end_position: Some(10),
                    ready: *ready,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// prod in the middle of 3 -> 5: prod-0 restarted with quorum 3, prod-1 catching up.
    pub(crate) fn transitioning() -> MesosMasterClusterStatus {
        MesosMasterClusterStatus {
            observed_generation: Some(2),
            phase: Some(Phase::Transitioning),
            reason: Some("prod-1 is RECOVERING".into()),
            replicas: 3,
            ready_replicas: 2,
            quorum: Some(2),
            target_quorum: Some(3),
            leader: Some("prod-0".into()),
            current_step: Some("2: restart prod-1 with --quorum=3".into()),
            members: vec![
                member(0, 3, "Voting", 120, true),
                member(1, 3, "Recovering", 97, false),
                member(2, 2, "Voting", 120, true),
            ],
            transition: Some(TransitionStatus {
                from: 3,
                to: 5,
                steps: vec![
                    TransitionStep {
                        number: 1,
                        description: "restart prod-0 with --quorum=3".into(),
                        state: StepState::Done,
                    },
                    TransitionStep {
                        number: 2,
                        description: "restart prod-1 with --quorum=3".into(),
                        state: StepState::Running,
                    },
                    TransitionStep {
                        number: 3,
                        description: "restart prod-2 with --quorum=3".into(),
                        state: StepState::Pending,
                    },
                ],
                current_step: Some(2),
                waiting_for: Some("prod-1 to be VOTING and caught up".into()),
            }),
            planner_memory: None,
            conditions: vec![
                condition("Available", "True"),
                condition("Progressing", "True"),
            ],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_accepts_every_odd_size_from_one_to_nine() {
        for replicas in [1, 3, 5, 7, 9] {
            assert_eq!(
                MesosMasterClusterSpec::with_replicas(replicas).validate(),
                Ok(())
            );
        }
    }

    #[test]
    fn validate_rejects_even_zero_negative_and_too_many() {
        for replicas in [-1, 0, 2, 4, 8, 10, 11] {
            let error = MesosMasterClusterSpec::with_replicas(replicas)
                .validate()
                .expect_err("invalid replicas accepted");
            assert!(error.to_string().contains("must be odd"), "{error}");
        }
    }

    #[test]
    fn validate_rejects_negative_zero_and_malformed_storage() {
        for size in ["-1Gi", "0", "0Gi", "ten", "10Qi", "", "1.2.3Gi"] {
            let mut spec = MesosMasterClusterSpec::with_replicas(3);
            spec.storage.size = Quantity(size.to_string());
            let error = spec.validate().expect_err(size);
            assert!(error.to_string().contains("storage.size"), "{error}");
        }
        for size in ["10Gi", "500M", "1e9", "1.5Gi"] {
            let mut spec = MesosMasterClusterSpec::with_replicas(3);
            spec.storage.size = Quantity(size.to_string());
            assert_eq!(spec.validate(), Ok(()), "{size}");
        }
    }

    #[test]
    fn validate_rejects_empty_image_port_zero_and_bad_advertise() {
        let mut spec = MesosMasterClusterSpec::with_replicas(3);
        spec.image = " ".into();
        assert_eq!(spec.validate(), Err(SpecError::EmptyImage));

        let mut spec = MesosMasterClusterSpec::with_replicas(3);
        spec.port = 0;
        assert_eq!(spec.validate(), Err(SpecError::Port));

        let mut spec = MesosMasterClusterSpec::with_replicas(3);
        spec.external_access = Some(ExternalAccess {
            service_type: Some(ExternalServiceType::LoadBalancer),
            advertise: vec![AdvertiseAddress {
                address: String::new(),
                port: None,
            }],
        });
        assert_eq!(
            spec.validate(),
            Err(SpecError::EmptyAdvertiseAddress { ordinal: 0 })
        );
    }

    #[test]
    fn unknown_single_master_exit_mode_is_refused_when_parsed() {
        let error = serde_json::from_str::<MesosMasterClusterSpec>(
            r#"{"replicas": 3, "singleMasterExit": "Keep"}"#,
        )
        .expect_err("unknown mode accepted");
        assert!(error.to_string().contains("Keep"), "{error}");
    }

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let spec: MesosMasterClusterSpec =
            serde_json::from_str(r#"{"replicas": 5}"#).expect("minimal spec parses");
        assert_eq!(spec.port, DEFAULT_PORT);
        assert_eq!(spec.single_master_exit, SingleMasterExit::Preserve);
        assert_eq!(spec.target_quorum(), 3);
        assert!(!spec.paused);
    }
}
