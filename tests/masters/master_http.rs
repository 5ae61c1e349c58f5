//! The master's HTTP endpoints against a real server on 127.0.0.1 (ephemeral port),
//! served both ways: from a listener and one connection at a time.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::support::http::{get, raw_status, request, send_raw};
use mesos_operator::master::api::{LogStatus, ReplicaStatus};
use mesos_operator::master::http::{self, MasterState};
use mesos_operator::master::metrics::Metrics;
use mesos_operator::master::view::{MasterView, SharedMasterView};

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

fn empty_view() -> MasterView {
    MasterView {
        replica_status: ReplicaStatus::Empty,
        log_id: None,
        begin_position: 0,
        end_position: 0,
        learned_position: 0,
        quorum: 2,
        masters: vec![
            addr("127.0.0.1:5050"),
            addr("127.0.0.2:5050"),
            addr("127.0.0.3:5050"),
        ],
        advertise_addr: addr("127.0.0.1:5050"),
        leader: None,
        elected: false,
        read_lease: false,
        peer_tls: false,
    }
}

/// Starts a server on its own runtime thread; it lives until the test process ends.
fn start_server(state: MasterState) -> SocketAddr {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            addr_tx
                .send(listener.local_addr().expect("local addr"))
                .expect("send addr");
            http::serve(listener, http::router(state), std::future::pending()).await;
        });
    });
    addr_rx.recv().expect("server address")
}

fn state(view: MasterView) -> MasterState {
    MasterState {
        view: SharedMasterView::new(view),
        metrics: Arc::new(Metrics::new()),
    }
}

#[test]
fn health_answers_200() {
    let server = start_server(state(empty_view()));
    assert_eq!(get(server, "/health").status, 200);
}

#[test]
fn redirect_without_a_leader_is_503_with_a_message() {
    let server = start_server(state(empty_view()));
    let response = get(server, "/master/redirect");
    assert_eq!(response.status, 503);
    assert!(response.body.contains("No leader"), "{}", response.body);
    assert_eq!(response.header("location"), None);
}

#[test]
fn redirect_with_a_leader_is_307_to_its_advertised_address() {
    let state = state(empty_view());
    let server = start_server(state.clone());
    state
        .view
        .update(|view| view.leader = Some(addr("127.0.0.2:5050")));
    let response = get(server, "/master/redirect");
    assert_eq!(response.status, 307);
    assert_eq!(response.header("location"), Some("http://127.0.0.2:5050"));
    assert_eq!(
        get(server, "/redirect").header("location"),
        Some("http://127.0.0.2:5050")
    );

    state
        .view
        .update(|view| view.leader = Some(addr("[::1]:5050")));
    assert_eq!(
        get(server, "/master/redirect").header("location"),
        Some("http://[::1]:5050")
    );
}

#[test]
fn log_status_is_the_operator_s_log_status_type_and_follows_the_view() {
    let state = state(empty_view());
    let server = start_server(state.clone());

    let status: LogStatus =
        serde_json::from_str(&get(server, "/log/status").body).expect("LogStatus JSON");
    assert_eq!(status.member, addr("127.0.0.1:5050"));
    assert_eq!(status.status, ReplicaStatus::Empty);
    assert_eq!(status.log_id, None);
    assert_eq!(status.quorum, 2);
    assert_eq!(status.masters.len(), 3);
    assert_eq!(status.leader, None);
    assert!(!status.elected);

    state.view.update(|view| {
        view.replica_status = ReplicaStatus::Voting;
        view.log_id = Some(42);
        view.begin_position = 3;
        view.end_position = 9;
        view.learned_position = 8;
        view.leader = Some(addr("127.0.0.1:5050"));
        view.elected = true;
    });
    let response = get(server, "/log/status");
    assert_eq!(response.header("content-type"), Some("application/json"));
    let raw: serde_json::Value = serde_json::from_str(&response.body).expect("JSON");
    assert_eq!(raw["status"], "VOTING");
    assert_eq!(raw["leader"], "127.0.0.1:5050");
    let status: LogStatus = serde_json::from_value(raw).expect("LogStatus");
    assert_eq!((status.begin, status.end, status.learned), (3, 9, 8));
    assert_eq!(status.log_id, Some(42));
    assert!(status.elected);
}

#[test]
fn metrics_snapshot_is_flat_mesos_json_that_follows_the_view() {
    let state = state(empty_view());
    let server = start_server(state.clone());

    let snapshot: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&get(server, "/metrics/snapshot").body).expect("JSON object");
    assert_eq!(snapshot["master/elected"], 0.0);
    assert_eq!(snapshot["registrar/log/recovered"], 0.0);
    assert_eq!(snapshot["registrar/log/ensemble_size"], 3.0);
    assert!(snapshot["master/uptime_secs"].as_f64().expect("number") >= 0.0);

    state.view.update(|view| {
        view.replica_status = ReplicaStatus::Voting;
        view.elected = true;
    });
    let snapshot: serde_json::Value =
        serde_json::from_str(&get(server, "/metrics/snapshot").body).expect("JSON");
    assert_eq!(snapshot["master/elected"], 1.0);
    assert_eq!(snapshot["registrar/log/recovered"], 1.0);
}

#[test]
fn prometheus_metrics_carry_the_same_figures_and_registered_counters() {
    let state = state(empty_view());
    let refused = state
        .metrics
        .counter("log/refused_frames", "Replica frames refused");
    refused.inc_by(3);
    let server = start_server(state.clone());

    let response = get(server, "/metrics");
    assert_eq!(response.status, 200);
    assert!(response
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/openmetrics-text"));
    for line in [
        "mesos_master_elected 0",
        "mesos_registrar_log_recovered 0",
        "mesos_registrar_log_ensemble_size 3",
        "mesos_log_refused_frames_total 3",
    ] {
        assert!(
            response.body.lines().any(|l| l == line),
            "missing {line:?} in\n{}",
            response.body
        );
    }
    assert!(response.body.contains("mesos_master_uptime_seconds "));
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    let server = start_server(state(empty_view()));
    assert_eq!(get(server, "/nope").status, 404);
    assert_eq!(get(server, "/master/state/../../etc/passwd").status, 404);
    for path in [
        "/health",
        "/master/redirect",
        "/log/status",
        "/metrics",
        "/metrics/snapshot",
    ] {
        assert_eq!(
            request(server, "POST", path).expect("POST").status,
            405,
            "POST {path}"
        );
        assert_eq!(
            request(server, "DELETE", path).expect("DELETE").status,
            405,
            "DELETE {path}"
        );
    }
}

#[test]
fn malformed_requests_do_not_take_the_server_down() {
    let server = start_server(state(empty_view()));
    let junk: [&[u8]; 5] = [
        b"\x00\x01\x02\x03\r\n\r\n",
        b"GET /health HTTP/9.9\r\n\r\n",
        b"GET /%zz%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET /health HTTP/1.1\r\nContent-Length: banana\r\n\r\n",
    ];
    for bytes in junk {
        // The server may answer 4xx or just close; either way it must not answer 5xx.
        if let Ok(answer) = send_raw(server, bytes) {
            if let Some(status) = raw_status(&answer) {
                assert!(status < 500, "{bytes:?} -> {status}");
            }
        }
    }
    // Longer than a client's URI may be: sent raw.
    let long_path = format!("/{}", "a".repeat(64 * 1024));
    let _ = send_raw(
        server,
        format!("GET {long_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(get(server, "/health").status, 200);
}

#[test]
fn a_single_handed_over_connection_is_served() {
    let state = state(empty_view());
    let router = http::router(state);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            addr_tx
                .send(listener.local_addr().expect("local addr"))
                .expect("send addr");
            // As the sniffer will: accept, decide it is HTTP, hand the stream over.
            loop {
                let (stream, _) = listener.accept().await.expect("accept");
                let router = router.clone();
                tokio::spawn(async move {
                    let _ = http::serve_connection(stream, router).await;
                });
            }
        });
    });
    let server = addr_rx.recv().expect("server address");
    assert_eq!(get(server, "/health").status, 200);
    assert_eq!(get(server, "/master/redirect").status, 503);
    assert_eq!(get(server, "/nope").status, 404);
}

#[test]
fn a_client_that_never_finishes_its_headers_does_not_block_others() {
    use std::io::Write;
    let server = start_server(state(empty_view()));
    let mut stalled = std::net::TcpStream::connect(server).expect("connect");
    stalled
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .expect("partial write");
    assert_eq!(get(server, "/health").status, 200);
    drop(stalled);
}

#[test]
fn serve_stops_accepting_and_returns_on_shutdown() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("test runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = listener.local_addr().expect("local addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(http::serve(
            listener,
            http::router(state(empty_view())),
            async move {
                let _ = stop_rx.await;
            },
        ));
        let health = tokio::task::spawn_blocking(move || get(server, "/health").status);
        assert_eq!(health.await.expect("client"), 200);

        stop_tx.send(()).expect("stop");
        tokio::time::timeout(std::time::Duration::from_secs(10), serving)
            .await
            .expect("serve returned in time")
            .expect("serve task");
        let refused = tokio::task::spawn_blocking(move || request(server, "GET", "/health"));
        assert!(
            refused.await.expect("client").is_err(),
            "listener closed after shutdown"
        );
    });
}
