use super::test_certs::{write_member_files, CertAuthority, IssuedCert};
use super::*;
use crate::log::frame::{FrameKey, PREAMBLE_V1, PREAMBLE_V2};
use crate::log::tcp::{
    connect as link, serve_replica, sniff, InboundFrame, LinkConfig, LinkError, PeerSender, Sniffed,
};
use std::collections::BTreeSet;
use std::future::Future;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const TOKEN: &[u8] = b"ensemble-token";
/// Bounds a hang; every test finishes in well under it.
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

fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn ip_cert(ca: &CertAuthority) -> IssuedCert {
    ca.issue(&["127.0.0.1".to_string()])
}

fn files_in(dir: &Path, cert: &IssuedCert, ca_bundle: &str) -> TlsFiles {
    write_member_files(dir, cert, ca_bundle)
}

fn peer_tls(files: TlsFiles) -> Arc<PeerTls> {
    Arc::new(PeerTls::load(files, &BTreeMap::new()).unwrap())
}

fn link_config(address: &str, whitelist: &[&str], tls: Option<Arc<PeerTls>>) -> Arc<LinkConfig> {
    let mut config = LinkConfig::new(
        address.into(),
        FrameKey::new(TOKEN).unwrap(),
        whitelist
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
    );
    config.tls = tls;
    Arc::new(config)
}

struct Acceptor {
    counters: Arc<LinkCounters>,
    inbound: mpsc::Receiver<InboundFrame>,
    task: JoinHandle<()>,
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a master's listener does with each connection.
fn accept_on(listener: TcpListener, config: Arc<LinkConfig>) -> Acceptor {
    let counters = Arc::new(LinkCounters::default());
    let (inbound_tx, inbound) = mpsc::channel(256);
    let task_counters = counters.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (config, counters, inbound_tx) =
                (config.clone(), task_counters.clone(), inbound_tx.clone());
            tokio::spawn(async move {
                if let Ok(Sniffed::Replica(conn)) = sniff(stream, &counters).await {
                    let _ = serve_replica(conn, config, counters, inbound_tx).await;
                }
            });
        }
    });
    Acceptor {
        counters,
        inbound,
        task,
    }
}

async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    (listener, address)
}

fn refusal(files: TlsFiles) -> String {
    match PeerTls::load(files, &BTreeMap::new()) {
        Ok(_) => panic!("the files loaded"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn the_tls_preamble_is_told_from_the_plaintext_one_and_from_http() {
    assert_eq!(match_tls_preamble(&TLS_PREAMBLE), PreambleMatch::Replica);
    assert_eq!(match_tls_preamble(b"\0ML"), PreambleMatch::NeedMore);
    assert_eq!(match_tls_preamble(&PREAMBLE_V1), PreambleMatch::Other);
    assert_eq!(match_tls_preamble(&PREAMBLE_V2), PreambleMatch::Other);
    assert_eq!(match_tls_preamble(b"GET / HTTP/1.1"), PreambleMatch::Other);
    // A TLS ClientHello straight on the port is neither.
    assert_eq!(
        match_tls_preamble(&[0x16, 0x03, 0x01]),
        PreambleMatch::Other
    );
}

#[test]
fn bad_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertAuthority::generate("test CA");
    let files = files_in(dir.path(), &ip_cert(&ca), &ca.cert_pem());

    let missing = TlsFiles {
        key: dir.path().join("absent.key"),
        ..files.clone()
    };
    let message = refusal(missing);
    assert!(message.starts_with("--peer_tls_key_file "), "{message}");
    assert!(message.contains("absent.key: cannot read it"), "{message}");

    let not_pem = dir.path().join("not-pem.crt");
    std::fs::write(&not_pem, "hello").unwrap();
    let message = refusal(TlsFiles {
        cert: not_pem.clone(),
        ..files.clone()
    });
    assert!(
        message.contains("--peer_tls_cert_file") && message.contains("holds no PEM certificate"),
        "{message}"
    );
    let message = refusal(TlsFiles {
        ca: not_pem,
        ..files.clone()
    });
    assert!(message.contains("--peer_tls_ca_file"), "{message}");

    let other = ip_cert(&ca);
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, &other.key_pem).unwrap();
    let message = refusal(TlsFiles {
        key: other_key,
        ..files.clone()
    });
    assert!(
        message.contains("not the private key of the certificate in --peer_tls_cert_file"),
        "{message}"
    );

    let expired = ca.issue_between(&["127.0.0.1".into()], Some(((2020, 1, 1), (2021, 1, 1))));
    let expired_dir = dir.path().join("expired");
    let message = refusal(files_in(&expired_dir, &expired, &ca.cert_pem()));
    assert!(message.contains("the certificate has expired"), "{message}");

    let stranger = CertAuthority::generate("another CA");
    let stranger_dir = dir.path().join("stranger");
    let message = refusal(files_in(&stranger_dir, &ip_cert(&stranger), &ca.cert_pem()));
    assert!(
        message.contains("does not verify against --peer_tls_ca_file"),
        "{message}"
    );
}

#[test]
fn a_bundle_of_two_cas_accepts_certificates_of_either() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (
        CertAuthority::generate("old CA"),
        CertAuthority::generate("new CA"),
    );
    let bundle = format!("{}{}", old.cert_pem(), new.cert_pem());
    let loaded = peer_tls(files_in(&dir.path().join("a"), &ip_cert(&old), &bundle));
    assert_eq!(loaded.current().ca_count, 2);
    peer_tls(files_in(&dir.path().join("b"), &ip_cert(&new), &bundle));
}

#[test]
fn changed_files_are_loaded_once_and_bad_ones_keep_the_old_material() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertAuthority::generate("test CA");
    let tls = peer_tls(files_in(dir.path(), &ip_cert(&ca), &ca.cert_pem()));
    assert!(!tls.reload_if_changed().unwrap(), "nothing changed yet");
    let before = tls.current();

    files_in(dir.path(), &ip_cert(&ca), &ca.cert_pem());
    assert!(tls.reload_if_changed().unwrap());
    assert!(!Arc::ptr_eq(&before, &tls.current()));
    assert!(!tls.reload_if_changed().unwrap(), "loaded once");

    // A key that is not the certificate's: refused once, the material stays.
    let in_use = tls.current();
    std::fs::write(&tls.files().key, ip_cert(&ca).key_pem).unwrap();
    let refused = tls.reload_if_changed().unwrap_err();
    assert!(matches!(refused, TlsError::KeyMismatch { .. }), "{refused}");
    assert!(Arc::ptr_eq(&in_use, &tls.current()));
    assert!(!tls.reload_if_changed().unwrap(), "reported once");
}

#[test]
fn the_expected_name_is_the_whitelisted_ip_unless_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertAuthority::generate("test CA");
    let names = BTreeMap::from([(
        "10.0.0.1:5050".to_string(),
        "m-0-0.m-members.ns.svc".to_string(),
    )]);
    let tls = PeerTls::load(files_in(dir.path(), &ip_cert(&ca), &ca.cert_pem()), &names).unwrap();
    assert_eq!(
        tls.server_name("10.0.0.1:5050").unwrap().to_str(),
        "m-0-0.m-members.ns.svc"
    );
    assert_eq!(
        tls.server_name("10.0.0.2:5050").unwrap().to_str(),
        "10.0.0.2"
    );
    assert_eq!(tls.server_name("[::1]:5050").unwrap().to_str(), "::1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_exchange_frames_over_mutual_tls() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::generate("test CA");
        let tls_a = peer_tls(files_in(
            &dir.path().join("a"),
            &ip_cert(&ca),
            &ca.cert_pem(),
        ));
        let tls_b = peer_tls(files_in(
            &dir.path().join("b"),
            &ip_cert(&ca),
            &ca.cert_pem(),
        ));
        let ((listener_a, a), (listener_b, b)) = (bind().await, bind().await);
        let config_a = link_config(&a, &[&a, &b], Some(tls_a));
        let config_b = link_config(&b, &[&a, &b], Some(tls_b));
        let _acceptor_a = accept_on(listener_a, config_a.clone());
        let mut acceptor_b = accept_on(listener_b, config_b);
        let sender_counters = Arc::new(LinkCounters::default());
        let a_to_b = PeerSender::spawn(b.clone(), config_a, sender_counters.clone());
        for i in 0..20u8 {
            assert!(a_to_b.send(vec![b'a', i]));
        }
        for i in 0..20u8 {
            let frame = acceptor_b.inbound.recv().await.unwrap();
            assert_eq!(
                (frame.sender.as_str(), frame.payload.as_ref()),
                (a.as_str(), &[b'a', i][..])
            );
        }
        assert_eq!(load(&sender_counters.connects), 1);
        assert_eq!(load(&acceptor_b.counters.refused_tls_handshake), 0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_transports_and_unknown_cas_are_refused_and_counted() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::generate("test CA");
        let stranger = CertAuthority::generate("stranger CA");
        let tls_b = peer_tls(files_in(
            &dir.path().join("b"),
            &ip_cert(&ca),
            &ca.cert_pem(),
        ));
        let (listener_b, b) = bind().await;
        let (listener_p, plain) = bind().await;
        let a = "127.0.0.1:1".to_string();
        let acceptor_b = accept_on(listener_b, link_config(&b, &[&a, &b], Some(tls_b)));
        let acceptor_plain = accept_on(listener_p, link_config(&plain, &[&a, &plain], None));

        // Plaintext to a TLS-required member.
        let counters = Arc::new(LinkCounters::default());
        let sender = PeerSender::spawn(
            b.clone(),
            link_config(&a, &[&a, &b], None),
            counters.clone(),
        );
        sender.send(b"hello".to_vec());
        wait_until("a refused plaintext link", || {
            load(&acceptor_b.counters.refused_plaintext) >= 1
                && load(&counters.connect_failures) >= 1
        })
        .await;
        assert_eq!(load(&acceptor_b.counters.frames_received), 0);
        let error = match link(&b, &link_config(&a, &[&a, &b], None)).await {
            Err(error) => error,
            Ok(_) => panic!("a plaintext link to a TLS member was set up"),
        };
        assert!(
            matches!(error, LinkError::PeerRequiresTls { .. }),
            "{error}"
        );
        drop(sender);

        // A certificate of a CA the member does not trust (signed by a stranger,
        // trusting the right CA so that its own side of the handshake verifies).
        let rogue = peer_tls(files_in(
            &dir.path().join("rogue"),
            &ip_cert(&stranger),
            &format!("{}{}", stranger.cert_pem(), ca.cert_pem()),
        ));
        let rogue_config = link_config(&a, &[&a, &b], Some(rogue));
        let rogue_counters = Arc::new(LinkCounters::default());
        let sender = PeerSender::spawn(b.clone(), rogue_config.clone(), rogue_counters.clone());
        sender.send(b"hello".to_vec());
        wait_until("a refused handshake", || {
            load(&acceptor_b.counters.refused_tls_handshake) >= 1
        })
        .await;
        assert_eq!(load(&acceptor_b.counters.frames_received), 0);
        drop(sender);

        // TLS to a plaintext member.
        let tls_a = peer_tls(files_in(
            &dir.path().join("a"),
            &ip_cert(&ca),
            &ca.cert_pem(),
        ));
        let error = match link(&plain, &link_config(&a, &[&a, &plain], Some(tls_a))).await {
            Err(error) => error,
            Ok(_) => panic!("a TLS link to a plaintext member was set up"),
        };
        assert!(
            matches!(
                error,
                LinkError::Tls {
                    source: TlsLinkError::PeerIsPlaintext,
                    ..
                }
            ),
            "{error}"
        );
        wait_until("a refused TLS link", || {
            load(&acceptor_plain.counters.refused_tls_unexpected) >= 1
        })
        .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_the_members_name_is_refused_by_the_connector() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::generate("test CA");
        // The acceptor's certificate names another address than the one dialled.
        let elsewhere = ca.issue(&["127.0.0.9".to_string()]);
        let tls_b = peer_tls(files_in(&dir.path().join("b"), &elsewhere, &ca.cert_pem()));
        let tls_a = peer_tls(files_in(
            &dir.path().join("a"),
            &ip_cert(&ca),
            &ca.cert_pem(),
        ));
        let (listener_b, b) = bind().await;
        let a = "127.0.0.1:1".to_string();
        let _acceptor_b = accept_on(listener_b, link_config(&b, &[&a, &b], Some(tls_b)));
        let error = match link(&b, &link_config(&a, &[&a, &b], Some(tls_a))).await {
            Err(error) => error,
            Ok(_) => panic!("a link to a certificate of another name was set up"),
        };
        let message = error.to_string();
        assert!(
            message.contains("certificate not valid for name"),
            "{message}"
        );
    })
    .await
}

/// A TLS master of the previous build refuses the v2 preamble inside TLS by
/// dropping the connection (no close_notify): the connector must read that as a
/// refusal and fall back to v1 on a new TLS connection; and its v1 connector is
/// served by this build's acceptor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_links_fall_back_to_v1_with_the_previous_build_both_ways() {
    use crate::log::frame::WireVersion;
    use crate::log::tcp::connect_version;
    use crate::log::tcp::tests::serve_as_older_build;
    use std::sync::atomic::AtomicU64;
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::generate("test CA");
        let tls_old = peer_tls(files_in(
            &dir.path().join("old"),
            &ip_cert(&ca),
            &ca.cert_pem(),
        ));
        let tls_new = peer_tls(files_in(
            &dir.path().join("new"),
            &ip_cert(&ca),
            &ca.cert_pem(),
        ));
        let ((listener_old, old), (listener_new, new)) = (bind().await, bind().await);

        // The previous build's acceptor: TLS, then v1 only.
        let (payload_tx, mut payloads) = mpsc::channel::<Vec<u8>>(16);
        let refused = Arc::new(AtomicU64::new(0));
        let (task_refused, task_tls) = (refused.clone(), tls_old.clone());
        let old_acceptor = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener_old.accept().await {
                let (payload_tx, refused, tls) =
                    (payload_tx.clone(), task_refused.clone(), task_tls.clone());
                connections.spawn(async move {
                    if let Ok(stream) = accept(stream, &tls).await {
                        serve_as_older_build(stream, WireVersion::V1, refused, payload_tx).await;
                    }
                });
            }
        });

        // This build -> the previous build.
        let config_new = link_config(&new, &[&old, &new], Some(tls_new.clone()));
        let counters = Arc::new(LinkCounters::default());
        let sender = PeerSender::spawn(old.clone(), config_new.clone(), counters.clone());
        for i in 0..3u8 {
            assert!(sender.send(vec![b't', i]));
        }
        for i in 0..3u8 {
            assert_eq!(payloads.recv().await.unwrap(), [b't', i]);
        }
        // v3 and v2 refused, then v1.
        assert_eq!(load(&refused), 2);
        assert_eq!(load(&counters.v1_fallbacks), 1);
        assert_eq!(load(&counters.connects), 1);
        drop(sender);
        old_acceptor.abort();

        // The previous build -> this build: its connect is this build's in v1.
        let mut acceptor_new = accept_on(
            listener_new,
            link_config(&new, &[&old, &new], Some(tls_new)),
        );
        let config_old = link_config(&old, &[&old, &new], Some(tls_old));
        let (mut writer, _read_half) = connect_version(&new, &config_old, WireVersion::V1)
            .await
            .unwrap();
        assert_eq!(writer.version(), WireVersion::V1);
        writer
            .send_all(0, &mut [b"from-old".to_vec()])
            .await
            .unwrap();
        let frame = acceptor_new.inbound.recv().await.unwrap();
        assert_eq!(
            (frame.sender.as_str(), frame.payload.as_ref()),
            (old.as_str(), &b"from-old"[..])
        );
        assert_eq!(load(&acceptor_new.counters.v1_accepted), 1);
        assert_eq!(load(&acceptor_new.counters.refused_tls_handshake), 0);
    })
    .await
}
