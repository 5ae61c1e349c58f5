//! The cryptography of the frames, one version at a time, apart from the framing:
//! v1 tags a frame with HMAC-SHA256 under the ensemble token, v2 with keyed
//! BLAKE3 under a key derived from it, v3 seals it with AES-256-GCM under a key of
//! its connection (derived from the token and both sides' nonces). See the
//! [`frame`](super) module documentation for the wire format each one covers.

use hmac::{Hmac, KeyInit, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::Sha256;

use super::{ConnectionNonce, ConnectionNonces, FrameError, WireVersion, MAC_BYTES};

/// Domain separation of the v1 MAC: the token may be used for other MACs someday.
const MAC_CONTEXT_V1: &[u8] = b"mesos-replicated-log frame v1\0";
/// Domain separation of the v2 MAC, under its own key as well.
pub(super) const MAC_CONTEXT_V2: &[u8] = b"mesos-replicated-log frame v2\0";
/// BLAKE3's key derivation context for the v2 frame key: hard-coded and unique to
/// this use, as `blake3::derive_key` asks.
pub(super) const FRAME_KEY_CONTEXT_V2: &str =
    "mesos-operator 2026-11-26 replicated-log frame MAC key v2";
/// BLAKE3's key derivation context for the v3 base key (from the token, once per
/// process).
pub(super) const FRAME_KEY_CONTEXT_V3: &str =
    "mesos-operator 2026-11-26 replicated-log frame AEAD base key v3";
/// BLAKE3's key derivation context for a v3 connection's AES-256-GCM key, from the
/// base key and both nonces.
pub(super) const CONNECTION_KEY_CONTEXT_V3: &str =
    "mesos-operator 2026-11-26 replicated-log connection AES-256-GCM key v3";

type HmacSha256 = Hmac<Sha256>;

/// The ensemble token, ready to key the frames of every version.
#[derive(Clone)]
pub struct FrameKey {
    v1: HmacSha256,
    /// `blake3::derive_key(FRAME_KEY_CONTEXT_V2, token)`, derived once.
    v2: [u8; blake3::KEY_LEN],
    /// `blake3::derive_key(FRAME_KEY_CONTEXT_V3, token)`, derived once; each v3
    /// connection derives its own AES key from it ([`FrameKey::connection_auth`]).
    v3: [u8; blake3::KEY_LEN],
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
        let v1 = HmacSha256::new_from_slice(token).map_err(|_| FrameError::EmptyToken)?;
        let v2 = blake3::derive_key(FRAME_KEY_CONTEXT_V2, token);
        let v3 = blake3::derive_key(FRAME_KEY_CONTEXT_V3, token);
        Ok(FrameKey { v1, v2, v3 })
    }

    /// What seals and opens the frames of one connection in `version`.
    pub(super) fn connection_auth(
        &self,
        version: WireVersion,
        nonces: ConnectionNonces,
    ) -> Result<ConnectionAuth, FrameError> {
        match version {
            WireVersion::V1 => Ok(ConnectionAuth::HmacV1 {
                key: self.clone(),
                nonce: nonces.acceptor,
            }),
            WireVersion::V2 => Ok(ConnectionAuth::Blake3V2 {
                key: self.clone(),
                nonce: nonces.acceptor,
            }),
            WireVersion::V3 => {
                let connector = nonces
                    .connector
                    .ok_or(FrameError::MissingConnectorNonce { version })?;
                let mut derive = blake3::Hasher::new_derive_key(CONNECTION_KEY_CONTEXT_V3);
                derive.update(&self.v3);
                derive.update(&nonces.acceptor.0);
                derive.update(&connector.0);
                let key = UnboundKey::new(&AES_256_GCM, derive.finalize().as_bytes())
                    .expect("a BLAKE3 output is a valid AES-256 key (32 bytes)");
                Ok(ConnectionAuth::AesGcmV3(LessSafeKey::new(key)))
            }
        }
    }

    fn hmac_v1(&self, nonce: &ConnectionNonce, head: &[u8], rest: &[u8]) -> HmacSha256 {
        let mut mac = self.v1.clone();
        mac.update(MAC_CONTEXT_V1);
        mac.update(&nonce.0);
        mac.update(head);
        mac.update(rest);
        mac
    }

    /// The tag of `head` followed by `rest`, as if they were one buffer.
    fn blake3_v2(&self, nonce: &ConnectionNonce, head: &[u8], rest: &[u8]) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.v2);
        hasher.update(MAC_CONTEXT_V2);
        hasher.update(&nonce.0);
        // Each part in one call: BLAKE3 hashes its 1 KiB chunks with SIMD several
        // at a time only when it is given them together (a frame is a short
        // header and then the payload).
        hasher.update(head);
        hasher.update(rest);
        hasher.finalize()
    }
}

/// The tag that ends a frame: 32 bytes in v1 and v2, 16 in v3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTag {
    bytes: [u8; MAC_BYTES],
    len: usize,
}

impl FrameTag {
    fn new(tag: &[u8]) -> FrameTag {
        let mut bytes = [0; MAC_BYTES];
        bytes[..tag.len()].copy_from_slice(tag);
        FrameTag {
            bytes,
            len: tag.len(),
        }
    }
}

impl AsRef<[u8]> for FrameTag {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Seals and opens the frames of one connection.
// One per connection, inside its encoder or decoder: the variants' sizes (a few
// hundred bytes of key schedule either way) cost nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(super) enum ConnectionAuth {
    /// v1 and v2: a MAC under the ensemble's key over the context, the
    /// acceptor's nonce and the frame; the payload travels in clear.
    HmacV1 {
        key: FrameKey,
        nonce: ConnectionNonce,
    },
    Blake3V2 {
        key: FrameKey,
        nonce: ConnectionNonce,
    },
    /// v3: AES-256-GCM under the connection's own key, the frame's sequence
    /// number as the GCM nonce; the header and sender are authenticated data,
    /// the payload is encrypted.
    AesGcmV3(LessSafeKey),
}

impl std::fmt::Debug for ConnectionAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionAuth(<redacted>)")
    }
}

/// The GCM nonce of the frame of `sequence`. A connection's key is its own
/// (both nonces go into it) and its sequence numbers never repeat, so neither
/// does a (key, nonce) pair.
fn gcm_nonce(sequence: u64) -> Nonce {
    let mut nonce = [0; NONCE_LEN];
    nonce[NONCE_LEN - 8..].copy_from_slice(&sequence.to_be_bytes());
    Nonce::assume_unique_for_key(nonce)
}

impl ConnectionAuth {
    pub(super) fn version(&self) -> WireVersion {
        match self {
            ConnectionAuth::HmacV1 { .. } => WireVersion::V1,
            ConnectionAuth::Blake3V2 { .. } => WireVersion::V2,
            ConnectionAuth::AesGcmV3(_) => WireVersion::V3,
        }
    }

    /// The tag of the frame `head` + `payload`; v3 encrypts `payload` in place.
    pub(super) fn seal(&self, sequence: u64, head: &[u8], payload: &mut [u8]) -> FrameTag {
        match self {
            ConnectionAuth::HmacV1 { key, nonce } => {
                FrameTag::new(&key.hmac_v1(nonce, head, payload).finalize().into_bytes())
            }
            ConnectionAuth::Blake3V2 { key, nonce } => {
                FrameTag::new(key.blake3_v2(nonce, head, payload).as_bytes())
            }
            ConnectionAuth::AesGcmV3(key) => {
                // Sealing fails only past GCM's limit of 64 GiB per message; a
                // payload is at most a u32 length (checked before this).
                let tag = key
                    .seal_in_place_separate_tag(gcm_nonce(sequence), Aad::from(head), payload)
                    .expect("a frame payload is far below AES-GCM's message limit");
                FrameTag::new(tag.as_ref())
            }
        }
    }

    /// Checks the frame `head` + `payload` against `tag`; v3 decrypts `payload`
    /// in place. Constant time in every version: a comparison that stops at the
    /// first differing byte would let a network attacker learn a valid tag byte
    /// by byte from response timings (`Mac::verify_slice` uses `subtle`,
    /// `blake3::Hash`'s `==` is documented constant time, ring's GCM compares
    /// in constant time).
    pub(super) fn open(
        &self,
        sequence: u64,
        head: &[u8],
        payload: &mut [u8],
        tag: &[u8],
    ) -> Result<(), FrameError> {
        match self {
            ConnectionAuth::HmacV1 { key, nonce } => key
                .hmac_v1(nonce, head, payload)
                .verify_slice(tag)
                .map_err(|_| FrameError::BadMac),
            ConnectionAuth::Blake3V2 { key, nonce } => {
                let tag: [u8; MAC_BYTES] = tag.try_into().map_err(|_| FrameError::BadMac)?;
                // Both sides are `Hash`, never byte slices, so the constant-time
                // `==` is the one used.
                if key.blake3_v2(nonce, head, payload) == blake3::Hash::from_bytes(tag) {
                    Ok(())
                } else {
                    Err(FrameError::BadMac)
                }
            }
            ConnectionAuth::AesGcmV3(key) => {
                let tag = Tag::try_from(tag).map_err(|_| FrameError::BadMac)?;
                key.open_in_place_separate_tag(
                    gcm_nonce(sequence),
                    Aad::from(head),
                    tag,
                    payload,
                    0..,
                )
                .map(|_| ())
                .map_err(|_| FrameError::BadMac)
            }
        }
    }
}
