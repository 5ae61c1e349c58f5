//! The thin shell around the pure core: one tokio task owns the [`Node`], feeds it
//! ticks, inbound frames and client appends, and carries out each [`Ready`] in the
//! order the core demands: persist durably, then send, then hand learned entries
//! to the application and outcomes to clients.
//!
//! A `Ready`'s `send_now` and `outcomes_now` leave before its `persist` is
//! written (they depend on nothing in it); the node is stepped again only after
//! the persist completed, which is how it knows its own accepts are durable.
//!
//! Group commit comes from the loop's shape: while one batch is being made durable,
//! inputs queue up; the next round drains them all (bounded) before asking the
//! node for its next `Ready`, so many appends share one fdatasync.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::durable::WalStorage;
use super::message::Envelope;
use super::node::{Node, NodeEvent, ProposalOutcome, ProposeError};
use super::tcp::{InboundFrame, LinkConfig, LinkCounters, PeerSender, LOG_ID_NOTICE};
use super::types::{Action, LogId, MemberId, Position, ReplicaStatus};

/// At most one log id notice per member this often: a stray keeps sending (and is
/// refused) at its heartbeat rate, it needs to hear our log id only now and then.
const LOG_ID_NOTICE_INTERVAL: Duration = Duration::from_secs(1);

/// Inputs drained per round before the node's output is persisted: large enough to
/// batch a burst of concurrent appends into one fsync, small enough that ticks
/// are never starved.
pub const MAX_INPUTS_PER_ROUND: usize = 1024;
/// Client appends waiting for their outcome; beyond this an append fails with
/// [`AppendError::Busy`] instead of growing memory without bound.
pub const MAX_PENDING_APPENDS: usize = 16 * 1024;
/// Commands queued for the driver task.
pub const COMMAND_QUEUE_CAPACITY: usize = 4096;
/// Learned entries queued for the application; the driver waits when it is full,
/// which slows the log to the pace the application applies at.
pub const LEARNED_QUEUE_CAPACITY: usize = 4096;
/// Entries one [`LogHandle::read_learned`] returns at most, so a read of a huge
/// range cannot stall the loop or blow up a response.
pub const MAX_READ_ENTRIES: u64 = 10_000;
/// Inbound frames queued between the connections and the driver.
pub const INBOUND_QUEUE_CAPACITY: usize = 8192;
/// A persist or a gap between ticks longer than this is logged as a warning: it
/// is how long the loop sent nothing (no heartbeat either), and a few of them in
/// a row are what lets a follower's election timer run out under a live leader.
const SLOW_LOOP_WARNING: Duration = Duration::from_millis(200);

/// Why an append did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("this member does not lead the log (leader: {leader:?})")]
    NotLeader { leader: Option<MemberId> },
    /// The leader was deposed before the entry was learned: it may still be chosen.
    #[error("outcome unknown: the leader was deposed before the entry was learned")]
    Unknown,
    #[error("too many appends pending")]
    Busy,
    #[error("the log driver has stopped")]
    Stopped,
}

impl From<ProposeError> for AppendError {
    fn from(error: ProposeError) -> Self {
        match error {
            ProposeError::NotLeader { leader } => AppendError::NotLeader { leader },
            ProposeError::Demoted => AppendError::Unknown,
            ProposeError::Busy => AppendError::Busy,
        }
    }
}

/// What the application receives, in position order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Learned {
        position: Position,
        action: Action,
    },
    /// Positions below this were truncated before they reached the application:
    /// it must restore from a snapshot entry at or after it.
    SkippedTo(Position),
}

/// The member's log as the master reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogState {
    pub status: ReplicaStatus,
    pub log_id: Option<LogId>,
    pub begin: Position,
    pub end: Position,
    pub learned_end: Position,
    pub leader: Option<MemberId>,
    pub elected: bool,
    pub read_lease: bool,
}

impl LogState {
    fn of(node: &Node) -> LogState {
        LogState {
            status: node.status(),
            log_id: node.log_id(),
            begin: node.begin(),
            end: node.end(),
            learned_end: node.learned_end(),
            leader: node.leader().cloned(),
            elected: node.is_leader(),
            read_lease: node.has_read_lease(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The node's memory is ahead of its disk: the only safe move is to stop.
    #[error("cannot persist the log: {0}")]
    Persist(String),
}

enum Command {
    Append {
        action: Action,
        reply: oneshot::Sender<Result<Position, AppendError>>,
    },
    Read {
        from: Position,
        to: Position,
        reply: oneshot::Sender<Vec<(Position, Action)>>,
    },
    Stop,
}

/// How the driver reaches its peers and its clock.
pub struct DriverOptions {
    pub tick_interval: Duration,
}

/// A cloneable handle to a running driver.
#[derive(Clone)]
pub struct LogHandle {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<LogState>,
}

impl LogHandle {
    /// Appends `data`; resolves with its position once it is learned (chosen by a
    /// quorum and durable here).
    pub async fn append(&self, data: impl Into<bytes::Bytes>) -> Result<Position, AppendError> {
        self.submit(Action::Append(data.into())).await
    }

    /// Proposes dropping every position below `to` once learned.
    pub async fn truncate(&self, to: Position) -> Result<Position, AppendError> {
        self.submit(Action::Truncate { to }).await
    }

    /// Queues `action` now, in call order (callers that must order their entries,
    /// like the registrar, rely on it), and returns a future of its outcome. A full
    /// command queue fails at once with [`AppendError::Busy`].
    pub fn submit_now(
        &self,
        action: Action,
    ) -> impl std::future::Future<Output = Result<Position, AppendError>> + Send + 'static {
        let (reply, outcome) = oneshot::channel();
        let queued = match self.commands.try_send(Command::Append { action, reply }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(AppendError::Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(AppendError::Stopped),
        };
        async move {
            queued?;
            outcome.await.map_err(|_| AppendError::Stopped)?
        }
    }

    async fn submit(&self, action: Action) -> Result<Position, AppendError> {
        let (reply, outcome) = oneshot::channel();
        self.commands
            .send(Command::Append { action, reply })
            .await
            .map_err(|_| AppendError::Stopped)?;
        outcome.await.map_err(|_| AppendError::Stopped)?
    }

    /// Learned entries in `[from, to)` held by this member, at most
    /// [`MAX_READ_ENTRIES`] of them.
    pub async fn read_learned(
        &self,
        from: Position,
        to: Position,
    ) -> Result<Vec<(Position, Action)>, AppendError> {
        let (reply, entries) = oneshot::channel();
        let to = to.min(from.saturating_add(MAX_READ_ENTRIES));
        self.commands
            .send(Command::Read { from, to, reply })
            .await
            .map_err(|_| AppendError::Stopped)?;
        entries.await.map_err(|_| AppendError::Stopped)
    }

    pub fn state(&self) -> LogState {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<LogState> {
        self.state.clone()
    }

    /// Asks the driver to stop after the round in progress.
    pub async fn stop(&self) {
        let _ = self.commands.send(Command::Stop).await;
    }
}

/// A started driver: its handle, the application's delivery queue, and the task.
pub struct Running {
    pub handle: LogHandle,
    pub deliveries: mpsc::Receiver<Delivery>,
    pub task: JoinHandle<Result<(), DriverError>>,
}

/// Starts the driver task for `node`, whose durable state came from `storage`.
/// `inbound` carries authenticated frames from [`crate::log::tcp::serve_replica`].
pub fn spawn(
    node: Node,
    storage: WalStorage,
    link: Arc<LinkConfig>,
    counters: Arc<LinkCounters>,
    inbound: mpsc::Receiver<InboundFrame>,
    options: DriverOptions,
) -> Running {
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
    let (deliveries_tx, deliveries) = mpsc::channel(LEARNED_QUEUE_CAPACITY);
    let (state_tx, state) = watch::channel(LogState::of(&node));
    let heartbeat_ticks = node.config().heartbeat_interval_ticks;
    let peers = node
        .config()
        .members
        .iter()
        .filter(|m| *m != node.id())
        .map(|m| {
            (
                m.clone(),
                PeerSender::spawn(m.0.clone(), link.clone(), counters.clone()),
            )
        })
        .collect();
    let driver = Driver {
        node,
        storage,
        link,
        counters,
        peers,
        pending: HashMap::new(),
        last_notice: HashMap::new(),
        loopback: Vec::new(),
        deliveries: deliveries_tx,
        state: state_tx,
        heartbeat_interval: options.tick_interval
            * u32::try_from(heartbeat_ticks.max(1)).unwrap_or(u32::MAX),
    };
    let task = tokio::spawn(driver.run(commands, inbound, options));
    Running {
        handle: LogHandle {
            commands: commands_tx,
            state,
        },
        deliveries,
        task,
    }
}

struct Driver {
    node: Node,
    storage: WalStorage,
    link: Arc<LinkConfig>,
    counters: Arc<LinkCounters>,
    peers: BTreeMap<MemberId, PeerSender>,
    pending: HashMap<u64, oneshot::Sender<Result<Position, AppendError>>>,
    /// When each member was last sent a log id notice, to send at most one per
    /// [`LOG_ID_NOTICE_INTERVAL`] whatever a stray sends us.
    last_notice: HashMap<String, tokio::time::Instant>,
    /// Messages the node addressed to itself, stepped in the next round.
    loopback: Vec<Envelope>,
    deliveries: mpsc::Sender<Delivery>,
    state: watch::Sender<LogState>,
    /// The node's heartbeat interval in wall time, for [`keep_alive_during`].
    heartbeat_interval: Duration,
}

enum Input {
    Tick,
    Command(Command),
    Frame(InboundFrame),
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<InboundFrame>,
        options: DriverOptions,
    ) -> Result<(), DriverError> {
        let mut ticker = tokio::time::interval(options.tick_interval);
        // Burst: ticks missed while a slow fsync held the loop are delivered at
        // once, so the node's tick count keeps pace with real time. Falling behind
        // would stretch a leader's read lease past what followers grant.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut last_tick = tokio::time::Instant::now();
        loop {
            let first = tokio::select! {
                _ = ticker.tick() => {
                    let now = tokio::time::Instant::now();
                    let gap = now.duration_since(last_tick);
                    last_tick = now;
                    if gap >= SLOW_LOOP_WARNING.max(4 * options.tick_interval) {
                        tracing::warn!(gap_ms = gap.as_millis() as u64, "the log loop went this long without a tick (a slow persist or a starved thread); its ticks catch up now");
                    }
                    Input::Tick
                }
                command = commands.recv() => match command {
                    Some(command) => Input::Command(command),
                    None => return Ok(()),
                },
                Some(frame) = inbound.recv() => Input::Frame(frame),
            };
            if !self.handle(first) {
                return Ok(());
            }
            for _ in 0..MAX_INPUTS_PER_ROUND {
                let next = if let Ok(frame) = inbound.try_recv() {
                    Input::Frame(frame)
                } else if let Ok(command) = commands.try_recv() {
                    Input::Command(command)
                } else {
                    break;
                };
                if !self.handle(next) {
                    return Ok(());
                }
            }
            self.flush().await?;
        }
    }

    /// Steps one input into the node; false when asked to stop.
    fn handle(&mut self, input: Input) -> bool {
        match input {
            Input::Tick => {
                self.node.tick();
                self.send_owed_notices();
                super::buffers::release_idle_spares();
            }
            Input::Frame(frame) => self.step_frame(frame),
            Input::Command(Command::Stop) => return false,
            Input::Command(Command::Read { from, to, reply }) => {
                let _ = reply.send(self.node.learned_entries(from, to));
            }
            Input::Command(Command::Append { action, reply }) => {
                if self.pending.len() >= MAX_PENDING_APPENDS {
                    let _ = reply.send(Err(AppendError::Busy));
                } else {
                    let ticket = match action {
                        Action::Truncate { to } => self.node.propose_truncate(to),
                        Action::Append(data) => self.node.propose(data),
                        // Nop is the coordinator's filler, never a client's.
                        Action::Nop => {
                            let _ = reply.send(Err(AppendError::Busy));
                            return true;
                        }
                    };
                    self.pending.insert(ticket, reply);
                }
            }
        }
        true
    }

    /// Tells members refused for another log id which log we are on (see
    /// [`crate::log::tcp::ForeignLogReports`]), so a stray learns it even from
    /// members that have nothing else to send it.
    fn send_owed_notices(&mut self) {
        let now = tokio::time::Instant::now();
        for member in self.counters.foreign_logs.take_owed_notices() {
            let due = self
                .last_notice
                .get(&member)
                .is_none_or(|last| now.duration_since(*last) >= LOG_ID_NOTICE_INTERVAL);
            let Some(peer) = self.peers.get(&MemberId::new(member.clone())) else {
                continue;
            };
            if due && peer.send(LOG_ID_NOTICE.to_vec()) {
                self.last_notice.insert(member, now);
            }
        }
    }

    fn step_frame(&mut self, frame: InboundFrame) {
        let envelope = match super::types::decode_sharing::<Envelope>(&frame.payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.counters
                    .malformed_frames
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(sender = %frame.sender, %error, "undecodable replica message dropped");
                return;
            }
        };
        // The frame's sender is authenticated by the MAC; the envelope's is not.
        if envelope.from.0 != frame.sender {
            self.counters
                .malformed_frames
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(sender = %frame.sender, claimed = %envelope.from, "replica message names another sender; dropped");
            return;
        }
        self.node.step(envelope);
    }

    /// Carries out everything the node has ready, in the required order.
    async fn flush(&mut self) -> Result<(), DriverError> {
        loop {
            for envelope in std::mem::take(&mut self.loopback) {
                self.node.step(envelope);
            }
            if !self.node.has_ready() {
                break;
            }
            let ready = self.node.ready();
            // 0. What depends on nothing in this batch leaves at once: the leader's
            // accept requests (the followers write while we write) and answers
            // for values already chosen by durable accepts.
            for envelope in ready.send_now {
                self.send(envelope);
            }
            self.answer(ready.outcomes_now);
            // 1. Durable first: votes, promises and acknowledgements depend on it.
            let persist_started = std::time::Instant::now();
            let persist = self.storage.apply_async(&ready.persist);
            keep_alive_during(
                persist,
                &mut self.node,
                &self.peers,
                self.heartbeat_interval,
            )
            .await
            .map_err(|e| DriverError::Persist(e.to_string()))?;
            let took = persist_started.elapsed();
            if took >= SLOW_LOOP_WARNING {
                tracing::warn!(
                    took_ms = took.as_millis() as u64,
                    ops = ready.persist.len(),
                    "slow persist: the log loop waited this long for its write and fdatasync"
                );
            }
            if let Some(log_id) = self.node.log_id() {
                self.link.log_id.store(log_id.0, Ordering::Relaxed);
            }
            // 2. Then send.
            for envelope in ready.messages {
                self.send(envelope);
            }
            for event in &ready.events {
                log_event(event);
                if let NodeEvent::SkippedTo(position) = event {
                    self.deliver(Delivery::SkippedTo(*position)).await;
                }
            }
            // 3. Then the application and the clients.
            for (position, action) in ready.learned {
                self.deliver(Delivery::Learned { position, action }).await;
            }
            self.answer(ready.outcomes);
        }
        let now = LogState::of(&self.node);
        self.state.send_if_modified(|state| {
            let changed = *state != now;
            *state = now;
            changed
        });
        Ok(())
    }

    fn send(&mut self, envelope: Envelope) {
        if &envelope.to == self.node.id() {
            self.loopback.push(envelope);
            return;
        }
        send_to_peer(&self.peers, envelope);
    }

    fn answer(&mut self, outcomes: Vec<ProposalOutcome>) {
        for outcome in outcomes {
            if let Some(reply) = self.pending.remove(&outcome.ticket) {
                let _ = reply.send(outcome.result.map_err(AppendError::from));
            }
        }
    }

    async fn deliver(&self, delivery: Delivery) {
        // A closed receiver means the application does not consume entries (a
        // bare log); the log itself carries on.
        let _ = self.deliveries.send(delivery).await;
    }
}

fn send_to_peer(peers: &BTreeMap<MemberId, PeerSender>, envelope: Envelope) {
    let Some(peer) = peers.get(&envelope.to) else {
        return;
    };
    // Exact-size: a catch-up answer or accept batch is MiBs, which to_allocvec
    // would copy through every doubling of its buffer.
    match super::types::encode_exact(&envelope) {
        Ok(payload) => {
            peer.send(payload);
        }
        Err(error) => tracing::error!(%error, "cannot encode a replica message"),
    }
}

/// Awaits `persist`; if it outlasts a heartbeat interval, a leader sends a
/// heartbeat round every interval until it completes ([`Node::keepalive`]). A
/// fdatasync of half a second on a shared disk would otherwise let the
/// followers' election timers run out under a live leader.
async fn keep_alive_during<F, T>(
    persist: F,
    node: &mut Node,
    peers: &BTreeMap<MemberId, PeerSender>,
    interval: Duration,
) -> T
where
    F: std::future::Future<Output = T>,
{
    tokio::pin!(persist);
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            done = &mut persist => return done,
            _ = heartbeat.tick() => {
                let sent = node.keepalive();
                if !sent.is_empty() {
                    tracing::debug!(peers = sent.len(), "persist still running: heartbeats sent from the wait");
                }
                for envelope in sent {
                    send_to_peer(peers, envelope);
                }
            }
        }
    }
}

fn log_event(event: &NodeEvent) {
    match event {
        NodeEvent::BecameLeader(proposal) => {
            tracing::info!(round = proposal.round, "elected: this member leads the log")
        }
        NodeEvent::Demoted => tracing::info!("demoted: another member leads the log"),
        NodeEvent::Campaigning {
            round,
            ticks_since_leader_contact,
            last_leader,
        } => tracing::info!(
            round,
            ticks_since_leader_contact,
            last_leader = ?last_leader,
            "election timeout: asking for promises"
        ),
        NodeEvent::Initialized(log_id) => tracing::info!(%log_id, "initialized a new log"),
        NodeEvent::Adopted(log_id) => tracing::info!(%log_id, "joined the new log"),
        NodeEvent::RecoveryStarted(log_id) => {
            tracing::info!(%log_id, "recovering: catching up before voting")
        }
        NodeEvent::Recovered => tracing::info!("recovered: voting"),
        NodeEvent::Starting => tracing::info!("every member is empty: auto-initializing"),
        other => tracing::debug!(event = ?other, "log event"),
    }
}

/// Fresh entropy for a node's seed without another dependency: std's hasher keys
/// come from the OS, and the process id and clock separate restarts.
pub fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(since_epoch) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since_epoch.as_nanos());
    }
    hasher.finish()
}
