//! Restart requests in the local runtime (issue #11): `kubectl mmc restart
//! <member> --state-dir DIR` writes `<state-dir>/restart-request` holding the
//! member's name; the runtime's tick honours it the way the Kubernetes reconcile
//! honours the annotation: it checks the quorum guard again against what it
//! observes now, restarts the process (stop gracefully, start), waits for the new
//! process to vote, then removes the request. A refused request stays, with the
//! reason in status.yaml, and is checked again on every tick.

use std::fs;
use std::path::{Path, PathBuf};

use crate::operator::api::Ordinal;
use crate::operator::atomic_file::write_atomically;
use crate::operator::local::members::STOP_GRACE;
use crate::operator::local::LocalRuntime;
use crate::operator::master_client::MasterClient;
use crate::operator::planner::{self, Observed, Step};
use crate::operator::restart::{check_restart, RestartRefused};

/// The request file, in the state dir.
pub const RESTART_REQUEST_FILE: &str = "restart-request";

/// A restart under way: which member, and the process it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RestartInProgress {
    pub ordinal: Ordinal,
    pub member: String,
    pub old_pid: Option<u32>,
}

/// What the MemberRestart condition says: (in progress, reason, message).
pub(super) type RestartReport = Option<(bool, &'static str, String)>;

pub fn request_file(state_dir: &Path) -> PathBuf {
    state_dir.join(RESTART_REQUEST_FILE)
}

/// Why a local restart request was not written.
#[derive(Debug, thiserror::Error)]
pub enum LocalRequestError {
    #[error("restart refused: {0}")]
    Refused(#[from] RestartRefused),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    State(String),
}

/// The member a pending request names, if any.
pub fn pending_request(state_dir: &Path) -> Result<Option<String>, LocalRequestError> {
    let path = request_file(state_dir);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|member| !member.is_empty())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(LocalRequestError::Io { path, error }),
    }
}

/// `kubectl mmc restart <member> --state-dir DIR`: the guard against the status
/// the runtime last wrote (advisory: the runtime checks again before acting),
/// then the request file, written atomically.
pub fn write_request(
    state_dir: &Path,
    cluster: &str,
    status: &crate::operator::api::MesosMasterClusterStatus,
    member: &str,
) -> Result<(), LocalRequestError> {
    let pending = pending_request(state_dir)?;
    check_restart(cluster, status, member, pending.as_deref())?;
    write_atomically(&request_file(state_dir), format!("{member}\n").as_bytes())
        .map_err(|error| LocalRequestError::State(format!("{error:#}")))
}

/// `<cluster>-<ordinal>` → ordinal, when the name is one of this cluster's.
fn ordinal_of(cluster: &str, member: &str) -> Option<Ordinal> {
    let ordinal: Ordinal = member
        .strip_prefix(cluster)?
        .strip_prefix('-')?
        .parse()
        .ok()?;
    (planner::member_name(cluster, ordinal) == member).then_some(ordinal)
}

impl<C: MasterClient> LocalRuntime<C> {
    /// One tick's part of a restart request: finish the one under way, or check
    /// and begin the one requested. Called after the planner's step, with what the
    /// tick observed.
    pub(super) fn honour_restart_request(
        &mut self,
        step: &Step,
        observed: &Observed,
    ) -> anyhow::Result<()> {
        let name = self.name();
        if let Some(restart) = self.restart.clone() {
            let snapshot = self.snapshots.get(&restart.ordinal);
            let pid = snapshot.and_then(|snapshot| snapshot.pid);
            let voting = snapshot
                .and_then(|snapshot| snapshot.status.as_ref())
                .is_some_and(|status| status.status == crate::master::api::ReplicaStatus::Voting);
            if voting && pid.is_some() && pid != restart.old_pid {
                let _ = fs::remove_file(request_file(&self.options.state_dir));
                let text = format!(
                    "restarted {} (pid {} -> {}): it votes again",
                    restart.member,
                    restart.old_pid.map_or("none".into(), |pid| pid.to_string()),
                    pid.unwrap_or_default()
                );
                self.append_event(&text)?;
                self.note(text.clone());
                self.restart = None;
                self.restart_report = Some((false, "Restarted", text));
            } else {
                self.restart_report = Some((
                    true,
                    "Restarting",
                    format!("restarting {}: waiting for it to vote", restart.member),
                ));
            }
            return Ok(());
        }
        let Some(member) = pending_request(&self.options.state_dir)? else {
            // A request withdrawn while under way or refused: nothing left to say.
            if self
                .restart_report
                .as_ref()
                .is_some_and(|(_, reason, _)| *reason != "Restarted")
            {
                self.restart_report = None;
            }
            return Ok(());
        };
        // Re-checked against this tick's observation, not the requester's view.
        let status = self.derive_status(step, observed);
        let transition_running = status
            .transition
            .as_ref()
            .is_some_and(|transition| transition.current_step.is_some())
            || !matches!(step, Step::Done);
        // The quorum guard first: while a member is down the planner waits too,
        // and "it would lose quorum" is the reason a user can act on.
        let verdict = check_restart(&name, &status, &member, None)
            .map_err(|error| error.to_string())
            .and_then(|()| match self.cluster.spec.paused {
                true => Err(format!(
                    "{name} is paused (spec.paused): {member} restarts once it is resumed"
                )),
                false => Ok(()),
            })
            .and_then(|()| match transition_running {
                true => Err(RestartRefused::Transitioning {
                    cluster: name.clone(),
                    detail: step.describe(&name),
                }
                .to_string()),
                false => Ok(()),
            });
        let ordinal = match (verdict, ordinal_of(&name, &member)) {
            (Err(reason), _) => {
                let message = format!("restart of {member} refused for now: {reason}");
                if self.restart_report.as_ref().map(|(_, _, m)| m) != Some(&message) {
                    self.note(message.clone());
                }
                self.restart_report = Some((false, "RestartRefused", message));
                return Ok(());
            }
            (Ok(()), None) => {
                self.restart_report = Some((
                    false,
                    "RestartRefused",
                    format!("{member} is not a member of {name}"),
                ));
                return Ok(());
            }
            (Ok(()), Some(ordinal)) => ordinal,
        };
        let old_pid = self.supervisor.pid(ordinal);
        let text = format!("restart {member} (requested)");
        self.append_event(&text)?;
        self.note(text);
        self.supervisor.stop(ordinal, STOP_GRACE);
        self.supervisor.start(ordinal)?;
        self.restart = Some(RestartInProgress {
            ordinal,
            member: member.clone(),
            old_pid,
        });
        self.restart_report = Some((
            true,
            "Restarting",
            format!("restarting {member}: waiting for it to vote"),
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_clusters_member_names_map_to_ordinals() {
        assert_eq!(ordinal_of("e2e", "e2e-2"), Some(2));
        assert_eq!(ordinal_of("e2e", "e2e-02"), None);
        assert_eq!(ordinal_of("e2e", "other-2"), None);
        assert_eq!(ordinal_of("my-e2e", "my-e2e-0"), Some(0));
    }

    #[test]
    fn a_request_is_written_once_and_refused_while_one_is_pending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = crate::operator::api::MesosMasterClusterStatus {
            quorum: Some(2),
            members: (0..3)
                .map(|ordinal| crate::operator::api::MemberStatus {
                    name: format!("e2e-{ordinal}"),
                    address: None,
                    quorum: Some(2),
                    replica_status: Some("Voting".into()),
                    log_end_position: Some(1),
                    ready: ordinal != 2,
                })
                .collect(),
            ..Default::default()
        };
        let error = write_request(dir.path(), "e2e", &status, "e2e-0").expect_err("quorum");
        assert!(error.to_string().contains("would leave 1 ready"), "{error}");
        assert_eq!(pending_request(dir.path()).expect("read"), None);
        write_request(dir.path(), "e2e", &status, "e2e-2").expect("the down member");
        assert_eq!(
            pending_request(dir.path()).expect("read").as_deref(),
            Some("e2e-2")
        );
        let error = write_request(dir.path(), "e2e", &status, "e2e-2").expect_err("pending");
        assert!(error.to_string().contains("already requested"), "{error}");
    }
}
