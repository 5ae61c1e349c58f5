//! Member processes of the local runtime: their flags on disk, spawning, stopping,
//! adopting survivors of an operator that was killed, and the member's "volume"
//! (its `work_dir`).
//!
//! Layout of `<state-dir>/members/<ordinal>/`:
//!
//! - `flags.json`: the member's configuration and the exact `mesos-master` command
//!   line it runs with. Present = the member should run (the local "pod").
//! - `work_dir/`: the member's `--work_dir` (the log is `work_dir/replicated_log`),
//!   with a `.mesos-local-volume` marker written when the runtime created it. No
//!   marker while the flags exist = the volume is lost (deleted behind our back).
//! - `pid`: the pid of the running process, so a restarted runtime can adopt or
//!   kill it.
//! - `master.log`: the process's stdout and stderr.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::operator::api::Ordinal;
use crate::operator::atomic_file::write_atomically;
use crate::operator::backup::BackupError;
use crate::operator::planner::MemberConfig;

/// Marker written in a work dir the runtime created.
pub const VOLUME_MARKER: &str = ".mesos-local-volume";
/// How long a member may take to stop after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// A member that exited is not restarted more often than this.
pub const RESTART_BACKOFF: Duration = Duration::from_millis(1000);

/// What `flags.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberFlags {
    pub ordinal: Ordinal,
    pub config: MemberConfig,
    /// A wipe was decided: the process must not start again before
    /// `work_dir/replicated_log` is deleted (written before the old process stops).
    #[serde(default)]
    pub wipe_pending: bool,
    /// The `mesos-master` arguments, without the program.
    pub args: Vec<String>,
}

/// Paths and addresses shared by all members.
#[derive(Debug, Clone)]
pub struct Layout {
    pub state_dir: PathBuf,
    pub base_port: u16,
}

impl Layout {
    pub fn members_dir(&self) -> PathBuf {
        self.state_dir.join("members")
    }
    pub fn member_dir(&self, ordinal: Ordinal) -> PathBuf {
        self.members_dir().join(ordinal.to_string())
    }
    pub fn flags_file(&self, ordinal: Ordinal) -> PathBuf {
        self.member_dir(ordinal).join("flags.json")
    }
    pub fn work_dir(&self, ordinal: Ordinal) -> PathBuf {
        self.member_dir(ordinal).join("work_dir")
    }
    pub fn pid_file(&self, ordinal: Ordinal) -> PathBuf {
        self.member_dir(ordinal).join("pid")
    }
    pub fn log_file(&self, ordinal: Ordinal) -> PathBuf {
        self.member_dir(ordinal).join("master.log")
    }
    pub fn token_file(&self) -> PathBuf {
        self.state_dir.join("ensemble-token")
    }
    /// Member `i` listens on 127.0.0.(i+1):base_port.
    pub fn address(&self, ordinal: Ordinal) -> SocketAddr {
        member_address(self.base_port, ordinal)
    }

    /// The full `mesos-master` command line for `config`.
    pub fn args(&self, ordinal: Ordinal, config: &MemberConfig, extra: &[String]) -> Vec<String> {
        let address = self.address(ordinal);
        let masters = config
            .whitelist
            .iter()
            .map(|member| self.address(*member).to_string())
            .collect::<Vec<_>>()
            .join(",");
        let mut args = vec![
            format!("--ip={}", address.ip()),
            format!("--port={}", address.port()),
            format!("--quorum={}", config.quorum),
            format!("--masters={masters}"),
            format!("--work_dir={}", self.work_dir(ordinal).display()),
            format!("--ensemble_token_file={}", self.token_file().display()),
        ];
        args.extend(extra.iter().cloned());
        args
    }

    pub fn read_flags(&self, ordinal: Ordinal) -> anyhow::Result<Option<MemberFlags>> {
        let path = self.flags_file(ordinal);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).with_context(|| format!("{}", path.display()))?,
            )),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("{}", path.display())),
        }
    }

    pub fn write_flags(&self, flags: &MemberFlags) -> anyhow::Result<()> {
        fs::create_dir_all(self.member_dir(flags.ordinal))?;
        write_atomically(
            &self.flags_file(flags.ordinal),
            &serde_json::to_vec_pretty(flags)?,
        )?;
        Ok(())
    }

    /// Whether the member's work dir is the one the runtime created.
    pub fn volume_marked(&self, ordinal: Ordinal) -> bool {
        self.work_dir(ordinal).join(VOLUME_MARKER).exists()
    }

    pub fn create_volume(&self, ordinal: Ordinal) -> anyhow::Result<()> {
        let work_dir = self.work_dir(ordinal);
        fs::create_dir_all(&work_dir)?;
        write_atomically(
            &work_dir.join(VOLUME_MARKER),
            b"created by mesos-operator local\n",
        )?;
        Ok(())
    }
}

/// Member `i` listens on 127.0.0.(i+1):port.
pub fn member_address(base_port: u16, ordinal: Ordinal) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1 + ordinal as u8], base_port))
}

/// A running member process: our child, or one adopted from an earlier runtime.
#[derive(Debug)]
pub struct Process {
    pub pid: u32,
    child: Option<Child>,
    pub started: Instant,
}

impl Process {
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => pid_alive(self.pid),
        }
    }
}

/// Whether `pid` is a live (not zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

fn pid_cmdline(pid: u32) -> Option<Vec<String>> {
    let bytes = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        bytes
            .split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect(),
    )
}

fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The member processes the runtime supervises.
#[derive(Debug)]
pub struct Supervisor {
    pub layout: Layout,
    pub binary: PathBuf,
    pub processes: BTreeMap<Ordinal, Process>,
    /// When each member was last started (for the restart backoff).
    last_start: BTreeMap<Ordinal, Instant>,
}

impl Supervisor {
    pub fn new(layout: Layout, binary: PathBuf) -> Self {
        Self {
            layout,
            binary,
            processes: BTreeMap::new(),
            last_start: BTreeMap::new(),
        }
    }

    /// On startup: a member process recorded in a pid file that still runs exactly
    /// the flags on disk is adopted; any other process recorded there that runs
    /// `mesos-master` on this member's work dir is killed (its flags are stale).
    pub fn adopt_or_kill_stale(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        for ordinal in 0..crate::operator::api::MAX_REPLICAS as Ordinal {
            let pid_file = self.layout.pid_file(ordinal);
            let Ok(text) = fs::read_to_string(&pid_file) else {
                continue;
            };
            let Ok(pid) = text.trim().parse::<u32>() else {
                let _ = fs::remove_file(&pid_file);
                continue;
            };
            let cmdline = pid_cmdline(pid).filter(|_| pid_alive(pid));
            let work_dir_arg = format!("--work_dir={}", self.layout.work_dir(ordinal).display());
            let Some(cmdline) = cmdline.filter(|cmd| cmd.contains(&work_dir_arg)) else {
                let _ = fs::remove_file(&pid_file);
                continue;
            };
            let flags = self.layout.read_flags(ordinal).ok().flatten();
            let matches = flags
                .as_ref()
                .is_some_and(|flags| !flags.wipe_pending && cmdline[1..] == flags.args[..]);
            if matches {
                self.processes.insert(
                    ordinal,
                    Process {
                        pid,
                        child: None,
                        started: Instant::now(),
                    },
                );
                notes.push(format!("adopted member {ordinal} (pid {pid})"));
            } else {
                send_signal(pid, "KILL");
                wait_dead(pid, STOP_GRACE);
                let _ = fs::remove_file(&pid_file);
                notes.push(format!(
                    "killed stale member {ordinal} (pid {pid}): its flags changed"
                ));
            }
        }
        // A master started just before an earlier runtime died, before its pid file
        // was written: nothing remembers it, so it goes.
        let needle = format!("--work_dir={}/", self.layout.members_dir().display());
        let adopted: Vec<u32> = self.processes.values().map(|p| p.pid).collect();
        if let Ok(entries) = fs::read_dir("/proc") {
            for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
                let orphan = !adopted.contains(&pid)
                    && pid_alive(pid)
                    && pid_cmdline(pid)
                        .is_some_and(|cmd| cmd.iter().any(|arg| arg.starts_with(&needle)));
                if orphan {
                    send_signal(pid, "KILL");
                    wait_dead(pid, STOP_GRACE);
                    notes.push(format!("killed an unrecorded master (pid {pid})"));
                }
            }
        }
        notes
    }

    pub fn alive(&mut self, ordinal: Ordinal) -> bool {
        let alive = self.processes.get_mut(&ordinal).is_some_and(Process::alive);
        if !alive && self.processes.remove(&ordinal).is_some() {
            let _ = fs::remove_file(self.layout.pid_file(ordinal));
        }
        alive
    }

    pub fn pid(&self, ordinal: Ordinal) -> Option<u32> {
        self.processes.get(&ordinal).map(|process| process.pid)
    }

    /// May the member be (re)started now, given the backoff?
    pub fn may_start(&self, ordinal: Ordinal) -> bool {
        self.last_start
            .get(&ordinal)
            .is_none_or(|at| at.elapsed() >= RESTART_BACKOFF)
    }

    /// Starts the member with the flags on disk (completing a pending wipe first).
    pub fn start(&mut self, ordinal: Ordinal) -> anyhow::Result<()> {
        if self.alive(ordinal) {
            return Ok(());
        }
        let mut flags = self
            .layout
            .read_flags(ordinal)?
            .with_context(|| format!("member {ordinal} has no flags.json"))?;
        if flags.wipe_pending {
            let log = self.layout.work_dir(ordinal).join("replicated_log");
            match fs::remove_dir_all(&log) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error).context(format!("wiping {}", log.display())),
            }
            if let Ok(dir) = fs::File::open(self.layout.work_dir(ordinal)) {
                let _ = dir.sync_all();
            }
            flags.wipe_pending = false;
            self.layout.write_flags(&flags)?;
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.layout.log_file(ordinal))?;
        let child = Command::new(&self.binary)
            .args(&flags.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Own process group: a terminal's Ctrl-C reaches the runtime alone, which
            // then stops the masters itself.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let pid = child.id();
        write_atomically(
            &self.layout.pid_file(ordinal),
            format!("{pid}\n").as_bytes(),
        )?;
        self.last_start.insert(ordinal, Instant::now());
        self.processes.insert(
            ordinal,
            Process {
                pid,
                child: Some(child),
                started: Instant::now(),
            },
        );
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`; returns once the process is gone.
    pub fn stop(&mut self, ordinal: Ordinal, grace: Duration) {
        self.stop_all(&[ordinal], grace);
    }

    /// Stops several members at once (in parallel).
    pub fn stop_all(&mut self, ordinals: &[Ordinal], grace: Duration) {
        let mut stopping = Vec::new();
        for ordinal in ordinals {
            if let Some(process) = self.processes.remove(ordinal) {
                send_signal(process.pid, if grace.is_zero() { "KILL" } else { "TERM" });
                stopping.push((*ordinal, process));
            }
        }
        let deadline = Instant::now() + grace;
        for (ordinal, mut process) in stopping {
            while process.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if process.alive() {
                send_signal(process.pid, "KILL");
            }
            match &mut process.child {
                Some(child) => {
                    let _ = child.wait();
                }
                None => wait_dead(process.pid, Duration::from_secs(5)),
            }
            let _ = fs::remove_file(self.layout.pid_file(ordinal));
        }
    }
}

fn wait_dead(pid: u32, within: Duration) {
    let deadline = Instant::now() + within;
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}
/// The members of a local runtime (`mesos-operator local --state-dir`), from
/// `members/<i>/flags.json`: the `--ip` and `--port` each member runs with.
pub fn local_members(state_dir: &Path) -> Result<Vec<SocketAddr>, BackupError> {
    let members_dir = state_dir.join("members");
    let state_error = |path: &Path, reason: String| BackupError::StateDir {
        path: path.to_owned(),
        reason,
    };
    let entries = fs::read_dir(&members_dir).map_err(|error| {
        state_error(
            &members_dir,
            format!("{error} (is this a `mesos-operator local` state dir?)"),
        )
    })?;
    let mut members = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| state_error(&members_dir, error.to_string()))?;
        let flags_file = entry.path().join("flags.json");
        let bytes = match fs::read(&flags_file) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(state_error(&flags_file, error.to_string())),
        };
        let flags: MemberFlags = serde_json::from_slice(&bytes)
            .map_err(|error| state_error(&flags_file, error.to_string()))?;
        members.push((
            flags.ordinal,
            address_in_args(&flags.args)
                .ok_or_else(|| state_error(&flags_file, "no --ip and --port in its args".into()))?,
        ));
    }
    members.sort();
    if members.is_empty() {
        return Err(state_error(&members_dir, "no members".into()));
    }
    Ok(members.into_iter().map(|(_, address)| address).collect())
}

fn address_in_args(args: &[String]) -> Option<SocketAddr> {
    let flag = |name: &str| {
        args.iter()
            .find_map(|arg| arg.strip_prefix(name)?.strip_prefix('='))
    };
    format!("{}:{}", flag("--ip")?, flag("--port")?)
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_members_are_read_from_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout {
            state_dir: dir.path().to_owned(),
            base_port: 27351,
        };
        for ordinal in [1, 0] {
            let config = crate::operator::planner::MemberConfig {
                quorum: 2,
                whitelist: vec![0, 1, 2],
            };
            layout
                .write_flags(&MemberFlags {
                    ordinal,
                    config: config.clone(),
                    wipe_pending: false,
                    args: layout.args(ordinal, &config, &[]),
                })
                .expect("flags");
        }
        assert_eq!(
            local_members(dir.path()).expect("members"),
            vec![
                "127.0.0.1:27351".parse::<SocketAddr>().expect("addr"),
                "127.0.0.2:27351".parse().expect("addr")
            ]
        );
        let error = local_members(&dir.path().join("nope")).expect_err("no dir");
        assert!(error.to_string().contains("state dir"), "{error}");
    }
}
