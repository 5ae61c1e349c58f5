//! `kubectl mmc status`: a MesosMasterCluster's status on one screen (members,
//! quorum, leader, the transition's steps, conditions). A pure function of the
//! status, so the same screen serves Kubernetes and the local runtime's
//! `status.yaml`, and its tests compare exact text.

use std::fmt::Write;

use crate::operator::api::{MesosMasterClusterStatus, StepState};

/// Where the status came from, for the header line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSource<'a> {
    pub name: &'a str,
    /// `namespace db` or `state dir ./mesos-local`.
    pub location: &'a str,
    /// What the spec asks for, when known.
    pub spec_replicas: Option<i32>,
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value
        .map(|value| value.to_string())
        .unwrap_or_else(|| "-".into())
}

/// The one-screen view. No colour: it is also read by scripts and by tests.
pub fn render_status(source: &StatusSource<'_>, status: &MesosMasterClusterStatus) -> String {
    let mut out = String::new();
    let phase = status
        .phase
        .map(|phase| format!("{phase:?}"))
        .unwrap_or_else(|| "Unknown".into());
    let _ = writeln!(out, "{} ({})  phase {phase}", source.name, source.location);
    let _ = writeln!(
        out,
        "masters {}/{} ready (spec {})  quorum {} (target {})  leader {}",
        status.ready_replicas,
        status.replicas,
        or_dash(source.spec_replicas),
        or_dash(status.quorum),
        or_dash(status.target_quorum),
        status.leader.as_deref().unwrap_or("none"),
    );
    let quorum_lost = status.conditions.iter().find(|condition| {
        condition.type_ == crate::operator::api::condition_types::QUORUM_LOST
            && condition.status == "True"
    });
    if let Some(reason) = &status.reason {
        // The quorum-loss screen below says the same, one item a line.
        if quorum_lost.is_none_or(|lost| !reason.starts_with(&lost.message)) {
            let _ = writeln!(out, "reason: {reason}");
        }
    }
    if let Some(lost) = quorum_lost {
        out.push_str(
            "
QUORUM LOST
",
        );
        for part in status
            .reason
            .as_deref()
            .unwrap_or(&lost.message)
            .split("; ")
        {
            let _ = writeln!(out, "  {part}");
        }
    }
    out.push('\n');
    if status.members.is_empty() {
        out.push_str("no members\n");
    } else {
        let name_width = status
            .members
            .iter()
            .map(|member| member.name.len())
            .max()
            .unwrap_or(0)
            .max("MEMBER".len());
        let _ = writeln!(
            out,
            "{:<name_width$}  {:<21}  {:>6}  {:<10}  {:>8}  {:<5}",
            "MEMBER", "ADDRESS", "QUORUM", "REPLICA", "END", "READY"
        );
        for member in &status.members {
            let leader = if status.leader.as_deref() == Some(member.name.as_str()) {
                "  leader"
            } else {
                ""
            };
            let line = format!(
                "{:<name_width$}  {:<21}  {:>6}  {:<10}  {:>8}  {:<5}{leader}",
                member.name,
                member.address.as_deref().unwrap_or("-"),
                or_dash(member.quorum),
                member.replica_status.as_deref().unwrap_or("-"),
                or_dash(member.log_end_position),
                if member.ready { "yes" } else { "no" },
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    match &status.transition {
        None => out.push_str("\nno transition\n"),
        Some(transition) => {
            let done = transition
                .steps
                .iter()
                .filter(|step| step.state == StepState::Done)
                .count();
            let _ = writeln!(
                out,
                "\ntransition {} -> {}: {done}/{} steps done{}",
                transition.from,
                transition.to,
                transition.steps.len(),
                transition
                    .current_step
                    .map(|step| format!(", at step {step}"))
                    .unwrap_or_default()
            );
            for step in &transition.steps {
                let mark = match step.state {
                    StepState::Done => "done",
                    StepState::Running => "running",
                    StepState::Pending => "pending",
                    StepState::Failed => "FAILED",
                };
                let _ = writeln!(
                    out,
                    "  {:<9} {:>2}. {}",
                    format!("[{mark}]"),
                    step.number,
                    step.description
                );
            }
            if let Some(waiting) = &transition.waiting_for {
                let _ = writeln!(out, "  waiting for: {waiting}");
            }
        }
    }
    render_day2(&mut out, status);
    if let Some(record) = &status.recovery {
        let _ = writeln!(out, "\nrecovery ({:?}): {}", record.phase, record.summary());
    }
    if !status.conditions.is_empty() {
        let conditions = status
            .conditions
            .iter()
            .map(|condition| format!("{}={}", condition.type_, condition.status))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(out, "conditions: {conditions}");
    }
    out
}

/// Backups, the restore at creation and a restart request, when there are any.
fn render_day2(out: &mut String, status: &MesosMasterClusterStatus) {
    if let Some(backup) = &status.backup {
        let last = match &backup.last {
            Some(last) => format!(
                "last {} at {}",
                match (&last.file, last.position) {
                    (Some(file), _) => file.clone(),
                    (None, Some(position)) => format!("position {position}"),
                    (None, None) => "backup".into(),
                },
                last.time
            ),
            None => "none yet".into(),
        };
        let _ = writeln!(
            out,
            "backups: schedule {} ({last}){}",
            backup.schedule.as_deref().unwrap_or("-"),
            backup
                .error
                .as_ref()
                .map(|error| format!("; error: {error}"))
                .unwrap_or_default()
        );
    }
    if let Some(restore) = &status.restore {
        let _ = writeln!(
            out,
            "restore of {}: {:?}{}",
            restore.backup,
            restore.state,
            restore
                .message
                .as_ref()
                .map(|message| format!(" ({message})"))
                .unwrap_or_default()
        );
    }
    if let Some(restart) = status
        .conditions
        .iter()
        .filter(|condition| {
            condition.type_ == crate::operator::api::condition_types::MEMBER_RESTART
        })
        .find(|condition| condition.status == "True" || condition.reason == "RestartRefused")
    {
        let _ = writeln!(out, "restart: {}", restart.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::api::fixtures::{condition, transitioning};
    use crate::operator::api::Phase;

    #[test]
    fn a_transition_renders_members_steps_and_what_it_waits_for() {
        let source = StatusSource {
            name: "prod",
            location: "namespace db",
            spec_replicas: Some(5),
        };
        assert_eq!(
            render_status(&source, &transitioning()),
            "\
prod (namespace db)  phase Transitioning
masters 2/3 ready (spec 5)  quorum 2 (target 3)  leader prod-0
reason: prod-1 is RECOVERING

MEMBER  ADDRESS                QUORUM  REPLICA          END  READY
prod-0  10.96.0.10:5050             3  Voting           120  yes    leader
prod-1  10.96.0.11:5050             3  Recovering        97  no
prod-2  10.96.0.12:5050             2  Voting           120  yes

transition 3 -> 5: 1/3 steps done, at step 2
  [done]     1. restart prod-0 with --quorum=3
  [running]  2. restart prod-1 with --quorum=3
  [pending]  3. restart prod-2 with --quorum=3
  waiting for: prod-1 to be VOTING and caught up
conditions: Available=True Progressing=True
"
        );
    }

    #[test]
    fn backups_the_restore_and_a_refused_restart_get_a_line_each() {
        use crate::operator::api::backup::{BackupStatus, LastBackup, RestoreState, RestoreStatus};
        let mut status = MesosMasterClusterStatus {
            backup: Some(BackupStatus {
                schedule: Some("1h".into()),
                cron_job: None,
                last: Some(LastBackup {
                    file: Some("registry-7-40.json".into()),
                    log_id: Some(7),
                    position: Some(40),
                    time: "2026-11-26T00:00:00Z".into(),
                }),
                error: None,
            }),
            restore: Some(RestoreStatus {
                backup: "registry-3-9.json".into(),
                state: RestoreState::Refused,
                message: Some("the backup is truncated".into()),
            }),
            ..Default::default()
        };
        let mut refused = condition("MemberRestart", "False");
        refused.reason = "RestartRefused".into();
        refused.message = "restarting prod-0 would leave 1 ready master(s)".into();
        status.conditions.push(refused);
        let text = render_status(
            &StatusSource {
                name: "prod",
                location: "namespace db",
                spec_replicas: Some(3),
            },
            &status,
        );
        for line in [
            "backups: schedule 1h (last registry-7-40.json at 2026-11-26T00:00:00Z)\n",
            "restore of registry-3-9.json: Refused (the backup is truncated)\n",
            "restart: restarting prod-0 would leave 1 ready master(s)\n",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }

    #[test]
    fn an_empty_status_says_so_rather_than_inventing_values() {
        let source = StatusSource {
            name: "local",
            location: "state dir /tmp/x",
            spec_replicas: None,
        };
        assert_eq!(
            render_status(&source, &MesosMasterClusterStatus::default()),
            "\
local (state dir /tmp/x)  phase Unknown
masters 0/0 ready (spec -)  quorum - (target -)  leader none

no members

no transition
"
        );
    }

    #[test]
    fn quorum_loss_gets_its_own_screen_and_a_recovery_its_record() {
        let message = "quorum lost for 400s: 1 of quorum 2 voting; lost: prod-1 (not answering); survivors: prod-0 (log 0000000000000007, VOTING, learned up to position 40, holds up to 41); most advanced: prod-0 (log 0000000000000007); the operator does nothing on its own; to give the lost members up and rebuild from the most advanced survivor: kubectl mmc recover prod-0 --log-id 0000000000000007";
        let mut lost = condition(crate::operator::api::condition_types::QUORUM_LOST, "True");
        lost.message = message.into();
        let status = MesosMasterClusterStatus {
            phase: Some(Phase::QuorumLost),
            reason: Some(message.into()),
            conditions: vec![lost],
            ..MesosMasterClusterStatus::default()
        };
        let source = StatusSource {
            name: "prod",
            location: "namespace db",
            spec_replicas: Some(3),
        };
        let text = render_status(&source, &status);
        assert!(text.contains("phase QuorumLost"), "{text}");
        assert!(!text.contains("reason:"), "said twice: {text}");
        assert!(text.contains("\nQUORUM LOST\n  quorum lost for 400s: 1 of quorum 2 voting\n  lost: prod-1 (not answering)\n"), "{text}");
        assert!(
            text.contains("\n  most advanced: prod-0 (log 0000000000000007)\n"),
            "{text}"
        );
        let loss = crate::operator::recovery::QuorumLoss {
            quorum: 2,
            voting: 1,
            lost: vec![],
            survivors: vec![],
            most_advanced: crate::operator::recovery::Survivor {
                name: "prod-0".into(),
                log_id: 7,
                status: crate::master::api::ReplicaStatus::Voting,
                learned: 41,
                end: 41,
            },
        };
        let request = loss.suggested_request();
        let record = crate::operator::api::recovery::RecoveryRecord::start(
            &request,
            &loss,
            &["prod-0".into()],
            None,
        )
        .exported(40)
        .fenced()
        .imported(9);
        let done = MesosMasterClusterStatus {
            recovery: Some(record.clone()),
            ..MesosMasterClusterStatus::default()
        };
        let text = render_status(&source, &done);
        assert!(
            text.contains(&format!("\nrecovery (Done): {}\n", record.summary())),
            "{text}"
        );
    }
}
