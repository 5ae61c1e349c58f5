//! The plain value types of the log. They are persisted and sent over the wire, so
//! they stay simple and serde-stable: add fields only with `#[serde(default)]`.

use bytes::Bytes;
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
    /// Application bytes. Shared ([`Bytes`]): a value is held by the replica's
    /// entries, its pending persist ops, the coordinator's in-flight proposals, the
    /// accept batches of every peer, catch-up answers and the learned deliveries at
    /// once, and each of those clones is a reference-count bump, not a copy.
    Append(#[serde(with = "byte_buf")] Bytes),
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
    /// Every entry held below this position is learned, whatever its own flag
    /// says: the learned marks of a whole prefix in one small record, instead of
    /// every learned entry written a second time with its value. Only ever raised,
    /// and only over entries whose value on disk is the chosen one. Last, so an
    /// older master decoding this record reads the fields before it and ignores
    /// it (its entries then read as accepted, not learned: safe, learned again by
    /// catch-up); `0` in records older masters wrote.
    pub learned_below: Position,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            status: ReplicaStatus::Empty,
            log_id: None,
            promised: None,
            begin: 0,
            learned_below: 0,
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
    /// Entries below [`Metadata::learned_below`] read as learned, so the image
    /// matches what [`DurableState::mark_learned_prefix`] makes of replayed records.
    pub fn apply(&mut self, op: &PersistOp) {
        match op {
            PersistOp::SetMetadata(m) => {
                let from = self.metadata.learned_below;
                self.metadata = m.clone();
                self.mark_learned_prefix(from);
            }
            PersistOp::PutEntry(e) => {
                let mut e = e.clone();
                e.learned |= self.in_learned_prefix(e.position);
                match self
                    .entries
                    .binary_search_by_key(&e.position, |x| x.position)
                {
                    Ok(i) => self.entries[i] = e,
                    Err(i) => self.entries.insert(i, e),
                }
            }
            PersistOp::TruncateBelow(to) => self.entries.retain(|e| e.position >= *to),
        }
    }

    /// Whether the learned prefix covers `position`: held (not truncated away)
    /// and below [`Metadata::learned_below`]. An entry below `begin` whose
    /// truncation is not applied yet is not held, so the prefix says nothing of it.
    pub fn in_learned_prefix(&self, position: Position) -> bool {
        (self.metadata.begin..self.metadata.learned_below).contains(&position)
    }

    /// Sets the learned flag of every held entry from `from` to
    /// `metadata.learned_below`.
    pub fn mark_learned_prefix(&mut self, from: Position) {
        let below = self.metadata.learned_below;
        let from = from.max(self.metadata.begin);
        let start = self.entries.partition_point(|e| e.position < from);
        for e in self.entries[start..]
            .iter_mut()
            .take_while(|e| e.position < below)
        {
            e.learned = true;
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

/// Postcard bytes of `value` in one allocation of exactly their size.
/// `postcard::to_allocvec` grows its Vec as it serializes: an entry's last field
/// (`learned`) lands just past a buffer sized for its payload, which doubles it and
/// copies the payload a second time, and a multi-MiB message is copied through
/// every doubling and ends in an allocation up to twice its size (fresh pages to
/// fault in). Measuring first (postcard's `Size` flavor, a walk that copies
/// nothing) leaves one copy and no slack. Same bytes as `to_allocvec`.
pub(crate) fn encode_exact<T: Serialize + ?Sized>(value: &T) -> postcard::Result<Vec<u8>> {
    let size = postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())?;
    let mut out = super::buffers::for_message(size);
    postcard::serialize_with_flavor(value, ExactVec(&mut out))?;
    Ok(out)
}

/// Postcard output appended to a caller's Vec (postcard's own `AllocVec` cannot
/// start from a sized one).
struct ExactVec<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for ExactVec<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Decodes a message from `payload` (postcard) with the log values in it of at
/// least [`SHARED_RECEIVED_VALUE_MIN_BYTES`] sharing `payload`'s buffer instead of being
/// copied out of it, as long as such values make up at least half of it: a
/// value then keeps at most twice its size alive (a payload holding one large
/// value among many small ones is decoded with copies instead).
pub fn decode_sharing<T: serde::de::DeserializeOwned>(
    payload: &Bytes,
) -> Result<T, postcard::Error> {
    let (decoded, shared_bytes) = byte_buf::sharing(payload, || postcard::from_bytes(payload));
    let decoded = decoded?;
    if shared_bytes == 0 || shared_bytes.saturating_mul(2) >= payload.len() {
        return Ok(decoded);
    }
    // Rare (a frame of mixed sizes): decoded again, copying every value.
    drop(decoded);
    postcard::from_bytes(payload)
}

/// Values shorter than this are copied out of a received payload even by
/// [`decode_sharing`]: sharing would keep a whole frame alive for a few bytes.
pub const SHARED_RECEIVED_VALUE_MIN_BYTES: usize = 1024;

/// Serde of a shared byte buffer as bytes rather than as a sequence of `u8`. Postcard
/// writes both the same way (a varint length, then the bytes), so nothing changes
/// on disk or on the wire; but as a sequence every byte is a call into the
/// serializer and a push on decode, which made encoding and decoding entries the
/// bulk of the CPU a catch-up or a large append costs. As bytes it is one copy.
/// Other formats that encode bytes as a sequence (JSON: an array of numbers) read
/// back through `visit_seq`. Decoding copies the bytes once into a [`Bytes`], or
/// none at all when [`decode_sharing`] lets a value share the received payload.
mod byte_buf {
    use std::cell::RefCell;

    use bytes::Bytes;
    use serde::{de, Deserializer, Serializer};

    thread_local! {
        /// The payload being decoded by [`sharing`] on this thread, and the bytes
        /// of values that share it so far.
        static SOURCE: RefCell<Option<(Bytes, usize)>> = const { RefCell::new(None) };
    }

    /// Runs `decode` with `source` as the buffer values may share; returns its
    /// result and how many value bytes share `source`.
    pub fn sharing<T>(source: &Bytes, decode: impl FnOnce() -> T) -> (T, usize) {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                SOURCE.with(|s| s.borrow_mut().take());
            }
        }
        SOURCE.with(|s| *s.borrow_mut() = Some((source.clone(), 0)));
        let reset = Reset;
        let decoded = decode();
        let shared = SOURCE.with(|s| s.borrow().as_ref().map_or(0, |(_, n)| *n));
        drop(reset);
        (decoded, shared)
    }

    /// `bytes` as a slice of the source being decoded, if it lies inside it (the
    /// check is on addresses: memory inside the source is the source's bytes).
    fn share(bytes: &[u8]) -> Option<Bytes> {
        if bytes.len() < super::SHARED_RECEIVED_VALUE_MIN_BYTES {
            return None;
        }
        SOURCE.with(|s| {
            let mut s = s.borrow_mut();
            let (source, shared) = s.as_mut()?;
            let start = (bytes.as_ptr() as usize).checked_sub(source.as_ptr() as usize)?;
            let end = start.checked_add(bytes.len())?;
            if end > source.len() {
                return None;
            }
            *shared += bytes.len();
            Some(source.slice(start..end))
        })
    }

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        deserializer.deserialize_byte_buf(ByteBufVisitor)
    }

    struct ByteBufVisitor;

    impl<'de> de::Visitor<'de> for ByteBufVisitor {
        type Value = Bytes;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a byte buffer")
        }

        /// Borrowed bytes arrive here too (serde's default), and postcard lends
        /// its input even to `deserialize_byte_buf`: what lies inside the
        /// source being decoded is shared.
        fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Bytes, E> {
            Ok(share(bytes).unwrap_or_else(|| Bytes::copy_from_slice(bytes)))
        }

        fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(bytes))
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
            // Bounded: the hint comes from the input.
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(byte) = seq.next_element()? {
                bytes.push(byte);
            }
            Ok(Bytes::from(bytes))
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
            let action = Action::Append(payload.clone().into());
            let now = postcard::to_allocvec(&action).expect("encode");
            let before = postcard::to_allocvec(&SequenceEncodedAction::Append(payload.clone()))
                .expect("encode");
            assert_eq!(now, before, "payload of {len} bytes");
            let decoded: Action = postcard::from_bytes(&before).expect("decode");
            assert_eq!(decoded, action);
            let json = serde_json::to_string(&action).expect("json");
            assert_eq!(
                serde_json::from_str::<Action>(&json).expect("json decode"),
                action
            );
        }
        // A length above what the input holds is refused, not allocated.
        assert!(postcard::from_bytes::<Action>(&[1, 0xff, 0xff, 0xff, 0x0f, 1, 2]).is_err());
    }

    /// The bytes on disk (an [`Entry`] and the [`PersistOp`] around it) and on the
    /// wire (an [`Envelope`]) of values holding appends, as produced when
    /// `Action::Append` held a `Vec<u8>`, computed with that code before the
    /// payload became [`Bytes`]. Logs already on disk and peers of the previous
    /// version read and write exactly these.
    #[test]
    fn entries_and_envelopes_holding_appends_keep_their_bytes() {
        use crate::log::message::{Envelope, Message};
        let entry = Entry {
            position: 300,
            accepted: Proposal {
                round: 7,
                proposer: MemberId::new("127.0.0.1:5050"),
            },
            action: Action::Append(Bytes::from_static(&[0, 1, 2, 0xff, 0x80])),
            learned: true,
        };
        let entry_bytes: Vec<u8> = vec![
            172, 2, 7, 14, 49, 50, 55, 46, 48, 46, 48, 46, 49, 58, 53, 48, 53, 48, 1, 5, 0, 1, 2,
            255, 128, 1,
        ];
        assert_eq!(postcard::to_allocvec(&entry).expect("encode"), entry_bytes);
        assert_eq!(
            postcard::from_bytes::<Entry>(&entry_bytes).expect("decode"),
            entry
        );
        let put = PersistOp::PutEntry(entry.clone());
        let put_bytes: Vec<u8> = [&[1u8][..], &entry_bytes].concat();
        assert_eq!(postcard::to_allocvec(&put).expect("encode"), put_bytes);

        let long: Vec<u8> = (0u8..130).collect();
        let envelope = Envelope {
            from: MemberId::new("127.0.0.1:5050"),
            to: MemberId::new("127.0.0.2:5050"),
            log_id: Some(LogId(0x0123_4567_89ab_cdef)),
            message: Message::CatchupResponse {
                begin: 2,
                entries: vec![
                    (2, Action::Append(Bytes::from_static(b"ab"))),
                    (3, Action::Nop),
                    (200, Action::Append(long.clone().into())),
                    (201, Action::Truncate { to: 2 }),
                ],
            },
        };
        let mut envelope_bytes: Vec<u8> = vec![
            14, 49, 50, 55, 46, 48, 46, 48, 46, 49, 58, 53, 48, 53, 48, 14, 49, 50, 55, 46, 48, 46,
            48, 46, 50, 58, 53, 48, 53, 48, 1, 239, 155, 175, 205, 248, 172, 209, 145, 1, 12, 2, 4,
            2, 1, 2, 97, 98, 3, 0, 200, 1, 1, 130, 1,
        ];
        envelope_bytes.extend_from_slice(&long);
        envelope_bytes.extend_from_slice(&[201, 1, 2, 2]);
        assert_eq!(
            postcard::to_allocvec(&envelope).expect("encode"),
            envelope_bytes
        );
        assert_eq!(
            postcard::from_bytes::<Envelope>(&envelope_bytes).expect("decode"),
            envelope
        );
        // Hostile input: every truncation of these bytes is an error, never a panic
        // or an allocation beyond the input; a length claiming more than the input
        // holds is refused.
        for cut in 0..envelope_bytes.len() {
            assert!(postcard::from_bytes::<Envelope>(&envelope_bytes[..cut]).is_err());
        }
        let exact = encode_exact(&envelope).expect("encode");
        assert_eq!(exact, envelope_bytes);
        assert_eq!(exact.capacity(), exact.len());
        let mut lying = envelope_bytes[..53].to_vec();
        lying.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        lying.extend_from_slice(&long);
        assert!(postcard::from_bytes::<Envelope>(&lying).is_err());
    }

    fn lies_within(value: &Bytes, payload: &Bytes) -> bool {
        let start = payload.as_ptr() as usize;
        let at = value.as_ptr() as usize;
        at >= start && at + value.len() <= start + payload.len()
    }

    fn appended(actions: &[Action]) -> Vec<&Bytes> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Append(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn large_received_values_share_the_payload_and_small_ones_are_copied() {
        let large = Bytes::from(vec![7u8; SHARED_RECEIVED_VALUE_MIN_BYTES]);
        let larger = Bytes::from(vec![9u8; 64 << 10]);
        let small = Bytes::from(vec![1u8; SHARED_RECEIVED_VALUE_MIN_BYTES - 1]);
        let sent = vec![
            Action::Append(large.clone()),
            Action::Nop,
            Action::Append(small.clone()),
            Action::Append(larger.clone()),
        ];
        let payload = Bytes::from(postcard::to_allocvec(&sent).unwrap());
        let received: Vec<Action> = decode_sharing(&payload).unwrap();
        assert_eq!(received, sent);
        let values = appended(&received);
        assert!(lies_within(values[0], &payload));
        assert!(!lies_within(values[1], &payload));
        assert!(lies_within(values[2], &payload));
        // Decoding without the payload at hand copies, as before.
        let copied: Vec<Action> = postcard::from_bytes(&payload).unwrap();
        assert!(appended(&copied).iter().all(|v| !lies_within(v, &payload)));
        // And nothing is left behind for the next decode on this thread.
        let again: Vec<Action> = postcard::from_bytes(&payload).unwrap();
        assert!(appended(&again).iter().all(|v| !lies_within(v, &payload)));
    }

    #[test]
    fn a_payload_mostly_of_small_values_is_not_kept_alive_by_a_large_one() {
        // One shareable value, and more than its size again in small ones: a
        // shared value would keep over twice its size alive, so all are copies.
        let mut sent = vec![Action::Append(Bytes::from(vec![3u8; 2048]))];
        for _ in 0..100 {
            sent.push(Action::Append(Bytes::from(vec![4u8; 40])));
        }
        let payload = Bytes::from(postcard::to_allocvec(&sent).unwrap());
        let received: Vec<Action> = decode_sharing(&payload).unwrap();
        assert_eq!(received, sent);
        assert!(appended(&received)
            .iter()
            .all(|v| !lies_within(v, &payload)));
        // Bad input is an error, shared or not.
        let cut = payload.slice(..payload.len() - 1);
        assert!(decode_sharing::<Vec<Action>>(&cut).is_err());
    }
}
