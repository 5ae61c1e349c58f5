//! One member: a replica, an optional coordinator (leader or recovery), election
//! timers and the status probe. This is the API a driver uses; see the module
//! docs of [`crate::log`] for the loop.

use serde::{Deserialize, Serialize};

use super::coordinator::{Coordinator, Effects, Mode, Phase, Signal, MAX_REPLY_BYTES};
use super::message::{Envelope, Message, PromiseOutcome, ReadReply};
use super::quorum::quorums_intersect;
use super::recovery::{decide, Decision, Incarnations, PeerStatus, Probe, MAX_CATCHUP_ENTRIES};
use super::replica::{Replica, VoteRefusal};
use super::types::{
    Action, DurableState, LogId, MemberId, PersistOp, Position, Proposal, ReplicaStatus, SplitMix64,
};

/// Default election timeout range in ticks. With a 100 ms tick: 1–2 s, the
/// range etcd uses, wide enough that two followers rarely campaign together.
pub const DEFAULT_ELECTION_TIMEOUT_MIN_TICKS: u64 = 10;
pub const DEFAULT_ELECTION_TIMEOUT_MAX_TICKS: u64 = 20;
/// Heartbeat every 2 ticks: several heartbeats per minimum election timeout, so
/// one or two lost heartbeats never trigger an election.
pub const DEFAULT_HEARTBEAT_INTERVAL_TICKS: u64 = 2;
/// Lease length in ticks; must stay below the minimum election timeout (the
/// margin covers clock-rate drift between members).
pub const DEFAULT_LEASE_TICKS: u64 = 7;
/// A non-voting replica re-probes its peers this often.
pub const DEFAULT_STATUS_RETRY_TICKS: u64 = 5;
/// A recovering replica further behind its most advanced `Voting` peer than this
/// many positions first copies that peer's learned prefix by catch-up, and runs
/// its recovery round only over what is left (see [`RecoveryCatchup`]).
pub const RECOVERY_CATCHUP_MIN_POSITIONS: u64 = 64;
/// Ticks without a catch-up answer after which a recovering replica stops
/// copying and runs its recovery round over whatever is left (the peer may be
/// gone). Generous: one answer carries up to `MAX_REPLY_BYTES` and is written
/// before the next is read, which takes a while on a slow disk or a debug build.
pub const RECOVERY_CATCHUP_STALL_TICKS: u64 = 10;
/// Catch-up requests kept in flight to one peer. With one, the peer reads, encodes
/// and sends the next answer only after this replica asked, which it does when it
/// steps the previous answer: a batch's round trip (measured ~25 ms for 4 MiB on
/// a busy 2-core machine) then sets the pace, not its write (~10 ms). Each answer
/// holds at most `MAX_REPLY_BYTES`, so this bounds the bytes in flight too.
pub const CATCHUP_PIPELINE_DEPTH: usize = 3;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("quorum must be at least 1")]
    ZeroQuorum,
    #[error("quorum {quorum} is larger than the whitelist ({members} members)")]
    QuorumTooLarge { quorum: usize, members: usize },
    #[error("{members} members with quorum {quorum}: quorums may not intersect (need members <= 2*quorum-1)")]
    QuorumsMayNotIntersect { quorum: usize, members: usize },
    #[error("member {0} is not in the whitelist")]
    NotAMember(MemberId),
    #[error("lease ({lease_ticks} ticks) must be shorter than the minimum election timeout ({min_ticks} ticks), and the timeout range non-empty")]
    BadTimers { lease_ticks: u64, min_ticks: u64 },
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: MemberId,
    /// The static whitelist (`--masters`), including `id`.
    pub members: Vec<MemberId>,
    pub quorum: usize,
    /// Mesos `--log_auto_initialize`.
    pub auto_initialize: bool,
    /// Seeds the node's PRNG (election timeouts, log id, nonces). The driver
    /// passes fresh entropy per process start; it is also the incarnation.
    pub seed: u64,
    pub election_timeout_min_ticks: u64,
    pub election_timeout_max_ticks: u64,
    pub heartbeat_interval_ticks: u64,
    pub lease_ticks: u64,
    pub status_retry_ticks: u64,
    /// Hidden knob for the simulator's self-test: learns on one ack (a bug).
    #[doc(hidden)]
    pub planted_minority_learn: bool,
    /// Hidden knob for the simulator's self-test: a wiped replica votes without
    /// recovering (a bug).
    #[doc(hidden)]
    pub planted_recovery_without_fill: bool,
    /// Hidden knob for the simulator's self-test: the learned prefix covers a
    /// lazily learned position whatever value the replica holds there (a bug).
    #[doc(hidden)]
    pub planted_prefix_over_any_value: bool,
}

impl NodeConfig {
    pub fn new(id: MemberId, members: Vec<MemberId>, quorum: usize, seed: u64) -> Self {
        NodeConfig {
            id,
            members,
            quorum,
            auto_initialize: true,
            seed,
            election_timeout_min_ticks: DEFAULT_ELECTION_TIMEOUT_MIN_TICKS,
            election_timeout_max_ticks: DEFAULT_ELECTION_TIMEOUT_MAX_TICKS,
            heartbeat_interval_ticks: DEFAULT_HEARTBEAT_INTERVAL_TICKS,
            lease_ticks: DEFAULT_LEASE_TICKS,
            status_retry_ticks: DEFAULT_STATUS_RETRY_TICKS,
            planted_minority_learn: false,
            planted_recovery_without_fill: false,
            planted_prefix_over_any_value: false,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.members.len();
        if self.quorum == 0 {
            return Err(ConfigError::ZeroQuorum);
        }
        if self.quorum > n {
            return Err(ConfigError::QuorumTooLarge {
                quorum: self.quorum,
                members: n,
            });
        }
        if !quorums_intersect(self.quorum, n) {
            return Err(ConfigError::QuorumsMayNotIntersect {
                quorum: self.quorum,
                members: n,
            });
        }
        if !self.members.contains(&self.id) {
            return Err(ConfigError::NotAMember(self.id.clone()));
        }
        if self.lease_ticks >= self.election_timeout_min_ticks
            || self.election_timeout_max_ticks < self.election_timeout_min_ticks
            || self.heartbeat_interval_ticks == 0
        {
            return Err(ConfigError::BadTimers {
                lease_ticks: self.lease_ticks,
                min_ticks: self.election_timeout_min_ticks,
            });
        }
        Ok(())
    }
}

/// Why a client proposal failed. `Demoted` means the outcome is unknown: the
/// value may still be chosen later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<MemberId> },
    #[error("demoted before the proposal was chosen; it may still be chosen")]
    Demoted,
    #[error("too many proposals pending")]
    Busy,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposalOutcome {
    pub ticket: u64,
    /// The position the value was chosen at.
    pub result: Result<Position, ProposeError>,
}

/// Notable transitions, for logs, metrics and the simulator's checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// `Empty → Starting` (auto-initialization, phase one).
    Starting,
    /// This node originated the log id (auto-initialization, phase two).
    Initialized(LogId),
    /// `Starting → Voting` by adopting a voting member's id.
    Adopted(LogId),
    /// `Empty → Recovering` against this log id.
    RecoveryStarted(LogId),
    /// `Recovering → Voting`.
    Recovered,
    BecameLeader(Proposal),
    /// The election timer ran out: this node asks for promises. Says how long it
    /// last heard from a leader, and which one, so a spurious election can be
    /// told from a dead leader in the logs.
    Campaigning {
        round: u64,
        ticks_since_leader_contact: u64,
        last_leader: Option<MemberId>,
    },
    Demoted,
    /// Delivery jumped to this position: everything below was truncated by the
    /// ensemble before this node learned it (restore from a snapshot entry).
    SkippedTo(Position),
}

/// What the driver must do, in order: send `send_now` and answer `outcomes_now`
/// (they depend on nothing in `persist`, so they may leave while it is being
/// written), persist `persist` durably, then send `messages`, then hand `learned`
/// to the application and `outcomes` to clients.
///
/// The node assumes that the `persist` of one `Ready` is durable before the next
/// input ([`Node::step`], [`Node::tick`], [`Node::propose`]) reaches it: that is how
/// it knows its own accepts are durable when it counts them toward a quorum.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    /// Messages that depend on nothing in `persist` (the leader's accept requests:
    /// its own accept is its own vote, counted only once durable), sent while
    /// `persist` is written so the followers' fsyncs overlap the leader's.
    pub send_now: Vec<Envelope>,
    /// Client outcomes whose value was chosen by a quorum of accepts that were all
    /// durable before this `Ready` (the learned mark is persisted lazily: it can be
    /// derived again from those accepts by the promise/fill path).
    pub outcomes_now: Vec<ProposalOutcome>,
    pub persist: Vec<PersistOp>,
    pub messages: Vec<Envelope>,
    /// Newly learned entries, contiguous, in position order. After a restart the
    /// node delivers again from its truncation point.
    pub learned: Vec<(Position, Action)>,
    pub outcomes: Vec<ProposalOutcome>,
    pub events: Vec<NodeEvent>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.send_now.is_empty()
            && self.outcomes_now.is_empty()
            && self.persist.is_empty()
            && self.messages.is_empty()
            && self.learned.is_empty()
            && self.outcomes.is_empty()
            && self.events.is_empty()
    }
}

/// A recovering replica copying a `Voting` peer's learned prefix before its
/// recovery round. Copying learned values is always safe (they are chosen), needs
/// no promise, and asks one peer rather than a quorum: the round that follows
/// (which is what makes the replica safe to vote, unchanged) then reads and fills
/// only the tail. Before, the round read the whole log from a quorum of peers
/// (every byte twice), and a round that long was outbid by elections and
/// restarted again and again (5 restarts for a 32 MiB log in a bench run).
#[derive(Clone, Debug)]
struct RecoveryCatchup {
    peer: MemberId,
    above_round: u64,
    last_progress_tick: u64,
}

/// Counters of refused input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub refused_non_member: u64,
    pub refused_foreign_log: u64,
    pub refused_uninitialized: u64,
    pub misaddressed: u64,
}

pub struct Node {
    cfg: NodeConfig,
    rng: SplitMix64,
    incarnation: u64,
    replica: Replica,
    now: u64,
    coordinator: Option<Coordinator>,
    probe: Option<Probe>,
    incarnations: Incarnations,
    leader: Option<(MemberId, Proposal)>,
    last_leader_contact_tick: u64,
    /// A recovering member's proposal we promised, and when it last asked us:
    /// while it progresses, candidates are refused so recovery can finish
    /// instead of being outbid forever (a livelock the simulator found).
    recovery_contact: Option<(Proposal, u64)>,
    election_deadline_tick: u64,
    highest_round_seen: u64,
    applied: Position,
    /// When a catch-up request was last sent or answered.
    last_catchup_tick: Option<u64>,
    /// The highest learned end a leader announced: catch-up continues to it.
    catchup_target: Position,
    /// Catch-up requests sent and not answered yet, `[from, to)`, oldest first.
    catchup_outstanding: std::collections::VecDeque<(Position, Position)>,
    /// Where the next catch-up request starts.
    catchup_cursor: Position,
    /// Positions one catch-up request asks for: until an answer shows how many
    /// fit in `MAX_REPLY_BYTES` (`None`), one request at a time is in flight.
    catchup_span: Option<u64>,
    /// Set while a recovering replica copies a peer's learned prefix.
    recovery_catchup: Option<RecoveryCatchup>,
    next_ticket: u64,
    /// Incremented by every [`Node::ready`]: what was pending before the current
    /// epoch began is durable (see [`Ready`]).
    ready_epoch: u64,
    messages_now: Vec<Envelope>,
    outcomes_now: Vec<ProposalOutcome>,
    messages: Vec<Envelope>,
    outcomes: Vec<ProposalOutcome>,
    events: Vec<NodeEvent>,
    counters: Counters,
}

impl Node {
    /// Starts a member from its durable state.
    pub fn new(cfg: NodeConfig, durable: DurableState) -> Result<Node, ConfigError> {
        cfg.validate()?;
        let mut rng = SplitMix64::new(cfg.seed);
        let incarnation = rng.next_u64();
        let mut replica = Replica::from_durable(durable);
        replica.planted_prefix_over_any_value = cfg.planted_prefix_over_any_value;
        let applied = replica.begin();
        let highest_round_seen = replica.promised().map_or(0, |p| p.round);
        let mut node = Node {
            cfg,
            rng,
            incarnation,
            replica,
            now: 0,
            coordinator: None,
            probe: None,
            incarnations: Incarnations::default(),
            leader: None,
            // After a restart, behave as if a leader was just heard: the node may
            // have acked a lease before crashing and must not promise to another
            // proposer before that lease ran out.
            last_leader_contact_tick: 0,
            recovery_contact: None,
            election_deadline_tick: 0,
            highest_round_seen,
            applied,
            last_catchup_tick: None,
            catchup_target: 0,
            catchup_outstanding: std::collections::VecDeque::new(),
            catchup_cursor: 0,
            catchup_span: None,
            recovery_catchup: None,
            next_ticket: 0,
            ready_epoch: 0,
            messages_now: Vec::new(),
            outcomes_now: Vec::new(),
            messages: Vec::new(),
            outcomes: Vec::new(),
            events: Vec::new(),
            counters: Counters::default(),
        };
        node.reset_election_timer();
        Ok(node)
    }

    /// Learned entries in `[from, to)` held here (reads for tools and tests; the
    /// application gets entries through [`Ready::learned`]).
    pub fn learned_entries(&self, from: Position, to: Position) -> Vec<(Position, Action)> {
        self.replica.learned_range(from, to)
    }

    pub fn id(&self) -> &MemberId {
        &self.cfg.id
    }
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }
    pub fn status(&self) -> ReplicaStatus {
        self.replica.status()
    }
    pub fn log_id(&self) -> Option<LogId> {
        self.replica.log_id()
    }
    pub fn begin(&self) -> Position {
        self.replica.begin()
    }
    pub fn end(&self) -> Position {
        self.replica.end()
    }
    pub fn learned_end(&self) -> Position {
        self.replica.learned_end()
    }
    /// Whether `position` is learned here (or truncated away).
    pub fn is_learned(&self, position: Position) -> bool {
        self.replica.is_learned(position)
    }
    pub fn promised(&self) -> Option<&Proposal> {
        self.replica.promised()
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    pub fn conflicting_learns(&self) -> u64 {
        self.replica.conflicting_learns
    }
    /// The current status probe's answers (diagnostics).
    pub fn probe_answers(&self) -> Vec<(MemberId, ReplicaStatus)> {
        self.probe
            .as_ref()
            .map(|p| {
                p.answers
                    .iter()
                    .map(|(m, s)| (m.clone(), s.status))
                    .collect()
            })
            .unwrap_or_default()
    }
    /// A one-line summary for diagnostics.
    pub fn debug_summary(&self) -> String {
        format!(
            "{} {:?} promised={:?} begin={} end={} learned_end={} leader={:?} coord={}",
            self.cfg.id,
            self.replica.status(),
            self.replica
                .promised()
                .map(|p| (p.round, p.proposer.0.clone())),
            self.replica.begin(),
            self.replica.end(),
            self.replica.learned_end(),
            self.leader.as_ref().map(|(m, _)| m.0.clone()),
            self.coordinator
                .as_ref()
                .map_or("none".to_string(), |c| c.debug_summary()),
        )
    }
    pub fn now_tick(&self) -> u64 {
        self.now
    }
    /// The leader this node last heard from (or itself).
    pub fn leader(&self) -> Option<&MemberId> {
        if self.is_leader() {
            return Some(&self.cfg.id);
        }
        self.leader.as_ref().map(|(m, _)| m)
    }
    /// Elected: won the promise round (it may still be filling).
    pub fn is_leader(&self) -> bool {
        self.coordinator
            .as_ref()
            .is_some_and(|c| c.mode == Mode::Leader && c.phase() != Phase::Promising)
    }
    /// True while reads served from this node's learned state cannot be stale: it
    /// leads, everything up to its fill end is learned here, and a quorum acked a
    /// heartbeat sent less than `lease_ticks` ago. Followers refuse to promise to
    /// another proposer for `election_timeout_min_ticks > lease_ticks` after
    /// acking, so no other leader can be elected before the lease runs out.
    pub fn has_read_lease(&self) -> bool {
        self.coordinator.as_ref().is_some_and(|c| {
            c.mode == Mode::Leader
                && c.fill_learned(&self.replica)
                && self.now < c.lease_until_tick()
        })
    }

    fn reset_election_timer(&mut self) {
        let t = self.rng.range(
            self.cfg.election_timeout_min_ticks,
            self.cfg.election_timeout_max_ticks,
        );
        self.election_deadline_tick = self.now + t;
    }

    /// Proposes an append; the outcome arrives in a later [`Ready`]. Takes anything
    /// that becomes [`bytes::Bytes`] (a `Vec<u8>` does without a copy).
    pub fn propose(&mut self, data: impl Into<bytes::Bytes>) -> u64 {
        self.propose_action(Action::Append(data.into()))
    }

    /// Proposes dropping every position below `to` once learned.
    pub fn propose_truncate(&mut self, to: Position) -> u64 {
        self.propose_action(Action::Truncate { to })
    }

    fn propose_action(&mut self, action: Action) -> u64 {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let leader_hint = self.leader.as_ref().map(|(m, _)| m.clone());
        let result = match self.coordinator.take() {
            Some(mut c) if c.mode == Mode::Leader => {
                let r = {
                    let mut fx = self.effects();
                    c.enqueue(&mut fx, ticket, action)
                };
                self.coordinator = Some(c);
                r
            }
            other => {
                self.coordinator = other;
                Err(ProposeError::NotLeader {
                    leader: leader_hint,
                })
            }
        };
        if let Err(e) = result {
            self.outcomes.push(ProposalOutcome {
                ticket,
                result: Err(e),
            });
        }
        ticket
    }

    fn effects(&mut self) -> Effects<'_> {
        Effects {
            me: &self.cfg.id,
            members: &self.cfg.members,
            log_id: self.replica.log_id(),
            now: self.now,
            replica: &mut self.replica,
            ready_epoch: self.ready_epoch,
            messages_now: &mut self.messages_now,
            outcomes_now: &mut self.outcomes_now,
            messages: &mut self.messages,
            outcomes: &mut self.outcomes,
            planted_minority_learn: self.cfg.planted_minority_learn,
        }
    }

    fn send(&mut self, to: &MemberId, message: Message) {
        self.messages.push(Envelope {
            from: self.cfg.id.clone(),
            to: to.clone(),
            log_id: self.replica.log_id(),
            message,
        });
    }

    /// Runs `f` on the coordinator (if any) and handles its signal.
    fn with_coordinator(&mut self, f: impl FnOnce(&mut Coordinator, &mut Effects) -> Signal) {
        let Some(mut c) = self.coordinator.take() else {
            return;
        };
        let was_leader = c.mode == Mode::Leader && c.phase() != Phase::Promising;
        let signal = {
            let mut fx = self.effects();
            f(&mut c, &mut fx)
        };
        match signal {
            Signal::None => {
                if !was_leader && c.mode == Mode::Leader && c.phase() != Phase::Promising {
                    self.events
                        .push(NodeEvent::BecameLeader(c.proposal.clone()));
                    self.leader = Some((self.cfg.id.clone(), c.proposal.clone()));
                }
                self.coordinator = Some(c);
            }
            Signal::Demoted(p) => {
                if let Some(p) = p {
                    self.highest_round_seen = self.highest_round_seen.max(p.round);
                }
                c.abandon(&mut self.outcomes);
                if c.mode == Mode::Leader && c.phase() != Phase::Promising {
                    self.events.push(NodeEvent::Demoted);
                    if self.leader.as_ref().is_some_and(|(m, _)| m == &self.cfg.id) {
                        self.leader = None;
                    }
                }
                self.reset_election_timer();
            }
            Signal::RecoveryDone => {
                debug_assert_eq!(self.replica.status(), ReplicaStatus::Recovering);
                debug_assert!(self.replica.learned_end() >= c.fill_end());
                // Adopt P* (above every promise the promisers held) before voting.
                self.replica.raise_promise(&c.proposal);
                self.replica.set_status(ReplicaStatus::Voting, None);
                self.events.push(NodeEvent::Recovered);
                self.probe = None;
                self.last_leader_contact_tick = self.now;
                self.reset_election_timer();
            }
        }
    }

    /// One tick of logical time.
    pub fn tick(&mut self) {
        self.now += 1;
        self.replica.flush_lazy_learned();
        let hb = self.cfg.heartbeat_interval_ticks;
        let stall_ticks = 2 * self.cfg.election_timeout_max_ticks;
        match self.replica.status() {
            ReplicaStatus::Voting => {
                debug_assert!(
                    self.replica.log_id().is_some(),
                    "a voting replica knows its log"
                );
                if self.coordinator.is_some() {
                    let stalled = self.coordinator.as_ref().is_some_and(|c| {
                        c.phase() != Phase::Serving
                            && self.now - c.last_progress_tick() > stall_ticks
                    });
                    if stalled {
                        self.with_coordinator(|_, _| Signal::Demoted(None));
                    } else {
                        self.with_coordinator(|c, fx| c.tick(fx, hb));
                    }
                } else if self.now >= self.election_deadline_tick {
                    self.campaign();
                }
            }
            _ => {
                if let Some(rc) = &self.recovery_catchup {
                    if self.now.saturating_sub(rc.last_progress_tick)
                        >= RECOVERY_CATCHUP_STALL_TICKS
                    {
                        // The peer has nothing more to give (or is gone): the
                        // round reads the rest from a quorum.
                        let above_round = rc.above_round;
                        self.start_recovery_round(above_round);
                    }
                    return;
                }
                if let Some(c) = &self.coordinator {
                    if self.now - c.last_progress_tick() > stall_ticks {
                        // Recovery made no progress (e.g. outbid): start over.
                        let mut c = self.coordinator.take();
                        if let Some(c) = c.as_mut() {
                            c.abandon(&mut self.outcomes);
                        }
                    } else {
                        self.with_coordinator(|c, fx| c.tick(fx, hb));
                    }
                    return;
                }
                let due = self
                    .probe
                    .as_ref()
                    .is_none_or(|p| self.now - p.sent_tick >= self.cfg.status_retry_ticks);
                if due {
                    self.send_probe();
                }
            }
        }
    }

    fn send_probe(&mut self) {
        let probe = match self.probe.take() {
            Some(mut p) => {
                p.round += 1;
                p
            }
            None => Probe {
                base: self.rng.next_u64(),
                ..Probe::default()
            },
        };
        let nonce = probe.nonce();
        self.probe = Some(Probe {
            sent_tick: self.now,
            ..probe
        });
        for m in self.cfg.members.clone() {
            if m != self.cfg.id {
                self.send(
                    &m,
                    Message::StatusRequest {
                        nonce,
                        incarnation: self.incarnation,
                    },
                );
            }
        }
        self.evaluate_probe();
    }

    /// A proposal of ours above `above_round` and above every round this node has
    /// seen, so it outbids whatever it must and is unique (our address is in it).
    fn fresh_proposal(&mut self, above_round: u64) -> Proposal {
        let round = above_round.max(self.highest_round_seen) + 1;
        self.highest_round_seen = round;
        Proposal {
            round,
            proposer: self.cfg.id.clone(),
        }
    }

    /// Every whitelisted member but this one.
    fn peers(&self) -> Vec<MemberId> {
        self.cfg
            .members
            .iter()
            .filter(|m| **m != self.cfg.id)
            .cloned()
            .collect()
    }

    /// Heartbeats a leader sends while its driver waits on a persist that takes
    /// longer than a heartbeat interval (a disk stall of half a second happens on
    /// shared disks): without them, followers' election timers run out under a
    /// live leader and depose it, and every write in flight fails. They are not
    /// an input in the sense of [`Ready`]: they read nothing the pending persist
    /// writes (a learned end in memory is already chosen by durable accepts), and
    /// their lease is counted from the node's tick, which lags real time during
    /// the stall, so the lease they grant only ends earlier. Empty unless this
    /// node leads.
    pub fn keepalive(&mut self) -> Vec<Envelope> {
        let Some(mut c) = self.coordinator.take() else {
            return Vec::new();
        };
        // The heartbeats leave now, not with the queued messages: collect them
        // apart (a heartbeat round sends nothing else).
        let queued = std::mem::take(&mut self.messages);
        c.keepalive(&mut self.effects());
        let heartbeats = std::mem::replace(&mut self.messages, queued);
        self.coordinator = Some(c);
        heartbeats
    }

    fn campaign(&mut self) {
        let proposal = self.fresh_proposal(self.replica.promised().map_or(0, |p| p.round));
        self.events.push(NodeEvent::Campaigning {
            round: proposal.round,
            ticks_since_leader_contact: self.now.saturating_sub(self.last_leader_contact_tick),
            last_leader: self.leader.as_ref().map(|(m, _)| m.clone()),
        });
        let c = Coordinator::new(
            proposal,
            Mode::Leader,
            self.peers(),
            self.cfg.quorum,
            self.now,
        );
        self.coordinator = Some(c);
        self.leader = None;
        self.reset_election_timer();
        self.with_coordinator(|c, fx| c.start(fx));
    }

    fn evaluate_probe(&mut self) {
        let Some(probe) = &self.probe else {
            return;
        };
        if self.coordinator.is_some() || self.recovery_catchup.is_some() {
            return;
        }
        let d = decide(
            &self.cfg.id,
            &self.cfg.members,
            self.cfg.quorum,
            self.replica.status(),
            self.replica.log_id(),
            self.cfg.auto_initialize,
            &probe.answers,
        );
        match d {
            Decision::Wait => {}
            Decision::Start => {
                debug_assert_eq!(self.replica.status(), ReplicaStatus::Empty);
                self.replica.set_status(ReplicaStatus::Starting, None);
                self.events.push(NodeEvent::Starting);
            }
            Decision::Initialize => {
                debug_assert_eq!(self.replica.status(), ReplicaStatus::Starting);
                let log_id = LogId(self.rng.next_u64());
                self.replica.set_status(ReplicaStatus::Voting, Some(log_id));
                self.events.push(NodeEvent::Initialized(log_id));
                self.become_follower();
            }
            Decision::Adopt(log_id) => {
                debug_assert_eq!(self.replica.status(), ReplicaStatus::Starting);
                self.replica.set_status(ReplicaStatus::Voting, Some(log_id));
                self.events.push(NodeEvent::Adopted(log_id));
                self.become_follower();
            }
            Decision::Recover {
                log_id,
                above_round,
            } => {
                debug_assert!(matches!(
                    self.replica.status(),
                    ReplicaStatus::Empty | ReplicaStatus::Recovering
                ));
                if self.replica.status() == ReplicaStatus::Empty {
                    self.replica
                        .set_status(ReplicaStatus::Recovering, Some(log_id));
                }
                self.events.push(NodeEvent::RecoveryStarted(log_id));
                if self.cfg.planted_recovery_without_fill {
                    // The planted bug: vote at once, trusting the status answers.
                    let p = Proposal {
                        round: above_round,
                        proposer: MemberId::new(""),
                    };
                    self.replica.raise_promise(&p);
                    self.replica.set_status(ReplicaStatus::Voting, None);
                    self.become_follower();
                    return;
                }
                let mine = self.replica.learned_end();
                let ahead = probe_voting_ends(self.probe.as_ref(), log_id)
                    .filter(|(_, end)| *end > mine.saturating_add(RECOVERY_CATCHUP_MIN_POSITIONS));
                match ahead {
                    Some((peer, end)) => {
                        self.catchup_target = self.catchup_target.max(end);
                        self.restart_catchup();
                        self.pump_catchup(&peer);
                        self.recovery_catchup = Some(RecoveryCatchup {
                            peer,
                            above_round,
                            last_progress_tick: self.now,
                        });
                    }
                    None => self.start_recovery_round(above_round),
                }
            }
        }
    }

    /// The recovery proposer round (see recovery.rs), over every position this
    /// replica has not learned yet.
    fn start_recovery_round(&mut self, above_round: u64) {
        self.recovery_catchup = None;
        self.restart_catchup();
        let proposal = self.fresh_proposal(above_round);
        self.coordinator = Some(Coordinator::new(
            proposal,
            Mode::Recovery,
            self.peers(),
            self.cfg.quorum,
            self.now,
        ));
        self.with_coordinator(|c, fx| c.start(fx));
    }

    fn become_follower(&mut self) {
        self.probe = None;
        self.last_leader_contact_tick = self.now;
        self.reset_election_timer();
    }

    /// Feeds one message from the network. Never panics on bad input: refused
    /// messages are counted.
    pub fn step(&mut self, env: Envelope) {
        if env.to != self.cfg.id {
            self.counters.misaddressed += 1;
            return;
        }
        if env.from == self.cfg.id || !self.cfg.members.contains(&env.from) {
            self.counters.refused_non_member += 1;
            return;
        }
        let mine = self.replica.log_id();
        if let (Some(a), Some(b)) = (env.log_id, mine) {
            if a != b {
                self.counters.refused_foreign_log += 1;
                return;
            }
        }
        if !env.message.is_status() && (env.log_id.is_none() || mine.is_none()) {
            self.counters.refused_uninitialized += 1;
            return;
        }
        let from = env.from;
        match env.message {
            Message::StatusRequest { nonce, incarnation } => {
                if !self.incarnations.observe(&from, incarnation) {
                    return;
                }
                // A new incarnation of `from` invalidates what it told us before.
                if let Some(p) = self.probe.as_mut() {
                    p.forget(&from);
                }
                let reply = Message::StatusResponse {
                    nonce,
                    incarnation: self.incarnation,
                    status: self.replica.status(),
                    log_id: self.replica.log_id(),
                    promised: self.replica.promised().cloned(),
                    begin: self.replica.begin(),
                    end: self.replica.end(),
                };
                self.send(&from, reply);
            }
            Message::StatusResponse {
                nonce,
                incarnation,
                status,
                log_id,
                promised,
                begin,
                end,
            } => {
                if !self.incarnations.observe(&from, incarnation) {
                    return;
                }
                if let Some(r) = &promised {
                    self.highest_round_seen = self.highest_round_seen.max(r.round);
                }
                let Some(p) = self.probe.as_mut() else {
                    return;
                };
                if self.replica.status() == ReplicaStatus::Voting {
                    return;
                }
                if p.record(
                    &from,
                    nonce,
                    PeerStatus {
                        status,
                        log_id,
                        promised,
                        begin,
                        end,
                    },
                ) {
                    self.evaluate_probe();
                }
            }
            Message::PromiseRequest { proposal, recovery } => {
                self.highest_round_seen = self.highest_round_seen.max(proposal.round);
                let outcome = self.on_promise_request(&from, &proposal, recovery);
                self.send(&from, Message::PromiseResponse { proposal, outcome });
            }
            Message::PromiseResponse { proposal, outcome } => {
                if let PromiseOutcome::Rejected { promised: Some(p) } = &outcome {
                    self.highest_round_seen = self.highest_round_seen.max(p.round);
                }
                self.with_coordinator(|c, fx| {
                    c.on_promise_response(fx, &from, &proposal, &outcome)
                });
            }
            Message::ReadRequest {
                proposal,
                from: lo,
                to,
            } => {
                self.note_recovery_contact(&proposal);
                let mut hi = to.min(lo.saturating_add(super::coordinator::MAX_READ_POSITIONS));
                let result = match self.replica.read_within(&proposal, lo, hi, MAX_REPLY_BYTES) {
                    Ok((entries, covered)) => {
                        // Bounded by bytes: the reply then covers [lo, covered) only.
                        hi = covered;
                        Ok(ReadReply {
                            begin: self.replica.begin(),
                            entries,
                        })
                    }
                    Err(VoteRefusal::Promised(p)) => Err(p),
                    Err(VoteRefusal::NotVoting) => Err(None),
                };
                self.send(
                    &from,
                    Message::ReadResponse {
                        proposal,
                        from: lo,
                        to: hi,
                        result,
                    },
                );
            }
            Message::ReadResponse {
                proposal,
                from: lo,
                to,
                result,
            } => {
                self.with_coordinator(|c, fx| {
                    c.on_read_response(fx, &from, &proposal, (lo, to), &result)
                });
            }
            Message::AcceptRequest { proposal, entries } => {
                self.note_recovery_contact(&proposal);
                self.on_accept_request(&from, proposal, entries);
            }
            Message::AcceptResponse {
                proposal,
                result,
                begin,
            } => {
                self.with_coordinator(|c, fx| {
                    c.on_accept_response(fx, &from, &proposal, &result, begin)
                });
            }
            Message::Learned { entries } => {
                for (pos, action) in entries.iter().take(super::coordinator::MAX_BATCH_ENTRIES) {
                    self.replica.learn_announced(*pos, action);
                }
            }
            Message::Heartbeat {
                proposal,
                seq,
                learned_end,
            } => {
                self.on_heartbeat(&from, proposal, seq, learned_end);
            }
            Message::HeartbeatResponse {
                proposal,
                seq,
                result,
            } => {
                let lease = self.cfg.lease_ticks;
                self.with_coordinator(|c, _| {
                    c.on_heartbeat_response(&from, &proposal, seq, &result, lease)
                });
            }
            Message::CatchupRequest { from: lo, to } => {
                let hi = to.min(lo.saturating_add(MAX_CATCHUP_ENTRIES));
                let entries = self.replica.learned_range_within(lo, hi, MAX_REPLY_BYTES);
                let begin = self.replica.begin();
                self.send(&from, Message::CatchupResponse { begin, entries });
            }
            Message::CatchupResponse { begin, entries } => {
                // The peer truncated at `begin` only after learning a truncate
                // there; positions below are dead, so skip them. A recovering
                // replica too: its recovery round would truncate there as well
                // (the promises carry the same bound), and without this a
                // registry that truncates made every wiped member skip the
                // catch-up (nothing learned below the bound) and read the whole
                // tail in its round, deposing the leader with its promise.
                let before = self.replica.learned_end();
                if begin > before
                    && matches!(
                        self.replica.status(),
                        ReplicaStatus::Voting | ReplicaStatus::Recovering
                    )
                {
                    self.replica.truncate_below(begin);
                }
                let entries = &entries[..entries.len().min(MAX_CATCHUP_ENTRIES as usize)];
                for (pos, action) in entries {
                    self.replica.learn(*pos, action, None);
                }
                self.account_catchup_answer(&from, entries);
                let mine = self.replica.learned_end();
                if let Some(rc) = self.recovery_catchup.as_mut().filter(|rc| rc.peer == from) {
                    rc.last_progress_tick = self.now;
                    // Done, or the peer has no learned values from there (they
                    // are in flight, or below its truncation point): the round
                    // does the rest.
                    if (entries.is_empty() && mine == before) || mine >= self.catchup_target {
                        let above_round = rc.above_round;
                        self.start_recovery_round(above_round);
                        return;
                    }
                    self.pump_catchup(&from);
                } else if mine > before && mine < self.catchup_target {
                    self.pump_catchup(&from);
                }
            }
        }
    }

    /// Forgets the catch-up requests in flight: the next ones start at the
    /// learned end. Answers to the forgotten ones are still learned if they come.
    /// The span is measured again: the values of this catch-up may be of another
    /// size than the last one's.
    fn restart_catchup(&mut self) {
        self.catchup_outstanding.clear();
        self.catchup_cursor = self.replica.learned_end();
        self.catchup_span = None;
    }

    /// Sends catch-up requests to `peer` until [`CATCHUP_PIPELINE_DEPTH`] are in
    /// flight or the target is asked for. They leave at once (`messages_now`): a
    /// request carries no vote, so it need not wait for this round's persist, and
    /// the peer prepares the next answers while this replica writes the last one.
    fn pump_catchup(&mut self, peer: &MemberId) {
        self.catchup_cursor = self.catchup_cursor.max(self.replica.learned_end());
        let (span, depth) = match self.catchup_span {
            Some(span) => (span, CATCHUP_PIPELINE_DEPTH),
            None => (MAX_CATCHUP_ENTRIES, 1),
        };
        while self.catchup_outstanding.len() < depth && self.catchup_cursor < self.catchup_target {
            let from = self.catchup_cursor;
            let to = self.catchup_target.min(from.saturating_add(span));
            self.catchup_cursor = to;
            self.ask_for_catchup(peer, from, to);
        }
    }

    /// Sends one catch-up request and records it as in flight.
    fn ask_for_catchup(&mut self, peer: &MemberId, from: Position, to: Position) {
        self.catchup_outstanding.push_back((from, to));
        self.last_catchup_tick = Some(self.now);
        self.messages_now.push(Envelope {
            from: self.cfg.id.clone(),
            to: peer.clone(),
            log_id: self.replica.log_id(),
            message: Message::CatchupRequest { from, to },
        });
    }

    /// Matches a catch-up answer with the request it answers and learns from it
    /// how many positions fit in one answer. An answer cut short by its byte
    /// bound leaves the rest of its request unasked: the rest of the last request
    /// goes back to the cursor, the rest of an earlier one is asked again at once,
    /// so no position is skipped while later requests are in flight.
    fn account_catchup_answer(&mut self, peer: &MemberId, entries: &[(Position, Action)]) {
        self.last_catchup_tick = Some(self.now);
        let answered = match entries.first() {
            Some((first, _)) => self
                .catchup_outstanding
                .iter()
                .position(|(from, to)| from <= first && first < to),
            None => (!self.catchup_outstanding.is_empty()).then_some(0),
        };
        let Some((_, to)) = answered.and_then(|i| self.catchup_outstanding.remove(i)) else {
            return;
        };
        let Some((last, _)) = entries.last() else {
            return;
        };
        let next = last.saturating_add(1);
        if next < to {
            let bytes: usize = entries.iter().map(|(_, a)| a.size_bytes()).sum();
            if bytes.saturating_mul(2) >= MAX_REPLY_BYTES {
                // Cut by its byte bound: this many positions fit in one answer.
                self.catchup_span = Some(entries.len().max(1) as u64);
            }
            if to >= self.catchup_cursor {
                // The last request: the caller's next pump asks for the rest in
                // requests of the span just learned, several at a time.
                self.catchup_cursor = next;
            } else {
                self.ask_for_catchup(peer, next, to);
            }
        } else if self.catchup_span.is_none() {
            self.catchup_span = Some(MAX_CATCHUP_ENTRIES);
        }
    }

    fn note_recovery_contact(&mut self, proposal: &Proposal) {
        if let Some((p, t)) = self.recovery_contact.as_mut() {
            if p == proposal {
                *t = self.now;
            }
        }
    }

    fn on_promise_request(
        &mut self,
        from: &MemberId,
        proposal: &Proposal,
        recovery: bool,
    ) -> PromiseOutcome {
        if self.replica.status() != ReplicaStatus::Voting {
            return PromiseOutcome::Refused;
        }
        // Lease: while a live leader was heard within the minimum election
        // timeout, promise to nobody else (recovery rounds excepted, see
        // recovery.rs). A leader counts itself as live.
        // An elected leader refuses; a mere candidate does not (candidates that
        // refuse each other split the vote forever — found by the simulator).
        let leading = self.is_leader();
        let recent = self.now.saturating_sub(self.last_leader_contact_tick)
            < self.cfg.election_timeout_min_ticks;
        let from_leader = self.leader.as_ref().is_some_and(|(m, _)| m == from);
        let recovering_peer = self.recovery_contact.as_ref().is_some_and(|(p, t)| {
            self.now.saturating_sub(*t) < self.cfg.election_timeout_min_ticks && p.proposer != *from
        });
        if !recovery && (leading || (recent && !from_leader) || recovering_peer) {
            return PromiseOutcome::Refused;
        }
        // A recovery proposal must be strictly above our promise: the wiped
        // replica may have used that very proposal number before its wipe, and
        // one proposal number must never carry two values at one position.
        if recovery && self.replica.promised() >= Some(proposal) {
            return PromiseOutcome::Rejected {
                promised: self.replica.promised().cloned(),
            };
        }
        match self.replica.promise(proposal) {
            Ok((begin, end)) => {
                // Promised someone higher than our own coordinator: stand down.
                if self
                    .coordinator
                    .as_ref()
                    .is_some_and(|c| &c.proposal < proposal)
                {
                    self.with_coordinator(|_, _| Signal::Demoted(None));
                }
                if recovery {
                    self.recovery_contact = Some((proposal.clone(), self.now));
                } else {
                    self.reset_election_timer();
                }
                PromiseOutcome::Promised { begin, end }
            }
            Err(VoteRefusal::Promised(p)) => PromiseOutcome::Rejected { promised: p },
            Err(VoteRefusal::NotVoting) => PromiseOutcome::Refused,
        }
    }

    fn on_accept_request(
        &mut self,
        from: &MemberId,
        proposal: Proposal,
        entries: Vec<(Position, Action)>,
    ) {
        if self.replica.status() != ReplicaStatus::Voting {
            return;
        }
        let mut accepted = Vec::new();
        let mut refusal = None;
        for (pos, action) in entries.iter().take(super::coordinator::MAX_BATCH_ENTRIES) {
            match self.replica.accept(&proposal, *pos, action) {
                Ok(true) => accepted.push(*pos),
                Ok(false) => {}
                Err(VoteRefusal::Promised(p)) => {
                    refusal = Some(p);
                    break;
                }
                Err(VoteRefusal::NotVoting) => return,
            }
        }
        if refusal.is_none()
            && self
                .coordinator
                .as_ref()
                .is_some_and(|c| c.proposal < proposal)
        {
            self.with_coordinator(|_, _| Signal::Demoted(None));
        }
        let result = match refusal {
            Some(p) => Err(p),
            None => {
                if self
                    .leader
                    .as_ref()
                    .is_some_and(|(m, p)| m == from && p == &proposal)
                {
                    self.last_leader_contact_tick = self.now;
                    self.reset_election_timer();
                }
                Ok(accepted)
            }
        };
        let begin = self.replica.begin();
        self.send(
            from,
            Message::AcceptResponse {
                proposal,
                result,
                begin,
            },
        );
    }

    fn on_heartbeat(
        &mut self,
        from: &MemberId,
        proposal: Proposal,
        seq: u64,
        learned_end: Position,
    ) {
        if self.replica.status() != ReplicaStatus::Voting {
            return;
        }
        self.highest_round_seen = self.highest_round_seen.max(proposal.round);
        if self.replica.promised() > Some(&proposal) {
            let promised = self.replica.promised().cloned();
            self.send(
                from,
                Message::HeartbeatResponse {
                    proposal,
                    seq,
                    result: Err(promised),
                },
            );
            return;
        }
        if self
            .coordinator
            .as_ref()
            .is_some_and(|c| c.proposal < proposal)
        {
            self.with_coordinator(|_, _| Signal::Demoted(None));
        }
        self.leader = Some((from.clone(), proposal.clone()));
        self.last_leader_contact_tick = self.now;
        self.reset_election_timer();
        let mine = self.replica.learned_end();
        self.catchup_target = self.catchup_target.max(learned_end);
        // Requests go out as answers come in (see the CatchupResponse arm); this
        // starts a catch-up, or restarts one whose requests or answers were lost.
        let stale = self
            .last_catchup_tick
            .is_none_or(|t| self.now.saturating_sub(t) >= super::coordinator::RETRY_TICKS);
        if learned_end > mine && (self.catchup_outstanding.is_empty() || stale) {
            self.restart_catchup();
            self.pump_catchup(from);
        }
        self.send(
            from,
            Message::HeartbeatResponse {
                proposal,
                seq,
                result: Ok(()),
            },
        );
    }

    /// True if [`Node::ready`] has something to hand out.
    pub fn has_ready(&self) -> bool {
        !self.messages.is_empty()
            || !self.messages_now.is_empty()
            || !self.outcomes_now.is_empty()
            || self.replica.has_pending()
            || !self.outcomes.is_empty()
            || !self.events.is_empty()
            || self.replica.learned_end() > self.applied
            || self.applied < self.replica.begin()
    }

    /// Takes everything the node produced since the last call.
    pub fn ready(&mut self) -> Ready {
        let mut learned = Vec::new();
        if self.applied < self.replica.begin() {
            // Positions were truncated away before they were delivered here: the
            // application must restore from a snapshot entry at or after `begin`.
            self.events.push(NodeEvent::SkippedTo(self.replica.begin()));
            self.applied = self.replica.begin();
        }
        while self.applied < self.replica.learned_end() {
            let pos = self.applied;
            let Some(e) = self.replica.entry(pos) else {
                break;
            };
            let action = e.action.clone();
            self.applied += 1;
            if let Action::Truncate { to } = action {
                // Applied in order: everything below is learned and delivered.
                self.replica.truncate_below(to.min(pos));
            }
            learned.push((pos, action));
        }
        self.ready_epoch += 1;
        Ready {
            send_now: std::mem::take(&mut self.messages_now),
            outcomes_now: std::mem::take(&mut self.outcomes_now),
            persist: self.replica.take_pending(),
            messages: std::mem::take(&mut self.messages),
            learned,
            outcomes: std::mem::take(&mut self.outcomes),
            events: std::mem::take(&mut self.events),
        }
    }
}

/// The `Voting` peer of `log_id` that reported the highest end to `probe`, with
/// that end.
fn probe_voting_ends(probe: Option<&Probe>, log_id: LogId) -> Option<(MemberId, Position)> {
    probe?
        .answers
        .iter()
        .filter(|(_, s)| s.status == ReplicaStatus::Voting && s.log_id == Some(log_id))
        .max_by_key(|(_, s)| s.end)
        .map(|(m, s)| (m.clone(), s.end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<MemberId> {
        (1..=n)
            .map(|i| MemberId::new(format!("10.0.0.{i}:5050")))
            .collect()
    }

    #[test]
    fn config_refuses_quorums_that_may_not_intersect() {
        let m = ids(5);
        let c = NodeConfig::new(m[0].clone(), m.clone(), 2, 1);
        assert_eq!(
            c.validate(),
            Err(ConfigError::QuorumsMayNotIntersect {
                quorum: 2,
                members: 5
            })
        );
        let c = NodeConfig::new(MemberId::new("x:1"), m.clone(), 3, 1);
        assert!(matches!(c.validate(), Err(ConfigError::NotAMember(_))));
        let mut c = NodeConfig::new(m[0].clone(), m, 3, 1);
        c.lease_ticks = c.election_timeout_min_ticks;
        assert!(matches!(c.validate(), Err(ConfigError::BadTimers { .. })));
    }

    #[test]
    fn a_single_member_initializes_and_commits_alone() {
        let m = ids(1);
        let mut n = Node::new(
            NodeConfig::new(m[0].clone(), m, 1, 7),
            DurableState::default(),
        )
        .unwrap();
        for _ in 0..30 {
            n.tick();
            let _ = n.ready();
        }
        assert_eq!(n.status(), ReplicaStatus::Voting);
        assert!(n.is_leader());
        let t = n.propose(b"x".to_vec());
        let r = n.ready();
        assert_eq!(
            r.outcomes,
            vec![ProposalOutcome {
                ticket: t,
                result: Ok(0)
            }]
        );
        assert_eq!(r.learned, vec![(0, Action::Append(b"x".to_vec().into()))]);
        // Durable state before anything leaves: the entry and the learned prefix
        // covering it are in `persist`.
        let mut durable = DurableState::default();
        for op in &r.persist {
            durable.apply(op);
        }
        assert!(
            matches!(durable.entries.as_slice(), [e] if e.learned && e.action == Action::Append(b"x".to_vec().into())),
            "{:?}",
            r.persist
        );
    }

    #[test]
    fn without_auto_initialize_an_empty_log_stays_empty() {
        let m = ids(1);
        let mut c = NodeConfig::new(m[0].clone(), m, 1, 7);
        c.auto_initialize = false;
        let mut n = Node::new(c, DurableState::default()).unwrap();
        for _ in 0..30 {
            n.tick();
            let _ = n.ready();
        }
        assert_eq!(n.status(), ReplicaStatus::Empty);
        let t = n.propose(b"x".to_vec());
        assert_eq!(
            n.ready().outcomes[0],
            ProposalOutcome {
                ticket: t,
                result: Err(ProposeError::NotLeader { leader: None })
            }
        );
    }

    #[test]
    fn messages_from_strangers_and_other_logs_are_refused_and_counted() {
        let m = ids(3);
        let mut d = DurableState::default();
        d.metadata.status = ReplicaStatus::Voting;
        d.metadata.log_id = Some(LogId(1));
        let mut n = Node::new(NodeConfig::new(m[0].clone(), m.clone(), 2, 7), d).unwrap();
        let msg = Message::Learned {
            entries: vec![(0, Action::Nop)],
        };
        n.step(Envelope {
            from: MemberId::new("9.9.9.9:1"),
            to: m[0].clone(),
            log_id: Some(LogId(1)),
            message: msg.clone(),
        });
        n.step(Envelope {
            from: m[1].clone(),
            to: m[0].clone(),
            log_id: Some(LogId(2)),
            message: msg,
        });
        assert_eq!(n.counters().refused_non_member, 1);
        assert_eq!(n.counters().refused_foreign_log, 1);
        assert_eq!(n.learned_end(), 0);
    }
}
