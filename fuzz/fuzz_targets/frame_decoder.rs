//! The replica frame decoder (`src/log/frame.rs`) and the message decoder behind it
//! (`src/log/message.rs`, postcard), as `serve_replica` and the driver run them.
//!
//! The first input byte picks the protocol version, bits 1-2 (0: v1,
//! HMAC-SHA256; 1: v2, keyed BLAKE3; 2 and 3: v3, AES-256-GCM), and a mode, bit 0:
//! - even: the rest is a hostile byte stream: the preamble checks, then frames
//!   decoded one after another as a connection reads them, each payload decoded as
//!   an `Envelope`. Nothing may panic, and no frame may pass the tag check (the
//!   fuzzer does not know the token).
//! - odd: structured: frames built by a `FrameEncoder` holding the token around
//!   fuzzer-chosen payloads, so they pass the MAC and the fuzzer explores the
//!   postcard decoding of messages; optionally one bit of the wire is flipped,
//!   which the decoder must refuse (never serve a frame that differs from the one
//!   encoded). Layout after the mode byte (little endian): flip flag u8, flip bit
//!   u32, sender length u8, sender (UTF-8, lossy), log id u64, then payloads as
//!   (length u16, bytes)*. `tests/pure/fuzz_seeds.rs` writes seeds in this layout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesos_operator::log::frame::{
    check_preamble, match_preamble, ConnectionNonce, ConnectionNonces, Frame, FrameDecoder,
    FrameEncoder, FrameKey, WireVersion, MAX_SENDER_BYTES, NONCE_BYTES,
};
use mesos_operator::log::message::Envelope;

const TOKEN: &[u8] = b"fuzz-ensemble-token";
const NONCE: ConnectionNonce = ConnectionNonce([0x5a; NONCE_BYTES]);
const CONNECTOR_NONCE: ConnectionNonce = ConnectionNonce([0xa5; NONCE_BYTES]);
/// Both nonces; v1 and v2 use the acceptor's only.
const NONCES: ConnectionNonces = ConnectionNonces {
    acceptor: NONCE,
    connector: Some(CONNECTOR_NONCE),
};
/// Small, so hostile lengths near the limit are reachable.
const MAX_PAYLOAD_BYTES: u32 = 64 * 1024;

#[derive(Debug)]
struct Structured {
    sender: String,
    log_id: u64,
    payloads: Vec<Vec<u8>>,
    flip_bit: Option<u32>,
}

/// Reads the layout in the module documentation; missing bytes read as empty.
fn parse(bytes: &[u8]) -> Structured {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> &'a [u8] {
            let (head, tail) = self.0.split_at(n.min(self.0.len()));
            self.0 = tail;
            head
        }
        fn le(&mut self, n: usize) -> u64 {
            let mut value = [0; 8];
            let head = self.take(n);
            value[..head.len()].copy_from_slice(head);
            u64::from_le_bytes(value)
        }
    }
    let mut reader = Reader(bytes);
    let flip = reader.le(1) != 0;
    let flip_bit = reader.le(4) as u32;
    let sender_len = reader.le(1) as usize;
    let sender = String::from_utf8_lossy(reader.take(sender_len)).into_owned();
    let log_id = reader.le(8);
    let mut payloads = Vec::new();
    while !reader.0.is_empty() {
        let len = reader.le(2) as usize;
        payloads.push(reader.take(len).to_vec());
    }
    Structured {
        sender,
        log_id,
        payloads,
        flip_bit: flip.then_some(flip_bit),
    }
}

fn key() -> FrameKey {
    match FrameKey::new(TOKEN) {
        Ok(key) => key,
        Err(error) => panic!("the fuzz token is not empty: {error}"),
    }
}

fn decoder(version: WireVersion) -> FrameDecoder {
    match FrameDecoder::new(version, key(), NONCES, MAX_PAYLOAD_BYTES) {
        Ok(decoder) => decoder,
        Err(error) => panic!("both nonces are given: {error}"),
    }
}

/// Decodes an authenticated payload as the driver does; a decoded message must
/// survive a round trip through the encoder.
fn decode_message(payload: &[u8]) {
    // What the driver runs: values may share the payload's buffer, and must
    // decode to what a plain decode gives.
    let shared = mesos_operator::log::decode_sharing::<Envelope>(&bytes::Bytes::copy_from_slice(payload));
    let plain = postcard::from_bytes::<Envelope>(payload);
    assert_eq!(shared.is_ok(), plain.is_ok(), "sharing changes whether a payload decodes");
    if let (Ok(shared), Ok(plain)) = (&shared, &plain) {
        assert_eq!(shared, plain, "sharing changes what a payload decodes to");
    }
    if let Ok(envelope) = plain {
        let again = postcard::to_allocvec(&envelope).expect("a decoded envelope re-encodes");
        let decoded =
            postcard::from_bytes::<Envelope>(&again).expect("re-encoded envelope decodes");
        assert_eq!(decoded, envelope, "envelope round trip");
        let _ = (envelope.message.is_status(), envelope.message.is_vote());
    }
}

fn hostile_stream(version: WireVersion, bytes: &[u8]) {
    let _ = match_preamble(bytes);
    let _ = check_preamble(bytes);
    decode_message(bytes);
    let mut decoder = decoder(version);
    let _ = decoder.frame_bytes(bytes);
    if let Ok(Some((frame, _))) = decoder.decode(bytes) {
        panic!("a frame forged without the token passed the tag check: {frame:?}");
    }
    let _ = self::decoder(version).decode_exact(bytes);
    if let Ok(frame) = self::decoder(version).decode_in_place(bytes.to_vec()) {
        panic!("a frame forged without the token passed the tag check in place: {frame:?}");
    }
}

fn structured(version: WireVersion, input: Structured) {
    let mut sender = input.sender;
    while sender.len() > MAX_SENDER_BYTES {
        sender.pop();
    }
    let mut encoder = match FrameEncoder::new(
        version,
        key(),
        NONCES,
        sender.clone(),
        MAX_PAYLOAD_BYTES,
    ) {
        Ok(encoder) => encoder,
        Err(error) => panic!("sender of {} bytes refused: {error}", sender.len()),
    };
    let mut wire = Vec::new();
    let mut sent = Vec::new();
    for payload in input.payloads {
        if encoder.encode(input.log_id, &payload, &mut wire).is_err() {
            assert!(
                payload.len() > MAX_PAYLOAD_BYTES as usize,
                "refused a legal payload"
            );
            continue;
        }
        sent.push(Frame {
            sender: sender.clone(),
            log_id: input.log_id,
            sequence: sent.len() as u64,
            payload: payload.into(),
        });
    }
    let flipped = match input.flip_bit {
        Some(bit) if !wire.is_empty() => {
            let bit = bit as usize % (wire.len() * 8);
            wire[bit / 8] ^= 1 << (bit % 8);
            true
        }
        _ => false,
    };
    let mut decoder = decoder(version);
    // The reader's path for large frames: each frame in a buffer of its own.
    let mut in_place = self::decoder(version);
    let mut rest = &wire[..];
    let mut received = Vec::new();
    while let Ok(Some((frame, used))) = decoder.decode(rest) {
        let alone = rest[..used].to_vec();
        assert_eq!(
            in_place.decode_in_place(alone).as_ref(),
            Ok(&frame),
            "a frame decodes the same in a buffer of its own"
        );
        rest = &rest[used..];
        decode_message(&frame.payload);
        received.push(frame);
    }
    // Whatever was accepted is exactly a prefix of what was sent: a flipped bit
    // may only stop the stream, never change a frame.
    assert!(
        received.len() <= sent.len(),
        "more frames received than sent"
    );
    assert_eq!(
        received,
        sent[..received.len()],
        "a received frame differs from the one sent"
    );
    if !flipped {
        assert_eq!(received.len(), sent.len(), "an intact stream lost frames");
        assert!(rest.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let version = match (mode >> 1) & 3 {
        0 => WireVersion::V1,
        1 => WireVersion::V2,
        _ => WireVersion::V3,
    };
    if mode % 2 == 0 {
        hostile_stream(version, rest);
    } else {
        structured(version, parse(rest));
    }
});
