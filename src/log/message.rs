//! Messages between replicas. Every message travels in an [`Envelope`] that names
//! the sender and carries the sender's log id: a receiver refuses messages of
//! another log id and messages from members outside its whitelist.

use serde::{Deserialize, Serialize};

use super::types::{Action, LogId, MemberId, Position, Proposal, ReplicaStatus};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: MemberId,
    pub to: MemberId,
    /// The sender's log id; `None` only while the sender is not initialized (then
    /// only status messages are accepted from it).
    pub log_id: Option<LogId>,
    pub message: Message,
}

/// A value a replica holds at one position, as reported to a proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedEntry {
    pub position: Position,
    pub accepted: Proposal,
    pub action: Action,
    pub learned: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Recovery and auto-initialization probe. `incarnation` is fresh per process
    /// start, so answers to an older incarnation can be told apart.
    StatusRequest { nonce: u64, incarnation: u64 },
    StatusResponse {
        nonce: u64,
        /// The responder's own incarnation.
        incarnation: u64,
        status: ReplicaStatus,
        log_id: Option<LogId>,
        promised: Option<Proposal>,
        begin: Position,
        end: Position,
    },
    /// Phase 1 for every position at once. `recovery` marks a recovering replica's
    /// fill round, which followers grant even while they hear from a live leader
    /// (it only completes values already accepted or Nop; see `recovery.rs`).
    PromiseRequest { proposal: Proposal, recovery: bool },
    PromiseResponse {
        proposal: Proposal,
        outcome: PromiseOutcome,
    },
    /// Phase 1b per position under an already granted promise.
    ReadRequest {
        proposal: Proposal,
        from: Position,
        to: Position,
    },
    ReadResponse {
        proposal: Proposal,
        from: Position,
        to: Position,
        /// `Err(promised)` when the responder promised higher.
        result: Result<ReadReply, Option<Proposal>>,
    },
    /// Phase 2 for a batch of positions (implicit promise: no phase 1 per write).
    AcceptRequest {
        proposal: Proposal,
        entries: Vec<(Position, Action)>,
    },
    AcceptResponse {
        proposal: Proposal,
        /// `Ok(accepted positions)` or `Err(higher promise)`.
        result: Result<Vec<Position>, Option<Proposal>>,
        begin: Position,
    },
    /// Chosen values, broadcast by the proposer that learned them.
    Learned { entries: Vec<(Position, Action)> },
    /// Leader liveness and lease. `learned_end`: the leader's contiguous learned
    /// prefix, so followers with holes ask for catch-up.
    Heartbeat {
        proposal: Proposal,
        seq: u64,
        learned_end: Position,
    },
    HeartbeatResponse {
        proposal: Proposal,
        seq: u64,
        /// `Err(higher promise)` demotes the leader.
        result: Result<(), Option<Proposal>>,
    },
    /// Ask for learned values in `[from, to)`.
    CatchupRequest { from: Position, to: Position },
    CatchupResponse {
        /// The responder's truncation point: positions below it are gone.
        begin: Position,
        entries: Vec<(Position, Action)>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromiseOutcome {
    /// Promised; `begin`/`end` bound what the responder holds.
    Promised { begin: Position, end: Position },
    /// Promised higher already.
    Rejected { promised: Option<Proposal> },
    /// Still hears from a live leader (its lease), or is not voting.
    Refused,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReply {
    pub begin: Position,
    pub entries: Vec<ReportedEntry>,
}

impl Message {
    /// Messages a non-initialized replica may exchange.
    pub fn is_status(&self) -> bool {
        matches!(
            self,
            Message::StatusRequest { .. } | Message::StatusResponse { .. }
        )
    }

    /// A vote: something only a `Voting` replica may send.
    pub fn is_vote(&self) -> bool {
        match self {
            Message::PromiseResponse { outcome, .. } => {
                matches!(outcome, PromiseOutcome::Promised { .. })
            }
            Message::AcceptResponse { result, .. } => result.is_ok(),
            Message::ReadResponse { result, .. } => result.is_ok(),
            Message::HeartbeatResponse { result, .. } => result.is_ok(),
            _ => false,
        }
    }
}
