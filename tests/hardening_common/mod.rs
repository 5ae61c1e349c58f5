//! Real `mesos-master` ensembles for the hardening tests (`tests/master_security.rs`,
//! `tests/master_foreign_log.rs`, `tests/master_failover.rs`): the shape of
//! `tests/ensemble.rs`'s helper, plus what these tests need (the metrics, a
//! member's exit and its stderr, a member started on another work_dir). Every wait
//! is bounded; Drop kills the processes.

#![allow(dead_code)] // each test file uses a different part

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::master_common::{self, request_with_body};
use mesos_operator::master::raw_log::{Appended, RawEntry};

pub const MASTER: &str = env!("CARGO_BIN_EXE_mesos-master");
/// Bounds anything the ensemble must eventually do (elect, catch up); not a
/// performance claim.
pub const EVENTUALLY: Duration = Duration::from_secs(30);
pub const POLL: Duration = Duration::from_millis(50);
pub const TOKEN: &str = "ensemble-secret";

pub struct Ensemble {
    _root: tempfile::TempDir,
    pub dir: PathBuf,
    pub members: Vec<SocketAddr>,
    pub quorum: usize,
    pub processes: Vec<Option<Child>>,
    pub token_file: PathBuf,
}

impl Ensemble {
    /// `n` members on 127.0.0.{1..=n} sharing `port`, all started.
    pub fn start(n: usize, quorum: usize, port: u16) -> Ensemble {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().to_path_buf();
        let token_file = dir.join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
        let members = (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1 + i as u8], port)))
            .collect();
        let mut ensemble = Ensemble {
            _root: root,
            dir,
            members,
            quorum,
            processes: (0..n).map(|_| None).collect(),
            token_file,
        };
        for i in 0..n {
            ensemble.spawn(i);
        }
        ensemble
    }

    pub fn work_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("master-{i}"))
    }

    pub fn masters_flag(&self) -> String {
        self.members
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn command(&self, i: usize) -> Command {
        let mut command = Command::new(MASTER);
        command
            .arg(format!("--ip={}", self.members[i].ip()))
            .arg(format!("--port={}", self.members[i].port()))
            .arg(format!("--quorum={}", self.quorum))
            .arg(format!("--masters={}", self.masters_flag()))
            .arg(format!("--work_dir={}", self.work_dir(i).display()))
            .arg(format!(
                "--ensemble_token_file={}",
                self.token_file.display()
            ))
            .arg("--raw_log_api")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    pub fn spawn(&mut self, i: usize) {
        let child = self.command(i).spawn().expect("spawn mesos-master");
        self.processes[i] = Some(child);
    }

    /// kill -9, and reap.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.processes[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Members started and not known to have exited.
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| {
                self.processes[*i]
                    .as_mut()
                    .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
            })
            .collect()
    }

    /// Whether member `i`'s process has exited, and how.
    pub fn exited(&mut self, i: usize) -> Option<ExitStatus> {
        self.processes[i]
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let response = master_common::request(self.members[i], "GET", "/log/status").ok()?;
        serde_json::from_str(&response.body).ok()
    }

    /// `/metrics/snapshot` of member `i`.
    pub fn metrics(&self, i: usize) -> BTreeMap<String, f64> {
        let response = master_common::get(self.members[i], "/metrics/snapshot");
        assert_eq!(response.status, 200, "{}", response.body);
        serde_json::from_str(&response.body).expect("metrics snapshot")
    }

    /// `/metrics` (Prometheus text) of member `i`.
    pub fn prometheus(&self, i: usize) -> String {
        let response = master_common::get(self.members[i], "/metrics");
        assert_eq!(response.status, 200, "{}", response.body);
        response.body
    }

    /// The running member that says it is elected, once one does.
    pub fn wait_for_leader(&mut self) -> usize {
        let deadline = Instant::now() + EVENTUALLY;
        while Instant::now() < deadline {
            for i in self.running() {
                if self.status(i).is_some_and(|s| s["elected"] == true) {
                    return i;
                }
            }
            sleep(POLL);
        }
        panic!("no leader elected within {EVENTUALLY:?}");
    }

    /// One append through whichever member leads; `None` if none acknowledged it
    /// before `within` (the outcome is then unknown).
    pub fn append(&mut self, data: &[u8], within: Duration) -> Option<u64> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            for i in self.running() {
                if let Some(position) = append_once(self.members[i], data) {
                    return Some(position);
                }
            }
            sleep(POLL);
        }
        None
    }

    /// Raw entries learned by member `i` in position order; `None` while it does
    /// not answer.
    pub fn learned(&self, i: usize) -> Option<BTreeMap<u64, String>> {
        let response =
            master_common::request(self.members[i], "GET", "/log/read?from=0&to=100000").ok()?;
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

    /// Waits until member `i` has learned every acknowledged append at the position
    /// it was acknowledged at.
    pub fn assert_holds(&self, i: usize, acked: &BTreeMap<u64, String>) {
        let deadline = Instant::now() + EVENTUALLY;
        loop {
            let learned = self.learned(i).unwrap_or_default();
            let missing = acked
                .iter()
                .filter(|(p, d)| learned.get(p) != Some(d))
                .count();
            if missing == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "member {} lacks {missing} of {} acknowledged appends",
                self.members[i],
                acked.len()
            );
            sleep(POLL);
        }
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        for i in 0..self.processes.len() {
            self.kill(i);
        }
    }
}

/// `POST /log/append` to `member`; the position if it acknowledged.
pub fn append_once(member: SocketAddr, data: &[u8]) -> Option<u64> {
    let response = request_with_body(member, "POST", "/log/append", data).ok()?;
    if response.status != 200 {
        return None;
    }
    let appended: Appended = serde_json::from_str(&response.body).ok()?;
    Some(appended.position)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends `count` values tagged `tag`, recording each acknowledged one.
pub fn write_some(
    ensemble: &mut Ensemble,
    tag: &str,
    count: usize,
    acked: &mut BTreeMap<u64, String>,
) {
    for k in 0..count {
        let value = format!("{tag}-{k}");
        let position = ensemble
            .append(value.as_bytes(), EVENTUALLY)
            .unwrap_or_else(|| panic!("append {value} was not acknowledged"));
        let previous = acked.insert(position, hex(value.as_bytes()));
        assert!(previous.is_none(), "position {position} acknowledged twice");
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from)
        .expect("read dir")
        .filter_map(Result::ok)
    {
        let target = to.join(entry.file_name());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
