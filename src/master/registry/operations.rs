//! Operations: the checks an operation must pass (on its own, then against the
//! registry plus the [`Pending`] ones ahead of it) and applying it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::model::{
    AgentLocation, AgentRecord, MaintenanceSchedule, Operation, QuotaConfig, Registry, Resource,
    ValueType,
};

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

impl Resource {
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

impl QuotaConfig {
    pub(super) fn validate(&self) -> Result<(), OperationError> {
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
