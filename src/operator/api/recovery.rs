//! What a guarded recovery after quorum loss writes into the CRD: the request's
//! annotation, the threshold's default and the durable record shown as
//! `status.recovery`. The decisions that fill them are in `operator::recovery`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `"<member>:<log id in hex>"`: recover from this survivor, which must report
/// this log id.
pub const ANNOTATION_RECOVER_FROM: &str = "mesos.operator.dev/recover-from";

/// How long quorum must have been lost before a recovery request is taken: long
/// enough for members that merely restart (a rescheduled pod, a reboot) to come
/// back by themselves, so a user does not give up members that were about to return.
pub const DEFAULT_QUORUM_LOSS_SECONDS: u64 = 300;

/// Where a recovery stands; each phase is durable before its action runs.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RecoveryPhase {
    /// Reading the survivor's local export.
    Exporting,
    /// Export stored: stopping and wiping every member.
    Fencing,
    /// Members start empty; waiting for a leader on a new log, then importing.
    Importing,
    /// Imported; the request is dropped.
    Done,
}

/// The durable record of a recovery, also shown as `status.recovery`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryRecord {
    pub phase: RecoveryPhase,
    /// The survivor recovered from.
    pub from_member: String,
    /// The log it was on, now fenced (hex).
    pub old_log_id: String,
    /// The survivor's learned end when the request was taken.
    pub survivor_learned_end: u64,
    /// One past the highest position any survivor held when the request was taken.
    pub highest_end: u64,
    /// Last position the export reflects (once exported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_position: Option<u64>,
    /// Every member of the old ensemble: its old state is wiped.
    pub fenced_members: Vec<String>,
    /// Members that were lost when the request was taken.
    pub lost_members: Vec<String>,
    /// Every log id ever fenced here (hex): a member reporting one is wiped.
    pub fenced_log_ids: Vec<String>,
    /// The log the ensemble runs on after the import (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_log_id: Option<String>,
    /// What may have been lost, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_be_lost: Option<String>,
}
