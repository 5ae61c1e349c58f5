//! The acceptor and learner: the replica's durable state and the Paxos rules for
//! changing it. Every change is recorded as a [`PersistOp`] that the driver makes
//! durable before any message that depends on it leaves the node.

use std::collections::BTreeMap;

use super::message::ReportedEntry;
use super::types::{
    Action, DurableState, Entry, LogId, Metadata, PersistOp, Position, Proposal, ReplicaStatus,
    MAX_POSITION,
};

#[derive(Clone, Debug)]
pub struct Replica {
    meta: Metadata,
    entries: BTreeMap<Position, Entry>,
    /// Operations not yet handed to the driver.
    pending: Vec<PersistOp>,
    /// Positions below this are all learned (or truncated): the learned prefix.
    learned_end: Position,
    /// Learned values that contradicted a learned position (a broken peer).
    pub conflicting_learns: u64,
}

/// Why a replica refused to vote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoteRefusal {
    NotVoting,
    /// Promised a higher proposal (carried so the proposer can outbid it).
    Promised(Option<Proposal>),
}

impl Replica {
    pub fn from_durable(state: DurableState) -> Self {
        let mut r = Replica {
            meta: state.metadata,
            entries: state.entries.into_iter().map(|e| (e.position, e)).collect(),
            pending: Vec::new(),
            learned_end: 0,
            conflicting_learns: 0,
        };
        r.learned_end = r.meta.begin;
        r.advance_learned_end();
        r
    }

    pub fn status(&self) -> ReplicaStatus {
        self.meta.status
    }
    pub fn log_id(&self) -> Option<LogId> {
        self.meta.log_id
    }
    pub fn promised(&self) -> Option<&Proposal> {
        self.meta.promised.as_ref()
    }
    pub fn begin(&self) -> Position {
        self.meta.begin
    }
    /// One past the highest position held.
    pub fn end(&self) -> Position {
        self.entries
            .keys()
            .next_back()
            .map_or(self.meta.begin, |p| p + 1)
            .max(self.meta.begin)
    }
    /// Every position below this is learned here.
    pub fn learned_end(&self) -> Position {
        self.learned_end
    }
    pub fn entry(&self, position: Position) -> Option<&Entry> {
        self.entries.get(&position)
    }
    pub fn is_learned(&self, position: Position) -> bool {
        position < self.meta.begin || self.entries.get(&position).is_some_and(|e| e.learned)
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn take_pending(&mut self) -> Vec<PersistOp> {
        std::mem::take(&mut self.pending)
    }

    fn set_meta(&mut self, meta: Metadata) {
        self.meta = meta;
        self.pending.push(PersistOp::SetMetadata(self.meta.clone()));
    }

    /// Status transitions; each is durable before anything depending on it.
    pub fn set_status(&mut self, status: ReplicaStatus, log_id: Option<LogId>) {
        debug_assert!(
            !(self.meta.status == ReplicaStatus::Voting && status != ReplicaStatus::Voting),
            "a Voting replica never steps back (only a wipe resets it)"
        );
        let mut m = self.meta.clone();
        m.status = status;
        if log_id.is_some() {
            m.log_id = log_id;
        }
        self.set_meta(m);
    }

    /// Raises the promise without voting (a recovering replica adopting the
    /// promise it needs before it may vote).
    pub fn raise_promise(&mut self, proposal: &Proposal) {
        if self.meta.promised.as_ref() < Some(proposal) {
            let mut m = self.meta.clone();
            m.promised = Some(proposal.clone());
            self.set_meta(m);
        }
    }

    /// Phase 1b: promise `proposal` for every position.
    pub fn promise(&mut self, proposal: &Proposal) -> Result<(Position, Position), VoteRefusal> {
        if self.meta.status != ReplicaStatus::Voting {
            return Err(VoteRefusal::NotVoting);
        }
        if self.meta.promised.as_ref() > Some(proposal) {
            return Err(VoteRefusal::Promised(self.meta.promised.clone()));
        }
        self.raise_promise(proposal);
        debug_assert!(self.meta.promised.as_ref() >= Some(proposal));
        Ok((self.begin(), self.end()))
    }

    /// Phase 1b per position: what was accepted in `[from, to)`, valid only while
    /// the promise is still `proposal`.
    pub fn read(
        &self,
        proposal: &Proposal,
        from: Position,
        to: Position,
    ) -> Result<Vec<ReportedEntry>, VoteRefusal> {
        if self.meta.status != ReplicaStatus::Voting {
            return Err(VoteRefusal::NotVoting);
        }
        if self.meta.promised.as_ref() != Some(proposal) {
            return Err(VoteRefusal::Promised(self.meta.promised.clone()));
        }
        let lo = from.max(self.meta.begin);
        Ok(self
            .entries
            .range(lo..to.max(lo))
            .map(|(_, e)| ReportedEntry {
                position: e.position,
                accepted: e.accepted.clone(),
                action: e.action.clone(),
                learned: e.learned,
            })
            .collect())
    }

    /// Phase 2b for one position. Returns Ok(true) if accepted (or already learned
    /// with the same action), Ok(false) if the position is truncated or learned
    /// with another action (never overwritten).
    pub fn accept(
        &mut self,
        proposal: &Proposal,
        position: Position,
        action: &Action,
    ) -> Result<bool, VoteRefusal> {
        if self.meta.status != ReplicaStatus::Voting {
            return Err(VoteRefusal::NotVoting);
        }
        if self.meta.promised.as_ref() > Some(proposal) {
            return Err(VoteRefusal::Promised(self.meta.promised.clone()));
        }
        if position < self.meta.begin || position >= MAX_POSITION {
            return Ok(false);
        }
        self.raise_promise(proposal);
        if let Some(e) = self.entries.get(&position) {
            if e.learned {
                return Ok(&e.action == action);
            }
            if &e.accepted == proposal && &e.action == action {
                return Ok(true);
            }
        }
        let e = Entry {
            position,
            accepted: proposal.clone(),
            action: action.clone(),
            learned: false,
        };
        self.entries.insert(position, e.clone());
        self.pending.push(PersistOp::PutEntry(e));
        Ok(true)
    }

    /// Records a chosen value. Copying learned values is always safe, whatever
    /// the status. A learned position is never overwritten.
    pub fn learn(&mut self, position: Position, action: &Action, proposal: Option<&Proposal>) {
        if position < self.meta.begin || position >= MAX_POSITION {
            return;
        }
        if let Some(e) = self.entries.get(&position) {
            if e.learned {
                if &e.action != action {
                    self.conflicting_learns += 1;
                }
                return;
            }
        }
        let accepted = match (self.entries.get(&position), proposal) {
            (_, Some(p)) => p.clone(),
            (Some(e), None) => e.accepted.clone(),
            (None, None) => Proposal {
                round: 0,
                proposer: super::types::MemberId(String::new()),
            },
        };
        let e = Entry {
            position,
            accepted,
            action: action.clone(),
            learned: true,
        };
        self.entries.insert(position, e.clone());
        self.pending.push(PersistOp::PutEntry(e));
        self.advance_learned_end();
        debug_assert!(self.is_learned(position));
    }

    fn advance_learned_end(&mut self) {
        self.learned_end = self.learned_end.max(self.meta.begin);
        while self
            .entries
            .get(&self.learned_end)
            .is_some_and(|e| e.learned)
        {
            self.learned_end += 1;
        }
    }

    /// Drops every position below `to`. Only called once a `Truncate { to }` is
    /// learned and applied (or a peer reports it truncated there, which it did
    /// only after learning such a truncate).
    pub fn truncate_below(&mut self, to: Position) {
        if to <= self.meta.begin || to >= MAX_POSITION {
            return;
        }
        let mut m = self.meta.clone();
        m.begin = to;
        self.set_meta(m);
        self.entries = self.entries.split_off(&to);
        self.pending.push(PersistOp::TruncateBelow(to));
        self.advance_learned_end();
    }

    /// Learned values in `[from, to)`, for catch-up.
    pub fn learned_range(&self, from: Position, to: Position) -> Vec<(Position, Action)> {
        let lo = from.max(self.meta.begin);
        self.entries
            .range(lo..to.max(lo))
            .filter(|(_, e)| e.learned)
            .map(|(p, e)| (*p, e.action.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::types::MemberId;

    fn p(round: u64, who: &str) -> Proposal {
        Proposal {
            round,
            proposer: MemberId::new(who),
        }
    }

    fn voting() -> Replica {
        let mut r = Replica::from_durable(DurableState::default());
        r.set_status(ReplicaStatus::Voting, Some(LogId(1)));
        r
    }

    #[test]
    fn only_voting_replicas_vote() {
        let mut r = Replica::from_durable(DurableState::default());
        assert_eq!(r.promise(&p(1, "a")), Err(VoteRefusal::NotVoting));
        assert_eq!(
            r.accept(&p(1, "a"), 0, &Action::Nop),
            Err(VoteRefusal::NotVoting)
        );
    }

    #[test]
    fn a_lower_proposal_is_rejected_after_a_promise() {
        let mut r = voting();
        assert!(r.promise(&p(2, "b")).is_ok());
        assert_eq!(
            r.promise(&p(1, "z")),
            Err(VoteRefusal::Promised(Some(p(2, "b"))))
        );
        assert!(r.accept(&p(1, "z"), 0, &Action::Nop).is_err());
        assert_eq!(r.accept(&p(2, "b"), 0, &Action::Nop), Ok(true));
    }

    #[test]
    fn a_learned_position_is_never_overwritten() {
        let mut r = voting();
        r.learn(0, &Action::Append(b"x".to_vec()), None);
        assert_eq!(r.accept(&p(9, "a"), 0, &Action::Nop), Ok(false));
        r.learn(0, &Action::Nop, None);
        assert_eq!(
            r.entry(0).map(|e| e.action.clone()),
            Some(Action::Append(b"x".to_vec()))
        );
        assert_eq!(r.conflicting_learns, 1);
        assert_eq!(r.learned_end(), 1);
    }

    #[test]
    fn truncation_drops_the_prefix() {
        let mut r = voting();
        for i in 0..5 {
            r.learn(i, &Action::Nop, None);
        }
        r.truncate_below(3);
        assert_eq!(r.begin(), 3);
        assert!(r.entry(2).is_none());
        assert_eq!(r.learned_end(), 5);
    }
}
