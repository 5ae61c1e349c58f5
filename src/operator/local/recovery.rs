//! The local runtime's shell around [`crate::operator::recovery`]: quorum-loss
//! detection, the recovery request (`<state-dir>/recover-request`, written by
//! `kubectl mmc recover --state-dir`), and the recovery steps on member processes.
//!
//! Files in the state dir:
//!
//! ```text
//! recover-request        "<member>:<log id hex>", the user's request; removed once done
//! recovery.json          the RecoveryRecord, written before each phase's action
//! recovery-export.json   the survivor's local export, durable before any wipe
//! ```

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use super::members::STOP_GRACE;
use super::{now_ms, LocalRuntime};
use crate::master::export_document;
use crate::operator::api::recovery::{RecoveryPhase, RecoveryRecord};
use crate::operator::api::Ordinal;
use crate::operator::api::Phase;
use crate::operator::atomic_file::write_atomically;
use crate::operator::master_client::{ImportOutcome, MasterClient, MemberTarget, Redirect};
use crate::operator::planner::{self, Observed};
use crate::operator::recovery::{
    self, assess, import_step, lost_since, parse_request, validate, Assessment, ImportStep,
    MemberObservation,
};
use crate::operator::status::Hold;

/// The request file `kubectl mmc recover --state-dir` writes.
pub const REQUEST_FILE: &str = "recover-request";
/// The durable recovery record.
pub const RECORD_FILE: &str = "recovery.json";
/// The survivor's export, kept until the next recovery.
pub const EXPORT_FILE: &str = "recovery-export.json";

/// What the runtime remembers of quorum loss between ticks.
#[derive(Debug, Default)]
pub struct RecoveryState {
    /// When quorum was first seen lost (unix ms), while it stays lost. Not durable:
    /// a restarted runtime starts counting again, which only delays a recovery.
    lost_since_ms: Option<u64>,
    /// What status should show instead of the planner's phase, when the planner
    /// is held: (phase, reason, QuorumLost condition message).
    pub(super) hold: Option<Hold>,
    /// The last record (active or done).
    pub(super) record: Option<RecoveryRecord>,
    started: Option<Instant>,
}

impl<C: MasterClient> LocalRuntime<C> {
    fn recovery_path(&self, file: &str) -> PathBuf {
        self.options.state_dir.join(file)
    }

    fn load_record(&self) -> anyhow::Result<Option<RecoveryRecord>> {
        let path = self.recovery_path(RECORD_FILE);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).with_context(|| format!("{}", path.display()))?,
            )),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("{}", path.display())),
        }
    }

    /// Durable before the phase's action runs.
    fn save_record(&mut self, record: RecoveryRecord) -> anyhow::Result<()> {
        write_atomically(
            &self.recovery_path(RECORD_FILE),
            &serde_json::to_vec_pretty(&record)?,
        )?;
        let summary = record.summary();
        self.append_event(&summary)?;
        self.note(summary);
        self.recovery.record = Some(record);
        Ok(())
    }

    fn threshold_seconds(&self) -> u64 {
        self.options
            .quorum_loss_seconds
            .unwrap_or(self.cluster.spec.recovery.quorum_loss_seconds)
    }

    fn member_observations(&self, observed: &Observed) -> Vec<(Ordinal, MemberObservation)> {
        let name = self.name();
        observed
            .members
            .iter()
            .filter(|member| member.pod.is_some())
            .map(|member| {
                let status = self
                    .snapshots
                    .get(&member.ordinal)
                    .and_then(|snapshot| snapshot.status.as_ref());
                (
                    member.ordinal,
                    MemberObservation::from_status(
                        planner::member_name(&name, member.ordinal),
                        status,
                    ),
                )
            })
            .collect()
    }

    fn ordinal_of(&self, member: &str) -> Option<Ordinal> {
        let name = self.name();
        member
            .strip_prefix(&format!("{name}-"))
            .and_then(|ordinal| ordinal.parse().ok())
    }

    /// Marks the member's log for a wipe before it next starts, then stops it:
    /// from this point on it never runs on its old state again.
    fn fence_member(&mut self, ordinal: Ordinal) -> anyhow::Result<()> {
        if let Some(mut flags) = self.layout().read_flags(ordinal)? {
            flags.wipe_pending = true;
            self.layout().write_flags(&flags)?;
        }
        if !self.layout().volume_marked(ordinal) {
            // A lost volume: the runtime gives the member a fresh one (its old
            // replicated_log, if any is left, is wiped by the pending wipe).
            self.layout().create_volume(ordinal)?;
        }
        Ok(())
    }

    /// The recovery hook, called each tick after observing. `Ok(true)` when it
    /// holds the planner (quorum lost, or a recovery under way).
    pub(super) fn recovery_tick(&mut self, observed: &Observed) -> anyhow::Result<bool> {
        if self.recovery.record.is_none() {
            self.recovery.record = self.load_record()?;
        }
        self.recovery.hold = None;
        let members = self.member_observations(observed);
        let active = self
            .recovery
            .record
            .clone()
            .filter(|record| record.phase != RecoveryPhase::Done);
        if let Some(record) = active {
            if let Err(error) = self.recovery_step(record.clone(), observed, &members) {
                // Each phase is retried from its durable record; the error is shown.
                let text = format!("{}: {error:#}", record.summary());
                if self.last_error.as_deref() != Some(&text) {
                    self.note(text.clone());
                }
                self.last_error = Some(text.clone());
                self.recovery.hold = Some(Hold {
                    phase: Phase::Recovering,
                    reason: text,
                    quorum_lost: None,
                });
            }
            return Ok(true);
        }
        // After a recovery: a member that comes back on a fenced log is wiped again.
        if let Some(record) = self.recovery.record.clone() {
            for (ordinal, member) in &members {
                if member.log_id.is_some_and(|id| record.is_fenced(id)) {
                    self.fence_member(*ordinal)?;
                    self.supervisor.stop(*ordinal, STOP_GRACE);
                    self.note(format!(
                        "{} runs on fenced log {}: wiped",
                        member.name,
                        recovery::log_id_hex(member.log_id.unwrap_or(0))
                    ));
                }
            }
        }
        let observations: Vec<MemberObservation> =
            members.iter().map(|(_, member)| member.clone()).collect();
        let assessment = assess(
            &observations,
            self.cluster.spec.target_quorum().max(1) as usize,
        );
        let now = now_ms() as u64;
        self.recovery.lost_since_ms = lost_since(
            self.recovery.lost_since_ms,
            matches!(assessment, Assessment::QuorumLost(_)),
            now,
        );
        let request_text = match fs::read_to_string(self.recovery_path(REQUEST_FILE)) {
            Ok(text) => Some(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(error).context("reading the recovery request"),
        };
        let Assessment::QuorumLost(loss) = &assessment else {
            if let Some(text) = request_text {
                let refusal = match parse_request(&text) {
                    Ok(request) => {
                        recovery::RecoveryRefused::QuorumNotLost(request.member).to_string()
                    }
                    Err(refused) => refused.to_string(),
                };
                self.note(format!("{refusal}; request removed"));
                let _ = fs::remove_file(self.recovery_path(REQUEST_FILE));
            }
            return Ok(false);
        };
        let lost_for_seconds =
            now.saturating_sub(self.recovery.lost_since_ms.unwrap_or(now)) / 1000;
        let threshold = self.threshold_seconds();
        let suggestion = loss.suggested_request();
        let how = format!(
            "kubectl mmc recover {} --log-id {} --state-dir {}",
            suggestion.member,
            recovery::log_id_hex(suggestion.log_id),
            self.options.state_dir.display()
        );
        let mut message = loss.message(lost_for_seconds, threshold, &how);
        if let Some(text) = request_text {
            let checked = parse_request(&text).and_then(|request| {
                validate(&request, &assessment, lost_for_seconds, threshold)
                    .map(|loss| (request, loss))
            });
            match checked {
                Ok((request, loss)) => {
                    let names: Vec<String> = members.iter().map(|(_, m)| m.name.clone()).collect();
                    let earlier = self.recovery.record.clone();
                    let record = RecoveryRecord::start(&request, &loss, &names, earlier.as_ref());
                    self.recovery.started = Some(Instant::now());
                    self.save_record(record.clone())?;
                    self.recovery.hold = Some(Hold {
                        phase: Phase::Recovering,
                        reason: record.summary(),
                        quorum_lost: None,
                    });
                    return Ok(true);
                }
                Err(refused) => message = format!("{message}; request refused: {refused}"),
            }
        }
        self.recovery.hold = Some(Hold {
            phase: Phase::QuorumLost,
            reason: message.clone(),
            quorum_lost: Some(message),
        });
        Ok(true)
    }

    fn recovery_step(
        &mut self,
        record: RecoveryRecord,
        observed: &Observed,
        members: &[(Ordinal, MemberObservation)],
    ) -> anyhow::Result<()> {
        let mut reason = record.summary();
        match record.phase {
            RecoveryPhase::Exporting => {
                let ordinal = self
                    .ordinal_of(&record.from_member)
                    .with_context(|| format!("{} is not a member", record.from_member))?;
                let survivor = MemberTarget::at(self.layout().address(ordinal));
                let export = self.block_on(self.client.export_local_registry(survivor))?;
                let document =
                    export_document::parse(&export.document).context("the survivor's export")?;
                if recovery::log_id_hex(document.log_id) != record.old_log_id {
                    anyhow::bail!(
                        "{} now exports log {}, not {}: recovery stopped, nothing was wiped",
                        record.from_member,
                        recovery::log_id_hex(document.log_id),
                        record.old_log_id
                    );
                }
                let learned_end = export.learned_end.unwrap_or(record.survivor_learned_end);
                if !record.export_complete(document.position, learned_end) {
                    reason = format!(
                        "{reason}: its registry has applied up to position {} of {learned_end} learned; waiting",
                        document.position
                    );
                } else {
                    // Durable before the record says Fencing: the wipe that follows
                    // destroys the only other copy.
                    write_atomically(&self.recovery_path(EXPORT_FILE), &export.document)?;
                    self.save_record(record.exported(document.position))?;
                }
            }
            RecoveryPhase::Fencing => {
                let ordinals: Vec<Ordinal> = members.iter().map(|(ordinal, _)| *ordinal).collect();
                for ordinal in &ordinals {
                    self.fence_member(*ordinal)?;
                }
                self.supervisor.stop_all(&ordinals, STOP_GRACE);
                // Supervision starts them again, each wiping its log first.
                self.save_record(record.fenced())?;
            }
            RecoveryPhase::Importing => {
                let names: Vec<MemberObservation> =
                    members.iter().map(|(_, member)| member.clone()).collect();
                let leader = observed
                    .leader
                    .map(|leader| planner::member_name(&self.name(), leader));
                match import_step(&record, &names, leader.as_deref()) {
                    ImportStep::Refence { member } => {
                        if let Some(ordinal) = self.ordinal_of(&member) {
                            self.fence_member(ordinal)?;
                            self.supervisor.stop(ordinal, STOP_GRACE);
                        }
                        reason =
                            format!("{reason}; {member} came back on a fenced log: wiped again");
                    }
                    ImportStep::Wait { reason: why } => reason = format!("{reason}: {why}"),
                    ImportStep::Import { leader, log_id } => {
                        let ordinal = self
                            .ordinal_of(&leader)
                            .with_context(|| format!("{leader} is not a member"))?;
                        let document = fs::read(self.recovery_path(EXPORT_FILE))
                            .context("reading the recovery export")?;
                        let leader = MemberTarget::at(self.layout().address(ordinal));
                        let imported = self.block_on(self.client.import_registry(
                            leader,
                            document,
                            Redirect::FollowOnce,
                        ))?;
                        if imported == ImportOutcome::AlreadyHeldData {
                            // 409: an import from an earlier attempt (the runtime
                            // died before recording it) already filled the new log.
                            self.note("the new log's registry already held data (409): the import had run".into());
                        }
                        let done = record.imported(log_id);
                        // As on Kubernetes: the held round that finishes says Running.
                        self.recovery.hold = Some(Hold {
                            phase: Phase::Running,
                            reason: done.summary(),
                            quorum_lost: None,
                        });
                        self.save_record(done.clone())?;
                        let _ = fs::remove_file(self.recovery_path(REQUEST_FILE));
                        if let Some(started) = self.recovery.started.take() {
                            self.note(format!(
                                "recovery took {:.1}s",
                                started.elapsed().as_secs_f64()
                            ));
                        }
                        return Ok(());
                    }
                }
            }
            RecoveryPhase::Done => {}
        }
        self.recovery.hold = Some(Hold {
            phase: Phase::Recovering,
            reason,
            quorum_lost: None,
        });
        Ok(())
    }
}
