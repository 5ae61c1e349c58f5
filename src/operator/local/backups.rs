//! `spec.backup` and `spec.restoreFrom` in the local runtime (issue #11).
//!
//! Backups: on an interval schedule, once there is a leader, the registry is
//! exported (the same `take_backup` as `mesos-operator backup`) into
//! `<state-dir>/backups/registry-<log id>-<position>.json`, and the backups of that
//! log beyond `keep` are deleted. The last one is in `status.backup.last`.
//!
//! Restore: once the new ensemble has a leader and no transition runs, the file
//! `spec.restoreFrom.backup` names (a path, or a name in `<state-dir>/backups/`)
//! is verified and imported. A file that does not verify is refused before
//! anything is sent; a registry that already holds data answers 409 and is left as
//! it is. Either way the outcome is final and stays in `status.restore`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::operator::api::backup::{
    parse_schedule, BackupStatus, LastBackup, RestoreState, RestoreStatus, Schedule,
};
use crate::operator::backup::{self, BackupError};
use crate::operator::local::LocalRuntime;
use crate::operator::master_client::{ImportOutcome, MasterClient, MemberTarget, Redirect};
use crate::operator::planner::{Observed, Step};

/// After a failed backup, the next try comes this soon at the latest (or on the
/// schedule, if that is sooner): a leader change should not cost a whole interval.
const BACKUP_RETRY: Duration = Duration::from_secs(5);

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

impl<C: MasterClient> LocalRuntime<C> {
    fn backups_dir(&self) -> PathBuf {
        self.options.state_dir.join("backups")
    }

    /// Every member with a running process: `take_backup` finds the leader among them.
    fn running_members(&self, observed: &Observed) -> Vec<std::net::SocketAddr> {
        observed
            .members
            .iter()
            .filter(|member| member.pod.as_ref().is_some_and(|pod| !pod.terminating))
            .map(|member| self.layout().address(member.ordinal))
            .collect()
    }

    /// Takes a backup when one is due.
    pub(super) fn scheduled_backup(&mut self, observed: &Observed) {
        let Some(spec) = self.cluster.spec.backup.clone() else {
            self.backup_status = None;
            self.next_backup_at = None;
            return;
        };
        let status = self.backup_status.get_or_insert_with(BackupStatus::default);
        status.schedule = Some(spec.schedule.clone());
        let every = match parse_schedule(&spec.schedule) {
            Ok(Schedule::Every(every)) => every,
            Ok(Schedule::Cron(_)) => {
                status.error = Some(format!(
                    "backup.schedule {:?} is a cron expression: Kubernetes runs those (a CronJob); the local runtime takes an interval such as 30s, 15m or 1h",
                    spec.schedule
                ));
                return;
            }
            Err(reason) => {
                status.error = Some(reason);
                return;
            }
        };
        let now = Instant::now();
        if self.next_backup_at.is_some_and(|at| now < at) || observed.leader.is_none() {
            return;
        }
        let members = self.running_members(observed);
        let dir = self.backups_dir();
        let taken = self.block_on(backup::take_backup(&self.client, &members, &dir));
        let outcome = taken.and_then(|path| {
            let verified = backup::read_backup(&path)?;
            let pruned = backup::prune_backups(&dir, verified.log_id, spec.keep)?;
            Ok((verified, pruned))
        });
        let status = self.backup_status.get_or_insert_with(BackupStatus::default);
        match outcome {
            Ok((verified, pruned)) => {
                status.last = Some(LastBackup {
                    file: Some(verified.file_name()),
                    log_id: Some(verified.log_id),
                    position: Some(verified.position),
                    time: now_rfc3339(),
                });
                status.error = None;
                self.next_backup_at = Some(now + every);
                let mut text = format!("backup {} written", verified.file_name());
                if !pruned.is_empty() {
                    text.push_str(&format!(
                        ", {} older one(s) of log {} deleted (keep {})",
                        pruned.len(),
                        verified.log_id,
                        spec.keep
                    ));
                }
                self.note(text);
            }
            Err(error) => {
                let text = format!("backup failed: {error}");
                if status.error.as_deref() != Some(&text) {
                    status.error = Some(text.clone());
                    self.note(text);
                }
                self.next_backup_at = Some(now + every.min(BACKUP_RETRY));
            }
        }
    }

    /// Restores `spec.restoreFrom` into the new ensemble, once.
    pub(super) fn restore_at_creation(&mut self, step: &Step, observed: &Observed) {
        let Some(restore_from) = self.cluster.spec.restore_from.clone() else {
            return;
        };
        if self
            .restore_status
            .as_ref()
            .is_some_and(|status| status.is_final())
        {
            return;
        }
        let pending = |message: &str| RestoreStatus {
            backup: restore_from.backup.clone(),
            state: RestoreState::Pending,
            message: Some(message.into()),
        };
        // Done also ends the transition status tracks (`status::next_transition`).
        let settled = matches!(step, Step::Done);
        let Some(leader) = observed.leader.filter(|_| settled) else {
            self.restore_status = Some(pending(
                "waiting for the new ensemble to elect a leader and settle",
            ));
            return;
        };
        let path = if restore_from.backup.contains('/') {
            PathBuf::from(&restore_from.backup)
        } else {
            self.backups_dir().join(&restore_from.backup)
        };
        let refused = |error: &BackupError| RestoreStatus {
            backup: restore_from.backup.clone(),
            state: RestoreState::Refused,
            message: Some(format!(
                "{} refused, nothing was imported: {error}",
                path.display()
            )),
        };
        let verified = match backup::read_backup(&path) {
            Ok(verified) => verified,
            Err(error) => {
                let status = refused(&error);
                self.note(status.message.clone().unwrap_or_default());
                self.restore_status = Some(status);
                return;
            }
        };
        let address = self.layout().address(leader);
        let imported = self.block_on(self.client.import_registry(
            MemberTarget::at(address),
            verified.document.clone(),
            Redirect::FollowOnce,
        ));
        let status = match imported {
            Ok(ImportOutcome::Imported) => RestoreStatus {
                backup: restore_from.backup.clone(),
                state: RestoreState::Restored,
                message: Some(format!(
                    "restored the registry of log {} at position {} (sha256 {}) from {}",
                    verified.log_id,
                    verified.position,
                    verified.sha256,
                    path.display()
                )),
            },
            Ok(ImportOutcome::AlreadyHeldData) => {
                refused(&BackupError::RegistryNotEmpty { leader: address })
            }
            // The leader may have just changed: tried again next tick.
            Err(error) => pending(&format!("importing through {address}: {error}")),
        };
        if status.state != RestoreState::Pending {
            self.note(status.message.clone().unwrap_or_default());
            let _ = self.append_event(status.message.as_deref().unwrap_or_default());
        }
        self.restore_status = Some(status);
    }
}
