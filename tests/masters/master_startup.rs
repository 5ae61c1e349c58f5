//! The `mesos-master` binary at startup: each refused configuration exits 1 with a
//! one-line reason on stderr; a good one serves and stops cleanly on SIGTERM.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::ensemble::allocate_port;
use crate::support::http::{get, request};
use mesos_operator::master::api::{LogStatus, ReplicaStatus};

const MASTER: &str = env!("CARGO_BIN_EXE_mesos-master");

/// How long a started master may take to answer /health, and to exit after SIGTERM.
const STARTUP_TIMEOUT_MS: u64 = 20_000;
const EXIT_TIMEOUT_MS: u64 = 10_000;

/// A fresh scratch directory per test, so tests running in parallel never share one.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mesos-master-startup-{}-{name}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The binary with a clean environment: a stray MESOS_* variable on the developer's
/// machine must not change what a test sees.
fn master() -> Command {
    let mut command = Command::new(MASTER);
    command.env_clear();
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("run mesos-master")
}

fn assert_refused(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line expected, got: {stderr}"
    );
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in: {stderr}"
    );
}

/// Three members on loopback with quorum 2, this one 127.0.0.1:5050.
fn three_member_args(work_dir: &std::path::Path) -> Vec<String> {
    vec![
        "--ip=127.0.0.1".into(),
        "--port=5050".into(),
        "--quorum=2".into(),
        format!("--work_dir={}", work_dir.display()),
        "--masters=127.0.0.1:5050,127.0.0.2:5050,127.0.0.3:5050".into(),
    ]
}

#[test]
fn whitelist_longer_than_two_quorums_minus_one_is_refused() {
    let dir = scratch("intersect");
    let output = run(master().args([
        "--quorum=2".to_owned(),
        format!("--work_dir={}", dir.display()),
        "--masters=127.0.0.1:5050,127.0.0.2:5050,127.0.0.3:5050,127.0.0.4:5050".to_owned(),
    ]));
    assert_refused(&output, "quorums could fail to intersect");
}

#[test]
fn quorum_larger_than_whitelist_is_refused() {
    let dir = scratch("larger");
    let output = run(master().args(three_member_args(&dir)).arg("--quorum=4"));
    assert_refused(
        &output,
        "--quorum=4 is larger than the 3 member(s) in --masters",
    );
}

#[test]
fn own_address_missing_from_whitelist_is_refused() {
    let dir = scratch("member");
    let output = run(master()
        .args(three_member_args(&dir))
        .arg("--advertise_ip=127.0.0.9"));
    assert_refused(&output, "member 127.0.0.9:5050 is not in --masters");
}

#[test]
fn quorum_below_one_is_refused() {
    let dir = scratch("zero");
    let output = run(master().args(three_member_args(&dir)).arg("--quorum=0"));
    assert_refused(&output, "--quorum must be at least 1");
}

#[test]
fn missing_quorum_is_refused() {
    let dir = scratch("missing");
    let output = run(master().args([
        format!("--work_dir={}", dir.display()),
        "--masters=127.0.0.1:5050".to_owned(),
    ]));
    assert_refused(&output, "--quorum is required");
}

#[test]
fn registry_other_than_replicated_log_is_refused() {
    let dir = scratch("registry");
    let output = run(master()
        .args(three_member_args(&dir))
        .arg("--registry=in_memory"));
    assert_refused(&output, "only --registry=replicated_log is accepted");
}

#[test]
fn work_dir_that_is_not_writable_is_refused() {
    let dir = scratch("workdir");
    // A regular file where the directory should be: not writable even for root.
    let file = dir.join("not-a-dir");
    fs::write(&file, "x").expect("file");
    let output = run(master().args(three_member_args(&file.join("sub"))));
    assert_refused(&output, "is not writable");
}

#[test]
fn missing_work_dir_is_created() {
    let dir = scratch("create").join("a/b");
    // Refused later for another reason, after the work directory was prepared.
    let output = run(master().args(three_member_args(&dir)).arg(format!(
        "--ensemble_token_file={}",
        dir.join("absent").display()
    )));
    assert_refused(&output, "cannot be read");
    assert!(dir.is_dir());
}

#[test]
fn empty_or_unreadable_token_files_are_refused() {
    let dir = scratch("token");
    let empty = dir.join("empty");
    fs::write(&empty, "\n").expect("token file");
    let output = run(master()
        .args(three_member_args(&dir))
        .arg(format!("--ensemble_token_file={}", empty.display())));
    assert_refused(&output, "is empty");

    let output = run(master().args(three_member_args(&dir)).arg(format!(
        "--ensemble_token_file={}",
        dir.join("absent").display()
    )));
    assert_refused(&output, "cannot be read");

    // A directory is not a token file either.
    let output = run(master()
        .args(three_member_args(&dir))
        .arg(format!("--ensemble_token_file={}", dir.display())));
    assert_refused(&output, "cannot be read");
}

#[test]
fn duplicate_whitelist_entries_are_refused() {
    let dir = scratch("dup");
    let output = run(master().args([
        "--quorum=2".to_owned(),
        format!("--work_dir={}", dir.display()),
        "--masters=127.0.0.1:5050,127.0.0.2:5050,127.0.0.1:5050".to_owned(),
    ]));
    assert_refused(&output, "--masters lists 127.0.0.1:5050 more than once");
}

#[test]
fn unparsable_addresses_are_refused() {
    let dir = scratch("addr");
    let output = run(master().args([
        "--quorum=1".to_owned(),
        format!("--work_dir={}", dir.display()),
        "--masters=master-0:5050".to_owned(),
    ]));
    assert_refused(
        &output,
        "--masters value 'master-0:5050' is not a valid address",
    );

    let output = run(master().args(three_member_args(&dir)).arg("--ip=not-an-ip"));
    assert_refused(&output, "--ip value 'not-an-ip' is not a valid address");
}

#[test]
fn flags_are_read_from_mesos_environment_variables() {
    let dir = scratch("env");
    let output = run(master()
        .env("MESOS_QUORUM", "2")
        .env("MESOS_WORK_DIR", &dir)
        .env(
            "MESOS_MASTERS",
            "127.0.0.1:5050,127.0.0.2:5050,127.0.0.3:5050,127.0.0.4:5050",
        ));
    assert_refused(&output, "quorums could fail to intersect");

    let output = run(master()
        .args(three_member_args(&dir))
        .env("MESOS_REGISTRY", "in_memory"));
    assert_refused(&output, "--registry=in_memory is not supported");
}

#[test]
fn unparsable_flag_values_keep_clap_s_exit_code_two() {
    let output = run(master().arg("--port=not-a-port"));
    assert_eq!(output.status.code(), Some(2));
    let output = run(master().arg("--log_auto_initialize=maybe"));
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn help_documents_every_flag_and_its_environment_variable() {
    let output = run(master().arg("--help"));
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "ip",
        "port",
        "advertise_ip",
        "advertise_port",
        "quorum",
        "work_dir",
        "registry",
        "log_auto_initialize",
        "masters",
        "ensemble_token_file",
        "election_timeout_ms",
        "heartbeat_interval_ms",
        "log_format",
    ] {
        assert!(
            help.contains(&format!("--{flag}")),
            "--{flag} missing from help:\n{help}"
        );
        let env_var = format!("MESOS_{}", flag.to_uppercase());
        assert!(
            help.contains(&env_var),
            "{env_var} missing from help:\n{help}"
        );
    }
}

/// A port nobody listens on right now, and no other test of the binary gets.
fn free_port(ip: &str) -> u16 {
    allocate_port(&[ip.parse().expect("test ip")])
}

/// Kills the child if a test fails before stopping it, so no stray master lingers.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn wait_until_healthy(server: SocketAddr, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_millis(STARTUP_TIMEOUT_MS);
    loop {
        if let Ok(response) = request(server, "GET", "/health") {
            assert_eq!(response.status, 200);
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("mesos-master exited early with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "mesos-master did not answer /health in time"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_millis(EXIT_TIMEOUT_MS);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "mesos-master did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

fn start_single_master(name: &str, extra: &[&str]) -> (Running, SocketAddr) {
    start_single_master_on("127.0.0.1", name, extra)
}

fn start_single_master_on(ip: &str, name: &str, extra: &[&str]) -> (Running, SocketAddr) {
    let dir = scratch(name);
    let port = free_port(ip);
    let member = SocketAddr::new(ip.parse().expect("test ip"), port);
    let token = dir.join("token");
    fs::write(&token, "ensemble-secret\n").expect("token");
    let mut child = master()
        .args([
            format!("--ip={ip}"),
            format!("--port={port}"),
            "--quorum=1".to_owned(),
            format!("--work_dir={}", dir.join("work").display()),
            format!("--masters={member}"),
            format!("--ensemble_token_file={}", token.display()),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mesos-master");
    wait_until_healthy(member, &mut child);
    (Running(child), member)
}

#[test]
fn a_valid_master_serves_reports_itself_honestly_and_stops_on_sigterm() {
    let (mut running, server) = start_single_master("serve", &[]);

    // A lone member auto-initializes its log and wins the election; until then it
    // reports what it is, never elected before it is.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status: LogStatus =
            serde_json::from_str(&get(server, "/log/status").body).expect("LogStatus");
        if status.elected {
            break status;
        }
        assert_eq!(
            status.leader, None,
            "a leader before the election: {status:?}"
        );
        assert!(Instant::now() < deadline, "never elected: {status:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.status, ReplicaStatus::Voting);
    assert!(status.log_id.is_some());
    assert_eq!(status.leader, Some(server));
    assert_eq!(status.quorum, 1);
    assert_eq!(status.masters, vec![server]);
    assert_eq!(status.member, server);
    let redirect = get(server, "/master/redirect");
    assert_eq!(redirect.status, 307);
    assert_eq!(
        redirect.header("location"),
        Some(format!("http://{server}").as_str())
    );
    let snapshot: serde_json::Value =
        serde_json::from_str(&get(server, "/metrics/snapshot").body).expect("JSON");
    assert_eq!(snapshot["master/elected"], 1.0);
    assert_eq!(snapshot["registrar/log/recovered"], 1.0);

    send_signal(&running.0, "TERM");
    let status = wait_for_exit(&mut running.0);
    assert!(status.success(), "exit status {status}");

    let mut stderr = String::new();
    use std::io::Read;
    running
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(stderr.contains("effective configuration"), "{stderr}");
    assert!(
        !stderr.contains("ensemble-secret"),
        "the token must never be logged: {stderr}"
    );
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}

#[test]
fn json_logs_and_sigint_also_stop_cleanly() {
    let (mut running, _server) = start_single_master("json", &["--log_format=json"]);
    send_signal(&running.0, "INT");
    let status = wait_for_exit(&mut running.0);
    assert!(status.success(), "exit status {status}");
    let mut stderr = String::new();
    use std::io::Read;
    running
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    for line in stderr.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
    }
    assert!(stderr.contains("effective configuration"));
}

#[test]
fn three_masters_on_loopback_addresses_each_report_themselves() {
    let dir = scratch("three");
    let members: Vec<SocketAddr> = (1..=3)
        .map(|i| {
            let ip = format!("127.0.0.{i}");
            format!("{ip}:{}", free_port(&ip)).parse().expect("member")
        })
        .collect();
    let whitelist: Vec<String> = members.iter().map(ToString::to_string).collect();
    let mut running = Vec::new();
    for (index, member) in members.iter().enumerate() {
        let mut child = master()
            .args([
                format!("--ip={}", member.ip()),
                format!("--port={}", member.port()),
                "--quorum=2".to_owned(),
                format!("--work_dir={}", dir.join(index.to_string()).display()),
                format!("--masters={}", whitelist.join(",")),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mesos-master");
        wait_until_healthy(*member, &mut child);
        running.push(Running(child));
    }
    for member in &members {
        let status: LogStatus =
            serde_json::from_str(&get(*member, "/log/status").body).expect("LogStatus");
        assert_eq!(status.member, *member);
        assert_eq!(status.masters, members);
        assert_eq!(status.quorum, 2);
        assert!(dir.join("0").is_dir());
    }
    for child in &mut running {
        send_signal(&child.0, "TERM");
        assert!(wait_for_exit(&mut child.0).success());
    }
}

#[test]
fn an_ipv6_master_serves_on_its_bracketed_address() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    }
    let (mut running, server) = start_single_master_on("::1", "ipv6", &[]);
    let body = get(server, "/log/status").body;
    let raw: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(raw["member"], server.to_string());
    assert!(server.to_string().starts_with("[::1]:"));
    send_signal(&running.0, "TERM");
    assert!(wait_for_exit(&mut running.0).success());
}
