//! The master's HTTP API: an axum [`Router`] over the master's live view, and two
//! ways to serve it — a whole `TcpListener` ([`serve`]) or one connection at a time
//! ([`serve_connection`]), for the port sniffer that splits HTTP from the replica
//! protocol on the shared port.

use std::future::Future;
use std::io;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::metrics::Metrics;
use super::view::SharedMasterView;

/// Content type of the Prometheus exposition written by `prometheus-client`.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the handlers read: the live view and the metrics registry.
#[derive(Debug, Clone)]
pub struct MasterState {
    pub view: SharedMasterView,
    pub metrics: Arc<Metrics>,
}

/// The master's routes. Unknown paths answer 404, known paths with another method
/// 405; no handler reads a request body, so no input can make one fail.
pub fn router(state: MasterState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/master/redirect", get(redirect_to_leader))
        .route("/log/status", get(log_status))
        .route("/metrics/snapshot", get(metrics_snapshot))
        .route("/metrics", get(prometheus_metrics))
        .fallback(not_found)
        .with_state(state)
}

/// Serves `router` on every connection `listener` accepts until `shutdown`
/// completes, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves `router` on one already-accepted connection (HTTP/1.1), as the port
/// sniffer hands them over. Returns when the client closes the connection.
pub async fn serve_connection<I>(io: I, router: Router) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(router))
        .await
}

/// 200 for as long as the process serves, as Mesos' `/health`: liveness, not
/// readiness (readiness is `/log/status` reporting `VOTING`).
async fn health() -> StatusCode {
    StatusCode::OK
}

/// As Mesos: 307 to the leader's advertised address, 503 when there is none.
async fn redirect_to_leader(State(state): State<MasterState>) -> Response {
    match state.view.get().leader {
        Some(leader) => Redirect::temporary(&format!("http://{leader}")).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "No leader elected\n").into_response(),
    }
}

async fn log_status(State(state): State<MasterState>) -> Response {
    Json(state.view.get().log_status()).into_response()
}

async fn metrics_snapshot(State(state): State<MasterState>) -> Response {
    let view = state.view.get();
    Json(state.metrics.snapshot(&view, state.view.uptime())).into_response()
}

async fn prometheus_metrics(State(state): State<MasterState>) -> Response {
    let view = state.view.get();
    match state.metrics.encode_prometheus(&view, state.view.uptime()) {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "encoding Prometheus metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics encoding failed\n",
            )
                .into_response()
        }
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "Not found\n")
}
