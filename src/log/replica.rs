//! The acceptor and learner: the replica's durable state and the Paxos rules for
//! changing it. Every change is recorded as a [`PersistOp`] that the driver makes
//! durable before any message that depends on it leaves the node.

use std::collections::BTreeMap;

use super::message::ReportedEntry;
use super::types::{
    Action, DurableState, Entry, LogId, Metadata, PersistOp, Position, Proposal, ReplicaStatus,
    MAX_POSITION,
};

/// Lazy learned marks held at most before they are written on their own.
pub const MAX_LAZY_LEARNED: usize = 4096;

#[derive(Clone, Debug)]
pub struct Replica {
    meta: Metadata,
    entries: BTreeMap<Position, Entry>,
    /// Operations not yet handed to the driver.
    pending: Vec<PersistOp>,
    /// Positions learned by [`Replica::learn_lazily`] whose learned mark is not
    /// handed to the driver yet: it rides with the next batch that has to be
    /// written anyway (or the next tick), instead of costing an fsync of its own.
    lazy_learned: Vec<LazyMark>,
    /// The highest position given a [`LazyMark::Covered`] since this replica
    /// started: while the learned prefix on disk is below it, a mark is waiting
    /// for the prefix to reach it.
    highest_covered: Option<Position>,
    /// Positions below this are all learned (or truncated): the learned prefix.
    learned_end: Position,
    /// Learned values that contradicted a learned position (a broken peer).
    pub conflicting_learns: u64,
    /// The simulator's self-test: a lazy mark counts as covered by the learned
    /// prefix whatever value is on disk (a bug).
    #[doc(hidden)]
    pub planted_prefix_over_any_value: bool,
}

/// How a lazily learned position's mark reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LazyMark {
    /// The entry on disk (or ahead of the mark in the queue) already holds the
    /// learned value: [`Metadata::learned_below`] covers it once the learned
    /// prefix reaches it, and the value is not written again.
    Covered(Position),
    /// The learned value is not what this replica accepted there (or it accepted
    /// nothing): the whole entry is written.
    Whole(Position),
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
            lazy_learned: Vec::new(),
            highest_covered: None,
            learned_end: 0,
            conflicting_learns: 0,
            planted_prefix_over_any_value: false,
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

    /// The operations to make durable now. Lazy learned marks join a batch that
    /// is written anyway, after its other operations (so a mark is never
    /// overwritten on disk by the accept it follows), or alone once too many wait.
    pub fn take_pending(&mut self) -> Vec<PersistOp> {
        if !self.pending.is_empty() || self.lazy_learned.len() >= MAX_LAZY_LEARNED {
            self.flush_lazy_learned();
        }
        std::mem::take(&mut self.pending)
    }

    /// Hands every lazy learned mark to the next batch (the driver's tick calls
    /// this, so an idle log writes them within one tick): the entries whose
    /// learned value is not on disk, then the learned prefix as
    /// [`Metadata::learned_below`]. The prefix goes last, once every value under
    /// it is on disk or ahead of it in this batch or an earlier one. A covered
    /// mark above a gap waits for the gap to be learned, then goes with the next
    /// batch or tick (losing it in a crash loses nothing, as for every lazy mark).
    /// Without lazy marks, waiting or new, nothing is written: what was learned
    /// eagerly (a recovering replica's catch-up) carries its own mark.
    pub fn flush_lazy_learned(&mut self) {
        let marks_waiting = self
            .highest_covered
            .is_some_and(|position| position >= self.meta.learned_below);
        if self.lazy_learned.is_empty() && !marks_waiting {
            return;
        }
        for mark in std::mem::take(&mut self.lazy_learned) {
            let LazyMark::Whole(position) = mark else {
                continue;
            };
            // Truncated since: nothing to write (the truncation is in `pending`).
            if let Some(e) = self.entries.get(&position).filter(|e| e.learned) {
                self.pending.push(PersistOp::PutEntry(e.clone()));
            }
        }
        if self.learned_end > self.meta.learned_below {
            let mut m = self.meta.clone();
            m.learned_below = self.learned_end;
            self.set_meta(m);
        }
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
        Ok(self.read_within(proposal, from, to, usize::MAX)?.0)
    }

    /// [`Replica::read`] bounded by `max_bytes` of values (the first entry always
    /// goes): the entries and the end of the range they cover, `to` unless cut.
    pub fn read_within(
        &self,
        proposal: &Proposal,
        from: Position,
        to: Position,
        max_bytes: usize,
    ) -> Result<(Vec<ReportedEntry>, Position), VoteRefusal> {
        if self.meta.status != ReplicaStatus::Voting {
            return Err(VoteRefusal::NotVoting);
        }
        if self.meta.promised.as_ref() != Some(proposal) {
            return Err(VoteRefusal::Promised(self.meta.promised.clone()));
        }
        let lo = from.max(self.meta.begin);
        let mut entries = Vec::new();
        let mut total_bytes = 0usize;
        for e in self.entries.range(lo..to.max(lo)).map(|(_, e)| e) {
            total_bytes = total_bytes.saturating_add(e.action.size_bytes());
            if !entries.is_empty() && total_bytes > max_bytes {
                return Ok((entries, e.position));
            }
            entries.push(ReportedEntry {
                position: e.position,
                accepted: e.accepted.clone(),
                action: e.action.clone(),
                learned: e.learned,
            });
        }
        Ok((entries, to))
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
        self.record_learned(position, action, proposal, false);
    }

    /// Records a value this replica's coordinator saw chosen by a quorum of
    /// *durable* accepts under `proposal`, without making the learned mark durable
    /// before anything else: the mark is derivable from those accepts (after a
    /// crash the promise/fill path finds the value among any quorum and chooses it
    /// again), so clients may be answered before it is written. It is written with
    /// the next batch (see [`Replica::take_pending`]).
    pub fn learn_lazily(&mut self, position: Position, action: &Action, proposal: &Proposal) {
        self.record_learned(position, action, Some(proposal), true);
    }

    /// Records a value a leader announced as chosen ([`super::message::Message::Learned`]),
    /// with the mark written lazily like [`Replica::learn_lazily`]'s. Only for a
    /// `Voting` replica: what makes the value safe is the quorum of durable
    /// accepts the leader counted, not this copy, so losing the mark in a crash
    /// loses nothing (the replica learns it again by catch-up or fill). A
    /// recovering replica's copies must be durable before it votes, so it learns
    /// eagerly ([`Replica::learn`]). Without this, every append cost each
    /// follower a second fdatasync of its own, on the path of the next append.
    pub fn learn_announced(&mut self, position: Position, action: &Action) {
        let lazily = self.meta.status == ReplicaStatus::Voting;
        self.record_learned(position, action, None, lazily);
    }

    fn record_learned(
        &mut self,
        position: Position,
        action: &Action,
        proposal: Option<&Proposal>,
        lazily: bool,
    ) {
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
        if lazily {
            let covered = self
                .entries
                .get(&position)
                .is_some_and(|held| held.action == e.action || self.planted_prefix_over_any_value);
            self.lazy_learned.push(if covered {
                self.highest_covered = self.highest_covered.max(Some(position));
                LazyMark::Covered(position)
            } else {
                LazyMark::Whole(position)
            });
            self.entries.insert(position, e);
        } else {
            self.entries.insert(position, e.clone());
            self.pending.push(PersistOp::PutEntry(e));
        }
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
        self.learned_range_within(from, to, usize::MAX)
    }

    /// [`Replica::learned_range`] bounded by `max_bytes` of values (the first
    /// entry always goes), for catch-up replies.
    pub fn learned_range_within(
        &self,
        from: Position,
        to: Position,
        max_bytes: usize,
    ) -> Vec<(Position, Action)> {
        let lo = from.max(self.meta.begin);
        let mut out = Vec::new();
        let mut total_bytes = 0usize;
        for e in self.entries.range(lo..to.max(lo)).map(|(_, e)| e) {
            if !e.learned {
                continue;
            }
            total_bytes = total_bytes.saturating_add(e.action.size_bytes());
            if !out.is_empty() && total_bytes > max_bytes {
                break;
            }
            out.push((e.position, e.action.clone()));
        }
        out
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

    /// The learned prefix a batch writes, if it writes one.
    fn learned_below_in(batch: &[PersistOp]) -> Option<Position> {
        batch.iter().rev().find_map(|op| match op {
            PersistOp::SetMetadata(m) => Some(m.learned_below),
            _ => None,
        })
    }

    fn learned_puts(batch: &[PersistOp]) -> Vec<Position> {
        batch
            .iter()
            .filter_map(|op| match op {
                PersistOp::PutEntry(e) if e.learned => Some(e.position),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_lazy_learned_mark_rides_after_the_next_batch_as_the_learned_prefix() {
        let mut r = voting();
        let _ = r.take_pending();
        let a = Action::Append(b"a".to_vec().into());
        assert_eq!(r.accept(&p(1, "a"), 0, &a), Ok(true));
        assert_eq!(r.accept(&p(1, "a"), 1, &a), Ok(true));
        let accepts = r.take_pending();
        let puts = accepts
            .iter()
            .filter(|op| matches!(op, PersistOp::PutEntry(_)))
            .count();
        assert_eq!(puts, 2);
        r.learn_lazily(0, &a, &p(1, "a"));
        r.learn_lazily(1, &a, &p(1, "a"));
        // Learned at once in memory, but nothing of its own to write.
        assert_eq!(r.learned_end(), 2);
        assert!(!r.has_pending());
        assert!(r.take_pending().is_empty());
        // The next batch carries the marks after its own operations: the values
        // accepted are the values learned, so only the prefix is written, last.
        assert_eq!(r.accept(&p(1, "a"), 2, &a), Ok(true));
        r.truncate_below(1);
        let batch = r.take_pending();
        assert_eq!(learned_puts(&batch), Vec::<Position>::new(), "{batch:?}");
        assert!(
            matches!(batch.last(), Some(PersistOp::SetMetadata(m)) if m.learned_below == 2 && m.begin == 1),
            "{batch:?}"
        );
        // An idle replica writes them when flushed (each tick).
        r.learn_lazily(2, &a, &p(1, "a"));
        r.flush_lazy_learned();
        assert!(r.has_pending());
        assert_eq!(learned_below_in(&r.take_pending()), Some(3));
        // Nothing new learned: a tick writes nothing.
        r.flush_lazy_learned();
        assert!(!r.has_pending());
    }

    #[test]
    fn a_lazily_learned_value_not_accepted_here_is_written_whole_before_the_prefix() {
        let a = Action::Append(b"a".to_vec().into());
        let b = Action::Append(b"b".to_vec().into());
        let mut storage = DurableState::default();
        let mut r = voting();
        assert_eq!(r.accept(&p(1, "a"), 0, &a), Ok(true));
        assert_eq!(r.accept(&p(1, "a"), 1, &a), Ok(true));
        for op in r.take_pending() {
            storage.apply(&op);
        }
        // 0 as accepted; 1 chosen with another value than this replica accepted;
        // 2 never accepted here; 4 above a gap at 3.
        r.learn_announced(0, &a);
        r.learn_announced(1, &b);
        r.learn_announced(2, &a);
        assert_eq!(r.accept(&p(1, "a"), 4, &a), Ok(true));
        r.learn_announced(4, &a);
        let batch = r.take_pending();
        assert_eq!(learned_puts(&batch), vec![1, 2], "{batch:?}");
        assert_eq!(learned_below_in(&batch), Some(3));
        assert!(matches!(batch.last(), Some(PersistOp::SetMetadata(_))));
        for op in &batch {
            storage.apply(op);
        }
        // What a restart reads is what was learned: 4's mark waited for the gap.
        let reloaded = Replica::from_durable(storage.clone());
        assert_eq!(reloaded.learned_end(), 3);
        for (position, action) in [(0, &a), (1, &b), (2, &a)] {
            assert!(reloaded.is_learned(position));
            assert_eq!(&reloaded.entry(position).expect("held").action, action);
        }
        assert!(!reloaded.is_learned(4));
        // Once the gap is learned (eagerly: its entry carries its own mark), the
        // next batch's prefix covers the waiting mark at 4 as well.
        r.learn(3, &a, None);
        let batch = r.take_pending();
        assert_eq!(learned_puts(&batch), vec![3]);
        assert_eq!(learned_below_in(&batch), Some(5));
        for op in &batch {
            storage.apply(op);
        }
        // No mark waits any more: a tick writes nothing.
        r.flush_lazy_learned();
        assert!(!r.has_pending());
        for op in &batch {
            storage.apply(op);
        }
        assert_eq!(Replica::from_durable(storage).learned_end(), 5);
    }

    #[test]
    fn an_announced_value_is_marked_lazily_when_voting_and_at_once_when_recovering() {
        let a = Action::Append(b"a".to_vec().into());
        let mut r = voting();
        let _ = r.take_pending();
        assert_eq!(r.accept(&p(1, "a"), 0, &a), Ok(true));
        let _ = r.take_pending();
        r.learn_announced(0, &a);
        // Learned in memory, nothing of its own to write: the mark waits for the
        // next batch (the next accept) or the next tick.
        assert_eq!(r.learned_end(), 1);
        assert!(!r.has_pending());
        assert_eq!(r.accept(&p(1, "a"), 1, &a), Ok(true));
        let batch = r.take_pending();
        assert!(
            matches!(batch.as_slice(), [PersistOp::PutEntry(e1), PersistOp::SetMetadata(m)]
                if e1.position == 1 && !e1.learned && m.learned_below == 1),
            "{batch:?}"
        );

        let mut r = Replica::from_durable(DurableState::default());
        r.set_status(ReplicaStatus::Recovering, Some(LogId(1)));
        let _ = r.take_pending();
        r.learn_announced(0, &a);
        assert_eq!(r.learned_end(), 1);
        assert!(
            matches!(r.take_pending().as_slice(), [PersistOp::PutEntry(e)] if e.learned),
            "a recovering replica writes what it learns, with its mark, before anything else"
        );
    }

    #[test]
    fn reads_and_catchup_replies_are_bounded_by_bytes_and_say_what_they_cover() {
        let mut r = voting();
        let big = Action::Append(vec![7; MAX_BYTES_IN_TEST].into());
        for pos in 0..4 {
            r.learn(pos, &big, None);
        }
        assert!(r.promise(&p(1, "a")).is_ok());
        let (entries, covered) = r
            .read_within(&p(1, "a"), 0, 4, 2 * MAX_BYTES_IN_TEST + 100)
            .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(covered, 2);
        // The first entry always goes, however large.
        let (entries, covered) = r.read_within(&p(1, "a"), 1, 4, 1).unwrap();
        assert_eq!((entries.len(), covered), (1, 2));
        let (entries, covered) = r.read_within(&p(1, "a"), 0, 4, usize::MAX).unwrap();
        assert_eq!((entries.len(), covered), (4, 4));
        assert_eq!(r.learned_range_within(0, 4, 1).len(), 1);
        assert_eq!(
            r.learned_range_within(0, 4, 3 * MAX_BYTES_IN_TEST + 200)
                .len(),
            3
        );
    }

    const MAX_BYTES_IN_TEST: usize = 1000;

    #[test]
    fn a_learned_position_is_never_overwritten() {
        let mut r = voting();
        r.learn(0, &Action::Append(b"x".to_vec().into()), None);
        assert_eq!(r.accept(&p(9, "a"), 0, &Action::Nop), Ok(false));
        r.learn(0, &Action::Nop, None);
        assert_eq!(
            r.entry(0).map(|e| e.action.clone()),
            Some(Action::Append(b"x".to_vec().into()))
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
