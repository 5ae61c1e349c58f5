//! The plain value types of the log. They are persisted and sent over the wire, so
//! they stay simple and serde-stable: add fields only with `#[serde(default)]`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A member of the ensemble, named by its `ip:port` address. Addresses, not
/// numeric ids, because the whitelist (`--masters`) is what survives restarts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberId(pub String);

impl MemberId {
    pub fn new(address: impl Into<String>) -> Self {
        MemberId(address.into())
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The identity of one log lineage, drawn once at initialization. A replica of
/// another lineage (a stale volume, a log re-initialized after a full wipe) is
/// refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogId(pub u64);

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// An index into the log.
pub type Position = u64;

/// Positions at or above this are refused: far beyond any real log (2^62
/// entries), and it leaves room so `position + 1` never overflows on input
/// from a broken peer.
pub const MAX_POSITION: Position = 1 << 62;

/// A Paxos proposal number, unique per member: two members never share one because
/// the proposer's address is part of it. Ordered lexicographically (round first).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Proposal {
    pub round: u64,
    pub proposer: MemberId,
}

/// What a position holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Filled by a coordinator where nothing was accepted; carries no data.
    Nop,
    /// Application bytes.
    Append(#[serde(with = "byte_buf")] Vec<u8>),
    /// Once learned, every position below `to` may be dropped. `to` is never above
    /// the position holding the truncate itself.
    Truncate { to: Position },
}

impl Action {
    /// Approximate encoded size, for byte-bounded batches: the payload plus a
    /// little for the position and tags around it.
    pub fn size_bytes(&self) -> usize {
        const OVERHEAD_BYTES: usize = 32;
        match self {
            Action::Append(data) => data.len() + OVERHEAD_BYTES,
            Action::Nop | Action::Truncate { .. } => OVERHEAD_BYTES,
        }
    }
}

/// Where a replica stands. Only `Voting` replicas promise or accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplicaStatus {
    /// Never initialized, or wiped: remembers no promise and no vote.
    Empty,
    /// First phase of auto-initialization: has never voted.
    Starting,
    /// Knows its log id and is catching up; may not vote yet.
    Recovering,
    /// Takes part in quorums.
    Voting,
}

/// One position with its Paxos metadata. The replica-wide promise
/// ([`Metadata::promised`]) is the promise for every position: an explicit
/// promise round covers the whole log (multi-Paxos), so a per-position promise
/// would never differ from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub position: Position,
    /// The proposal the action was accepted (performed) under.
    pub accepted: Proposal,
    pub action: Action,
    /// A learned position is chosen and is never overwritten.
    pub learned: bool,
}

/// The replica's durable scalar state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub status: ReplicaStatus,
    pub log_id: Option<LogId>,
    /// The highest proposal promised; nothing lower is accepted.
    pub promised: Option<Proposal>,
    /// Every position below `begin` has been truncated away.
    pub begin: Position,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            status: ReplicaStatus::Empty,
            log_id: None,
            promised: None,
            begin: 0,
        }
    }
}

/// One durable change. The driver applies a batch of these, in order, durably,
/// before it sends any message of the same [`crate::log::Ready`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PersistOp {
    /// Replace the metadata record.
    SetMetadata(Metadata),
    /// Insert or replace the entry at `entry.position`.
    PutEntry(Entry),
    /// Drop every entry below this position.
    TruncateBelow(Position),
}

/// Everything a replica keeps durably; what [`crate::log::Storage::load`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableState {
    pub metadata: Metadata,
    /// Sorted by position, no duplicates.
    pub entries: Vec<Entry>,
}

impl DurableState {
    /// Applies one operation to an in-memory image (used by storage impls and tests).
    pub fn apply(&mut self, op: &PersistOp) {
        match op {
            PersistOp::SetMetadata(m) => self.metadata = m.clone(),
            PersistOp::PutEntry(e) => {
                match self
                    .entries
                    .binary_search_by_key(&e.position, |x| x.position)
                {
                    Ok(i) => self.entries[i] = e.clone(),
                    Err(i) => self.entries.insert(i, e.clone()),
                }
            }
            PersistOp::TruncateBelow(to) => self.entries.retain(|e| e.position >= *to),
        }
    }
}

/// A small deterministic PRNG (splitmix64): the core draws election timeouts and
/// log ids from it, seeded by the driver, so a seed replays exactly.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]` (inclusive); `lo` if `hi <= lo`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        den > 0 && self.next_u64() % den < num
    }
}

/// Serde of a byte buffer as bytes rather than as a sequence of `u8`. Postcard
/// writes both the same way (a varint length, then the bytes), so nothing changes
/// on disk or on the wire; but as a sequence every byte is a call into the
/// serializer and a push on decode, which made encoding and decoding entries the
/// bulk of the CPU a catch-up or a large append costs. As bytes it is one copy.
/// Other formats that encode bytes as a sequence (JSON: an array of numbers) read
/// back through `visit_seq`.
mod byte_buf {
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(ByteBufVisitor)
    }

    struct ByteBufVisitor;

    impl<'de> de::Visitor<'de> for ByteBufVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a byte buffer")
        }

        fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // Bounded: the hint comes from the input.
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(byte) = seq.next_element()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoding `Action::Append` had when its payload was a plain `Vec<u8>`
    /// (a sequence of `u8`), which logs on disk and peers on the wire use.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum SequenceEncodedAction {
        Nop,
        Append(Vec<u8>),
        Truncate { to: Position },
    }

    #[test]
    fn append_payloads_encode_as_they_did_as_a_sequence_of_bytes() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let now = postcard::to_allocvec(&Action::Append(payload.clone())).expect("encode");
            let before = postcard::to_allocvec(&SequenceEncodedAction::Append(payload.clone()))
                .expect("encode");
            assert_eq!(now, before, "payload of {len} bytes");
            let decoded: Action = postcard::from_bytes(&before).expect("decode");
            assert_eq!(decoded, Action::Append(payload.clone()));
            let json = serde_json::to_string(&Action::Append(payload.clone())).expect("json");
            assert_eq!(
                serde_json::from_str::<Action>(&json).expect("json decode"),
                Action::Append(payload)
            );
        }
        // A length above what the input holds is refused, not allocated.
        assert!(postcard::from_bytes::<Action>(&[1, 0xff, 0xff, 0xff, 0x0f, 1, 2]).is_err());
    }
}
