//! Cost of the replica protocol's frame protection, v1 (HMAC-SHA256), v2 (keyed
//! BLAKE3) and v3 (AES-256-GCM, payload encrypted): MB/s of payload through
//! `FrameEncoder::encode` and `FrameDecoder::decode` (tag, header checks, the
//! copies into and out of the wire buffer and in v3 the encryption, as a link
//! does them), for 4 MiB frames (catch-up) and 512 B frames (a replicated write),
//! plus the bare primitive over the same bytes.
//!
//! `cargo run --release --example frame_mac -- [MiB per case]` (default 256).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use mesos_operator::log::frame::{
    ConnectionNonce, ConnectionNonces, FrameDecoder, FrameEncoder, FrameError, FrameKey,
    WireVersion, NONCE_BYTES,
};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::Sha256;

const TOKEN: &[u8] = b"a 32-byte ensemble token, say...";
const NONCE: ConnectionNonce = ConnectionNonce([0x42; NONCE_BYTES]);
const CONNECTOR_NONCE: ConnectionNonce = ConnectionNonce([0x24; NONCE_BYTES]);
const MAX_PAYLOAD_BYTES: u32 = 16 * 1024 * 1024;

struct Timing {
    encode: Duration,
    decode: Duration,
}

fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6
}

/// Encodes and decodes `frames` frames of `payload`, one at a time through one
/// buffer, and returns the time spent in each.
fn run(
    version: WireVersion,
    payload: &[u8],
    frames: usize,
    key: &FrameKey,
) -> Result<Timing, FrameError> {
    let nonces = ConnectionNonces::new(NONCE, CONNECTOR_NONCE);
    let mut encoder = FrameEncoder::new(
        version,
        key.clone(),
        nonces,
        "10.0.0.1:5050".into(),
        MAX_PAYLOAD_BYTES,
    )?;
    let mut decoder = FrameDecoder::new(version, key.clone(), nonces, MAX_PAYLOAD_BYTES)?;
    let mut wire = Vec::new();
    let (mut encode, mut decode) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..frames {
        wire.clear();
        let started = Instant::now();
        encoder.encode(7, payload, &mut wire)?;
        let encoded = Instant::now();
        let frame = decoder.decode_exact(&wire)?;
        decode += encoded.elapsed();
        encode += encoded - started;
        // Keeps the decoded payload observable, so nothing is optimized away.
        if frame.payload.len() != payload.len() {
            return Err(FrameError::Truncated {
                needed: payload.len(),
                available: frame.payload.len(),
            });
        }
    }
    Ok(Timing { encode, decode })
}

/// The bare primitive of each version over `bytes`, `rounds` times.
fn bare_primitives(bytes: &[u8], rounds: usize) -> Result<[Duration; 3], String> {
    let keyed = Hmac::<Sha256>::new_from_slice(TOKEN).map_err(|error| error.to_string())?;
    let started = Instant::now();
    let mut sink = 0u8;
    for _ in 0..rounds {
        let mut mac = keyed.clone();
        mac.update(bytes);
        sink ^= mac.finalize().into_bytes()[0];
    }
    let hmac = started.elapsed();
    let key = blake3::derive_key("frame_mac example", TOKEN);
    let started = Instant::now();
    for _ in 0..rounds {
        sink ^= blake3::keyed_hash(&key, bytes).as_bytes()[0];
    }
    let blake3 = started.elapsed();
    let aead = UnboundKey::new(&AES_256_GCM, &key)
        .map(LessSafeKey::new)
        .map_err(|error| error.to_string())?;
    let mut in_out = bytes.to_vec();
    let started = Instant::now();
    for round in 0..rounds {
        let mut nonce = [0; NONCE_LEN];
        nonce[NONCE_LEN - 8..].copy_from_slice(&(round as u64).to_be_bytes());
        let tag = aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut in_out,
            )
            .map_err(|error| error.to_string())?;
        sink ^= tag.as_ref()[0];
    }
    let gcm = started.elapsed();
    std::hint::black_box(sink);
    Ok([hmac, blake3, gcm])
}

fn main() -> ExitCode {
    let mib = match std::env::args().nth(1).map(|a| a.parse::<usize>()) {
        None => 256,
        Some(Ok(mib)) if mib > 0 => mib,
        _ => {
            eprintln!("usage: frame_mac [MiB per case, > 0]");
            return ExitCode::FAILURE;
        }
    };
    let key = match FrameKey::new(TOKEN) {
        Ok(key) => key,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let total_bytes = mib * 1024 * 1024;
    println!("{mib} MiB of payload per case; MB/s of payload (1 MB = 10^6 bytes)");
    println!(
        "{:<8} {:>8} {:>10} {:>10} {:>14} {:>10}",
        "version", "frame", "encode", "decode", "encode+decode", "bare"
    );
    for (label, frame_bytes) in [("4 MiB", 4 * 1024 * 1024), ("512 B", 512)] {
        let payload: Vec<u8> = (0..frame_bytes).map(|i| (i * 31 % 251) as u8).collect();
        let frames = (total_bytes / frame_bytes).max(1);
        let bytes = frames * frame_bytes;
        let bare = match bare_primitives(&payload, frames) {
            Ok(timings) => timings,
            Err(error) => {
                eprintln!("keys: {error}");
                return ExitCode::FAILURE;
            }
        };
        for (version, bare) in WireVersion::ALL.into_iter().zip(bare) {
            let timing = match run(version, &payload, frames, &key) {
                Ok(timing) => timing,
                Err(error) => {
                    eprintln!("{version} {label}: {error}");
                    return ExitCode::FAILURE;
                }
            };
            println!(
                "{:<8} {:>8} {:>10.0} {:>10.0} {:>14.0} {:>10.0}",
                version.to_string(),
                label,
                mb_per_s(bytes, timing.encode),
                mb_per_s(bytes, timing.decode),
                mb_per_s(bytes, timing.encode + timing.decode),
                mb_per_s(bytes, bare),
            );
        }
    }
    ExitCode::SUCCESS
}
