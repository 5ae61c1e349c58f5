//! Day-2 tools (issue #11): `mesos-operator backup` / `restore` and `kubectl-mmc`.
//!
//! - the plugin's Kubernetes side against `kube-fake-client` (status, plan, the
//!   restart request and its quorum guard);
//! - the binary against a small fake master (HTTP on 127.0.0.1:27301-27309), and
//!   as `kubectl-mmc` through a symlink;
//! - `backup_and_restore_against_real_masters`: real `mesos-master` processes on
//!   127.0.0.x:27310. It skips, saying so, while the master answers 404 to
//!   `/registry/export` (the endpoint is being added in src/master).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::ResourceExt;
use mesos_operator::master::api::{LogStatus, ReplicaStatus};
use mesos_operator::master::export_document::{registry_sha256, EXPORT_FORMAT};
use mesos_operator::master::registry::Registry;
use mesos_operator::operator::api::{
    MemberStatus, MesosMasterCluster, MesosMasterClusterSpec, MesosMasterClusterStatus, Phase,
    ANNOTATION_RESTART_MEMBER,
};
use mesos_operator::operator::cli::plugin;
use mesos_operator::operator::cli::screen::{render_status, StatusSource};

const OPERATOR: &str = env!("CARGO_BIN_EXE_mesos-operator");
const MASTER: &str = env!("CARGO_BIN_EXE_mesos-master");
/// Every wait in this file ends by this deadline.
const WAIT_MS: u64 = 30_000;

// ---------------------------------------------------------------- Kubernetes side

fn steady_status(ready: [bool; 3]) -> MesosMasterClusterStatus {
    MesosMasterClusterStatus {
        phase: Some(Phase::Running),
        replicas: 3,
        ready_replicas: ready.iter().filter(|ready| **ready).count() as i32,
        quorum: Some(2),
        target_quorum: Some(2),
        leader: Some("prod-0".into()),
        members: ready
            .iter()
            .enumerate()
            .map(|(ordinal, ready)| MemberStatus {
                name: format!("prod-{ordinal}"),
                address: Some(format!("10.96.0.{}:5050", 10 + ordinal)),
                quorum: Some(2),
                replica_status: Some(if *ready { "Voting" } else { "Recovering" }.into()),
                log_end_position: Some(40),
                ready: *ready,
            })
            .collect(),
        ..Default::default()
    }
}

async fn fake_api(status: MesosMasterClusterStatus) -> kube::Client {
    let mut cluster = MesosMasterCluster::new("prod", MesosMasterClusterSpec::with_replicas(3));
    cluster.metadata.namespace = Some("db".into());
    cluster.status = Some(status);
    kube_fake_client::ClientBuilder::new()
        .with_resource::<MesosMasterCluster>()
        .with_object(cluster)
        .build()
        .await
        .expect("fake API")
}

#[tokio::test]
async fn status_renders_the_clusters_status_on_one_screen() {
    let status = steady_status([true, true, false]);
    let client = fake_api(status.clone()).await;
    let text = plugin::status(&client, "db", "prod").await.expect("status");
    assert_eq!(
        text,
        render_status(
            &StatusSource {
                name: "prod",
                location: "namespace db",
                spec_replicas: Some(3),
            },
            &status
        )
    );
    assert!(text.contains("masters 2/3 ready (spec 3)"), "{text}");
    let missing = plugin::status(&client, "db", "other")
        .await
        .expect_err("no such cluster");
    assert!(
        missing
            .to_string()
            .starts_with("reading MesosMasterCluster db/other"),
        "{missing}"
    );
}

#[tokio::test]
async fn plan_previews_from_the_observed_size_and_changes_nothing() {
    let client = fake_api(steady_status([true; 3])).await;
    let text = plugin::plan(&client, "db", "prod", 5).await.expect("plan");
    assert!(
        text.starts_with("3 -> 5 masters (quorum 2 -> 3): 5 steps\n"),
        "{text}"
    );
    assert!(text.contains("restart prod-0 with --quorum=3"), "{text}");
    let error = plugin::plan(&client, "db", "prod", 4)
        .await
        .expect_err("even");
    assert!(
        error.to_string().starts_with("cannot preview 3 -> 4"),
        "{error}"
    );
    let api: Api<MesosMasterCluster> = Api::namespaced(client, "db");
    assert_eq!(api.get("prod").await.expect("get").spec.replicas, 3);
}

#[tokio::test]
async fn restart_writes_one_request_and_refuses_what_would_lose_quorum() {
    let client = fake_api(steady_status([true; 3])).await;
    plugin::request_restart(&client, "db", "prod", "prod-1")
        .await
        .expect("requested");
    let api: Api<MesosMasterCluster> = Api::namespaced(client.clone(), "db");
    let cluster = api.get("prod").await.expect("get");
    assert_eq!(
        cluster.annotations().get(ANNOTATION_RESTART_MEMBER),
        Some(&"prod-1".to_string())
    );
    // One at a time: a second request while the first is pending is refused.
    let error = plugin::request_restart(&client, "db", "prod", "prod-2")
        .await
        .expect_err("pending");
    assert_eq!(
        error.to_string(),
        "restart refused: a restart of prod-1 is already requested: one member at a time"
    );

    let degraded = fake_api(steady_status([true, false, true])).await;
    let error = plugin::request_restart(&degraded, "db", "prod", "prod-2")
        .await
        .expect_err("quorum");
    assert!(
        error.to_string().contains("fewer than the quorum of 2"),
        "{error}"
    );
    let api: Api<MesosMasterCluster> = Api::namespaced(degraded, "db");
    assert!(api
        .get("prod")
        .await
        .expect("get")
        .annotations()
        .get(ANNOTATION_RESTART_MEMBER)
        .is_none());
}

// ---------------------------------------------------------------- the binary

fn registry() -> Registry {
    let mut registry = Registry::default();
    registry.weights.insert("analytics".into(), 2.5);
    registry
        .unreachable
        .insert("agent-7".into(), 1_700_000_000_000_000_000);
    registry
}

fn export(log_id: u64, position: u64) -> Vec<u8> {
    let registry = registry();
    serde_json::to_vec(&serde_json::json!({
        "format": EXPORT_FORMAT,
        "log_id": log_id,
        "position": position,
        "sha256": registry_sha256(&registry),
        "registry": registry,
    }))
    .expect("json")
}

/// A master that answers /log/status (as elected leader), /registry/export and
/// /registry/import with canned answers, and records every request line.
struct FakeMaster {
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeMaster {
    fn start(address: SocketAddr, export: Vec<u8>, import_status: u16) -> Self {
        let listener = TcpListener::bind(address).expect("bind the fake master");
        listener.set_nonblocking(true).expect("nonblocking");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (requests.clone(), stop.clone());
        let status = serde_json::to_vec(&LogStatus {
            member: address,
            status: ReplicaStatus::Voting,
            log_id: Some(77),
            begin: 0,
            end: 1024,
            learned: 1024,
            quorum: 1,
            masters: vec![address],
            leader: Some(address),
            elected: true,
            peer_tls: false,
        })
        .expect("json");
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let line = serve(stream, &status, &export, import_status);
                seen.lock().expect("lock").push(line);
            }
        });
        Self { requests, stop }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut stream: TcpStream, status: &[u8], export: &[u8], import_status: u16) -> String {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    // Headers, then as much body as Content-Length says.
    while let Ok(read) = stream.read(&mut buffer) {
        if read == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&request);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&request);
    let line = text.lines().next().unwrap_or_default().to_owned();
    let (code, body): (u16, &[u8]) = if line.starts_with("GET /log/status ") {
        (200, status)
    } else if line.starts_with("GET /registry/export ") {
        (200, export)
    } else if line.starts_with("POST /registry/import ") {
        (import_status, b"{}")
    } else {
        (404, b"not found")
    };
    let _ = stream.write_all(
        format!(
            "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let _ = stream.write_all(body);
    line
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env_clear()
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_one_line_failure(output: &Output, expected: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in {stderr}"
    );
}

#[test]
fn backup_writes_the_leaders_export_and_restore_sends_it_back() {
    let leader = FakeMaster::start(
        "127.0.0.1:27301".parse().expect("addr"),
        export(77, 1024),
        200,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("backups");
    let output = run(
        Path::new(OPERATOR),
        &[
            "backup",
            "--masters",
            "127.0.0.1:27301",
            "--out",
            &out.to_string_lossy(),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let file = out.join("registry-77-1024.json");
    assert_eq!(text(&output.stdout).trim(), file.display().to_string());
    assert_eq!(std::fs::read(&file).expect("backup"), export(77, 1024));

    let output = run(
        Path::new(OPERATOR),
        &[
            "restore",
            "--from",
            &file.to_string_lossy(),
            "--masters",
            "127.0.0.1:27301",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("restored the registry of log 77 at position 1024"));
    assert!(leader
        .requests()
        .iter()
        .any(|line| line.starts_with("POST /registry/import ")));
}

/// `--keep N`: the backups of the same log beyond the N newest are deleted; other
/// logs' backups and other files stay. (Port 28150: issue #11's range.)
#[test]
fn backup_keep_prunes_older_backups_of_the_same_log_only() {
    let _leader = FakeMaster::start(
        "127.0.0.1:28150".parse().expect("addr"),
        export(77, 1024),
        200,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("backups");
    std::fs::create_dir_all(&out).expect("dir");
    for name in [
        "registry-77-1000.json",
        "registry-77-900.json",
        "registry-78-5000.json",
        "notes.txt",
    ] {
        std::fs::write(out.join(name), b"{}").expect("write");
    }
    let output = run(
        Path::new(OPERATOR),
        &[
            "backup",
            "--masters",
            "127.0.0.1:28150",
            "--out",
            &out.to_string_lossy(),
            "--keep",
            "2",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("deleted ") && stdout.contains("registry-77-900.json"),
        "{stdout}"
    );
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .expect("dir")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![
            "notes.txt",
            "registry-77-1000.json",
            "registry-77-1024.json",
            "registry-78-5000.json"
        ]
    );
    let output = run(
        Path::new(OPERATOR),
        &[
            "backup",
            "--masters",
            "127.0.0.1:28150",
            "--out",
            &out.to_string_lossy(),
            "--keep",
            "0",
        ],
    );
    assert!(!output.status.success(), "--keep 0 is refused");
}

#[test]
fn restore_refuses_bad_files_in_one_line_and_sends_nothing() {
    let master = FakeMaster::start("127.0.0.1:27302".parse().expect("addr"), export(1, 2), 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut document = export(77, 1024);
    let truncated = dir.path().join("registry-77-1024.json");
    std::fs::write(&truncated, &document[..document.len() / 2]).expect("write");
    let output = run(
        Path::new(OPERATOR),
        &[
            "restore",
            "--from",
            &truncated.to_string_lossy(),
            "--masters",
            "127.0.0.1:27302",
        ],
    );
    assert_one_line_failure(&output, "the registry export is truncated");

    // One bit of a weight flipped: still JSON, no longer the registry checksummed.
    let text_form = String::from_utf8(document.clone()).expect("utf-8");
    let at = text_form.find("2.5").expect("the weight");
    document[at] ^= 0x01; // '2' -> '3'
    let flipped = dir.path().join("flipped.json");
    std::fs::write(&flipped, &document).expect("write");
    let output = run(
        Path::new(OPERATOR),
        &[
            "restore",
            "--from",
            &flipped.to_string_lossy(),
            "--masters",
            "127.0.0.1:27302",
        ],
    );
    assert_one_line_failure(&output, "does not match its checksum");
    assert_eq!(master.requests(), Vec::<String>::new(), "nothing sent");
}

#[test]
fn restore_into_a_registry_with_data_says_it_is_not_empty() {
    let _master = FakeMaster::start("127.0.0.1:27303".parse().expect("addr"), export(1, 2), 409);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("registry-77-1024.json");
    std::fs::write(&file, export(77, 1024)).expect("write");
    let output = run(
        Path::new(OPERATOR),
        &[
            "restore",
            "--from",
            &file.to_string_lossy(),
            "--masters",
            "127.0.0.1:27303",
        ],
    );
    assert_one_line_failure(&output, "is not empty (409)");
}

/// The binary under the plugin's name, as `ln -s` installs it.
fn plugin_binary(dir: &Path) -> PathBuf {
    let link = dir.join("kubectl-mmc");
    std::os::unix::fs::symlink(OPERATOR, &link).expect("symlink");
    link
}

#[test]
fn kubectl_mmc_through_a_symlink_shows_a_local_runtimes_status_and_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = plugin_binary(dir.path());
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let status = steady_status([true; 3]);
    std::fs::write(
        state.join("status.yaml"),
        serde_yaml::to_string(&status).expect("yaml"),
    )
    .expect("write");
    let state_arg = state.to_string_lossy().into_owned();
    let output = run(&plugin, &["status", "--state-dir", &state_arg]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let location = format!("state dir {state_arg}");
    assert_eq!(
        text(&output.stdout),
        render_status(
            &StatusSource {
                name: "local",
                location: &location,
                spec_replicas: None,
            },
            &status
        )
    );
    let output = run(
        &plugin,
        &["plan", "--state-dir", &state_arg, "--replicas", "1"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).starts_with("3 -> 1 masters (quorum 2 -> 1)"),
        "{}",
        text(&output.stdout)
    );
    // A healthy ensemble: nothing to recover, nothing written.
    let output = run(
        &plugin,
        &[
            "recover",
            "prod-0",
            "--log-id",
            "00000000000000aa",
            "--state-dir",
            &state_arg,
        ],
    );
    assert_one_line_failure(&output, "does not say quorum is lost");
    assert!(!state.join("recover-request").exists());
}

// ---------------------------------------------------------------- real masters

/// Kills the master if the test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_master(dir: &Path, member: SocketAddr) -> Running {
    let token = dir.join("token");
    std::fs::write(&token, "day2-ensemble-secret\n").expect("token");
    let child = Command::new(MASTER)
        .env_clear()
        .args([
            format!("--ip={}", member.ip()),
            format!("--port={}", member.port()),
            "--quorum=1".to_owned(),
            format!("--masters={member}"),
            format!("--work_dir={}", dir.join("work").display()),
            format!("--ensemble_token_file={}", token.display()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mesos-master");
    Running(child)
}

fn get(member: SocketAddr, path: &str) -> Option<(u16, String)> {
    call(member, "GET", path, "")
}

fn call(member: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&member, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: {member}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    Some((code, response))
}

fn wait_elected(member: SocketAddr) {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    loop {
        if let Some((200, response)) = get(member, "/log/status") {
            if response.contains("\"elected\":true") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{member} never elected");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Gated on the master's registry endpoints: skips (with a message on stderr)
/// while `/registry/export` answers 404.
#[test]
fn backup_and_restore_against_real_masters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source: SocketAddr = "127.0.0.11:27310".parse().expect("addr");
    let target: SocketAddr = "127.0.0.12:27310".parse().expect("addr");
    std::fs::create_dir_all(dir.path().join("a")).expect("dir");
    std::fs::create_dir_all(dir.path().join("b")).expect("dir");
    let _source = start_master(&dir.path().join("a"), source);
    wait_elected(source);
    if let Some((404, _)) = get(source, "/registry/export") {
        eprintln!(
            "SKIPPED backup_and_restore_against_real_masters: mesos-master answers 404 to /registry/export (the endpoint is not merged yet)"
        );
        return;
    }
    // Data worth backing up (a registry holding only its master record counts as
    // empty and takes an import).
    let weights = r#"[{"role":"dev","weight":2.5}]"#;
    let written = call(source, "PUT", "/weights", weights);
    assert!(
        written.as_ref().is_some_and(|(code, _)| *code == 200),
        "PUT /weights: {written:?}"
    );
    // Data worth backing up (a registry holding only its master record counts as
    // empty and takes an import).
    let weights = r#"[{"role":"dev","weight":2.5}]"#;
    let written = call(source, "PUT", "/weights", weights);
    assert!(
        written.as_ref().is_some_and(|(code, _)| *code == 200),
        "PUT /weights: {written:?}"
    );
    let out = dir.path().join("backups");
    let output = run(
        Path::new(OPERATOR),
        &[
            "backup",
            "--masters",
            &source.to_string(),
            "--out",
            &out.to_string_lossy(),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let file = text(&output.stdout).trim().to_owned();
    assert!(file.contains("registry-"), "{file}");

    // The source holds data: 409, said plainly.
    let output = run(
        Path::new(OPERATOR),
        &["restore", "--from", &file, "--masters", &source.to_string()],
    );
    assert_one_line_failure(&output, "is not empty");

    let _target = start_master(&dir.path().join("b"), target);
    wait_elected(target);
    let output = run(
        Path::new(OPERATOR),
        &["restore", "--from", &file, "--masters", &target.to_string()],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let backup: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("file")).expect("json");
    let (code, restored) = get(target, "/registry/export").expect("export");
    assert_eq!(code, 200);
    let body = restored.split("\r\n\r\n").nth(1).unwrap_or_default();
    let mut restored: serde_json::Value = serde_json::from_str(body).expect("json");
    // The master record names whichever master leads now; the rest is the data.
    let mut backed_up = backup["registry"].clone();
    for registry in [&mut backed_up, &mut restored["registry"]] {
        if let Some(fields) = registry.as_object_mut() {
            fields.remove("master");
        }
    }
    assert!(backed_up.to_string().contains("\"dev\""), "{backed_up}");
    assert_eq!(restored["registry"], backed_up, "the same registry");
}
