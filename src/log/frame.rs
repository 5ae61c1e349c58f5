//! Wire framing of the replica protocol: pure encoding and decoding, no I/O.
//!
//! Replica connections share the master's HTTP port (one port per master, as in
//! Mesos), so a connection announces itself with [`PREAMBLE`]: a NUL byte, `MLOG`
//! and a version byte. No HTTP request (nor a TLS ClientHello, which starts with
//! 0x16) starts with NUL, so the listener can tell the two apart from the first byte.
//!
//! A connection carries frames one way, from the connecting member to the accepting
//! one, like libprocess links in Mesos (replies travel on the other member's own
//! connection):
//!
//! ```text
//! connector -> acceptor   PREAMBLE (6 bytes)
//! acceptor  -> connector  PREAMBLE (6 bytes) + connection nonce (16 random bytes)
//! connector -> acceptor   frame, frame, ...
//! ```
//!
//! A frame (big endian):
//!
//! ```text
//! 0..4    FRAME_MAGIC "MLGF"
//! 4       version (PROTOCOL_VERSION)
//! 5       flags (none defined yet: any bit set is refused)
//! 6..8    sender_len u16    <= MAX_SENDER_BYTES
//! 8..12   payload_len u32   <= the receiver's max_payload_bytes
//! 12..20  sequence u64      0, 1, 2, ... on each connection
//! 20..28  log_id u64        0 = the sender's log is not initialized yet
//! 28..    sender            the sender's member address, "ip:port", UTF-8
//! ..      payload           opaque: a serialized core message
//! ..+32   mac               HMAC-SHA256(token, MAC_CONTEXT || nonce || all bytes above)
//! ```
//!
//! The MAC proves the sender knows the ensemble token. It covers the acceptor's
//! nonce, so a frame recorded on one connection fails on any other, and the
//! sequence number, so a frame replayed or reordered within a connection is refused
//! too. Decoding checks the fixed header (magic, version, flags, lengths) before it
//! waits for or allocates the body, so a peer can never make the receiver allocate
//! more than the configured maximum.
//!
//! What the MAC does not give: confidentiality (payloads travel in clear, as the
//! Mesos replicated log's do; run the ensemble on a private network or add TLS), and
//! proof of which member sent a frame: every token holder can claim any sender
//! address, so the whitelist keeps out strangers and misconfigured members, not a
//! malicious member.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const PROTOCOL_VERSION: u8 = 1;
/// Starts every replica-protocol connection; see the module documentation.
pub const PREAMBLE: [u8; 6] = *b"\0MLOG\x01";
pub const PREAMBLE_BYTES: usize = PREAMBLE.len();
pub const NONCE_BYTES: usize = 16;
/// What the acceptor answers: the preamble (proving it speaks the protocol) and the
/// connection nonce.
pub const HANDSHAKE_REPLY_BYTES: usize = PREAMBLE_BYTES + NONCE_BYTES;
pub const FRAME_MAGIC: [u8; 4] = *b"MLGF";
pub const FRAME_HEADER_BYTES: usize = 28;
pub const MAC_BYTES: usize = 32;
/// A member address is `ip:port` (at most 47 bytes for IPv6) or a DNS name and port
/// (at most 253 + 6); 255 covers both and keeps the header field to one byte's range.
pub const MAX_SENDER_BYTES: usize = 255;
/// Default maximum payload. A Paxos message carries at most a batch of log entries;
/// the registry snapshots and truncates long before a batch gets near 16 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: u32 = 16 * 1024 * 1024;
/// Domain separation: the token may be used for other MACs someday.
const MAC_CONTEXT: &[u8] = b"mesos-replicated-log frame v1\0";

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the ensemble token is empty")]
    EmptyToken,
    #[error("not a replica-protocol preamble: {found:02x?}")]
    BadPreamble { found: Vec<u8> },
    #[error("replica protocol version {version} is not supported (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion { version: u8 },
    #[error("bad frame magic {found:02x?}")]
    BadMagic { found: [u8; 4] },
    #[error("unknown frame flags {flags:#04x}")]
    UnknownFlags { flags: u8 },
    #[error("frame payload of {payload_bytes} bytes exceeds the maximum of {max_payload_bytes}")]
    TooLarge {
        payload_bytes: u64,
        max_payload_bytes: u32,
    },
    #[error("sender address of {sender_bytes} bytes exceeds the maximum of {MAX_SENDER_BYTES}")]
    SenderTooLong { sender_bytes: usize },
    #[error("sender address is not UTF-8")]
    SenderNotUtf8,
    #[error("frame MAC does not verify: wrong ensemble token, another connection's frame, or a corrupted frame")]
    BadMac,
    #[error("frame sequence {found} where {expected} was expected: replayed or reordered")]
    OutOfSequence { expected: u64, found: u64 },
    #[error("frame truncated: {available} of {needed} bytes")]
    Truncated { needed: usize, available: usize },
}

/// A decoded, authenticated frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub sender: String,
    pub log_id: u64,
    pub sequence: u64,
    pub payload: Vec<u8>,
}

/// The ensemble token, ready to key MACs.
#[derive(Clone)]
pub struct FrameKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for FrameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameKey(<redacted>)")
    }
}

impl FrameKey {
    pub fn new(token: &[u8]) -> Result<FrameKey, FrameError> {
        if token.is_empty() {
            return Err(FrameError::EmptyToken);
        }
        // HMAC accepts keys of any length; the error arm is unreachable in practice.
        let mac = HmacSha256::new_from_slice(token).map_err(|_| FrameError::EmptyToken)?;
        Ok(FrameKey { mac })
    }

    fn mac(&self, nonce: &ConnectionNonce, covered: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(MAC_CONTEXT);
        mac.update(&nonce.0);
        mac.update(covered);
        mac
    }
}

/// Chosen by the acceptor for each connection. It need not be secret, only never
/// repeated: 128 bits from the OS-seeded hasher keys, the time and a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionNonce(pub [u8; NONCE_BYTES]);

impl ConnectionNonce {
    pub fn generate() -> ConnectionNonce {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut bytes = [0; NONCE_BYTES];
        for (half, chunk) in bytes.chunks_mut(8).enumerate() {
            // Each RandomState is seeded from the OS (then incremented per thread).
            let mut hasher = RandomState::new().build_hasher();
            hasher.write_u64(count);
            hasher.write_u128(nanos);
            hasher.write_usize(half);
            hasher.write_u32(std::process::id());
            chunk.copy_from_slice(&hasher.finish().to_le_bytes());
        }
        ConnectionNonce(bytes)
    }
}

/// Where a connection's first bytes point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreambleMatch {
    Replica,
    /// Anything that cannot become the preamble: hand it to the HTTP server.
    Other,
    /// A proper prefix of the preamble so far.
    NeedMore,
}

/// Classifies a connection by the bytes seen so far. Only the magic decides: a
/// replica connection with an unknown version byte is still a replica connection,
/// refused later with [`FrameError::UnsupportedVersion`].
pub fn match_preamble(first_bytes: &[u8]) -> PreambleMatch {
    let magic = &PREAMBLE[..PREAMBLE_BYTES - 1];
    let seen = first_bytes.len().min(magic.len());
    if first_bytes[..seen] != magic[..seen] {
        PreambleMatch::Other
    } else if seen < magic.len() {
        PreambleMatch::NeedMore
    } else {
        PreambleMatch::Replica
    }
}

pub fn check_preamble(bytes: &[u8]) -> Result<(), FrameError> {
    if bytes.len() != PREAMBLE_BYTES || match_preamble(bytes) != PreambleMatch::Replica {
        return Err(FrameError::BadPreamble {
            found: bytes.iter().take(PREAMBLE_BYTES).copied().collect(),
        });
    }
    match bytes[PREAMBLE_BYTES - 1] {
        PROTOCOL_VERSION => Ok(()),
        version => Err(FrameError::UnsupportedVersion { version }),
    }
}

/// Builds the frames of one connection: assigns sequence numbers and MACs.
#[derive(Debug, Clone)]
pub struct FrameEncoder {
    key: FrameKey,
    nonce: ConnectionNonce,
    sender: String,
    next_sequence: u64,
    max_payload_bytes: u32,
}

impl FrameEncoder {
    pub fn new(
        key: FrameKey,
        nonce: ConnectionNonce,
        sender: String,
        max_payload_bytes: u32,
    ) -> Result<FrameEncoder, FrameError> {
        if sender.len() > MAX_SENDER_BYTES {
            return Err(FrameError::SenderTooLong {
                sender_bytes: sender.len(),
            });
        }
        Ok(FrameEncoder {
            key,
            nonce,
            sender,
            next_sequence: 0,
            max_payload_bytes,
        })
    }

    /// Appends one frame to `out`.
    pub fn encode(
        &mut self,
        log_id: u64,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        if payload.len() as u64 > u64::from(self.max_payload_bytes) {
            return Err(FrameError::TooLarge {
                payload_bytes: payload.len() as u64,
                max_payload_bytes: self.max_payload_bytes,
            });
        }
        let start = out.len();
        out.reserve(FRAME_HEADER_BYTES + self.sender.len() + payload.len() + MAC_BYTES);
        out.extend_from_slice(&FRAME_MAGIC);
        out.push(PROTOCOL_VERSION);
        out.push(0);
        // Both lengths were bounded above (sender at construction).
        out.extend_from_slice(&(self.sender.len() as u16).to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.next_sequence.to_be_bytes());
        out.extend_from_slice(&log_id.to_be_bytes());
        out.extend_from_slice(self.sender.as_bytes());
        out.extend_from_slice(payload);
        let tag = self
            .key
            .mac(&self.nonce, &out[start..])
            .finalize()
            .into_bytes();
        out.extend_from_slice(&tag);
        self.next_sequence += 1;
        Ok(())
    }
}

/// Reads the frames of one connection: checks lengths first, then the MAC, then the
/// sequence.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    key: FrameKey,
    nonce: ConnectionNonce,
    next_sequence: u64,
    max_payload_bytes: u32,
}

impl FrameDecoder {
    pub fn new(key: FrameKey, nonce: ConnectionNonce, max_payload_bytes: u32) -> FrameDecoder {
        FrameDecoder {
            key,
            nonce,
            next_sequence: 0,
            max_payload_bytes,
        }
    }

    /// How many bytes the frame starting at `buf` needs in all, once its fixed header
    /// is there; `Ok(None)` if fewer than `FRAME_HEADER_BYTES` are available. Checks
    /// the header, so a reader can refuse a hostile length before reading the body.
    pub fn frame_bytes(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(header) = buf.get(..FRAME_HEADER_BYTES) else {
            // Refuse bad magic as early as it shows, not only after 28 bytes.
            let seen = buf.len().min(FRAME_MAGIC.len());
            if buf[..seen] != FRAME_MAGIC[..seen] {
                let mut found = [0; 4];
                found[..seen].copy_from_slice(&buf[..seen]);
                return Err(FrameError::BadMagic { found });
            }
            return Ok(None);
        };
        let mut magic = [0; 4];
        magic.copy_from_slice(&header[..4]);
        if magic != FRAME_MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
        if header[4] != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion { version: header[4] });
        }
        if header[5] != 0 {
            return Err(FrameError::UnknownFlags { flags: header[5] });
        }
        let sender_bytes = usize::from(u16::from_be_bytes([header[6], header[7]]));
        if sender_bytes > MAX_SENDER_BYTES {
            return Err(FrameError::SenderTooLong { sender_bytes });
        }
        let payload_bytes = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        if payload_bytes > self.max_payload_bytes {
            return Err(FrameError::TooLarge {
                payload_bytes: u64::from(payload_bytes),
                max_payload_bytes: self.max_payload_bytes,
            });
        }
        Ok(Some(
            FRAME_HEADER_BYTES + sender_bytes + payload_bytes as usize + MAC_BYTES,
        ))
    }

    /// Decodes the frame at the start of `buf`: `Ok(Some((frame, bytes consumed)))`,
    /// or `Ok(None)` if `buf` holds only part of a frame (so far valid).
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(total) = self.frame_bytes(buf)? else {
            return Ok(None);
        };
        let Some(frame) = buf.get(..total) else {
            return Ok(None);
        };
        let covered = &frame[..total - MAC_BYTES];
        self.key
            .mac(&self.nonce, covered)
            .verify_slice(&frame[total - MAC_BYTES..])
            .map_err(|_| FrameError::BadMac)?;
        // Authenticated from here on: the fields are what a token holder wrote.
        let field = |range: std::ops::Range<usize>| {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&frame[range]);
            u64::from_be_bytes(bytes)
        };
        let sequence = field(12..20);
        let log_id = field(20..28);
        if sequence != self.next_sequence {
            return Err(FrameError::OutOfSequence {
                expected: self.next_sequence,
                found: sequence,
            });
        }
        let sender_bytes = usize::from(u16::from_be_bytes([frame[6], frame[7]]));
        let sender_end = FRAME_HEADER_BYTES + sender_bytes;
        let sender = std::str::from_utf8(&frame[FRAME_HEADER_BYTES..sender_end])
            .map_err(|_| FrameError::SenderNotUtf8)?
            .to_owned();
        let payload = frame[sender_end..total - MAC_BYTES].to_vec();
        self.next_sequence += 1;
        Ok(Some((
            Frame {
                sender,
                log_id,
                sequence,
                payload,
            },
            total,
        )))
    }

    /// Decodes exactly one frame filling `buf`; a short buffer is
    /// [`FrameError::Truncated`].
    pub fn decode_exact(&mut self, buf: &[u8]) -> Result<Frame, FrameError> {
        match self.decode(buf)? {
            Some((frame, consumed)) if consumed == buf.len() => Ok(frame),
            Some((_, consumed)) => Err(FrameError::Truncated {
                needed: consumed,
                available: buf.len(),
            }),
            None => Err(FrameError::Truncated {
                needed: self
                    .frame_bytes(buf)?
                    .unwrap_or(FRAME_HEADER_BYTES + MAC_BYTES),
                available: buf.len(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOKEN: &[u8] = b"ensemble-token";
    const NONCE: ConnectionNonce = ConnectionNonce([7; NONCE_BYTES]);

    fn key() -> FrameKey {
        FrameKey::new(TOKEN).unwrap()
    }

    fn encoder(sender: &str) -> FrameEncoder {
        FrameEncoder::new(key(), NONCE, sender.into(), DEFAULT_MAX_PAYLOAD_BYTES).unwrap()
    }

    fn decoder() -> FrameDecoder {
        FrameDecoder::new(key(), NONCE, DEFAULT_MAX_PAYLOAD_BYTES)
    }

    fn one_frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encoder("10.0.0.1:5050")
            .encode(42, payload, &mut out)
            .unwrap();
        out
    }

    #[test]
    fn no_http_request_or_tls_hello_matches_the_preamble() {
        for start in [
            &b"GET /health HTTP/1.1\r\n"[..],
            b"POST /",
            b"\x16\x03\x01",
            b"PRI * HTTP/2.0",
        ] {
            assert_eq!(match_preamble(start), PreambleMatch::Other);
        }
        assert_eq!(match_preamble(b""), PreambleMatch::NeedMore);
        assert_eq!(match_preamble(b"\0ML"), PreambleMatch::NeedMore);
        assert_eq!(match_preamble(&PREAMBLE), PreambleMatch::Replica);
        assert_eq!(check_preamble(&PREAMBLE), Ok(()));
        assert_eq!(
            check_preamble(b"\0MLOG\x09"),
            Err(FrameError::UnsupportedVersion { version: 9 })
        );
    }

    #[test]
    fn round_trip_of_consecutive_frames() {
        let mut encoder = encoder("10.0.0.1:5050");
        let mut wire = Vec::new();
        encoder.encode(0, b"", &mut wire).unwrap();
        encoder.encode(9, b"promise", &mut wire).unwrap();
        let mut decoder = decoder();
        let (first, used) = decoder.decode(&wire).unwrap().unwrap();
        assert_eq!(
            first,
            Frame {
                sender: "10.0.0.1:5050".into(),
                log_id: 0,
                sequence: 0,
                payload: vec![]
            }
        );
        let second = decoder.decode_exact(&wire[used..]).unwrap();
        assert_eq!((second.log_id, second.sequence), (9, 1));
        assert_eq!(second.payload, b"promise");
    }

    #[test]
    fn a_frame_from_another_connection_or_token_fails_its_mac() {
        let wire = one_frame(b"accept");
        let mut other_connection = FrameDecoder::new(
            key(),
            ConnectionNonce([8; NONCE_BYTES]),
            DEFAULT_MAX_PAYLOAD_BYTES,
        );
        assert_eq!(other_connection.decode(&wire), Err(FrameError::BadMac));
        let mut other_token = FrameDecoder::new(
            FrameKey::new(b"other").unwrap(),
            NONCE,
            DEFAULT_MAX_PAYLOAD_BYTES,
        );
        assert_eq!(other_token.decode(&wire), Err(FrameError::BadMac));
    }

    #[test]
    fn a_frame_replayed_on_its_own_connection_is_out_of_sequence() {
        let wire = one_frame(b"accept");
        let mut decoder = decoder();
        decoder.decode_exact(&wire).unwrap();
        assert_eq!(
            decoder.decode_exact(&wire),
            Err(FrameError::OutOfSequence {
                expected: 1,
                found: 0
            })
        );
    }

    #[test]
    fn an_oversized_length_is_refused_from_the_header_alone() {
        let mut wire = one_frame(b"x");
        wire[8..12].copy_from_slice(&(DEFAULT_MAX_PAYLOAD_BYTES + 1).to_be_bytes());
        // Only the fixed header: the body was never sent, and is never waited for.
        assert_eq!(
            decoder().decode(&wire[..FRAME_HEADER_BYTES]),
            Err(FrameError::TooLarge {
                payload_bytes: u64::from(DEFAULT_MAX_PAYLOAD_BYTES) + 1,
                max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES
            })
        );
    }

    #[test]
    fn bad_magic_shows_from_the_first_byte() {
        assert!(matches!(
            decoder().decode(b"G"),
            Err(FrameError::BadMagic { .. })
        ));
        assert_eq!(decoder().decode(b"MLG"), Ok(None));
    }

    #[test]
    fn truncated_frames_are_typed_errors() {
        let wire = one_frame(b"payload");
        for cut in 0..wire.len() {
            assert_eq!(decoder().decode(&wire[..cut]), Ok(None), "cut {cut}");
            assert!(
                matches!(
                    decoder().decode_exact(&wire[..cut]),
                    Err(FrameError::Truncated { .. })
                ),
                "cut {cut}"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decoder().decode(&bytes);
            let _ = decoder().decode_exact(&bytes);
            let _ = check_preamble(&bytes);
            let _ = match_preamble(&bytes);
        }

        #[test]
        fn arbitrary_bodies_behind_a_valid_header_never_panic(
            sender_bytes in 0u16..300,
            payload_bytes in 0u32..2048,
            rest in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let mut wire = Vec::new();
            wire.extend_from_slice(&FRAME_MAGIC);
            wire.extend_from_slice(&[PROTOCOL_VERSION, 0]);
            wire.extend_from_slice(&sender_bytes.to_be_bytes());
            wire.extend_from_slice(&payload_bytes.to_be_bytes());
            wire.extend_from_slice(&[0; 16]);
            wire.extend_from_slice(&rest);
            let result = decoder().decode(&wire);
            prop_assert!(!matches!(result, Ok(Some(_))), "forged frame accepted");
        }

        #[test]
        fn encode_then_decode_round_trips(
            sender in "[0-9a-z.:]{0,64}",
            log_id in any::<u64>(),
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1024), 1..5),
            split in any::<prop::sample::Index>(),
        ) {
            let mut encoder = encoder(&sender);
            let mut wire = Vec::new();
            for payload in &payloads {
                encoder.encode(log_id, payload, &mut wire).unwrap();
            }
            // Feed the bytes as a stream cut at an arbitrary point.
            let cut = split.index(wire.len() + 1);
            let mut decoder = decoder();
            let mut buffer = wire[..cut].to_vec();
            let mut decoded = Vec::new();
            for chunk in [&wire[cut..], &[][..]] {
                while let Some((frame, used)) = decoder.decode(&buffer).unwrap() {
                    buffer.drain(..used);
                    decoded.push(frame);
                }
                buffer.extend_from_slice(chunk);
            }
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(decoded.len(), payloads.len());
            for (index, (frame, payload)) in decoded.iter().zip(&payloads).enumerate() {
                prop_assert_eq!(&frame.sender, &sender);
                prop_assert_eq!(frame.log_id, log_id);
                prop_assert_eq!(frame.sequence, index as u64);
                prop_assert_eq!(&frame.payload, payload);
            }
        }

        #[test]
        fn any_single_flipped_bit_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 0..256),
            bit in any::<prop::sample::Index>(),
        ) {
            let mut wire = one_frame(&payload);
            let bit = bit.index(wire.len() * 8);
            wire[bit / 8] ^= 1 << (bit % 8);
            // Refused, or (a length made longer) still waiting for bytes that, at end
            // of stream, make it a truncated frame: never served.
            let result = decoder().decode(&wire);
            prop_assert!(!matches!(result, Ok(Some(_))), "bit {} flipped, frame accepted", bit);
            prop_assert!(decoder().decode_exact(&wire).is_err());
        }
    }
}
