//! `mesos-operator local`: the planner driving real `mesos-master` processes on this
//! machine (member `i` on 127.0.0.(i+1):base_port), the project's embedded default
//! and the backbone of its end-to-end tests.
//!
//! The loop has the shape of the Kubernetes reconcile loop: observe (is each
//! member's process alive, what does its `/log/status` say), ask the planner,
//! persist its memory, apply ONE step, record status, and come back.
//!
//! Everything the runtime must remember lives in the state directory:
//!
//! ```text
//! <state-dir>/
//!   status.yaml          MesosMasterClusterStatus, written atomically after every step
//!   spec.yaml            the last valid MesosMasterCluster taken from --spec
//!   ensemble-token       generated once, shared by every member
//!   registry-export.json the registry exported when leaving single-master mode
//!   events.log           one line per applied step: unix-ms, tab, description
//!   backups/             spec.backup's registry-<log id>-<position>.json (see `backups`)
//!   restart-request      a `kubectl mmc restart` request: the member's name (see `restart`)
//!   members/<i>/flags.json, work_dir/, pid, master.log   (see `members`)
//! ```

mod backups;
pub mod certs;
pub mod members;
pub mod recovery;
mod render;
pub mod restart;

use std::collections::BTreeMap;
use std::fs;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::master::api::{self, LogStatus};
use crate::operator::api::{
    MesosMasterCluster, MesosMasterClusterSpec, MesosMasterClusterStatus, Ordinal, PlannerMemory,
    TransitionStatus, MAX_REPLICAS,
};
use crate::operator::atomic_file::write_atomically;
use crate::operator::master_client::{
    HttpMasterClient, ImportOutcome, MasterClient, MemberTarget, Redirect, Timeouts,
};
use crate::operator::planner::{
    self, Decision, MemberConfig, Observed, ObservedMember, PodView, ReplicaStatus, ReplicaView,
    Step, VolumeState,
};
use crate::operator::status::{self, Day2, Decided, RegistryExport, StatusInput, Storage};
use members::{Layout, MemberFlags, Supervisor, STOP_GRACE};

/// Cluster name when no spec file names one.
pub const DEFAULT_CLUSTER_NAME: &str = "local";
/// Masters started when no spec file is given and the state dir holds no spec.
pub const DEFAULT_REPLICAS: i32 = 3;

/// How `mesos-operator local` runs.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub state_dir: PathBuf,
    pub base_port: u16,
    /// A `MesosMasterCluster` YAML file, polled for changes.
    pub spec_file: Option<PathBuf>,
    pub master_binary: PathBuf,
    /// Extra `mesos-master` flags, appended to every member's command line.
    pub master_args: Vec<String>,
    pub poll_interval: Duration,
    /// Redraw a live view in place (a TTY) or print plain lines.
    pub display: Display,
    /// Seconds of quorum loss before a recovery request is taken; overrides
    /// `spec.recovery.quorumLossSeconds` (tests use a few seconds).
    pub quorum_loss_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    Live,
    Lines,
    Quiet,
}

impl Display {
    /// Live on a terminal, lines otherwise.
    pub fn detect() -> Self {
        if std::io::stdout().is_terminal() {
            Display::Live
        } else {
            Display::Lines
        }
    }
}

/// The `mesos-master` next to the running executable.
pub fn default_master_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("mesos-master")))
        .unwrap_or_else(|| PathBuf::from("mesos-master"))
}

/// What one member looked like at the last observation (for status and display).
#[derive(Debug, Clone, Default)]
struct MemberSnapshot {
    pid: Option<u32>,
    flags: Option<MemberFlags>,
    status: Option<LogStatus>,
}

/// The runtime: one per state directory.
pub struct LocalRuntime<C: MasterClient = HttpMasterClient> {
    options: LocalOptions,
    client: C,
    supervisor: Supervisor,
    cluster: MesosMasterCluster,
    spec_text: Option<String>,
    spec_error: Option<String>,
    generation: i64,
    memory: PlannerMemory,
    /// When the transition in `status` began, for the note that ends it (status
    /// itself tracks the transition: `status::next_transition`).
    transition_started: Option<Instant>,
    last_step: Step,
    last_error: Option<String>,
    /// Why this tick's step could not be applied (status says `blocked`).
    blocked: Option<String>,
    snapshots: BTreeMap<Ordinal, MemberSnapshot>,
    status: MesosMasterClusterStatus,
    notes: Vec<String>,
    started: Instant,
    /// Day-2 (issue #11): a restart request under way and what status says of
    /// it; backups and the restore at creation (see `restart`, `backups`).
    restart: Option<restart::RestartInProgress>,
    restart_report: restart::RestartReport,
    backup_status: Option<crate::operator::api::backup::BackupStatus>,
    next_backup_at: Option<Instant>,
    restore_status: Option<crate::operator::api::backup::RestoreStatus>,
    recovery: recovery::RecoveryState,
    /// Runs the master client's calls: the runtime's loop is blocking, so each
    /// call is driven here to its end (see [`LocalRuntime::block_on`]).
    calls: tokio::runtime::Runtime,
    /// Held (locked) for the runtime's life.
    _lock: fs::File,
}

impl LocalRuntime<HttpMasterClient> {
    pub fn new(options: LocalOptions) -> anyhow::Result<Self> {
        Self::with_client(options, HttpMasterClient::new(Timeouts::LOCAL))
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

fn default_cluster(replicas: i32) -> MesosMasterCluster {
    let mut cluster = MesosMasterCluster::new(
        DEFAULT_CLUSTER_NAME,
        MesosMasterClusterSpec::with_replicas(replicas),
    );
    cluster.metadata.namespace = None;
    cluster
}

/// Parses a `MesosMasterCluster` document and validates its spec; the error is a
/// reason fit for `status.reason`.
pub fn parse_cluster(text: &str) -> Result<MesosMasterCluster, String> {
    let cluster: MesosMasterCluster =
        serde_yaml::from_str(text).map_err(|error| format!("cannot parse the spec: {error}"))?;
    cluster
        .spec
        .validate()
        .map_err(|error| format!("invalid spec: {error}"))?;
    Ok(cluster)
}

fn random_token() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl<C: MasterClient> LocalRuntime<C> {
    /// Drives one master call to its end. The local runtime's loop is blocking
    /// and owns no other async work, so a current-thread runtime it owns is all it
    /// needs; the client is the same async one the Kubernetes loop uses.
    fn block_on<F: std::future::Future>(&self, call: F) -> F::Output {
        self.calls.block_on(call)
    }

    pub fn with_client(mut options: LocalOptions, client: C) -> anyhow::Result<Self> {
        fs::create_dir_all(options.state_dir.join("members"))
            .with_context(|| format!("creating {}", options.state_dir.display()))?;
        // Absolute: the members' flags name their work dirs, and a restart from
        // another directory must launch (and recognise) the same command lines.
        options.state_dir = options.state_dir.canonicalize()?;
        // One runtime per state dir: a second would fight the first over members.
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(options.state_dir.join("lock"))?;
        if lock.try_lock().is_err() {
            anyhow::bail!(
                "another mesos-operator local is running on {}",
                options.state_dir.display()
            );
        }
        let layout = Layout {
            state_dir: options.state_dir.clone(),
            base_port: options.base_port,
        };
        if !layout.token_file().exists() {
            write_atomically(
                &layout.token_file(),
                format!("{}\n", random_token()?).as_bytes(),
            )?;
        }
        let supervisor = Supervisor::new(layout, options.master_binary.clone());
        // What an earlier run remembered.
        let previous: Option<MesosMasterClusterStatus> =
            fs::read_to_string(options.state_dir.join("status.yaml"))
                .ok()
                .and_then(|text| serde_yaml::from_str(&text).ok());
        let stored_spec = fs::read_to_string(options.state_dir.join("spec.yaml"))
            .ok()
            .and_then(|text| parse_cluster(&text).ok());
        let cluster = stored_spec.unwrap_or_else(|| default_cluster(DEFAULT_REPLICAS));
        let memory = previous
            .as_ref()
            .and_then(|status| status.planner_memory.clone())
            .unwrap_or_default();
        let generation = previous
            .as_ref()
            .and_then(|status| status.observed_generation)
            .unwrap_or(0);
        let runtime = Self {
            options,
            client,
            supervisor,
            cluster,
            spec_text: None,
            spec_error: None,
            generation,
            memory,
            transition_started: None,
            last_step: Step::Wait {
                reason: "starting".into(),
            },
            last_error: None,
            blocked: None,
            snapshots: BTreeMap::new(),
            status: previous.clone().unwrap_or_default(),
            notes: Vec::new(),
            started: Instant::now(),
            restart: None,
            restart_report: None,
            backup_status: previous.as_ref().and_then(|status| status.backup.clone()),
            next_backup_at: None,
            restore_status: previous.as_ref().and_then(|status| status.restore.clone()),
            recovery: recovery::RecoveryState::default(),
            calls: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime of the master calls")?,
            _lock: lock,
        };
        Ok(runtime)
    }

    fn layout(&self) -> &Layout {
        &self.supervisor.layout
    }

    fn name(&self) -> String {
        self.cluster
            .metadata
            .name
            .clone()
            .unwrap_or_else(|| DEFAULT_CLUSTER_NAME.into())
    }

    fn note(&mut self, text: String) {
        if self.options.display == Display::Lines {
            println!("{text}");
        }
        self.notes.push(text);
        if self.notes.len() > 8 {
            self.notes.remove(0);
        }
    }

    /// Runs until `stop` is set, then stops the masters.
    pub fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        for note in self.supervisor.adopt_or_kill_stale() {
            self.note(note);
        }
        while !stop.load(Ordering::SeqCst) {
            let tick = Instant::now();
            if let Err(error) = self.tick() {
                let text = format!("{error:#}");
                if self.last_error.as_deref() != Some(&text) {
                    self.note(format!("error: {text}"));
                }
                self.last_error = Some(text);
            }
            if self.options.display == Display::Live {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(self.render().as_bytes());
                let _ = out.flush();
            }
            let elapsed = tick.elapsed();
            if elapsed < self.options.poll_interval {
                std::thread::sleep(self.options.poll_interval - elapsed);
            }
        }
        self.shutdown();
        Ok(())
    }

    /// Stops every master (SIGTERM, then SIGKILL after a grace period).
    pub fn shutdown(&mut self) {
        let running: Vec<Ordinal> = self.supervisor.processes.keys().copied().collect();
        self.note(format!("stopping {} master(s)", running.len()));
        self.supervisor.stop_all(&running, STOP_GRACE);
        self.note("stopped; start again on the same --state-dir to resume".into());
    }

    /// Reads the spec file if its content changed.
    fn poll_spec(&mut self) -> anyhow::Result<()> {
        let Some(path) = self.options.spec_file.clone() else {
            return Ok(());
        };
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => {
                let reason = format!("cannot read {}: {error}", path.display());
                if self.spec_error.as_deref() != Some(&reason) {
                    self.note(format!("spec: {reason}; nothing changed"));
                }
                self.spec_error = Some(reason);
                self.spec_text = None;
                return Ok(());
            }
        };
        if self.spec_text.as_deref() == Some(&text) {
            return Ok(());
        }
        self.spec_text = Some(text.clone());
        match parse_cluster(&text) {
            Err(reason) => {
                self.note(format!(
                    "spec {}: {reason}; nothing changed",
                    path.display()
                ));
                self.spec_error = Some(reason);
            }
            Ok(cluster) => {
                self.spec_error = None;
                if cluster.spec != self.cluster.spec
                    || cluster.metadata.name != self.cluster.metadata.name
                {
                    self.generation += 1;
                    self.note(format!(
                        "spec: {} replicas (quorum {})",
                        cluster.spec.replicas,
                        cluster.spec.target_quorum()
                    ));
                    self.cluster = cluster;
                    write_atomically(&self.options.state_dir.join("spec.yaml"), text.as_bytes())?;
                } else if self.generation == 0 {
                    self.generation = 1;
                }
            }
        }
        Ok(())
    }

    /// Restarts members whose process exited (the kubelet's part).
    fn supervise(&mut self) -> anyhow::Result<()> {
        for ordinal in 0..MAX_REPLICAS as Ordinal {
            let Some(flags) = self.layout().read_flags(ordinal)? else {
                continue;
            };
            if self.memory.removing.contains(&ordinal) || self.supervisor.alive(ordinal) {
                continue;
            }
            // A lost volume is never started again: the planner fences the member.
            if !self.layout().volume_marked(ordinal) || !self.supervisor.may_start(ordinal) {
                continue;
            }
            self.supervisor.start(ordinal)?;
            let pid = self.supervisor.pid(ordinal).unwrap_or_default();
            self.note(format!(
                "started member {ordinal} (pid {pid}) with {}",
                flags.config
            ));
        }
        Ok(())
    }

    fn observe(&mut self) -> anyhow::Result<Observed> {
        let mut members = Vec::new();
        let mut snapshots = BTreeMap::new();
        let mut elected = Vec::new();
        for ordinal in 0..MAX_REPLICAS as Ordinal {
            let flags = self.layout().read_flags(ordinal)?;
            let work_dir = self.layout().work_dir(ordinal);
            let volume = if self.layout().volume_marked(ordinal) {
                VolumeState::Present
            } else if flags.is_some() || work_dir.exists() {
                VolumeState::Lost
            } else {
                VolumeState::Absent
            };
            let alive = self.supervisor.alive(ordinal);
            let status = if alive {
                self.block_on(
                    self.client
                        .log_status(MemberTarget::at(self.layout().address(ordinal))),
                )
                .ok()
            } else {
                None
            };
            if flags.is_none() && volume == VolumeState::Absent && !alive {
                continue;
            }
            let replica = status.as_ref().map(|status| ReplicaView {
                status: match status.status {
                    api::ReplicaStatus::Empty => ReplicaStatus::Empty,
                    api::ReplicaStatus::Starting => ReplicaStatus::Starting,
                    api::ReplicaStatus::Recovering => ReplicaStatus::Recovering,
                    api::ReplicaStatus::Voting => ReplicaStatus::Voting,
                },
                log_end_position: status.end,
            });
            if status.as_ref().is_some_and(|status| status.elected) {
                elected.push(ordinal);
            }
            let pod = match &flags {
                Some(flags) => Some(PodView {
                    config: flags.config.clone(),
                    terminating: false,
                    ready: replica.is_some_and(|r| r.status == ReplicaStatus::Voting),
                    replica,
                }),
                // A process without flags is a member being removed.
                None if alive => Some(PodView {
                    config: status
                        .as_ref()
                        .map(|status| self.config_from_status(status))
                        .unwrap_or_else(|| MemberConfig::ensemble(1)),
                    terminating: true,
                    ready: false,
                    replica,
                }),
                None => None,
            };
            members.push(ObservedMember {
                ordinal,
                pod,
                volume,
            });
            snapshots.insert(
                ordinal,
                MemberSnapshot {
                    pid: self.supervisor.pid(ordinal),
                    flags,
                    status,
                },
            );
        }
        self.snapshots = snapshots;
        Ok(Observed {
            cluster_name: self.name(),
            members,
            leader: (elected.len() == 1).then(|| elected[0]),
            memory: self.memory.clone(),
        })
    }

    fn config_from_status(&self, status: &LogStatus) -> MemberConfig {
        MemberConfig {
            quorum: status.quorum as u32,
            whitelist: status
                .masters
                .iter()
                .filter_map(|address| match address.ip() {
                    std::net::IpAddr::V4(ip) if ip.octets()[..3] == [127, 0, 0] => {
                        Some(ip.octets()[3] as Ordinal - 1)
                    }
                    _ => None,
                })
                .collect(),
        }
    }

    /// One pass: observe, decide, persist memory, apply one step, record status.
    pub fn tick(&mut self) -> anyhow::Result<()> {
        self.blocked = None;
        self.poll_spec()?;
        self.supervise()?;
        let observed = self.observe()?;
        // Quorum lost, or a recovery under way: the planner is held (issue #11).
        if self.recovery_tick(&observed)? {
            // `status::derive` shows the hold's phase and reason over this wait.
            let step = Step::Wait {
                reason: "held: quorum lost or a recovery under way".into(),
            };
            return self.write_status(&step, &observed);
        }
        let spec = self.cluster.spec.clone();
        let Decision { step, memory } = planner::decide(&spec, &observed);
        // Write-ahead: the planner's memory is durable before its step is applied.
        if memory != self.memory {
            self.memory = memory;
            self.write_status(&step, &observed)?;
        }
        let applied = if step.is_action() {
            let description = step.describe(&self.name());
            self.append_event(&description)?;
            let number = status::next_transition(
                self.status.transition.as_ref(),
                0,
                spec.replicas,
                &step,
                None,
                &self.name(),
            )
            .and_then(|transition| transition.current_step)
            .map(|number| format!("step {number}: "))
            .unwrap_or_default();
            self.note(format!("{number}{description}"));
            match self.apply(&step) {
                Ok(()) => {
                    self.last_error = None;
                    true
                }
                Err(error) => {
                    self.note(format!("{description} failed: {error:#}"));
                    // As the Kubernetes reconcile reports a step it could not
                    // apply: the step is blocked, and is tried again next tick.
                    self.blocked = Some(format!("{error:#}"));
                    false
                }
            }
        } else {
            false
        };
        if step != self.last_step {
            if let Step::Failed { reason } = &step {
                self.note(format!("planner refuses to act: {reason}"));
            }
        }
        if step == Step::Done {
            // As on Kubernetes (the reconcile fails and is retried): said in the
            // log, not in status, and tried again next tick.
            if let Err(error) = self.finish_registry_transfer(&observed) {
                let text = format!("{error:#}");
                if self.last_error.as_deref() != Some(&text) {
                    self.note(text.clone());
                }
                self.last_error = Some(text);
            }
        }
        self.last_step = step.clone();
        // Re-observe after an action so status shows its effect's beginning.
        let observed = if applied { self.observe()? } else { observed };
        self.day2_tick(&step, &observed)?;
        self.write_status(&step, &observed)
    }

    /// Issue #11's requests, after the planner's step: the restore at creation
    /// first (before a backup could record the empty registry), then backups and
    /// restart requests.
    fn day2_tick(&mut self, step: &Step, observed: &Observed) -> anyhow::Result<()> {
        self.restore_at_creation(step, observed);
        self.scheduled_backup(observed);
        self.honour_restart_request(step, observed)
    }

    fn append_event(&self, description: &str) -> anyhow::Result<()> {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.options.state_dir.join("events.log"))?;
        writeln!(file, "{}\t{description}", now_ms())?;
        Ok(())
    }

    fn flags_for(&self, ordinal: Ordinal, config: &MemberConfig, wipe: bool) -> MemberFlags {
        MemberFlags {
            ordinal,
            config: config.clone(),
            wipe_pending: wipe,
            args: self
                .layout()
                .args(ordinal, config, &self.options.master_args),
        }
    }

    fn export_file(&self) -> PathBuf {
        self.options.state_dir.join("registry-export.json")
    }

    fn seal_marker(&self) -> PathBuf {
        self.options.state_dir.join("registry-sealed")
    }

    /// Once a transition is done, a registry transfer is over, whether its import
    /// ran or the spec went back to one master after the seal: the leader is
    /// unsealed (a no-op on an imported registry, which is never sealed) and only
    /// then the export dropped, so a crash in between just unseals again.
    fn finish_registry_transfer(&mut self, observed: &Observed) -> anyhow::Result<()> {
        if !self.seal_marker().exists() && !self.export_file().exists() {
            return Ok(());
        }
        let Some(leader) = observed.leader else {
            return Ok(());
        };
        let leader = MemberTarget::at(self.layout().address(leader));
        self.block_on(self.client.unseal_registry(leader, Redirect::FollowOnce))
            .context("unsealing the registry after the transfer")?;
        for file in [self.export_file(), self.seal_marker()] {
            match fs::remove_file(&file) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error).context(format!("removing {}", file.display())),
            }
        }
        self.note("registry transfer finished: leader unsealed, export removed".into());
        Ok(())
    }

    fn apply(&mut self, step: &Step) -> anyhow::Result<()> {
        match step {
            Step::RestartMember { member, config } => {
                let flags = self.flags_for(*member, config, false);
                self.layout().write_flags(&flags)?;
                self.supervisor.stop(*member, STOP_GRACE);
                self.supervisor.start(*member)?;
            }
            Step::CreateMember { member, config } => {
                if !self.layout().volume_marked(*member) {
                    // A fresh, empty volume (nothing of an old one survives).
                    let _ = fs::remove_dir_all(self.layout().work_dir(*member));
                    self.layout().create_volume(*member)?;
                }
                let flags = self.flags_for(*member, config, false);
                self.layout().write_flags(&flags)?;
                self.supervisor.start(*member)?;
            }
            Step::RemoveMember { member, .. } => {
                // The pod first (flags gone: nothing restarts it), then the volume.
                let _ = fs::remove_file(self.layout().flags_file(*member));
                self.supervisor.stop(*member, STOP_GRACE);
                let dir = self.layout().member_dir(*member);
                match fs::remove_dir_all(&dir) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(error).context(format!("removing {}", dir.display())),
                }
            }
            Step::WipeMember { member, config, .. } => {
                // The new flags say "wipe first": whatever happens next, the new
                // configuration never starts on the old log.
                let flags = self.flags_for(*member, config, true);
                self.layout().write_flags(&flags)?;
                self.supervisor.stop(*member, STOP_GRACE);
                self.supervisor.start(*member)?;
            }
            Step::ExportRegistry { from } => {
                // Recorded before the seal: if we crash before the export is on
                // disk, whoever finishes the transition knows a seal may stand.
                write_atomically(&self.seal_marker(), b"")?;
                let from = MemberTarget::at(self.layout().address(*from));
                let document =
                    self.block_on(self.client.seal_registry(from, Redirect::FollowOnce))?;
                // Durable before the memory says Exported.
                write_atomically(&self.export_file(), &document)?;
                self.memory = self.memory.after_success(step);
            }
            Step::ImportRegistry { into } => {
                let document = fs::read(self.export_file()).with_context(|| {
                    format!(
                        "reading the registry export {}",
                        self.export_file().display()
                    )
                })?;
                let into = MemberTarget::at(self.layout().address(*into));
                let imported = self.block_on(self.client.import_registry(
                    into,
                    document,
                    Redirect::FollowOnce,
                ))?;
                if imported == ImportOutcome::AlreadyHeldData {
                    self.note("the registry already held data (409): left as it is".into());
                }
                self.memory = self.memory.after_success(step);
            }
            Step::Wait { .. } | Step::Done | Step::Failed { .. } => {}
        }
        Ok(())
    }

    /// The status this tick would write: the local shell's view through
    /// `status::derive`, from the status written last.
    fn derive_status(&self, step: &Step, observed: &Observed) -> MesosMasterClusterStatus {
        let name = self.name();
        let export_size_bytes = fs::metadata(self.export_file())
            .ok()
            .map(|metadata| metadata.len() as usize);
        let input = status_input(LocalView {
            cluster_name: &name,
            spec: &self.cluster.spec,
            generation: self.generation,
            observed,
            base_port: self.options.base_port,
            export_size_bytes,
            spec_rejected: self.spec_error.clone(),
            day2: Day2 {
                backup: self.backup_status.clone(),
                restore: self.restore_status.clone(),
                recovery: self.recovery.record.clone(),
                hold: self.recovery.hold.clone(),
                member_restart: self.restart_report.clone(),
            },
        });
        status::derive(
            &input,
            Decided {
                step,
                blocked: self.blocked.as_deref(),
            },
            self.memory.clone(),
            &self.status,
            Time(k8s_openapi::jiff::Timestamp::now()),
        )
    }

    /// A note when a transition begins or ends (status holds its lines).
    fn note_transition(
        &mut self,
        before: Option<&TransitionStatus>,
        after: Option<&TransitionStatus>,
    ) {
        let active = |t: Option<&TransitionStatus>| {
            t.filter(|t| t.current_step.is_some())
                .map(|t| (t.from, t.to))
        };
        match (active(before), active(after), after) {
            (was, Some((from, to)), _) if was != Some((from, to)) => {
                self.transition_started = Some(Instant::now());
                self.note(format!("transition {from} -> {to} begins"));
            }
            (Some((from, to)), None, Some(done)) => {
                let took = self.transition_started.take().unwrap_or(self.started);
                self.note(format!(
                    "transition {from} -> {to} done in {:.1}s, {} step(s)",
                    took.elapsed().as_secs_f64(),
                    done.steps.len()
                ));
            }
            _ => {}
        }
    }

    fn write_status(&mut self, step: &Step, observed: &Observed) -> anyhow::Result<()> {
        let status = self.derive_status(step, observed);
        let before = self.status.transition.clone();
        self.note_transition(before.as_ref(), status.transition.as_ref());
        if status != self.status || !self.status_path().exists() {
            write_atomically(
                &self.status_path(),
                serde_yaml::to_string(&status)?.as_bytes(),
            )?;
            self.status = status;
        }
        Ok(())
    }

    fn status_path(&self) -> PathBuf {
        self.options.state_dir.join("status.yaml")
    }

    /// The live view, as ANSI text that redraws the terminal.
    pub fn render(&self) -> String {
        render::render(&render::Frame {
            name: &self.name(),
            state_dir: &self.options.state_dir,
            uptime: self.started.elapsed(),
            spec_replicas: self.cluster.spec.replicas,
            status: &self.status,
            members: &self
                .snapshots
                .iter()
                .map(|(ordinal, s)| render::MemberRow {
                    ordinal: *ordinal,
                    address: self.layout().address(*ordinal),
                    pid: s.pid,
                    config: s.flags.as_ref().map(|f| f.config.clone()),
                    status: s.status.clone(),
                })
                .collect::<Vec<_>>(),
            notes: &self.notes,
        })
    }
}

/// What the local shell hands `status_input`: one tick's observation and the
/// runtime's own state.
pub(crate) struct LocalView<'a> {
    pub cluster_name: &'a str,
    pub spec: &'a MesosMasterClusterSpec,
    pub generation: i64,
    pub observed: &'a Observed,
    pub base_port: u16,
    /// `registry-export.json`'s size, while it exists.
    pub export_size_bytes: Option<usize>,
    pub spec_rejected: Option<String>,
    pub day2: Day2,
}

/// The local shell's view of one tick, for `status::derive`. Pure.
pub(crate) fn status_input(view: LocalView) -> StatusInput {
    StatusInput {
        cluster_name: view.cluster_name,
        spec: view.spec,
        generation: Some(view.generation),
        observed: view.observed,
        addresses: view
            .observed
            .members
            .iter()
            .map(|member| {
                (
                    member.ordinal,
                    members::member_address(view.base_port, member.ordinal),
                )
            })
            .collect(),
        // Local members are directories: no volume template, no size or class
        // that could differ from spec.storage.
        storage: Storage::NoTemplates,
        registry_export: view.export_size_bytes.map(|size_bytes| RegistryExport {
            size_bytes,
            kept_in: "registry-export.json in the state directory".to_string(),
            // An import that finds data answers 409 and the export is dropped at
            // once (`finish_registry_transfer`): never kept unimported.
            import_skipped: None,
        }),
        spec_rejected: view.spec_rejected,
        day2: view.day2,
    }
}

/// Runs `mesos-operator local` until SIGINT or SIGTERM.
pub fn run(options: LocalOptions) -> anyhow::Result<()> {
    if !options.master_binary.exists() {
        anyhow::bail!(
            "no mesos-master at {} (build it, or pass --master-binary)",
            options.master_binary.display()
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    spawn_signal_watcher(stop.clone())?;
    let mut runtime = LocalRuntime::new(options)?;
    runtime.run(&stop)
}

/// Sets `stop` on SIGINT or SIGTERM.
fn spawn_signal_watcher(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let mut term = signal(SignalKind::terminate()).ok();
                let terminated = async {
                    match term.as_mut() {
                        Some(term) => {
                            term.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminated => {}
                }
            });
            stop.store(true, Ordering::SeqCst);
        })?;
    Ok(())
}
