//! The HTTP/JSON operator API (`src/master/operator_api.rs`: `/api/v1` calls of
//! every type and the v0 endpoints, and `/registrar/admit`): request bodies parsed
//! and validated, then applied to a registry, exactly as the master's router does,
//! on an in-memory registrar that leads.
//!
//! The input is a short sequence of requests: (endpoint u8, body length u16 LE,
//! body)*, the endpoint taken modulo the number of endpoints below; for
//! `DeleteQuota` the body is the role. `tests/pure/fuzz_seeds.rs` writes a valid request
//! of each kind in this layout. After each request:
//! no panic and no 5xx (the registry can only be corrupt through a bug); after the
//! sequence every read endpoint still answers 200 with JSON, so no accepted write can leave the
//! registry in a state that cannot be served.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use libfuzzer_sys::fuzz_target;
use mesos_operator::master::api::ReplicaStatus;
use mesos_operator::master::http::{router_with_registry, MasterState};
use mesos_operator::master::metrics::Metrics;
use mesos_operator::master::registrar::test_support::memory_registrar;
use mesos_operator::master::registrar::RegistrarConfig;
use mesos_operator::master::view::{MasterView, SharedMasterView};
use tower::ServiceExt;

const SELF: &str = "127.0.0.1:5050";
/// Enough to reach interactions between writes, few enough to stay fast.
const MAX_REQUESTS: usize = 4;

#[derive(Debug)]
enum Endpoint {
    V1,
    /// `/api/v1` with another content type: must be refused, whatever the body.
    V1NotJson,
    PostSchedule,
    PostQuota,
    DeleteQuota(String),
    PutWeights,
    Admit,
}

#[derive(Debug)]
struct Call {
    endpoint: Endpoint,
    body: Vec<u8>,
}

fn parse(mut bytes: &[u8]) -> Vec<Call> {
    let mut calls = Vec::new();
    while let [selector, low, high, rest @ ..] = bytes {
        let len = usize::from(u16::from_le_bytes([*low, *high])).min(rest.len());
        let (body, tail) = rest.split_at(len);
        bytes = tail;
        let body = body.to_vec();
        let (endpoint, body) = match selector % 7 {
            0 => (Endpoint::V1, body),
            1 => (Endpoint::V1NotJson, body),
            2 => (Endpoint::PostSchedule, body),
            3 => (Endpoint::PostQuota, body),
            4 => (
                Endpoint::DeleteQuota(String::from_utf8_lossy(&body).into_owned()),
                Vec::new(),
            ),
            5 => (Endpoint::PutWeights, body),
            _ => (Endpoint::Admit, body),
        };
        calls.push(Call { endpoint, body });
    }
    calls
}

const READS: &[(&str, &str)] = &[
    ("GET", "/master/state"),
    ("GET", "/master/slaves"),
    ("GET", "/master/maintenance/schedule"),
    ("GET", "/quota"),
    ("GET", "/weights"),
];
const V1_READS: &[&str] = &[
    "GET_STATE",
    "GET_AGENTS",
    "GET_MAINTENANCE_SCHEDULE",
    "GET_QUOTA",
    "GET_WEIGHTS",
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

fn leader() -> Router {
    let metrics = Arc::new(Metrics::new());
    let (registrar, _log) = memory_registrar(RegistrarConfig::new(SELF), Arc::clone(&metrics));
    let address = SELF.parse().expect("a socket address");
    let view = MasterView {
        replica_status: ReplicaStatus::Voting,
        log_id: Some(1),
        begin_position: 0,
        end_position: 0,
        learned_position: 0,
        quorum: 1,
        masters: vec![address],
        advertise_addr: address,
        leader: Some(address),
        elected: true,
        read_lease: true,
        peer_tls: false,
    };
    let state = MasterState {
        view: SharedMasterView::new(view),
        metrics,
    };
    router_with_registry(state, registrar)
}

async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    json: bool,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("a method"))
        .uri(uri);
    if json {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(Body::from(body)).expect("a request");
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a response body");
    (status, bytes.to_vec())
}

/// A role as a path segment: percent-encode everything but unreserved characters.
fn path_segment(role: &str) -> String {
    role.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn run(calls: Vec<Call>) {
    let app = leader();
    for call in calls.into_iter().take(MAX_REQUESTS) {
        let (status, body) = match call.endpoint {
            Endpoint::V1 => send(&app, "POST", "/api/v1", true, call.body).await,
            Endpoint::V1NotJson => {
                let answer = send(&app, "POST", "/api/v1", false, call.body).await;
                assert_eq!(answer.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
                answer
            }
            Endpoint::PostSchedule => {
                send(
                    &app,
                    "POST",
                    "/master/maintenance/schedule",
                    true,
                    call.body,
                )
                .await
            }
            Endpoint::PostQuota => send(&app, "POST", "/quota", true, call.body).await,
            Endpoint::DeleteQuota(role) => {
                let uri = format!("/quota/{}", path_segment(&role));
                send(&app, "DELETE", &uri, false, call.body).await
            }
            Endpoint::PutWeights => send(&app, "PUT", "/weights", true, call.body).await,
            Endpoint::Admit => send(&app, "POST", "/registrar/admit", true, call.body).await,
        };
        assert!(
            !status.is_server_error(),
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // Every read still answers: no accepted write left the registry unservable.
    // (Once per sequence, not per request: the reads dominate the cost of a run.)
    for (method, uri) in READS {
        let (status, body) = send(&app, method, uri, false, Vec::new()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice::<serde_json::Value>(&body).expect("a read answers JSON");
    }
    for kind in V1_READS {
        let call = serde_json::json!({ "type": kind }).to_string().into_bytes();
        let (status, body) = send(&app, "POST", "/api/v1", true, call).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{kind}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice::<serde_json::Value>(&body).expect("a read answers JSON");
    }
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(run(parse(data)));
});
