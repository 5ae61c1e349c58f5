//! `spec.backup` and `spec.restoreFrom` (issue #11): the fields, the schedule
//! they carry, and what the status says of them. Pure, shared by the Kubernetes
//! reconcile (a CronJob, see `kubernetes::jobs`) and the local runtime (its own
//! timer, see `local::backups`).
//!
//! A schedule is an interval (`30s`, `15m`, `6h`, `1d`) or a five-field cron
//! expression (`0 3 * * *`, or `@daily`). Kubernetes runs both through a CronJob
//! (an interval becomes the cron expression that repeats it exactly, or is refused
//! when none does); the local runtime runs intervals only, because a cron parser
//! is a dependency it would carry for a test tool.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Backups kept per log when `keep` is not given: a week of daily backups.
pub const DEFAULT_KEEP: u32 = 7;
/// Upper bound on `keep`: each backup is a whole registry, and a volume of
/// thousands of them is a mistake rather than a policy.
pub const MAX_KEEP: u32 = 1000;
/// Default size of the backups volume: a registry is kilobytes to megabytes.
pub const DEFAULT_BACKUP_VOLUME_SIZE: &str = "1Gi";
/// An interval shorter than this is refused: a backup exports the whole registry
/// from the leader, and a second is the shortest a test needs.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

fn default_keep() -> u32 {
    DEFAULT_KEEP
}

/// Scheduled registry backups.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// An interval (`30s`, `15m`, `6h`, `1d`) or a five-field cron expression
    /// (`0 3 * * *`, `@daily`; Kubernetes only).
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("backup.schedule must not be empty"))]
    pub schedule: String,
    /// Backups kept per log id; older ones are deleted after each new backup.
    #[serde(default = "default_keep")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep: u32,
    /// The volume the backups are written to (Kubernetes: the PVC
    /// `<cluster>-backups`, kept when the cluster is deleted).
    #[serde(default)]
    pub volume: BackupVolume,
}

/// The backups volume.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupVolume {
    /// Size, e.g. `1Gi`.
    #[x_kube(validation = kube::core::Rule::new(
        "isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))"
    ).message("backup.volume.size must be a positive quantity such as 1Gi"))]
    pub size: Quantity,
    /// Storage class; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for BackupVolume {
    fn default() -> Self {
        Self {
            size: Quantity(DEFAULT_BACKUP_VOLUME_SIZE.into()),
            storage_class_name: None,
        }
    }
}

/// Where a new ensemble's registry comes from.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreFrom {
    /// The backup's file name (`registry-<log id>-<position>.json`). Kubernetes: a
    /// file on the backups volume; the local runtime also takes a path.
    #[x_kube(validation = kube::core::Rule::new("self != ''").message("restoreFrom.backup must not be empty"))]
    pub backup: String,
    /// Kubernetes: the PVC holding the backup; `<cluster>-backups` when unset
    /// (a cluster restored under a new name names the old cluster's claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,
}

/// What the status says of backups.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The schedule in effect (Kubernetes: the CronJob's cron expression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The CronJob that takes them (Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_job: Option<String>,
    /// The last backup written, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<LastBackup>,
    /// Why the last attempt failed or why backups are not scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One backup written.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    /// `registry-<log id>-<position>.json` (unknown to the operator in Kubernetes,
    /// where the CronJob writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// When it was written, RFC 3339.
    pub time: String,
}

/// Where a restore from `spec.restoreFrom` stands.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// The backup named in `spec.restoreFrom` when this was decided.
    pub backup: String,
    pub state: RestoreState,
    /// What happened, in words (the refusal's reason, the position restored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `Pending` until the ensemble has a leader; then `Restored`, or `Refused` (a bad
/// backup, or a registry that already holds data: never overwritten). Both are
/// final: a restore is tried at creation only.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestoreState {
    Pending,
    Running,
    Restored,
    Refused,
}

impl RestoreStatus {
    pub fn is_final(&self) -> bool {
        matches!(self.state, RestoreState::Restored | RestoreState::Refused)
    }
}

/// A parsed `backup.schedule`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    Every(Duration),
    /// Checked for shape only (five fields or an `@` macro); the API server's
    /// CronJob validation has the last word.
    Cron(String),
}

const CRON_MACROS: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// Parses `30s`, `15m`, `6h`, `1d`, or a cron expression.
pub fn parse_schedule(text: &str) -> Result<Schedule, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("backup.schedule is empty".into());
    }
    if CRON_MACROS.contains(&text) {
        return Ok(Schedule::Cron(text.into()));
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() == 5 {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "*/,-?".contains(c);
        if let Some(field) = fields.iter().find(|field| !field.chars().all(allowed)) {
            return Err(format!(
                "backup.schedule {text:?}: cron field {field:?} holds characters cron does not take"
            ));
        }
        return Ok(Schedule::Cron(fields.join(" ")));
    }
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "backup.schedule {text:?} is neither an interval (30s, 15m, 6h, 1d) nor a five-field cron expression"
            ))
        }
    };
    let count: u64 = number
        .parse()
        .map_err(|_| format!("backup.schedule {text:?}: the interval needs a number"))?;
    let every = Duration::from_secs(count.saturating_mul(seconds_per_unit));
    if every < MIN_INTERVAL {
        return Err(format!("backup.schedule {text:?} is shorter than 1s"));
    }
    Ok(Schedule::Every(every))
}

impl Schedule {
    /// The cron expression a CronJob runs. An interval maps only where one cron
    /// expression repeats it exactly (a divisor of an hour in minutes, of a day in
    /// hours, or one day): anything else would drift from what was asked, so it is
    /// refused with what would work.
    pub fn cron(&self) -> Result<String, String> {
        let every = match self {
            Schedule::Cron(expression) => return Ok(expression.clone()),
            Schedule::Every(every) => every.as_secs(),
        };
        let refuse = || {
            format!(
                "backup.schedule of {every}s cannot be a CronJob schedule: Kubernetes runs CronJobs at most once a minute, on the clock; use a divisor of 60 minutes (1m, 5m, 15m, 30m), of 24 hours (1h, 2h, 6h, 12h), 1d, or a cron expression"
            )
        };
        if every == 86_400 {
            return Ok("0 0 * * *".into());
        }
        if every % 3600 == 0 && 24 % (every / 3600) == 0 {
            return Ok(match every / 3600 {
                1 => "0 * * * *".into(),
                hours => format!("0 */{hours} * * *"),
            });
        }
        if every % 60 == 0 && every > 0 && 60 % (every / 60) == 0 {
            return Ok(match every / 60 {
                1 => "* * * * *".into(),
                minutes => format!("*/{minutes} * * * *"),
            });
        }
        Err(refuse())
    }
}

/// Checks the backup fields of a spec; the message is a status reason.
pub fn validate(
    backup: Option<&BackupSpec>,
    restore_from: Option<&RestoreFrom>,
) -> Result<(), String> {
    if let Some(backup) = backup {
        parse_schedule(&backup.schedule)?;
        if !(1..=MAX_KEEP).contains(&backup.keep) {
            return Err(format!(
                "backup.keep is {}: it must be from 1 to {MAX_KEEP}",
                backup.keep
            ));
        }
        crate::operator::api::parse_quantity_bytes(&backup.volume.size.0).map_err(|why| {
            format!(
                "backup.volume.size {:?} is not a positive quantity such as 1Gi: {why}",
                backup.volume.size.0
            )
        })?;
    }
    if let Some(restore) = restore_from {
        if restore.backup.trim().is_empty() {
            return Err("restoreFrom.backup must not be empty".into());
        }
    }
    Ok(())
}

/// `registry-<log_id>-<position>.json` → (log_id, position).
pub fn parse_backup_name(file_name: &str) -> Option<(u64, u64)> {
    let (log_id, position) = file_name
        .strip_prefix("registry-")?
        .strip_suffix(".json")?
        .split_once('-')?;
    Some((log_id.parse().ok()?, position.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_cron_expressions_parse_and_garbage_is_refused() {
        assert_eq!(
            parse_schedule("2s"),
            Ok(Schedule::Every(Duration::from_secs(2)))
        );
        assert_eq!(
            parse_schedule(" 1d "),
            Ok(Schedule::Every(Duration::from_secs(86_400)))
        );
        assert_eq!(
            parse_schedule("0  3 * * MON-FRI"),
            Ok(Schedule::Cron("0 3 * * MON-FRI".into()))
        );
        assert_eq!(
            parse_schedule("@daily"),
            Ok(Schedule::Cron("@daily".into()))
        );
        for bad in ["", "0s", "5", "h", "1w", "1.5h", "* * * *", "0 3 * * ;rm"] {
            assert!(parse_schedule(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn an_interval_becomes_the_cron_expression_that_repeats_it_exactly() {
        let cron = |text: &str| parse_schedule(text).and_then(|schedule| schedule.cron());
        assert_eq!(cron("1m").as_deref(), Ok("* * * * *"));
        assert_eq!(cron("15m").as_deref(), Ok("*/15 * * * *"));
        assert_eq!(cron("60m").as_deref(), Ok("0 * * * *"));
        assert_eq!(cron("6h").as_deref(), Ok("0 */6 * * *"));
        assert_eq!(cron("24h").as_deref(), Ok("0 0 * * *"));
        assert_eq!(cron("1d").as_deref(), Ok("0 0 * * *"));
        assert_eq!(cron("0 3 * * *").as_deref(), Ok("0 3 * * *"));
        for drifting in ["30s", "7m", "90m", "5h", "2d"] {
            let error = cron(drifting).expect_err(drifting);
            assert!(error.contains("cannot be a CronJob schedule"), "{error}");
        }
    }

    #[test]
    fn validate_names_the_bad_field() {
        let mut backup = BackupSpec {
            schedule: "1h".into(),
            keep: 3,
            volume: BackupVolume::default(),
        };
        assert_eq!(validate(Some(&backup), None), Ok(()));
        backup.keep = 0;
        assert!(validate(Some(&backup), None)
            .expect_err("keep 0")
            .contains("backup.keep"));
        backup.keep = 3;
        backup.volume.size = Quantity("0".into());
        assert!(validate(Some(&backup), None)
            .expect_err("size")
            .contains("backup.volume.size"));
        let restore = RestoreFrom {
            backup: " ".into(),
            claim_name: None,
        };
        assert!(validate(None, Some(&restore)).is_err());
    }

    #[test]
    fn defaults_fill_a_minimal_backup_spec() {
        let backup: BackupSpec = serde_json::from_str(r#"{"schedule": "1h"}"#).expect("parses");
        assert_eq!(backup.keep, DEFAULT_KEEP);
        assert_eq!(backup.volume, BackupVolume::default());
    }

    #[test]
    fn backup_names_parse_back() {
        assert_eq!(parse_backup_name("registry-7-200.json"), Some((7, 200)));
        assert_eq!(parse_backup_name("registry-7.json"), None);
        assert_eq!(parse_backup_name("x-7-200.json"), None);
    }
}
