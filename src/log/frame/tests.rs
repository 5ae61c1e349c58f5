use super::auth::{
    CONNECTION_KEY_CONTEXT_V3, FRAME_KEY_CONTEXT_V2, FRAME_KEY_CONTEXT_V3, MAC_CONTEXT_V2,
};
use super::*;
use proptest::prelude::*;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

const TOKEN: &[u8] = b"ensemble-token";
const NONCE: ConnectionNonce = ConnectionNonce([7; NONCE_BYTES]);
const CONNECTOR_NONCE: ConnectionNonce = ConnectionNonce([9; NONCE_BYTES]);

fn key() -> FrameKey {
    FrameKey::new(TOKEN).unwrap()
}

/// Both nonces; v1 and v2 use the acceptor's only.
fn nonces() -> ConnectionNonces {
    ConnectionNonces::new(NONCE, CONNECTOR_NONCE)
}

fn encoder(version: WireVersion, sender: &str) -> FrameEncoder {
    FrameEncoder::new(
        version,
        key(),
        nonces(),
        sender.into(),
        DEFAULT_MAX_PAYLOAD_BYTES,
    )
    .unwrap()
}

fn decoder(version: WireVersion) -> FrameDecoder {
    FrameDecoder::new(version, key(), nonces(), DEFAULT_MAX_PAYLOAD_BYTES).unwrap()
}

fn one_frame(version: WireVersion, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encoder(version, "10.0.0.1:5050")
        .encode(42, payload, &mut out)
        .unwrap();
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn any_version() -> impl Strategy<Value = WireVersion> {
    prop::sample::select(WireVersion::ALL.to_vec())
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
    assert_eq!(
        check_preamble(b"\0MLOG\x09"),
        Err(FrameError::UnsupportedVersion { version: 9 })
    );
    assert!(matches!(
        check_preamble(b"\0MLOT\x01"),
        Err(FrameError::BadPreamble { .. })
    ));
}

#[test]
fn every_preamble_routes_to_the_replica_side_and_names_its_version() {
    assert_eq!(PREAMBLE_V1, WireVersion::V1.preamble());
    assert_eq!(PREAMBLE_V2, WireVersion::V2.preamble());
    assert_eq!(PREAMBLE_V3, WireVersion::V3.preamble());
    for version in WireVersion::ALL {
        let preamble = version.preamble();
        assert_eq!(match_preamble(&preamble), PreambleMatch::Replica);
        // The sniffer decides on the magic: a prefix of either still waits.
        assert_eq!(match_preamble(&preamble[..3]), PreambleMatch::NeedMore);
        assert_eq!(check_preamble(&preamble), Ok(version));
        assert_eq!(WireVersion::from_byte(version.byte()), Some(version));
    }
    assert_eq!(WireVersion::from_byte(0), None);
    assert_eq!(WireVersion::from_byte(4), None);
    assert_eq!(WireVersion::LATEST, WireVersion::V3);
    // A connector steps down one version per refusal, to v1 and no further.
    assert_eq!(WireVersion::V3.previous(), Some(WireVersion::V2));
    assert_eq!(WireVersion::V2.previous(), Some(WireVersion::V1));
    assert_eq!(WireVersion::V1.previous(), None);
}

/// Pins v1 to the previous build's frames, byte for byte: the tag was computed
/// independently (Python's `hmac`/`hashlib` over the documented layout), so a
/// change that would break a rolling upgrade fails here.
#[test]
fn a_v1_frame_is_exactly_what_the_previous_build_sends() {
    let wire = one_frame(WireVersion::V1, b"golden");
    let mut expected = b"MLGF\x01\x00".to_vec();
    expected.extend_from_slice(&13u16.to_be_bytes());
    expected.extend_from_slice(&6u32.to_be_bytes());
    expected.extend_from_slice(&0u64.to_be_bytes());
    expected.extend_from_slice(&42u64.to_be_bytes());
    expected.extend_from_slice(b"10.0.0.1:5050golden");
    assert_eq!(wire[..wire.len() - MAC_BYTES], expected[..]);
    assert_eq!(
        hex(&wire[wire.len() - MAC_BYTES..]),
        "6a761f4cbe5ae6a1bda99c0e4aba4d99c0625e5f357c8d192915ee43b1a9f8f7"
    );
}

/// Pins the v2 MAC (key derivation context, MAC context, covered bytes): two
/// builds that disagree on any of them could not talk v2. The tag is spelled
/// out with the `blake3` API step by step, then pinned as bytes.
#[test]
fn a_v2_frame_is_keyed_blake3_over_context_nonce_and_frame() {
    let wire = one_frame(WireVersion::V2, b"golden");
    let (covered, tag) = wire.split_at(wire.len() - MAC_BYTES);
    assert_eq!(covered[4], PROTOCOL_VERSION_V2);
    let frame_key = blake3::derive_key(FRAME_KEY_CONTEXT_V2, TOKEN);
    let mut input = MAC_CONTEXT_V2.to_vec();
    input.extend_from_slice(&NONCE.0);
    input.extend_from_slice(covered);
    assert_eq!(tag, blake3::keyed_hash(&frame_key, &input).as_bytes());
    assert_eq!(
        hex(tag),
        "8f4d4122988829ca296a958a7729d3676a174e097f7ccbf37141ab5de2391711"
    );
    // The v2 key is derived, never the token, and differs per token.
    assert_ne!(
        blake3::derive_key(FRAME_KEY_CONTEXT_V2, b"other"),
        frame_key
    );
}

/// Pins v3: the key derivation (token -> base key -> connection key from
/// both nonces), the GCM nonce (the sequence), what is authenticated (header
/// and sender) and what is encrypted (the payload), spelled out with `blake3`
/// and `ring` step by step, then pinned as bytes.
#[test]
fn a_v3_frame_is_aes_gcm_under_a_key_of_its_connection() {
    let wire = one_frame(WireVersion::V3, b"golden");
    let head_bytes = FRAME_HEADER_BYTES + "10.0.0.1:5050".len();
    let (head, rest) = wire.split_at(head_bytes);
    let (ciphertext, tag) = rest.split_at(rest.len() - GCM_TAG_BYTES);
    assert_eq!(head[4], PROTOCOL_VERSION_V3);
    assert_eq!(
        &head[head_bytes - 13..],
        b"10.0.0.1:5050",
        "the sender is in clear"
    );
    assert_eq!(ciphertext.len(), 6);
    assert_ne!(ciphertext, b"golden", "the payload is not");
    let base = blake3::derive_key(FRAME_KEY_CONTEXT_V3, TOKEN);
    let mut material = base.to_vec();
    material.extend_from_slice(&NONCE.0);
    material.extend_from_slice(&CONNECTOR_NONCE.0);
    let connection_key = blake3::derive_key(CONNECTION_KEY_CONTEXT_V3, &material);
    let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &connection_key).unwrap());
    let mut sealed = [ciphertext, tag].concat();
    let mut gcm_nonce = [0; NONCE_LEN];
    gcm_nonce[4..].copy_from_slice(&0u64.to_be_bytes());
    let opened = aead
        .open_in_place(
            Nonce::assume_unique_for_key(gcm_nonce),
            Aad::from(head),
            &mut sealed,
        )
        .unwrap();
    assert_eq!(opened, b"golden");
    assert_eq!(hex(rest), "84f02acd1b1a26cc7b9bc89fcedc7cb676188d19c37a");
    // Another connector nonce is another key, on the same acceptor nonce.
    let mut replayed_acceptor_nonce = FrameDecoder::new(
        WireVersion::V3,
        key(),
        ConnectionNonces::new(NONCE, ConnectionNonce([10; NONCE_BYTES])),
        DEFAULT_MAX_PAYLOAD_BYTES,
    )
    .unwrap();
    assert_eq!(
        replayed_acceptor_nonce.decode(&wire),
        Err(FrameError::BadMac)
    );
}

#[test]
fn a_v3_connection_without_the_connectors_nonce_is_refused() {
    let missing = Err(FrameError::MissingConnectorNonce {
        version: WireVersion::V3,
    });
    assert_eq!(
        FrameEncoder::new(WireVersion::V3, key(), NONCE, "m".into(), 1024).map(|_| ()),
        missing
    );
    assert_eq!(
        FrameDecoder::new(WireVersion::V3, key(), NONCE, 1024).map(|_| ()),
        missing
    );
    // v1 and v2 have none to give.
    for version in [WireVersion::V1, WireVersion::V2] {
        assert!(FrameEncoder::new(version, key(), NONCE, "m".into(), 1024).is_ok());
        assert!(FrameDecoder::new(version, key(), NONCE, 1024).is_ok());
    }
}

#[test]
fn a_frame_decoded_in_place_is_decrypted_where_it_lies() {
    for version in WireVersion::ALL {
        let payload = vec![0x3c; 100_000];
        let wire = one_frame(version, &payload);
        let buffer = wire.clone();
        let payload_at = buffer[FRAME_HEADER_BYTES + "10.0.0.1:5050".len()..].as_ptr();
        let frame = decoder(version).decode_in_place(buffer).unwrap();
        assert_eq!(frame.payload, payload);
        assert_eq!(frame.payload.as_ptr(), payload_at, "{version}: not a copy");
        assert_eq!(frame.sender, "10.0.0.1:5050");
        let mut longer = wire;
        longer.push(0);
        assert!(matches!(
            decoder(version).decode_in_place(longer),
            Err(FrameError::Truncated { .. })
        ));
    }
}

#[test]
fn tokens_of_any_length_key_every_version_and_an_empty_one_is_refused() {
    assert!(matches!(FrameKey::new(b""), Err(FrameError::EmptyToken)));
    for token in [&b"x"[..], &[0xab; 32], &[0xcd; 100_000]] {
        for version in WireVersion::ALL {
            let key = FrameKey::new(token).unwrap();
            let mut wire = Vec::new();
            FrameEncoder::new(version, key.clone(), nonces(), "m".into(), 1024)
                .unwrap()
                .encode(1, b"p", &mut wire)
                .unwrap();
            let frame = FrameDecoder::new(version, key, nonces(), 1024)
                .unwrap()
                .decode_exact(&wire)
                .unwrap();
            assert_eq!(frame.payload, &b"p"[..]);
        }
    }
}

#[test]
fn round_trip_of_consecutive_frames() {
    for version in WireVersion::ALL {
        let mut encoder = encoder(version, "10.0.0.1:5050");
        assert_eq!(encoder.version(), version);
        let mut wire = Vec::new();
        encoder.encode(0, b"", &mut wire).unwrap();
        encoder.encode(9, b"promise", &mut wire).unwrap();
        assert_eq!(wire[4], version.byte());
        let mut decoder = decoder(version);
        let (first, used) = decoder.decode(&wire).unwrap().unwrap();
        assert_eq!(
            first,
            Frame {
                sender: "10.0.0.1:5050".into(),
                log_id: 0,
                sequence: 0,
                payload: bytes::Bytes::new()
            }
        );
        let second = decoder.decode_exact(&wire[used..]).unwrap();
        assert_eq!((second.log_id, second.sequence), (9, 1));
        assert_eq!(second.payload, &b"promise"[..]);
    }
}

#[test]
fn a_frame_from_another_connection_or_token_fails_its_mac() {
    for version in WireVersion::ALL {
        let wire = one_frame(version, b"accept");
        let mut other_connection = FrameDecoder::new(
            version,
            key(),
            ConnectionNonces::new(ConnectionNonce([8; NONCE_BYTES]), CONNECTOR_NONCE),
            DEFAULT_MAX_PAYLOAD_BYTES,
        )
        .unwrap();
        assert_eq!(other_connection.decode(&wire), Err(FrameError::BadMac));
        let mut other_token = FrameDecoder::new(
            version,
            FrameKey::new(b"other").unwrap(),
            nonces(),
            DEFAULT_MAX_PAYLOAD_BYTES,
        )
        .unwrap();
        assert_eq!(other_token.decode(&wire), Err(FrameError::BadMac));
    }
}

#[test]
fn a_frame_of_one_version_never_passes_as_the_other() {
    for sent in WireVersion::ALL {
        for connection in WireVersion::ALL.into_iter().filter(|v| *v != sent) {
            let mut wire = one_frame(sent, b"accept");
            assert_eq!(
                decoder(connection).decode(&wire),
                Err(FrameError::WrongFrameVersion {
                    connection,
                    found: sent.byte()
                })
            );
            // Relabelled to pass the header check, its tag is another
            // version's: refused, or (a shorter v3 tag read as a v1/v2 one)
            // still waiting for bytes, which at the end is a truncated frame.
            wire[4] = connection.byte();
            let relabelled = decoder(connection).decode(&wire);
            if sent.tag_bytes() >= connection.tag_bytes() {
                assert_eq!(
                    relabelled,
                    Err(FrameError::BadMac),
                    "{sent} as {connection}"
                );
            } else {
                assert_eq!(relabelled, Ok(None), "{sent} as {connection}");
            }
            assert!(decoder(connection).decode_exact(&wire).is_err());
        }
    }
}

#[test]
fn a_frame_replayed_on_its_own_connection_is_out_of_sequence() {
    for version in WireVersion::ALL {
        let wire = one_frame(version, b"accept");
        let mut decoder = decoder(version);
        decoder.decode_exact(&wire).unwrap();
        assert_eq!(
            decoder.decode_exact(&wire),
            Err(FrameError::OutOfSequence {
                expected: 1,
                found: 0
            })
        );
    }
}

#[test]
fn frames_delivered_out_of_order_are_refused() {
    for version in WireVersion::ALL {
        let mut encoder = encoder(version, "10.0.0.1:5050");
        let (mut first, mut second) = (Vec::new(), Vec::new());
        encoder.encode(1, b"first", &mut first).unwrap();
        encoder.encode(1, b"second", &mut second).unwrap();
        assert_eq!(
            decoder(version).decode_exact(&second),
            Err(FrameError::OutOfSequence {
                expected: 0,
                found: 1
            })
        );
    }
}

#[test]
fn an_oversized_length_is_refused_from_the_header_alone() {
    for version in WireVersion::ALL {
        let mut wire = one_frame(version, b"x");
        wire[8..12].copy_from_slice(&(DEFAULT_MAX_PAYLOAD_BYTES + 1).to_be_bytes());
        // Only the fixed header: the body was never sent, and is never waited for.
        assert_eq!(
            decoder(version).decode(&wire[..FRAME_HEADER_BYTES]),
            Err(FrameError::TooLarge {
                payload_bytes: u64::from(DEFAULT_MAX_PAYLOAD_BYTES) + 1,
                max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES
            })
        );
    }
}

#[test]
fn bad_magic_shows_from_the_first_byte() {
    for version in WireVersion::ALL {
        assert!(matches!(
            decoder(version).decode(b"G"),
            Err(FrameError::BadMagic { .. })
        ));
        assert_eq!(decoder(version).decode(b"MLG"), Ok(None));
    }
}

#[test]
fn truncated_frames_are_typed_errors() {
    for version in WireVersion::ALL {
        let wire = one_frame(version, b"payload");
        for cut in 0..wire.len() {
            assert_eq!(decoder(version).decode(&wire[..cut]), Ok(None), "cut {cut}");
            assert!(
                matches!(
                    decoder(version).decode_exact(&wire[..cut]),
                    Err(FrameError::Truncated { .. })
                ),
                "{version} cut {cut}"
            );
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        version in any_version(),
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = decoder(version).decode(&bytes);
        let _ = decoder(version).decode_exact(&bytes);
        let _ = check_preamble(&bytes);
        let _ = match_preamble(&bytes);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(
        version in any_version(),
        sender_bytes in 0u16..300,
        payload_bytes in 0u32..2048,
        rest in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut wire = Vec::new();
        wire.extend_from_slice(&FRAME_MAGIC);
        wire.extend_from_slice(&[version.byte(), 0]);
        wire.extend_from_slice(&sender_bytes.to_be_bytes());
        wire.extend_from_slice(&payload_bytes.to_be_bytes());
        wire.extend_from_slice(&[0; 16]);
        wire.extend_from_slice(&rest);
        let result = decoder(version).decode(&wire);
        prop_assert!(!matches!(result, Ok(Some(_))), "forged frame accepted");
    }

    #[test]
    fn encode_then_decode_round_trips(
        version in any_version(),
        sender in "[0-9a-z.:]{0,64}",
        log_id in any::<u64>(),
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1024), 1..5),
        split in any::<prop::sample::Index>(),
    ) {
        let mut encoder = encoder(version, &sender);
        let mut wire = Vec::new();
        for payload in &payloads {
            encoder.encode(log_id, payload, &mut wire).unwrap();
        }
        // Feed the bytes as a stream cut at an arbitrary point.
        let cut = split.index(wire.len() + 1);
        let mut decoder = decoder(version);
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
        version in any_version(),
        payload in proptest::collection::vec(any::<u8>(), 0..256),
        bit in any::<prop::sample::Index>(),
    ) {
        let mut wire = one_frame(version, &payload);
        let bit = bit.index(wire.len() * 8);
        wire[bit / 8] ^= 1 << (bit % 8);
        // Refused, or (a length made longer) still waiting for bytes that, at end
        // of stream, make it a truncated frame: never served.
        let result = decoder(version).decode(&wire);
        prop_assert!(!matches!(result, Ok(Some(_))), "{} bit {} flipped, frame accepted", version, bit);
        prop_assert!(decoder(version).decode_exact(&wire).is_err());
    }
}
