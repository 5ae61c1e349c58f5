use super::*;
use crate::log::frame::{FRAME_HEADER_BYTES, FRAME_MAGIC, PROTOCOL_VERSION_V3};
use std::future::Future;
use tokio::net::TcpListener;

const TOKEN: &[u8] = b"ensemble-token";
/// Every socket test finishes in well under this; it only bounds a hang.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TEST_TIMEOUT, future).await {
        Ok(value) => value,
        Err(_) => panic!("test timed out after {TEST_TIMEOUT:?}"),
    }
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let started = tokio::time::Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "waited too long for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    (listener, address)
}

fn config(self_address: &str, token: &[u8], whitelist: &[&str]) -> Arc<LinkConfig> {
    Arc::new(LinkConfig::new(
        self_address.into(),
        FrameKey::new(token).unwrap(),
        whitelist.iter().map(|s| s.to_string()).collect(),
    ))
}

/// A member's accepting side: what a master's listener does with each connection.
struct Acceptor {
    counters: Arc<LinkCounters>,
    inbound: mpsc::Receiver<InboundFrame>,
    http: mpsc::Receiver<TcpStream>,
    refusals: mpsc::Receiver<LinkError>,
    task: JoinHandle<()>,
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn accept_on(listener: TcpListener, config: Arc<LinkConfig>) -> Acceptor {
    let counters = Arc::new(LinkCounters::default());
    let (inbound_tx, inbound) = mpsc::channel(256);
    let (http_tx, http) = mpsc::channel(16);
    let (refusal_tx, refusals) = mpsc::channel(16);
    let task_counters = counters.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (config, counters) = (config.clone(), task_counters.clone());
            let (inbound_tx, http_tx, refusal_tx) =
                (inbound_tx.clone(), http_tx.clone(), refusal_tx.clone());
            tokio::spawn(async move {
                match sniff(stream, &counters).await {
                    Ok(Sniffed::Replica(conn)) => {
                        if let Err(error) = serve_replica(conn, config, counters, inbound_tx).await
                        {
                            let _ = refusal_tx.send(error).await;
                        }
                    }
                    Ok(Sniffed::Http(stream)) => {
                        let _ = http_tx.send(stream).await;
                    }
                    Err(error) => {
                        let _ = refusal_tx.send(error).await;
                    }
                }
            });
        }
    });
    Acceptor {
        counters,
        inbound,
        http,
        refusals,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_exchange_frames_in_order() {
    bounded(async {
        let ((listener_a, a), (listener_b, b)) = (bind().await, bind().await);
        let (config_a, config_b) = (config(&a, TOKEN, &[&a, &b]), config(&b, TOKEN, &[&a, &b]));
        let mut acceptor_a = accept_on(listener_a, config_a.clone());
        let mut acceptor_b = accept_on(listener_b, config_b.clone());
        let sender_counters = Arc::new(LinkCounters::default());
        let a_to_b = PeerSender::spawn(b.clone(), config_a, sender_counters.clone());
        let b_to_a = PeerSender::spawn(a.clone(), config_b, sender_counters.clone());
        for i in 0..20u8 {
            assert!(a_to_b.send(vec![b'a', i]));
            assert!(b_to_a.send(vec![b'b', i]));
        }
        for i in 0..20u8 {
            let at_b = acceptor_b.inbound.recv().await.unwrap();
            assert_eq!(
                (at_b.sender.as_str(), at_b.payload.as_ref()),
                (a.as_str(), &[b'a', i][..])
            );
            let at_a = acceptor_a.inbound.recv().await.unwrap();
            assert_eq!(
                (at_a.sender.as_str(), at_a.payload.as_ref()),
                (b.as_str(), &[b'b', i][..])
            );
        }
        assert_eq!(load(&acceptor_b.counters.frames_received), 20);
        assert_eq!(load(&acceptor_b.counters.sniffed_replica), 1);
        // A sender counts its frames once its write returned, which can be after
        // the peer read them: wait for the count (`bounded` limits the wait).
        while load(&sender_counters.frames_sent) < 40 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(load(&sender_counters.frames_sent), 40);
        assert_eq!(load(&sender_counters.connects), 2);
        // Both of this build: v2 both ways, nothing in v1.
        assert_eq!(load(&sender_counters.v1_fallbacks), 0);
        assert_eq!(load(&acceptor_a.counters.v1_accepted), 0);
        assert_eq!(load(&acceptor_b.counters.v1_accepted), 0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_counted() {
    bounded(async {
        let ((listener_a, a), (_listener_b, b)) = (bind().await, bind().await);
        let mut acceptor = accept_on(listener_a, config(&a, TOKEN, &[&a, &b]));
        let impostor = PeerSender::spawn(
            a.clone(),
            config(&b, b"not-the-token", &[&a, &b]),
            Arc::new(LinkCounters::default()),
        );
        assert!(impostor.send(b"promise".to_vec()));
        let refusal = acceptor.refusals.recv().await.unwrap();
        assert!(
            matches!(
                refusal,
                LinkError::Frame {
                    source: FrameError::BadMac,
                    ..
                }
            ),
            "{refusal}"
        );
        assert_eq!(load(&acceptor.counters.refused_bad_mac), 1);
        assert_eq!(load(&acceptor.counters.frames_received), 0);
        assert!(acceptor.inbound.try_recv().is_err());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_outside_the_whitelist_is_refused_and_counted() {
    bounded(async {
        let ((listener_a, a), (_listener_c, c)) = (bind().await, bind().await);
        let mut acceptor = accept_on(listener_a, config(&a, TOKEN, &[&a]));
        // Knows the token, but is not a member.
        let outsider = PeerSender::spawn(
            a.clone(),
            config(&c, TOKEN, &[&a, &c]),
            Arc::new(LinkCounters::default()),
        );
        assert!(outsider.send(b"promise".to_vec()));
        let refusal = acceptor.refusals.recv().await.unwrap();
        assert!(
            refusal
                .to_string()
                .contains(&format!("member {c} is not in the whitelist")),
            "{refusal}"
        );
        assert_eq!(load(&acceptor.counters.refused_not_whitelisted), 1);
        assert!(acceptor.inbound.try_recv().is_err());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_another_log_is_refused_but_an_uninitialized_one_is_heard() {
    bounded(async {
        let ((listener_a, a), (_listener_b, b)) = (bind().await, bind().await);
        let config_a = config(&a, TOKEN, &[&a, &b]);
        config_a.log_id.store(5, Ordering::Relaxed);
        let mut acceptor = accept_on(listener_a, config_a);
        let config_b = config(&b, TOKEN, &[&a, &b]);
        let counters_b = Arc::new(LinkCounters::default());
        let sender = PeerSender::spawn(a.clone(), config_b.clone(), counters_b.clone());
        // Log id 0: B is not initialized yet (recovery): heard.
        assert!(sender.send(b"status?".to_vec()));
        assert_eq!(acceptor.inbound.recv().await.unwrap().log_id, 0);
        config_b.log_id.store(7, Ordering::Relaxed);
        assert!(sender.send(b"promise".to_vec()));
        let refusal = acceptor.refusals.recv().await.unwrap();
        assert!(
            matches!(
                refusal,
                LinkError::WrongLogId {
                    theirs: 7,
                    ours: 5,
                    ..
                }
            ),
            "{refusal}"
        );
        assert_eq!(load(&acceptor.counters.refused_wrong_log_id), 1);
        assert_eq!(
            acceptor.counters.foreign_logs.snapshot(),
            BTreeMap::from([(b.clone(), 7)]),
            "B's word on its log is recorded"
        );
        // The sender notices the close and reconnects for its next message.
        config_b.log_id.store(5, Ordering::Relaxed);
        wait_until("the sender to see the close", || {
            sender.send(b"retry".to_vec());
            load(&acceptor.counters.frames_received) >= 2
        })
        .await;
        assert!(load(&counters_b.connects) >= 2);
        assert!(
            acceptor.counters.foreign_logs.snapshot().is_empty(),
            "a frame of our log withdraws B's report"
        );
    })
    .await
}

/// Connects like a peer asking for `version` and completes the handshake by hand
/// (sending a connector nonce in v3).
async fn raw_handshake(address: &str, version: WireVersion) -> (TcpStream, ConnectionNonces) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let connector = random_nonce();
    let mut opening = version.preamble().to_vec();
    if version.has_connector_nonce() {
        opening.extend_from_slice(&connector.0);
    }
    stream.write_all(&opening).await.unwrap();
    let mut reply = [0u8; HANDSHAKE_REPLY_BYTES];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[..PREAMBLE_BYTES], version.preamble());
    let mut nonce = [0u8; NONCE_BYTES];
    nonce.copy_from_slice(&reply[PREAMBLE_BYTES..]);
    (
        stream,
        ConnectionNonces::new(ConnectionNonce(nonce), connector),
    )
}

/// Connects like a peer of this build and completes the handshake by hand.
async fn raw_replica_connection(address: &str) -> TcpStream {
    raw_handshake(address, WireVersion::LATEST).await.0
}

async fn assert_closed_by_peer(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    // Ok(0) or a reset: either way closed, and nothing was sent back.
    if let Ok(read) = stream.read_to_end(&mut rest).await {
        assert_eq!(read, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_handshake_closes_the_connection_and_is_counted() {
    bounded(async {
        let (listener, a) = bind().await;
        let mut acceptor = accept_on(listener, config(&a, TOKEN, &[&a]));
        let mut stream = raw_replica_connection(&a).await;
        stream
            .write_all(b"this is not a frame at all, just noise")
            .await
            .unwrap();
        assert_closed_by_peer(&mut stream).await;
        let refusal = acceptor.refusals.recv().await.unwrap();
        assert!(
            matches!(
                refusal,
                LinkError::Frame {
                    source: FrameError::BadMagic { .. },
                    ..
                }
            ),
            "{refusal}"
        );
        assert_eq!(load(&acceptor.counters.malformed_frames), 1);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_from_its_header_and_counted() {
    bounded(async {
        let (listener, a) = bind().await;
        let mut acceptor = accept_on(listener, config(&a, TOKEN, &[&a]));
        let mut stream = raw_replica_connection(&a).await;
        let mut header = Vec::new();
        header.extend_from_slice(&FRAME_MAGIC);
        header.extend_from_slice(&[PROTOCOL_VERSION_V3, 0]);
        header.extend_from_slice(&9u16.to_be_bytes());
        header.extend_from_slice(&u32::MAX.to_be_bytes());
        header.resize(FRAME_HEADER_BYTES, 0);
        // Only the header: the receiver must refuse without waiting for 4 GiB.
        stream.write_all(&header).await.unwrap();
        assert_closed_by_peer(&mut stream).await;
        let refusal = acceptor.refusals.recv().await.unwrap();
        assert!(
            matches!(
                refusal,
                LinkError::Frame {
                    source: FrameError::TooLarge { .. },
                    ..
                }
            ),
            "{refusal}"
        );
        assert_eq!(load(&acceptor.counters.oversized_frames), 1);
        assert_eq!(load(&acceptor.counters.malformed_frames), 0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_mid_frame_is_counted_as_truncated() {
    bounded(async {
        let (listener, a) = bind().await;
        let mut acceptor = accept_on(listener, config(&a, TOKEN, &[&a]));
        let mut stream = raw_replica_connection(&a).await;
        let mut header = Vec::new();
        header.extend_from_slice(&FRAME_MAGIC);
        header.extend_from_slice(&[PROTOCOL_VERSION_V3, 0]);
        header.extend_from_slice(&9u16.to_be_bytes());
        header.extend_from_slice(&100u32.to_be_bytes());
        header.resize(FRAME_HEADER_BYTES, 0);
        stream.write_all(&header).await.unwrap();
        stream.shutdown().await.unwrap();
        assert_closed_by_peer(&mut stream).await;
        let refusal = acceptor.refusals.recv().await.unwrap();
        assert!(
            matches!(refusal, LinkError::TruncatedFrame { .. }),
            "{refusal}"
        );
        assert_eq!(load(&acceptor.counters.truncated_frames), 1);
        assert_eq!(load(&acceptor.counters.malformed_frames), 0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_protocol_version_is_refused() {
    bounded(async {
        let (listener, a) = bind().await;
        let mut acceptor = accept_on(listener, config(&a, TOKEN, &[&a]));
        let mut stream = TcpStream::connect(&a).await.unwrap();
        stream.write_all(b"\0MLOG\x04").await.unwrap();
        assert_closed_by_peer(&mut stream).await;
        let refusal = acceptor.refusals.recv().await.unwrap();
        assert!(
            matches!(
                refusal,
                LinkError::Frame {
                    source: FrameError::UnsupportedVersion { version: 4 },
                    ..
                }
            ),
            "{refusal}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_request_is_sniffed_as_http_with_nothing_consumed() {
    bounded(async {
        let (listener, a) = bind().await;
        let mut acceptor = accept_on(listener, config(&a, TOKEN, &[&a]));
        let mut client = TcpStream::connect(&a).await.unwrap();
        let request = b"GET /health HTTP/1.1\r\nHost: master\r\n\r\n";
        client.write_all(request).await.unwrap();
        let mut server_side = acceptor.http.recv().await.unwrap();
        let mut received = vec![0u8; request.len()];
        server_side.read_exact(&mut received).await.unwrap();
        assert_eq!(received, request);
        server_side
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        let mut status = [0u8; 15];
        client.read_exact(&mut status).await.unwrap();
        assert_eq!(&status, b"HTTP/1.1 200 OK");
        assert_eq!(load(&acceptor.counters.sniffed_http), 1);
        assert_eq!(load(&acceptor.counters.sniffed_replica), 0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_messages_and_counts_them() {
    bounded(async {
        // A port nobody listens on: the sender keeps failing to connect.
        let (listener, nobody) = bind().await;
        drop(listener);
        let mut link_config = LinkConfig::new(
            "127.0.0.1:1".into(),
            FrameKey::new(TOKEN).unwrap(),
            BTreeSet::new(),
        );
        link_config.peer_queue_capacity = 4;
        let counters = Arc::new(LinkCounters::default());
        let sender = PeerSender::spawn(nobody, Arc::new(link_config), counters.clone());
        let queued = (0..10).filter(|_| sender.send(vec![0; 8])).count() as u64;
        assert!(
            queued <= 5,
            "{queued} queued with room for 4 (+1 taken by the task)"
        );
        assert_eq!(load(&counters.dropped_queue_full), 10 - queued);
        assert!(!sender.send(vec![
            0;
            crate::log::frame::DEFAULT_MAX_PAYLOAD_BYTES as usize
                + 1
        ]));
        assert_eq!(load(&counters.dropped_too_large), 1);
        wait_until("a failed connect", || load(&counters.connect_failures) >= 1).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_message_is_delivered_once_the_peer_comes_up() {
    bounded(async {
        let (listener, a) = bind().await;
        drop(listener);
        let counters = Arc::new(LinkCounters::default());
        let sender = PeerSender::spawn(
            a.clone(),
            config("127.0.0.1:2", TOKEN, &[]),
            counters.clone(),
        );
        assert!(sender.send(b"hello".to_vec()));
        wait_until("a failed connect", || load(&counters.connect_failures) >= 1).await;
        let listener = TcpListener::bind(&a).await.unwrap();
        let mut acceptor = accept_on(listener, config(&a, TOKEN, &["127.0.0.1:2"]));
        let frame = acceptor.inbound.recv().await.unwrap();
        assert_eq!(frame.payload, &b"hello"[..]);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_first_frame_timeout() {
    bounded(async {
        let (listener, a) = bind().await;
        let mut acceptor = accept_on(listener, config(&a, TOKEN, &[&a]));
        let started = tokio::time::Instant::now();
        let mut stream = raw_replica_connection(&a).await;
        assert_closed_by_peer(&mut stream).await;
        assert!(started.elapsed() >= FIRST_FRAME_TIMEOUT);
        let refusal = acceptor.refusals.recv().await.unwrap();
        assert!(matches!(refusal, LinkError::Timeout { .. }), "{refusal}");
    })
    .await
}

/// A master of an older build, as far as a connector can tell: it speaks the
/// versions up to its newest (v1 for the build before the previous one, v1 and v2
/// for the previous one) and, like its `check_preamble`, closes a connection that
/// asks for a newer version after reading its 6 bytes, without answering.
struct OlderBuildAcceptor {
    /// Payloads of the frames it authenticated, in order.
    payloads: mpsc::Receiver<Vec<u8>>,
    /// Connections it closed for asking another version.
    refused: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for OlderBuildAcceptor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection served as a master of an older build serves it (plaintext
/// here, inside TLS in the TLS tests): versions up to `newest` (v1 or v2, which
/// have no connector nonce), closing without an answer a connection that asks for
/// a newer one (counted in `refused`), and passing on the payloads of the frames it
/// authenticates.
pub(crate) async fn serve_as_older_build<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    newest: WireVersion,
    refused: Arc<AtomicU64>,
    payloads: mpsc::Sender<Vec<u8>>,
) {
    assert!(
        newest < WireVersion::V3,
        "older builds speak v1 and v2 only"
    );
    let mut preamble = [0u8; PREAMBLE_BYTES];
    if stream.read_exact(&mut preamble).await.is_err() {
        return;
    }
    let version = match check_preamble(&preamble) {
        Ok(version) if version <= newest => version,
        _ => {
            bump(&refused);
            return;
        }
    };
    let nonce = random_nonce();
    let mut reply = version.preamble().to_vec();
    reply.extend_from_slice(&nonce.0);
    if stream.write_all(&reply).await.is_err() {
        return;
    }
    let decoder = FrameDecoder::new(
        version,
        FrameKey::new(TOKEN).unwrap(),
        nonce,
        crate::log::frame::DEFAULT_MAX_PAYLOAD_BYTES,
    )
    .unwrap();
    let mut reader = FramedReader::new(stream, decoder, "older build".into());
    while let Ok(Some(frame)) = reader.next_frame().await {
        if payloads.send(frame.payload.to_vec()).await.is_err() {
            return;
        }
    }
}

fn older_build_acceptor(listener: TcpListener, newest: WireVersion) -> OlderBuildAcceptor {
    let (payload_tx, payloads) = mpsc::channel(256);
    let refused = Arc::new(AtomicU64::new(0));
    let task_refused = refused.clone();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let (payload_tx, refused) = (payload_tx.clone(), task_refused.clone());
            // Owned by the set, so aborting the acceptor closes every connection.
            connections.spawn(serve_as_older_build(stream, newest, refused, payload_tx));
        }
    });
    OlderBuildAcceptor {
        payloads,
        refused,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_build_steps_down_to_the_newest_version_an_older_acceptor_speaks() {
    bounded(async {
        for newest in [WireVersion::V1, WireVersion::V2] {
            let ((listener_old, old), (_listener_new, new)) = (bind().await, bind().await);
            let mut old_acceptor = older_build_acceptor(listener_old, newest);
            let counters = Arc::new(LinkCounters::default());
            let sender = PeerSender::spawn(
                old.clone(),
                config(&new, TOKEN, &[&old, &new]),
                counters.clone(),
            );
            for i in 0..5u8 {
                assert!(sender.send(vec![b'n', i]));
            }
            for i in 0..5u8 {
                assert_eq!(old_acceptor.payloads.recv().await.unwrap(), [b'n', i]);
            }
            // One refused attempt per newer version, then one link that carried
            // everything.
            let steps_down = match newest {
                WireVersion::V1 => 2,
                _ => 1,
            };
            assert_eq!(load(&old_acceptor.refused), steps_down, "{newest}");
            assert_eq!(load(&counters.connects), 1);
            assert_eq!(
                (load(&counters.v1_fallbacks), load(&counters.v2_fallbacks)),
                match newest {
                    WireVersion::V1 => (1, 0),
                    _ => (0, 1),
                }
            );
            assert_eq!(load(&counters.connect_failures), 0);
            // The same by hand: each newer version refused as such, then `newest`.
            let link_config = config(&new, TOKEN, &[&old, &new]);
            for refused in WireVersion::ALL.into_iter().filter(|v| *v > newest) {
                match connect_version(&old, &link_config, refused).await {
                    Err(LinkError::VersionRefused { version, .. }) if version == refused => {}
                    Err(other) => panic!("expected a {refused} refusal, got {other}"),
                    Ok(_) => panic!("a build speaking up to {newest} accepted {refused}"),
                }
            }
            let (writer, _read_half) = connect(&old, &link_config).await.unwrap();
            assert_eq!(writer.version(), newest);
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_of_older_builds_are_served_in_their_version() {
    bounded(async {
        let ((listener_a, a), (_listener_old, old)) = (bind().await, bind().await);
        let mut acceptor = accept_on(listener_a, config(&a, TOKEN, &[&a, &old]));
        // What older builds' `connect` does: their preamble, then their frames.
        for version in [WireVersion::V1, WireVersion::V2] {
            let (mut stream, nonces) = raw_handshake(&a, version).await;
            let mut encoder = FrameEncoder::new(
                version,
                FrameKey::new(TOKEN).unwrap(),
                nonces.acceptor,
                old.clone(),
                crate::log::frame::DEFAULT_MAX_PAYLOAD_BYTES,
            )
            .unwrap();
            let mut wire = Vec::new();
            for i in 0..3u8 {
                encoder.encode(0, &[b'o', i], &mut wire).unwrap();
            }
            stream.write_all(&wire).await.unwrap();
            for i in 0..3u8 {
                let frame = acceptor.inbound.recv().await.unwrap();
                assert_eq!(
                    (frame.sender.as_str(), frame.payload.as_ref()),
                    (old.as_str(), &[b'o', i][..])
                );
            }
        }
        assert_eq!(load(&acceptor.counters.v1_accepted), 1);
        assert_eq!(load(&acceptor.counters.v2_accepted), 1);
        assert_eq!(load(&acceptor.counters.frames_received), 6);
        assert_eq!(load(&acceptor.counters.sniffed_replica), 2);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_of_the_other_version_is_refused_on_a_connection() {
    bounded(async {
        let (listener, a) = bind().await;
        let mut acceptor = accept_on(listener, config(&a, TOKEN, &[&a]));
        let mut pairs = 0;
        for (connection, frame_version) in WireVersion::ALL
            .into_iter()
            .flat_map(|c| WireVersion::ALL.map(|f| (c, f)))
            .filter(|(c, f)| c != f)
        {
            pairs += 1;
            let (mut stream, nonces) = raw_handshake(&a, connection).await;
            let mut wire = Vec::new();
            FrameEncoder::new(
                frame_version,
                FrameKey::new(TOKEN).unwrap(),
                nonces,
                a.clone(),
                1024,
            )
            .unwrap()
            .encode(0, b"promise", &mut wire)
            .unwrap();
            stream.write_all(&wire).await.unwrap();
            assert_closed_by_peer(&mut stream).await;
            let refusal = acceptor.refusals.recv().await.unwrap();
            assert!(
                matches!(
                    refusal,
                    LinkError::Frame {
                        source: FrameError::WrongFrameVersion { connection: c, found },
                        ..
                    } if c == connection && found == frame_version.byte()
                ),
                "{refusal}"
            );
        }
        assert_eq!(load(&acceptor.counters.malformed_frames), pairs);
        assert_eq!(load(&acceptor.counters.frames_received), 0);
        assert!(acceptor.inbound.try_recv().is_err());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_in_v1_moves_to_the_latest_version_once_the_peer_is_upgraded() {
    bounded(async {
        let ((listener_old, peer), (_listener_new, new)) = (bind().await, bind().await);
        let old_acceptor = older_build_acceptor(listener_old, WireVersion::V1);
        let config_new = config(&new, TOKEN, &[&peer, &new]);
        let counters = Arc::new(LinkCounters::default());
        let sender = PeerSender::spawn(peer.clone(), config_new, counters.clone());
        assert!(sender.send(b"before".to_vec()));
        wait_until("a v1 link", || load(&counters.v1_fallbacks) == 1).await;
        // The peer restarts with this build on the same address: its old
        // connections close, and the sender's next link asks for the latest again.
        let mut old_acceptor = old_acceptor;
        old_acceptor.task.abort();
        // Its listener is closed once the aborted task is gone.
        let _ = (&mut old_acceptor.task).await;
        let listener = TcpListener::bind(&peer).await.unwrap();
        let mut upgraded = accept_on(listener, config(&peer, TOKEN, &[&peer, &new]));
        wait_until("a frame at the upgraded peer", || {
            sender.send(b"after".to_vec());
            load(&upgraded.counters.frames_received) >= 1
        })
        .await;
        assert_eq!(
            upgraded.inbound.recv().await.unwrap().payload,
            &b"after"[..]
        );
        assert_eq!(load(&upgraded.counters.v1_accepted), 0);
        assert_eq!(load(&upgraded.counters.v2_accepted), 0);
        assert_eq!(load(&counters.v1_fallbacks), 1, "no v1 link since");
        assert!(load(&counters.connects) >= 2);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_closing_every_connection_is_an_error_not_a_v1_link() {
    bounded(async {
        let (listener, address) = bind().await;
        // Accepts, reads the preamble, says nothing: neither version is answered.
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut preamble = [0u8; PREAMBLE_BYTES];
                let _ = stream.read_exact(&mut preamble).await;
            }
        });
        let outcome = connect(&address, &config("127.0.0.1:3", TOKEN, &[])).await;
        task.abort();
        match outcome {
            Err(LinkError::VersionRefused {
                version: WireVersion::V1,
                ..
            }) => {}
            Err(other) => panic!("expected the v1 attempt's refusal, got {other}"),
            Ok(_) => panic!("a link with a peer that never answered"),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_in_another_version_than_asked_is_refused() {
    bounded(async {
        let (listener, address) = bind().await;
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut preamble = [0u8; PREAMBLE_BYTES];
                let _ = stream.read_exact(&mut preamble).await;
                let mut reply = PREAMBLE_V1.to_vec();
                reply.extend_from_slice(&[1; NONCE_BYTES]);
                let _ = stream.write_all(&reply).await;
                // Held open until the connector has read the answer.
                let _ = stream.read(&mut preamble).await;
            }
        });
        let outcome = connect(&address, &config("127.0.0.1:3", TOKEN, &[])).await;
        task.abort();
        match outcome {
            Err(LinkError::Frame {
                source:
                    FrameError::VersionMismatch {
                        asked: WireVersion::V3,
                        answered: 1,
                    },
                ..
            }) => {}
            Err(other) => panic!("expected a version mismatch, got {other}"),
            Ok(_) => panic!("a v3 connector accepted a v1 answer"),
        }
    })
    .await
}

/// Loopback throughput of one link. Run with
/// `cargo test --release tcp_bench -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn tcp_bench() {
    const MESSAGES: usize = 200_000;
    const PAYLOAD_BYTES: usize = 256;
    let ((listener_a, a), (_listener_b, b)) = (bind().await, bind().await);
    let mut link_config =
        LinkConfig::new(b.clone(), FrameKey::new(TOKEN).unwrap(), BTreeSet::new());
    link_config.peer_queue_capacity = 8192;
    let mut acceptor = accept_on(listener_a, config(&a, TOKEN, &[&a, &b]));
    let counters = Arc::new(LinkCounters::default());
    let sender = PeerSender::spawn(a.clone(), Arc::new(link_config), counters.clone());
    let started = std::time::Instant::now();
    let mut received = 0;
    let mut sent = 0;
    while received < MESSAGES {
        // Keep the link fed without overflowing the acceptor's inbound channel (256
        // in `accept_on`; overflow there is dropped, by design).
        while sent < MESSAGES && sent - received < 200 {
            assert!(sender.send(vec![3; PAYLOAD_BYTES]));
            sent += 1;
        }
        bounded(acceptor.inbound.recv()).await.unwrap();
        received += 1;
    }
    let elapsed = started.elapsed();
    eprintln!(
        "tcp link: {MESSAGES} frames of {PAYLOAD_BYTES} bytes in {elapsed:?}: {:.0} frames/s, {:.1} MB/s payload",
        MESSAGES as f64 / elapsed.as_secs_f64(),
        (MESSAGES * PAYLOAD_BYTES) as f64 / elapsed.as_secs_f64() / 1e6
    );
    assert_eq!(load(&counters.dropped_queue_full), 0);
}

fn encoder_of(
    version: WireVersion,
    nonces: ConnectionNonces,
    max_payload_bytes: u32,
) -> FrameEncoder {
    FrameEncoder::new(
        version,
        FrameKey::new(TOKEN).unwrap(),
        nonces,
        "127.0.0.1:5050".into(),
        max_payload_bytes,
    )
    .unwrap()
}

/// Frames of `payloads`, encoded back to back on one connection.
fn stream_of(version: WireVersion, payloads: &[Vec<u8>], nonces: ConnectionNonces) -> Vec<u8> {
    let mut encoder = encoder_of(
        version,
        nonces,
        crate::log::frame::DEFAULT_MAX_PAYLOAD_BYTES,
    );
    let mut stream = Vec::new();
    for payload in payloads {
        encoder.encode(7, payload, &mut stream).unwrap();
    }
    stream
}

fn reader_of<R: AsyncRead + Unpin>(
    version: WireVersion,
    stream: R,
    nonces: ConnectionNonces,
) -> FramedReader<R> {
    let decoder = FrameDecoder::new(
        version,
        FrameKey::new(TOKEN).unwrap(),
        nonces,
        crate::log::frame::DEFAULT_MAX_PAYLOAD_BYTES,
    )
    .unwrap();
    FramedReader::new(stream, decoder, "peer".into())
}

fn random_nonce() -> ConnectionNonce {
    ConnectionNonce::generate(&SystemRandom::new()).unwrap()
}

fn fresh_nonces() -> ConnectionNonces {
    ConnectionNonces::new(random_nonce(), random_nonce())
}

fn patterned(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[tokio::test]
async fn large_frames_read_into_their_own_buffer_arrive_whole_and_in_order() {
    bounded(async {
        for version in WireVersion::ALL {
            let nonces = fresh_nonces();
            // A large first frame (read the ordinary way: nothing is proven yet),
            // small and large frames after it, two large ones back to back, and
            // frames at and just below the own-buffer size.
            let payloads = vec![
                patterned(3 << 20, 1),
                b"small".to_vec(),
                patterned(OWN_BUFFER_FRAME_BYTES, 2),
                patterned(4 << 20, 3),
                patterned(1 << 20, 4),
                b"".to_vec(),
                patterned(OWN_BUFFER_FRAME_BYTES - 200, 5),
                b"last".to_vec(),
            ];
            let bytes = stream_of(version, &payloads, nonces);
            // Delivered in pieces of odd sizes, as a socket does.
            let (mut writer, reader) = tokio::io::duplex(7_777);
            let feeder = tokio::spawn(async move {
                for piece in bytes.chunks(50_001) {
                    writer.write_all(piece).await.unwrap();
                }
            });
            let mut reader = reader_of(version, reader, nonces);
            for (i, expected) in payloads.iter().enumerate() {
                let frame = reader.next_frame().await.unwrap().unwrap();
                assert_eq!(frame.sequence, i as u64);
                assert_eq!(frame.payload.len(), expected.len(), "{version} frame {i}");
                assert!(frame.payload == expected[..], "{version} frame {i} differs");
            }
            feeder.await.unwrap();
            assert!(reader.next_frame().await.unwrap().is_none());
        }
    })
    .await
}

#[tokio::test]
async fn a_large_frame_read_into_a_roomier_buffer_takes_none_of_the_next_frame() {
    let stream: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    // The frame's first bytes came with the header's read.
    let mut frame = Vec::with_capacity(stream.len());
    frame.extend_from_slice(&stream[..10]);
    let mut reader = &stream[10..];
    // (Room for all of it, as a stocked buffer may have.)
    assert!(read_until_len(&mut reader, &mut frame, 6_000)
        .await
        .unwrap());
    assert!(frame == stream[..6_000]);
    assert!(
        reader == &stream[6_000..],
        "the next frame's bytes stay unread"
    );
    // Already there: reads nothing.
    assert!(read_until_len(&mut reader, &mut frame, 6_000)
        .await
        .unwrap());
    assert_eq!(reader.len(), 4_000);
    // The stream ends first.
    assert!(!read_until_len(&mut reader, &mut frame, 20_000)
        .await
        .unwrap());
    assert!(frame == stream[..]);
}

#[tokio::test]
async fn a_large_frame_cut_short_or_tampered_with_is_refused() {
    bounded(async {
        for version in WireVersion::ALL {
            let nonces = fresh_nonces();
            let payloads = vec![b"hello".to_vec(), patterned(1 << 20, 9)];
            let bytes = stream_of(version, &payloads, nonces);

            let cut = bytes[..bytes.len() - 1000].to_vec();
            let mut reader = reader_of(version, &cut[..], nonces);
            assert!(reader.next_frame().await.unwrap().is_some());
            assert!(matches!(
                reader.next_frame().await,
                Err(LinkError::TruncatedFrame { .. })
            ));

            let mut tampered = bytes.clone();
            let middle = tampered.len() - (1 << 19);
            tampered[middle] ^= 1;
            let mut reader = reader_of(version, &tampered[..], nonces);
            assert!(reader.next_frame().await.unwrap().is_some());
            assert!(matches!(
                reader.next_frame().await,
                Err(LinkError::Frame {
                    source: FrameError::BadMac,
                    ..
                })
            ));
        }
    })
    .await
}

#[tokio::test]
async fn a_writer_sends_large_payloads_from_where_they_lie_byte_for_byte() {
    bounded(async {
        for version in WireVersion::ALL {
            let nonces = fresh_nonces();
            let mut batches = vec![
                vec![b"first".to_vec(), patterned(OWN_BUFFER_FRAME_BYTES, 1)],
                vec![
                    patterned(2 << 20, 2),
                    b"between".to_vec(),
                    patterned(300_000, 3),
                ],
                vec![patterned(OWN_BUFFER_FRAME_BYTES - 1, 4), b"".to_vec()],
            ];
            // What one encoder writes frame after frame into one buffer: the
            // bytes the writer must put on the wire, whichever way it sends a
            // payload (in v3, encrypted where it lies or in the buffer).
            let expected = stream_of(version, &batches.concat(), nonces);
            let (writer, mut reader) = tokio::io::duplex(1 << 16);
            let encoder = encoder_of(
                version,
                nonces,
                crate::log::frame::DEFAULT_MAX_PAYLOAD_BYTES,
            );
            let mut writer = FramedWriter::new(writer, encoder, "peer".into());
            let sending = tokio::spawn(async move {
                for batch in &mut batches {
                    writer.send_all(7, batch).await.unwrap();
                }
            });
            let mut wire = Vec::new();
            reader.read_to_end(&mut wire).await.unwrap();
            sending.await.unwrap();
            assert_eq!(wire.len(), expected.len());
            assert!(wire == expected, "{version}: the wire bytes differ");
        }
    })
    .await
}

#[tokio::test]
async fn a_batch_with_a_refused_payload_sends_nothing() {
    bounded(async {
        let (writer, mut reader) = tokio::io::duplex(1 << 16);
        let encoder = encoder_of(
            WireVersion::LATEST,
            fresh_nonces(),
            OWN_BUFFER_FRAME_BYTES as u32 * 2,
        );
        let mut writer = FramedWriter::new(writer, encoder, "peer".into());
        let mut batch = vec![
            patterned(OWN_BUFFER_FRAME_BYTES, 1),
            patterned(OWN_BUFFER_FRAME_BYTES * 2 + 1, 2),
        ];
        assert!(matches!(
            writer.send_all(7, &mut batch).await,
            Err(LinkError::Frame {
                source: FrameError::TooLarge { .. },
                ..
            })
        ));
        drop(writer);
        let mut wire = Vec::new();
        reader.read_to_end(&mut wire).await.unwrap();
        assert!(wire.is_empty(), "{} bytes sent", wire.len());
    })
    .await
}
