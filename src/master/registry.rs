//! The registry: the state a Mesos master keeps durable (the writing master, the
//! agents admitted, unreachable and gone, the maintenance schedule, quotas and
//! weights), as a pure, deterministic state machine fed by log entries.
//!
//! An entry is either a [`Entry::Batch`] of operations (many clients' writes in one
//! log append) or a [`Entry::Snapshot`] of the whole registry. Operations are
//! validated before they are appended ([`Registry::validate`], against the registry
//! plus the [`Pending`] operations ahead of them); [`Registry::apply`] re-checks each
//! operation and leaves the registry untouched when it no longer holds (a batch
//! ahead of it may have failed), so applying never fails and every member computes
//! the same registry from the same entries.
//!
//! Unlike Mesos, which rewrites the whole registry on every store, a store here
//! appends only its operations; the whole registry is written only in the occasional
//! snapshot (see `registrar.rs` for when).
//!
//! A snapshot is written as consecutive *chunk* entries ([`encode_snapshot_chunks`]),
//! each at most [`SNAPSHOT_CHUNK_BYTES`] of the encoded snapshot, so that no log
//! entry, and no message of the log carrying many entries, comes near the 16 MiB
//! frame limit however large the registry grows (a 50,000-agent registry is ~16 MB).
//! The machine reassembles them and applies the snapshot only once every chunk of
//! the same snapshot arrived, in order, with nothing in between, and the whole
//! matches its length and checksum: a snapshot whose writer lost the lead half-way
//! is ignored by every member alike, never restored from.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// First byte of every entry. Bump it when the encoding changes, and keep decoding
/// every older version: a log written by an older master must stay readable.
pub const ENTRY_VERSION: u8 = 1;

/// First byte of a snapshot chunk entry: `[SNAPSHOT_CHUNK_TAG][header length u32 BE]
/// [header JSON][payload]`, the payload being a slice of a version-1 snapshot entry.
/// Raw bytes after a small header, so a chunk costs its size and not 3-4 times it
/// as a JSON array of numbers would.
pub const SNAPSHOT_CHUNK_TAG: u8 = 2;

/// Largest slice of a snapshot in one chunk entry. The log bounds a catch-up or
/// read reply by bytes (`MAX_REPLY_BYTES`, always letting at least one entry
/// through), so a reply holds at most that plus one chunk, which must stay well
/// under the frame limit. `--registry_snapshot_chunk_bytes` may lower it (tests do,
/// to get many chunks from a small registry), never raise it.
pub const SNAPSHOT_CHUNK_BYTES: usize = 128 << 10;

const _: () = assert!(
    crate::log::coordinator::MAX_REPLY_BYTES + SNAPSHOT_CHUNK_BYTES
        <= crate::log::frame::DEFAULT_MAX_PAYLOAD_BYTES as usize / 2,
    "a catch-up message full of snapshot chunks must fit a frame with room to spare"
);

/// Most chunks in one snapshot: the log's coordinator queues at most 1,024
/// proposals, and the whole snapshot is proposed at once so nothing lands between
/// its chunks. At the default chunk size that is a 128 MiB registry.
pub const MAX_SNAPSHOT_CHUNKS: usize = 1_024;

/// Longest agent id, hostname, role or resource name accepted. Mesos sets no limit;
/// ours keeps one client from making every snapshot larger by megabytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Most resources one agent may declare (a real agent declares a handful).
pub const MAX_RESOURCES_PER_AGENT: usize = 256;
/// Most ranges or set items in one resource (ports come as a few ranges).
pub const MAX_VALUES_PER_RESOURCE: usize = 1_024;
/// Most windows in a maintenance schedule.
pub const MAX_MAINTENANCE_WINDOWS: usize = 10_000;
/// Most machines over all windows of a schedule (twice the 50,000-agent target).
pub const MAX_MAINTENANCE_MACHINES: usize = 100_000;
/// Most roles in one quota or weight update.
pub const MAX_ROLES_PER_UPDATE: usize = 1_000;
/// Most resource names in one quota's guarantees or limits.
pub const MAX_QUOTA_RESOURCES: usize = 64;

/// Why an operation is refused. Each variant carries what the client needs to fix
/// its request; the HTTP layer maps them to 400, 404 and 409.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum OperationError {
    #[error("{0}")]
    Invalid(String),
    #[error("Agent '{0}' not found")]
    AgentNotFound(String),
    #[error("Agent '{0}' is already admitted")]
    AgentAlreadyAdmitted(String),
    #[error("Agent '{0}' has been marked gone and cannot be admitted again")]
    AgentGone(String),
    #[error("Role '{0}' has no quota set")]
    NoQuota(String),
    /// Sealed by `POST /registry/seal` so that an export stays complete until the
    /// log is wiped; `None` while the seal is queued but not yet applied.
    #[error("the registry is sealed for transfer{}; writes are refused until it is unsealed", position.map(|p| format!(" at position {p}")).unwrap_or_default())]
    Sealed { position: Option<u64> },
    /// An import goes only into a registry without data, so it never merges two
    /// lineages or applies twice.
    #[error("the registry already holds data (agents, maintenance, quota or weights); an import goes only into an empty registry")]
    NotEmpty,
    /// A chunk of an import that is no longer being staged (a newer import began,
    /// or a snapshot intervened): the import must be retried from its start.
    #[error(
        "import {import:x} chunk {index} does not continue an import in progress; retry the import"
    )]
    ImportInterrupted { import: u64, index: u32 },
}

fn invalid(message: impl Into<String>) -> OperationError {
    OperationError::Invalid(message.into())
}

/// Why an entry cannot be read: the log is corrupt or was written by a newer master.
/// Never skipped: a member that skipped an entry would diverge from the others.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("registry entry at position {position} is unreadable: {reason}")]
pub struct CorruptEntry {
    pub position: u64,
    pub reason: String,
}

/// Mesos `Value.Scalar`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scalar {
    pub value: f64,
}

/// Mesos `Value.Range` (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueRange {
    pub begin: u64,
    pub end: u64,
}

/// Mesos `Value.Ranges`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ranges {
    #[serde(default)]
    pub range: Vec<ValueRange>,
}

/// Mesos `Value.Set`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ValueSet {
    #[serde(default)]
    pub item: Vec<String>,
}

/// Mesos `Value.Type`, as far as resources use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValueType {
    Scalar,
    Ranges,
    Set,
}

/// Mesos v1 `Resource` (name, type and value; reservations and disks are not kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ValueType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalar: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Ranges>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<ValueSet>,
}

impl Resource {
    pub fn scalar(name: &str, value: f64) -> Self {
        Self {
            name: name.to_owned(),
            kind: ValueType::Scalar,
            scalar: Some(Scalar { value }),
            ranges: None,
            set: None,
        }
    }

    fn validate(&self) -> Result<(), OperationError> {
        validate_name("resource name", &self.name)?;
        match (self.kind, &self.scalar, &self.ranges, &self.set) {
            (ValueType::Scalar, Some(scalar), None, None) => {
                validate_quantity(&format!("resource '{}'", self.name), scalar.value)
            }
            (ValueType::Ranges, None, Some(ranges), None) => {
                if ranges.range.len() > MAX_VALUES_PER_RESOURCE {
                    return Err(invalid(format!(
                        "resource '{}' has more than {MAX_VALUES_PER_RESOURCE} ranges",
                        self.name
                    )));
                }
                match ranges.range.iter().find(|range| range.begin > range.end) {
                    Some(range) => Err(invalid(format!(
                        "resource '{}' has range [{}-{}] with begin after end",
                        self.name, range.begin, range.end
                    ))),
                    None => Ok(()),
                }
            }
            (ValueType::Set, None, None, Some(set)) => {
                if set.item.len() > MAX_VALUES_PER_RESOURCE {
                    return Err(invalid(format!(
                        "resource '{}' has more than {MAX_VALUES_PER_RESOURCE} set items",
                        self.name
                    )));
                }
                set.item
                    .iter()
                    .try_for_each(|item| validate_name("set item", item))
            }
            _ => Err(invalid(format!(
                "resource '{}' must carry exactly the value its type names",
                self.name
            ))),
        }
    }
}

/// An admitted agent: what Mesos keeps of its `SlaveInfo`, plus when it was admitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: String,
    pub hostname: String,
    pub port: u16,
    pub resources: Vec<Resource>,
    /// Stamped by the leader when it queued the admission, so every member agrees.
    pub registered_time_ns: i64,
}

impl AgentRecord {
    fn validate(&self) -> Result<(), OperationError> {
        validate_agent_id(&self.id)?;
        validate_name("hostname", &self.hostname)?;
        if self.resources.len() > MAX_RESOURCES_PER_AGENT {
            return Err(invalid(format!(
                "an agent may declare at most {MAX_RESOURCES_PER_AGENT} resources"
            )));
        }
        self.resources.iter().try_for_each(Resource::validate)
    }
}

/// The master that last wrote to the registry (Mesos keeps its `MasterInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterRecord {
    /// Advertised address, `ip:port`.
    pub address: String,
    /// When this master started writing as leader.
    pub elected_time_ns: i64,
}

/// Mesos `TimeInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeInfo {
    pub nanoseconds: i64,
}

/// Mesos `DurationInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurationInfo {
    pub nanoseconds: i64,
}

/// Mesos `MachineID`: a hostname, an IP, or both.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MachineId {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// Mesos `Unavailability`: from `start`, for `duration` (forever when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unavailability {
    pub start: TimeInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<DurationInfo>,
}

/// Mesos `maintenance.Window`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceWindow {
    #[serde(default)]
    pub machine_ids: Vec<MachineId>,
    pub unavailability: Unavailability,
}

/// Mesos `maintenance.Schedule`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MaintenanceSchedule {
    #[serde(default)]
    pub windows: Vec<MaintenanceWindow>,
}

impl MaintenanceSchedule {
    /// Mesos' rules: every window names at least one machine, every machine has a
    /// hostname or an IP, no machine is in two windows, durations are not negative.
    pub fn validate(&self) -> Result<(), OperationError> {
        if self.windows.len() > MAX_MAINTENANCE_WINDOWS {
            return Err(invalid(format!(
                "a schedule may hold at most {MAX_MAINTENANCE_WINDOWS} windows"
            )));
        }
        let machines: usize = self.windows.iter().map(|w| w.machine_ids.len()).sum();
        if machines > MAX_MAINTENANCE_MACHINES {
            return Err(invalid(format!(
                "a schedule may name at most {MAX_MAINTENANCE_MACHINES} machines"
            )));
        }
        let mut seen = BTreeSet::new();
        for window in &self.windows {
            if window.machine_ids.is_empty() {
                return Err(invalid(
                    "List of machines in the maintenance window is empty",
                ));
            }
            if window
                .unavailability
                .duration
                .is_some_and(|d| d.nanoseconds < 0)
            {
                return Err(invalid("Unavailability duration is negative"));
            }
            for machine in &window.machine_ids {
                match (&machine.hostname, &machine.ip) {
                    (None, None) => return Err(invalid("A machine must have a hostname or an IP")),
                    (hostname, ip) => {
                        if let Some(hostname) = hostname {
                            validate_name("machine hostname", hostname)?;
                        }
                        if let Some(ip) = ip {
                            if ip.parse::<std::net::IpAddr>().is_err() {
                                return Err(invalid(format!("'{ip}' is not an IP address")));
                            }
                        }
                    }
                }
                if !seen.insert(machine) {
                    return Err(invalid(format!(
                        "Machine {machine:?} appears in more than one maintenance window"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Mesos `QuotaConfig`: per resource name, what a role is guaranteed and its cap.
/// A config with neither guarantees nor limits is the default quota: it removes the
/// role's entry, as in Mesos.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaConfig {
    pub role: String,
    #[serde(default)]
    pub guarantees: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub limits: BTreeMap<String, Scalar>,
}

impl QuotaConfig {
    fn validate(&self) -> Result<(), OperationError> {
        validate_role(&self.role)?;
        if self.role == "*" {
            return Err(invalid("Quota cannot be set for the default role '*'"));
        }
        for (kind, values) in [("guarantees", &self.guarantees), ("limits", &self.limits)] {
            if values.len() > MAX_QUOTA_RESOURCES {
                return Err(invalid(format!(
                    "quota {kind} may name at most {MAX_QUOTA_RESOURCES} resources"
                )));
            }
            for (name, scalar) in values {
                validate_name("resource name", name)?;
                validate_quantity(&format!("quota {kind} of '{name}'"), scalar.value)?;
            }
        }
        for (name, guarantee) in &self.guarantees {
            if let Some(limit) = self.limits.get(name) {
                if guarantee.value > limit.value {
                    return Err(invalid(format!(
                        "Role '{}': guarantee of '{name}' ({}) exceeds its limit ({})",
                        self.role, guarantee.value, limit.value
                    )));
                }
            }
        }
        Ok(())
    }

    fn is_default(&self) -> bool {
        self.guarantees.is_empty() && self.limits.is_empty()
    }
}

/// Mesos `WeightInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightInfo {
    pub role: String,
    pub weight: f64,
}

/// The registry itself. Ordered maps, so iteration (and so every encoding and every
/// answer) is the same on every member.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    pub master: Option<MasterRecord>,
    /// Admitted agents by id; encoded as a list (the id is in each record).
    #[serde(with = "agents_as_list")]
    pub agents: BTreeMap<String, AgentRecord>,
    /// Unreachable agents: id → when marked, in nanoseconds.
    pub unreachable: BTreeMap<String, i64>,
    /// Gone agents: id → when marked, in nanoseconds. Never admitted again.
    pub gone: BTreeMap<String, i64>,
    pub schedule: MaintenanceSchedule,
    pub quotas: BTreeMap<String, QuotaConfig>,
    pub weights: BTreeMap<String, f64>,
    /// Position of the seal entry while the registry is sealed for a transfer:
    /// kept in the registry so snapshots (and members restored from them) keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<u64>,
}

mod agents_as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::AgentRecord;

    pub fn serialize<S: Serializer>(
        agents: &BTreeMap<String, AgentRecord>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(agents.values())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, AgentRecord>, D::Error> {
        let list = Vec::<AgentRecord>::deserialize(deserializer)?;
        let count = list.len();
        let agents: BTreeMap<_, _> = list
            .into_iter()
            .map(|agent| (agent.id.clone(), agent))
            .collect();
        if agents.len() != count {
            return Err(serde::de::Error::custom("an agent id appears twice"));
        }
        Ok(agents)
    }
}

/// Where an agent id stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentLocation {
    Absent,
    Admitted,
    Unreachable,
    Gone,
}

/// One change to the registry. Times are stamped by the leader when it queues the
/// operation, so applying it is the same on every member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// The leader records itself before its first write (Mesos' master record).
    SetMaster {
        master: MasterRecord,
    },
    /// Admits an agent (or re-admits an unreachable one); a gone agent never returns.
    AdmitAgent {
        agent: AgentRecord,
    },
    MarkAgentUnreachable {
        id: String,
        time_ns: i64,
    },
    /// Marks an admitted or unreachable agent gone; marking a gone agent again is a
    /// no-op, as in Mesos.
    MarkAgentGone {
        id: String,
        time_ns: i64,
    },
    UpdateMaintenanceSchedule {
        schedule: MaintenanceSchedule,
    },
    UpdateQuotas {
        configs: Vec<QuotaConfig>,
    },
    RemoveQuota {
        role: String,
    },
    UpdateWeights {
        weights: Vec<WeightInfo>,
    },
    /// Refuses every later data write until [`Operation::Unseal`], so an export
    /// taken at the seal stays complete (`POST /registry/seal`).
    Seal,
    Unseal,
    /// Part `index` of `total` of an imported registry (`POST /registry/import`).
    /// Chunks are staged by the registry machine and installed together when the
    /// last is applied, so a half-imported registry is never visible; each chunk
    /// is one log entry, which keeps entries under the log's frame limit.
    ImportChunk {
        import: u64,
        index: u32,
        total: u32,
        part: Box<Registry>,
    },
}

impl Operation {
    /// Whether the operation changes registry data (and so is refused while sealed).
    fn writes_data(&self) -> bool {
        !matches!(self, Self::SetMaster { .. } | Self::Seal | Self::Unseal)
    }

    /// The checks that depend only on the operation itself.
    pub fn validate_content(&self) -> Result<(), OperationError> {
        match self {
            Self::SetMaster { master } => validate_name("master address", &master.address),
            Self::AdmitAgent { agent } => agent.validate(),
            Self::MarkAgentUnreachable { id, .. } | Self::MarkAgentGone { id, .. } => {
                validate_agent_id(id)
            }
            Self::UpdateMaintenanceSchedule { schedule } => schedule.validate(),
            Self::UpdateQuotas { configs } => {
                if configs.len() > MAX_ROLES_PER_UPDATE {
                    return Err(invalid(format!(
                        "at most {MAX_ROLES_PER_UPDATE} quota configs per update"
                    )));
                }
                let mut roles = BTreeSet::new();
                for config in configs {
                    config.validate()?;
                    if !roles.insert(config.role.as_str()) {
                        return Err(invalid(format!(
                            "Role '{}' appears more than once",
                            config.role
                        )));
                    }
                }
                Ok(())
            }
            Self::RemoveQuota { role } => validate_role(role),
            Self::Seal | Self::Unseal => Ok(()),
            Self::ImportChunk {
                index, total, part, ..
            } => {
                if *index >= *total {
                    return Err(invalid(format!(
                        "import chunk {index} of {total} is out of range"
                    )));
                }
                if part.sealed.is_some() {
                    return Err(invalid("an import chunk must not carry a seal"));
                }
                part.agents.values().try_for_each(AgentRecord::validate)?;
                part.schedule.validate()
            }
            Self::UpdateWeights { weights } => {
                if weights.len() > MAX_ROLES_PER_UPDATE {
                    return Err(invalid(format!(
                        "at most {MAX_ROLES_PER_UPDATE} weights per update"
                    )));
                }
                let mut roles = BTreeSet::new();
                for info in weights {
                    validate_role(&info.role)?;
                    // NaN fails this comparison too.
                    if !(info.weight > 0.0 && info.weight.is_finite()) {
                        return Err(invalid(format!(
                            "Invalid weight '{}' for role '{}': weights must be positive and finite",
                            info.weight, info.role
                        )));
                    }
                    if !roles.insert(info.role.as_str()) {
                        return Err(invalid(format!(
                            "Role '{}' appears more than once",
                            info.role
                        )));
                    }
                }
                Ok(())
            }
        }
    }
}

/// The effect of operations validated but not yet applied, so a new operation is
/// validated against the registry as it will be once they are applied.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    agents: BTreeMap<String, AgentLocation>,
    quotas: BTreeMap<String, bool>,
    /// Whether the last queued seal or unseal seals.
    sealed: Option<bool>,
}

impl Pending {
    /// Records a validated operation's effect.
    pub fn record(&mut self, operation: &Operation) {
        match operation {
            Operation::AdmitAgent { agent } => {
                self.agents
                    .insert(agent.id.clone(), AgentLocation::Admitted);
            }
            Operation::MarkAgentUnreachable { id, .. } => {
                self.agents.insert(id.clone(), AgentLocation::Unreachable);
            }
            Operation::MarkAgentGone { id, .. } => {
                self.agents.insert(id.clone(), AgentLocation::Gone);
            }
            Operation::UpdateQuotas { configs } => {
                for config in configs {
                    self.quotas
                        .insert(config.role.clone(), !config.is_default());
                }
            }
            Operation::RemoveQuota { role } => {
                self.quotas.insert(role.clone(), false);
            }
            Operation::Seal => self.sealed = Some(true),
            Operation::Unseal => self.sealed = Some(false),
            Operation::SetMaster { .. }
            | Operation::UpdateMaintenanceSchedule { .. }
            | Operation::UpdateWeights { .. }
            | Operation::ImportChunk { .. } => {}
        }
    }
}

impl Registry {
    pub fn agent_location(&self, id: &str) -> AgentLocation {
        if self.agents.contains_key(id) {
            AgentLocation::Admitted
        } else if self.unreachable.contains_key(id) {
            AgentLocation::Unreachable
        } else if self.gone.contains_key(id) {
            AgentLocation::Gone
        } else {
            AgentLocation::Absent
        }
    }

    /// Whether the registry holds any data an import would overwrite (the master
    /// record and the seal are not data).
    pub fn has_data(&self) -> bool {
        !(self.agents.is_empty()
            && self.unreachable.is_empty()
            && self.gone.is_empty()
            && self.schedule.windows.is_empty()
            && self.quotas.is_empty()
            && self.weights.is_empty())
    }

    /// Whether `operation` may be applied after the `pending` ones.
    pub fn validate(&self, operation: &Operation, pending: &Pending) -> Result<(), OperationError> {
        operation.validate_content()?;
        let sealed = pending.sealed.unwrap_or(self.sealed.is_some());
        if sealed && operation.writes_data() {
            return Err(OperationError::Sealed {
                position: self.sealed,
            });
        }
        let location = |id: &str| {
            pending
                .agents
                .get(id)
                .copied()
                .unwrap_or_else(|| self.agent_location(id))
        };
        match operation {
            Operation::AdmitAgent { agent } => match location(&agent.id) {
                AgentLocation::Absent | AgentLocation::Unreachable => Ok(()),
                AgentLocation::Admitted => {
                    Err(OperationError::AgentAlreadyAdmitted(agent.id.clone()))
                }
                AgentLocation::Gone => Err(OperationError::AgentGone(agent.id.clone())),
            },
            Operation::MarkAgentUnreachable { id, .. } => match location(id) {
                AgentLocation::Admitted => Ok(()),
                _ => Err(OperationError::AgentNotFound(id.clone())),
            },
            Operation::MarkAgentGone { id, .. } => match location(id) {
                AgentLocation::Absent => Err(OperationError::AgentNotFound(id.clone())),
                _ => Ok(()),
            },
            Operation::RemoveQuota { role } => {
                let present = pending
                    .quotas
                    .get(role)
                    .copied()
                    .unwrap_or_else(|| self.quotas.contains_key(role));
                if present {
                    Ok(())
                } else {
                    Err(OperationError::NoQuota(role.clone()))
                }
            }
            // Only the first chunk can be judged here; the registry machine checks
            // the rest against the import it stages.
            Operation::ImportChunk { index: 0, .. } if self.has_data() => {
                Err(OperationError::NotEmpty)
            }
            Operation::SetMaster { .. }
            | Operation::UpdateMaintenanceSchedule { .. }
            | Operation::UpdateQuotas { .. }
            | Operation::UpdateWeights { .. }
            | Operation::Seal
            | Operation::Unseal
            | Operation::ImportChunk { .. } => Ok(()),
        }
    }

    /// Applies `operation` if it is valid against the registry as it is now; when it
    /// is not, the registry is left exactly as it was and the reason returned. A
    /// seal applied this way records position 0; the log applies with
    /// [`Registry::apply_at`].
    pub fn apply(&mut self, operation: &Operation) -> Result<(), OperationError> {
        self.apply_at(operation, 0)
    }

    /// [`Registry::apply`] for the entry at `position` (recorded by a seal). An
    /// import chunk is refused here: only [`RegistryMachine`] stages imports.
    pub fn apply_at(&mut self, operation: &Operation, position: u64) -> Result<(), OperationError> {
        self.validate(operation, &Pending::default())?;
        match operation {
            Operation::Seal => {
                // Sealing a sealed registry keeps the first seal's position.
                self.sealed.get_or_insert(position);
            }
            Operation::Unseal => self.sealed = None,
            Operation::ImportChunk { .. } => {
                return Err(invalid(
                    "import chunks are applied by the registry machine, from the log",
                ))
            }
            Operation::SetMaster { master } => self.master = Some(master.clone()),
            Operation::AdmitAgent { agent } => {
                self.unreachable.remove(&agent.id);
                self.agents.insert(agent.id.clone(), agent.clone());
            }
            Operation::MarkAgentUnreachable { id, time_ns } => {
                self.agents.remove(id);
                self.unreachable.insert(id.clone(), *time_ns);
            }
            Operation::MarkAgentGone { id, time_ns } => {
                if !self.gone.contains_key(id) {
                    self.agents.remove(id);
                    self.unreachable.remove(id);
                    self.gone.insert(id.clone(), *time_ns);
                }
            }
            Operation::UpdateMaintenanceSchedule { schedule } => self.schedule = schedule.clone(),
            Operation::UpdateQuotas { configs } => {
                for config in configs {
                    if config.is_default() {
                        self.quotas.remove(&config.role);
                    } else {
                        self.quotas.insert(config.role.clone(), config.clone());
                    }
                }
            }
            Operation::RemoveQuota { role } => {
                self.quotas.remove(role);
            }
            Operation::UpdateWeights { weights } => {
                for info in weights {
                    self.weights.insert(info.role.clone(), info.weight);
                }
            }
        }
        Ok(())
    }
}

/// A log entry as decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    /// Operations of many clients, applied in order. `writer` and `seq` let the
    /// registrar that appended it find the clients waiting for it.
    Batch {
        writer: u64,
        seq: u64,
        ops: Vec<Operation>,
    },
    /// The whole registry as it was after the entry at `base_position` (the last
    /// batch or snapshot the writer had applied); `None` for an empty log.
    Snapshot {
        writer: u64,
        seq: u64,
        base_position: Option<u64>,
        registry: Registry,
    },
}

/// The encoding side of [`Entry::Snapshot`], borrowing the registry rather than
/// copying 50,000 agents; it must serialize exactly as `Entry` does.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum EntryRef<'a> {
    Snapshot {
        writer: u64,
        seq: u64,
        base_position: Option<u64>,
        registry: &'a Registry,
    },
}

fn encode_versioned(value: &impl Serialize) -> Vec<u8> {
    let mut bytes = vec![ENTRY_VERSION];
    // Serializing these types to a Vec cannot fail: every map key is a string and
    // validation keeps every float finite.
    if let Err(err) = serde_json::to_writer(&mut bytes, value) {
        unreachable!("registry entries always serialize: {err}");
    }
    bytes
}

/// Encodes a batch entry.
pub fn encode_batch(writer: u64, seq: u64, ops: Vec<Operation>) -> Vec<u8> {
    encode_versioned(&Entry::Batch { writer, seq, ops })
}

/// Encodes a snapshot entry of `registry`.
pub fn encode_snapshot(
    writer: u64,
    seq: u64,
    base_position: Option<u64>,
    registry: &Registry,
) -> Vec<u8> {
    encode_versioned(&EntryRef::Snapshot {
        writer,
        seq,
        base_position,
        registry,
    })
}

/// Decodes the entry at `position`.
pub fn decode_entry(position: u64, bytes: &[u8]) -> Result<Entry, CorruptEntry> {
    let corrupt = |reason: String| CorruptEntry { position, reason };
    match bytes.split_first() {
        None => Err(corrupt("empty entry".to_owned())),
        Some((&ENTRY_VERSION, body)) => {
            serde_json::from_slice(body).map_err(|err| corrupt(err.to_string()))
        }
        Some((version, _)) => Err(corrupt(format!(
            "unknown entry version {version} (this master reads version {ENTRY_VERSION}); \
             was the log written by a newer master?"
        ))),
    }
}

/// The header of a snapshot chunk entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkHeader {
    /// The snapshot's writer and sequence number: chunks of one snapshot share them.
    pub writer: u64,
    pub seq: u64,
    /// This chunk's index, from 0, of `count`.
    pub index: u32,
    pub count: u32,
    /// Length and crc32c of the whole encoded snapshot (a version-1 entry).
    pub snapshot_bytes: u64,
    pub snapshot_crc32c: u32,
}

/// Why a snapshot cannot be written as chunks.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChunkingError {
    #[error("a snapshot of {snapshot_bytes} bytes needs {chunks} chunks of {chunk_bytes} bytes, more than the {MAX_SNAPSHOT_CHUNKS} allowed")]
    TooManyChunks {
        snapshot_bytes: usize,
        chunk_bytes: usize,
        chunks: usize,
    },
    #[error("a snapshot chunk must hold 1 to {SNAPSHOT_CHUNK_BYTES} bytes, not {0}")]
    ChunkSize(usize),
}

/// Splits an encoded snapshot entry ([`encode_snapshot`]) into chunk entries of at
/// most `chunk_bytes` of it each, to be appended consecutively.
pub fn encode_snapshot_chunks(
    writer: u64,
    seq: u64,
    snapshot: &[u8],
    chunk_bytes: usize,
) -> Result<Vec<Vec<u8>>, ChunkingError> {
    if chunk_bytes == 0 || chunk_bytes > SNAPSHOT_CHUNK_BYTES {
        return Err(ChunkingError::ChunkSize(chunk_bytes));
    }
    let chunks = snapshot.len().div_ceil(chunk_bytes).max(1);
    if chunks > MAX_SNAPSHOT_CHUNKS {
        return Err(ChunkingError::TooManyChunks {
            snapshot_bytes: snapshot.len(),
            chunk_bytes,
            chunks,
        });
    }
    let snapshot_crc32c = crc32c::crc32c(snapshot);
    let count = chunks as u32; // at most MAX_SNAPSHOT_CHUNKS
    let payloads: Vec<&[u8]> = if snapshot.is_empty() {
        vec![snapshot]
    } else {
        snapshot.chunks(chunk_bytes).collect()
    };
    Ok(payloads
        .into_iter()
        .enumerate()
        .map(|(index, payload)| {
            let header = ChunkHeader {
                writer,
                seq,
                index: index as u32,
                count,
                snapshot_bytes: snapshot.len() as u64,
                snapshot_crc32c,
            };
            let header = match serde_json::to_vec(&header) {
                Ok(header) => header,
                Err(err) => unreachable!("a chunk header always serializes: {err}"),
            };
            let mut entry = Vec::with_capacity(1 + 4 + header.len() + payload.len());
            entry.push(SNAPSHOT_CHUNK_TAG);
            entry.extend_from_slice(&(header.len() as u32).to_be_bytes());
            entry.extend_from_slice(&header);
            entry.extend_from_slice(payload);
            entry
        })
        .collect())
}

/// Splits a chunk entry into its header and payload.
pub fn decode_chunk(position: u64, bytes: &[u8]) -> Result<(ChunkHeader, &[u8]), CorruptEntry> {
    let corrupt = |reason: String| CorruptEntry { position, reason };
    let Some((&SNAPSHOT_CHUNK_TAG, rest)) = bytes.split_first() else {
        return Err(corrupt("not a snapshot chunk".to_owned()));
    };
    let (length, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("snapshot chunk cut short in its header length".to_owned()))?;
    let length = u32::from_be_bytes(*length) as usize;
    if rest.len() < length {
        return Err(corrupt(format!(
            "snapshot chunk header of {length} bytes but only {} bytes follow",
            rest.len()
        )));
    }
    let (header, payload) = rest.split_at(length);
    let header: ChunkHeader = serde_json::from_slice(header)
        .map_err(|err| corrupt(format!("snapshot chunk header: {err}")))?;
    if header.count == 0 || header.index >= header.count {
        return Err(corrupt(format!(
            "snapshot chunk {} of {} is impossible",
            header.index, header.count
        )));
    }
    Ok((header, payload))
}

/// A chunked snapshot being reassembled.
#[derive(Debug, Clone, PartialEq)]
struct Assembly {
    header: ChunkHeader,
    first_position: u64,
    next_index: u32,
    bytes: Vec<u8>,
    /// Log bytes of the chunk entries so far.
    entry_bytes: u64,
}

/// What applying one entry did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Batch {
        writer: u64,
        seq: u64,
        outcomes: Vec<Result<(), OperationError>>,
    },
    Snapshot {
        writer: u64,
        seq: u64,
        /// False when the snapshot missed entries written after its base (its
        /// writer lost the lead meanwhile): it is ignored, on every member alike.
        accepted: bool,
        /// Where the snapshot begins in the log (its first chunk): the log may be
        /// truncated below it once it is accepted.
        first_position: u64,
    },
    /// A chunk of a snapshot not complete yet (or an orphan one, ignored): nothing
    /// changed in the registry.
    SnapshotChunk { writer: u64, seq: u64 },
}

/// The registry plus what replaying the log needs to know: where the last entry
/// was and how much log has accumulated since the last snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistryMachine {
    /// Shared so a snapshot can be encoded without holding the registrar's lock;
    /// applying copies it only if such an encoding still holds it.
    registry: Arc<Registry>,
    /// Position of the last batch or accepted snapshot applied.
    last_entry_position: Option<u64>,
    /// Position of the last accepted snapshot.
    snapshot_position: Option<u64>,
    snapshot_bytes: u64,
    operations_since_snapshot: u64,
    bytes_since_snapshot: u64,
    /// The chunked snapshot whose chunks are arriving.
    assembly: Option<Assembly>,
    /// The import whose chunks are being applied, not yet visible. Not part of
    /// snapshots: an accepted snapshot drops it on every member alike, and the
    /// import's later chunks are then refused everywhere.
    staged_import: Option<StagedImport>,
}

#[derive(Debug, Clone, PartialEq)]
struct StagedImport {
    import: u64,
    next_index: u32,
    total: u32,
    registry: Registry,
}

impl RegistryMachine {
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The registry as it is now, to read (encode) without borrowing the machine.
    pub fn shared_registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    pub fn last_entry_position(&self) -> Option<u64> {
        self.last_entry_position
    }

    pub fn snapshot_position(&self) -> Option<u64> {
        self.snapshot_position
    }

    pub fn operations_since_snapshot(&self) -> u64 {
        self.operations_since_snapshot
    }

    pub fn bytes_since_snapshot(&self) -> u64 {
        self.bytes_since_snapshot
    }

    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes
    }

    /// Bytes of log the registry needs: its latest snapshot plus everything since.
    pub fn log_bytes(&self) -> u64 {
        self.snapshot_bytes + self.bytes_since_snapshot
    }

    /// Applies the learned entry at `position`. Entries must come in increasing
    /// position order (gaps are the log's Nop and Truncate positions).
    pub fn apply_entry(&mut self, position: u64, bytes: &[u8]) -> Result<Applied, CorruptEntry> {
        self.apply_entry_known(position, bytes, None)
    }

    /// [`RegistryMachine::apply_entry`], where `own_snapshot` is the encoded snapshot
    /// this member is appending from its own registry, if any: when a chunked
    /// snapshot reassembles to exactly these bytes it is applied without decoding
    /// (the registry held is the one it encodes). Same outcome either way.
    pub fn apply_entry_known(
        &mut self,
        position: u64,
        bytes: &[u8],
        own_snapshot: Option<&[u8]>,
    ) -> Result<Applied, CorruptEntry> {
        debug_assert!(
            self.last_entry_position.is_none_or(|last| last < position),
            "entries must be applied in position order"
        );
        if bytes.first() == Some(&SNAPSHOT_CHUNK_TAG) {
            return self.apply_chunk(position, bytes, own_snapshot);
        }
        let entry_bytes = bytes.len() as u64;
        match decode_entry(position, bytes)? {
            Entry::Batch { writer, seq, ops } => {
                self.abandon_assembly(position, "a batch entry came between its chunks");
                let outcomes = ops
                    .iter()
                    .map(|op| self.apply_operation(position, op))
                    .collect();
                self.last_entry_position = Some(position);
                self.operations_since_snapshot += ops.len() as u64;
                self.bytes_since_snapshot += entry_bytes;
                Ok(Applied::Batch {
                    writer,
                    seq,
                    outcomes,
                })
            }
            Entry::Snapshot {
                writer,
                seq,
                base_position,
                registry,
            } => {
                // Written by masters before chunking; still read.
                self.abandon_assembly(position, "a snapshot entry came between its chunks");
                let accepted = self.accept_snapshot(
                    position,
                    position,
                    base_position,
                    entry_bytes,
                    Some(registry),
                );
                Ok(Applied::Snapshot {
                    writer,
                    seq,
                    accepted,
                    first_position: position,
                })
            }
        }
    }

    fn abandon_assembly(&mut self, position: u64, why: &str) {
        if let Some(assembly) = self.assembly.take() {
            tracing::warn!(
                position,
                first_position = assembly.first_position,
                chunks = assembly.next_index,
                count = assembly.header.count,
                why,
                "ignoring a snapshot left incomplete (its writer lost the lead while appending it)"
            );
            self.bytes_since_snapshot += assembly.entry_bytes;
        }
    }

    fn apply_operation(&mut self, position: u64, op: &Operation) -> Result<(), OperationError> {
        let Operation::ImportChunk {
            import,
            index,
            total,
            part,
        } = op
        else {
            return Arc::make_mut(&mut self.registry).apply_at(op, position);
        };
        self.registry.validate(op, &Pending::default())?;
        let mut staged = if *index == 0 {
            StagedImport {
                import: *import,
                next_index: 0,
                total: *total,
                registry: Registry::default(),
            }
        } else {
            match self.staged_import.take() {
                Some(staged)
                    if staged.import == *import
                        && staged.next_index == *index
                        && staged.total == *total =>
                {
                    staged
                }
                other => {
                    self.staged_import = other;
                    return Err(OperationError::ImportInterrupted {
                        import: *import,
                        index: *index,
                    });
                }
            }
        };
        merge_part(&mut staged.registry, part);
        staged.next_index += 1;
        if staged.next_index < staged.total {
            self.staged_import = Some(staged);
            return Ok(());
        }
        // The last chunk: install all of it at once, if the registry is still
        // empty (a write may have landed between the chunks).
        if self.registry.has_data() {
            return Err(OperationError::NotEmpty);
        }
        let registry = Arc::make_mut(&mut self.registry);
        let master = registry.master.take();
        *registry = Registry {
            master,
            sealed: None,
            ..staged.registry
        };
        self.staged_import = None;
        Ok(())
    }

    fn apply_chunk(
        &mut self,
        position: u64,
        bytes: &[u8],
        own_snapshot: Option<&[u8]>,
    ) -> Result<Applied, CorruptEntry> {
        let (header, payload) = decode_chunk(position, bytes)?;
        let entry_bytes = bytes.len() as u64;
        let (writer, seq) = (header.writer, header.seq);
        let continues = self.assembly.as_ref().is_some_and(|assembly| {
            assembly.header.writer == header.writer
                && assembly.header.seq == header.seq
                && assembly.header.count == header.count
                && assembly.header.snapshot_bytes == header.snapshot_bytes
                && assembly.header.snapshot_crc32c == header.snapshot_crc32c
                && assembly.next_index == header.index
        });
        if !continues {
            self.abandon_assembly(position, "a chunk of another snapshot or out of order");
            if header.index != 0 {
                if self.last_entry_position.is_none() {
                    // Truncation only ever follows a whole accepted snapshot, to its
                    // first chunk: a log that begins inside one has lost its prefix.
                    return Err(CorruptEntry {
                        position,
                        reason: format!(
                            "the log begins with chunk {} of {} of a snapshot; its first chunks are missing",
                            header.index, header.count
                        ),
                    });
                }
                self.bytes_since_snapshot += entry_bytes;
                return Ok(Applied::SnapshotChunk { writer, seq });
            }
            // Never trust a length from the log for an allocation beyond what a
            // snapshot may be.
            let capacity = usize::try_from(header.snapshot_bytes)
                .unwrap_or(usize::MAX)
                .min(MAX_SNAPSHOT_CHUNKS * SNAPSHOT_CHUNK_BYTES);
            self.assembly = Some(Assembly {
                header: header.clone(),
                first_position: position,
                next_index: 0,
                bytes: Vec::with_capacity(capacity),
                entry_bytes: 0,
            });
        }
        let Some(assembly) = self.assembly.as_mut() else {
            unreachable!("an assembly was just continued or started");
        };
        assembly.bytes.extend_from_slice(payload);
        assembly.entry_bytes += entry_bytes;
        assembly.next_index += 1;
        if assembly.bytes.len() as u64 > header.snapshot_bytes {
            return Err(CorruptEntry {
                position,
                reason: format!(
                    "snapshot chunks hold more than the {} bytes their header announces",
                    header.snapshot_bytes
                ),
            });
        }
        if assembly.next_index < header.count {
            return Ok(Applied::SnapshotChunk { writer, seq });
        }
        let Some(assembly) = self.assembly.take() else {
            unreachable!("the assembly is complete");
        };
        let corrupt = |reason: String| CorruptEntry { position, reason };
        if assembly.bytes.len() as u64 != header.snapshot_bytes {
            return Err(corrupt(format!(
                "a chunked snapshot of {} bytes where its header announces {}",
                assembly.bytes.len(),
                header.snapshot_bytes
            )));
        }
        if crc32c::crc32c(&assembly.bytes) != header.snapshot_crc32c {
            return Err(corrupt(
                "a chunked snapshot does not match its checksum".to_owned(),
            ));
        }
        let (base_position, registry) = if own_snapshot == Some(assembly.bytes.as_slice()) {
            // Our own encoding of the registry we hold; decode only its frame.
            match decode_snapshot_base(position, &assembly.bytes)? {
                (snapshot_writer, snapshot_seq, base)
                    if (snapshot_writer, snapshot_seq) == (writer, seq) =>
                {
                    (base, None)
                }
                _ => {
                    return Err(corrupt(
                        "a chunked snapshot names another writer inside".to_owned(),
                    ))
                }
            }
        } else {
            match decode_entry(position, &assembly.bytes)? {
                Entry::Snapshot {
                    writer: snapshot_writer,
                    seq: snapshot_seq,
                    base_position,
                    registry,
                } if (snapshot_writer, snapshot_seq) == (writer, seq) => {
                    (base_position, Some(registry))
                }
                _ => {
                    return Err(corrupt(
                        "chunks reassemble to something other than their snapshot".to_owned(),
                    ))
                }
            }
        };
        let accepted = self.accept_snapshot(
            assembly.first_position,
            position,
            base_position,
            assembly.entry_bytes,
            registry,
        );
        Ok(Applied::Snapshot {
            writer,
            seq,
            accepted,
            first_position: assembly.first_position,
        })
    }

    /// `registry` is `None` when it is known to equal the one held. The snapshot
    /// occupies `first_position..=last_position` of the log.
    fn accept_snapshot(
        &mut self,
        first_position: u64,
        last_position: u64,
        base_position: Option<u64>,
        entry_bytes: u64,
        registry: Option<Registry>,
    ) -> bool {
        // A member restoring from a truncated log has applied nothing yet and takes
        // the snapshot as it is (truncation follows only accepted ones).
        let accepted =
            self.last_entry_position.is_none() || self.last_entry_position == base_position;
        if accepted {
            if let Some(registry) = registry {
                debug_assert!(
                    self.last_entry_position.is_none() || *self.registry == registry,
                    "an accepted snapshot equals the registry it was taken from"
                );
                self.registry = Arc::new(registry);
            }
            self.last_entry_position = Some(last_position);
            self.snapshot_position = Some(first_position);
            self.staged_import = None;
            self.snapshot_bytes = entry_bytes;
            self.operations_since_snapshot = 0;
            self.bytes_since_snapshot = 0;
        } else {
            tracing::warn!(
                first_position,
                last_position,
                ?base_position,
                last_entry_position = ?self.last_entry_position,
                "ignoring a snapshot that misses entries after its base"
            );
            self.bytes_since_snapshot += entry_bytes;
        }
        accepted
    }
}

/// The writer, seq and base position of an encoded snapshot entry, without
/// decoding its registry (only called on bytes this member encoded itself).
fn decode_snapshot_base(
    position: u64,
    bytes: &[u8],
) -> Result<(u64, u64, Option<u64>), CorruptEntry> {
    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Frame {
        Snapshot {
            writer: u64,
            seq: u64,
            base_position: Option<u64>,
            #[allow(dead_code)]
            registry: serde::de::IgnoredAny,
        },
    }
    let corrupt = |reason: String| CorruptEntry { position, reason };
    match bytes.split_first() {
        Some((&ENTRY_VERSION, body)) => match serde_json::from_slice::<Frame>(body) {
            Ok(Frame::Snapshot {
                writer,
                seq,
                base_position,
                ..
            }) => Ok((writer, seq, base_position)),
            Err(err) => Err(corrupt(err.to_string())),
        },
        _ => Err(corrupt("not a version-1 snapshot".to_owned())),
    }
}

/// Adds one import chunk's part to the registry being staged. Chunks hold disjoint
/// parts (see `transfer::import_chunks`), so nothing is overwritten.
fn merge_part(into: &mut Registry, part: &Registry) {
    let part = part.clone();
    into.agents.extend(part.agents);
    into.unreachable.extend(part.unreachable);
    into.gone.extend(part.gone);
    into.schedule.windows.extend(part.schedule.windows);
    into.quotas.extend(part.quotas);
    into.weights.extend(part.weights);
}

fn validate_name(what: &str, name: &str) -> Result<(), OperationError> {
    if name.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(invalid(format!(
            "{what} is longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{what} '{}' has control characters",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// Mesos' agent id rules: not empty, no path separators or control characters, not
/// `.` or `..` (ids name directories on agents).
fn validate_agent_id(id: &str) -> Result<(), OperationError> {
    validate_name("agent id", id)?;
    if id == "." || id == ".." || id.contains(['/', '\\']) {
        return Err(invalid(format!(
            "'{}' is not a valid agent id",
            id.escape_debug()
        )));
    }
    Ok(())
}

/// Mesos' role rules: `/`-separated components, none empty, `.` or `..`, none
/// starting with `-`, no whitespace or control characters.
fn validate_role(role: &str) -> Result<(), OperationError> {
    validate_name("role", role)?;
    let valid = role.split('/').all(|component| {
        !component.is_empty()
            && component != "."
            && component != ".."
            && !component.starts_with('-')
            && !component.chars().any(char::is_whitespace)
    });
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "'{}' is not a valid role",
            role.escape_debug()
        )))
    }
}

fn validate_quantity(what: &str, value: f64) -> Result<(), OperationError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} must be a finite, non-negative quantity, not {value}"
        )))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn agent(id: &str) -> AgentRecord {
        AgentRecord {
            id: id.to_owned(),
            hostname: format!("{id}.example.com"),
            port: 5051,
            resources: vec![
                Resource::scalar("cpus", 8.0),
                Resource::scalar("mem", 32768.0),
                Resource {
                    name: "ports".to_owned(),
                    kind: ValueType::Ranges,
                    scalar: None,
                    ranges: Some(Ranges {
                        range: vec![ValueRange {
                            begin: 31000,
                            end: 32000,
                        }],
                    }),
                    set: None,
                },
            ],
            registered_time_ns: 1_700_000_000_000_000_000,
        }
    }

    fn admit(id: &str) -> Operation {
        Operation::AdmitAgent { agent: agent(id) }
    }

    fn window(hosts: &[&str]) -> MaintenanceWindow {
        MaintenanceWindow {
            machine_ids: hosts
                .iter()
                .map(|h| MachineId {
                    hostname: Some((*h).to_owned()),
                    ip: None,
                })
                .collect(),
            unavailability: Unavailability {
                start: TimeInfo { nanoseconds: 1 },
                duration: Some(DurationInfo {
                    nanoseconds: 3_600_000_000_000,
                }),
            },
        }
    }

    #[test]
    fn admitting_twice_or_after_gone_is_refused_and_leaves_the_registry_untouched() {
        let mut registry = Registry::default();
        registry.apply(&admit("a")).unwrap();
        let before = registry.clone();
        assert_eq!(
            registry.apply(&admit("a")),
            Err(OperationError::AgentAlreadyAdmitted("a".to_owned()))
        );
        registry
            .apply(&Operation::MarkAgentGone {
                id: "a".to_owned(),
                time_ns: 5,
            })
            .unwrap();
        assert_ne!(registry, before);
        let gone = registry.clone();
        assert_eq!(
            registry.apply(&admit("a")),
            Err(OperationError::AgentGone("a".to_owned()))
        );
        assert_eq!(registry, gone);
        // Marking gone again is a no-op, as in Mesos.
        registry
            .apply(&Operation::MarkAgentGone {
                id: "a".to_owned(),
                time_ns: 9,
            })
            .unwrap();
        assert_eq!(registry, gone);
    }

    #[test]
    fn unreachable_agents_are_readmitted_and_unknown_ones_not_found() {
        let mut registry = Registry::default();
        registry.apply(&admit("a")).unwrap();
        registry
            .apply(&Operation::MarkAgentUnreachable {
                id: "a".to_owned(),
                time_ns: 3,
            })
            .unwrap();
        assert_eq!(registry.agent_location("a"), AgentLocation::Unreachable);
        registry.apply(&admit("a")).unwrap();
        assert_eq!(registry.agent_location("a"), AgentLocation::Admitted);
        assert_eq!(
            registry.apply(&Operation::MarkAgentGone {
                id: "zz".to_owned(),
                time_ns: 1
            }),
            Err(OperationError::AgentNotFound("zz".to_owned()))
        );
    }

    #[test]
    fn validation_counts_pending_operations_of_the_same_batch() {
        let registry = Registry::default();
        let mut pending = Pending::default();
        registry.validate(&admit("a"), &pending).unwrap();
        pending.record(&admit("a"));
        assert_eq!(
            registry.validate(&admit("a"), &pending),
            Err(OperationError::AgentAlreadyAdmitted("a".to_owned()))
        );
        let gone = Operation::MarkAgentGone {
            id: "a".to_owned(),
            time_ns: 1,
        };
        registry.validate(&gone, &pending).unwrap();
        let quota = Operation::UpdateQuotas {
            configs: vec![QuotaConfig {
                role: "dev".to_owned(),
                guarantees: BTreeMap::from([("cpus".to_owned(), Scalar { value: 1.0 })]),
                limits: BTreeMap::new(),
            }],
        };
        let remove = Operation::RemoveQuota {
            role: "dev".to_owned(),
        };
        assert!(registry.validate(&remove, &pending).is_err());
        pending.record(&quota);
        registry.validate(&remove, &pending).unwrap();
    }

    #[test]
    fn bad_content_is_refused() {
        let registry = Registry::default();
        let none = Pending::default();
        let bad_weights = [f64::NAN, -1.0, 0.0, f64::INFINITY];
        for weight in bad_weights {
            let op = Operation::UpdateWeights {
                weights: vec![WeightInfo {
                    role: "dev".to_owned(),
                    weight,
                }],
            };
            assert!(registry.validate(&op, &none).is_err(), "{weight}");
        }
        for role in ["", "-a", "a//b", "a/..", "a b", "/a"] {
            let op = Operation::UpdateWeights {
                weights: vec![WeightInfo {
                    role: role.to_owned(),
                    weight: 1.0,
                }],
            };
            assert!(registry.validate(&op, &none).is_err(), "{role:?}");
        }
        for id in ["", ".", "..", "a/b", "a\nb"] {
            assert!(registry.validate(&admit(id), &none).is_err(), "{id:?}");
        }
        let mut negative = agent("a");
        negative.resources[0].scalar = Some(Scalar { value: -1.0 });
        assert!(registry
            .validate(&Operation::AdmitAgent { agent: negative }, &none)
            .is_err());
        let twice = MaintenanceSchedule {
            windows: vec![window(&["h1"]), window(&["h1"])],
        };
        assert!(twice.validate().is_err());
        let empty = MaintenanceSchedule {
            windows: vec![window(&[])],
        };
        assert!(empty.validate().is_err());
        let over = QuotaConfig {
            role: "dev".to_owned(),
            guarantees: BTreeMap::from([("cpus".to_owned(), Scalar { value: 2.0 })]),
            limits: BTreeMap::from([("cpus".to_owned(), Scalar { value: 1.0 })]),
        };
        assert!(over.validate().is_err());
    }

    #[test]
    fn entries_roundtrip_and_unknown_versions_are_corruption() {
        let bytes = encode_batch(7, 1, vec![admit("a")]);
        assert_eq!(bytes[0], ENTRY_VERSION);
        assert_eq!(
            decode_entry(3, &bytes).unwrap(),
            Entry::Batch {
                writer: 7,
                seq: 1,
                ops: vec![admit("a")]
            }
        );
        let mut registry = Registry::default();
        registry.apply(&admit("a")).unwrap();
        let snapshot = encode_snapshot(7, 2, Some(3), &registry);
        assert_eq!(
            decode_entry(4, &snapshot).unwrap(),
            Entry::Snapshot {
                writer: 7,
                seq: 2,
                base_position: Some(3),
                registry
            }
        );
        let mut future = bytes.clone();
        future[0] = ENTRY_VERSION + 1;
        assert!(decode_entry(5, &future)
            .unwrap_err()
            .reason
            .contains("version"));
        assert!(decode_entry(5, &[]).is_err());
        assert!(decode_entry(5, &bytes[..bytes.len() - 1]).is_err());
        let mut machine = RegistryMachine::default();
        assert!(machine.apply_entry(1, &[ENTRY_VERSION, b'{']).is_err());
    }

    #[test]
    fn a_stale_snapshot_is_ignored_by_every_member() {
        let mut machine = RegistryMachine::default();
        machine
            .apply_entry(1, &encode_batch(1, 1, vec![admit("a")]))
            .unwrap();
        let stale = encode_snapshot(1, 2, Some(1), machine.registry());
        machine
            .apply_entry(2, &encode_batch(2, 1, vec![admit("b")]))
            .unwrap();
        let applied = machine.apply_entry(3, &stale).unwrap();
        assert_eq!(
            applied,
            Applied::Snapshot {
                writer: 1,
                seq: 2,
                accepted: false,
                first_position: 3,
            }
        );
        assert_eq!(machine.registry().agents.len(), 2);
    }

    /// A registry of `agents` agents behind a few batches, and the machine holding it.
    fn filled(agents: usize) -> RegistryMachine {
        let mut machine = RegistryMachine::default();
        let ids: Vec<String> = (0..agents).map(|i| format!("agent-{i:06}")).collect();
        for (n, batch) in ids.chunks(1_000).enumerate() {
            let ops = batch.iter().map(|id| admit(id)).collect();
            machine
                .apply_entry(n as u64 + 1, &encode_batch(1, n as u64, ops))
                .unwrap();
        }
        machine
    }

    /// `machine`'s registry as chunk entries at positions from `from`.
    fn chunked(machine: &RegistryMachine, from: u64, chunk_bytes: usize) -> Vec<(u64, Vec<u8>)> {
        let snapshot = encode_snapshot(1, 99, machine.last_entry_position(), machine.registry());
        encode_snapshot_chunks(1, 99, &snapshot, chunk_bytes)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| (from + i as u64, chunk))
            .collect()
    }

    #[test]
    fn applying_an_own_snapshot_without_decoding_equals_decoding_it() {
        let mut decoded = filled(30);
        let mut own = decoded.clone();
        let snapshot = encode_snapshot(1, 99, Some(1), decoded.registry());
        let chunks = chunked(&decoded, 2, 1_000);
        assert!(chunks.len() > 3, "{} chunks", chunks.len());
        let mut by_decoding = Vec::new();
        let mut by_comparison = Vec::new();
        for (position, chunk) in &chunks {
            by_decoding.push(decoded.apply_entry(*position, chunk).unwrap());
            by_comparison.push(
                own.apply_entry_known(*position, chunk, Some(&snapshot))
                    .unwrap(),
            );
        }
        assert_eq!(by_decoding, by_comparison);
        assert_eq!(
            by_decoding.last(),
            Some(&Applied::Snapshot {
                writer: 1,
                seq: 99,
                accepted: true,
                first_position: 2
            })
        );
        assert_eq!(decoded, own);
        assert_eq!(own.snapshot_position(), Some(2));
        assert_eq!(own.last_entry_position(), chunks.last().map(|c| c.0));
    }

    #[test]
    fn a_chunked_snapshot_restores_a_member_that_starts_at_its_first_chunk() {
        let mut writer = filled(200);
        let chunks = chunked(&writer, 10, 4_096);
        assert!(chunks.len() >= 10, "{} chunks", chunks.len());
        for (position, chunk) in &chunks {
            assert!(chunk.len() <= 4_096 + 200, "{} bytes", chunk.len());
            writer.apply_entry(*position, chunk).unwrap();
        }
        let after = chunks.last().unwrap().0 + 1;
        let batch = encode_batch(1, 7, vec![admit("late")]);
        writer.apply_entry(after, &batch).unwrap();
        // A member whose log was truncated to the snapshot's first chunk.
        let mut log = chunks.clone();
        log.push((after, batch));
        let restored = replay(&log);
        assert_eq!(restored.registry(), writer.registry());
        assert_eq!(restored.registry().agents.len(), 201);
        assert_eq!(restored.snapshot_position(), Some(10));
    }

    #[test]
    fn a_half_written_chunked_snapshot_is_never_applied() {
        let base = filled(100);
        let chunks = chunked(&base, 10, 2_048);
        let count = chunks.len();
        assert!(count >= 4);
        let later = encode_batch(2, 1, vec![admit("after-failover")]);
        // The writer lost the lead after some chunks; the next leader writes on.
        for cut in [1, count / 2, count - 1] {
            let mut machine = base.clone();
            for (position, chunk) in &chunks[..cut] {
                assert!(matches!(
                    machine.apply_entry(*position, chunk).unwrap(),
                    Applied::SnapshotChunk { .. }
                ));
            }
            machine.apply_entry(100, &later).unwrap();
            assert_eq!(machine.snapshot_position(), None, "cut {cut}");
            assert_eq!(machine.registry().agents.len(), 101);
            // Its remaining chunks, chosen later, are orphans and change nothing.
            for (position, chunk) in &chunks[cut..] {
                let applied = machine.apply_entry(200 + *position, chunk).unwrap();
                assert!(
                    matches!(applied, Applied::SnapshotChunk { .. }),
                    "{applied:?}"
                );
            }
            assert_eq!(machine.snapshot_position(), None);
            assert_eq!(machine.registry().agents.len(), 101);
        }
        // A chunk missing in the middle (a Nop where it should be) spoils it too.
        let mut machine = base.clone();
        for (position, chunk) in chunks.iter().filter(|(p, _)| *p != 11) {
            machine.apply_entry(*position, chunk).unwrap();
        }
        assert_eq!(machine.snapshot_position(), None);
        assert_eq!(machine.registry(), base.registry());
        // A log that begins past a snapshot's first chunk is corrupt, not restored.
        let mut empty = RegistryMachine::default();
        assert!(empty.apply_entry(chunks[1].0, &chunks[1].1).is_err());
    }

    #[test]
    fn damaged_chunks_are_corruption() {
        let base = filled(20);
        let chunks = chunked(&base, 10, 1_024);
        let mut machine = base.clone();
        let (last, rest) = chunks.split_last().unwrap();
        for (position, chunk) in rest {
            machine.apply_entry(*position, chunk).unwrap();
        }
        let mut flipped = last.1.clone();
        let end = flipped.len() - 1;
        flipped[end] ^= 1;
        let err = machine.apply_entry(last.0, &flipped).unwrap_err();
        assert!(err.reason.contains("checksum"), "{err}");
        assert!(decode_chunk(1, &[SNAPSHOT_CHUNK_TAG, 0, 0]).is_err());
        assert!(decode_chunk(1, &[SNAPSHOT_CHUNK_TAG, 0, 0, 0, 9, b'{']).is_err());
        assert!(encode_snapshot_chunks(1, 1, b"x", 0).is_err());
        assert!(encode_snapshot_chunks(1, 1, b"x", SNAPSHOT_CHUNK_BYTES + 1).is_err());
        assert!(matches!(
            encode_snapshot_chunks(1, 1, &vec![0; MAX_SNAPSHOT_CHUNKS + 1], 1),
            Err(ChunkingError::TooManyChunks { .. })
        ));
    }

    /// At the real size: 50,000 agents (~16 MB encoded, as one entry beyond what
    /// a frame carries) snapshot into chunks of the default size, each far under
    /// the frame limit, and restore the same registry.
    #[test]
    fn a_fifty_thousand_agent_snapshot_chunks_within_frames_and_restores() {
        let writer = filled(50_000);
        let snapshot = encode_snapshot(1, 99, writer.last_entry_position(), writer.registry());
        let chunks = chunked(&writer, 100, SNAPSHOT_CHUNK_BYTES);
        let largest = chunks.iter().map(|c| c.1.len()).max().unwrap();
        eprintln!(
            "50,000 agents: snapshot {} bytes in {} chunks, largest chunk entry {largest} bytes",
            snapshot.len(),
            chunks.len()
        );
        assert!(snapshot.len() > 12 << 20, "{} bytes", snapshot.len());
        assert!(chunks.len() >= 100);
        assert!(largest <= SNAPSHOT_CHUNK_BYTES + 256);
        let restored = replay(&chunks);
        assert_eq!(restored.registry(), writer.registry());
    }

    // Operations drawn from a small id and role space, so they collide often.
    fn operation() -> impl Strategy<Value = Operation> {
        let id = prop::sample::select(vec!["a", "b", "c", "d", "e"]);
        let role = prop::sample::select(vec!["dev", "ops", "*", "a/b"]);
        prop_oneof![
            id.clone().prop_map(admit),
            (id.clone(), any::<i64>()).prop_map(|(id, t)| Operation::MarkAgentUnreachable {
                id: id.to_owned(),
                time_ns: t
            }),
            (id.clone(), any::<i64>()).prop_map(|(id, t)| Operation::MarkAgentGone {
                id: id.to_owned(),
                time_ns: t
            }),
            (role.clone(), -1.0..4.0f64).prop_map(|(role, weight)| Operation::UpdateWeights {
                weights: vec![WeightInfo {
                    role: role.to_owned(),
                    weight
                }]
            }),
            (role.clone(), 0.0..4.0f64, 0.0..4.0f64).prop_map(|(role, g, l)| {
                Operation::UpdateQuotas {
                    configs: vec![QuotaConfig {
                        role: role.to_owned(),
                        guarantees: BTreeMap::from([("cpus".to_owned(), Scalar { value: g })]),
                        limits: BTreeMap::from([("cpus".to_owned(), Scalar { value: l })]),
                    }],
                }
            }),
            role.prop_map(|role| Operation::RemoveQuota {
                role: role.to_owned()
            }),
            prop::collection::vec(id, 0..3).prop_map(|hosts| {
                Operation::UpdateMaintenanceSchedule {
                    schedule: MaintenanceSchedule {
                        windows: vec![window(&hosts)],
                    },
                }
            }),
        ]
    }

    fn batches() -> impl Strategy<Value = Vec<Vec<Operation>>> {
        prop::collection::vec(prop::collection::vec(operation(), 1..6), 1..30)
    }

    fn replay(entries: &[(u64, Vec<u8>)]) -> RegistryMachine {
        let mut machine = RegistryMachine::default();
        for (position, bytes) in entries {
            machine.apply_entry(*position, bytes).unwrap();
        }
        machine
    }

    proptest! {
        #[test]
        fn replaying_the_same_entries_gives_the_same_registry(batches in batches()) {
            let entries: Vec<(u64, Vec<u8>)> = batches
                .into_iter()
                .enumerate()
                .map(|(i, ops)| (i as u64 * 2 + 1, encode_batch(1, i as u64, ops)))
                .collect();
            let (first, second) = (replay(&entries), replay(&entries));
            prop_assert_eq!(first.registry(), second.registry());
        }

        #[test]
        fn snapshot_plus_suffix_equals_full_replay(batches in batches(), cut in 0usize..30) {
            let cut = cut.min(batches.len());
            let mut full = RegistryMachine::default();
            let mut snapshot = None;
            let mut suffix = Vec::new();
            for (i, ops) in batches.into_iter().enumerate() {
                if i == cut {
                    snapshot = Some(encode_snapshot(1, 0, full.last_entry_position(), full.registry()));
                }
                let bytes = encode_batch(1, i as u64, ops);
                full.apply_entry(i as u64 + 1, &bytes).unwrap();
                if snapshot.is_some() {
                    suffix.push((i as u64 + 1, bytes));
                }
            }
            let snapshot = snapshot.unwrap_or_else(|| {
                encode_snapshot(1, 0, full.last_entry_position(), full.registry())
            });
            let mut restored = RegistryMachine::default();
            let applied = restored.apply_entry(0, &snapshot).unwrap();
            let accepted = matches!(applied, Applied::Snapshot { accepted: true, .. });
            prop_assert!(accepted);
            for (position, bytes) in &suffix {
                restored.apply_entry(*position, bytes).unwrap();
            }
            prop_assert_eq!(restored.registry(), full.registry());
        }

        #[test]
        fn validated_operations_apply_and_refused_ones_change_nothing(batches in batches()) {
            let mut registry = Registry::default();
            for op in batches.into_iter().flatten() {
                let before = registry.clone();
                let valid = registry.validate(&op, &Pending::default());
                let applied = registry.apply(&op);
                prop_assert_eq!(&valid, &applied);
                if applied.is_err() {
                    prop_assert_eq!(&registry, &before);
                }
            }
        }

        #[test]
        fn pending_validation_predicts_apply(batch in prop::collection::vec(operation(), 1..20)) {
            let registry = Registry::default();
            let mut pending = Pending::default();
            let mut accepted = Vec::new();
            for op in batch {
                if registry.validate(&op, &pending).is_ok() {
                    pending.record(&op);
                    accepted.push(op);
                }
            }
            let mut applied = registry.clone();
            for op in &accepted {
                prop_assert_eq!(applied.apply(op), Ok(()));
            }
        }
    }
}
