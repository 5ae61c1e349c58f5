//! Real `mesos-master` ensembles for the tests: every member on its own loopback
//! address (127.0.0.1, .2, ...) sharing one port, as in production with
//! `--port=5050`, or on given addresses (network namespaces).
//!
//! ```ignore
//! let mut ensemble = Ensemble::builder().members(3).spawn();
//! let leader = ensemble.wait_for_leader();
//! ensemble.kill(leader);
//! ```
//!
//! Ports: each ensemble takes the next free one of a range no other test binary
//! uses (see [`allocate_port`]), so the tests of one binary can run in parallel.
//! Each member's stderr goes to a file in the ensemble's temporary directory
//! ([`Ensemble::stderr`]), and is printed when a test panics. Every wait is
//! bounded; Drop kills every process (on a panic too) and removes the directory.

#![allow(dead_code)] // each test module uses a different part

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::sleep;
use std::time::{Duration, Instant};

use mesos_operator::master::raw_log::{Appended, RawEntry};

use super::http::{self, HttpResponse};

pub const MASTER: &str = env!("CARGO_BIN_EXE_mesos-master");
/// The ensemble token every test member shares.
pub const TOKEN: &str = "ensemble-secret";
/// Default bound for anything the ensemble must eventually do (elect, catch up):
/// it bounds the test, it is not a performance claim.
pub const EVENTUALLY: Duration = Duration::from_secs(30);
pub const POLL: Duration = Duration::from_millis(50);
/// How a stopped member is given to exit on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Ports handed out to ensembles: below the kernel's ephemeral range (so no
/// outgoing connection can hold one), above the fixed ports of the other test
/// binaries (26000-28299), which may run at the same time.
const FIRST_PORT: u16 = 29000;
const LAST_PORT: u16 = 31999;

/// The next port free on every one of `ips`: taken from a counter, so two
/// ensembles of one binary never share one, and skipped while something (a stale
/// master of a killed run) listens on it.
pub fn allocate_port(ips: &[IpAddr]) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(FIRST_PORT);
    loop {
        let port = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(port <= LAST_PORT, "the test port range is used up");
        if ips
            .iter()
            .all(|ip| TcpListener::bind(SocketAddr::new(*ip, port)).is_ok())
        {
            return port;
        }
    }
}

/// `n` loopback addresses, 127.0.0.1 first.
pub fn loopback_ips(n: usize) -> Vec<IpAddr> {
    (0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + i as u8)))
        .collect()
}

/// The certificate files of one member's `--peer_tls_*` flags.
#[derive(Debug, Clone)]
pub struct PeerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
    pub reload_interval_ms: u64,
}

pub struct Builder {
    members: usize,
    quorum: Option<usize>,
    port: Option<u16>,
    addresses: Option<Vec<SocketAddr>>,
    whitelist: Option<Vec<SocketAddr>>,
    namespaces: Option<Vec<String>>,
    args: Vec<String>,
    raw_log_api: bool,
    log_level: String,
    eventually: Duration,
    status_timeout: Duration,
}

impl Builder {
    /// How many members (default 3), on 127.0.0.1.. unless [`Builder::addresses`].
    pub fn members(mut self, n: usize) -> Builder {
        self.members = n;
        self
    }

    /// `--quorum` (default a majority).
    pub fn quorum(mut self, quorum: usize) -> Builder {
        self.quorum = Some(quorum);
        self
    }

    /// The port every member listens on, instead of a fresh one (to start a second
    /// ensemble on the addresses of a first).
    pub fn port(mut self, port: u16) -> Builder {
        self.port = Some(port);
        self
    }

    /// The members' addresses, instead of loopback (e.g. network namespaces).
    pub fn addresses(mut self, addresses: Vec<SocketAddr>) -> Builder {
        self.members = addresses.len();
        self.addresses = Some(addresses);
        self
    }

    /// `--masters`, instead of the members themselves (a stranger listing itself
    /// beside another ensemble's members).
    pub fn whitelist(mut self, whitelist: Vec<SocketAddr>) -> Builder {
        self.whitelist = Some(whitelist);
        self
    }

    /// Member `i` runs in network namespace `namespaces[i]` (`ip netns exec`, which
    /// execs the master, so the child is the master).
    pub fn namespaces(mut self, namespaces: Vec<String>) -> Builder {
        self.namespaces = Some(namespaces);
        self
    }

    /// Extra flags for every member.
    pub fn args(mut self, args: &[&str]) -> Builder {
        self.args.extend(args.iter().map(ToString::to_string));
        self
    }

    /// `--raw_log_api` (default on: `POST /log/append`, `GET /log/read`).
    pub fn raw_log_api(mut self, on: bool) -> Builder {
        self.raw_log_api = on;
        self
    }

    /// `RUST_LOG` of the members (default `warn`).
    pub fn log_level(mut self, level: &str) -> Builder {
        self.log_level = level.to_owned();
        self
    }

    /// The bound of [`Ensemble::wait_for_leader`] and the other waits (default
    /// [`EVENTUALLY`]).
    pub fn eventually(mut self, bound: Duration) -> Builder {
        self.eventually = bound;
        self
    }

    /// How long [`Ensemble::status`] waits for an answer (default
    /// [`http::IO_TIMEOUT`]); a short one keeps leader polls moving past a member
    /// that hangs.
    pub fn status_timeout(mut self, timeout: Duration) -> Builder {
        self.status_timeout = timeout;
        self
    }

    /// The ensemble, no member started.
    pub fn build(self) -> Ensemble {
        let root = tempfile::tempdir().expect("tempdir");
        let token_file = root.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
        let addresses = self.addresses.unwrap_or_else(|| {
            let ips = loopback_ips(self.members);
            let port = self.port.unwrap_or_else(|| allocate_port(&ips));
            ips.into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect()
        });
        let n = addresses.len();
        let whitelist = self.whitelist.unwrap_or_else(|| addresses.clone());
        let members = (0..n)
            .map(|i| Member {
                work_dir: root.path().join(format!("master-{i}")),
                args: Vec::new(),
                tls: None,
                child: None,
            })
            .collect();
        Ensemble {
            quorum: self.quorum.unwrap_or(n / 2 + 1),
            root,
            addresses,
            whitelist,
            namespaces: self.namespaces,
            args: self.args,
            raw_log_api: self.raw_log_api,
            log_level: self.log_level,
            eventually: self.eventually,
            status_timeout: self.status_timeout,
            members: Mutex::new(members),
            token_file,
        }
    }

    /// The ensemble with every member started.
    pub fn spawn(self) -> Ensemble {
        let mut ensemble = self.build();
        for i in 0..ensemble.len() {
            ensemble.start(i);
        }
        ensemble
    }
}

struct Member {
    work_dir: PathBuf,
    /// Flags of this member only, after the ensemble's.
    args: Vec<String>,
    tls: Option<PeerTls>,
    child: Option<Child>,
}

pub struct Ensemble {
    root: tempfile::TempDir,
    addresses: Vec<SocketAddr>,
    whitelist: Vec<SocketAddr>,
    quorum: usize,
    namespaces: Option<Vec<String>>,
    args: Vec<String>,
    raw_log_api: bool,
    log_level: String,
    eventually: Duration,
    status_timeout: Duration,
    /// Behind a lock so that reads (`running`, `exited`) can reap through `&self`.
    members: Mutex<Vec<Member>>,
    token_file: PathBuf,
}

impl Ensemble {
    pub fn builder() -> Builder {
        Builder {
            members: 3,
            quorum: None,
            port: None,
            addresses: None,
            whitelist: None,
            namespaces: None,
            args: Vec::new(),
            raw_log_api: true,
            log_level: "warn".to_owned(),
            eventually: EVENTUALLY,
            status_timeout: http::IO_TIMEOUT,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    /// The members' addresses, by index.
    pub fn members(&self) -> &[SocketAddr] {
        &self.addresses
    }

    pub fn member(&self, i: usize) -> SocketAddr {
        self.addresses[i]
    }

    pub fn port(&self) -> u16 {
        self.addresses[0].port()
    }

    pub fn quorum(&self) -> usize {
        self.quorum
    }

    pub fn eventually(&self) -> Duration {
        self.eventually
    }

    /// The ensemble's temporary directory, for a test's own files.
    pub fn dir(&self) -> &Path {
        self.root.path()
    }

    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// `--masters`.
    pub fn masters_flag(&self) -> String {
        self.whitelist
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn work_dir(&self, i: usize) -> PathBuf {
        self.lock()[i].work_dir.clone()
    }

    /// Member `i`'s `--work_dir` from its next start on (e.g. a small tmpfs).
    pub fn set_work_dir(&mut self, i: usize, dir: PathBuf) {
        self.lock()[i].work_dir = dir;
    }

    pub fn log_dir(&self, i: usize) -> PathBuf {
        self.work_dir(i).join("replicated_log")
    }

    /// Extra flags of member `i` from its next start on (after the ensemble's, so
    /// they override them).
    pub fn set_member_args(&mut self, i: usize, args: &[String]) {
        self.lock()[i].args = args.to_vec();
    }

    /// Member `i`'s `--peer_tls_*` files from its next start on; `None` for
    /// plaintext.
    pub fn set_tls(&mut self, i: usize, tls: Option<PeerTls>) {
        self.lock()[i].tls = tls;
    }

    fn stderr_path(&self, i: usize) -> PathBuf {
        self.root.path().join(format!("master-{i}.stderr"))
    }

    /// What member `i` wrote to stderr since it was last started.
    pub fn stderr(&self, i: usize) -> String {
        std::fs::read_to_string(self.stderr_path(i)).unwrap_or_default()
    }

    /// The command that runs member `i` (stdout discarded, stderr to its file),
    /// for a test that runs it itself (e.g. to capture its stderr or exit).
    pub fn command(&self, i: usize) -> Command {
        let members = self.lock();
        let member = &members[i];
        let mut command = match &self.namespaces {
            Some(namespaces) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &namespaces[i], MASTER]);
                command
            }
            None => Command::new(MASTER),
        };
        let stderr = std::fs::File::create(self.stderr_path(i)).expect("stderr file");
        command
            .arg(format!("--ip={}", self.addresses[i].ip()))
            .arg(format!("--port={}", self.addresses[i].port()))
            .arg(format!("--quorum={}", self.quorum))
            .arg(format!("--masters={}", self.masters_flag()))
            .arg(format!("--work_dir={}", member.work_dir.display()))
            .arg(format!(
                "--ensemble_token_file={}",
                self.token_file.display()
            ));
        if self.raw_log_api {
            command.arg("--raw_log_api");
        }
        if let Some(tls) = &member.tls {
            command
                .arg(format!("--peer_tls_cert_file={}", tls.cert_file.display()))
                .arg(format!("--peer_tls_key_file={}", tls.key_file.display()))
                .arg(format!("--peer_tls_ca_file={}", tls.ca_file.display()))
                .arg(format!(
                    "--peer_tls_reload_interval_ms={}",
                    tls.reload_interval_ms
                ));
        }
        command
            .args(&self.args)
            .args(&member.args)
            .env("RUST_LOG", &self.log_level)
            .stdout(Stdio::null())
            .stderr(stderr);
        command
    }

    /// Starts member `i` unless it runs.
    pub fn start(&mut self, i: usize) {
        if self.lock()[i].child.is_some() {
            return;
        }
        let child = self.command(i).spawn().expect("spawn mesos-master");
        self.lock()[i].child = Some(child);
    }

    /// kill -9, and reap.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.lock()[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and reap; kill -9 if it has not exited after a grace period. The
    /// exit status, if it exited by itself.
    pub fn stop(&mut self, i: usize) -> Option<ExitStatus> {
        let mut child = self.lock()[i].child.take()?;
        let pid = libc::pid_t::try_from(child.id()).expect("a pid");
        // SAFETY: `kill` only sends a signal; the pid is our own unreaped child, so
        // it cannot have been reused.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            sleep(POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Removes member `i`'s whole work_dir (it must not run).
    pub fn wipe(&mut self, i: usize) {
        assert!(
            self.lock()[i].child.is_none(),
            "wiping member {i} while it runs"
        );
        std::fs::remove_dir_all(self.work_dir(i)).expect("wipe work_dir");
    }

    /// Whether member `i`'s process has exited, and how (it is then reaped and no
    /// longer counted as running).
    pub fn exited(&self, i: usize) -> Option<ExitStatus> {
        let mut members = self.lock();
        let status = members[i].child.as_mut()?.try_wait().ok().flatten()?;
        members[i].child = None;
        Some(status)
    }

    /// Waits for member `i` to exit by itself: its exit status, or `None` if it
    /// still runs at the deadline (it is then left running).
    pub fn wait_for_exit(&self, i: usize, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited(i) {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(POLL);
        }
    }

    /// Members started and not known to have exited.
    pub fn running(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|i| {
                let _ = self.exited(*i);
                self.lock()[*i].child.is_some()
            })
            .collect()
    }

    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let response = http::Request::new("GET", "/log/status")
            .timeout(self.status_timeout)
            .connect_timeout(self.status_timeout)
            .send(self.addresses[i])
            .ok()?;
        serde_json::from_str(&response.body).ok()
    }

    /// A running member that says it is elected, asking each once.
    pub fn leader(&self) -> Option<usize> {
        self.running()
            .into_iter()
            .find(|i| self.status(*i).is_some_and(|s| s["elected"] == true))
    }

    /// A running member that says it is elected, if one does within `within`.
    pub fn leader_within(&self, within: Duration) -> Option<usize> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(POLL);
        }
    }

    /// The running member that says it is elected, once one does.
    pub fn wait_for_leader(&self) -> usize {
        self.leader_within(self.eventually)
            .unwrap_or_else(|| panic!("no leader elected within {:?}", self.eventually))
    }

    /// A running member other than the leader.
    pub fn follower(&self) -> usize {
        let leader = self.wait_for_leader();
        self.running()
            .into_iter()
            .find(|i| *i != leader)
            .expect("a follower")
    }

    /// Waits until member `i` says it is VOTING.
    pub fn wait_voting(&self, i: usize) {
        let deadline = Instant::now() + self.eventually;
        while self.status(i).is_none_or(|s| s["status"] != "VOTING") {
            assert!(
                Instant::now() < deadline,
                "member {} never voted: {}",
                self.addresses[i],
                self.stderr(i)
            );
            sleep(POLL);
        }
    }

    /// Waits until every member in `which` says it is VOTING and one of them leads.
    pub fn wait_until_voting(&self, which: &[usize]) {
        let deadline = Instant::now() + self.eventually;
        loop {
            let statuses: Vec<_> = which.iter().map(|i| self.status(*i)).collect();
            let voting = statuses
                .iter()
                .all(|s| s.as_ref().is_some_and(|s| s["status"] == "VOTING"));
            let led = statuses
                .iter()
                .any(|s| s.as_ref().is_some_and(|s| s["elected"] == true));
            if voting && led {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "members {which:?} not all VOTING under a leader: {statuses:?}"
            );
            sleep(POLL);
        }
    }

    /// `/metrics/snapshot` of member `i`.
    pub fn metrics(&self, i: usize) -> BTreeMap<String, f64> {
        let response = http::get(self.addresses[i], "/metrics/snapshot");
        assert_eq!(response.status, 200, "{}", response.body);
        serde_json::from_str(&response.body).expect("metrics snapshot")
    }

    /// `/metrics` (Prometheus text) of member `i`.
    pub fn prometheus(&self, i: usize) -> String {
        let response = http::get(self.addresses[i], "/metrics");
        assert_eq!(response.status, 200, "{}", response.body);
        response.body
    }

    /// One append through whichever member leads; `None` if none acknowledged it
    /// before `within` (the outcome is then unknown).
    pub fn append(&self, data: &[u8], within: Duration) -> Option<u64> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            for i in self.running() {
                if let Some(position) = append_once(self.addresses[i], data) {
                    return Some(position);
                }
            }
            sleep(POLL);
        }
        None
    }

    /// Appends `count` values tagged `tag`, recording each acknowledged one.
    pub fn write_some(&self, tag: &str, count: usize, acked: &mut BTreeMap<u64, String>) {
        for k in 0..count {
            let value = format!("{tag}-{k}");
            let position = self
                .append(value.as_bytes(), self.eventually)
                .unwrap_or_else(|| panic!("append {value} was not acknowledged"));
            let previous = acked.insert(position, hex(value.as_bytes()));
            assert!(previous.is_none(), "position {position} acknowledged twice");
        }
    }

    /// `GET /log/read` of everything member `i` learned; `None` while it does not
    /// answer (a process just started has not bound its port yet).
    pub fn read_log(&self, i: usize) -> Option<HttpResponse> {
        http::request(self.addresses[i], "GET", "/log/read?from=0&to=100000").ok()
    }

    /// Raw entries learned by member `i`, by position; `None` while it does not
    /// answer, or answers anything but 200.
    pub fn learned(&self, i: usize) -> Option<BTreeMap<u64, String>> {
        let response = self.read_log(i)?;
        if response.status != 200 {
            return None;
        }
        Some(raw_entries(&response.body))
    }

    /// Waits until member `i` serves every acknowledged append at its position; on
    /// the way, every entry it serves at an acknowledged position must be the
    /// acknowledged one (damaged data is never served, not even briefly).
    pub fn assert_holds(&self, i: usize, acked: &BTreeMap<u64, String>) {
        let deadline = Instant::now() + self.eventually;
        loop {
            let learned = self.learned(i).unwrap_or_default();
            for (position, data) in &learned {
                if let Some(expected) = acked.get(position) {
                    assert_eq!(
                        data, expected,
                        "member {} serves another value at acknowledged position {position}",
                        self.addresses[i]
                    );
                }
            }
            let missing: Vec<u64> = acked
                .keys()
                .filter(|p| !learned.contains_key(p))
                .copied()
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "member {} lacks {} of {} acknowledged appends, at {missing:?}",
                self.addresses[i],
                missing.len(),
                acked.len()
            );
            sleep(POLL);
        }
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for i in 0..self.len() {
            self.kill(i);
            if panicking {
                let stderr = self.stderr(i);
                let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
                if !tail.is_empty() {
                    eprintln!("---- stderr of member {} (last lines):", self.addresses[i]);
                    for line in tail.iter().rev() {
                        eprintln!("{line}");
                    }
                }
            }
        }
    }
}

/// `POST /log/append` to `member`; the position if it acknowledged.
pub fn append_once(member: SocketAddr, data: &[u8]) -> Option<u64> {
    let response = http::request_with_body(member, "POST", "/log/append", data).ok()?;
    if response.status != 200 {
        return None;
    }
    let appended: Appended = serde_json::from_str(&response.body).expect("append response");
    Some(appended.position)
}

/// The raw entries of a `GET /log/read` body, by position (hex data).
pub fn raw_entries(body: &str) -> BTreeMap<u64, String> {
    let entries: Vec<RawEntry> = serde_json::from_str(body).expect("read response");
    entries
        .into_iter()
        .filter(|e| e.kind == "raw")
        .map(|e| (e.position, e.data))
        .collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
