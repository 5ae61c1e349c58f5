//! Wire framing of the replica protocol: pure encoding and decoding, no I/O.
//!
//! Replica connections share the master's HTTP port (one port per master, as in
//! Mesos), so a connection announces itself with a preamble: a NUL byte, `MLOG` and
//! a version byte ([`PREAMBLE_V1`], [`PREAMBLE_V2`], [`PREAMBLE_V3`]). No HTTP
//! request (nor a TLS ClientHello, which starts with 0x16) starts with NUL, so the
//! listener can tell them apart from the first byte, and [`match_preamble`] looks
//! at the magic only, so every version is routed to the replica side.
//!
//! A connection carries frames one way, from the connecting member to the accepting
//! one, like libprocess links in Mesos (replies travel on the other member's own
//! connection):
//!
//! ```text
//! connector -> acceptor   preamble of version v (6 bytes)
//!                         [v3: + connector nonce (16 random bytes), in the same write]
//! acceptor  -> connector  preamble of version v (6 bytes) + acceptor nonce (16 random bytes)
//! connector -> acceptor   frames of version v, ...
//! ```
//!
//! A frame (big endian), the same layout in every version:
//!
//! ```text
//! 0..4    FRAME_MAGIC "MLGF"
//! 4       version (the connection's: 1, 2 or 3)
//! 5       flags (none defined yet: any bit set is refused)
//! 6..8    sender_len u16    <= MAX_SENDER_BYTES
//! 8..12   payload_len u32   <= the receiver's max_payload_bytes
//! 12..20  sequence u64      0, 1, 2, ... on each connection
//! 20..28  log_id u64        0 = the sender's log is not initialized yet
//! 28..    sender            the sender's member address, "ip:port", UTF-8
//! ..      payload           a serialized core message; in v3 encrypted
//! ..      tag               v1: HMAC-SHA256(token, MAC_CONTEXT_V1 || nonce || all bytes above), 32 bytes
//!                           v2: BLAKE3-keyed(frame key, MAC_CONTEXT_V2 || nonce || all bytes above), 32 bytes
//!                           v3: AES-256-GCM tag under the connection key, 16 bytes
//! ```
//!
//! The tag proves the sender knows the ensemble token. It covers the acceptor's
//! nonce (in v3 through the connection key), so a frame recorded on one connection
//! fails on any other, and the sequence number, so a frame replayed or reordered
//! within a connection is refused too. It covers the version byte, and each version
//! has its own context strings and keys, so a frame of one version never verifies
//! as another. Decoding checks the fixed header (magic, version, flags, lengths)
//! before it waits for or allocates the body, so a peer can never make the receiver
//! allocate more than the configured maximum. Tags are compared in constant time in
//! every version.
//!
//! # Versions
//!
//! - **v1**: HMAC-SHA256 keyed with the token. With SHA-NI it runs at about
//!   1.2 GB/s, which made the MAC 15% of a master's CPU during a catch-up.
//! - **v2**: keyed BLAKE3. The 32-byte key is derived once per process from the
//!   token with `blake3::derive_key(FRAME_KEY_CONTEXT_V2, token)`, so a token of
//!   any length works and the key is never the token itself.
//! - **v3**: AES-256-GCM (ring). A base key is derived once per process from the
//!   token (`blake3::derive_key(FRAME_KEY_CONTEXT_V3, token)`); each connection's
//!   key is `blake3::derive_key(CONNECTION_KEY_CONTEXT_V3, base || acceptor nonce
//!   || connector nonce)`, and a frame's GCM nonce is its sequence number. The
//!   header and sender are authenticated data (the receiver needs them in clear),
//!   the payload is encrypted: replica traffic is private without TLS as well.
//!   GCM must never seal two messages under one (key, nonce): sequence numbers do
//!   not repeat on a connection, and the connector's nonce makes every connection
//!   key new even if a man in the middle replays an old acceptor nonce to a
//!   reconnecting connector (which is why v3 needed a nonce from each side, where
//!   v1 and v2 have the acceptor's only).
//!
//! Measured by `cargo run --release --example frame_mac` (256 MiB per case) on the
//! development machine (2 shared cores of an AMD EPYC with AVX2, VAES and SHA-NI),
//! MB/s of payload; one run, the machine being shared (runs vary by up to 2x).
//! "encode+decode" is one frame through `encode` then `decode` (tag, header checks,
//! the copies in and out of the wire buffer, and v3's encryption); "bare" is the
//! primitive alone over the payload:
//!
//! ```text
//! version  frame   encode  decode  encode+decode   bare
//! v1       4 MiB     1252    1264            629   1482
//! v2       4 MiB     2495    2578           1268   3637
//! v3       4 MiB     3675    3978           1910   5694
//! v1       512 B      825     767            397   1128
//! v2       512 B      559     531            272    840
//! v3       512 B     1824    1570            844   2816
//! ```
//!
//! v3 is the fastest at both sizes: ring's AES-GCM uses VAES and carry-less
//! multiplication where the CPU has them, where BLAKE3 is fast only through
//! parallelism across its 1 KiB chunks (a small frame is one chunk). ring's
//! GCM over authenticated-only data is slower (about 1.4 GB/s here), which is why
//! v3 encrypts the payload rather than authenticating it in clear.
//!
//! # Rolling upgrade (v1, v2 and v3 in one ensemble)
//!
//! A master of an older build speaks v1 only, or v1 and v2, and refuses any other
//! version by closing the connection without a word (its `check_preamble`). This
//! build:
//!
//! - **accepts all three**: the acceptor answers with the preamble of the version
//!   the connector asked for (after reading the connector's nonce, in v3) and then
//!   decodes that version's frames only (a frame whose version byte differs is
//!   refused). Older connectors keep working unchanged.
//! - **connects with v3 first**: each time the peer closes the connection before
//!   answering a byte of the preamble, the connector opens a new connection at once
//!   and asks for the version before (v3, then v2, then v1). If a handshake
//!   completes, the link speaks that version (an `info!` the first time a peer is
//!   spoken to in it, `debug!` after, and the `v2_fallbacks` or `v1_fallbacks`
//!   counter), otherwise the peer was simply going away, the link reports the v1
//!   attempt's error and the usual backoff applies. The connector nonce sent with a
//!   refused v3 preamble is never used.
//! - **asks for v3 again on every new connection**, with no memory of past
//!   fallbacks. Links are long-lived (one per peer, opened only when there is a
//!   message to send, reconnected only after a failure), so the probe costs one or
//!   two extra connections per reconnect to an older master, which logs each
//!   refusal at debug level and counts it as a malformed handshake. In exchange
//!   nothing can stay stuck on an old version: upgrading a peer restarts it, which
//!   breaks our link, and the reconnect that follows is exactly the one that finds
//!   v3. A remembered "this peer is old for N minutes" would keep a link on the old
//!   version for the life of the connection (days) whenever the upgrade came within
//!   N minutes.
//!
//! A connection that dies for another reason right after the preamble (the peer
//! crashing at that moment) costs needless attempts in older versions, nothing
//! more. An attacker on the path who closes connections can push links down to
//! v1: that costs CPU and (below v3) privacy, not safety, since v1 and v2 still
//! authenticate under the same token, nonce and sequence rules. When every master
//! of the ensemble runs this build, all links are v3; a later build may drop v1
//! and v2 once no supported version needs them.
//!
//! What the tag does not give: proof of which member sent a frame. Every token
//! holder can claim any sender address, so the whitelist keeps out strangers and
//! misconfigured members, not a malicious member.

use ring::error::Unspecified;
use ring::rand::SecureRandom;

use auth::ConnectionAuth;
pub use auth::{FrameKey, FrameTag};

mod auth;

/// The version byte of v1 (HMAC-SHA256), in preambles and frame headers.
pub const PROTOCOL_VERSION_V1: u8 = 1;
/// The version byte of v2 (keyed BLAKE3), in preambles and frame headers.
pub const PROTOCOL_VERSION_V2: u8 = 2;
/// The version byte of v3 (AES-256-GCM), in preambles and frame headers.
pub const PROTOCOL_VERSION_V3: u8 = 3;
pub const PREAMBLE_BYTES: usize = 6;
/// Starts a v1 connection; see the module documentation.
pub const PREAMBLE_V1: [u8; PREAMBLE_BYTES] = *b"\0MLOG\x01";
/// Starts a v2 connection; see the module documentation.
pub const PREAMBLE_V2: [u8; PREAMBLE_BYTES] = *b"\0MLOG\x02";
/// Starts a v3 connection; the connector's nonce follows it at once.
pub const PREAMBLE_V3: [u8; PREAMBLE_BYTES] = *b"\0MLOG\x03";
pub const NONCE_BYTES: usize = 16;
/// What the acceptor answers: the preamble (proving it speaks the protocol, in the
/// version asked for) and the connection nonce.
pub const HANDSHAKE_REPLY_BYTES: usize = PREAMBLE_BYTES + NONCE_BYTES;
pub const FRAME_MAGIC: [u8; 4] = *b"MLGF";
pub const FRAME_HEADER_BYTES: usize = 28;
/// The tag of v1 and v2: HMAC-SHA256 and BLAKE3 both give 32 bytes.
pub const MAC_BYTES: usize = 32;
/// The tag of v3: AES-GCM's 16 bytes.
pub const GCM_TAG_BYTES: usize = 16;
/// A member address is `ip:port` (at most 47 bytes for IPv6) or a DNS name and port
/// (at most 253 + 6); 255 covers both and keeps the header field to one byte's range.
pub const MAX_SENDER_BYTES: usize = 255;
/// Default maximum payload. A Paxos message carries at most a batch of log entries;
/// the registry snapshots and truncates long before a batch gets near 16 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: u32 = 16 * 1024 * 1024;

/// A version of the replica protocol this build speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WireVersion {
    /// HMAC-SHA256 frames: what the previous build speaks, kept for rolling upgrades.
    V1,
    /// Keyed-BLAKE3 frames: the build before this one speaks v1 and v2.
    V2,
    /// AES-256-GCM frames, payload encrypted: what a connector asks for first.
    V3,
}

impl WireVersion {
    /// What a connector asks for first.
    pub const LATEST: WireVersion = WireVersion::V3;
    pub const ALL: [WireVersion; 3] = [WireVersion::V1, WireVersion::V2, WireVersion::V3];

    /// The byte in preambles and frame headers.
    pub const fn byte(self) -> u8 {
        match self {
            WireVersion::V1 => PROTOCOL_VERSION_V1,
            WireVersion::V2 => PROTOCOL_VERSION_V2,
            WireVersion::V3 => PROTOCOL_VERSION_V3,
        }
    }

    pub const fn from_byte(byte: u8) -> Option<WireVersion> {
        match byte {
            PROTOCOL_VERSION_V1 => Some(WireVersion::V1),
            PROTOCOL_VERSION_V2 => Some(WireVersion::V2),
            PROTOCOL_VERSION_V3 => Some(WireVersion::V3),
            _ => None,
        }
    }

    pub const fn preamble(self) -> [u8; PREAMBLE_BYTES] {
        match self {
            WireVersion::V1 => PREAMBLE_V1,
            WireVersion::V2 => PREAMBLE_V2,
            WireVersion::V3 => PREAMBLE_V3,
        }
    }

    /// The version a connector asks for when the peer refused this one, if any.
    pub const fn previous(self) -> Option<WireVersion> {
        match self {
            WireVersion::V1 => None,
            WireVersion::V2 => Some(WireVersion::V1),
            WireVersion::V3 => Some(WireVersion::V2),
        }
    }

    /// Whether the connector sends a nonce of its own right after the preamble.
    pub const fn has_connector_nonce(self) -> bool {
        matches!(self, WireVersion::V3)
    }

    /// The length of the tag that ends each frame.
    pub const fn tag_bytes(self) -> usize {
        match self {
            WireVersion::V1 | WireVersion::V2 => MAC_BYTES,
            WireVersion::V3 => GCM_TAG_BYTES,
        }
    }
}

impl std::fmt::Display for WireVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}", self.byte())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the ensemble token is empty")]
    EmptyToken,
    #[error("not a replica-protocol preamble: {found:02x?}")]
    BadPreamble { found: Vec<u8> },
    #[error("replica protocol version {version} is not supported (this build speaks {PROTOCOL_VERSION_V1} to {PROTOCOL_VERSION_V3})")]
    UnsupportedVersion { version: u8 },
    #[error("the acceptor answered the replica protocol {asked} preamble with version {answered}")]
    VersionMismatch { asked: WireVersion, answered: u8 },
    #[error("frame of replica protocol version {found} on a connection of {connection}")]
    WrongFrameVersion { connection: WireVersion, found: u8 },
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
    #[error("a {version} connection needs the connector's nonce as well as the acceptor's")]
    MissingConnectorNonce { version: WireVersion },
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
    /// Shared: a reader that received a large frame into a buffer of its own
    /// hands out a slice of it, not a copy (see [`FrameDecoder::decode_in_place`]).
    pub payload: bytes::Bytes,
}

/// Chosen by each side for each connection (the acceptor in every version, the
/// connector too from v3 on). It need not be secret, only never repeated: 128 bits
/// from a random number generator the I/O layer hands in (`ring`'s
/// `SystemRandom`), so this module draws no randomness of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionNonce(pub [u8; NONCE_BYTES]);

impl ConnectionNonce {
    /// A fresh nonce from `random`.
    pub fn generate(random: &dyn SecureRandom) -> Result<ConnectionNonce, Unspecified> {
        let mut bytes = [0; NONCE_BYTES];
        random.fill(&mut bytes)?;
        Ok(ConnectionNonce(bytes))
    }
}

/// The nonces of one connection: the acceptor's, and from v3 on the connector's.
///
/// The connector's nonce is what keeps a v3 key from ever sealing two frames
/// under one GCM nonce: a man in the middle who replays an old acceptor nonce to
/// a reconnecting connector still gets a fresh connection key, because the
/// connector's half of it is new. The acceptor's nonce keeps a recorded
/// connection from being replayed to the acceptor, in every version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionNonces {
    pub acceptor: ConnectionNonce,
    /// `None` in v1 and v2, whose connectors send none.
    pub connector: Option<ConnectionNonce>,
}

impl ConnectionNonces {
    pub fn new(acceptor: ConnectionNonce, connector: ConnectionNonce) -> ConnectionNonces {
        ConnectionNonces {
            acceptor,
            connector: Some(connector),
        }
    }
}

impl From<ConnectionNonce> for ConnectionNonces {
    /// The nonces of a v1 or v2 connection: the acceptor's only.
    fn from(acceptor: ConnectionNonce) -> ConnectionNonces {
        ConnectionNonces {
            acceptor,
            connector: None,
        }
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
/// replica connection of any version byte is a replica connection (so v1 and v2
/// both reach [`check_preamble`]); an unknown version is refused there with
/// [`FrameError::UnsupportedVersion`].
pub fn match_preamble(first_bytes: &[u8]) -> PreambleMatch {
    let magic = &PREAMBLE_V1[..PREAMBLE_BYTES - 1];
    let seen = first_bytes.len().min(magic.len());
    if first_bytes[..seen] != magic[..seen] {
        PreambleMatch::Other
    } else if seen < magic.len() {
        PreambleMatch::NeedMore
    } else {
        PreambleMatch::Replica
    }
}

/// The version a complete preamble asks for (or answers with).
pub fn check_preamble(bytes: &[u8]) -> Result<WireVersion, FrameError> {
    if bytes.len() != PREAMBLE_BYTES || match_preamble(bytes) != PreambleMatch::Replica {
        return Err(FrameError::BadPreamble {
            found: bytes.iter().take(PREAMBLE_BYTES).copied().collect(),
        });
    }
    let version = bytes[PREAMBLE_BYTES - 1];
    WireVersion::from_byte(version).ok_or(FrameError::UnsupportedVersion { version })
}

/// Builds the frames of one connection: assigns sequence numbers and tags.
#[derive(Debug, Clone)]
pub struct FrameEncoder {
    auth: ConnectionAuth,
    sender: String,
    next_sequence: u64,
    max_payload_bytes: u32,
}

impl FrameEncoder {
    /// The encoder of a connection whose handshake settled on `version`. A v3
    /// connection needs both nonces ([`FrameError::MissingConnectorNonce`]).
    pub fn new(
        version: WireVersion,
        key: FrameKey,
        nonces: impl Into<ConnectionNonces>,
        sender: String,
        max_payload_bytes: u32,
    ) -> Result<FrameEncoder, FrameError> {
        if sender.len() > MAX_SENDER_BYTES {
            return Err(FrameError::SenderTooLong {
                sender_bytes: sender.len(),
            });
        }
        Ok(FrameEncoder {
            auth: key.connection_auth(version, nonces.into())?,
            sender,
            next_sequence: 0,
            max_payload_bytes,
        })
    }

    pub fn version(&self) -> WireVersion {
        self.auth.version()
    }

    /// Appends one frame to `out`.
    pub fn encode(
        &mut self,
        log_id: u64,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        self.check_payload(payload)?;
        let start = out.len();
        out.reserve(
            FRAME_HEADER_BYTES + self.sender.len() + payload.len() + self.version().tag_bytes(),
        );
        self.push_head(log_id, payload, out);
        let head_bytes = out.len() - start;
        out.extend_from_slice(payload);
        let (head, body) = out[start..].split_at_mut(head_bytes);
        let tag = self.auth.seal(self.next_sequence, head, body);
        out.extend_from_slice(tag.as_ref());
        self.next_sequence += 1;
        Ok(())
    }

    /// One frame without its payload: appends what goes before the payload to
    /// `out` and returns the tag that goes after it. The frame on the wire is
    /// `out`'s new bytes, then `payload`, then the tag; a writer sends a large
    /// payload from where it lies instead of copying it next to its header. In
    /// v3 `payload` is encrypted in place: what lies there afterwards is the
    /// ciphertext to send.
    pub fn encode_around(
        &mut self,
        log_id: u64,
        payload: &mut [u8],
        out: &mut Vec<u8>,
    ) -> Result<FrameTag, FrameError> {
        self.check_payload(payload)?;
        let start = out.len();
        self.push_head(log_id, payload, out);
        let tag = self.auth.seal(self.next_sequence, &out[start..], payload);
        self.next_sequence += 1;
        Ok(tag)
    }

    fn check_payload(&self, payload: &[u8]) -> Result<(), FrameError> {
        if payload.len() as u64 > u64::from(self.max_payload_bytes) {
            return Err(FrameError::TooLarge {
                payload_bytes: payload.len() as u64,
                max_payload_bytes: self.max_payload_bytes,
            });
        }
        Ok(())
    }

    /// The fixed header and the sender, for a checked payload.
    fn push_head(&self, log_id: u64, payload: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&FRAME_MAGIC);
        out.push(self.version().byte());
        out.push(0);
        // Both lengths were bounded above (sender at construction).
        out.extend_from_slice(&(self.sender.len() as u16).to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.next_sequence.to_be_bytes());
        out.extend_from_slice(&log_id.to_be_bytes());
        out.extend_from_slice(self.sender.as_bytes());
    }
}

/// A frame's authenticated header fields.
struct FrameHead {
    sender: String,
    log_id: u64,
    sequence: u64,
}

impl FrameHead {
    fn with_payload(self, payload: bytes::Bytes) -> Frame {
        Frame {
            sender: self.sender,
            log_id: self.log_id,
            sequence: self.sequence,
            payload,
        }
    }
}

/// Where the parts of a frame whose header checked out lie, from its first byte.
struct FrameLayout {
    /// The header and the sender: authenticated, never encrypted.
    head_bytes: usize,
    /// The payload, then the tag to its end.
    tag_start: usize,
    total: usize,
}

/// Reads the frames of one connection: checks lengths first, then the tag, then
/// the sequence.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    auth: ConnectionAuth,
    next_sequence: u64,
    max_payload_bytes: u32,
}

impl FrameDecoder {
    /// The decoder of a connection whose handshake settled on `version`: frames of
    /// any other version are refused. A v3 connection needs both nonces
    /// ([`FrameError::MissingConnectorNonce`]).
    pub fn new(
        version: WireVersion,
        key: FrameKey,
        nonces: impl Into<ConnectionNonces>,
        max_payload_bytes: u32,
    ) -> Result<FrameDecoder, FrameError> {
        Ok(FrameDecoder {
            auth: key.connection_auth(version, nonces.into())?,
            next_sequence: 0,
            max_payload_bytes,
        })
    }

    pub fn version(&self) -> WireVersion {
        self.auth.version()
    }

    /// Frames that passed the tag check so far (each one advances the sequence).
    pub fn frames_decoded(&self) -> u64 {
        self.next_sequence
    }

    /// How many bytes the frame starting at `buf` needs in all, once its fixed header
    /// is there; `Ok(None)` if fewer than `FRAME_HEADER_BYTES` are available. Checks
    /// the header, so a reader can refuse a hostile length before reading the body.
    pub fn frame_bytes(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        Ok(self.layout(buf)?.map(|layout| layout.total))
    }

    fn layout(&self, buf: &[u8]) -> Result<Option<FrameLayout>, FrameError> {
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
        if header[4] != self.version().byte() {
            return Err(FrameError::WrongFrameVersion {
                connection: self.version(),
                found: header[4],
            });
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
        let head_bytes = FRAME_HEADER_BYTES + sender_bytes;
        let tag_start = head_bytes + payload_bytes as usize;
        Ok(Some(FrameLayout {
            head_bytes,
            tag_start,
            total: tag_start + self.version().tag_bytes(),
        }))
    }

    /// Decodes the frame at the start of `buf`: `Ok(Some((frame, bytes consumed)))`,
    /// or `Ok(None)` if `buf` holds only part of a frame (so far valid). The
    /// payload is copied out of `buf` (and decrypted in the copy, in v3).
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(layout) = self.layout(buf)? else {
            return Ok(None);
        };
        let Some(frame) = buf.get(..layout.total) else {
            return Ok(None);
        };
        let total = layout.total;
        Ok(Some((self.decode_copy(frame, layout)?, total)))
    }

    /// The frame `frame` laid out as `layout`, its payload copied out.
    fn decode_copy(&mut self, frame: &[u8], layout: FrameLayout) -> Result<Frame, FrameError> {
        let mut payload = frame[layout.head_bytes..layout.tag_start].to_vec();
        let head = self.open(
            &frame[..layout.head_bytes],
            &mut payload,
            &frame[layout.tag_start..],
        )?;
        Ok(head.with_payload(bytes::Bytes::from(payload)))
    }

    /// Decodes `buf`, which holds exactly one frame, without copying its payload:
    /// the frame's payload is a slice of `buf` (decrypted where it lies, in v3), so
    /// the payload keeps the whole buffer alive (a reader gives a large frame a
    /// buffer of its own for this).
    pub fn decode_in_place(&mut self, mut buf: Vec<u8>) -> Result<Frame, FrameError> {
        let layout = self.exact_layout(&buf)?;
        let (head, rest) = buf.split_at_mut(layout.head_bytes);
        let (payload, tag) = rest.split_at_mut(layout.tag_start - layout.head_bytes);
        let head = self.open(head, payload, tag)?;
        Ok(head.with_payload(bytes::Bytes::from(buf).slice(layout.head_bytes..layout.tag_start)))
    }

    /// Decodes exactly one frame filling `buf`; a short buffer is
    /// [`FrameError::Truncated`].
    pub fn decode_exact(&mut self, buf: &[u8]) -> Result<Frame, FrameError> {
        let layout = self.exact_layout(buf)?;
        self.decode_copy(buf, layout)
    }

    /// The layout of the one frame that fills `buf` exactly; a short (or long)
    /// buffer is [`FrameError::Truncated`].
    fn exact_layout(&self, buf: &[u8]) -> Result<FrameLayout, FrameError> {
        match self.layout(buf)? {
            Some(layout) if layout.total == buf.len() => Ok(layout),
            Some(layout) => Err(FrameError::Truncated {
                needed: layout.total,
                available: buf.len(),
            }),
            None => Err(FrameError::Truncated {
                needed: FRAME_HEADER_BYTES + self.version().tag_bytes(),
                available: buf.len(),
            }),
        }
    }

    /// Authenticates a frame (decrypting its payload in place, in v3), then reads
    /// its header fields and checks its sequence.
    fn open(
        &mut self,
        head: &[u8],
        payload: &mut [u8],
        tag: &[u8],
    ) -> Result<FrameHead, FrameError> {
        let field = |range: std::ops::Range<usize>| {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&head[range]);
            u64::from_be_bytes(bytes)
        };
        // Read before it is authenticated, as v3's GCM nonce: a forged sequence
        // gives another nonce, and the tag fails.
        let sequence = field(12..20);
        self.auth.open(sequence, head, payload, tag)?;
        // Authenticated from here on: the fields are what a token holder wrote.
        let log_id = field(20..28);
        if sequence != self.next_sequence {
            return Err(FrameError::OutOfSequence {
                expected: self.next_sequence,
                found: sequence,
            });
        }
        let sender = std::str::from_utf8(&head[FRAME_HEADER_BYTES..])
            .map_err(|_| FrameError::SenderNotUtf8)?
            .to_owned();
        self.next_sequence += 1;
        Ok(FrameHead {
            sender,
            log_id,
            sequence,
        })
    }
}

#[cfg(test)]
mod tests;
