//! Guarded recovery after quorum loss (issue #11) in `mesos-operator local`, with
//! real `mesos-master` processes: kill a majority, see the operator hold and say
//! what survives, recover through `kubectl mmc recover --state-dir`, and check that
//! the registry up to the survivor's learned position is intact and that nothing
//! of the fenced members comes back.
//!
//! Ports 28000-28099. Every wait is bounded; Drop kills the operator and masters.

mod local_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use local_common::http;
use local_common::{find_leader, log_status, signal, tail, Operator, OPERATOR};
use mesos_operator::operator::api::recovery::RecoveryPhase;
use mesos_operator::operator::api::{condition_types, Phase};
use mesos_operator::operator::local::members::{MemberFlags, VOLUME_MARKER};
use mesos_operator::operator::recovery::log_id_hex;

const IO: Duration = Duration::from_secs(5);
const AGENTS: usize = 20;

/// A master started by the test itself; killed if the test ends early.
struct Stray(Child);

impl Drop for Stray {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn call(member: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    match http::request_within(member, method, path, body.as_bytes(), IO) {
        Ok(response) => (response.status, response.body),
        Err(error) => (0, error.to_string()),
    }
}

/// The registry as the leader exports it, without its master record (which names
/// whichever master leads).
fn registry_without_master(leader: SocketAddr) -> serde_json::Value {
    let (code, body) = call(leader, "GET", "/registry/export", "");
    assert_eq!(code, 200, "{body}");
    let mut document: serde_json::Value = serde_json::from_str(&body).expect("json");
    let mut registry = document["registry"].take();
    if let Some(fields) = registry.as_object_mut() {
        fields.remove("master");
    }
    registry
}

fn plugin(dir: &Path) -> PathBuf {
    let link = dir.join("kubectl-mmc");
    std::os::unix::fs::symlink(OPERATOR, &link).expect("symlink");
    link
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .expect("run the plugin")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn a_majority_lost_is_held_then_recovered_from_the_survivor_with_the_old_log_fenced() {
    let port = 28000;
    let mut operator = Operator::start(port, 3, "Preserve");
    operator.write_spec_text(
        "apiVersion: mesos.operator.dev/v1alpha1\nkind: MesosMasterCluster\nmetadata:\n  name: e2e\nspec:\n  replicas: 3\n  recovery:\n    quorumLossSeconds: 2\n",
    );
    operator.wait_settled(3);

    // Registry data, every write acknowledged by the leader.
    let leader = find_leader(port).expect("a leader");
    for i in 0..AGENTS {
        let body = format!(
            r#"{{"id":"agent-{i}","hostname":"agent-{i}.example","resources":[{{"name":"cpus","type":"SCALAR","scalar":{{"value":4.0}}}}]}}"#
        );
        let (code, answer) = call(leader, "POST", "/registrar/admit", &body);
        assert_eq!(code, 200, "admit agent-{i}: {answer}");
    }
    let (code, answer) = call(
        leader,
        "PUT",
        "/weights",
        r#"[{"role":"dev","weight":2.5}]"#,
    );
    assert_eq!(code, 200, "{answer}");
    let written = registry_without_master(leader);
    assert_eq!(
        written["agents"].as_array().map(|a| a.len()),
        Some(AGENTS),
        "{written}"
    );

    // The survivor is a follower; it has learned every acknowledged write.
    let leader_ordinal = (0..3)
        .find(|o| operator.address(*o) == leader)
        .expect("leader is a member");
    let survivor = (leader_ordinal + 1) % 3;
    let lost: Vec<u32> = (0..3).filter(|o| *o != survivor).collect();
    let learned_target = log_status(leader).expect("leader status").learned;
    let deadline = Instant::now() + Duration::from_secs(30);
    let survivor_status = loop {
        let status = log_status(operator.address(survivor));
        if let Some(status) = status.filter(|s| s.learned >= learned_target) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the survivor never learned up to {learned_target}"
        );
        sleep(Duration::from_millis(100));
    };
    let old_log = survivor_status.log_id.expect("survivor has a log id");
    let survivor_name = format!("e2e-{survivor}");

    // Lose a majority for good: the operator is stopped while the two members die
    // and their volumes go (the runtime never restarts a member whose volume is
    // lost), so no restart races the kill. A copy of one lost member's log is kept.
    operator.kill9();
    let lost_pids: Vec<u32> = lost
        .iter()
        .map(|o| operator.member_pid(*o).expect("lost member pid"))
        .collect();
    for pid in &lost_pids {
        signal(*pid, "KILL");
    }
    let old_copy = operator.root.path().join("old-member");
    copy_dir(&operator.work_dir(lost[0]), &old_copy);
    let _ = std::fs::remove_file(old_copy.join(VOLUME_MARKER));
    for ordinal in &lost {
        std::fs::remove_file(operator.work_dir(*ordinal).join(VOLUME_MARKER)).expect("marker");
    }
    operator.spawn();

    // Held, and said: the lost members, the survivor with its log id, the command.
    let lost_at = Instant::now();
    let status = operator.wait_for(
        "QuorumLost past the threshold",
        Duration::from_secs(60),
        |s| {
            s.phase == Some(Phase::QuorumLost)
                && s.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("does nothing on its own"))
        },
    );
    let reason = status.reason.clone().unwrap_or_default();
    let survivor_line = format!("{survivor_name} (log {}", log_id_hex(old_log));
    for part in [
        survivor_line.as_str(),
        &format!("e2e-{} (not answering)", lost[0]),
        &format!("e2e-{} (not answering)", lost[1]),
        &format!("most advanced: {survivor_name}"),
        &format!(
            "kubectl mmc recover {survivor_name} --log-id {}",
            log_id_hex(old_log)
        ),
    ] {
        assert!(reason.contains(part), "{part} not in: {reason}");
    }
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition_types::QUORUM_LOST)
        .expect("QuorumLost condition");
    assert_eq!(condition.status, "True");
    eprintln!(
        "quorum loss reported {:.1}s after the operator came back",
        lost_at.elapsed().as_secs_f64()
    );

    // Nothing happens on its own: no step, the survivor untouched, the lost stay lost.
    let events_before = operator.events().len();
    let survivor_pid = operator.member_pid(survivor);
    sleep(Duration::from_secs(3));
    assert_eq!(
        operator.events().len(),
        events_before,
        "{:?}",
        operator.events()
    );
    assert_eq!(operator.member_pid(survivor), survivor_pid);
    assert_eq!(
        log_status(operator.address(survivor)).and_then(|s| s.log_id),
        Some(old_log)
    );
    for ordinal in &lost {
        assert!(log_status(operator.address(*ordinal)).is_none());
    }

    // Refusals: the plugin checks the status; the runtime checks again.
    let dir = tempfile::tempdir().expect("tempdir");
    let kubectl_mmc = plugin(dir.path());
    let state = operator.state_dir().to_string_lossy().into_owned();
    let wrong_log = log_id_hex(old_log ^ 1);
    let refused = run(
        &kubectl_mmc,
        &[
            "recover",
            &survivor_name,
            "--log-id",
            &wrong_log,
            "--state-dir",
            &state,
        ],
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("recovery refused"),
        "{}",
        text(&refused.stderr)
    );
    std::fs::write(
        operator.state_dir().join("recover-request"),
        format!("e2e-{}:{}\n", lost[0], log_id_hex(old_log)),
    )
    .expect("request");
    operator.wait_for(
        "a request naming a lost member refused",
        Duration::from_secs(30),
        |s| {
            s.phase == Some(Phase::QuorumLost)
                && s.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("request refused") && r.contains("not a survivor"))
        },
    );
    assert_eq!(operator.events().len(), events_before);

    // The user's decision.
    let recovering = Instant::now();
    let asked = run(
        &kubectl_mmc,
        &[
            "recover",
            &survivor_name,
            "--log-id",
            &log_id_hex(old_log),
            "--state-dir",
            &state,
        ],
    );
    assert!(asked.status.success(), "{}", text(&asked.stderr));
    let status = operator.wait_for("recovered", Duration::from_secs(120), |s| {
        s.recovery
            .as_ref()
            .is_some_and(|r| r.phase == RecoveryPhase::Done)
            && s.phase == Some(Phase::Running)
            && s.ready_replicas == 3
            && s.leader.is_some()
    });
    eprintln!("recovery took {:.1}s", recovering.elapsed().as_secs_f64());
    let record = status.recovery.clone().expect("record");
    assert_eq!(record.from_member, survivor_name);
    assert_eq!(record.old_log_id, log_id_hex(old_log));
    assert!(record.fenced_log_ids.contains(&log_id_hex(old_log)));
    assert_eq!(record.fenced_members.len(), 3);
    assert!(
        record
            .exported_position
            .is_some_and(|p| p + 1 >= learned_target),
        "{record:?}"
    );
    let may_be_lost = record.may_be_lost.clone().unwrap_or_default();
    assert!(
        may_be_lost.contains(&format!("e2e-{}", lost[0])),
        "{may_be_lost}"
    );
    assert!(!operator.state_dir().join("recover-request").exists());
    let recovered = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition_types::RECOVERED)
        .expect("Recovered condition");
    assert_eq!(recovered.status, "True");

    // A new log, and the registry exactly as written.
    let leader = find_leader(port).expect("a leader after recovery");
    let new_log = log_status(leader)
        .and_then(|s| s.log_id)
        .expect("new log id");
    assert_ne!(new_log, old_log);
    assert_eq!(record.new_log_id, Some(log_id_hex(new_log)));
    for ordinal in 0..3 {
        assert_eq!(
            log_status(operator.address(ordinal)).and_then(|s| s.log_id),
            Some(new_log),
            "member {ordinal}"
        );
    }
    assert_eq!(registry_without_master(leader), written);

    // The fenced state cannot come back: a lost member's old log, started in its
    // place, never joins and exits on the foreign-log check.
    operator.kill9();
    let stray_ordinal = lost[0];
    let flags: MemberFlags = serde_json::from_slice(
        &std::fs::read(
            operator
                .state_dir()
                .join(format!("members/{stray_ordinal}/flags.json")),
        )
        .expect("flags"),
    )
    .expect("flags json");
    let running = operator.member_pid(stray_ordinal).expect("member pid");
    signal(running, "KILL");
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_status(operator.address(stray_ordinal)).is_some() {
        assert!(
            Instant::now() < deadline,
            "member {stray_ordinal} did not die"
        );
        sleep(Duration::from_millis(50));
    }
    let work_dir_arg = format!("--work_dir={}", old_copy.display());
    let args: Vec<String> = flags
        .args
        .iter()
        .map(|arg| {
            if arg.starts_with("--work_dir=") {
                work_dir_arg.clone()
            } else {
                arg.clone()
            }
        })
        .collect();
    let stray_log = operator.root.path().join("stray.log");
    let log_file = std::fs::File::create(&stray_log).expect("stray log");
    let mut stray = Stray(
        Command::new(local_common::MASTER)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("spawn the stray"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = stray.0.try_wait().expect("try_wait") {
            break exit;
        }
        // Its replica still calls itself VOTING on the old log, but every frame
        // between it and the new log is refused: it never leads, and the members
        // of the new log never take it as one of theirs.
        if let Some(status) = log_status(operator.address(stray_ordinal)) {
            assert_eq!(status.log_id, Some(old_log));
            assert!(!status.elected, "the old log leads again: {status:?}");
        }
        for ordinal in lost
            .iter()
            .chain([&survivor])
            .filter(|o| **o != stray_ordinal)
        {
            if let Some(status) = log_status(operator.address(*ordinal)) {
                assert_eq!(status.log_id, Some(new_log), "member {ordinal}: {status:?}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "the stray on the fenced log did not exit:\n{}",
            tail(&std::fs::read_to_string(&stray_log).unwrap_or_default(), 20)
        );
        sleep(Duration::from_millis(100));
    };
    assert!(!exit.success(), "the stray exited with {exit}");
    let said = std::fs::read_to_string(&stray_log).unwrap_or_default();
    assert!(
        said.contains(&format!("{new_log:#x}")),
        "{}",
        tail(&said, 20)
    );
    // The two members on the new log still hold the registry as written. The
    // member the stray replaced may have led the new log: its peers then name it
    // until one of them is elected, so the leader is looked up again on each try.
    // A status request has 300 ms; on a loaded CI box one may time out, so a
    // missed answer is not read as "no log" either.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (leader, status) = loop {
        if let Some(found) = find_leader(port).and_then(|l| log_status(l).map(|s| (l, s))) {
            break found;
        }
        if Instant::now() >= deadline {
            let members: Vec<String> = (0..3)
                .map(|o| {
                    let log = std::fs::read_to_string(
                        operator.state_dir().join(format!("members/{o}/master.log")),
                    )
                    .unwrap_or_default();
                    format!(
                        "member {o}: {:?}\n{}",
                        log_status(operator.address(o)),
                        tail(&log, 15)
                    )
                })
                .collect();
            panic!(
                "no leader answering /log/status within 10 s (redirect names {:?})\n{}",
                find_leader(port),
                members.join("\n")
            );
        }
        sleep(Duration::from_millis(100));
    };
    assert_eq!(status.log_id, Some(new_log), "{status:?}");
    assert_eq!(registry_without_master(leader), written);
}
