//! `mesos-operator local --tls` (port 28210): the runtime makes a CA and member
//! certificates in its state dir, the ensemble comes up with every replica link
//! over TLS, each member's `/log/status` says so, and a write reaches every member.
//! Bounded: every wait has a deadline; Drop stops the operator and its masters.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use mesos_operator::master::api::LogStatus;
use mesos_operator::master::raw_log::{Appended, RawEntry};
use mesos_operator::operator::api::{MesosMasterClusterStatus, Phase};
use mesos_operator::operator::local::members::member_address;

const OPERATOR: &str = env!("CARGO_BIN_EXE_mesos-operator");
const MASTER: &str = env!("CARGO_BIN_EXE_mesos-master");
const PORT: u16 = 28210;
const SETTLE_BOUND: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);

struct LocalOperator {
    root: tempfile::TempDir,
    child: Option<Child>,
}

impl Drop for LocalOperator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: the operator stops its masters before it exits.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                sleep(POLL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl LocalOperator {
    fn status(&self) -> Option<MesosMasterClusterStatus> {
        let text = std::fs::read_to_string(self.root.path().join("state/status.yaml")).ok()?;
        serde_yaml::from_str(&text).ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("operator.log")).unwrap_or_default()
    }
}

fn log_status(member: SocketAddr) -> Option<LogStatus> {
    let response = crate::support::http::request(member, "GET", "/log/status").ok()?;
    (response.status == 200)
        .then(|| serde_json::from_str(&response.body).ok())
        .flatten()
}

#[test]
fn local_runtime_with_tls_brings_the_ensemble_up_over_tls() {
    let root = tempfile::tempdir().unwrap();
    let spec = root.path().join("cluster.yaml");
    std::fs::write(
        &spec,
        "apiVersion: mesos.operator.dev/v1alpha1\nkind: MesosMasterCluster\nmetadata:\n  name: tls\nspec:\n  replicas: 3\n",
    )
    .unwrap();
    let log = std::fs::File::create(root.path().join("operator.log")).unwrap();
    let child = Command::new(OPERATOR)
        .arg("local")
        .arg("--tls")
        .arg(format!("--spec={}", spec.display()))
        .arg(format!(
            "--state-dir={}",
            root.path().join("state").display()
        ))
        .arg(format!("--base-port={PORT}"))
        .arg(format!("--master-binary={MASTER}"))
        .arg("--master-arg=--raw_log_api")
        .arg("--display=lines")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn mesos-operator");
    let operator = LocalOperator {
        root,
        child: Some(child),
    };

    let deadline = Instant::now() + SETTLE_BOUND;
    loop {
        let settled = operator.status().is_some_and(|status| {
            status.phase == Some(Phase::Running)
                && status.ready_replicas == 3
                && status.leader.is_some()
        });
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "3 masters not settled within {SETTLE_BOUND:?}: {:#?}\n{}",
            operator.status(),
            operator.log()
        );
        sleep(POLL);
    }
    for file in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(
            operator.root.path().join("state/tls").join(file).exists(),
            "state/tls/{file} missing"
        );
    }
    for ordinal in 0..3 {
        let member = member_address(PORT, ordinal);
        let status = log_status(member).expect("the member answers");
        assert!(status.peer_tls, "{member} does not run TLS between members");
    }
    // A write goes through the TLS links to a quorum.
    let deadline = Instant::now() + SETTLE_BOUND;
    let appended: Appended = loop {
        let answered = (0..3).find_map(|ordinal| {
            let response = crate::support::http::request_with_body(
                member_address(PORT, ordinal),
                "POST",
                "/log/append",
                b"over-tls",
            )
            .ok()?;
            (response.status == 200)
                .then(|| serde_json::from_str(&response.body).ok())
                .flatten()
        });
        if let Some(appended) = answered {
            break appended;
        }
        assert!(Instant::now() < deadline, "no write acknowledged");
        sleep(POLL);
    };
    // Every member learns it: the links to all of them work.
    let hex: String = b"over-tls".iter().map(|b| format!("{b:02x}")).collect();
    let deadline = Instant::now() + SETTLE_BOUND;
    for ordinal in 0..3 {
        let member = member_address(PORT, ordinal);
        let holds = || {
            let Ok(response) =
                crate::support::http::request(member, "GET", "/log/read?from=0&to=1000")
            else {
                return false;
            };
            let entries: Vec<RawEntry> = serde_json::from_str(&response.body).unwrap_or_default();
            entries
                .iter()
                .any(|e| e.kind == "raw" && e.position == appended.position && e.data == hex)
        };
        while !holds() {
            assert!(
                Instant::now() < deadline,
                "{member} never learned position {}",
                appended.position
            );
            sleep(POLL);
        }
    }
}
