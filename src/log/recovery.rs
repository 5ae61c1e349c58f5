//! Recovery, catch-up and auto-initialization: how a replica that may not vote
//! (`Empty`, `Starting`, `Recovering`) becomes `Voting` without breaking Paxos.
//!
//! # Recovery of an `Empty` replica (new or wiped)
//!
//! A wiped replica has forgotten its promises and its votes: it may have been part
//! of a quorum that chose a value, or of an accept quorum still being completed by
//! an old proposer whose messages are in flight. Rule (whitelist size
//! `n <= 2q - 1`):
//!
//! 1. It probes every member for status and waits for `q` **other** `Voting`
//!    members of one log id (it adopts that id and becomes `Recovering`).
//! 2. It runs a full proposer round with a fresh proposal `P*` above every promise
//!    it saw, using the *other* members as acceptors and `q` of them as quorum:
//!    promise round, then it reads and Paxos-fills every position up to the
//!    highest end among the `q` promise responses, learning each locally.
//! 3. It adopts `P*` as its own promise and only then becomes `Voting`.
//!
//! Before step 2, a replica more than `RECOVERY_CATCHUP_MIN_POSITIONS` behind the
//! most advanced `Voting` peer of the probe copies that peer's learned values with
//! catch-up requests (pipelined, bounded by bytes, each batch written once). This
//! changes nothing below: copying chosen values is always safe and casts no
//! vote, and step 2 still runs over every position, skipping only those now
//! learned. It makes the round short: reading a whole log from a quorum moved
//! every byte twice, and a round that long was outbid by elections and restarted.
//!
//! Why this is safe. Any quorum the replica took part in before the wipe has
//! `q - 1` other members; the `q` other promisers of step 2 intersect it because
//! `q + (q - 1) > n - 1`. So (a) every value chosen with its forgotten vote was
//! accepted by some promiser *before* it promised `P*` (after promising it rejects
//! lower proposals): the promiser's end lies above that position, the fill covers
//! it, and standard Paxos makes `P*` re-propose the chosen value; (b) an old
//! proposer's write that is still in flight can no longer be completed at a
//! position the fill did not cover, because completing it needs an acceptor of
//! that intersection to accept a proposal below `P*`; (c) every proposal the
//! replica voted for was promised by a quorum, which intersects the promisers, so
//! `P*` exceeds it and the adopted promise forbids voting below it. Promisers
//! grant a recovery proposal only if it is *strictly* above their promise: the
//! wiped replica may have used the very same proposal number before the wipe,
//! and one proposal number must never carry two values at one position.
//! Note: the ends must come from the promise responses of `P*` itself, not from
//! an earlier status probe: between a probe and the fill an old proposer could
//! still complete a write that counts the forgotten vote.
//!
//! The recovery promise round is flagged `recovery` so followers grant it even
//! while a leader's lease is live: it creates no new client value (it completes
//! values already accepted, or `Nop`), so a read served under the lease stays
//! linearizable; at worst it demotes the leader.
//!
//! # Catch-up of a lagging `Voting` replica
//!
//! Heartbeats carry the leader's learned prefix; a follower with holes below it
//! asks the leader for learned values (`CatchupRequest`, at most
//! [`MAX_CATCHUP_ENTRIES`] per answer, bounded by bytes), and asks for the next
//! batch as soon as one arrives, while it is being written. Copying learned values is always safe:
//! they are chosen. A request below the leader's truncation point is answered
//! with that point; the follower drops everything below it (the leader truncated
//! only after learning a `Truncate` there) and its application restores from the
//! snapshot entry the registry wrote at or after it (`NodeEvent::SkippedTo`).
//!
//! # 1 → 3 without a wipe
//!
//! Two `Empty` members next to one `Voting` member with quorum 2 see one `Voting`
//! member, fewer than `q = 2` others: they wait. That is a liveness failure, not a
//! safety one; there is no shortcut here (a lone `Voting` member cannot tell a
//! wiped quorum peer from a brand-new one).
//!
//! # Auto-initialization and the log id
//!
//! With `auto_initialize`, a replica moves `Empty → Starting` only when **every**
//! other whitelist member answered its current probe `Empty` or `Starting`, and
//! `Starting → Voting` in one of two ways:
//!
//! * the smallest member address, seeing every other member `Starting`, draws the
//!   log id and becomes `Voting` — it is the only member that ever originates an
//!   id, so two ids cannot be originated concurrently;
//! * any other `Starting` member adopts the id of a `Voting` member it hears from.
//!   A `Starting` replica has never voted, so promoting it with an empty acceptor
//!   state is indistinguishable from an acceptor that never got a message.
//!
//! An `Empty` member that hears of any `Voting` member never initializes: it
//! recovers. A log holding data anywhere is therefore never re-initialized: data
//! needs a `Voting` quorum, and a `Voting` replica answers `Voting` until wiped.
//!
//! The race: the smallest member M initializes (id A), is wiped before the others
//! adopt A, restarts and — seeing everyone still `Starting` — originates id B.
//! Someone could then adopt the stale A from M's old answer. Every probe carries
//! the sender's *incarnation* (fresh entropy per start). A replica that answered a
//! probe of M's new incarnation retires M's older incarnations and ignores their
//! late answers. M originates B only after every other member answered M's new
//! probe `Starting`, so none of them adopted A before answering, and none adopts A
//! after. (With more than one member losing its disk at once — beyond the `q - 1`
//! failures the ensemble tolerates — no such guarantee exists.)

use std::collections::BTreeMap;

use super::types::{LogId, MemberId, Position, Proposal, ReplicaStatus};

/// Incarnations remembered per peer as retired.
pub const MAX_RETIRED_INCARNATIONS: usize = 8;
/// Learned entries per catch-up response (and at most
/// [`MAX_REPLY_BYTES`](super::coordinator::MAX_REPLY_BYTES) of them): enough that
/// small entries also travel in large batches, one fsync each at the receiver.
pub const MAX_CATCHUP_ENTRIES: u64 = 4096;

/// One peer's answer to the current probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub status: ReplicaStatus,
    pub log_id: Option<LogId>,
    pub promised: Option<Proposal>,
    pub begin: Position,
    pub end: Position,
}

/// The status probe of one incarnation. Rounds are re-sent every few ticks (an
/// answer may be lost); each peer's newest answer to *this incarnation* is kept,
/// since only answers given after this process started say anything about the
/// present (see the wipe race above). Nonce of round r: `base + r`.
#[derive(Clone, Debug, Default)]
pub struct Probe {
    pub base: u64,
    pub round: u64,
    pub sent_tick: u64,
    pub answers: BTreeMap<MemberId, PeerStatus>,
    pub answer_rounds: BTreeMap<MemberId, u64>,
}

impl Probe {
    pub fn nonce(&self) -> u64 {
        self.base.wrapping_add(self.round)
    }

    /// Records an answer to nonce `nonce`; false if it answers no round of ours.
    pub fn record(&mut self, from: &MemberId, nonce: u64, status: PeerStatus) -> bool {
        let round = nonce.wrapping_sub(self.base);
        if round > self.round {
            return false;
        }
        if self.answer_rounds.get(from).is_some_and(|r| *r > round) {
            return true; // older than what we have
        }
        self.answer_rounds.insert(from.clone(), round);
        self.answers.insert(from.clone(), status);
        true
    }

    pub fn forget(&mut self, from: &MemberId) {
        self.answers.remove(from);
        self.answer_rounds.remove(from);
    }
}

/// What a non-voting replica should do, given the answers so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Wait,
    /// `Starting` hears a `Voting` member: adopt its id and vote.
    Adopt(LogId),
    /// Enough `Voting` peers: recover against them with a proposal above `round`.
    Recover {
        log_id: LogId,
        above_round: u64,
    },
    /// All members `Empty`/`Starting`: move `Empty → Starting`.
    Start,
    /// All members `Starting` and this is the smallest member: originate a log id.
    Initialize,
}

/// Tracks peer incarnations so late answers of a restarted peer are ignored.
#[derive(Clone, Debug, Default)]
pub struct Incarnations {
    peers: BTreeMap<MemberId, (u64, Vec<u64>)>,
}

impl Incarnations {
    /// Records `incarnation` as `peer`'s current one; false if it was retired.
    pub fn observe(&mut self, peer: &MemberId, incarnation: u64) -> bool {
        match self.peers.get_mut(peer) {
            None => {
                self.peers.insert(peer.clone(), (incarnation, Vec::new()));
                true
            }
            Some((current, retired)) => {
                if *current == incarnation {
                    return true;
                }
                if retired.contains(&incarnation) {
                    return false;
                }
                retired.push(*current);
                if retired.len() > MAX_RETIRED_INCARNATIONS {
                    retired.remove(0);
                }
                *current = incarnation;
                true
            }
        }
    }
}

/// The pure decision rule (see the module docs for the argument).
pub fn decide(
    me: &MemberId,
    members: &[MemberId],
    quorum: usize,
    my_status: ReplicaStatus,
    my_log_id: Option<LogId>,
    auto_initialize: bool,
    answers: &BTreeMap<MemberId, PeerStatus>,
) -> Decision {
    let voting: Vec<&PeerStatus> = answers
        .iter()
        .filter(|(m, _)| *m != me && members.contains(m))
        .map(|(_, s)| s)
        .filter(|s| s.status == ReplicaStatus::Voting)
        .collect();
    if let Some(first) = voting.first() {
        let Some(log_id) = first.log_id else {
            return Decision::Wait;
        };
        if voting.iter().any(|s| s.log_id != Some(log_id)) {
            return Decision::Wait; // two lineages answer: refuse to pick one
        }
        if my_log_id.is_some_and(|mine| mine != log_id) {
            return Decision::Wait;
        }
        return match my_status {
            ReplicaStatus::Starting => Decision::Adopt(log_id),
            ReplicaStatus::Empty | ReplicaStatus::Recovering if voting.len() >= quorum => {
                let above_round = voting
                    .iter()
                    .filter_map(|s| s.promised.as_ref().map(|p| p.round))
                    .max()
                    .unwrap_or(0);
                Decision::Recover {
                    log_id,
                    above_round,
                }
            }
            _ => Decision::Wait,
        };
    }
    if !auto_initialize || my_log_id.is_some() {
        return Decision::Wait;
    }
    let others: Vec<&MemberId> = members.iter().filter(|m| *m != me).collect();
    let all_answered = others.iter().all(|m| answers.contains_key(*m));
    if !all_answered {
        return Decision::Wait;
    }
    let all_fresh = others.iter().all(|m| {
        answers.get(*m).is_some_and(|s| {
            matches!(s.status, ReplicaStatus::Empty | ReplicaStatus::Starting) && s.log_id.is_none()
        })
    });
    if !all_fresh {
        return Decision::Wait;
    }
    match my_status {
        ReplicaStatus::Empty => Decision::Start,
        ReplicaStatus::Starting => {
            let all_starting = others.iter().all(|m| {
                answers
                    .get(*m)
                    .is_some_and(|s| s.status == ReplicaStatus::Starting)
            });
            let smallest = members.iter().min() == Some(me);
            if all_starting && smallest {
                Decision::Initialize
            } else {
                Decision::Wait
            }
        }
        _ => Decision::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> MemberId {
        MemberId::new(s)
    }
    fn st(status: ReplicaStatus, log_id: Option<u64>) -> PeerStatus {
        PeerStatus {
            status,
            log_id: log_id.map(LogId),
            promised: None,
            begin: 0,
            end: 0,
        }
    }

    #[test]
    fn one_voting_member_is_not_enough_to_recover_with_quorum_two() {
        let members = [m("a:1"), m("b:1"), m("c:1")];
        let mut answers = BTreeMap::new();
        answers.insert(m("a:1"), st(ReplicaStatus::Voting, Some(9)));
        answers.insert(m("c:1"), st(ReplicaStatus::Empty, None));
        let d = decide(
            &m("b:1"),
            &members,
            2,
            ReplicaStatus::Empty,
            None,
            true,
            &answers,
        );
        assert_eq!(d, Decision::Wait);
    }

    #[test]
    fn never_initializes_while_a_member_votes() {
        let members = [m("a:1"), m("b:1"), m("c:1")];
        let mut answers = BTreeMap::new();
        answers.insert(m("b:1"), st(ReplicaStatus::Voting, Some(9)));
        answers.insert(m("c:1"), st(ReplicaStatus::Starting, None));
        let d = decide(
            &m("a:1"),
            &members,
            2,
            ReplicaStatus::Starting,
            None,
            true,
            &answers,
        );
        assert_eq!(d, Decision::Adopt(LogId(9)));
        let d = decide(
            &m("a:1"),
            &members,
            2,
            ReplicaStatus::Empty,
            None,
            true,
            &answers,
        );
        assert_eq!(d, Decision::Wait);
    }

    #[test]
    fn only_the_smallest_member_originates_the_log_id() {
        let members = [m("a:1"), m("b:1"), m("c:1")];
        let mut answers = BTreeMap::new();
        answers.insert(m("a:1"), st(ReplicaStatus::Starting, None));
        answers.insert(m("c:1"), st(ReplicaStatus::Starting, None));
        let d = decide(
            &m("b:1"),
            &members,
            2,
            ReplicaStatus::Starting,
            None,
            true,
            &answers,
        );
        assert_eq!(d, Decision::Wait);
        answers.remove(&m("a:1"));
        answers.insert(m("b:1"), st(ReplicaStatus::Starting, None));
        let d = decide(
            &m("a:1"),
            &members,
            2,
            ReplicaStatus::Starting,
            None,
            true,
            &answers,
        );
        assert_eq!(d, Decision::Initialize);
    }

    #[test]
    fn late_answers_of_a_retired_incarnation_are_ignored() {
        let mut inc = Incarnations::default();
        assert!(inc.observe(&m("a:1"), 1));
        assert!(inc.observe(&m("a:1"), 2));
        assert!(!inc.observe(&m("a:1"), 1));
        assert!(inc.observe(&m("a:1"), 2));
    }
}
