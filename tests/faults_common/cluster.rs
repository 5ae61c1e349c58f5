//! Real `mesos-master` ensembles for the fault tests: on 127.0.0.x, or each member
//! in its own network namespace (see [`super::netlab`]). Drop kills every child.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::http;

pub const MASTER: &str = env!("CARGO_BIN_EXE_mesos-master");
const POLL: Duration = Duration::from_millis(50);

pub struct Cluster {
    _root: tempfile::TempDir,
    dir: PathBuf,
    pub members: Vec<SocketAddr>,
    pub quorum: usize,
    processes: Vec<Option<Child>>,
    token_file: PathBuf,
    /// Network namespace per member, when they run in namespaces.
    namespaces: Option<Vec<String>>,
}

impl Cluster {
    /// `members` started with a quorum of a majority; `namespaces[i]`, when given,
    /// is where member `i` runs.
    pub fn start(members: Vec<SocketAddr>, namespaces: Option<Vec<String>>) -> Cluster {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().to_path_buf();
        let token_file = dir.join("token");
        std::fs::write(&token_file, "faults-secret\n").expect("token file");
        let n = members.len();
        let mut cluster = Cluster {
            _root: root,
            dir,
            members,
            quorum: n / 2 + 1,
            processes: (0..n).map(|_| None).collect(),
            token_file,
            namespaces,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster
    }

    /// `n` members on 127.0.0.1.. sharing `port`.
    pub fn loopback(n: usize, port: u16) -> Cluster {
        let members = (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1 + i as u8], port)))
            .collect();
        Cluster::start(members, None)
    }

    fn command(&self, i: usize) -> Command {
        let mut command = match &self.namespaces {
            Some(namespaces) => {
                // `ip netns exec` execs the master, so the child is the master.
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &namespaces[i], MASTER]);
                command
            }
            None => Command::new(MASTER),
        };
        let masters = self
            .members
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        command
            .arg(format!("--ip={}", self.members[i].ip()))
            .arg(format!("--port={}", self.members[i].port()))
            .arg(format!("--quorum={}", self.quorum))
            .arg(format!("--masters={masters}"))
            .arg(format!(
                "--work_dir={}",
                self.dir.join(format!("master-{i}")).display()
            ))
            .arg(format!(
                "--ensemble_token_file={}",
                self.token_file.display()
            ))
            // For `GET /log/read`, which tells whether a read can be checked.
            .arg("--raw_log_api")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    pub fn spawn(&mut self, i: usize) {
        if self.processes[i].is_none() {
            let child = self.command(i).spawn().expect("spawn mesos-master");
            self.processes[i] = Some(child);
        }
    }

    /// kill -9, and reap.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.processes[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| self.processes[*i].is_some())
            .collect()
    }

    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let response = http::call(
            self.members[i],
            "GET",
            "/log/status",
            None,
            Duration::from_secs(2),
        )
        .ok()?;
        serde_json::from_str(&response.body).ok()
    }

    /// A running member that says it is elected, if one does within `within`.
    pub fn leader_within(&self, within: Duration) -> Option<usize> {
        let deadline = Instant::now() + within;
        loop {
            for i in self.running() {
                if self.status(i).is_some_and(|s| s["elected"] == true) {
                    return Some(i);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(POLL);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.processes.len() {
            self.kill(i);
        }
    }
}
