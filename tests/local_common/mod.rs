//! Harness for end-to-end tests of `mesos-operator local`: the operator process on
//! a spec file and a state dir, a raw-log write load, and a sampler of the safety
//! invariant. Every wait is bounded; Drop kills the operator and its masters.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{sleep, JoinHandle};
use std::time::{Duration, Instant};

use mesos_operator::master::api::LogStatus;
use mesos_operator::master::raw_log::{Appended, RawEntry};
use mesos_operator::operator::api::{MesosMasterClusterStatus, Phase};
use mesos_operator::operator::local::members::member_address;

#[path = "../support/http.rs"]
pub mod http;

pub const OPERATOR: &str = env!("CARGO_BIN_EXE_mesos-operator");
pub const MASTER: &str = env!("CARGO_BIN_EXE_mesos-master");
/// Bound on one transition: generous for a loaded 2-core CI machine.
pub const TRANSITION_BOUND: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(100);
const IO: Duration = Duration::from_secs(2);

pub struct Operator {
    pub root: tempfile::TempDir,
    pub port: u16,
    pub mode: &'static str,
    child: Option<Child>,
}

impl Operator {
    pub fn state_dir(&self) -> PathBuf {
        self.root.path().join("state")
    }
    pub fn spec_file(&self) -> PathBuf {
        self.root.path().join("cluster.yaml")
    }

    /// Writes a spec of `replicas` and starts the operator on it.
    pub fn start(port: u16, replicas: i32, mode: &'static str) -> Operator {
        let mut operator = Operator {
            root: tempfile::tempdir().expect("tempdir"),
            port,
            mode,
            child: None,
        };
        operator.set_replicas(replicas);
        operator.spawn();
        operator
    }

    /// Starts the operator on a spec file holding `spec_text` (issue #11's tests:
    /// `backup`, `restoreFrom`).
    pub fn start_with_spec(port: u16, spec_text: &str) -> Operator {
        let mut operator = Operator {
            root: tempfile::tempdir().expect("tempdir"),
            port,
            mode: "Preserve",
            child: None,
        };
        operator.write_spec_text(spec_text);
        operator.spawn();
        operator
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join("operator.log"))
            .expect("operator log");
        let child = Command::new(OPERATOR)
            .arg("local")
            .arg(format!("--spec={}", self.spec_file().display()))
            .arg(format!("--state-dir={}", self.state_dir().display()))
            .arg(format!("--base-port={}", self.port))
            .arg(format!("--master-binary={MASTER}"))
            .arg("--master-arg=--raw_log_api")
            .arg("--display=lines")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn mesos-operator");
        self.child = Some(child);
    }

    /// kill -9 of the operator alone (its masters keep running).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: the operator stops its masters.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                sleep(POLL);
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("operator did not stop within 30s of SIGTERM");
        }
    }

    pub fn write_spec_text(&self, text: &str) {
        let tmp = self.root.path().join(".cluster.yaml.tmp");
        std::fs::write(&tmp, text).expect("spec");
        std::fs::rename(&tmp, self.spec_file()).expect("spec rename");
    }

    /// Rewrites the spec file, as `kubectl apply` would change the object.
    pub fn set_replicas(&self, replicas: i32) {
        self.write_spec_text(&format!(
            "apiVersion: mesos.operator.dev/v1alpha1\nkind: MesosMasterCluster\nmetadata:\n  name: e2e\nspec:\n  replicas: {replicas}\n  singleMasterExit: {}\n",
            self.mode
        ));
    }

    pub fn status(&self) -> Option<MesosMasterClusterStatus> {
        let text = std::fs::read_to_string(self.state_dir().join("status.yaml")).ok()?;
        serde_yaml::from_str(&text).ok()
    }

    pub fn operator_log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("operator.log")).unwrap_or_default()
    }

    /// Waits until `pred` holds on status.yaml.
    pub fn wait_for(
        &self,
        what: &str,
        bound: Duration,
        pred: impl Fn(&MesosMasterClusterStatus) -> bool,
    ) -> MesosMasterClusterStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.status() {
                if pred(&status) {
                    return status;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not within {bound:?}; status {:#?}\noperator log:\n{}",
                    self.status(),
                    tail(&self.operator_log(), 40)
                );
            }
            sleep(POLL);
        }
    }

    /// Waits until `replicas` masters run, all ready, under a leader, nothing left to do.
    pub fn wait_settled(&self, replicas: i32) -> MesosMasterClusterStatus {
        self.wait_for(
            &format!("{replicas} masters settled"),
            TRANSITION_BOUND,
            |status| {
                status.phase == Some(Phase::Running)
                    && status.replicas == replicas
                    && status.ready_replicas == replicas
                    && status.leader.is_some()
                    && status.transition.as_ref().is_none_or(|t| t.to == replicas)
            },
        )
    }

    /// Applied steps so far: (unix ms, description).
    pub fn events(&self) -> Vec<(u128, String)> {
        std::fs::read_to_string(self.state_dir().join("events.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (ms, text) = line.split_once('\t')?;
                Some((ms.parse().ok()?, text.to_string()))
            })
            .collect()
    }

    pub fn wait_events(&self, count: usize) {
        let deadline = Instant::now() + TRANSITION_BOUND;
        while self.events().len() < count {
            assert!(
                Instant::now() < deadline,
                "fewer than {count} steps within {TRANSITION_BOUND:?}:\n{}",
                tail(&self.operator_log(), 40)
            );
            sleep(Duration::from_millis(20));
        }
    }

    pub fn address(&self, ordinal: u32) -> SocketAddr {
        member_address(self.port, ordinal)
    }

    pub fn member_pid(&self, ordinal: u32) -> Option<u32> {
        std::fs::read_to_string(self.state_dir().join(format!("members/{ordinal}/pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn work_dir(&self, ordinal: u32) -> PathBuf {
        self.state_dir().join(format!("members/{ordinal}/work_dir"))
    }

    /// Every `mesos-master` process running on this test's state dir.
    pub fn master_pids(&self) -> Vec<u32> {
        pids_mentioning(&self.state_dir())
    }

    /// Drives one transition to `to` and reports it.
    pub fn transition(&self, to: i32, load: Option<&Load>) -> TransitionReport {
        let from = self.status().map(|s| s.replicas).unwrap_or_default();
        let events_before = self.events().len();
        let started = Instant::now();
        self.set_replicas(to);
        self.wait_settled(to);
        let report = TransitionReport {
            from,
            to,
            wall: started.elapsed(),
            steps: self.events().len() - events_before,
            longest_unavailable: load.map(|load| load.longest_gap(started, Instant::now())),
        };
        report.print();
        report
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill9();
        for pid in self.master_pids() {
            signal(pid, "KILL");
        }
    }
}

pub struct TransitionReport {
    pub from: i32,
    pub to: i32,
    pub wall: Duration,
    pub steps: usize,
    pub longest_unavailable: Option<Duration>,
}

impl TransitionReport {
    pub fn print(&self) {
        eprintln!(
            "transition {} -> {}: wall {:.2}s, {} steps, longest write-unavailability {}",
            self.from,
            self.to,
            self.wall.as_secs_f64(),
            self.steps,
            self.longest_unavailable
                .map(|d| format!("{:.2}s", d.as_secs_f64()))
                .unwrap_or_else(|| "-".into())
        );
    }
}

pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Pids whose command line mentions `path` (the masters of one state dir).
pub fn pids_mentioning(path: &Path) -> Vec<u32> {
    let needle = path.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
                let cmd = String::from_utf8_lossy(&cmd);
                cmd.contains("mesos-master") && cmd.contains(&needle)
            })
        })
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.trim_start().starts_with('Z'))
                })
                == Some(false)
        })
        .collect()
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn log_status(addr: SocketAddr) -> Option<LogStatus> {
    let response =
        http::request_within(addr, "GET", "/log/status", b"", Duration::from_millis(300)).ok()?;
    (response.status == 200)
        .then(|| serde_json::from_str(&response.body).ok())
        .flatten()
}

/// The leader, found through `/master/redirect` on any member that answers.
pub fn find_leader(port: u16) -> Option<SocketAddr> {
    (0..9).find_map(|ordinal| {
        let response = http::request_within(
            member_address(port, ordinal),
            "GET",
            "/master/redirect",
            b"",
            Duration::from_millis(300),
        )
        .ok()?;
        (response.status == 307)
            .then(|| response.location())
            .flatten()
    })
}

/// Raw entries the member has learned: position -> hex payload.
pub fn learned(addr: SocketAddr) -> Option<BTreeMap<u64, String>> {
    let response =
        http::request_within(addr, "GET", "/log/read?from=0&to=1000000", b"", IO).ok()?;
    if response.status != 200 {
        return None;
    }
    let entries: Vec<RawEntry> = serde_json::from_str(&response.body).ok()?;
    Some(
        entries
            .into_iter()
            .filter(|e| e.kind == "raw")
            .map(|e| (e.position, e.data))
            .collect(),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A write load: raw appends to the leader, every acknowledged one recorded.
pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(Instant, u64, String)>>>,
    started: Instant,
    handle: Option<JoinHandle<()>>,
}

/// At most this many writes per load, one every few milliseconds.
const LOAD_MAX_WRITES: usize = 50_000;

impl Load {
    pub fn start(port: u16, tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (stop2, acked2, tag) = (stop.clone(), acked.clone(), tag.to_string());
        let handle = std::thread::spawn(move || {
            let mut leader = None;
            for n in 0..LOAD_MAX_WRITES {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let data = format!("{tag}-{n}").into_bytes();
                loop {
                    if stop2.load(Ordering::SeqCst) {
                        return;
                    }
                    let Some(target) = leader.or_else(|| find_leader(port)) else {
                        sleep(Duration::from_millis(20));
                        continue;
                    };
                    match http::request_within(
                        target,
                        "POST",
                        "/log/append",
                        &data,
                        Duration::from_secs(7),
                    ) {
                        Ok(response) if response.status == 200 => {
                            let appended: Appended =
                                serde_json::from_str(&response.body).expect("append response");
                            acked2.lock().unwrap().push((
                                Instant::now(),
                                appended.position,
                                hex(&data),
                            ));
                            leader = Some(target);
                            break;
                        }
                        Ok(response) if response.status == 307 => {
                            leader = response.location();
                        }
                        _ => {
                            leader = None;
                            sleep(Duration::from_millis(20));
                        }
                    }
                }
                sleep(Duration::from_millis(5));
            }
        });
        Load {
            stop,
            acked,
            started: Instant::now(),
            handle: Some(handle),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            handle.join().expect("load thread");
        }
    }

    pub fn acked(&self) -> BTreeMap<u64, String> {
        self.acked
            .lock()
            .unwrap()
            .iter()
            .map(|(_, position, data)| (*position, data.clone()))
            .collect()
    }

    /// Longest time within [from, to] with no acknowledged write.
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let acked = self.acked.lock().unwrap();
        let mut last = from;
        let mut longest = Duration::ZERO;
        for (at, _, _) in acked.iter().filter(|(at, _, _)| *at >= from && *at <= to) {
            longest = longest.max(at.duration_since(last));
            last = *at;
        }
        longest.max(to.duration_since(last))
    }

    /// Waits until a few more writes are acknowledged (the load makes progress).
    pub fn wait_progress(&self, writes: usize) {
        let before = self.acked.lock().unwrap().len();
        let deadline = Instant::now() + TRANSITION_BOUND;
        while self.acked.lock().unwrap().len() < before + writes {
            assert!(Instant::now() < deadline, "the write load made no progress");
            sleep(POLL);
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Asserts that the leader holds every acknowledged write at its position.
pub fn assert_no_write_lost(port: u16, acked: &BTreeMap<u64, String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing: Vec<_> = match find_leader(port).and_then(learned) {
            Some(learned) => acked
                .iter()
                .filter(|(p, d)| learned.get(p) != Some(d))
                .take(10)
                .collect(),
            None => vec![],
        };
        let answered = find_leader(port).and_then(learned).is_some();
        if answered && missing.is_empty() {
            eprintln!("all {} acknowledged writes are in the log", acked.len());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged writes lost (first missing: {missing:?}) or no leader answers"
        );
        sleep(POLL);
    }
}

/// Samples every member's `/log/status` and checks the safety invariant among the
/// members that answer: every two quorums in use intersect (q1 + q2 > running) and
/// no whitelist is longer than 2q-1.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    violations: Arc<Mutex<Vec<String>>>,
    samples: Arc<Mutex<usize>>,
    handle: Option<JoinHandle<()>>,
}

impl Sampler {
    pub fn start(port: u16) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let samples = Arc::new(Mutex::new(0));
        let (stop2, violations2, samples2) = (stop.clone(), violations.clone(), samples.clone());
        let handle = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let running: Vec<LogStatus> = (0..9)
                    .filter_map(|ordinal| log_status(member_address(port, ordinal)))
                    .collect();
                if let Some(violation) = check_invariant(&running) {
                    violations2.lock().unwrap().push(violation);
                }
                *samples2.lock().unwrap() += 1;
                sleep(Duration::from_millis(50));
            }
        });
        Sampler {
            stop,
            violations,
            samples,
            handle: Some(handle),
        }
    }

    /// Stops sampling and asserts no violation was seen.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            handle.join().expect("sampler");
        }
        let violations = self.violations.lock().unwrap();
        eprintln!(
            "safety sampler: {} samples, {} violations",
            self.samples.lock().unwrap(),
            violations.len()
        );
        assert!(violations.is_empty(), "safety violated: {violations:#?}");
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub fn check_invariant(running: &[LogStatus]) -> Option<String> {
    let count = running.len();
    for a in running {
        if a.masters.len() > 2 * a.quorum - 1 {
            return Some(format!(
                "{} runs --quorum={} with a whitelist of {}",
                a.member,
                a.quorum,
                a.masters.len()
            ));
        }
        for b in running {
            if a.quorum + b.quorum <= count {
                return Some(format!(
                    "{} (quorum {}) and {} (quorum {}) need not intersect among {count} running",
                    a.member, a.quorum, b.member, b.quorum
                ));
            }
        }
    }
    None
}
