//! Issue #11 in the local runtime, with real `mesos-master` processes (ports
//! 28100-28199 on 127.0.0.x):
//!
//! - `kubectl mmc restart <member> --state-dir` restarts that member's process (a
//!   new pid) while writes keep being acknowledged, and a request that would lose
//!   quorum (another member down) is refused until that member is back;
//! - `spec.backup` on a 1 s interval writes verified backups named with log id and
//!   position into `<state-dir>/backups/`, pruned to `keep`;
//! - `spec.restoreFrom` restores a backup of ensemble A into a new ensemble B, and
//!   a truncated or bit-flipped backup is refused with its reason in the status,
//!   nothing imported.

mod local_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use local_common::http;
use local_common::{find_leader, signal, Load, Operator, OPERATOR, TRANSITION_BOUND};
use mesos_operator::operator::api::backup::{parse_backup_name, RestoreState};
use mesos_operator::operator::api::condition_types::MEMBER_RESTART;
use mesos_operator::operator::api::MesosMasterClusterStatus;
use mesos_operator::operator::backup::read_backup;
use mesos_operator::operator::local::restart::request_file;

const IO: Duration = Duration::from_secs(5);

fn restart_condition(status: &MesosMasterClusterStatus) -> Option<(String, String)> {
    status
        .conditions
        .iter()
        .find(|condition| condition.type_ == MEMBER_RESTART)
        .map(|condition| (condition.reason.clone(), condition.message.clone()))
}

/// `kubectl mmc <args>` through a symlink, as `ln -s` installs the plugin.
fn kubectl_mmc(dir: &Path, args: &[&str]) -> std::process::Output {
    let link = dir.join("kubectl-mmc");
    if !link.exists() {
        std::os::unix::fs::symlink(OPERATOR, &link).expect("symlink");
    }
    Command::new(&link)
        .args(args)
        .output()
        .expect("kubectl-mmc")
}

#[test]
fn a_restart_request_restarts_one_member_and_one_that_would_lose_quorum_waits() {
    let operator = Operator::start(28100, 3, "Preserve");
    operator.wait_settled(3);
    let state = operator.state_dir();
    let state_arg = state.to_string_lossy().into_owned();
    let load = Load::start(operator.port, "restart");
    load.wait_progress(20);

    let old_pid = operator.member_pid(1).expect("e2e-1 runs");
    let output = kubectl_mmc(
        operator.root.path(),
        &["--state-dir", &state_arg, "restart", "e2e-1"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status = operator.wait_for("e2e-1 restarted", TRANSITION_BOUND, |status| {
        restart_condition(status).is_some_and(|(reason, _)| reason == "Restarted")
    });
    let new_pid = operator.member_pid(1).expect("e2e-1 runs again");
    assert_ne!(new_pid, old_pid, "a new process");
    assert!(!request_file(&state).exists(), "the request is removed");
    let (_, message) = restart_condition(&status).expect("condition");
    assert!(
        message.contains(&format!("pid {old_pid} -> {new_pid}")),
        "{message}"
    );
    load.wait_progress(20);

    // e2e-2 stops answering (SIGSTOP): restarting e2e-0 would leave one of two.
    let stopped = operator.member_pid(2).expect("e2e-2 runs");
    signal(stopped, "STOP");
    operator.wait_for("e2e-2 seen down", TRANSITION_BOUND, |status| {
        status
            .members
            .iter()
            .any(|member| member.name == "e2e-2" && !member.ready)
    });
    let output = kubectl_mmc(
        operator.root.path(),
        &["--state-dir", &state_arg, "restart", "e2e-0"],
    );
    assert!(!output.status.success(), "the plugin's own guard refuses");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("would leave 1 ready master(s)"), "{stderr}");
    // A request written anyway (a status read before e2e-2 went down) is refused
    // by the runtime's own check, and stays.
    let leader_pid = operator.member_pid(0).expect("e2e-0 runs");
    std::fs::write(request_file(&state), "e2e-0\n").expect("request");
    let status = operator.wait_for("refusal reported", TRANSITION_BOUND, |status| {
        restart_condition(status).is_some_and(|(reason, _)| reason == "RestartRefused")
    });
    let (_, message) = restart_condition(&status).expect("condition");
    assert!(
        message.contains("would leave 1 ready master(s)"),
        "{message}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(operator.member_pid(0), Some(leader_pid), "not restarted");
    assert!(request_file(&state).exists(), "the request stays");

    // e2e-2 is back: the same request goes through.
    signal(stopped, "CONT");
    operator.wait_for("e2e-0 restarted", TRANSITION_BOUND, |status| {
        restart_condition(status)
            .is_some_and(|(reason, message)| reason == "Restarted" && message.contains("e2e-0"))
    });
    assert_ne!(operator.member_pid(0), Some(leader_pid));
    operator.wait_settled(3);
    load.wait_progress(20);
}

fn spec(extra: &str) -> String {
    format!(
        "apiVersion: mesos.operator.dev/v1alpha1\nkind: MesosMasterCluster\nmetadata:\n  name: e2e\nspec:\n  replicas: 1\n{extra}"
    )
}

fn leader(port: u16) -> SocketAddr {
    let deadline = Instant::now() + TRANSITION_BOUND;
    loop {
        if let Some(leader) = find_leader(port) {
            return leader;
        }
        assert!(Instant::now() < deadline, "no leader on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn put_weight(port: u16, weight: f64) {
    let body = format!(r#"[{{"role":"dev","weight":{weight}}}]"#);
    let response = http::request_within(leader(port), "PUT", "/weights", body.as_bytes(), IO)
        .expect("PUT /weights");
    assert_eq!(response.status, 200, "{}", response.body);
}

/// The registry without its master record (which names whoever leads now).
fn registry_data(port: u16) -> serde_json::Value {
    let response =
        http::request_within(leader(port), "GET", "/registry/export", b"", IO).expect("export");
    assert_eq!(response.status, 200, "{}", response.body);
    let mut export: serde_json::Value = serde_json::from_str(&response.body).expect("json");
    let mut registry = export["registry"].take();
    if let Some(fields) = registry.as_object_mut() {
        fields.remove("master");
    }
    registry
}

fn backups(state: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(state.join("backups"))
        .map(|entries| {
            entries
                .filter_map(|entry| Some(entry.ok()?.path()))
                .filter(|path| {
                    path.file_name()
                        .and_then(|name| name.to_str())
                        .is_some_and(|name| parse_backup_name(name).is_some())
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn wait_restore(operator: &Operator, state: RestoreState) -> MesosMasterClusterStatus {
    operator.wait_for(&format!("restore {state:?}"), TRANSITION_BOUND, |status| {
        status
            .restore
            .as_ref()
            .is_some_and(|restore| restore.state == state)
    })
}

#[test]
fn scheduled_backups_verify_are_pruned_and_restore_into_a_new_ensemble_only_when_sound() {
    let keep = 2;
    let a = Operator::start_with_spec(
        28110,
        &spec(&format!("  backup:\n    schedule: 1s\n    keep: {keep}\n")),
    );
    a.wait_settled(1);
    let mut seen = Vec::new();
    for weight in [1.5, 2.5, 3.5] {
        put_weight(a.port, weight);
        // A backup taken after this write: it holds the new weight.
        let holds_weight = |file: &str| {
            std::fs::read_to_string(a.state_dir().join("backups").join(file))
                .is_ok_and(|text| text.contains(&format!("\"dev\":{weight}")))
        };
        let status = a.wait_for("a backup of the write", TRANSITION_BOUND, |status| {
            status
                .backup
                .as_ref()
                .and_then(|backup| backup.last.as_ref())
                .is_some_and(|last| {
                    last.file.as_deref().is_some_and(holds_weight)
                        && last
                            .position
                            .is_some_and(|position| !seen.contains(&position))
                })
        });
        let last = status.backup.and_then(|backup| backup.last).expect("last");
        seen.push(last.position.expect("position"));
        let file = a.state_dir().join("backups").join(last.file.expect("file"));
        let verified = read_backup(&file).expect("the backup verifies");
        assert_eq!(Some(verified.position), last.position);
        assert_eq!(Some(verified.log_id), last.log_id);
        assert!(backups(&a.state_dir()).len() <= keep, "pruned to keep");
    }
    let files = backups(&a.state_dir());
    assert_eq!(files.len(), keep, "{files:?}");
    for file in &files {
        let verified = read_backup(file).expect("every kept backup verifies");
        let name = file.file_name().and_then(|n| n.to_str()).expect("name");
        assert_eq!(
            parse_backup_name(name),
            Some((verified.log_id, verified.position))
        );
    }
    let newest = files
        .iter()
        .max_by_key(|file| {
            file.file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_backup_name)
                .map(|(_, position)| position)
        })
        .expect("a backup")
        .clone();
    let backed_up = {
        let document: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&newest).expect("read")).expect("json");
        let mut registry = document["registry"].clone();
        if let Some(fields) = registry.as_object_mut() {
            fields.remove("master");
        }
        registry
    };
    assert!(backed_up.to_string().contains("3.5"), "{backed_up}");

    // A new ensemble B, restored from A's newest backup at its creation.
    let b = Operator::start_with_spec(
        28120,
        &spec(&format!(
            "  restoreFrom:\n    backup: {}\n",
            newest.display()
        )),
    );
    let status = wait_restore(&b, RestoreState::Restored);
    let message = status.restore.and_then(|r| r.message).unwrap_or_default();
    assert!(
        message.contains("restored the registry of log"),
        "{message}"
    );
    assert_eq!(registry_data(b.port), backed_up, "B holds A's registry");

    // A truncated and a bit-flipped copy: refused, nothing imported.
    let document = std::fs::read(&newest).expect("read");
    let bad_dir = tempfile::tempdir().expect("tempdir");
    let truncated = bad_dir.path().join("truncated.json");
    std::fs::write(&truncated, &document[..document.len() / 2]).expect("write");
    let flipped = bad_dir.path().join("flipped.json");
    let mut bits = document.clone();
    let at = String::from_utf8_lossy(&document)
        .find("\"dev\"")
        .expect("the role in the registry")
        + 2;
    bits[at] ^= 0x01;
    std::fs::write(&flipped, &bits).expect("write");
    for (port, file, reason) in [
        (28130, &truncated, "truncated"),
        (28140, &flipped, "does not match its checksum"),
    ] {
        let c = Operator::start_with_spec(
            port,
            &spec(&format!("  restoreFrom:\n    backup: {}\n", file.display())),
        );
        let status = wait_restore(&c, RestoreState::Refused);
        let message = status.restore.and_then(|r| r.message).unwrap_or_default();
        assert!(message.contains(reason), "{message}");
        assert!(message.contains("nothing was imported"), "{message}");
        let data = registry_data(c.port);
        assert!(
            !data.to_string().contains("\"dev\""),
            "nothing imported: {data}"
        );
    }
}
