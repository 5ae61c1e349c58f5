//! The registry's types: the registry itself, the records it keeps (Mesos'
//! shapes) and the operations that change it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    pub(super) fn is_default(&self) -> bool {
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
}
