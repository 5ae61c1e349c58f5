use super::*;
use crate::log::frame::{FRAME_HEADER_BYTES, FRAME_MAGIC, PROTOCOL_VERSION};
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
                (at_b.sender.as_str(), at_b.payload.as_slice()),
                (a.as_str(), &[b'a', i][..])
            );
            let at_a = acceptor_a.inbound.recv().await.unwrap();
            assert_eq!(
                (at_a.sender.as_str(), at_a.payload.as_slice()),
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

/// Connects like a peer and completes the handshake by hand.
async fn raw_replica_connection(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(&PREAMBLE).await.unwrap();
    let mut reply = [0u8; HANDSHAKE_REPLY_BYTES];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[..PREAMBLE_BYTES], PREAMBLE);
    stream
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
        header.extend_from_slice(&[PROTOCOL_VERSION, 0]);
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
        header.extend_from_slice(&[PROTOCOL_VERSION, 0]);
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
        stream.write_all(b"\0MLOG\x02").await.unwrap();
        assert_closed_by_peer(&mut stream).await;
        let refusal = acceptor.refusals.recv().await.unwrap();
        assert!(
            matches!(
                refusal,
                LinkError::Frame {
                    source: FrameError::UnsupportedVersion { version: 2 },
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
        assert_eq!(frame.payload, b"hello");
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
