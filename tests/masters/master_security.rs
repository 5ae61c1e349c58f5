//! Issue #10, security part, on a running 3-master ensemble: frames from a member
//! outside the whitelist, with a wrong ensemble token, of another log id, and
//! bytes that are not the protocol (garbage, an oversized length, a frame cut
//! short) are each refused (the connection is closed, the log does not change) and
//! counted by the right counter in `/metrics/snapshot` and `/metrics`. Frames are
//! built with the project's own encoder, as a real peer would.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::support::ensemble::{Ensemble, EVENTUALLY, POLL, TOKEN};
use mesos_operator::log::frame::{
    ConnectionNonce, ConnectionNonces, FrameEncoder, FrameKey, WireVersion,
    DEFAULT_MAX_PAYLOAD_BYTES, FRAME_HEADER_BYTES, FRAME_MAGIC, HANDSHAKE_REPLY_BYTES, NONCE_BYTES,
    PREAMBLE_BYTES, PREAMBLE_V3, PROTOCOL_VERSION_V3,
};

/// The target closes a refused connection at once; this only bounds a hang.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a case writes after the handshake, given the connection's nonces.
type BytesFor<'a> = Box<dyn Fn(ConnectionNonces) -> Vec<u8> + 'a>;

/// A raw replica connection after the handshake (in the latest version, v3, as
/// this build's members speak it), and its nonces.
fn handshake(target: SocketAddr) -> (TcpStream, ConnectionNonces) {
    let mut stream = TcpStream::connect_timeout(&target, CLOSE_TIMEOUT).expect("connect");
    stream
        .set_read_timeout(Some(CLOSE_TIMEOUT))
        .expect("timeout");
    stream
        .set_write_timeout(Some(CLOSE_TIMEOUT))
        .expect("timeout");
    let connector =
        ConnectionNonce::generate(&ring::rand::SystemRandom::new()).expect("randomness");
    stream
        .write_all(&[&PREAMBLE_V3[..], &connector.0[..]].concat())
        .expect("preamble");
    let mut reply = [0u8; HANDSHAKE_REPLY_BYTES];
    stream.read_exact(&mut reply).expect("handshake reply");
    assert_eq!(reply[..PREAMBLE_BYTES], PREAMBLE_V3);
    let mut nonce = [0u8; NONCE_BYTES];
    nonce.copy_from_slice(&reply[PREAMBLE_BYTES..]);
    (
        stream,
        ConnectionNonces::new(ConnectionNonce(nonce), connector),
    )
}

/// One frame as `sender` would send it on this connection.
fn frame(token: &str, nonces: ConnectionNonces, sender: &str, log_id: u64) -> Vec<u8> {
    let key = FrameKey::new(token.as_bytes()).expect("key");
    let mut encoder = FrameEncoder::new(
        WireVersion::V3,
        key,
        nonces,
        sender.to_owned(),
        DEFAULT_MAX_PAYLOAD_BYTES,
    )
    .expect("encoder");
    let mut bytes = Vec::new();
    // Any payload: a refused frame never reaches the log core.
    encoder
        .encode(log_id, b"promise-request", &mut bytes)
        .expect("encode");
    bytes
}

/// The target closed the connection without answering anything.
fn assert_closed(stream: &mut TcpStream, case: &str) {
    let started = Instant::now();
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{case}: the target answered {rest:?}"),
        // A reset is a close too; a timeout is not.
        Err(error) => assert!(
            !matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{case}: still open after {:?}",
            started.elapsed()
        ),
    }
}

/// Waits until `key` on member `i` reaches `at_least`; returns the snapshot.
fn counted(ensemble: &Ensemble, i: usize, key: &str, at_least: f64) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let metrics = ensemble.metrics(i);
        if metrics.get(key).copied().unwrap_or(0.0) >= at_least {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "{key} never reached {at_least}: {metrics:?}"
        );
        sleep(POLL);
    }
}

/// The figure for `key` in the Prometheus text (`mesos_<key>_total`).
fn prometheus_counter(text: &str, key: &str) -> f64 {
    let name = format!("mesos_{}_total ", key.replace('/', "_"));
    text.lines()
        .find_map(|line| line.strip_prefix(&name))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in: {text}"))
}

/// What a refused connection must leave untouched on the target.
fn log_identity(ensemble: &Ensemble, i: usize) -> (serde_json::Value, serde_json::Value) {
    let status = ensemble.status(i).expect("status");
    (status["log_id"].clone(), status["status"].clone())
}

#[test]
fn refused_frames_close_the_connection_change_nothing_and_are_counted() {
    let ensemble = Ensemble::builder().members(3).quorum(2).spawn();
    let mut acked = BTreeMap::new();
    let leader = ensemble.wait_for_leader();
    ensemble.write_some("before", 5, &mut acked);
    let target = (0..3).find(|i| *i != leader).expect("a follower");
    let address = ensemble.member(target);
    let member = ensemble.member(leader).to_string();
    // Correctly MAC'd, but not in the whitelist.
    let stranger = format!("127.0.0.77:{}", ensemble.port());
    let ours = ensemble.status(target).expect("status")["log_id"]
        .as_u64()
        .expect("a log id");
    let identity = log_identity(&ensemble, target);

    // Counters expected to move, each by one case; all start at zero on a healthy
    // ensemble.
    let keys = [
        "log/transport/refused_not_whitelisted",
        "log/transport/refused_bad_mac",
        "log/transport/refused_wrong_log_id",
        "log/transport/malformed_frames",
        "log/transport/oversized_frames",
        "log/transport/truncated_frames",
    ];
    let before = ensemble.metrics(target);
    for key in keys {
        assert_eq!(before[key], 0.0, "{key} before any bad frame");
    }

    let cases: [(&str, &str, BytesFor<'_>); 6] = [
        (
            "a correctly MAC'd frame from outside the whitelist",
            "log/transport/refused_not_whitelisted",
            Box::new(|nonce| frame(TOKEN, nonce, &stranger, ours)),
        ),
        (
            "a whitelisted member's frame under a wrong token",
            "log/transport/refused_bad_mac",
            Box::new(|nonce| frame("not-the-secret", nonce, &member, ours)),
        ),
        (
            "a valid frame of another log (same token and whitelist)",
            "log/transport/refused_wrong_log_id",
            Box::new(|nonce| frame(TOKEN, nonce, &member, ours ^ 0x5a5a)),
        ),
        (
            "garbage after the handshake",
            "log/transport/malformed_frames",
            Box::new(|_| b"GET / HTTP/1.1 -- not a frame at all".to_vec()),
        ),
        (
            "a header announcing 4 GiB",
            "log/transport/oversized_frames",
            Box::new(|_| {
                let mut header = Vec::new();
                header.extend_from_slice(&FRAME_MAGIC);
                header.extend_from_slice(&[PROTOCOL_VERSION_V3, 0]);
                header.extend_from_slice(&14u16.to_be_bytes());
                header.extend_from_slice(&u32::MAX.to_be_bytes());
                header.resize(FRAME_HEADER_BYTES, 0);
                header
            }),
        ),
        (
            "a valid frame cut short",
            "log/transport/truncated_frames",
            Box::new(|nonce| {
                let mut bytes = frame(TOKEN, nonce, &member, ours);
                bytes.truncate(bytes.len() - 10);
                bytes
            }),
        ),
    ];
    let mut expected: BTreeMap<&str, f64> = keys.iter().map(|k| (*k, 0.0)).collect();
    for (case, key, build) in &cases {
        let (mut stream, nonce) = handshake(address);
        stream.write_all(&build(nonce)).expect("write");
        if *key == "log/transport/truncated_frames" {
            // The rest never comes: end the stream mid-frame.
            stream
                .shutdown(std::net::Shutdown::Write)
                .expect("shutdown");
        }
        assert_closed(&mut stream, case);
        *expected.get_mut(key).expect("a known key") += 1.0;
        let metrics = counted(&ensemble, target, key, expected[key]);
        for other in keys {
            assert_eq!(metrics[other], expected[other], "after {case}: {other}");
        }
        assert_eq!(log_identity(&ensemble, target), identity, "after {case}");
    }

    // The same figures in the Prometheus exposition.
    let text = ensemble.prometheus(target);
    for key in keys {
        assert_eq!(prometheus_counter(&text, key), 1.0, "{key} in /metrics");
    }
    // One member's word on another log is a minority report: the target stays.
    assert!(
        ensemble.exited(target).is_none(),
        "one forged report made it exit"
    );

    // Nothing refused reached the log: it still takes writes and holds exactly the
    // acknowledged ones.
    ensemble.write_some("after", 5, &mut acked);
    for i in ensemble.running() {
        ensemble.assert_holds(i, &acked);
        let learned = ensemble.learned(i).unwrap_or_default();
        assert_eq!(
            learned.len(),
            acked.len(),
            "member {i} learned extra entries"
        );
    }
}
