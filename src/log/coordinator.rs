//! The proposer: an explicit promise round for the whole log, then a fill of every
//! unlearned position up to the highest end seen (Paxos on each: the learned value
//! if any acceptor reports one, else the value accepted under the highest
//! proposal, else `Nop`), then pipelined, batched multi-Paxos writes under the
//! implicit promise. A rejection carrying a higher promise demotes it.
//!
//! The same machine runs in two modes: `Leader` (the elected writer, itself an
//! acceptor) and `Recovery` (a recovering replica filling its log with the other
//! members as acceptors; see `recovery.rs` for why that is safe).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::message::{Envelope, Message, PromiseOutcome, ReadReply};
use super::node::{ProposalOutcome, ProposeError};
use super::replica::Replica;
use super::types::{Action, LogId, MemberId, Position, Proposal, MAX_POSITION};

/// Positions written but not yet chosen, at most. Mesos allows one write in
/// flight; a window keeps the pipe full across round trips while bounding the
/// memory a slow quorum can pin (256 positions x 32 appends per message).
pub const MAX_WRITES_IN_FLIGHT: usize = 256;
/// Positions per accept/read/learned message: amortizes per-message costs
/// (framing, fsync of the batch) without making one message unbounded.
pub const MAX_BATCH_ENTRIES: usize = 32;
/// Positions one fill read asks for at most (bounded further by the write
/// window, and by bytes at the responder: [`MAX_REPLY_BYTES`]).
pub const MAX_READ_POSITIONS: u64 = 1024;
/// Bytes of values one read or catch-up reply carries at most (at least one
/// entry always goes): large enough that a batch costs one fsync of megabytes
/// rather than one per few entries, well below the 16 MiB frame limit.
pub const MAX_REPLY_BYTES: usize = 4 << 20;
/// Client proposals queued at the leader awaiting a position; beyond, `Busy`.
pub const MAX_PENDING_PROPOSALS: usize = 1024;
/// Ticks before an unanswered request is sent again (messages may be lost).
pub const RETRY_TICKS: u64 = 3;
/// Heartbeat rounds remembered for lease accounting.
pub const MAX_HEARTBEATS_TRACKED: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Leader,
    Recovery,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Promising,
    Filling,
    Serving,
}

#[derive(Debug)]
struct InFlight {
    action: Action,
    acks: BTreeSet<MemberId>,
    /// The ready epoch in which this node's own accept was recorded: it is
    /// durable once a later epoch has begun (see [`super::node::Ready`]).
    self_ack_epoch: Option<u64>,
    ticket: Option<u64>,
    sent_tick: u64,
}

/// What the node must do after a coordinator event.
#[derive(Debug, PartialEq, Eq)]
pub enum Signal {
    None,
    /// A higher promise exists: stop coordinating.
    Demoted(Option<Proposal>),
    /// Recovery fill is complete up to the end seen.
    RecoveryDone,
}

/// Shared context the coordinator writes through.
pub struct Effects<'a> {
    pub me: &'a MemberId,
    pub members: &'a [MemberId],
    pub log_id: Option<LogId>,
    pub now: u64,
    pub replica: &'a mut Replica,
    /// The node's current ready epoch (incremented by every `Node::ready`).
    pub ready_epoch: u64,
    /// Messages that may leave before this round's persist is durable.
    pub messages_now: &'a mut Vec<Envelope>,
    /// Outcomes that may be answered before this round's persist is durable.
    pub outcomes_now: &'a mut Vec<ProposalOutcome>,
    pub messages: &'a mut Vec<Envelope>,
    pub outcomes: &'a mut Vec<ProposalOutcome>,
    /// Planted bug for the checker's own test: learn on a single ack.
    pub planted_minority_learn: bool,
}

impl Effects<'_> {
    fn send(&mut self, to: &MemberId, message: Message) {
        self.messages.push(Envelope {
            from: self.me.clone(),
            to: to.clone(),
            log_id: self.log_id,
            message,
        });
    }

    /// Sends without waiting for this round's persist: only for messages that
    /// depend on nothing in it.
    fn send_now(&mut self, to: &MemberId, message: Message) {
        self.messages_now.push(Envelope {
            from: self.me.clone(),
            to: to.clone(),
            log_id: self.log_id,
            message,
        });
    }

    /// Sends a leader's accept request. It depends on nothing this round
    /// persists: the promise it relies on was made durable when the coordinator
    /// was elected, and the leader's own accept (possibly in this round's batch)
    /// is its own vote, counted toward the quorum only once durable. So the
    /// followers write while the leader writes, instead of after it.
    fn send_accept(&mut self, mode: Mode, to: &MemberId, message: Message) {
        debug_assert!(matches!(message, Message::AcceptRequest { .. }));
        if mode == Mode::Leader {
            self.send_now(to, message);
        } else {
            self.send(to, message);
        }
    }
}

#[derive(Debug)]
pub struct Coordinator {
    pub proposal: Proposal,
    pub mode: Mode,
    phase: Phase,
    /// Acceptors other than this node.
    peers: Vec<MemberId>,
    self_votes: bool,
    quorum: usize,
    /// Start, then last progress (stall detection).
    started_tick: u64,
    last_send_tick: u64,
    promised_by: BTreeSet<MemberId>,
    max_end: Position,
    max_begin: Position,
    fill_cursor: Position,
    fill_end: Position,
    read_range: Option<(Position, Position)>,
    /// Read replies of the current range, each with the end of the part of the
    /// range it covers (a responder may cover less than asked, by bytes).
    reads: BTreeMap<MemberId, (Position, ReadReply)>,
    next_position: Position,
    in_flight: BTreeMap<Position, InFlight>,
    queue: VecDeque<(u64, Action)>,
    heartbeat_seq: u64,
    heartbeats: VecDeque<(u64, u64, BTreeSet<MemberId>)>,
    lease_until_tick: u64,
}

impl Coordinator {
    pub fn new(
        proposal: Proposal,
        mode: Mode,
        peers: Vec<MemberId>,
        quorum: usize,
        now: u64,
    ) -> Self {
        Coordinator {
            proposal,
            mode,
            phase: Phase::Promising,
            peers,
            self_votes: mode == Mode::Leader,
            quorum,
            started_tick: now,
            last_send_tick: now,
            promised_by: BTreeSet::new(),
            max_end: 0,
            max_begin: 0,
            fill_cursor: 0,
            fill_end: 0,
            read_range: None,
            reads: BTreeMap::new(),
            next_position: 0,
            in_flight: BTreeMap::new(),
            queue: VecDeque::new(),
            heartbeat_seq: 0,
            heartbeats: VecDeque::new(),
            lease_until_tick: 0,
        }
    }

    pub fn debug_summary(&self) -> String {
        format!(
            "{:?}/{:?} p=({},{}) promised_by={} fill={}..{} read={:?} reads={} in_flight={} queue={}",
            self.mode,
            self.phase,
            self.proposal.round,
            self.proposal.proposer,
            self.promised_by.len(),
            self.fill_cursor,
            self.fill_end,
            self.read_range,
            self.reads.len(),
            self.in_flight.len(),
            self.queue.len()
        )
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }
    /// The last tick something moved this coordinator forward.
    pub fn last_progress_tick(&self) -> u64 {
        self.started_tick
    }
    pub fn fill_end(&self) -> Position {
        self.fill_end
    }
    pub fn lease_until_tick(&self) -> u64 {
        self.lease_until_tick
    }

    /// Sends the promise requests (and promises locally when this node votes).
    pub fn start(&mut self, fx: &mut Effects) -> Signal {
        if self.self_votes {
            match fx.replica.promise(&self.proposal) {
                Ok((begin, end)) => {
                    let me = fx.me.clone();
                    if let s @ Signal::Demoted(_) = self.on_promise(fx, &me, begin, end) {
                        return s;
                    }
                }
                Err(super::replica::VoteRefusal::Promised(p)) => return Signal::Demoted(p),
                Err(super::replica::VoteRefusal::NotVoting) => return Signal::Demoted(None),
            }
        }
        let recovery = self.mode == Mode::Recovery;
        for peer in self.peers.clone() {
            fx.send(
                &peer,
                Message::PromiseRequest {
                    proposal: self.proposal.clone(),
                    recovery,
                },
            );
        }
        self.progress(fx)
    }

    fn higher(&self, p: &Option<Proposal>) -> bool {
        p.as_ref().is_some_and(|p| p > &self.proposal)
    }

    pub fn on_promise_response(
        &mut self,
        fx: &mut Effects,
        from: &MemberId,
        proposal: &Proposal,
        outcome: &PromiseOutcome,
    ) -> Signal {
        if proposal != &self.proposal || !self.peers.contains(from) {
            return Signal::None;
        }
        match outcome {
            PromiseOutcome::Promised { begin, end } => {
                self.started_tick = fx.now;
                if let s @ Signal::Demoted(_) = self.on_promise(fx, from, *begin, *end) {
                    return s;
                }
                self.progress(fx)
            }
            PromiseOutcome::Rejected { promised }
                if self.higher(promised)
                    || (self.mode == Mode::Recovery
                        && promised.as_ref() == Some(&self.proposal)) =>
            {
                Signal::Demoted(promised.clone())
            }
            _ => Signal::None,
        }
    }

    fn on_promise(
        &mut self,
        fx: &mut Effects,
        from: &MemberId,
        begin: Position,
        end: Position,
    ) -> Signal {
        if self.phase != Phase::Promising {
            // A late promise: this acceptor may also be read from.
            self.promised_by.insert(from.clone());
            return Signal::None;
        }
        self.promised_by.insert(from.clone());
        self.max_end = self.max_end.max(end.min(MAX_POSITION));
        self.max_begin = self
            .max_begin
            .max(begin.min(MAX_POSITION))
            .min(self.max_end);
        if self.promised_by.len() >= self.quorum {
            // Every chosen value was accepted by a quorum, which intersects this
            // promise quorum: so every chosen position is below `max_end`.
            if self.max_begin > fx.replica.begin() {
                // An acceptor truncated there after learning a Truncate: every
                // position below is dead for everyone.
                fx.replica.truncate_below(self.max_begin);
            }
            debug_assert!(self.promised_by.len() >= self.quorum);
            self.fill_cursor = fx.replica.learned_end().max(self.max_begin);
            self.fill_end = self.max_end.max(self.fill_cursor);
            self.next_position = self.fill_end;
            self.phase = Phase::Filling;
            self.issue_read(fx);
        }
        Signal::None
    }

    fn issue_read(&mut self, fx: &mut Effects) {
        if self.phase != Phase::Filling || self.read_range.is_some() {
            return;
        }
        // Skip what this node already learned (copying learned values is safe).
        while self.fill_cursor < self.fill_end && fx.replica.is_learned(self.fill_cursor) {
            self.fill_cursor += 1;
        }
        if self.fill_cursor >= self.fill_end {
            self.phase = Phase::Serving;
            return;
        }
        if self.in_flight.len() + MAX_BATCH_ENTRIES > MAX_WRITES_IN_FLIGHT {
            return; // wait for the window to drain
        }
        // As many positions as the write window has room for (each may need a
        // fill write), at most MAX_READ_POSITIONS; responders bound the bytes.
        let room = (MAX_WRITES_IN_FLIGHT - self.in_flight.len()).min(MAX_READ_POSITIONS as usize);
        let to = (self.fill_cursor.saturating_add(room as u64)).min(self.fill_end);
        self.read_range = Some((self.fill_cursor, to));
        self.reads.clear();
        if self.self_votes {
            if let Ok(entries) = fx.replica.read(&self.proposal, self.fill_cursor, to) {
                self.reads.insert(
                    fx.me.clone(),
                    (
                        to,
                        ReadReply {
                            begin: fx.replica.begin(),
                            entries,
                        },
                    ),
                );
            }
        }
        self.send_reads(fx);
        self.try_finish_read(fx);
    }

    fn send_reads(&mut self, fx: &mut Effects) {
        let Some((from, to)) = self.read_range else {
            return;
        };
        let targets: Vec<MemberId> = self
            .peers
            .iter()
            .filter(|p| self.promised_by.contains(*p) && !self.reads.contains_key(*p))
            .cloned()
            .collect();
        for peer in targets {
            // A read depends on nothing this node is persisting (its own promise,
            // as a leader, was durable before any peer's promise could arrive):
            // the next range is asked for while the last one is being written.
            fx.send_now(
                &peer,
                Message::ReadRequest {
                    proposal: self.proposal.clone(),
                    from,
                    to,
                },
            );
        }
        self.last_send_tick = fx.now;
    }

    pub fn on_read_response(
        &mut self,
        fx: &mut Effects,
        from: &MemberId,
        proposal: &Proposal,
        range: (Position, Position),
        result: &Result<ReadReply, Option<Proposal>>,
    ) -> Signal {
        // The reply may cover a prefix of the range asked for (`range.1` is where
        // its coverage ends); never nothing, or it would be no progress.
        let asked = self.read_range;
        let fits = asked.is_some_and(|(lo, hi)| range.0 == lo && range.1 > lo && range.1 <= hi);
        if proposal != &self.proposal || !fits || !self.peers.contains(from) {
            return Signal::None;
        }
        match result {
            Ok(reply) => {
                self.started_tick = fx.now;
                self.reads.insert(from.clone(), (range.1, reply.clone()));
                self.try_finish_read(fx);
                self.progress(fx)
            }
            Err(p) if self.higher(p) => Signal::Demoted(p.clone()),
            Err(_) => Signal::None,
        }
    }

    fn try_finish_read(&mut self, fx: &mut Effects) {
        let Some((from, asked_to)) = self.read_range else {
            return;
        };
        if self.reads.len() < self.quorum {
            return;
        }
        // Decide only where every reply of the quorum looked: a position one of
        // them did not cover might hold the only accepted value this quorum has.
        let to = self
            .reads
            .values()
            .map(|(covered, _)| *covered)
            .min()
            .unwrap_or(from)
            .min(asked_to);
        debug_assert!(to > from, "replies cover at least one position");
        let dead_below = self.reads.values().map(|(_, r)| r.begin).max().unwrap_or(0);
        if dead_below > fx.replica.begin() {
            fx.replica.truncate_below(dead_below);
        }
        // Per position: learned value, else highest accepted, else Nop.
        let mut best: BTreeMap<Position, (bool, Proposal, Action)> = BTreeMap::new();
        for (_, reply) in self.reads.values() {
            for e in &reply.entries {
                if e.position < from || e.position >= to {
                    continue; // a bad reply: ignore what was not asked
                }
                let cand = (e.learned, e.accepted.clone(), e.action.clone());
                match best.get(&e.position) {
                    Some((true, _, _)) => {}
                    Some((_, p, _)) if !e.learned && &e.accepted <= p => {}
                    _ => {
                        best.insert(e.position, cand);
                    }
                }
            }
        }
        let mut learned = Vec::new();
        let mut writes = Vec::new();
        for pos in from.max(dead_below)..to {
            if fx.replica.is_learned(pos) || self.in_flight.contains_key(&pos) {
                continue;
            }
            match best.remove(&pos) {
                Some((true, _, action)) => {
                    fx.replica.learn(pos, &action, None);
                    learned.push((pos, action));
                }
                Some((false, _, action)) => writes.push((pos, action)),
                None => writes.push((pos, Action::Nop)),
            }
        }
        // A recovering replica copies values its peers reported learned: sending
        // them back would only double the traffic of catch-up.
        if self.mode == Mode::Leader {
            self.broadcast_learned(fx, learned);
        }
        self.write(fx, writes, None);
        self.fill_cursor = to;
        self.read_range = None;
        self.reads.clear();
        self.issue_read(fx);
    }

    /// Starts Paxos phase 2 for `writes` (already assigned positions).
    fn write(&mut self, fx: &mut Effects, writes: Vec<(Position, Action)>, ticket: Option<u64>) {
        if writes.is_empty() {
            return;
        }
        let mut chosen = Vec::new();
        for (pos, action) in &writes {
            let mut acks = BTreeSet::new();
            let mut self_ack_epoch = None;
            if self.self_votes {
                if let Ok(true) = fx.replica.accept(&self.proposal, *pos, action) {
                    acks.insert(fx.me.clone());
                    self_ack_epoch = Some(fx.ready_epoch);
                }
            }
            self.in_flight.insert(
                *pos,
                InFlight {
                    action: action.clone(),
                    acks,
                    self_ack_epoch,
                    ticket,
                    sent_tick: fx.now,
                },
            );
            chosen.push(*pos);
        }
        for chunk in writes.chunks(MAX_BATCH_ENTRIES) {
            for peer in self.peers.clone() {
                fx.send_accept(
                    self.mode,
                    &peer,
                    Message::AcceptRequest {
                        proposal: self.proposal.clone(),
                        entries: chunk.to_vec(),
                    },
                );
            }
        }
        self.check_chosen(fx, chosen);
    }

    fn learn_quorum(&self, fx: &Effects) -> usize {
        if fx.planted_minority_learn {
            1
        } else {
            self.quorum
        }
    }

    fn check_chosen(&mut self, fx: &mut Effects, positions: Vec<Position>) {
        let q = self.learn_quorum(fx);
        let mut learned = Vec::new();
        for pos in positions {
            let done = self.in_flight.get(&pos).is_some_and(|f| f.acks.len() >= q);
            if !done {
                continue;
            }
            let Some(f) = self.in_flight.remove(&pos) else {
                continue;
            };
            debug_assert!(
                fx.planted_minority_learn || f.acks.len() >= self.quorum,
                "a value is chosen only by a quorum of acceptors"
            );
            // Chosen: a quorum accepted. Every remote accept was durable before
            // its response was sent; our own is durable once the epoch it was
            // recorded in has been handed out (the driver persists a Ready before
            // stepping the node again).
            let own_durable = f.self_ack_epoch.is_none_or(|e| e < fx.ready_epoch);
            if self.mode == Mode::Leader {
                // The learned mark can be derived again from the quorum of durable
                // accepts, so it need not be durable before the client hears.
                fx.replica.learn_lazily(pos, &f.action, &self.proposal);
            } else {
                // A recovering replica must hold what it recovered before it
                // votes: its learned marks stay in order with its status.
                fx.replica.learn(pos, &f.action, Some(&self.proposal));
            }
            if let Some(ticket) = f.ticket {
                let outcome = ProposalOutcome {
                    ticket,
                    result: Ok(pos),
                };
                if own_durable {
                    fx.outcomes_now.push(outcome);
                } else {
                    fx.outcomes.push(outcome);
                }
            }
            learned.push((pos, f.action));
        }
        self.broadcast_learned(fx, learned);
    }

    fn broadcast_learned(&mut self, fx: &mut Effects, learned: Vec<(Position, Action)>) {
        if learned.is_empty() {
            return;
        }
        for chunk in learned.chunks(MAX_BATCH_ENTRIES) {
            let members = fx.members;
            for m in members {
                if m != fx.me {
                    fx.send(
                        m,
                        Message::Learned {
                            entries: chunk.to_vec(),
                        },
                    );
                }
            }
        }
    }

    pub fn on_accept_response(
        &mut self,
        fx: &mut Effects,
        from: &MemberId,
        proposal: &Proposal,
        result: &Result<Vec<Position>, Option<Proposal>>,
        acceptor_begin: Position,
    ) -> Signal {
        if proposal != &self.proposal || !self.peers.contains(from) {
            return Signal::None;
        }
        if acceptor_begin > fx.replica.begin() && acceptor_begin < MAX_POSITION {
            // The acceptor truncated there after learning a truncate: positions
            // below are dead for everyone, so writes still in flight below it
            // (fill writes) can never complete and need not.
            fx.replica.truncate_below(acceptor_begin);
            let alive = self.in_flight.split_off(&acceptor_begin);
            for (_, f) in std::mem::replace(&mut self.in_flight, alive) {
                if let Some(ticket) = f.ticket {
                    fx.outcomes.push(ProposalOutcome {
                        ticket,
                        result: Err(ProposeError::Demoted),
                    });
                }
            }
            self.next_position = self.next_position.max(acceptor_begin);
        }
        match result {
            Ok(positions) => {
                self.started_tick = fx.now;
                let mut touched = Vec::new();
                for pos in positions.iter().take(MAX_BATCH_ENTRIES) {
                    if let Some(f) = self.in_flight.get_mut(pos) {
                        f.acks.insert(from.clone());
                        touched.push(*pos);
                    }
                }
                self.check_chosen(fx, touched);
                self.progress(fx)
            }
            Err(p) if self.higher(p) => Signal::Demoted(p.clone()),
            Err(_) => Signal::None,
        }
    }

    /// Queues a client action; `Err` if the queue is full.
    pub fn enqueue(
        &mut self,
        fx: &mut Effects,
        ticket: u64,
        action: Action,
    ) -> Result<(), ProposeError> {
        if self.mode != Mode::Leader {
            return Err(ProposeError::NotLeader { leader: None });
        }
        if self.queue.len() >= MAX_PENDING_PROPOSALS {
            return Err(ProposeError::Busy);
        }
        self.queue.push_back((ticket, action));
        self.pump(fx);
        Ok(())
    }

    /// Assigns positions to queued proposals while the window has room.
    fn pump(&mut self, fx: &mut Effects) {
        if self.phase != Phase::Serving || self.mode != Mode::Leader {
            return;
        }
        while !self.queue.is_empty() && self.in_flight.len() < MAX_WRITES_IN_FLIGHT {
            let room = (MAX_WRITES_IN_FLIGHT - self.in_flight.len()).min(MAX_BATCH_ENTRIES);
            let mut batch = Vec::new();
            while batch.len() < room {
                let Some((ticket, action)) = self.queue.pop_front() else {
                    break;
                };
                let pos = self.next_position;
                self.next_position += 1;
                let action = match action {
                    // A truncate never reaches above its own position.
                    Action::Truncate { to } => Action::Truncate { to: to.min(pos) },
                    a => a,
                };
                batch.push((ticket, pos, action));
            }
            // Write one at a time into in_flight (tickets differ), but send as a batch.
            let writes: Vec<(Position, Action)> =
                batch.iter().map(|(_, p, a)| (*p, a.clone())).collect();
            let mut positions = Vec::new();
            for (ticket, pos, action) in batch {
                let mut acks = BTreeSet::new();
                let mut self_ack_epoch = None;
                if let Ok(true) = fx.replica.accept(&self.proposal, pos, &action) {
                    acks.insert(fx.me.clone());
                    self_ack_epoch = Some(fx.ready_epoch);
                }
                self.in_flight.insert(
                    pos,
                    InFlight {
                        action,
                        acks,
                        self_ack_epoch,
                        ticket: Some(ticket),
                        sent_tick: fx.now,
                    },
                );
                positions.push(pos);
            }
            for peer in self.peers.clone() {
                fx.send_accept(
                    self.mode,
                    &peer,
                    Message::AcceptRequest {
                        proposal: self.proposal.clone(),
                        entries: writes.clone(),
                    },
                );
            }
            self.check_chosen(fx, positions);
        }
    }

    /// Moves the state machine along after any event.
    fn progress(&mut self, fx: &mut Effects) -> Signal {
        self.issue_read(fx);
        self.pump(fx);
        if self.mode == Mode::Recovery
            && self.phase == Phase::Serving
            && self.in_flight.is_empty()
            && fx.replica.learned_end() >= self.fill_end
        {
            return Signal::RecoveryDone;
        }
        Signal::None
    }

    pub fn tick(&mut self, fx: &mut Effects, heartbeat_interval_ticks: u64) -> Signal {
        let now = fx.now;
        if now.saturating_sub(self.last_send_tick) >= RETRY_TICKS {
            match self.phase {
                Phase::Promising => {
                    let recovery = self.mode == Mode::Recovery;
                    for peer in self.peers.clone() {
                        if !self.promised_by.contains(&peer) {
                            fx.send(
                                &peer,
                                Message::PromiseRequest {
                                    proposal: self.proposal.clone(),
                                    recovery,
                                },
                            );
                        }
                    }
                    self.last_send_tick = now;
                }
                Phase::Filling => self.send_reads(fx),
                Phase::Serving => self.last_send_tick = now,
            }
            // Resend stale writes to the peers that have not acked them.
            let mut per_peer: BTreeMap<MemberId, Vec<(Position, Action)>> = BTreeMap::new();
            for (pos, f) in self.in_flight.iter_mut() {
                if now.saturating_sub(f.sent_tick) < RETRY_TICKS {
                    continue;
                }
                f.sent_tick = now;
                for peer in &self.peers {
                    if !f.acks.contains(peer) {
                        per_peer
                            .entry(peer.clone())
                            .or_default()
                            .push((*pos, f.action.clone()));
                    }
                }
            }
            for (peer, entries) in per_peer {
                for chunk in entries.chunks(MAX_BATCH_ENTRIES) {
                    fx.send(
                        &peer,
                        Message::AcceptRequest {
                            proposal: self.proposal.clone(),
                            entries: chunk.to_vec(),
                        },
                    );
                }
            }
        }
        if heartbeat_interval_ticks > 0 && now.is_multiple_of(heartbeat_interval_ticks) {
            self.keepalive(fx);
        }
        self.progress(fx)
    }

    /// A leader's heartbeat round to every other member, at `fx.now`. Called from
    /// [`Coordinator::tick`], and by the driver while a slow persist holds its loop
    /// (see [`crate::log::node::Node::keepalive`]): a heartbeat depends on nothing
    /// being persisted, and one recorded at an older tick than it really left
    /// only shortens the lease its acknowledgements grant.
    pub fn keepalive(&mut self, fx: &mut Effects) {
        let now = fx.now;
        if self.mode == Mode::Leader && self.phase != Phase::Promising {
            self.heartbeat_seq += 1;
            let mut acks = BTreeSet::new();
            acks.insert(fx.me.clone());
            self.heartbeats.push_back((self.heartbeat_seq, now, acks));
            while self.heartbeats.len() > MAX_HEARTBEATS_TRACKED {
                self.heartbeats.pop_front();
            }
            let learned_end = fx.replica.learned_end();
            let members = fx.members;
            for m in members {
                if m != fx.me {
                    fx.send(
                        m,
                        Message::Heartbeat {
                            proposal: self.proposal.clone(),
                            seq: self.heartbeat_seq,
                            learned_end,
                        },
                    );
                }
            }
        }
    }

    /// A heartbeat acknowledgement; `lease_ticks` is how long a quorum of acks for
    /// a heartbeat sent at tick t lets the leader serve reads (until t + lease).
    pub fn on_heartbeat_response(
        &mut self,
        from: &MemberId,
        proposal: &Proposal,
        seq: u64,
        result: &Result<(), Option<Proposal>>,
        lease_ticks: u64,
    ) -> Signal {
        if proposal != &self.proposal || !self.peers.contains(from) {
            return Signal::None;
        }
        match result {
            Ok(()) => {
                let quorum = self.quorum;
                if let Some((_, sent, acks)) =
                    self.heartbeats.iter_mut().find(|(s, _, _)| *s == seq)
                {
                    acks.insert(from.clone());
                    if acks.len() >= quorum {
                        self.lease_until_tick = self.lease_until_tick.max(*sent + lease_ticks);
                    }
                }
                Signal::None
            }
            Err(p) if self.higher(p) => Signal::Demoted(p.clone()),
            Err(_) => Signal::None,
        }
    }

    /// Fails every client proposal still held (the coordinator is going away).
    /// In-flight ones may still be chosen later: the outcome is unknown to them.
    pub fn abandon(&mut self, outcomes: &mut Vec<ProposalOutcome>) {
        for (ticket, _) in self.queue.drain(..) {
            outcomes.push(ProposalOutcome {
                ticket,
                result: Err(ProposeError::Demoted),
            });
        }
        for (_, f) in std::mem::take(&mut self.in_flight) {
            if let Some(ticket) = f.ticket {
                outcomes.push(ProposalOutcome {
                    ticket,
                    result: Err(ProposeError::Demoted),
                });
            }
        }
    }

    /// Every position this coordinator filled is learned here.
    pub fn fill_learned(&self, replica: &Replica) -> bool {
        self.phase == Phase::Serving && replica.learned_end() >= self.fill_end
    }
}
